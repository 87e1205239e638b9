# laimd stopped (SIGTERM) while laim-mda appends to a mailbox, its fsync
# held by strace (a slow disk) past the handler process's 30 s grace: the
# handler exits without a result, and the parent tells laim-mda to stop
# (SIGTERM) and waits for it, never SIGKILLs it in its append. laim-mda
# cuts the mailbox back to its old size and removes its dotlock; laimd
# exits 0; the message stays queued and, at the next start, is in the
# mailbox once, whole, as a mail reader (python's mailbox) sees it.
# Needs strace (bootstrap's PEERS).
import sys
sys.dont_write_bytecode = True
import grp
import mailbox
from harness import *

STRACE = "/usr/bin/strace"
GRACE = 30  # handler/handlerd.cpp's SHUTDOWN_GRACE
# The append's fsync, held past the grace; the cut back's is not held.
HOLD_US = (GRACE + 2) * 1000000

# LAIM_MDA: laim-mda (same pid, so the parent's child) under strace, its
# first fsync held. Python, not sh: dash would set the effective gid (the
# mail directory's group) to the real one.
WRAPPER = """#!/usr/bin/python3
import os, sys
argv = [%r, "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:delay_enter=%d:when=1", %r]
os.execv(argv[0], argv + sys.argv[1:])
"""


def main():
	user = local_user()
	mail_gid = grp.getgrnam("mail").gr_gid
	real = installed("LAIM_PKGLIBEXECDIR", "laim-mda")
	d, mail_dir = mbox_laimd()
	box = os.path.join(mail_dir, user.pw_name)
	rcpt = "%s@%s" % (user.pw_name, HOSTNAME)
	wrapper = os.path.join(d.dir, "laim-mda-slow")
	with open(wrapper, "w") as f:
		f.write(WRAPPER % (STRACE, HOLD_US, real))
	os.chmod(wrapper, 0o755)
	before = b"From old@client.example Thu Jan  1 00:00:00 2026\nSubject: before\n\nold body\n\n"
	with open(box, "wb") as f:
		f.write(before)
	os.chown(box, user.pw_uid, mail_gid)
	os.chmod(box, 0o600)

	def messages():
		return [(m["Subject"], m.get_payload()) for m in mailbox.mbox(box, create=False)]

	os.environ["LAIM_MDA"] = wrapper
	d.start()
	body = "".join("line %04d of the message\n" % i for i in range(2000))
	msg = ("From: sender@client.example\r\nSubject: during the stop\r\n\r\n" + body.replace("\n", "\r\n")).encode()
	qid = d.send(rcpts=[rcpt], msg=msg)
	# Written, its fsync held: the stop begins in the append.
	wait_for(lambda: os.path.getsize(box) > len(before), 10, "laim-mda's write")
	t0 = time.monotonic()
	d.send_signal(signal.SIGTERM)
	try:
		status = d.proc.wait(GRACE + 12)
	except subprocess.TimeoutExpired:
		raise Fail("laimd did not exit within %d s of SIGTERM" % (GRACE + 12))
	check_eq(status, 0, "laimd's exit status")
	check(time.monotonic() - t0 > GRACE, "laimd exited before the handler's grace ended: the fsync was not held")
	check_eq((os.path.getsize(box), sorted(os.listdir(mail_dir)), d.spool_files("queue")),
		 (len(before), [user.pw_name], [qid]),
		 "after the stop: the mailbox's size (cut back), the files in mail_dir (no dotlock), queue/")
	check_eq(open(box, "rb").read(), before, "the mailbox after the stop")
	for end in ("told to stop: the handler process let go", "exited with status 75"):
		d.wait_log(r"%s: handler=mbox:mailbox, laim-mda as %s \(pid \d+\) %s$" % (qid, user.pw_name, end), 1)

	os.environ["LAIM_MDA"] = real
	d.start()
	d.wait_removed(qid)
	check_eq(messages(), [("before", "old body\n"), ("during the stop", body)],
		 "the mailbox after the restart (each message once, whole)")
	check_eq(d.stop(), 0, "exit status of the second run")


run(main)
