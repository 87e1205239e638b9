# The simple commands (RFC 5321 4.1.1): VRFY 252, HELP 214, NOOP and RSET
# 250, QUIT 221; unknown commands 500; commands out of order 503; MAIL
# and RCPT parameters other than SIZE=, BODY=, SMTPUTF8 get 555, and any
# MAIL parameter after HELO rather than EHLO too (RFC 5321 4.1.1.11); a
# NUL in a command line 501; a command line ends at CRLF only (2.3.8): a
# line with a bare LF or CR gets 500 and is not run. The session goes on
# after each, and a message sent in it afterwards is delivered.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd().start()

	with d.smtp() as c:
		# Before EHLO: transaction commands are out of order.
		c.cmd("MAIL FROM:<a@client.example>", 503)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("DATA", 503)
		c.cmd("NOOP", 250)
		c.ehlo()
		c.cmd("VRFY root", 252)
		c.cmd("HELP", 214)
		c.cmd("NOOP", 250)
		c.cmd("noop", 250)  # commands are case-insensitive (2.4)
		c.cmd("RSET", 250)
		c.cmd("XYZZY", 500)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("DATA", 503)
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("MAIL FROM:<b@client.example>", 503)  # nested MAIL
		c.cmd("DATA", 503)  # no recipient yet
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		c.cmd("RSET", 250)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)  # RSET ended the transaction
		c.cmd("DATA", 503)

		# Parameters.
		for params in ("SIZE=100", "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8",
			       "SIZE=10 BODY=8BITMIME SMTPUTF8", "body=8bitmime"):
			c.cmd("MAIL FROM:<a@client.example> " + params, 250)
			c.cmd("RSET", 250)
		for params in ("FOO=bar", "AUTH=<>", "RET=FULL", "SIZE=10 XFOO"):
			c.cmd("MAIL FROM:<a@client.example> " + params, 555)
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("RCPT TO:<r@test.laim.example> NOTIFY=NEVER", 555)
		c.cmd("RCPT TO:<r@test.laim.example> FOO", 555)
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		c.cmd("RSET", 250)

		# A NUL inside a command line.
		c.cmd(b"NOOP\0x", 501)
		c.cmd(b"MAIL FROM:<a\0@client.example>", 501)
		c.cmd(b"\0", 501)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)  # the MAIL with a NUL did not count
		c.cmd("NOOP", 250)
		c.cmd("QUIT", 221)
		check(c.wait_closed(5), "connection not closed after QUIT")

	check_eq(maildir_files(d.maildir), [], "Maildir after transactions without DATA")

	bare_line_ends(d)
	params_after_helo(d)


def reply_is(c, want, what):
	r = c.reply()
	check_eq(r.lines, [want], what)


CRLF_ONLY = "500 5.5.2 Line must end with CRLF"


def bare_line_ends(d):
	"""Each line with a bare LF or CR gets exactly 500 5.5.2 and is not
	run; what follows a bare LF is the next line. Then a message in the
	same session is delivered."""
	with d.smtp() as c:
		c.ehlo()
		for raw in (b"NOOP\n", b"\n", b"NOOP\r\r\n", b"NOOP\rX\r\n",
			    b"MAIL FROM:<smuggled@client.example>\rRCPT TO:<r@test.laim.example>\r\n"):
			c.send(raw)
			reply_is(c, CRLF_ONLY, "reply to %r" % raw)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)  # no MAIL was run
		c.send(b"MAIL FROM:<smuggled@client.example>\nRCPT TO:<r@test.laim.example>\r\n")
		reply_is(c, CRLF_ONLY, "reply to MAIL ending in a bare LF")
		reply_is(c, "503 5.5.1 Error: need MAIL command", "reply to the RCPT after the bare LF")
		r = c.cmd("EHLO smuggled.example\nNOOP")  # a bare LF inside: 500, then NOOP's 250
		check_eq(r.lines, [CRLF_ONLY], "reply to EHLO ending in a bare LF")
		reply_is(c, "250 2.0.0 Ok", "reply to the NOOP after the bare LF")
		qid = c_transaction(c, "after@client.example", ["r@test.laim.example"],
				    simple_message("after bare line ends"))
		c.cmd("QUIT", 221)
	d.wait_delivered(qid)
	check_eq(len(maildir_files(d.maildir)), 1, "messages delivered after the bare line ends")
	check(not d.search_log(r"from=<smuggled@", 0), "a line with a bare CR or LF was run:\n%s" % d.log(0))
	rec = d.delivered_copies(qid)["r@test.laim.example"][1]
	check(rec.startswith("Received: from client.example (127.0.0.1)"), "Received: %r" % rec)


def params_after_helo(d):
	"""After HELO every MAIL parameter gets exactly 555 5.5.4; the same
	MAIL without one is taken, and with EHLO the parameters are."""
	with d.smtp() as c:
		c.cmd("HELO client.example", 250)
		for params in ("SIZE=10", "BODY=8BITMIME", "SMTPUTF8", "BODY=7BIT SIZE=100"):
			r = c.cmd("MAIL FROM:<a@client.example> " + params)
			check_eq(r.lines, ["555 5.5.4 MAIL parameters need EHLO"], "MAIL with %s after HELO" % params)
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("RSET", 250)
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example> SIZE=10 BODY=8BITMIME", 250)
		c.cmd("QUIT", 221)


run(main)
