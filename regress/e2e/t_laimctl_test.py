# `laimctl test INSTANCE`: a dry run of one handler instance, answered by
# the handler's own test() on one of its workers. A maildir instance
# whose path the laim user cannot write is "not ready" (exit 1) with the
# reason (also when only its tmp/ is not writable), and ready (exit 0)
# once it can, leaving nothing behind; a type
# with nothing to check says so; an unknown instance and a user who is
# not root are refused.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd()
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	box = os.path.join(blocked, "Maildir")
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": box}, "audit": {"type": "log"}}
	d.start()

	r = d.laimctl(["test", "inbox"])
	check_eq(r.returncode, 1, "laimctl test of an unwritable Maildir (%r)" % r)
	check(re.fullmatch(r"laimctl: inbox: not ready: maildir: %s: Permission denied\n" % re.escape(box), r.stderr),
	      "laimctl test of an unwritable Maildir: %r" % r.stderr)

	d.unblock_dir(blocked)
	r = d.laimctl(["test", "inbox"])
	check_ran(r, quiet=False)
	check_eq(r.stdout, "inbox: ready: maildir: %s/tmp is writable\n" % box, "laimctl test of a writable Maildir")
	check_eq(os.listdir(os.path.join(box, "tmp")), [], "tmp/ after the test")
	check_eq(os.listdir(os.path.join(box, "new")), [], "new/ after the test")

	# The Maildir is there, but its tmp/ is not the laim user's.
	tmp = os.path.join(box, "tmp")
	os.chown(tmp, 0, 0)
	r = d.laimctl(["test", "inbox"])
	check_eq((r.returncode, r.stderr), (1, "laimctl: inbox: not ready: maildir: %s: Permission denied\n" % tmp),
		 "laimctl test with a tmp/ the laim user cannot write")
	d.unblock_dir(tmp)

	r = d.laimctl(["test", "audit"])
	check_ran(r, quiet=False)
	check_eq(r.stdout, "audit: ready: nothing to check for this handler type\n", "laimctl test of a log instance")

	r = d.laimctl(["test", "nosuch"])
	check_eq((r.returncode, r.stderr), (1, "laimctl: no handler instance nosuch\n"), "laimctl test nosuch")
	r = d.laimctl(["test", "inbox"], user=local_user())
	check_eq((r.returncode, r.stderr), (1, "laimctl: permission denied\n"), "laimctl test as a user")
	r = d.laimctl(["test"])
	check_eq(r.returncode, 64, "laimctl test without an instance (%r)" % r)

	# The daemon went on serving: mail still flows.
	qid = d.send()
	d.wait_removed(qid)


run(main)
