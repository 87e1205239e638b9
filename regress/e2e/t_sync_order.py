# The 250 is sent only once the message is on disk: laimd runs under
# strace -f -y, and for every queue id a client got a 250 for, the trace
# must show, in this order (doc/architecture.md, "The spool"): the
# write of the message's sum into its file, born in queue/ (no rename);
# a write to the journal, begun after that write returned, holding the
# message's record (kind C, its id, the file with that same sum); an
# fdatasync of the journal begun after that write returned; after it returned, the file's
# chmod to 0600 (committed); and after that, the write of "250 2.0.0 Ok:
# queued as ID" to the client (by the chrooted smtp process, whose socket
# strace cannot name). Leaving the record out, or the journal's sync, or
# answering before it, fails this case; the other cases cannot see it,
# since a lost sync only shows at a power cut.
#
# Each file of queue/ is opened once up to its commit, when it is made
# (or taken from free/): the seal reads through that descriptor. The
# first delivery of each message uses the bytes its commit read for
# the journal, also when it waited for the Maildir's one worker: no file
# of queue/ is opened (the Maildir's failure comes after the message is
# in hand, and the retry is an hour away).
#
# The strace trace shows causality: a traced thread is stopped at each
# syscall's entry and exit until strace has recorded it, and the 250
# follows the syncs' return through the committer, the main loop and the
# smtp process. Needs strace (bootstrap's PEERS); without it the case fails.
import sys
sys.dont_write_bytecode = True
import collections
from harness import *

SYSCALLS = "pwrite64,fdatasync,fsync,fchmod,renameat2,linkat,write,writev,sendto,sendmsg,openat"
QUEUED_RE = re.compile(r'"250 2\.0\.0 Ok: queued as (' + QID_RE + r')\\r\\n')


def strace_path():
	path = shutil.which("strace")
	check(path, "strace is not installed (bootstrap's PEERS lists it)")
	return path


def commit_events(calls, spool):
	"""Per queue id: its sum (the digits and the write's (start, end)
	trace line indexes), the journal write holding its record, its chmod
	to 0600 (the first of each), its 250's start and its file's first
	opening by path; every rename into queue/ at a commit (there must be
	none); and every successful fdatasync of the journal (start, end)."""
	queue = re.escape(spool + "/queue/")
	journal = re.escape(spool + "/journal")
	# A path in queue/ as strace -y shows it: absolute, or a name beside
	# a descriptor of queue/.
	in_queue = r'(?:"%s(%s)"|\d+<%s>, "(%s)")' % (queue, QID_RE, re.escape(spool + "/queue"), QID_RE)
	qid_of = lambda m: m.group(1) or m.group(2)
	ev = {k: {} for k in ("sum", "rename", "record", "chmod", "answer")}
	ev["read"] = []  # (qid, start) of every opening of a queue file by its path
	journal_syncs = []
	for tid, name, text, start, end in calls:
		ok = re.search(r"\) += (?:0|\d+)(?: \(DELAYED\))?$", text)
		fd_in = lambda d: re.match(r"\d+<%s(%s)>" % (d, QID_RE), text)
		if name == "pwrite64" and ok and fd_in(queue):
			m = re.search(r', "([0-9a-f]{8})", 8, ', text)
			if m:
				ev["sum"].setdefault(fd_in(queue).group(1), (m.group(1), start, end))
		elif name == "pwrite64" and ok and re.match(r"\d+<%s>" % journal, text):
			for qid, body in re.findall(r"C(%s)\\0.*?sum ([0-9a-f]{8})\\nid \1\\n" % QID_RE, text):
				ev["record"].setdefault(qid, (body, start, end))
		elif name in ("renameat2", "linkat") and ok and "%s/free" % spool not in text:
			m = re.search(r', %s, ' % in_queue, text)
			if m:
				ev["rename"][qid_of(m)] = (start, end)
		elif name == "fchmod" and ok and fd_in(queue) and ", 0600)" in text:
			ev["chmod"].setdefault(fd_in(queue).group(1), (start, end))
		elif name == "openat" and re.search(r"\) += \d+<", text) and re.match(r"(?:AT_FDCWD[^,]*, )?%s" % in_queue, text):
			ev["read"].append((qid_of(re.match(r"(?:AT_FDCWD[^,]*, )?%s" % in_queue, text)), start))
		elif name == "fdatasync" and ok and re.match(r"\d+<%s>\)" % journal, text):
			journal_syncs.append((start, end))
		elif name in ("write", "writev", "sendto", "sendmsg"):
			for qid in QUEUED_RE.findall(text):
				ev["answer"].setdefault(qid, start)
	return ev, journal_syncs


def check_commit(qid, ev, journal_syncs):
	for step in ("sum", "record", "chmod", "answer"):
		check(qid in ev[step], "%s: no %s in the trace" % (qid, step))
	check(qid not in ev["rename"], "%s: renamed into queue/ at its commit: it is born there" % qid)
	(sum_digits, *summed), (record_sum, *recorded), chmodded = (ev[k][qid] for k in ("sum", "record", "chmod"))
	answered = ev["answer"][qid]
	check_eq(record_sum, sum_digits, "%s: the sum in its journal record" % qid)
	check(summed[1] < recorded[0], "%s: its journal record was written before its sum's write returned" % qid)
	covering = [s for s in journal_syncs if recorded[1] < s[0] and s[1] < chmodded[0]]
	check(covering, "%s: no fdatasync of the journal begun after its record was written and returned before "
	      "its chmod (record at trace line %d, chmod at line %d, fdatasyncs of the journal at %r)" %
	      (qid, recorded[1] + 1, chmodded[0] + 1, [(s[0] + 1, s[1] + 1) for s in journal_syncs]))
	check(chmodded[1] < answered, "%s: its 250 went out before it was marked committed" % qid)
	opened = [s for q, s in ev["read"] if q == qid and s < summed[0]]
	check(len(opened) == 1, "%s: its file in queue/ was opened %d times before its seal (trace lines %r): the "
	      "seal reads through the descriptor its creation opened" % (qid, len(opened), [s + 1 for s in opened]))
	late = [s for q, s in ev["read"] if q == qid and s > chmodded[1]]
	check(not late, "%s: its file in queue/ was opened after its commit (trace line %d): the first delivery "
	      "read again what its commit had read" % (qid, late[0] + 1 if late else 0))


def send_together(d, n):
	"""n transactions on their own connections, each up to its last body
	line, then every end of data at once, so that the commits arrive
	together and form groups; returns the queue ids."""
	sessions = []
	for i in range(n):
		s = Smtp(d.port)
		s.ehlo()
		s.cmd("MAIL FROM:<sender@client.example>", 250)
		s.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		s.cmd("DATA", 354)
		s.send(crlf(simple_message("together %d" % i)))
		sessions.append(s)
	for s in sessions:
		s.send(b".\r\n")
	ids = []
	for s in sessions:
		r = s.expect(250, timeout=30)
		m = re.search(r"Ok: queued as (%s)$" % QID_RE, r.text)
		check(m, "no queue id in %r" % r)
		ids.append(m.group(1))
		s.cmd("QUIT", 221)
	return ids


def group_sizes(records):
	"""How many records each write to the journal held."""
	writes = collections.Counter(start for _, start, _ in records.values())
	return [writes[k] for k in sorted(writes)]


def main():
	d = Laimd()
	# A Maildir the handler cannot write: nothing is delivered, so no
	# checkpoint's syncfs can stand in for the commit's sync.
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked, "workers": 1}}
	d.config["retry_initial"] = d.config["retry_max"] = 3600
	trace = os.path.join(d.dir, "strace.out")
	# -D: strace runs as a grandchild, so d.proc stays laimd's parent.
	# Every second fdatasync returns 0.2 s late: the ends of data that
	# arrive meanwhile wait for the next group, so groups of several form,
	# and a chmod or a 250 that does not wait for its sync shows. -s:
	# each journal write whole.
	d.wrap(runner="%s -D -f -y -s 65536 -e trace=%s -e inject=fdatasync:delay_exit=200000:when=2+2 -o %s" %
	       (strace_path(), SYSCALLS, trace))
	d.start(timeout=30)

	ids = [d.send(msg=simple_message("one by one %d" % i)) for i in range(3)]
	ids += send_together(d, 8)  # group commits
	for qid in ids:  # each first delivery tried, and deferred
		d.wait_log(r"%s: to=<rcpt@test\.laim\.example>, .*status=deferred" % qid)
	check_eq(len(set(ids)), 11, "distinct queue ids")
	for qid in ids:
		check(os.path.exists(os.path.join(d.spool, "queue", qid)), "queue/%s after its 250" % qid)
	check_eq(d.stop(), 0, "laimd's exit status after SIGTERM")  # strace ends with it

	ev, journal_syncs = commit_events(strace_calls(trace), os.path.realpath(d.spool))
	for qid in ids:
		check_commit(qid, ev, journal_syncs)
	sizes = group_sizes(ev["record"])
	check(max(sizes) >= 2, "no group commit of two or more messages (records per journal write: %r)" % sizes)
	print("%d messages: sum, journal record, its fdatasync, chmod, then the 250; records per journal write: %r" % (len(ids), sizes))


run(main)
