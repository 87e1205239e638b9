# EHLO advertises SIZE, 8BITMIME, SMTPUTF8 (only when enabled), PIPELINING
# and ENHANCEDSTATUSCODES (RFC 5321 4.1.1.1, RFC 1870, 6152, 6531, 2920,
# 2034); HELO answers with the hostname. The name must be a domain or an
# address literal (4.1.1.1) before it goes into Received:: anything else
# gets 501 5.5.4 Invalid domain name, and the session goes on.
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
	bad_names(d)
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


BAD_NAMES = ["two words", "b\u00fccher.example", "under_score.example", "-lead.example", "trail-.example",
	     "a..b.example", "dot.example.", "x(y).example", "evil.example;x", "[300.1.1.1]", "[IPv6:zz::1]",
	     "[tag:x]", "l" * 64 + ".example", "h" * 254, "with\ttab"]
GOOD_NAMES = ["localhost", "[127.0.0.1]", "[IPv6:::1]", "l" * 63 + ".example"]


def bad_names(d):
	"""Each bad name gets exactly 501 5.5.4 and sets nothing: the message
	sent after them in the same session names the last good one."""
	with d.smtp() as c:
		for name in GOOD_NAMES:
			c.ehlo(name)
		for verb in ("EHLO", "HELO"):
			for name in BAD_NAMES:
				r = c.cmd(("%s %s" % (verb, name)).encode())
				check_eq(r.lines, ["501 5.5.4 Invalid domain name"], "%s %r" % (verb, name))
		qid = c_transaction(c, "a@client.example", ["r@test.laim.example"],
				    simple_message("after bad names"))
		c.cmd("QUIT", 221)
	d.wait_delivered(qid)
	rec = d.delivered_copies(qid)["r@test.laim.example"][1]
	check(rec.startswith("Received: from %s (127.0.0.1)" % GOOD_NAMES[-1]), "Received: %r" % rec)


run(main)
