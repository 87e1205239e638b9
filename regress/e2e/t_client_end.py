# How a session ends when the client stops its side:
#   - a client that shuts its sending side (shutdown(SHUT_WR), as
#     sendmail -bs does at the end of its input) still gets every reply to
#     what it sent: the end of data's 250 and QUIT's 221, or the replies
#     to pipelined commands; a message cut off by the shutdown is dropped
#     and nothing of it stays in the spool;
#   - sendmail -bs takes a whole session piped in, with CRLF or LF line
#     ends, and exits 0 after the 221 to QUIT, 75 without it; a long
#     pipelined input gets its replies while it goes on (no deadlock);
#     a broken stdout is an output error (74); a DATA line too long,
#     answered before its end, does not hold the input;
#   - a client that never reads its replies is closed once the idle
#     timeout and then the same time without its output moving have
#     passed, so its session slot is free again and SIGTERM ends laimd
#     within its grace;
#   - a client that resets its connection while its input buffer is full
#     (a MAIL waiting for room in the queue, NOOPs behind it) costs the
#     smtp process no CPU while the MAIL waits (epoll reports the reset
#     until the descriptor goes).
import sys
sys.dont_write_bytecode = True
import socket
import struct
import subprocess
from harness import *

RCPT = "rcpt@test.laim.example"


def half_closed(d):
	msg = simple_message("half-closed")
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<sender@client.example>", 250)
		c.cmd("RCPT TO:<%s>" % RCPT, 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(msg) + b"QUIT\r\n")
		c.sock.shutdown(socket.SHUT_WR)
		qid = queue_id(c.expect(250, what="end of data after the client's shutdown"))
		c.expect(221, what="QUIT after the client's shutdown")
		check(c.wait_closed(10), "the connection stays open after 221")
	d.wait_removed(qid)
	with d.smtp() as c:
		c.ehlo()
		c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<%s>\r\nRSET\r\nQUIT\r\n" % RCPT.encode())
		c.sock.shutdown(socket.SHUT_WR)
		for code in (250, 250, 250, 221):
			c.expect(code, what="pipelined replies after the client's shutdown")
		check(c.wait_closed(10), "the connection stays open after 221")
	mark = d.mark()
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<sender@client.example>", 250)
		c.cmd("RCPT TO:<%s>" % RCPT, 250)
		c.cmd("DATA", 354)
		c.send(b"Subject: cut off\r\n\r\nno final dot\r\n")
		c.sock.shutdown(socket.SHUT_WR)
		check(c.wait_closed(10), "the connection stays open after a shutdown in DATA")
		check(b"250" not in c.buf, "a 250 for a message cut off: %r" % c.buf)
	wait_for(lambda: d.spool_files("queue") == [], 5, "queue/ empty after the cut-off message")
	check_delivered_exactly(d, {qid: msg})
	check(not d.search_log(r"from=<", mark), "something committed after the cut-off:\n%s" % d.log(mark))


def sendmail_bs(d):
	"""sendmail -bs relays its stdin and shuts the connection's sending
	side at its end: the last replies still reach its stdout."""
	p = subprocess.Popen([sendmail_path(), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
			     env=dict(os.environ, **d.local_env()))
	check(p.stdout.readline().startswith(b"220 "), "sendmail -bs greeting")
	for line in (b"EHLO client.example", b"MAIL FROM:<root@test.laim.example>", b"RCPT TO:<%s>" % RCPT.encode(),
		     b"DATA"):
		p.stdin.write(line + b"\r\n")
		p.stdin.flush()
		while True:
			reply = p.stdout.readline()
			check(reply, "sendmail -bs ended after %r" % line)
			if reply[3:4] == b" ":
				break
	p.stdin.write(b"Subject: sendmail -bs\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	p.stdin.close()
	rest = p.stdout.read().decode()
	check_eq(p.wait(15), 0, "sendmail -bs exit status")
	check(re.match(r"250 2\.0\.0 Ok: queued as %s\r\n221 " % QID_RE, rest), "sendmail -bs last replies: %r" % rest)


def sendmail_bs_script(d):
	"""A session piped whole into sendmail -bs, its lines ending in CRLF
	or in LF alone: the message goes after the 354 (laimd ends a session
	whose text comes before it), LFs become CRLF, exit 0 after the 221.
	"DATA<TAB>", which laimd runs as DATA, holds the text too."""
	for eol, data in ((b"\r\n", b"DATA"), (b"\n", b"DATA"), (b"\n", b"DATA\t")):
		lines = [b"EHLO client.example", b"MAIL FROM:<root@test.laim.example>", b"RCPT TO:<%s>" % RCPT.encode(),
			 data, b"Subject: piped into -bs", b"", b"body", b".", b"QUIT"]
		r = d.sendmail(["-bs"], eol.join(lines) + eol)
		check_ran(r)
		m = re.search(rb"\r\n354 [^\r\n]*\r\n250 2\.0\.0 Ok: queued as (%s)\r\n221 [^\r\n]*\r\n$" % QID_RE.encode(),
			      r.out)
		check(m, "sendmail -bs with %r line ends and %r: %r" % (eol, data, r.out))
		qid = m.group(1).decode()
		d.wait_removed(qid)
		copy = d.delivered_copies(qid)[RCPT][2]
		check(copy.endswith(b"Subject: piped into -bs\r\n\r\nbody\r\n"), "the message: %r" % copy)


def sendmail_bs_long_data(d):
	"""A DATA line too long, which laimd answers before its end: the
	relay does not hold the input for a reply that will never come."""
	p = subprocess.Popen([sendmail_path(), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
			     stderr=subprocess.PIPE, env=dict(os.environ, **d.local_env()))
	try:
		check(p.stdout.readline().startswith(b"220 "), "sendmail -bs greeting")
		p.stdin.write(b"DATA" + b" " * 600)
		p.stdin.flush()
		reply = p.stdout.readline()
		check(reply.startswith(b"500 5.5.2 "), "reply to the long line's start: %r" % reply)
		out, err = p.communicate(b"\r\nNOOP\r\nQUIT\r\n", timeout=10)
	except subprocess.TimeoutExpired:
		p.kill()
		p.communicate()
		raise Fail("sendmail -bs relayed nothing after a DATA line too long within 10 s")
	check(re.match(rb"250 [^\r\n]*\r\n221 [^\r\n]*\r\n$", out), "replies after the long line: %r" % out)
	check_eq((p.returncode, err), (0, b""), "sendmail -bs after a DATA line too long")


def sendmail_bs_status(d):
	"""sendmail -bs exits 75 when the session ends without the 221 to
	QUIT: its input ended first, or laimd ended it with 421."""
	r = d.sendmail(["-bs"], b"EHLO client.example\r\nNOOP\r\n")
	check_ran(r, 75, quiet=False)
	check_eq(r.err, b"sendmail: the session ended without QUIT\n", "sendmail -bs without QUIT")
	t = Laimd(name="t_client_end_bs", timeout=1)
	t.start()
	p = subprocess.Popen([sendmail_path(), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
			     stderr=subprocess.PIPE, env=dict(os.environ, **t.local_env()))
	try:
		p.wait(10)  # its stdin open and silent: laimd's timeout ends the session
	finally:
		p.kill()
		p.stdin.close()
	out, err = p.stdout.read(), p.stderr.read()
	check(re.search(rb"\r\n421 4\.4\.2 [^\r\n]*\r\n$", out), "sendmail -bs after laimd's timeout: %r" % out)
	check_eq((p.returncode, err), (75, b"sendmail: laimd ended the session (421)\n"), "sendmail -bs after a 421")
	t.stop()


def sendmail_bs_pipelined(d):
	"""200000 NOOPs piped whole into sendmail -bs: laimd stops reading a
	client that reads none of its replies, so the relay takes them while
	its input goes on, and the session ends with QUIT's 221."""
	n = 200000
	r = d.sendmail(["-bs"], b"EHLO client.example\n" + b"NOOP\n" * n + b"QUIT\n", timeout=20)
	check_ran(r)
	check_eq(len(re.findall(rb"(?m)^250 ", r.out)), n + 1, "replies 250 to EHLO and the NOOPs")
	check(re.search(rb"\r\n221 [^\r\n]*\r\n$", r.out), "sendmail -bs last reply: %r" % r.out[-200:])


def sendmail_bs_stdout(d):
	"""sendmail -bs whose stdout breaks, before the greeting or after it,
	exits 74 (an output error), saying so, and blames not laimd."""
	env = dict(os.environ, **d.local_env())
	rfd, wfd = os.pipe()
	os.close(rfd)
	p = subprocess.run([sendmail_path(), "-bs"], input=b"EHLO x\nQUIT\n", stdout=wfd, stderr=subprocess.PIPE,
			   env=env, timeout=20)
	os.close(wfd)
	want = b"sendmail: writing to standard output: Broken pipe\n"
	check_eq((p.returncode, p.stderr), (74, want), "sendmail -bs, its stdout broken before the greeting")
	p = subprocess.Popen([sendmail_path(), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
			     stderr=subprocess.PIPE, env=env)
	check(p.stdout.readline().startswith(b"220 "), "sendmail -bs greeting")
	p.stdout.close()
	_, err = p.communicate(b"EHLO x\nQUIT\n", timeout=20)
	check_eq((p.returncode, err), (74, want), "sendmail -bs, its stdout broken after the greeting")


def unread_replies():
	d = Laimd(name="t_client_end_unread", timeout=2, max_sessions=2)
	d.start()
	s = socket.create_connection(("127.0.0.1", d.port))
	s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
	s.settimeout(10)
	check(s.recv(512).startswith(b"220 "), "the greeting")
	s.setblocking(False)
	flood = b"NOOP\r\n" * 1000
	end = time.monotonic() + 3
	while time.monotonic() < end:
		try:
			s.send(flood)
		except BlockingIOError:
			time.sleep(0.05)
		except OSError:  # closed already
			break
	d.wait_log(r"smtp: 127\.0\.0\.1 reads no replies: connection closed$", 15)
	with d.smtp() as second, d.smtp() as third:  # each read its 220
		second.cmd("NOOP", 250)
		third.cmd("NOOP", 250)
	s.close()
	start = time.monotonic()
	check_eq(d.stop(), 0, "laimd's exit status")
	check(time.monotonic() - start < 15, "SIGTERM took %.1fs" % (time.monotonic() - start))


def reset_with_full_buffer():
	d = Laimd(name="t_client_end_reset", max_queue_size=1, max_deferred=1, queue_full_wait=4)
	d.block_inbox()
	d.start()
	d.send(msg=simple_message("fills the queue"))
	smtp = d.child("smtp")
	c = d.smtp()
	c.ehlo()
	c.send(b"MAIL FROM:<sender@client.example>\r\n" + b"NOOP\r\n" * 2000)  # the MAIL waits for room
	time.sleep(0.5)
	before = cpu_seconds(smtp)
	c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
	c.sock.close()
	time.sleep(3)
	used = cpu_seconds(smtp) - before
	check(used < 0.5, "the smtp process used %.2fs of CPU in the 3s after the reset" % used)
	check(d.running(), "laimd is not running")
	d.stop()


def main():
	d = Laimd()
	d.start()
	run_rows([
		("a client's shutdown: the replies to what it sent, then the end", lambda: half_closed(d)),
		("sendmail -bs gets its 250 and 221", lambda: sendmail_bs(d)),
		("a session piped whole into sendmail -bs, with CRLF or LF", lambda: sendmail_bs_script(d)),
		("sendmail -bs after a DATA line too long: no hold", lambda: sendmail_bs_long_data(d)),
		("sendmail -bs exits 75 without the 221 to QUIT", lambda: sendmail_bs_status(d)),
		("200000 NOOPs piped into sendmail -bs: every reply, no deadlock", lambda: sendmail_bs_pipelined(d)),
		("sendmail -bs with a broken stdout exits 74", lambda: sendmail_bs_stdout(d)),
	])
	d.stop()
	unread_replies()
	reset_with_full_buffer()
	print("replies after a shutdown; a client that reads nothing is closed; a reset costs no CPU")


run(main)
