# Mailbox delivery against a subverted handler process. The case takes the
# handler's end of its command channel (pidfd_getfd, as root, standing in
# for code running as the laim user in the handler), stops the real
# handler, and asks the root parent for mailbox deliveries with raw
# IMSG_H_COMMAND_RUN frames, as the mbox handler does. What comes back is
# pipes, never a descriptor of a mailbox; behind them runs laim-mda as the
# recipient (its uid, its group as the real gid and the mail directory's
# group as the effective and saved one, no other group: the recipient
# can neither ptrace it nor open its memory to use that group), with
# no_new_privs and a seccomp filter, its arguments made by the parent.
# A copy cut short leaves the mailbox as it was; a whole
# one is appended as it is (all a handler can do to a mailbox); a handler
# that lets go gets laim-mda told to stop, not killed: it appends
# nothing. A name that is no user, a path, two users, or root while the
# aliases send root's mail elsewhere is refused, logged, and starts
# nothing; no forged log line comes of a name with a line break.
import sys
sys.dont_write_bytecode = True
import ctypes
import grp
import pwd
import socket
import stat
from harness import *

MAILBOX = "mbox:mailbox"
PTRACE_SEIZE = 0x4206


def framed(copy):
	"""laim-mda's stdin: the length line, then the copy."""
	return b"%019d\n" % len(copy) + copy


def trace_attempts(pid):
	"""What PTRACE_SEIZE of pid, and an open of its /proc/PID/mem, give
	the caller: "allowed" or the error. A seize does not stop pid, and the
	caller's exit ends it."""
	libc = ctypes.CDLL(None, use_errno=True)
	libc.ptrace.restype = ctypes.c_long
	seized = libc.ptrace(ctypes.c_long(PTRACE_SEIZE), ctypes.c_int(pid), None, None) == 0
	seize = "allowed" if seized else os.strerror(ctypes.get_errno())
	try:
		with open("/proc/%d/mem" % pid, "rb"):
			mem = "allowed"
	except OSError as e:
		mem = e.strerror
	return "PTRACE_SEIZE: %s; /proc/PID/mem: %s" % (seize, mem)


def main():
	user = local_user()
	mail_gid = grp.getgrnam("mail").gr_gid
	d, mail_dir = mbox_laimd()
	d.one_cpu = True  # its channels are stolen by age
	d.start()
	box = os.path.join(mail_dir, user.pw_name)

	def start(rcpts):
		"""Sends one mailbox request with the real handler stopped; returns
		(the handler's pid, the reply channel, the frames up to the output
		pipe or a refusal). The caller lets the handler go on."""
		pid = d.child("handler")
		chan = steal_command_channel(pid)
		os.kill(pid, signal.SIGSTOP)
		mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
		socket.send_fds(chan, [run_request(MAILBOX, rcpts)], [theirs.fileno()])
		theirs.close()
		chan.close()
		return pid, mine, frames(mine, until=(IMSG_P_COMMAND_OUTPUT, IMSG_P_COMMAND_FAIL))

	def the_mda():
		"""The one laim-mda the parent runs, once it has confined itself:
		a child just forked still has the parent's title, then runs the
		program before its filter."""
		def mdas():
			return [p for p, title in children_of(d.pid).items()
				if not title.startswith(("laimd: smtp", "laimd: handler"))]

		def confined(pid):
			try:
				with open("/proc/%d/cmdline" % pid, "rb") as f:
					argv0 = f.read().split(b"\0")[0]
			except FileNotFoundError:
				return False
			return argv0.endswith(b"laim-mda") and proc_status(pid).get("Seccomp") == "2"
		wait_for(lambda: mdas() and all(confined(p) for p in mdas()), 10, "laim-mda running under its filter")
		kids = mdas()
		check_eq(len(kids), 1, "processes of the parent besides smtp and handler")
		return kids[0]

	def deliver(copy, whole=True, who=user, egid=None, probe=None):
		"""One forged delivery of copy to who's mailbox (cut short unless
		whole); returns (the exit frame's status, the mda's line) after
		calling probe(pid of laim-mda) and checking what the handler got and
		who ran, with which effective gid (default: mail's) and no
		supplementary group."""
		pid, reply, got = start([who.pw_name])
		try:
			check_eq([k for k, _, _ in got], [IMSG_P_COMMAND_INPUT, IMSG_P_COMMAND_UNREAD, IMSG_P_COMMAND_OUTPUT],
				 "frames answered")
			fds = [fd for _, _, f in got for fd in f]
			check_eq(len(fds), 3, "descriptors passed")
			check(all(stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in fds),
			      "a descriptor that is no pipe: %r" % [os.readlink("/proc/self/fd/%d" % fd) for fd in fds])
			mda = the_mda()
			if probe:
				probe(mda)
			st = {k: v.split() for k, v in proc_status(mda).items()}
			check_eq((st["Uid"], st["Gid"]),
				 ([str(who.pw_uid)] * 4, [str(who.pw_gid)] + [str(mail_gid if egid is None else egid)] * 3),
				 "the mda's ids (real, effective, saved, filesystem)")
			check_eq(st["Groups"], [], "the mda's supplementary groups")
			check_eq((st["NoNewPrivs"], st["Seccomp"]), (["1"], ["2"]), "no_new_privs and seccomp (filter)")
			check_eq((st["CapEff"], st["CapPrm"]), (["0000000000000000"], ["0000000000000000"]),
				 "the mda's capabilities")
			with open("/proc/%d/cmdline" % mda, "rb") as f:
				argv = f.read().split(b"\0")[:-1]
			check_eq([a.decode() for a in argv[1:3]], [mail_dir, who.pw_name], "the mda's arguments")
			data = framed(copy)
			os.write(fds[0], data if whole else data[:len(data) // 2])
			os.close(fds[0])
			end = frames(reply, 15)
			check_eq([k for k, _, _ in end], [IMSG_P_COMMAND_EXIT], "the end")
			out = os.read(fds[2], 4096).decode()
			for fd in fds[1:]:
				os.close(fd)
			return struct.unpack("<I", end[0][1][:4])[0], out
		finally:
			reply.close()
			os.kill(pid, signal.SIGCONT)

	def cut_short():
		copy = b"From forged@client.example Thu Jan  1 00:00:00 2026\nSubject: forged\n\nbody\n\n"
		status, out = deliver(copy, whole=False)
		check_eq(status, 75 << 8, "exit status (EX_TEMPFAIL)")
		check(re.fullmatch(r"%s: the message ended early \(\d+ of %d bytes\)\n" % (re.escape(box), len(copy)), out),
		      "the mda's line: %r" % out)
		check(not os.path.exists(box), "a mailbox made of a copy cut short")
		status, out = deliver(copy)
		check_eq((status, out), (0, "%s: %d bytes appended, mailbox created\n" % (box, len(copy))), "the whole copy")
		check_eq(open(box, "rb").read(), copy, "the mailbox")
		st = os.stat(box)
		check_eq((st.st_uid, st.st_mode & 0o7777), (user.pw_uid, 0o600), "owner and mode of the mailbox")
		status, out = deliver(copy, whole=False)
		check_eq(status, 75 << 8, "exit status of the second copy cut short")
		check_eq(open(box, "rb").read(), copy, "the mailbox after a copy cut short")

	def untraceable():
		"""The recipient may not ptrace its laim-mda, or open its memory:
		else it could have it unlink, read or lock other users' mailboxes
		with the mail directory's group. The delivery goes on (and the
		mailbox it creates goes, for the next row)."""
		copy = b"From forged@client.example Thu Jan  1 00:00:00 2026\nSubject: traced\n\nbody\n\n"

		def attempts(mda):
			check_eq(as_user(user, lambda: trace_attempts(mda)),
				 "PTRACE_SEIZE: Operation not permitted; /proc/PID/mem: Permission denied",
				 "the recipient's attempts on its laim-mda")
		status, out = deliver(copy, probe=attempts)
		check_eq((status, out), (0, "%s: %d bytes appended, mailbox created\n" % (box, len(copy))), "the copy")
		check_eq(open(box, "rb").read(), copy, "the mailbox")
		os.unlink(box)

	def let_go():
		"""The handler lets go (closes the reply channel) with the whole
		copy written but its end not yet seen: laim-mda, which may be
		appending by then, is not killed but told to stop (nobody would
		mark the message delivered, and its retry would append it again):
		it appends nothing and exits 75, the mailbox as it was."""
		copy = b"From forged@client.example Thu Jan  1 00:00:00 2026\nSubject: let go\n\nbody\n\n"
		size = os.path.getsize(box)
		pid, reply, got = start([user.pw_name])
		os.kill(pid, signal.SIGCONT)
		fds = [fd for _, _, f in got for fd in f]
		check_eq(len(fds), 3, "descriptors passed")
		mda = the_mda()
		mark = d.mark()
		os.write(fds[0], framed(copy))
		reply.close()
		ended = r"handler=mbox:mailbox, laim-mda as %s \(pid %d\) " % (user.pw_name, mda)
		d.wait_log(ended + "told to stop: the handler process let go$", 5, since=mark)
		check(proc_alive(mda), "laim-mda killed when the handler let go")
		os.close(fds[0])
		wait_for(lambda: not proc_alive(mda), 10, "laim-mda to end")
		d.wait_log(ended + "exited with status 75$", 5, since=mark)
		check_eq(os.path.getsize(box), size, "the mailbox's size")
		for fd in fds[1:]:
			os.close(fd)

	def flood():
		"""Requests as fast as the channel takes them, each reply channel
		closed at once (so each laim-mda meets the end of its input): at
		most 64 run at once, the parent stays small, the mailbox is as it
		was, and mail still gets through."""
		size = os.path.getsize(box)
		parent_kb = rss_kb(d.pid)
		pid = d.child("handler")
		chan = steal_command_channel(pid)
		os.kill(pid, signal.SIGSTOP)
		most = 0
		try:
			for i in range(500):
				mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
				socket.send_fds(chan, [run_request(MAILBOX, [user.pw_name])], [theirs.fileno()])
				theirs.close()
				mine.close()
				if i % 25 == 0:
					most = max(most, len(children_of(d.pid)) - 2)
		finally:
			os.kill(pid, signal.SIGCONT)
			chan.close()
		print("# at most %d laim-mda seen at once" % most)
		check(most <= 64, "%d laim-mda at once" % most)
		wait_for(lambda: len(children_of(d.pid)) == 2, 20, "every laim-mda to end")
		grown = rss_kb(d.pid) - parent_kb
		check(grown < 4096, "the parent grew by %d kB" % grown)
		check_eq(os.path.getsize(box), size, "the mailbox's size")
		check_eq(d.child("handler"), pid, "the handler process")
		qid = d.send(rcpts=["%s@%s" % (user.pw_name, HOSTNAME)], msg=simple_message("after the flood"))
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid, 20)

	def root_without_capabilities():
		root = pwd.getpwnam("root")
		copy = b"From forged@client.example Thu Jan  1 00:00:00 2026\nSubject: to root\n\nbody\n\n"
		status, out = deliver(copy, who=root, egid=0)  # root's group is the directory's
		check_eq((status, out), (0, "%s/root: %d bytes appended, mailbox created\n" % (mail_dir, len(copy))),
			 "root's copy")

	def refused(rcpts, why):
		mark = d.mark()
		pid, reply, got = start(rcpts)
		reply.close()
		os.kill(pid, signal.SIGCONT)
		check_eq([k for k, _, _ in got], [IMSG_P_COMMAND_FAIL], "frames answered to %r" % rcpts)
		n = struct.unpack("<I", got[0][1][4:8])[0]
		check_eq(got[0][1][8:8 + n].decode(), why, "the refusal")
		d.wait_log(r"(0123456789: handler=%s, command refused: %s|command request with a malformed envelope "
			   r"refused)$" % (MAILBOX, re.escape(why)), since=mark)
		check(not d.search_log(r"^laimd\[1\]: FORGED", mark), "a forged log line:\n%s" % d.log(mark))
		check_eq(d.child("handler"), pid, "the handler process (a refusal does not end it)")

	def announced_only():
		"""A length line of 2 GiB, then nothing: laim-mda takes memory as
		the copy arrives, not as the length claims (else each of the 64 a
		subverted handler can have running as other users would touch 2
		GiB), and gives up at its deadline. It runs as the parent runs it:
		as the user, with MAIL_DIR USER SECONDS; its peak resident size
		comes from wait4."""
		argv = [installed("LAIM_PKGLIBEXECDIR", "laim-mda"), mail_dir, user.pw_name, "2"]
		p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/",
				     env={"PATH": "/usr/bin:/bin"}, user=user.pw_uid, group=user.pw_gid, extra_groups=[])
		t0 = time.monotonic()
		try:
			p.stdin.write(b"%d\n" % (1 << 31))
			p.stdin.flush()
			ended = None
			while ended is None and time.monotonic() - t0 < 20:
				pid, status, usage = os.wait4(p.pid, os.WNOHANG)
				ended = (status, usage) if pid else time.sleep(0.05)
			if ended is None:
				p.kill()
				raise Fail("laim-mda did not give up within 20 s of its 2 s deadline")
		finally:
			p.stdin.close()
		took = time.monotonic() - t0
		status, usage = ended
		p.returncode = os.waitstatus_to_exitcode(status)
		err = p.stderr.read().decode()
		p.stderr.close()
		print("# laim-mda told of 2 GiB, sent none: peak %d kB, gave up after %.1fs" % (usage.ru_maxrss, took))
		check_eq((p.returncode, err), (75, "%s: the message did not arrive in time (0 of 2147483648 bytes)\n" % box),
			 "laim-mda's exit status and line")
		# The peak counts the harness's fork before the exec too (some 12 MB).
		check(usage.ru_maxrss < 64 * 1024, "laim-mda's peak resident size: %d kB" % usage.ru_maxrss)
		check(took < 4, "laim-mda gave up after %.1fs (deadline 2s)" % took)

	def bad_names():
		before = sorted(os.listdir(mail_dir))
		refused(["no-such-user-here"], 'mailbox: no such user "no-such-user-here"')
		refused(["../../etc/passwd"], 'mailbox: no such user "../../etc/passwd"')
		refused([user.pw_name, "root"], "a mailbox request names one user")
		refused(["x\nlaimd[1]: FORGED line"], "command: malformed envelope values")
		with open(d.config["aliases"], "w") as f:
			f.write("root: %s\n" % user.pw_name)
		refused(["root"], "mailbox of root: %s sends this user's mail elsewhere (run newaliases)"
			% d.config["aliases"])
		check_eq(sorted(os.listdir(mail_dir)), before, "files in mail_dir")
		qid = d.send(rcpts=["%s@%s" % (user.pw_name, HOSTNAME)], msg=simple_message("still works"))
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid)

	run_rows([
		("the recipient can neither ptrace its laim-mda nor open its memory; the copy is appended", untraceable),
		("the handler gets pipes to laim-mda, which runs as the recipient, confined; a copy cut short "
		 "leaves the mailbox as it was", cut_short),
		("a handler that lets go does not get laim-mda killed half-way: told to stop, it appends nothing",
		 let_go),
		("a flood of requests: at most 64 laim-mda at once, the parent stays small", flood),
		("root's mailbox: laim-mda as root, without capabilities", root_without_capabilities),
		("a length of 2 GiB and no copy: laim-mda stays small and gives up at its deadline", announced_only),
		("a name that is no user, a path, two users, a line break, root aliased away: refused", bad_names),
	])


run(main)
