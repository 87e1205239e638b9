# EHLO advertises SIZE, 8BITMIME, SMTPUTF8 (only when enabled), PIPELINING
# and ENHANCEDSTATUSCODES (RFC 5321 4.1.1.1, RFC 1870, 6152, 6531, 2920,
# 2034); HELO answers with the hostname.
import sys
sys.dont_write_bytecode = True
from harness import *


def keywords(reply):
	check(reply.lines[0].startswith("250-%s" % HOSTNAME) or reply.lines[0] == "250 %s" % HOSTNAME,
	      "first EHLO line does not name the host: %r" % reply)
	return [l[4:] for l in reply.lines[1:]]


def main():
	d = Laimd(data_size_limit=1234567).start()
	with d.smtp() as c:
		kw = keywords(c.ehlo("client.example"))
		for want in ("SIZE 1234567", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"):
			check(want in kw, "EHLO lacks %r: %r" % (want, kw))
		# A second EHLO is allowed and resets the state (RFC 5321 4.1.4).
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.ehlo("again.example")
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("QUIT", 221)
	with d.smtp() as c:
		r = c.cmd("HELO client.example", 250)
		check(r.lines[0].startswith("250 %s" % HOSTNAME), "HELO reply does not name the host: %r" % r)
		c.cmd("EHLO", 501)
		c.cmd("QUIT", 221)
	d.cleanup()

	d = Laimd(enable_smtputf8=False, data_size_limit=0).start()
	with d.smtp() as c:
		kw = keywords(c.ehlo())
		check("SMTPUTF8" not in kw, "SMTPUTF8 advertised while disabled: %r" % kw)
		for want in ("8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"):
			check(want in kw, "EHLO lacks %r: %r" % (want, kw))
		c.cmd("QUIT", 221)


run(main)
