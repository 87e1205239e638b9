# The 250 is sent only once the message is on disk: laimd runs under
# strace -f -y, and for every queue id a client got a 250 for, the trace
# must show, in this order, the fdatasync of spool/incoming/ID, its rename
# into queue/, an fsync of queue/ begun after that rename (all three on one
# thread of the handler process) and, after that fsync returned, the write
# of "250 2.0.0 Ok: queued as ID" to the client (by the chrooted smtp
# process, whose socket strace cannot name). Removing either
# sync from the commit (or answering before it) fails this case; the other
# cases cannot see it, since a lost sync only shows at a power cut.
#
# The strace trace shows causality: a traced thread is stopped at each
# syscall's exit until strace has recorded it, and the 250 follows the
# fsync's return through the committer, the main loop and the smtp
# process. Needs strace (bootstrap's PEERS); without it the case fails.
import sys
sys.dont_write_bytecode = True
import threading
from harness import *

SYSCALLS = "fdatasync,fsync,renameat2,linkat,write,writev,sendto,sendmsg"
LINE_RE = re.compile(r"^(\d+) +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$")
QUEUED_RE = re.compile(r'"250 2\.0\.0 Ok: queued as (' + QID_RE + r')\\r\\n')


def strace_path():
	path = shutil.which("strace")
	check(path, "strace is not installed (bootstrap's PEERS lists it)")
	return path


def syscalls(trace):
	"""The trace as a list of calls: (tid, name, args and result, index of
	its entry line, index of its exit line), in the order strace saw them."""
	pending = {}
	calls = []
	with open(trace) as f:
		for n, line in enumerate(f):
			m = LINE_RE.match(line.rstrip("\n"))
			if not m:
				continue
			tid = int(m.group(1))
			if m.group(2):
				name, start, head = pending.pop(tid, (m.group(2), n, ""))
				calls.append((tid, name, head + m.group(3), start, n))
			elif m.group(5).endswith("<unfinished ...>"):
				pending[tid] = (m.group(4), n, m.group(5)[:-len("<unfinished ...>")].rstrip())
			else:
				calls.append((tid, m.group(4), m.group(5), n, n))
	return calls


def commit_events(calls, spool):
	"""Per queue id: its fdatasync and rename (tid, exit index), the 250's
	entry index; and every successful fsync of queue/ (tid, entry, exit)."""
	incoming = re.escape(spool + "/incoming/")
	synced, renamed, answered, dir_syncs = {}, {}, {}, []
	for tid, name, text, start, end in calls:
		ok = re.search(r"\) += 0$", text)
		if name == "fdatasync" and ok:
			m = re.match(r"\d+<%s(%s)>\)" % (incoming, QID_RE), text)
			if m:
				synced[m.group(1)] = (tid, end)
		elif name in ("renameat2", "linkat") and ok:
			m = re.match(r'AT_FDCWD(?:<[^>]*>)?, "%s(%s)", \d+<%s/queue>, "\1"' % (incoming, QID_RE, re.escape(spool)), text)
			if m:
				renamed[m.group(1)] = (tid, end)
		elif name == "fsync" and ok and re.match(r"\d+<%s/queue>\)" % re.escape(spool), text):
			dir_syncs.append((tid, start, end))
		elif name in ("write", "writev", "sendto", "sendmsg"):
			for qid in QUEUED_RE.findall(text):
				answered.setdefault(qid, start)
	return synced, renamed, answered, dir_syncs


def check_commit(qid, synced, renamed, answered, dir_syncs):
	check(qid in answered, "%s: no write of its 250 in the trace" % qid)
	check(qid in synced, "%s: no fdatasync of incoming/%s in the trace" % (qid, qid))
	check(qid in renamed, "%s: no rename of incoming/%s into queue/ in the trace" % (qid, qid))
	tid, sync_end = synced[qid]
	rtid, rename_end = renamed[qid]
	check_eq(rtid, tid, "%s: thread of the rename (that of the fdatasync)" % qid)
	check(sync_end < rename_end, "%s: renamed into queue/ before its fdatasync returned" % qid)
	covering = [s for s in dir_syncs if s[0] == tid and s[1] > rename_end and s[2] < answered[qid]]
	check(covering, "%s: no fsync of queue/ begun after its rename returned before the 250 "
	      "(rename at trace line %d, 250 at line %d, fsyncs of queue/ at %r)" %
	      (qid, rename_end + 1, answered[qid] + 1, [(s[1] + 1, s[2] + 1) for s in dir_syncs]))


def send_some(d, tags):
	"""One transaction per tag, all at once on their own connections;
	returns the queue ids."""
	ids, errors = [], []

	def one(tag):
		try:
			ids.append(d.send(msg=simple_message(tag)))
		except Exception as e:
			errors.append("%s: %s" % (tag, e))
	threads = [threading.Thread(target=one, args=(t,)) for t in tags]
	for t in threads:
		t.start()
	for t in threads:
		t.join(30)
	check(not errors, "transactions: %s" % "; ".join(errors))
	return ids


def main():
	d = Laimd()
	# A Maildir the handler cannot write: nothing is delivered, so no
	# removal's fsync of queue/ can stand in for the commit's.
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	trace = os.path.join(d.dir, "strace.out")
	# -D: strace runs as a grandchild, so d.proc stays laimd's parent.
	d.wrap(runner="%s -D -f -y -s 256 -e trace=%s -o %s" % (strace_path(), SYSCALLS, trace))
	d.start(timeout=30)

	ids = [d.send(msg=simple_message("one by one %d" % i)) for i in range(3)]
	ids += send_some(d, ["together %d" % i for i in range(4)])  # a group commit
	check_eq(len(set(ids)), 7, "distinct queue ids")
	for qid in ids:
		check(os.path.exists(os.path.join(d.spool, "queue", qid)), "queue/%s after its 250" % qid)
	check_eq(d.stop(), 0, "laimd's exit status after SIGTERM")  # strace ends with it

	events = commit_events(syscalls(trace), os.path.realpath(d.spool))
	for qid in ids:
		check_commit(qid, *events)
	print("%d messages: fdatasync, rename, fsync of queue/, then the 250" % len(ids))


run(main)
