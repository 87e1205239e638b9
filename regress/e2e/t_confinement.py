# Process titles and the confinement of each child (/proc/PID/status):
# smtp runs as smtp_user without supplementary groups or any capability,
# with no_new_privs, a seccomp filter and chrooted into the empty
# directory; the handler runs as user, without capabilities, with
# no_new_privs and a seccomp filter. The parent stays root. The two
# users differ: a process with smtp's uid cannot signal the handler
# process (kill(pid, 0) gives EPERM), where one with the handler's uid can.
import sys
sys.dont_write_bytecode = True
import errno
import grp
import os
import pwd
from harness import *

EMPTY = "/run/laim/empty"


def proc_argv0(pid):
	with open("/proc/%d/cmdline" % pid, "rb") as f:
		return f.read().split(b"\0", 1)[0].decode(errors="replace")


def ids(st, key):
	return st[key].split()


def kill_probe(pid):
	"""kill(pid, 0) as the caller's uid: "ok", or the errno's name."""
	def probe():
		try:
			os.kill(pid, 0)
			return "ok"
		except OSError as e:
			return errno.errorcode[e.errno]
	return probe


def main():
	d = Laimd().start()
	uid, gid = d.uid, d.gid
	pst = proc_status(d.pid)
	check_eq(ids(pst, "Uid")[0], "0", "parent's real uid")
	smtp, handler = d.child("smtp"), d.child("handler")
	# "ready" is the parent's, once it forked them: each child loads its
	# seccomp filter last, before it serves anything, and may not have yet.
	wait_for(lambda: all(proc_status(p)["Seccomp"] != "0" for p in (smtp, handler)), 5,
		 "the children's seccomp filters")

	st = proc_status(smtp)
	check(d.smtp_uid != uid and d.smtp_gid != gid, "the test's smtp_user shares the handler's uid or gid")
	check_eq(ids(st, "Uid"), [str(d.smtp_uid)] * 4, "smtp Uid (real, effective, saved, fs)")
	check_eq(ids(st, "Gid"), [str(d.smtp_gid)] * 4, "smtp Gid")
	check_eq(st.get("Groups", ""), "", "smtp supplementary groups")
	for cap in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
		if cap in st or cap in ("CapEff", "CapPrm", "CapBnd"):
			check_eq(int(st[cap], 16), 0, "smtp %s" % cap)
	check_eq(st["NoNewPrivs"], "1", "smtp NoNewPrivs")
	check_eq(st["Seccomp"], "2", "smtp Seccomp")
	check_eq(os.readlink("/proc/%d/root" % smtp), EMPTY, "smtp root directory")
	check_eq(os.listdir(EMPTY), [], "contents of %s" % EMPTY)
	est = os.stat(EMPTY)
	check(est.st_uid == 0 and not (est.st_mode & 0o022), "%s must be root-owned and not writable by others" % EMPTY)
	check_eq(os.readlink("/proc/%d/cwd" % smtp), EMPTY, "smtp working directory")
	# No fd of the smtp process points to a file or directory other than
	# the sockets, pipes and stdio it got from the parent.
	for fd in os.listdir("/proc/%d/fd" % smtp):
		target = os.readlink("/proc/%d/fd/%s" % (smtp, fd))
		check(target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/null")) or fd in ("0", "1", "2"),
		      "smtp holds fd %s -> %s" % (fd, target))

	st = proc_status(handler)
	check_eq(ids(st, "Uid"), [str(uid)] * 4, "handler Uid")
	check_eq(ids(st, "Gid"), [str(gid)] * 4, "handler Gid")
	for cap in ("CapEff", "CapPrm"):
		check_eq(int(st[cap], 16), 0, "handler %s" % cap)
	check_eq(st["NoNewPrivs"], "1", "handler NoNewPrivs")
	check_eq(st["Seccomp"], "2", "handler Seccomp")

	# The uids themselves keep smtp from signalling the handler (its
	# seccomp filter refuses kill too; this checks the other wall).
	smtp_pw, handler_pw = pwd.getpwnam(TEST_SMTP_USER), pwd.getpwnam(TEST_USER)
	check_eq(as_user(smtp_pw, kill_probe(handler)), "EPERM", "kill(handler, 0) as %s" % TEST_SMTP_USER)
	check_eq(as_user(smtp_pw, kill_probe(d.pid)), "EPERM", "kill(parent, 0) as %s" % TEST_SMTP_USER)
	check_eq(as_user(handler_pw, kill_probe(smtp)), "EPERM", "kill(smtp, 0) as %s" % TEST_USER)
	check_eq(as_user(handler_pw, kill_probe(handler)), "ok", "kill(handler, 0) as %s" % TEST_USER)
	check_eq(as_user(smtp_pw, kill_probe(smtp)), "ok", "kill(smtp, 0) as %s" % TEST_SMTP_USER)

	# The confined children still do their work.
	qid = d.send()
	d.wait_removed(qid)
	# The spool belongs to the user. It is searchable by laim-drop's
	# group (the harness creates it when the case starts) and offline/ is
	# that group's sticky drop box, as Postfix's maildrop; the rest stays
	# 0700 (doc/architecture.md).
	drop_gid = grp.getgrnam(DROP_GROUP).gr_gid
	sst = os.stat(d.spool)
	check_eq((sst.st_uid, sst.st_gid, sst.st_mode & 0o7777), (uid, drop_gid, 0o710),
		 "spool owner, group and mode")
	ost = os.stat(os.path.join(d.spool, "offline"))
	check_eq((ost.st_uid, ost.st_gid, ost.st_mode & 0o7777), (uid, drop_gid, 0o1730),
		 "spool/offline owner, group and mode")
	for sub in ("incoming", "queue", "failed"):
		s = os.stat(os.path.join(d.spool, sub))
		check_eq((s.st_uid, s.st_mode & 0o777), (uid, 0o700), "spool/%s owner and mode" % sub)
	# smtp wrote that message into a file the handler made: it owns
	# nothing in the spool, nor the sockets it serves.
	for top, dirs, files in os.walk(d.spool):
		for name in dirs + files:
			p = os.path.join(top, name)
			check(os.lstat(p).st_uid != d.smtp_uid, "%s is owned by the smtp user" % p)
	for sock in (d.config["socket"], d.config["control_socket"]):
		check_eq(os.stat(sock).st_uid, 0, "owner of %s" % sock)

	# Titles: the string the process set, and the argument area as ps(1)
	# shows it (NULs as spaces): nothing else.
	for pid, want in ((d.pid, "laimd: parent"), (smtp, "laimd: smtp"), (handler, "laimd: handler")):
		check_eq(proc_argv0(pid), want, "title of pid %d" % pid)
		check(re.fullmatch(re.escape(want) + r"\s*", proc_title(pid)),
		      "title of pid %d as ps shows it: %r" % (pid, proc_title(pid)))
	check_eq(sorted(children_of(d.pid)), sorted([smtp, handler]), "children of the parent")


run(main)
