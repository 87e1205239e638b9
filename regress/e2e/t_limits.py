# Limits on commands and envelopes: a command line over 512 octets gets
# 500 5.5.2 (RFC 5321 4.5.3.1.4), a 1 MiB line without LF leaves the
# smtp process's memory flat; the 101st RCPT gets 452 4.5.3 (4.5.3.1.8);
# SIZE= over data_size_limit gets 552 5.3.4 at MAIL (RFC 1870 6.1).
import sys
sys.dont_write_bytecode = True
from harness import *

LIMIT = 100000


def long_command(d):
	with d.smtp() as c:
		c.ehlo()
		# 512 octets with CRLF is allowed: "NOOP " + 505 octets + CRLF.
		c.cmd("NOOP " + "x" * 505, 250)
		r = c.cmd("NOOP " + "x" * 600, 500)
		check(r.lines[-1].startswith("500 5.5.2"), "over-long command: %r" % r)
		r = c.cmd("MAIL FROM:<" + "a" * 600 + "@client.example>", 500)
		check(r.lines[-1].startswith("500 5.5.2"), "over-long MAIL: %r" % r)
		# Nothing of the over-long line was taken for a command.
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("NOOP", 250)
		c.cmd("QUIT", 221)


def megabyte_line(d):
	smtp = d.child("smtp")
	with d.smtp() as c:
		c.ehlo()
		before = rss_kb(smtp)
		chunk = b"A" * 65536
		sent = 0
		try:
			for _ in range(16):
				c.send(chunk)
				sent += len(chunk)
		except (BrokenPipeError, ConnectionResetError):
			pass
		during = rss_kb(smtp)
		try:
			c.send(b"\r\n")
		except (BrokenPipeError, ConnectionResetError):
			pass
		r = c.reply(10)
		after = rss_kb(smtp)
		grown = max(during, after) - before
		print("smtp VmRSS before %d kB, during %d kB, after %d kB (sent %d octets)" %
		      (before, during, after, sent))
		check(grown < 2048, "smtp RSS grew by %d kB on a 1 MiB line" % grown)
		check(r.code == 500 and r.lines[-1].startswith("500 5.5.2"),
		      "1 MiB command line: expected 500 5.5.2, got %r" % r)
	# Still serving.
	with d.smtp() as c:
		c.ehlo()
		c.cmd("QUIT", 221)


def hundred_recipients(d):
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example>", 250)
		for i in range(100):
			c.cmd("RCPT TO:<r%d@test.laim.example>" % i, 250)
		r = c.cmd("RCPT TO:<r100@test.laim.example>", 452)
		check(r.lines[-1].startswith("452 4.5.3"), "101st RCPT: %r" % r)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message("hundred")))
		qid = queue_id(c.expect(250))
		c.cmd("QUIT", 221)
	msgs = wait_maildir(d.maildir, 100)
	d.wait_removed(qid)
	check_eq(len(maildir_files(d.maildir)), 100, "copies delivered for 100 recipients")
	got = sorted(split_delivered(m)[1] for m in msgs)
	check_eq(got, sorted(b"r%d@test.laim.example" % i for i in range(100)), "Delivered-To of the copies")
	check(d.search_log(r"%s: from=<a@client\.example>, size=\d+, nrcpt=100(,|$)" % qid, 0),
	      "no 'nrcpt=100' log line for %s" % qid)


def size_param(d):
	with d.smtp() as c:
		c.ehlo()
		r = c.cmd("MAIL FROM:<a@client.example> SIZE=%d" % (LIMIT + 1), 552)
		check(r.lines[-1].startswith("552 5.3.4"), "SIZE= over the limit: %r" % r)
		c.cmd("RCPT TO:<r@test.laim.example>", 503)
		c.cmd("MAIL FROM:<a@client.example> SIZE=%d" % LIMIT, 250)
		c.cmd("RSET", 250)
		r = c.cmd("MAIL FROM:<a@client.example> SIZE=99999999999999999999999")
		check(r.code in (552, 501, 555), "SIZE= beyond 64 bits accepted: %r" % r)
		c.cmd("QUIT", 221)


def main():
	d = Laimd(data_size_limit=LIMIT).start()
	long_command(d)
	megabyte_line(d)
	size_param(d)
	hundred_recipients(d)


run(main)
