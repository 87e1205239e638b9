# laim-mda on a slow disk, the disk stood in for by strace delaying a
# system call of laim-mda (run through a LAIM_MDA wrapper, or by hand):
#   - the fsync of the append outlasts the delivery's limit: the parent
#     does not kill laim-mda (it would leave the copy and the dotlock, and
#     the retry would append the copy again); the queue counts the call
#     late, and delivered once it ends: the mailbox holds the copy once,
#     and no dotlock is left;
#   - the locks are taken only after laim-mda's own deadline (SECONDS):
#     it starts no append then, removes its dotlock and says why (75),
#     the mailbox as it was.
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
	wrapper = os.path.join(d.dir, "laim-mda-slow")
	with open(wrapper, "w") as f:
		# -p: else dash sets the effective gid (the mail directory's
		# group, which laim-mda creates its dotlock with) to the real one.
		f.write("#!/bin/sh -p\nexec %s %s \"$@\"\n" % (" ".join(slow("fsync:delay_enter=7500000")), real))
	os.chmod(wrapper, 0o755)
	os.environ["LAIM_MDA"] = wrapper
	with open(box, "wb"):
		pass
	os.chown(box, user.pw_uid, mail_gid)
	os.chmod(box, 0o600)
	d.start()

	def subjects():
		return [m["Subject"] for m in mailbox.mbox(box, create=False)]

	def slow_fsync():
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

	run_rows([
		("an fsync past the delivery's limit: laim-mda not killed, the copy there once, no dotlock",
		 slow_fsync),
		("the locks taken past laim-mda's deadline: no append, no dotlock, 75", late_locks),
	])


run(main)
