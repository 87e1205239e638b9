# laim-mda on a slow disk, the disk stood in for by strace delaying a
# system call of laim-mda (run through a LAIM_MDA wrapper, or by hand):
#   - the fsync of the append outlasts the delivery's limit: the parent
#     does not kill laim-mda (it would leave the copy and the dotlock, and
#     the retry would append the copy again); the queue counts the call
#     late, and delivered once it ends: the mailbox holds the copy once,
#     and no dotlock is left;
#   - the locks are taken only after laim-mda's own deadline (SECONDS):
#     it starts no append then, removes its dotlock and says why (75),
#     the mailbox as it was;
#   - laim-mda waits for its input (the wrapper holds it back) and its
#     user, who may signal it, stops it (SIGSTOP): the parent continues
#     it at once, and mail to root, which waits for the mbox handler's
#     one delivery thread, is not held up until laim-mda is killed;
#   - the handler process dies while laim-mda's fsync is held: the parent
#     tells laim-mda to stop (SIGTERM), which cuts its append back, and
#     the restarted handler's retry puts the message in the mailbox once.
#     (A stop past the handler's grace: t_mbox_stop.py.)
# Needs strace (bootstrap's PEERS).
import sys
sys.dont_write_bytecode = True
import grp
import mailbox
from harness import *

STRACE = "/usr/bin/strace"


def slow(inject):
	"""strace's arguments that delay laim-mda's system call, then run it."""
	return [STRACE, "-qq", "-o", "/dev/null", "-e", "trace=" + inject.split(":")[0], "-e", "inject=" + inject]


# LAIM_MDA: laim-mda (same pid, so the parent's child) run as the file
# MODE says: "hold SECONDS", its input held back that long; else under
# MODE's words (an strace command). Python, not sh: dash would set the
# effective gid (the mail directory's group) to the real one.
WRAPPER = """#!/usr/bin/python3
import os, sys, time
mode = open(%r).read().split()
if mode[:1] == ["hold"]:
	r, w = os.pipe()
	if os.fork() == 0:
		os.close(r)
		time.sleep(float(mode[1]))
		while data := os.read(0, 65536):
			os.write(w, data)
		os._exit(0)
	os.dup2(r, 0)
	os.close(r)
	os.close(w)
	mode = []
argv = mode + [%r] + sys.argv[1:]
os.execv(argv[0], argv)
"""


def as_mda(user, mail_gid):
	"""The ids the parent gives laim-mda: user's uid, user's group as the
	real gid and the mail directory's as the effective and saved one."""
	os.setgroups([])
	os.setresgid(user.pw_gid, mail_gid, mail_gid)
	os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)


def main():
	user = local_user()
	mail_gid = grp.getgrnam("mail").gr_gid
	real = installed("LAIM_PKGLIBEXECDIR", "laim-mda")
	d, mail_dir = mbox_laimd()
	box = os.path.join(mail_dir, user.pw_name)
	rcpt = "%s@%s" % (user.pw_name, HOSTNAME)
	# delivery_timeout 6: a command's limit is 5 s, laim-mda's own 4 s.
	d.config["delivery_timeout"] = 6
	d.config["retry_initial"] = 1
	wrapper, mode = os.path.join(d.dir, "laim-mda-slow"), os.path.join(d.dir, "mda-mode")
	with open(wrapper, "w") as f:
		f.write(WRAPPER % (mode, real))
	os.chmod(wrapper, 0o755)

	def mda_mode(words):
		with open(mode, "w") as f:
			f.write(" ".join(words))
		os.chmod(mode, 0o644)
	os.environ["LAIM_MDA"] = wrapper
	with open(box, "wb"):
		pass
	os.chown(box, user.pw_uid, mail_gid)
	os.chmod(box, 0o600)
	d.start()

	def subjects():
		return [m["Subject"] for m in mailbox.mbox(box, create=False)]

	def slow_fsync():
		mda_mode(slow("fsync:delay_enter=7500000"))
		mark = d.mark()
		qid = d.send(rcpts=[rcpt], msg=simple_message("slow disk"))
		m = d.wait_log(r"%s: (to=<.*>, handler=local, status=delivered, late \(after its timeout\)|"
			       r"handler=mbox:mailbox, command \(pid \d+\) still running after \d+s: killed)$" % qid, 20,
			       since=mark)
		check("killed" not in m.group(1), "laim-mda killed in its append: %s" % m.group(1))
		d.wait_removed(qid)
		check_eq(subjects(), ["slow disk"], "subjects in the mailbox")
		check_eq(os.listdir(mail_dir), [user.pw_name], "files in mail_dir (no dotlock left)")

	def late_locks():
		"""laim-mda run by hand as the parent runs it, its fcntl lock (the
		fourth fcntl: glibc checks descriptors 0 to 2 first in a program
		whose gids differ) held back 2.5 s past its 1 s deadline."""
		before = open(box, "rb").read()
		copy = b"From sender@client.example Thu Jan  1 00:00:00 2026\nSubject: late\n\nbody\n\n"
		p = subprocess.run(slow("fcntl:delay_enter=2500000:when=4") + [real, mail_dir, user.pw_name, "1"],
				   input=b"%019d\n" % len(copy) + copy, capture_output=True, cwd="/", timeout=20,
				   env={"PATH": "/usr/bin:/bin"}, preexec_fn=lambda: as_mda(user, mail_gid))
		check_eq((p.returncode, p.stderr.decode()),
			 (75, "%s: not appended: reading the copy and locking took more than 1 s\n" % box),
			 "laim-mda's exit status and line")
		check_eq(open(box, "rb").read(), before, "the mailbox")
		check_eq(os.listdir(mail_dir), [user.pw_name], "files in mail_dir (no dotlock left)")

	def laim_mda():
		"""The pid of the parent's child that runs laim-mda, or None."""
		for pid in children_of(d.pid):
			try:
				with open("/proc/%d/comm" % pid) as f:
					if f.read() == "laim-mda\n":
						return pid
			except OSError:
				pass
		return None

	def stopped():
		mda_mode(["hold", "2"])
		t0 = time.monotonic()
		mark = d.mark()
		qid = d.send(rcpts=[rcpt], msg=simple_message("stopped"))
		mda = wait_for(laim_mda, 5, "laim-mda for %s" % rcpt)
		mda_mode([])
		as_user(user, lambda: os.kill(mda, signal.SIGSTOP))
		to_root = d.send(rcpts=["root@" + HOSTNAME], msg=simple_message("after the stop"))
		# Held 2 s; killed, still stopped, after 10 s (twice a command's
		# limit).
		for q in (qid, to_root):
			d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % q, max(0.1, t0 + 4.5 - time.monotonic()),
				   since=mark)
		d.wait_log(r"%s: handler=mbox:mailbox, laim-mda as %s \(pid %d\) was stopped: continued$"
			   % (qid, user.pw_name, mda), 1, since=mark)
		# The first laim-mda delivered (continued, its poll goes on).
		check(not d.search_log(r"%s: .*status=deferred" % qid, mark), "deferred:\n%s" % d.log(mark))
		check_eq(subjects()[-1:], ["stopped"], "the last subject in the mailbox")

	def handler_dies():
		mda_mode(slow("fsync:delay_enter=3000000"))
		mark = d.mark()
		size = os.path.getsize(box)
		qid = d.send(rcpts=[rcpt], msg=simple_message("handler died"))
		wait_for(lambda: os.path.getsize(box) > size, 5, "laim-mda's write")
		mda_mode([])
		os.kill(d.child("handler"), signal.SIGKILL)
		d.wait_log(r"%s: handler=mbox:mailbox, laim-mda as %s \(pid \d+\) told to stop: the handler process let go$"
			   % (qid, user.pw_name), 2, since=mark)
		d.wait_removed(qid)
		check_eq(subjects().count("handler died"), 1, "copies of the message in the mailbox")

	run_rows([
		("an fsync past the delivery's limit: laim-mda not killed, the copy there once, no dotlock",
		 slow_fsync),
		("the locks taken past laim-mda's deadline: no append, no dotlock, 75", late_locks),
		("laim-mda stopped by its user: continued at once, root's mail not held up", stopped),
		("the handler process dies in laim-mda's append: cut back, delivered once by the retry", handler_dies),
	])


run(main)
