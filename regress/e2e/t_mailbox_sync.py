# A mailbox that a delivery creates has a durable name before the
# delivery counts: strace -f -y on the parent (which starts laim-mda for
# the mbox handler) and on the handler process (the file handler and an
# /etc/aliases "/file" target append themselves) must show, after each O_CREAT|O_EXCL open of a new mailbox, an
# fsync of its directory before the line that says it was delivered.
# The fsync of the file alone makes its name durable on ext4 and XFS, but
# POSIX does not promise it. Needs strace (bootstrap's PEERS).
import sys
sys.dont_write_bytecode = True
from harness import *

CREATED_RE = re.compile(r'"([^"]+)", (?:\{flags=)?O_(?:WRONLY|RDWR)\|[A-Z_|]*O_CREAT\|O_EXCL[^)]*\) += \d+<')
SYNCED_RE = re.compile(r'^\d+<([^>]+)>\) += 0$')


def main():
	user = local_user()
	d, mail_dir = mbox_laimd()
	files = d.make_user_dir(os.path.join(d.dir, "files"))
	archive = os.path.join(files, "archive.mbox")
	aliased = os.path.join(files, "aliased.mbox")
	d.config["handlers"]["archive"] = {"type": "file", "path": archive}
	d.config["alias_files"] = True
	with open(d.config["aliases"], "w") as f:
		f.write("tofile: %s\n" % aliased)
	d.config["routes"] = [{"match": "archive@*", "handlers": ["archive"]}, {"match": "*", "handlers": ["local"]}]
	d.start()
	trace = os.path.join(d.dir, "strace.out")
	tracer = strace_attach([d.pid, d.child("handler")], ["-y", "-s", "300", "-e",
							      "trace=open,openat,openat2,fsync,write"], trace)
	try:
		for rcpt in ("%s@%s" % (user.pw_name, HOSTNAME), "archive@" + HOSTNAME, "tofile@" + HOSTNAME):
			qid = d.send(rcpts=[rcpt], msg=simple_message("the first mail makes the mailbox"))
			d.wait_removed(qid)
	finally:
		strace_detach(tracer)

	calls = strace_calls(trace)
	for box in (os.path.join(mail_dir, user.pw_name), archive, aliased):
		names = (box, os.path.basename(box))  # laim-mda opens it relative to the directory
		made = [(end, tid) for tid, name, text, _, end in calls
			if name.startswith("open") for m in [CREATED_RE.search(text)] if m and m.group(1) in names]
		check_eq(len(made), 1, "creations of %s in the trace" % box)
		made_at, tid = made[0]
		syncs = [start for t, name, text, start, _ in calls if t == tid and name == "fsync"
			 for m in [SYNCED_RE.match(text)] if m and m.group(1) == os.path.dirname(box)]
		logged = [start for _, name, text, start, _ in calls if name == "write" and "status=delivered" in text
			  and made_at < start]
		check(logged, "no status=delivered written after %s was made" % box)
		check([s for s in syncs if made_at < s < logged[0]],
		      "%s created at trace line %d: no fsync of %s after it and before the delivery was logged "
		      "(its process's fsyncs of it at %r, logged at line %d)"
		      % (box, made_at + 1, os.path.dirname(box), syncs, logged[0] + 1))
		check(os.path.getsize(box) > 0, "%s is empty" % box)
	print("new mailboxes of laim-mda, the file handler and a /file alias: created, then the directory "
	      "synced, then logged")


run(main)
