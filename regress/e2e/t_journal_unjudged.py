# A start after a stop of the system that cannot restore what the journal
# holds (doc/architecture.md, "The spool": A commit cut off, or a stop of
# the system). The spool is a tmpfs of 40 MiB; two messages are
# committed and held, laimd killed, one file torn and the other lost, and
# the spool filled. The start leaves both as they are, to be judged
# again: the torn file is not loaded (never delivered torn), and the
# journal keeps their records through this run, also through a
# checkpoint (128 messages delivered, then one more). Once laimd starts
# again with room in the spool, both are restored from the journal and
# delivered once, byte for byte.
import sys
sys.dont_write_bytecode = True
import subprocess
from harness import *

FREED = 128  # Spool::MAX_FREE_FILES / 2: removals that call for a checkpoint


def main():
	d = Laimd()
	blocked = d.block_inbox()
	mounts = []
	try:
		fs = spool_on_tmpfs(d, mounts, 40 * 1024 * 1024, 1000)
		d.start()
		sent = {}
		for tag in ("torn", "lost"):
			msg = varied_message(tag)
			sent[d.send(msg=msg)] = msg
		torn, lost = list(sent)
		for q in sent:
			d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % q)
		d.kill_tree()

		journal_of_another_boot(d.spool)
		path = os.path.join(d.spool, "queue", torn)
		os.truncate(path, os.path.getsize(path) // 2)
		os.unlink(os.path.join(d.spool, "queue", lost))
		filler = fill_space(fs, 0)
		d.unblock_dir(blocked)
		d.start()
		for q in (torn, lost):
			d.wait_log(r"%s: left in the spool as it is, judged again at the next start: .*No space left on device$" % q,
				   since=d.start_mark)
		os.unlink(filler)
		with d.smtp() as c:
			c.ehlo()
			for i in range(FREED + 1):  # the last one's group checkpoints
				msg = simple_message("busy %d" % i)
				sent[c_transaction(c, "sender@client.example", ["rcpt@test.laim.example"], msg)] = msg
		for q in list(sent)[2:]:
			d.wait_removed(q)
		check(not d.search_log(r"%s: to=" % torn, d.start_mark), "the torn file %s loaded and handled" % torn)
		counted = journal_counted(d.spool)
		for q in (torn, lost):
			check(("C", q) in counted, "the journal lost the record of %s, left to be judged at the next start" % q)

		check_eq(d.stop(), 0, "exit status")
		d.start()
		d.wait_log(r"%s: queue file not whole after a stop of the system: restored from the journal$" % torn,
			   since=d.start_mark)
		d.wait_log(r"%s: queue file missing after a stop of the system: restored from the journal$" % lost,
			   since=d.start_mark)
		for q in (torn, lost):
			d.wait_removed(q)
		check_delivered_exactly(d, sent, blocked)
		d.kill_tree()
	finally:
		for m in reversed(mounts):
			subprocess.run(["umount", "-l", m])
	print("what the start could not restore: not loaded, its records kept through a checkpoint, restored "
	      "at the next start")


run(main)
