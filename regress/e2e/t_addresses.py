# Addresses are parsed strictly (RFC 5321 4.1.2 Mailbox, quoted local
# parts, <> as sender only): anything else gets 501 or 553 and never
# reaches a handler. Valid unusual forms are delivered as written. Code
# points that reorder or break displayed text (bidi controls and marks,
# U+2028, U+2029) get 553 even with SMTPUTF8.
import sys
sys.dont_write_bytecode = True
from harness import *

BAD_SENDERS = [
	"a@client.example",            # no angle brackets
	"<a@client.example",
	"<a b@client.example>",
	"<a@b@client.example>",
	"<@client.example>",
	"<a@>",
	"<.a@client.example>",
	"<a.@client.example>",
	"<a..b@client.example>",
	"<a@-client.example>",
	"<a@client..example>",
	"<a@client_example.org>",
	"<a@client.example;rm -rf />",
	"<\"unterminated@client.example>",
	"<a@[127.0.0.1>",
	"<a@[300.1.1.1]>",
	"<a\x01b@client.example>",
	"<a@client.example\x7f>",
	"<\xfc@client.example>",       # UTF-8 without SMTPUTF8
	"<%s@client.example>" % ("l" * 65),  # local part over 64 octets (4.5.3.1.1)
]

BAD_RCPTS = [
	"<>",
	"r@test.laim.example",
	"<r@test.laim.example",
	"<r @test.laim.example>",
	"<r@test.laim.example>x",
	"<r@@test.laim.example>",
	"<r@test.laim.example.>",
	"<\"a\\\"@test.laim.example>",
	"<r@[IPv6:zz::1]>",
	"<r@%s.example>" % ("d" * 64),  # a label over 63 octets
]

GOOD = [
	# (sender, recipient) as written in the commands; Postmaster without a
	# domain must be accepted (RFC 5321 4.5.1) and reaches root through the
	# Debian default alias
	("", "root"),
	("a@client.example", "Postmaster"),
	("a+tag@client.example", "\"a b\"@test.laim.example"),
	("\"odd \\\"quoted\\\"\"@client.example", "r.s-t_u@test.laim.example"),
	("a@[127.0.0.1]", "r@[IPv6:::1]"),
	("a@client.example", "Mixed.Case@test.laim.example"),
]


def main():
	d = Laimd().start()
	with d.smtp() as c:
		c.ehlo()
		for s in BAD_SENDERS:
			r = c.cmd(("MAIL FROM:" + s).encode("utf-8", "surrogateescape"))
			check(r.code in (501, 553), "MAIL FROM:%r: expected 501 or 553, got %r" % (s, r))
		c.cmd("RCPT TO:<r@test.laim.example>", 503)  # no bad MAIL started a transaction
		c.cmd("MAIL FROM:<a@client.example>", 250)
		for rc in BAD_RCPTS:
			r = c.cmd("RCPT TO:" + rc)
			check(r.code in (501, 553), "RCPT TO:%r: expected 501 or 553, got %r" % (rc, r))
		r = c.cmd("DATA")  # no recipient was accepted (RFC 5321 3.3: 503 or 554)
		check(r.code in (503, 554), "DATA without a valid recipient: %r" % r)
		c.cmd("RSET", 250)
		c.cmd("QUIT", 221)
	check_eq(maildir_files(d.maildir), [], "Maildir after refused addresses")

	qids = {}
	for sender, rcpt in GOOD:
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<%s>" % sender, 250)
			c.cmd("RCPT TO:<%s>" % rcpt, 250)
			c.cmd("DATA", 354)
			c.send(data_terminated(simple_message("good %s" % rcpt)))
			qids[queue_id(c.expect(250))] = (sender, rcpt)
			c.cmd("QUIT", 221)
	delivered_to = lambda r: "root" if r == "Postmaster" else r
	for qid, (sender, rcpt) in qids.items():
		d.wait_delivered(qid, delivered_to(rcpt))
		check(d.search_log(r"%s: from=<%s>, size=\d+, nrcpt=1(,|$)" % (qid, re.escape(sender)), 0),
		      "no from=<%s> line for %s" % (sender, qid))
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), len(GOOD), "messages delivered")
	got = sorted((split_delivered(m)[0], split_delivered(m)[1]) for m in msgs)
	want = sorted((s.encode(), delivered_to(r).encode()) for s, r in GOOD)
	check_eq(got, want, "(Return-Path, Delivered-To) of the delivered messages")

	# SMTPUTF8 addresses with the SMTPUTF8 parameter (RFC 6531 3.4).
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<j\u00fcrgen@client.example> SMTPUTF8".encode(), 250)
		c.cmd("RCPT TO:<\u00fc@test.laim.example>".encode(), 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message("utf8")))
		qid = queue_id(c.expect(250))
	d.wait_delivered(qid)
	m = [x for x in maildir_messages(d.maildir) if b"Subject: utf8" in x]
	check_eq(len(m), 1, "SMTPUTF8 message delivered")
	check_eq(split_delivered(m[0])[:2], ("j\u00fcrgen@client.example".encode(), "\u00fc@test.laim.example".encode()),
		 "SMTPUTF8 envelope")

	display_controls(d)


DISPLAY_CONTROLS = [0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
		    0x2066, 0x2067, 0x2068, 0x2069]


def display_controls(d):
	"""Each refused code point, in a sender and in a recipient, with and
	without SMTPUTF8: exactly 553 5.1.7 or 553 5.1.3; nothing of them is
	delivered, and the session goes on to deliver a clean message."""
	before = len(maildir_files(d.maildir))
	with d.smtp() as c:
		c.ehlo()
		for cp in DISPLAY_CONTROLS:
			bad = "a%sb" % chr(cp)
			for utf8 in ("", " SMTPUTF8"):
				r = c.cmd(("MAIL FROM:<%s@client.example>%s" % (bad, utf8)).encode())
				check_eq(r.lines, ["553 5.1.7 Bad sender address syntax"], "MAIL with U+%04X%s" % (cp, utf8))
		c.cmd("MAIL FROM:<j\u00fcrgen@client.example> SMTPUTF8".encode(), 250)
		for cp in DISPLAY_CONTROLS:
			for rcpt in ("a%sb@test.laim.example" % chr(cp), "\u00fc@test.laim.ex%sample" % chr(cp)):
				r = c.cmd(("RCPT TO:<%s>" % rcpt).encode())
				check_eq(r.lines, ["553 5.1.3 Bad recipient address syntax"], "RCPT with U+%04X" % cp)
		c.cmd("RCPT TO:<\u00fc@test.laim.example>".encode(), 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message("after display controls")))
		qid = queue_id(c.expect(250))
		c.cmd("QUIT", 221)
	d.wait_delivered(qid)
	check_eq(len(maildir_files(d.maildir)), before + 1, "messages delivered after the display controls")
	check_eq(list(d.delivered_copies(qid)), ["\u00fc@test.laim.example"], "recipients of the clean message")


run(main)
