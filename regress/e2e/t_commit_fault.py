# The commit's own system calls failing: strace attaches to the running
# handler process and makes every call of one kind fail, as a full or
# failing disk would:
#   - fdatasync of the journal (ENOSPC) and the chmod that marks the
#     spool file committed (EIO): the end of data gets 451 4.3.0, its
#     file is gone from queue/, and nothing is ever delivered;
#   - the fsync of queue/ (EIO), which only a message too large for the
#     journal needs: 451 4.3.0 as well, but the file is in queue/
#     already, so it is delivered (at least once, as
#     doc/architecture.md says), byte for byte. Its first delivery comes
#     while the fault lasts: the Maildir's fsync of new/ fails as well,
#     the delivery is deferred and its copy leaves new/ again, so that
#     the retry leaves exactly one.
# Then strace detaches (the disk is back) and the same daemon takes and
# delivers the next message byte for byte. t_enospc covers a full file
# system before the commit; tmpfs never fails these calls themselves.
import sys
sys.dont_write_bytecode = True
import signal
import subprocess
from harness import *

SCENARIOS = [
	# (system call, errno injected, whether the refused message is queued
	# anyway, its size: 30000 goes through the journal, 100000 not)
	("fdatasync", "ENOSPC", False, 30000),
	("fchmod", "EIO", False, 30000),
	("fsync", "EIO", True, 100000),
]
ERRNO_TEXT = {"ENOSPC": "No space left on device", "EIO": "Input/output error"}


def tracer_of(pid):
	with open("/proc/%d/status" % pid) as f:
		return int(re.search(r"^TracerPid:\s+(\d+)$", f.read(), re.M).group(1))


def attach_failing(d, syscall, err):
	"""strace on every thread of the handler process, failing each
	syscall with err; returns the strace process once it is attached."""
	strace = shutil.which("strace")
	check(strace, "strace is not installed (bootstrap's PEERS lists it)")
	handler = d.child("handler")
	p = subprocess.Popen([strace, "-f", "-qq", "-o", os.path.join(d.dir, "strace-%s.out" % syscall),
			      "-e", "trace=" + syscall, "-e", "inject=%s:error=%s" % (syscall, err), "-p", str(handler)])
	wait_for(lambda: tracer_of(handler) == p.pid, 10, "strace attached to the handler process")
	return p


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
		tracer.send_signal(signal.SIGINT)  # detaches: the calls work again
		tracer.wait(10)
	check_eq(tracer_of(d.child("handler")), 0, "tracer of the handler process after strace left")

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
	d.stop()
	print("%s failing with %s: 451 4.3.0, %s; %d message(s) delivered byte for byte after" %
	      (syscall, err, "queued and delivered anyway" if queued_anyway else "nothing queued or delivered",
	       len(sent)))


def main():
	for s in SCENARIOS:
		scenario(*s)


run(main)
