# A delivered message's spool file is kept in free/ and reused for a later
# message once a barrier covers its removal (doc/architecture.md, "The
# spool"): here the checkpoint of a restart, since a commit's journal sync
# is none. The later message, shorter than the one the file held, is
# delivered byte for byte with nothing after it; free/ outlives the stop.
import sys
sys.dont_write_bytecode = True
from harness import *


def free_inodes(d):
	return {f: os.lstat(os.path.join(d.spool, "free", f)).st_ino for f in d.spool_files("free")}


def deliver(d, msg):
	qid = d.send(msg=msg)
	d.wait_delivered(qid)
	d.wait_removed(qid)
	return qid


def main():
	d = Laimd().start()
	long_body = (b"LONG-LINE " * 7 + b"\r\n") * 300
	first = deliver(d, b"Subject: long\r\n\r\n" + long_body)
	free = free_inodes(d)
	check_eq(list(free), [first], "free/ after the first delivery")

	# No barrier since that removal: the filler's commit gets a new file.
	filler = deliver(d, b"Subject: filler\r\n\r\n" + long_body)
	free = free_inodes(d)
	check_eq(sorted(free), sorted([first, filler]), "free/ after the filler")
	check(free[filler] != free[first], "the filler reused a file before any barrier")

	# The start's checkpoint makes both reusable.
	check_eq(d.stop(), 0, "exit status")
	d.start()
	short = deliver(d, b"Subject: short\r\n\r\nshort body\r\n")
	after = free_inodes(d)
	check_eq(len(after), 2, "files in free/ after the short message")
	check(short in after, "the short message's file is not in free/: %r" % sorted(after))
	check_eq(sorted(after.values()), sorted(free.values()), "inodes in free/ (no new file for the short message)")
	got = [m for m in maildir_messages(d.maildir) if b"Subject: short" in m]
	check_eq(len(got), 1, "short messages delivered")
	check(got[0].endswith(b"\r\n\r\nshort body\r\n"), "the short message ends as sent: %r" % got[0][-60:])


run(main)
