# Message data over data_size_limit: 552 5.3.4 (RFC 1870 6.3), counted
# while it streams, so the smtp process's memory stays flat; nothing is
# delivered and the spool keeps no leftover. A message under the limit
# passes.
import sys
sys.dont_write_bytecode = True
from harness import *

LIMIT = 1048576


def main():
	d = Laimd(data_size_limit=LIMIT).start()
	smtp = d.child("smtp")
	line = b"y" * 98 + b"\r\n"
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		c.cmd("DATA", 354)
		before = rss_kb(smtp)
		peak = before
		block = b"Subject: big\r\n\r\n" + line * 655  # ~64 KiB
		for i in range(128):  # 8 MiB, all read: laim never closes on a client mid-message
			c.send(block)
			if i % 16 == 15:
				peak = max(peak, rss_kb(smtp))
		c.send(b".\r\n")
		r = c.reply(20)
		peak = max(peak, rss_kb(smtp))
		print("smtp VmRSS before %d kB, peak %d kB" % (before, peak))
		check(r.code == 552 and r.lines[-1].startswith("552 5.3.4"),
		      "8 MiB message over a 1 MiB limit: expected 552 5.3.4, got %r" % r)
		check(peak - before < 2048, "smtp RSS grew by %d kB while streaming 8 MiB" % (peak - before))
		# laim reads the whole message to its end and the session goes on.
		r = c.cmd("NOOP")
		check_eq(r.code, 250, "NOOP after the 552 (%r)" % r)

	qid = d.send(msg=b"Subject: under\r\n\r\n" + line * 9000)  # ~900 KB
	d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages delivered (only the one under the limit)")
	check(b"Subject: under" in msgs[0], "the delivered message is not the small one")
	check_eq(d.spool_files("queue"), [], "queue/ after the refused message")


run(main)
