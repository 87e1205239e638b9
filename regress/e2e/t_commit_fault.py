# The commit's own system calls failing: strace attaches to the running
# handler process and makes every call of one kind fail, as a full or
# failing disk would:
#   - fdatasync of the journal (ENOSPC) and the chmod that marks the
#     spool file committed (EIO): the end of data gets 451 4.3.0, its
#     file is gone from queue/, and nothing is ever delivered, not even
#     after a stop of the system: the journal's record of it, which the
#     next group's sync makes durable, is followed by a removal (D);
#   - the fsync of queue/ (EIO), which only a message too large for the
#     journal needs: 451 4.3.0 as well, but the file is in queue/
#     already, so it is delivered (at least once, as
#     doc/architecture.md says), byte for byte. Its first delivery comes
#     while the fault lasts: the Maildir's fsync of new/ fails as well,
#     the delivery is deferred and its copy leaves new/ again, so that
#     the retry leaves exactly one.
# Then strace detaches (the disk is back) and the same daemon takes and
# delivers the next message byte for byte. Two more cases:
#   - a checkpoint whose new journal header cannot be written (EIO):
#     the next message still gets its 250, committed without the journal
#     (its file fdatasynced, its mode fsynced), and once the disk is back
#     the next checkpoint succeeds and messages go to the journal again,
#     whose record restores one after a stop of the system;
#   - an offline import whose final fsync fails: its file leaves queue/,
#     the import is tried again, and the message is delivered once, also
#     after a restart.
# t_journal_overflow covers a group larger than the journal, t_enospc a
# full file system before the commit; tmpfs never fails these calls
# themselves.
import sys
sys.dont_write_bytecode = True
from harness import *

SCENARIOS = [
	# (system call, errno injected, whether the refused message is queued
	# anyway, its size: 30000 goes through the journal, 3000000 not)
	("fdatasync", "ENOSPC", False, 30000),
	("fchmod", "EIO", False, 30000),
	("fsync", "EIO", True, 3000000),
]
ERRNO_TEXT = {"ENOSPC": "No space left on device", "EIO": "Input/output error"}


def attach_failing(d, syscall, err):
	"""strace on every thread of the handler process, failing each
	syscall with err; returns the strace process once it is attached."""
	return strace_attach([handler_started(d)], ["-e", "trace=" + syscall, "-e", "inject=%s:error=%s" % (syscall, err)],
			     os.path.join(d.dir, "strace-%s.out" % syscall))


def refused_commit(d, msg):
	"""A transaction whose end of data gets exactly 451 4.3.0."""
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<sender@client.example>", 250)
		c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(msg))
		r = c.expect(451, timeout=15, what="end of data while the commit fails")
		check_eq(r.lines[-1], "451 4.3.0 Local error in processing, try again later", "the refusal")
		c.cmd("NOOP", 250)  # the session goes on
		c.cmd("QUIT", 221)


def stop_of_the_system(d, sent):
	"""laimd killed as by a power cut, its journal deciding at the next
	start; returns the log's mark at that start, once a message sent after
	it (added to sent) was delivered, so that recovery is over."""
	d.kill_tree()
	journal_of_another_boot(d.spool)
	mark = d.mark()
	d.start()
	probe = varied_message("after the stop of the system")
	qid = d.send(msg=probe)
	d.wait_removed(qid, 15)
	sent[qid] = probe
	return mark


def scenario(syscall, err, queued_anyway, size):
	d = Laimd(name="t_commit_fault_" + syscall)
	d.start()
	tracer = attach_failing(d, syscall, err)
	refused = varied_message("refused while %s fails" % syscall, size)
	try:
		refused_commit(d, refused)
		if syscall == "fsync":
			d.wait_log(r"fsync of queue/: fsync \S+/queue: %s$" % ERRNO_TEXT[err])
			d.wait_log(r"status=deferred, .*\(maildir: \S+/Maildir/new: %s\)$" % ERRNO_TEXT[err])
		else:
			d.wait_log(r"%s: commit failed: .*%s$" % (QID_RE, ERRNO_TEXT[err]))
			check_eq(d.spool_files("queue"), [], "queue/ after the failed commit")
		check_eq(d.pending_files(), [], "pending files in queue/ after the failed commit")
	finally:
		strace_detach(tracer)  # the calls work again
	check_eq(proc_status(d.child("handler")).get("TracerPid"), "0",
		 "tracer of the handler process after strace left")

	sent = {}
	if queued_anyway:
		qid = d.wait_log(r"(%s): from=<sender@client\.example>" % QID_RE).group(1)
		d.wait_removed(qid, 15)
		sent[qid] = refused
	after = varied_message("after %s works again" % syscall)
	qid = d.send(msg=after)
	d.wait_removed(qid, 15)
	sent[qid] = after
	check_delivered_exactly(d, sent)
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	if not queued_anyway:
		refused_id = d.wait_log(r"(%s): commit failed: " % QID_RE, since=0).group(1)
		mark = stop_of_the_system(d, sent)
		check(not d.search_log(r"%s: " % refused_id, mark), "the refused %s after a stop of the system:\n%s"
		      % (refused_id, d.log(mark)))
		check_delivered_exactly(d, sent)
	d.stop()
	print("%s failing with %s: 451 4.3.0, %s; %d message(s) delivered byte for byte after" %
	      (syscall, err, "queued and delivered anyway" if queued_anyway else "nothing queued or delivered",
	       len(sent)))


def failed_checkpoint():
	d = Laimd(name="t_commit_fault_checkpoint")
	blocked = d.block_inbox()
	d.unblock_dir(blocked)
	d.start()
	# 128 removals since the last barrier: the next group checkpoints.
	with d.smtp() as c:
		c.ehlo()
		ids = [c_transaction(c, "sender@client.example", ["rcpt@test.laim.example"], simple_message("m%d" % i))
		       for i in range(128)]
	for q in ids:
		d.wait_removed(q)
	os.chown(blocked, 0, 0)  # X stays queued: no removal writes to the journal while strace counts
	# The committer's first pwrite is the new header's (strace counts per
	# thread).
	tracer, trace = traced(d, ["-e", "trace=pwrite64,fdatasync,fsync,write", "-e",
				   "inject=pwrite64:error=EIO:when=1"])
	try:
		x_msg = varied_message("committed while the journal's header cannot be written", 3000)
		x = d.send(msg=x_msg)
		d.wait_log(r"checkpoint of the journal: write \S+/journal: Input/output error$")
		d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % x)
	finally:
		strace_detach(tracer)
	check(x not in journal_records(d.spool, b"C"), "%s has a record in a journal whose header may be stale" % x)
	check(synced_alone(trace, x), "%s: its file was not fdatasynced and fsynced before its 250 (trace %s)"
	      % (x, trace))
	y_msg = varied_message("after the disk is back", 3000)
	y = d.send(msg=y_msg)
	d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % y)
	check(y in journal_records(d.spool, b"C"), "%s not in the journal once a checkpoint succeeded" % y)
	# A stop of the system that lost Y's file, which the journal stands for.
	d.kill_tree()
	journal_of_another_boot(d.spool)
	os.unlink(os.path.join(d.spool, "queue", y))
	d.unblock_dir(blocked)
	mark = d.mark()
	d.start()
	d.wait_log(r"%s: queue file missing after a stop of the system: restored from the journal$" % y, since=mark)
	for q in (x, y):
		d.wait_removed(q, 30)
	check_eq(len(maildir_files(blocked)), 130, "messages in the Maildir")
	for q, msg in ((x, x_msg), (y, y_msg)):
		check_eq(d.delivered_copies(q, blocked)["rcpt@test.laim.example"][2], msg, "%s as delivered" % q)
	d.stop()
	print("a checkpoint's header write failing (EIO): the next message committed without the journal, "
	      "then the journal used again")


def failed_import_commit():
	d = Laimd(name="t_commit_fault_import")
	d.start()
	# The handler's main thread: store()'s fsync of queue/, then the one
	# of the file's committed mode, which fails.
	tracer, _ = traced(d, ["-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=2"])
	try:
		body = b"Subject: imported once\r\n\r\nbody\r\n"
		name = plant_offline(d.spool, "cron@" + HOSTNAME, ["rcpt@" + HOSTNAME], body, drop_gid())
		d.wait_log(r"offline/%s: cannot import now: fsync spool file .*: Input/output error$" % re.escape(name))
		qid = d.wait_log(r"(%s): from=<cron@%s>, .*offline=%s$" % (QID_RE, re.escape(HOSTNAME), re.escape(name))).group(1)
	finally:
		strace_detach(tracer)
	d.wait_removed(qid)
	check_eq(d.spool_files("queue"), [], "queue/ after the import")
	d.stop()
	d.start()
	probe = d.send(msg=simple_message("after the restart"))
	d.wait_removed(probe)
	copies = [f for f in maildir_files(d.maildir) if b"Subject: imported once" in open(f, "rb").read()]
	check_eq(len(copies), 1, "copies of the imported message, after a restart")
	d.stop()
	print("an import whose commit fails at its last fsync: imported again, delivered once")


def main():
	for s in SCENARIOS:
		scenario(*s)
	failed_checkpoint()
	failed_import_commit()


run(main)
