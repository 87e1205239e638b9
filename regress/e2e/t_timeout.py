# A client silent for longer than `timeout` between commands gets
# 421 4.4.2 and is closed (RFC 5321 4.5.3.2); a transaction it had open
# is dropped, nothing delivered. An active client is not cut, nor one
# that waited for laimd longer than `timeout` (a greeting_delay, a MAIL
# in line for room in the queue): its clock starts at laimd's answer.
import sys
sys.dont_write_bytecode = True
import time
from harness import *


def expect_timeout(c, started, what):
	r = c.reply(8)
	waited = time.monotonic() - started
	check(r.code == 421 and r.lines[-1].startswith("421 4.4.2"), "%s: expected 421 4.4.2, got %r" % (what, r))
	check(waited >= 1.5, "%s: 421 after %.2fs, before the 2 s timeout" % (what, waited))
	check(c.wait_closed(5), "%s: connection not closed after 421" % what)


def main():
	d = Laimd(timeout=2).start()

	with d.smtp() as c:
		expect_timeout(c, time.monotonic(), "idle after the greeting")

	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		expect_timeout(c, time.monotonic(), "idle in a transaction")

	# Inside DATA the same timeout applies between reads.
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example>", 250)
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(b"Subject: stalled\r\n\r\nhalf a message\r\n")
		expect_timeout(c, time.monotonic(), "idle in DATA")

	# Commands 1 s apart keep a session alive past the timeout.
	with d.smtp() as c:
		c.ehlo()
		for _ in range(4):
			time.sleep(1)
			c.cmd("NOOP", 250)
		c.cmd("QUIT", 221)

	qid = d.send(msg=simple_message("after"))
	d.wait_removed(qid)
	check_eq(len(maildir_files(d.maildir)), 1, "messages delivered (only the last)")
	wait_for(lambda: not d.pending_files(), 5, "no pending file in queue/")


def server_waits():
	d = Laimd(name="t_timeout_waits", timeout=2, greeting_delay=3000, max_queue_size=1, max_deferred=1,
		  queue_full_wait=20)
	blocked = d.block_inbox()
	d.start()
	d.send(msg=simple_message("fills the queue"))  # stays queued: the inbox is blocked
	with d.smtp() as c:  # its 220 after 3 s
		time.sleep(1)
		c.ehlo()
		c.send(b"MAIL FROM:<a@client.example>\r\n")
		time.sleep(3)  # the MAIL waits for room
		d.unblock_dir(blocked)
		check_eq(c.reply(20).code, 250, "MAIL once the queue has room")
		time.sleep(1)
		c.cmd("RCPT TO:<r@test.laim.example>", 250)
		expect_timeout(c, time.monotonic(), "idle after the waits")


def both():
	main()
	server_waits()


run(both)
