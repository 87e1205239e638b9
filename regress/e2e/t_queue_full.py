# The bounded queue: with max_queue_size messages in flight (transactions
# in progress, messages committed and not deferred) or max_deferred
# messages waiting for a retry, a new transaction waits at MAIL FROM for
# room up to queue_full_wait seconds, then gets 452 4.3.1 (never a 250
# followed by a drop); once the queue drains, mail is accepted again.
# Deferred messages take no place of max_queue_size: a mailbox or a
# smarthost that keeps deferring does not stop other mail.
import sys
sys.dont_write_bytecode = True
import socket
import struct
import subprocess
from harness import *


def main():
	d = Laimd(max_queue_size=2, max_deferred=9, queue_full_wait=0)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()

	ids = []
	for n in ("one", "two", "three"):  # more than max_queue_size, each deferred
		ids.append(d.send(msg=simple_message(n)))
		d.wait_log(r"%s: to=<.*status=deferred" % ids[-1])
	check_eq(sorted(d.spool_files("queue")), sorted(ids), "queue/ with three deferred messages")
	with d.smtp() as c:
		c.ehlo()
		r = c.cmd("MAIL FROM:<fourth@client.example>", 452)
		check(r.lines[-1].startswith("452 4.3.1"), "MAIL with TCP's third of max_deferred deferred: %r" % r)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("QUIT", 221)
	d.wait_log(r"TCP clients have 3 deferred messages, at most 3 \(a third of max_deferred 9\): "
		   r"deferring mail from <fourth@client\.example>$")
	check_eq(sorted(d.spool_files("queue")), sorted(ids), "queue/ after the refusal")
	check(not d.search_log(r"from=<fourth@client\.example>", 0), "the refused sender reached the queue")

	d.unblock_dir(blocked)
	for q in ids:
		d.wait_removed(q, 15)
	check_eq(len(maildir_files(blocked)), 3, "messages delivered once the queue drained")
	q4 = d.send(sender="fourth@client.example", msg=simple_message("four"))
	d.wait_removed(q4)
	check_eq(len(maildir_files(blocked)), 4, "messages after the queue drained")


def loaded():
	"""Messages loaded at start take no place of max_queue_size, even in
	their first round of the new run: three deferred ones, whose calls
	hang after a restart, leave max_queue_size 2 free for root's mail."""
	d = Laimd(name="t_queue_full_loaded", max_queue_size=2, queue_full_wait=0, delivery_timeout=60)
	bd = d.make_blocked_dir(os.path.join(d.dir, "bd"))
	go = os.path.join(d.dir, "go")
	open(go, "w").close()
	d.config["handlers"] = {"p": {"type": "probe", "path": bd, "hang_until": go, "workers": 4}}
	d.config["routes"] = [{"match": "*", "handlers": ["p"]}]
	d.start()
	ids = []
	for n in ("one", "two", "three"):
		ids.append(d.send(rcpts=["ok@test.laim.example"], msg=simple_message(n)))
		d.wait_log(r"%s: to=<.*status=deferred" % ids[-1])
	d.stop()
	os.unlink(go)  # their calls hang after the restart
	mark = d.mark()
	d.start()
	d.wait_log(r"3 queued messages loaded from the spool", since=mark)
	r = d.sendmail(["ok@test.laim.example"], b"Subject: from root\n\nafter the restart\n")
	check_eq((r.returncode, d.spool_files("offline")), (0, []), "root's sendmail after the restart: %r" % r)
	d.wait_local_submission(mark, "root@" + HOSTNAME)
	d.unblock_dir(bd)
	open(go, "w").close()
	for q in ids:
		d.wait_removed(q, 15)


def reservations():
	"""Transactions between MAIL and the end of data count against the
	queue too: with max_queue_size 1, a second MAIL is refused while the
	first transaction is open, and accepted again after its RSET."""
	d = Laimd(name="t_queue_full_rsv", max_queue_size=1, max_deferred=1, queue_full_wait=0)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()
	a, b = d.smtp(), d.smtp()
	a.ehlo()
	b.ehlo()
	a.cmd("MAIL FROM:<a@client.example>", 250)
	r = b.cmd("MAIL FROM:<b@client.example>", 452)
	check(r.lines[-1].startswith("452 4.3.1"), "second MAIL with one slot taken: %r" % r)
	a.cmd("RSET", 250)
	b.cmd("MAIL FROM:<b@client.example>", 250)
	b.cmd("RCPT TO:<r@test.laim.example>", 250)
	b.cmd("DATA", 354)
	b.send(data_terminated(simple_message("b")))
	qb = queue_id(b.expect(250))
	a.cmd("MAIL FROM:<a@client.example>", 452)
	a.close()
	b.close()
	check_eq(d.spool_files("queue"), [qb], "queue/ with max_queue_size 1")


def waiting():
	"""With queue_full_wait, a MAIL that finds the queue full is answered
	when a place frees (250), or 452 once the wait is over; a burst of
	sessions is slowed to the pace of delivery, not turned away."""
	# queue_full_wait 4: longer than the retry interval (retry_max 2), so the
	# retry after the unblock frees the place within the second MAIL's wait.
	d = Laimd(name="t_queue_full_wait", max_queue_size=1, max_deferred=1, queue_full_wait=4)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()
	q1 = d.send(msg=simple_message("one"))
	with d.smtp() as c:
		c.ehlo()
		start = time.monotonic()
		r = c.cmd("MAIL FROM:<late@client.example>", 452, timeout=10)
		waited = time.monotonic() - start
		check(r.lines[-1].startswith("452 4.3.1"), "MAIL after the wait: %r" % r)
		check(3.5 <= waited <= 6.5, "452 after %.2fs, not after queue_full_wait (4s)" % waited)
		c.send(b"MAIL FROM:<next@client.example>\r\n")
		time.sleep(0.5)
		d.unblock_dir(blocked)
		check_eq(c.reply(timeout=10).code, 250, "MAIL answered once the queue drained")
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message("waited")))
		q2 = queue_id(c.expect(250))
	d.wait_removed(q1)
	d.wait_removed(q2)
	check(d.search_log(r"queue full \(.*max_queue_size 1; .*\): MAIL FROM waits up to 4s for room", 0),
	      "no log line for the wait")

	# Sessions in line are served in turn; one that leaves does not hold up
	# the line.
	d.config["queue_full_wait"] = 10
	d.stop()
	d.start()
	a, b, c = d.smtp(), d.smtp(), d.smtp()
	for s in (a, b, c):
		s.ehlo()
	a.cmd("MAIL FROM:<a@client.example>", 250)
	b.send(b"MAIL FROM:<b@client.example>\r\n")
	c.send(b"MAIL FROM:<c@client.example>\r\n")
	time.sleep(0.3)
	b.close()
	a.cmd("RSET", 250)
	check_eq(c.reply(timeout=5).code, 250, "the third session's MAIL after the second left the line")
	for s in (a, c):
		s.close()

	# The local socket never waits, not even behind a TCP session in line:
	# sendmail gets its 452 at once and leaves the message in offline/.
	a, b = d.smtp(), d.smtp()
	for s in (a, b):
		s.ehlo()
	a.cmd("MAIL FROM:<a@client.example>", 250)
	b.send(b"MAIL FROM:<b@client.example>\r\n")
	time.sleep(0.3)
	start = time.monotonic()
	r = d.sendmail(["-f", "ops@" + HOSTNAME, "root"], b"Subject: local\n\nlocal\n")
	waited = time.monotonic() - start
	check_eq(r.returncode, 0, "sendmail with the queue full: %r" % r)
	check(waited < 3, "sendmail answered after %.2fs, behind the TCP MAIL in line" % waited)
	check_eq(len(d.spool_files("offline")), 1, "offline/ after sendmail with the queue full")
	for s in (a, b):
		s.close()


def leavers():
	"""Clients that leave while their MAIL waits for room, by a close
	(FIN) or a reset, leave the line at once: the wait of neither ends
	in a 452 logged for it, as it does for the client that stays."""
	d = Laimd(name="t_queue_full_leave", max_queue_size=1, max_deferred=1, queue_full_wait=2)
	d.block_inbox()
	d.start()
	d.send(msg=simple_message("fills the queue"))
	mark = d.mark()
	for how in ("close", "reset"):
		c = d.smtp()
		c.ehlo()
		c.send(b"MAIL FROM:<%s@client.example>\r\n" % how.encode())
		time.sleep(0.3)
		if how == "reset":
			c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
		c.close()
	with d.smtp() as c:
		c.ehlo()
		check_eq(c.cmd("MAIL FROM:<stays@client.example>", timeout=10).code, 452, "MAIL after the wait")
	d.wait_log(r"queue full .*: deferring mail from <stays@client\.example>$", since=mark)
	stayed = [m.group(0) for m in d.findall_log(r".*deferring mail from <(close|reset)@.*", mark)]
	check(not stayed, "MAILs of clients gone stayed in line: %s" % stayed)


# Run as the local user: two sessions on the submission socket, each
# with its MAIL answered; prints the codes, then holds them until stdin
# closes.
HOLD_LOCAL = r"""
import socket, sys
socks = []
for i in range(int(sys.argv[2])):
	s = socket.socket(socket.AF_UNIX)
	s.connect(sys.argv[1])
	f = s.makefile("rb")
	def reply():
		while True:
			line = f.readline()
			if line[3:4] != b"-":
				return line[:3].decode()
	reply()
	s.sendall(b"EHLO user.example\r\n")
	reply()
	s.sendall(b"MAIL FROM:<u%d@user.example>\r\n" % i)
	print(reply(), flush=True)
	socks.append((s, f))
sys.stdin.read()
"""


def per_source():
	"""Open transactions of one source hold at most a third of
	max_queue_size: TCP clients together, each uid on the local socket.
	Sessions kept open (as NOOP can) thus never take every place, and
	root's sendmail gets one while both hold theirs."""
	d = Laimd(name="t_queue_full_src", max_queue_size=6, queue_full_wait=0)
	d.start()
	tcp = [d.smtp() for _ in range(3)]
	for i, c in enumerate(tcp):
		c.ehlo()
		c.send(b"MAIL FROM:<t%d@client.example>\r\n" % i)
		check_eq(c.reply().code, 452 if i == 2 else 250, "TCP session %d's MAIL, with 6 places" % i)
	d.wait_log(r"TCP clients have 2 places in open transactions, at most 2 \(a third of max_queue_size 6\): "
		   r"deferring mail from <t2@client\.example>$")
	lu = local_user()
	holder = subprocess.Popen(["/usr/bin/python3", "-c", HOLD_LOCAL, d.config["socket"], "3"], stdin=subprocess.PIPE,
				  stdout=subprocess.PIPE, user=lu.pw_uid, group=lu.pw_gid, extra_groups=[], text=True)
	try:
		codes = [holder.stdout.readline().strip() for _ in range(3)]
		check_eq(codes, ["250", "250", "452"], "MAIL of the local user's three sessions")
		d.wait_log(r"uid %d has 2 places in open transactions, at most 2 .*<u2@user\.example>$" % lu.pw_uid)
		r = d.sendmail(["root"], b"Subject: from root\n\nwhile the others hold theirs\n")
		check_eq(r.returncode, 0, "root's sendmail: %r" % r)
		check_eq(d.spool_files("offline"), [], "offline/ after root's sendmail")
		d.wait_log(r"from=<root@%s>, .*client=local, uid=0" % re.escape(HOSTNAME))
	finally:
		holder.stdin.close()
		holder.wait(10)
	for c in tcp:
		c.close()


def both():
	main()
	loaded()
	reservations()
	waiting()
	leavers()
	per_source()


run(both)
