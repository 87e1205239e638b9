# A permanent handler failure moves the message to failed/ with a reason
# file, logged, and it is never retried. A per_recipient maildir refuses a
# local part that cannot be a directory name: at RCPT time (550) when it
# judges the recipient, and at delivery time (permanent failure) for a
# message queued before the config changed to per_recipient. Deleted
# from failed/ by the administrator, it stays gone after a restart of
# the system, though the journal held it.
import sys
sys.dont_write_bytecode = True
import signal
import time
from harness import *

BAD = '"a/b"@test.laim.example'


def main():
	d = Laimd()
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	boxes = d.make_user_dir(os.path.join(d.dir, "boxes"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()

	# Accepted while inbox is a plain (for now unwritable) Maildir.
	qid = d.send(rcpts=[BAD], msg=simple_message("doomed"))
	d.wait_log(r"%s: to=<%s>, handler=inbox, status=deferred" % (qid, re.escape(BAD)))

	# Now inbox delivers per recipient: "a/b" cannot be a directory.
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": boxes, "per_recipient": True}}
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)

	m = d.wait_log(r"%s: to=<%s>, handler=inbox, status=failed \((.+)\)$" % (qid, re.escape(BAD)), 15)
	reason = m.group(1)
	m2 = d.wait_log(r"%s: moved to failed/: (.+)$" % qid, 10)
	check(os.path.exists(os.path.join(d.spool, "failed", qid)), "failed/%s missing" % qid)
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		text = f.read()
	check("a/b" in text, "failed/%s.reason does not say why: %r" % (qid, text))
	check_eq(d.spool_files("queue"), [], "queue/ after the permanent failure")
	check(not d.search_log(r"%s: to=<[^>]*>, handler=inbox, status=delivered" % qid, 0), "doomed message delivered")
	print("reason: %s / %s" % (reason, m2.group(1)))

	# Not retried afterwards.
	n = len(d.findall_log(r"%s: to=" % qid, 0))
	time.sleep(2.5)
	check_eq(len(d.findall_log(r"%s: to=" % qid, 0)), n, "delivery lines of %s after its failure" % qid)
	n = len(d.findall_log(r"%s: to=<[^>]*>, handler=inbox, status=failed" % qid, 0))
	check_eq(n, 1, "permanent failure lines for %s" % qid)

	# With per_recipient, the same recipient is refused at RCPT time and a
	# plain one lands in its own directory.
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<a@client.example>", 250)
		r = c.cmd("RCPT TO:<%s>" % BAD)
		check_eq(r.code, 550, "RCPT of a local part the per_recipient maildir refuses (%r)" % r)
		c.cmd("RCPT TO:<alice@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message("alice")))
		good = queue_id(c.expect(250))
	d.wait_removed(good)
	check_eq(len(maildir_files(os.path.join(boxes, "alice"))), 1, "messages in boxes/alice")
	check_eq(sorted(os.listdir(boxes)), ["alice"], "directories under the per_recipient root")
	check_eq(sorted(d.spool_files("failed")), sorted([qid, qid + ".reason"]), "failed/ at the end")

	# The administrator deletes the failed message, as laimctl(8) says; the
	# system is restarted cleanly. The journal still holds the message's
	# record, and the D record written with its move keeps it gone.
	check(("C", qid) in journal_counted(d.spool), "%s has no record in the journal" % qid)
	for name in (qid, qid + ".reason"):
		os.unlink(os.path.join(d.spool, "failed", name))
	check_eq(d.stop(), 0, "exit status")
	journal_of_another_boot(d.spool)
	d.start()
	d.wait_removed(d.send(rcpts=["alice@test.laim.example"], msg=simple_message("after the restart")))
	check(not d.search_log(r"%s: queue file .*restored" % qid, d.start_mark),
	      "%s, given up and deleted from failed/, restored after a restart of the system" % qid)
	check_eq(d.spool_files("failed") + d.spool_files("queue"), [], "failed/ and queue/ after the restart")


run(main)
