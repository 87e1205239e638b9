# A spool whose journal cannot be made (doc/architecture.md, "The spool":
# Without a journal): on a tmpfs of 2 MiB, laimd says so, and a small
# message commits with syncs of its own, its committed mode included.
# Then a stop of the system (laimd killed; a chmod the trace does not
# show synced is undone, as a power cut may lose it), space comes back,
# and the next start makes the journal and delivers the message. Its
# mode must be synced before its 250 (the trace shows it): a later start
# with a journal that does not hold a small pending file removes it as
# never answered 250 (the start that makes the journal judges queue/ by
# the files alone).
import sys
sys.dont_write_bytecode = True
import subprocess
from harness import *


def mode_synced(trace, qid):
	"""Whether the trace shows qid's queue file made 0600, then fsynced."""
	calls = strace_calls(trace)
	def at(name, pattern):
		return [start for _, n, text, start, _ in calls if n == name and re.search(pattern, text)]
	chmod = at("fchmod", r"^\d+<\S+/queue/%s>, 0600\) = 0" % qid)
	check(chmod, "no chmod of %s to 0600 in the trace" % qid)
	return any(start > chmod[0] for start in at("fsync", r"^\d+<\S+/queue/%s>\) = 0" % qid))


def main():
	d = Laimd()
	blocked = d.block_inbox()
	mounts = []
	try:
		fs = spool_on_tmpfs(d, mounts, 2 * 1024 * 1024, 200)
		d.start()
		journal = os.path.join(d.spool, "journal")
		d.wait_log(r"%s: no journal \(write %s\.new: No space left on device\)" % (re.escape(d.spool),
											 re.escape(journal)))
		trace = os.path.join(d.dir, "strace.out")
		tracer = strace_attach([d.child("handler")], ["-y", "-e", "trace=fchmod,fsync"], trace)
		msg = varied_message("committed without a journal", 3000)
		qid = d.send(msg=msg)
		strace_detach(tracer)
		d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % qid)
		d.kill_tree()

		synced = mode_synced(trace, qid)
		if not synced:
			os.chmod(os.path.join(d.spool, "queue", qid), 0o700)  # lost with the stop of the system
		r = subprocess.run(["mount", "-o", "remount,size=%d" % (40 * 1024 * 1024), fs],
				   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
		check_eq(r.returncode, 0, "remount of %s, larger (%r)" % (fs, r.stdout))
		d.unblock_dir(blocked)
		d.start()
		m = d.wait_log(r"%s: (to=<[^>]*>, handler=inbox, status=delivered|.*removed)" % qid, since=d.start_mark)
		check("delivered" in m.group(0), "%s, answered 250 without a journal, at the start that made one: %s" %
		      (qid, m.group(0)))
		check_eq(os.path.getsize(journal), 32 * 1024 * 1024, "size of the journal made at the second start")
		d.wait_removed(qid)
		check_delivered_exactly(d, {qid: msg}, blocked)
		check(synced, "%s: its committed mode not fsynced before its 250, without a journal" % qid)
		d.kill_tree()
	finally:
		for m in reversed(mounts):
			subprocess.run(["umount", "-l", m])
	print("without a journal: the committed mode synced, the message kept at the start that made the journal")


run(main)
