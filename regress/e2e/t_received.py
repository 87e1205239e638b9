# The delivered file is exactly "Return-Path: <sender>", "Delivered-To:
# rcpt" (as Postfix's local(8) writes them), the Received: header the smtp
# process prepended (RFC 5321 4.4, "with" as RFC 3848 / RFC 6531 3.7.3
# register it, "for" only with one recipient), then the message bytes as
# sent. Each recipient gets its own copy.
import sys
sys.dont_write_bytecode = True
import datetime
import email.utils
from harness import *

MSG = (b"From: Sender <sender@client.example>\r\nTo: r1@test.laim.example\r\n"
       b"Subject: trace\r\nMessage-ID: <trace@client.example>\r\n\r\n"
       b"line one\r\n\r\n  indented\r\n\xc3\xa9\xff\r\n")

DATE = r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d(?::\d\d)? [+-]\d{4}"


def check_received(received, helo, proto, qid, rcpt):
	for line in received.split(b"\r\n")[:-1]:
		check(len(line) <= 998, "Received: line over 998 octets")
	text = received.decode()
	check(text.endswith("\r\n"), "Received: not CRLF-terminated")
	flat = re.sub(r"\r\n[ \t]+", " ", text[:-2])
	want = (r"^Received: from %s \(127\.0\.0\.1\) by %s(?: \([^)]*\))? with %s id %s%s; (%s)$" %
		(re.escape(helo), re.escape(HOSTNAME), proto, qid,
		 " for <%s>" % re.escape(rcpt) if rcpt else "", DATE))
	m = re.match(want, flat)
	check(m, "Received: header %r does not match %r" % (flat, want))
	when = email.utils.parsedate_to_datetime(m.group(1))
	now = datetime.datetime.now(datetime.timezone.utc)
	check(abs((now - when).total_seconds()) < 300, "Received: date %s is not now" % m.group(1))


def deliver(d, greeting, helo, sender, rcpts, mail_params=""):
	with d.smtp() as c:
		c.cmd("%s %s" % (greeting, helo), 250)
		c.cmd(("MAIL FROM:<%s>%s" % (sender, mail_params)).encode(), 250)
		for r in rcpts:
			c.cmd(("RCPT TO:<%s>" % r).encode(), 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(MSG))
		qid = queue_id(c.expect(250))
		c.cmd("QUIT", 221)
	d.wait_removed(qid)
	return qid


def copies_of(d, qid):
	out = []
	for m in maildir_messages(d.maildir):
		ret, to, received, rest = split_delivered(m)
		if re.search(rb"\bid %s\b" % qid.encode(), received):
			out.append((m, ret, to, received, rest))
	return out


def main():
	d = Laimd().start()
	cases = [
		("EHLO", "client.example", "a@client.example", ["r1@test.laim.example"], "", "ESMTP"),
		("EHLO", "client.example", "a@client.example", ["r1@test.laim.example", "r2@test.laim.example"], "", "ESMTP"),
		("HELO", "old.example", "", ["r3@test.laim.example"], "", "SMTP"),
		("EHLO", "client.example", "\u00e9@client.example", ["r4@test.laim.example"], " SMTPUTF8", "UTF8SMTP"),
	]
	for greeting, helo, sender, rcpts, params, proto in cases:
		qid = deliver(d, greeting, helo, sender, rcpts, params)
		copies = copies_of(d, qid)
		check_eq(sorted(c[2] for c in copies), sorted(r.encode() for r in rcpts),
			 "%s: Delivered-To of the copies" % qid)
		for m, _, to, received, _ in copies:
			check_received(received, helo, proto, qid, rcpts[0] if len(rcpts) == 1 else None)
			expect = (b"Return-Path: <" + sender.encode() + b">\r\nDelivered-To: " + to + b"\r\n" +
				  received + MSG)
			check_eq(m, expect, "%s: delivered file, byte for byte" % qid)
		size = d.search_log(r"%s: from=<%s>, size=(\d+), nrcpt=%d(,|$)" % (qid, re.escape(sender), len(rcpts)), 0)
		check(size, "%s: no from= log line with nrcpt=%d" % (qid, len(rcpts)))
		check(int(size.group(1)) in (len(MSG), len(MSG) + len(copies[0][3])),
		      "%s: size=%s is neither the message nor the message with Received:" % (qid, size.group(1)))


run(main)
