# A delivered message's spool file is kept in free/ and reused for a later
# message once an fsync of queue/ covers its removal (doc/architecture.md,
# "The spool"): the later message, shorter than the one the file held, is
# delivered byte for byte with nothing after it, and free/ outlives a
# restart.
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
	first = deliver(d, b"Subject: long\r\n\r\n" + (b"LONG-LINE " * 7 + b"\r\n") * 300)
	free = free_inodes(d)
	check_eq(list(free), [first], "free/ after the first delivery")

	# The filler's commit, begun before that fsync, gets a new file; its
	# fsync of queue/ makes the first file reusable for the next message.
	filler = deliver(d, simple_message("filler"))
	free = free_inodes(d)
	check_eq(sorted(free), sorted([first, filler]), "free/ after the filler")
	check(free[filler] != free[first], "the filler reused a file before queue/ was synced")
	short = deliver(d, b"Subject: short\r\n\r\nshort body\r\n")
	after = free_inodes(d)
	check_eq(sorted(after), sorted([filler, short]), "free/ after the short message")
	check_eq(after[short], free[first], "inode of the short message's file (the first one's)")
	got = [m for m in maildir_messages(d.maildir) if b"Subject: short" in m]
	check_eq(len(got), 1, "short messages delivered")
	check(got[0].endswith(b"\r\n\r\nshort body\r\n"), "the short message ends as sent: %r" % got[0][-60:])

	# The files in free/ at the stop are what the next run reuses.
	check_eq(d.stop(), 0, "exit status")
	d.start()
	deliver(d, simple_message("after the restart"))
	check_eq(sorted(free_inodes(d).values()), sorted(after.values()), "inodes in free/ after the restart")


run(main)
