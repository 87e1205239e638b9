# SMTP smuggling: the message ends only at CRLF.CRLF (RFC 5321 4.1.1.4).
# For every ending a lax server might accept, sent whole and split across
# reads at each of its bytes, a first message ended that way and followed
# by a smuggled MAIL/RCPT/DATA transaction must come out as one rejected
# message (bare CR/LF: 550 5.6.0; NUL: 554): nothing of it is delivered,
# neither the first message nor a second one.
import sys
sys.dont_write_bytecode = True
from harness import *

ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r",
	   b"\r.\n", b"\n.\r", b"\r\n\0.\r\n"]

SMUGGLED = (b"MAIL FROM:<evil@smuggler.example>\r\n"
	    b"RCPT TO:<victim@test.laim.example>\r\n"
	    b"DATA\r\n"
	    b"Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n")


def check_not_smuggled(m, ending):
	"""A delivered file is never the smuggled message on its own."""
	ret, to, _, rest = split_delivered(m)
	check(ret != b"evil@smuggler.example" and to != b"victim@test.laim.example",
	      "ending %r: a smuggled envelope was delivered: %r" % (ending, m[:300]))
	check(not rest.startswith(b"Subject: smuggled"),
	      "ending %r: the smuggled message was delivered: %r" % (ending, m[:300]))


def send_split(c, data, at):
	"""Sends data in two writes, cut at byte `at` (0: whole), with a pause
	between them so that the server reads them apart."""
	if not at:
		c.send(data)
		return
	c.send(data[:at])
	time.sleep(0.05)
	c.send(data[at:])


def main():
	d = Laimd().start()
	head = b"Subject: first\r\n\r\nfirst body"
	for ending, at in [(e, i) for e in ENDINGS for i in range(len(e))]:
		with d.smtp() as c:
			c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
			c.ehlo()
			c.cmd("MAIL FROM:<a@client.example>", 250)
			c.cmd("RCPT TO:<r@test.laim.example>", 250)
			c.cmd("DATA", 354)
			send_split(c, head + ending + SMUGGLED, len(head) + at if at else 0)
			r = c.reply(10)
			check(r.code in (550, 554), "ending %r: expected 550/554 for the whole, got %r" % (ending, r))
			if r.code == 550:
				check(r.lines[-1].startswith("550 5.6.0"), "ending %r: %r" % (ending, r))
			# Nothing of the smuggled part was taken for commands.
			c.cmd("QUIT", 221, timeout=10)
			check(c.wait_closed(5), "ending %r: not closed after QUIT" % ending)
		check_eq(maildir_messages(d.maildir), [], "delivered after ending %r cut at %d" % (ending, at))
	# Give a (wrong) delivery time to show up, then look again: only the
	# last, well-ended message may be there.
	qid = d.send(msg=simple_message("last"))
	d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages delivered in all (only the last one may be)")
	for m in msgs:
		check_not_smuggled(m, "any")
		check(b"first body" not in m, "the rejected first message was delivered: %r" % m[:300])
	check(not d.search_log(r"from=<evil@smuggler\.example>", 0), "the smuggled MAIL reached the queue")
	check(not d.search_log(r"to=<victim@test\.laim\.example>", 0), "the smuggled RCPT reached the queue")


run(main)
