# The simple commands (RFC 5321 4.1.1): VRFY 252, HELP 214, NOOP and RSET
# 250, QUIT 221; unknown commands 500; commands out of order 503; MAIL
# and RCPT parameters other than SIZE=, BODY=, SMTPUTF8 get 555; a NUL in
# a command line 501.
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


run(main)
