# A Maildir delivery counts as delivered only once every copy it moved
# into new/ is on disk: strace -f -y on the handler process must show,
# for each move of a copy into Maildir/new, an fsync of that new/ begun
# after the move returned, and returned before the delivery's
# "status=delivered" line was written. One message for two recipients
# puts two copies in the same Maildir: the second move needs the sync as
# much as the first (a sync of new/ between the two covers only one).
# Needs strace (bootstrap's PEERS).
import sys
sys.dont_write_bytecode = True
from harness import *

RCPTS = ("one@test.laim.example", "two@test.laim.example")
MOVED_RE = re.compile(r'"(\S+/Maildir/new)/[^"/]+"(?:, \w+)?\) += 0$')  # the last path: the target
SYNCED_RE = re.compile(r'^\d+<(\S+/Maildir/new)>\) += 0$')


def main():
	d = Laimd()
	d.start()
	trace = os.path.join(d.dir, "strace.out")
	tracer = strace_attach([d.child("handler")], ["-y", "-s", "300", "-e",
						      "trace=renameat2,rename,linkat,link,fsync,write"], trace)
	try:
		qid = d.send(rcpts=RCPTS, msg=simple_message("two copies"))
		for r in RCPTS:
			d.wait_delivered(qid, r)
	finally:
		strace_detach(tracer)

	calls = strace_calls(trace)
	moves = [(end, m.group(1)) for _, name, text, _, end in calls
		 if name in ("renameat2", "rename", "linkat", "link") for m in [MOVED_RE.search(text)] if m]
	syncs = [(start, m.group(1)) for _, name, text, start, _ in calls
		 if name == "fsync" for m in [SYNCED_RE.match(text)] if m]
	logged = [start for _, name, text, start, _ in calls if name == "write" and "status=delivered" in text]
	check_eq(len(moves), 2, "moves into Maildir/new (trace lines %r)" % moves)
	check(logged, "no status=delivered written in the trace")
	for i, newdir in moves:
		covering = [s for s, path in syncs if path == newdir and i < s < logged[0]]  # begun after the move returned
		check(covering, "the move at trace line %d into %s: no fsync of it after it and before the "
		      "delivery was logged (fsyncs at %r, logged at line %d)" % (i + 1, newdir, syncs, logged[0] + 1))
	check_eq(len(maildir_messages(d.maildir)), 2, "copies in the Maildir")
	print("2 copies moved into new/, then new/ synced, then the delivery logged")


run(main)
