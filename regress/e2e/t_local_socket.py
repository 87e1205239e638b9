# The local submission socket is open to every local user: a hostile
# session there (garbage, NUL bytes, a huge line, a client gone in the
# middle of DATA) ends at most that session, never the smtp process nor
# another session; and the uid the daemon learns with SO_PEERCRED is the
# one in the from= log line and in the Received: header.
import sys
sys.dont_write_bytecode = True
import time
from harness import *


def hostile(sock, payload, what):
	"""Sends payload then QUIT on a fresh session (as whoever calls it);
	the server must end the session, by itself or at the QUIT, within
	5 s, having answered only with well-formed 5xx/2xx replies."""
	c = Smtp(unix=sock)
	try:
		try:
			c.send(payload + b"\r\nQUIT\r\n")
		except OSError:  # the server closed first: it ended the session
			pass
		check(c.wait_closed(5), "%s: the session was still open 5 s after QUIT (%r)" % (what, c.buf[-300:]))
		for line in c.buf.split(b"\r\n")[:-1]:
			check(re.match(rb"^[245]\d\d[ -]", line), "%s: malformed reply %r" % (what, line[:200]))
		return c.buf[-200:]
	finally:
		c.close()


def transaction(sock, sender, tag):
	with Smtp(unix=sock) as c:
		c.ehlo("localhost")
		qid = c_transaction(c, sender, ["rcpt@" + HOSTNAME], simple_message(tag))
		c.cmd("QUIT", 221)
	return qid


def main():
	lu = local_user()
	d = Laimd().start()
	sock = d.config["socket"]
	smtp_pid = d.child("smtp")

	# A well-behaved session stays open through everything below.
	bystander = Smtp(unix=sock)
	bystander.ehlo("localhost")
	bystander.cmd("MAIL FROM:<bystander@%s>" % HOSTNAME, 250)

	payloads = [
		("binary garbage", b"\xff\xfe\xfd\x00\x01garbage\r\n" * 50 + b"\x1b[2J\r\n"),
		("NUL in commands", b"EHLO lo\x00calhost\r\nMAIL FROM:<a\x00b@x.example>\r\nRCPT TO:<\x00>\r\n"),
		("a 1 MiB line", b"EHLO " + b"A" * (1 << 20) + b"\r\n"),
		("pipelined nonsense after DATA without a transaction", b"DATA\r\n.\r\nQUIT\r\n" * 20),
		("bare CR and LF", b"HELO x\rMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\r\n"),
	]

	def one(name, payload, as_user_pw=None):
		if as_user_pw:
			as_user(as_user_pw, lambda: hostile(sock, payload, name))
		else:
			hostile(sock, payload, name)
		check(proc_alive(smtp_pid) and d.child("smtp") == smtp_pid, "%s: the smtp process changed" % name)

	def gone_mid_data():
		c = Smtp(unix=sock)
		c.ehlo("localhost")
		c.cmd("MAIL FROM:<quitter@%s>" % HOSTNAME, 250)
		c.cmd("RCPT TO:<rcpt@%s>" % HOSTNAME, 250)
		c.cmd("DATA", 354)
		c.send(b"Subject: half\r\n\r\nhalf a mess")
		c.close()
		time.sleep(0.5)
		check(d.child("smtp") == smtp_pid, "the smtp process changed")
		check(not d.search_log(r": from=<quitter@[^>]*>, size=", 0), "the abandoned message was queued")

	def nul_in_data():
		c = Smtp(unix=sock)
		c.ehlo("localhost")
		c.cmd("MAIL FROM:<nul@%s>" % HOSTNAME, 250)
		c.cmd("RCPT TO:<rcpt@%s>" % HOSTNAME, 250)
		c.cmd("DATA", 354)
		c.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
		r = c.reply()
		check(500 <= r.code < 600, "a NUL in the message got %r" % r)
		c.cmd("QUIT", 221)
		c.close()
		time.sleep(0.3)
		check(not d.search_log(r": from=<nul@[^>]*>, size=", 0), "the message with a NUL was queued")
		check(d.child("smtp") == smtp_pid, "the smtp process changed")

	def bystander_survives():
		bystander.cmd("RCPT TO:<rcpt@%s>" % HOSTNAME, 250)
		bystander.cmd("DATA", 354)
		bystander.send(data_terminated(simple_message("bystander")))
		qid = queue_id(bystander.expect(250))
		bystander.cmd("QUIT", 221)
		bystander.close()
		d.wait_removed(qid)

	def peercred(pw):
		uid, login = (pw.pw_uid, pw.pw_name) if pw else (0, "root")
		sender = "%s@%s" % (login, HOSTNAME)
		mark = d.mark()
		if pw:
			as_user(pw, lambda: transaction(sock, sender, "peercred"))
		else:
			transaction(sock, sender, "peercred")
		check_local_delivery(d, mark, sender, ["rcpt@" + HOSTNAME], uid, login)

	rows = []
	for name, payload in payloads:
		rows.append(("hostile session as root: %s" % name, lambda n=name, p=payload: one(n, p)))
		rows.append(("hostile session as %s: %s" % (lu.pw_name, name), lambda n=name, p=payload: one(n, p, lu)))
	rows += [
		("a client gone in the middle of DATA", gone_mid_data),
		("a NUL inside the message: refused, the session goes on", nul_in_data),
		("a session open meanwhile completes its transaction", bystander_survives),
		("SO_PEERCRED uid of root in from= and Received:", lambda: peercred(None)),
		("SO_PEERCRED uid of %s in from= and Received:" % lu.pw_name, lambda: peercred(lu)),
	]
	run_rows(rows)
	check_eq(d.child("smtp"), smtp_pid, "smtp pid at the end")


run(main)
