# Shared harness of laim's end-to-end regress cases.
#
# Each case is a small python3 program, regress/e2e/t_NAME.py, that starts
# a real laimd as root on a loopback port with a generated config, drives
# it with a raw-socket SMTP client (so the bytes on the wire are exactly the
# ones the case wrote), and checks replies, delivered files, log lines and
# /proc/PID/status of each child.  Run one with
#
#   LAIMD=/path/to/laimd LAIM_SRCDIR=/path/to/src python3 regress/e2e/t_x.py
#
# The cases of sendmail, laimctl and laim-drop also need the DESTDIR
# install that make check prepares (see "the installed tree" below).
#
# Exit status: 0 pass, 1 fail (the reason is printed), 77 not root.
# Only the Debian python3 standard library is used.

import array
import atexit
import glob
import fcntl
import grp
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

TEST_USER = "laimtest"            # the handler process's user (user:)
TEST_SMTP_USER = "laimtest-smtp"  # the smtp process's user (smtp_user:)
HOSTNAME = "test.laim.example"
IDENT = "laim-e2e"
# listen= for a laimd whose config has no listen: key, so it binds its
# defaults, 127.0.0.1:25 and [::1]:25: only in a private network
# namespace (peer_dns.enter_private_network()), where port 25 is free.
DEFAULT_LISTEN = "default"
QID_RE = r"[0-9A-F]{10}"

_daemons = []


class Fail(Exception):
	"""A check failed; the message says what was expected and seen."""


class Interrupted(Fail):
	"""The case ran out of time or was told to stop: it ends the whole
	case, even inside run_rows()."""


class Closed(Exception):
	"""The server closed the connection."""


def check(cond, what):
	if not cond:
		raise Fail(what)


def check_eq(seen, expected, what):
	if seen != expected:
		raise Fail("%s: expected %r, got %r" % (what, expected, seen))


def test_name():
	return os.path.splitext(os.path.basename(sys.argv[0]))[0]


def laimd_path():
	path = os.environ.get("LAIMD")
	if not path:
		raise Fail("LAIMD is not set (absolute path of the built laimd)")
	if not os.access(path, os.X_OK):
		raise Fail("LAIMD=%s is not an executable" % path)
	return path


# The users and groups cases create are removed again when the last case
# running on this machine ends (cases run in parallel, and share them):
# ACCOUNTS_DIR holds the pids of the cases running, what they created and
# the accounts the machine had when the first of them started, under an
# flock. A case killed before its end is pruned by the next one to start
# or end. An account that existed before (the package's) is never
# recorded, so never removed. The last case out checks that the machine
# has the accounts it had before the first one in, no more, no fewer.
ACCOUNTS_DIR = "/tmp/laim-e2e-accounts"
ACCOUNTS_STATE = ("pids", "created", "before")


def _accounts(update):
	"""update(pids, created, before) under the lock: each a list of lines,
	changed in place and written back."""
	os.makedirs(ACCOUNTS_DIR, exist_ok=True)
	with open(os.path.join(ACCOUNTS_DIR, "lock"), "w") as lock:
		fcntl.flock(lock, fcntl.LOCK_EX)
		state = {}
		for name in ACCOUNTS_STATE:
			try:
				with open(os.path.join(ACCOUNTS_DIR, name)) as f:
					state[name] = f.read().split()
			except FileNotFoundError:
				state[name] = []
		update(*(state[name] for name in ACCOUNTS_STATE))
		for name, lines in state.items():
			with open(os.path.join(ACCOUNTS_DIR, name), "w") as f:
				f.write("".join(line + "\n" for line in lines))


def _account_names():
	"""Every user and group of the machine, as "user:NAME", "group:NAME"."""
	return (["user:" + p.pw_name for p in pwd.getpwall()] +
		["group:" + g.gr_name for g in grp.getgrall()])


def _created_names(created):
	"""The accounts in created, with the group of each user created there
	(useradd --user-group made it, userdel removes it)."""
	return set(created) | {"group:" + e.split(":", 1)[1] for e in created if e.startswith("user:")}


def _accounts_enter():
	"""Adds this case to the running ones (the first one in notes the
	machine's accounts), and gives it DROP_GROUP and the DESTDIR
	laim-drop setgid to it: under the lock, so that no last case out
	removes the group meanwhile."""
	def enter(pids, created, before):
		pids[:] = [p for p in pids if _alive(p)]
		if not pids:
			before[:] = sorted(set(_account_names()) - _created_names(created))
		pids.append(str(os.getpid()))
		_setgid_drop(_group(DROP_GROUP, created))
	_accounts(enter)


def _alive(pid):
	try:
		os.kill(int(pid), 0)
		return True
	except ProcessLookupError:
		return False


def _accounts_leave():
	"""Removes this case from the running ones; the last one out removes
	every account the cases created. Returns what then differs from the
	accounts before the first case in ("" when nothing)."""
	differs = []

	def leave(pids, created, before):
		pids[:] = [p for p in pids if p != str(os.getpid()) and _alive(p)]
		if pids:
			return
		for entry in reversed(sorted(set(created), key=created.index)):
			kind, name = entry.split(":", 1)
			if kind == "user":
				subprocess.run(["userdel", "--remove", name], stdout=subprocess.DEVNULL,
					       stderr=subprocess.DEVNULL)
			else:
				subprocess.run(["groupdel", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
		created.clear()
		if before:
			now = set(_account_names())
			left, gone = sorted(now - set(before)), sorted(set(before) - now)
			if left:
				differs.append("left behind: %s" % ", ".join(left))
			if gone:
				differs.append("removed, though they existed before: %s" % ", ".join(gone))
		before.clear()
	_accounts(leave)
	if not differs:
		return ""
	return ("the machine's accounts after the last case differ from before the first (by the cases, "
		"or by something else meanwhile): " + "; ".join(differs))


def _account(kind, name, command, created):
	"""The entry of user or group (kind) name, created with command + [name]
	when missing and recorded in created; under the accounts lock, so that
	two cases never run useradd for one name together (both would pass
	its check that the name is new, and the second would replace the
	first's entry with another uid under the first's running laimd). A
	command that loses /etc/passwd's lock to another tool is retried."""
	lookup = pwd.getpwnam if kind == "user" else grp.getgrnam
	out = b""
	for _ in range(10):
		try:
			return lookup(name)
		except KeyError:
			pass
		r = subprocess.run(command + [name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
		out = r.stdout
		if r.returncode == 0:
			created.append("%s:%s" % (kind, name))
		else:
			time.sleep(0.3)
	raise Fail("cannot create %s %s: %s" % (kind, name, out.decode(errors="replace")))


def _group(name, created):
	return _account("group", name, ["groupadd", "--system"], created).gr_gid


def ensure_group(name):
	"""The gid of group name (a system group), created when missing."""
	gid = []
	_accounts(lambda pids, created, before: gid.append(_group(name, created)))
	return gid[0]


def _ensure_account(name, useradd_args):
	"""The passwd entry of name, created with useradd when missing (and
	recorded, to be removed)."""
	pw = []
	_accounts(lambda pids, created, before: pw.append(_account("user", name, ["useradd"] + useradd_args, created)))
	return pw[0]


def ensure_user(name=TEST_USER):
	"""A system user the daemon drops to: TEST_USER for the handler
	process, TEST_SMTP_USER for the smtp process (each with a group of its
	own, as the package's adduser --system --group makes them)."""
	return _ensure_account(name, ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"])


# The users laim's defaults and examples name (user:, smtp_user:), which
# the package makes: laimd -n refuses a config naming a missing user.
PACKAGE_USERS = ("laim", "laim-smtp")


def laimd_n(path, laimd=None, env=None):
	"""laimd -n -f path (through laimd, when given; with env added to the
	environment), once the package's users exist (made as the package
	would make them, and removed after the last case)."""
	for name in PACKAGE_USERS:
		ensure_user(name)
	return subprocess.run([laimd or laimd_path(), "-n", "-f", path], stdout=subprocess.PIPE,
			      stderr=subprocess.PIPE, timeout=20, env=dict(os.environ, **(env or {})))


def test_ids():
	pw = ensure_user()
	return pw.pw_uid, pw.pw_gid


def ensure_hosts_entry():
	"""laimd resolves this machine's FQDN once at start (its own names are
	local); with the host name in /etc/hosts that never asks a DNS server.
	Adds "127.0.1.1 HOST" when no line names it, as Debian's installer does."""
	host = socket.gethostname()
	with open("/etc/hosts") as f:
		for line in f:
			if host in line.split("#")[0].split()[1:]:
				return
	with open("/etc/hosts", "a") as f:
		f.write("127.0.1.1\t%s\n" % host)


def run(main):
	"""Runs a case: 77 when not root, 0 when main() returns, 1 on failure.
	Every laimd started through the harness is killed on the way out."""
	if os.geteuid() != 0:
		print("SKIP: end-to-end cases need root")
		sys.exit(77)
	status = 0
	spool_before = system_spool_state()
	try:
		_accounts_enter()
		_install_watchdog()
		main()
	except Fail as e:
		print("FAIL: %s" % e)
		status = 1
	except Exception:
		traceback.print_exc()
		print("FAIL: unexpected exception")
		status = 1
	finally:
		signal.alarm(0)
		for d in list(_daemons):
			if status:
				d.dump_log()
			d.cleanup(keep_dir=bool(status))
		accounts_differ = _accounts_leave()
	try:
		check_system_spool(spool_before)
		check(not accounts_differ, accounts_differ)
	except Fail as e:
		print("FAIL: %s" % e)
		status = 1
	if status == 0:
		print("PASS: %s" % test_name())
	sys.stdout.flush()
	sys.exit(status)


CASE_TIME_LIMIT = 50  # seconds; the whole case, then it fails


def _install_watchdog():
	"""A case that hangs fails after CASE_TIME_LIMIT seconds, and one that
	is told to stop (make interrupted) still kills its daemons: both go
	through the normal failure path."""
	def on_alarm(signum, frame):
		raise Interrupted("case took longer than %d s" % CASE_TIME_LIMIT)

	def on_term(signum, frame):
		raise Interrupted("interrupted by signal %d" % signum)
	signal.signal(signal.SIGALRM, on_alarm)
	signal.signal(signal.SIGTERM, on_term)
	signal.signal(signal.SIGHUP, on_term)
	signal.alarm(CASE_TIME_LIMIT)


@atexit.register
def _kill_all():
	for d in list(_daemons):
		d.kill_tree()


# ------------------------------------------------------------------ YAML

def _yaml_scalar(v):
	if isinstance(v, bool):
		return "true" if v else "false"
	if isinstance(v, int):
		return str(v)
	s = str(v)
	return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def yaml_dump(obj, indent=0):
	"""A small block-style emitter: mappings, sequences, scalars."""
	pad = "  " * indent
	out = []
	if isinstance(obj, dict):
		for k, v in obj.items():
			if isinstance(v, dict):
				out.append("%s%s:" % (pad, k))
				out.append(yaml_dump(v, indent + 1))
			elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
				out.append("%s%s:" % (pad, k))
				out.append(yaml_dump(v, indent + 1))
			elif isinstance(v, list):
				out.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(x) for x in v)))
			else:
				out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
	elif isinstance(obj, list):
		for item in obj:
			sub = yaml_dump(item, indent + 1).split("\n")
			first = sub[0][len(pad) + 2:]
			out.append("%s- %s" % (pad, first))
			out.extend(sub[1:])
	else:
		out.append(pad + _yaml_scalar(obj))
	return "\n".join(out)


# ------------------------------------------------------------------ strace

STRACE_LINE_RE = re.compile(r"^(\d+) +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$")


def strace_attach(pids, args, out="/dev/null", timeout=10):
	"""strace -f -qq -o out ARGS on the processes pids; returns the strace
	process once every thread of each is traced (an injection meant for one
	thread must not miss it). strace_detach() ends it."""
	check(shutil.which("strace"), "strace is not installed (bootstrap's PEERS lists it)")
	p = subprocess.Popen(["strace", "-f", "-qq", "-o", out] + args + [a for pid in pids for a in ("-p", str(pid))],
			     stdin=subprocess.DEVNULL)

	def attached():
		return all(proc_status_tid(pid, tid).get("TracerPid") == str(p.pid)
			   for pid in pids for tid in os.listdir("/proc/%d/task" % pid))
	wait_for(attached, timeout, "strace attached to %s" % " ".join(map(str, pids)))
	return p


def strace_detach(p):
	"""Lets the traced processes go on untraced."""
	p.send_signal(signal.SIGINT)
	p.wait(10)


def in_syscall(pid, number):
	"""True when a thread of pid is stopped in system call number (x86_64
	numbers; strace holds it there)."""
	for tid in os.listdir("/proc/%d/task" % pid):
		try:
			with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
				if f.read().split(" ")[0] == str(number):
					return True
		except OSError:
			pass
	return False


def strace_calls(trace):
	"""An strace -f trace as a list of calls: (tid, name, args and result, index of
	its entry line, index of its exit line), in the order strace saw them."""
	pending = {}
	calls = []
	with open(trace) as f:
		for n, line in enumerate(f):
			m = STRACE_LINE_RE.match(line.rstrip("\n"))
			if not m:
				continue
			tid = int(m.group(1))
			if m.group(2):
				name, start, head = pending.pop(tid, (m.group(2), n, ""))
				calls.append((tid, name, head + m.group(3), start, n))
			elif m.group(5).endswith("<unfinished ...>"):
				pending[tid] = (m.group(4), n, m.group(5)[:-len("<unfinished ...>")].rstrip())
			else:
				calls.append((tid, m.group(4), m.group(5), n, n))
	return calls


# ------------------------------------------------------------------ /proc

def proc_status(pid):
	"""/proc/PID/status as a dict of strings; {} when the process is gone."""
	st = {}
	try:
		with open("/proc/%d/status" % pid) as f:
			for line in f:
				k, _, v = line.partition(":")
				st[k] = v.strip()
	except (FileNotFoundError, ProcessLookupError):
		return {}
	return st


def cpu_seconds(pid):
	"""User and system CPU time of process pid so far, in seconds."""
	with open("/proc/%d/stat" % pid) as f:
		fields = f.read().rsplit(")", 1)[1].split()
	return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def confined_status(pid, timeout=5):
	"""proc_status(pid) once its seccomp filter is loaded: a restarted
	child has its title from the fork, before it confines itself. Fails
	after timeout seconds unconfined."""
	wait_for(lambda: proc_status(pid).get("Seccomp") == "2", timeout, "pid %d under its seccomp filter" % pid)
	return proc_status(pid)


def proc_status_tid(pid, tid):
	"""/proc/PID/task/TID/status as a dict of strings; {} when it is gone."""
	st = {}
	try:
		with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
			for line in f:
				k, _, v = line.partition(":")
				st[k] = v.strip()
	except OSError:
		pass
	return st


def proc_title(pid):
	try:
		with open("/proc/%d/cmdline" % pid, "rb") as f:
			raw = f.read()
	except (FileNotFoundError, ProcessLookupError):
		return None
	return raw.replace(b"\0", b" ").strip().decode(errors="replace")


def proc_alive(pid):
	st = proc_status(pid)
	return bool(st) and not st.get("State", "").startswith("Z")


def rss_kb(pid):
	st = proc_status(pid)
	check("VmRSS" in st, "no VmRSS for pid %d" % pid)
	return int(st["VmRSS"].split()[0])


def _all_pids():
	for name in os.listdir("/proc"):
		if name.isdigit():
			yield int(name)


def children_of(ppid):
	"""Living children of ppid as {pid: title}."""
	kids = {}
	for pid in _all_pids():
		st = proc_status(pid)
		if st.get("PPid") == str(ppid) and not st.get("State", "").startswith("Z"):
			kids[pid] = proc_title(pid) or ""
	return kids


def _pgid_members(pgid):
	"""Living (not zombie) processes of a process group."""
	pids = []
	for pid in _all_pids():
		try:
			with open("/proc/%d/stat" % pid) as f:
				stat = f.read()
		except (FileNotFoundError, ProcessLookupError):
			continue
		fields = stat[stat.rfind(")") + 2:].split()
		if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
			pids.append(pid)
	return pids


def _on_one_cpu():
	os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def steal_seqpacket(pid, pick):
	"""A copy of one of pid's SOCK_SEQPACKET sockets (its imsg channels),
	taken with pidfd_getfd as root: pick(list of (inode, fd)) chooses, by
	inode order, which is the order the parent made the pairs in. Stands
	in for code subverted in that process."""
	seq = set()
	with open("/proc/net/unix") as f:
		next(f)
		for line in f:
			cols = line.split()
			if cols[4] == "0005":  # SOCK_SEQPACKET
				seq.add(int(cols[6]))
	# Socket inode numbers come from per-CPU batches (get_next_ino): they
	# follow the order the parent made the pairs in only if it ran on one CPU.
	check(len(os.sched_getaffinity(pid)) == 1,
	      "process %d may run on several CPUs: its channels' inode order says nothing (Laimd.one_cpu)" % pid)
	found = []
	for fd in os.listdir("/proc/%d/fd" % pid):
		try:
			target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
		except FileNotFoundError:
			continue  # closed meanwhile: a session's socket
		m = re.match(r"socket:\[(\d+)\]", target)
		if m and int(m.group(1)) in seq:
			found.append((int(m.group(1)), int(fd)))
	check(found, "process %d has no seqpacket socket" % pid)
	return steal_fd(pid, pick(found)[1])


def steal_fd(pid, fd):
	"""A copy of pid's socket fd, taken with pidfd_getfd as root."""
	import ctypes
	libc = ctypes.CDLL(None, use_errno=True)
	pidfd = os.pidfd_open(pid)
	try:
		copy = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
	finally:
		os.close(pidfd)
	check(copy >= 0, "pidfd_getfd: errno %d" % ctypes.get_errno())
	return socket.socket(fileno=copy)


# The command service's frames (common/proto.h), for the cases that
# speak it as a subverted handler process would.
IMSG_H_COMMAND_RUN = 500
IMSG_P_COMMAND_INPUT, IMSG_P_COMMAND_UNREAD, IMSG_P_COMMAND_OUTPUT, IMSG_P_COMMAND_EXIT, IMSG_P_COMMAND_FAIL = \
	range(501, 506)


def steal_command_channel(pid):
	"""A copy of the handler's command channel: its newest seqpacket
	socket (the parent makes the command pair last when it forks the
	handler), taken while the handler runs no command."""
	return steal_seqpacket(pid, max)


def imsg_str(v):
	v = v.encode() if isinstance(v, str) else v
	return struct.pack("<I", len(v)) + v


def run_request(instance, rcpts, qid="0123456789", sender="", cut=0):
	"""An IMSG_H_COMMAND_RUN frame; with cut, its payload loses that many
	bytes at the end (the frame stays whole)."""
	payload = (imsg_str(instance) + imsg_str(qid) + imsg_str(sender) + struct.pack("<I", len(rcpts)) +
		   b"".join(imsg_str(r) for r in rcpts))
	payload = payload[:len(payload) - cut]
	return struct.pack("<IIII", IMSG_H_COMMAND_RUN, 16 + len(payload), 0, 0) + payload


def frames(sock, timeout=10, until=(IMSG_P_COMMAND_EXIT, IMSG_P_COMMAND_FAIL)):
	"""The frames on a reply channel until the parent closes it or sends a
	type in until: [(type, payload, fds)]."""
	sock.settimeout(timeout)
	out = []
	while True:
		try:
			data, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
		except socket.timeout:
			return out + [("no answer within %ds" % timeout, b"", [])]
		if not data:
			return out
		fds = array.array("i")
		for _, _, cdata in anc:
			fds.frombytes(cdata[:len(cdata) - len(cdata) % 4])
		kind = struct.unpack("<I", data[:4])[0]
		out.append((kind, data[16:], list(fds)))
		if kind in until:
			return out


def port_listening(port):
	"""True when 127.0.0.1:port is in LISTEN state (no connection made)."""
	want = "0100007F:%04X" % port
	try:
		with open("/proc/net/tcp") as f:
			for line in f.readlines()[1:]:
				fields = line.split()
				if fields[1] == want and fields[3] == "0A":
					return True
	except FileNotFoundError:
		pass
	return False


def wait_for(pred, timeout, what, interval=0.05):
	"""Polls pred() until it returns a true value, which is returned."""
	end = time.monotonic() + timeout
	while True:
		v = pred()
		if v:
			return v
		if time.monotonic() > end:
			raise Fail("timed out after %gs waiting for %s" % (timeout, what))
		time.sleep(interval)


# ------------------------------------------------------------------ Maildir

def maildir_files(path):
	"""Paths of the messages in a Maildir (new/ and cur/), sorted."""
	files = []
	for sub in ("new", "cur"):
		files.extend(glob.glob(os.path.join(path, sub, "*")))
	return sorted(f for f in files if os.path.isfile(f))


def maildir_messages(path):
	out = []
	for f in maildir_files(path):
		with open(f, "rb") as fh:
			out.append(fh.read())
	return out


def wait_maildir(path, count, timeout=15):
	"""Waits until the Maildir holds at least count messages; returns them."""
	wait_for(lambda: len(maildir_files(path)) >= count, timeout,
		 "%d message(s) in %s" % (count, path))
	return maildir_messages(path)


def split_delivered(data):
	"""Splits a delivered file into (return_path, delivered_to, received,
	rest): the two lines Postfix's local(8) writes ("Return-Path: <s>",
	"Delivered-To: r"), the Received: header (with its folded continuation
	lines) and the message bytes after it."""
	m = re.match(rb"Return-Path: <([^\r\n]*)>\r\nDelivered-To: ([^\r\n]*)\r\n", data)
	check(m, "delivered file does not start with Return-Path/Delivered-To: %r" % data[:200])
	rest = data[m.end():]
	check(rest.startswith(b"Received:"), "no Received: header after Delivered-To: %r" % rest[:200])
	end = 0
	while True:
		nl = rest.find(b"\r\n", end)
		check(nl >= 0, "unterminated Received: header: %r" % rest[:300])
		end = nl + 2
		if rest[end:end + 1] not in (b" ", b"\t"):
			break
	return m.group(1), m.group(2), rest[:end], rest[end:]


# ------------------------------------------------------------------ SMTP client

class Reply:
	def __init__(self, lines):
		self.lines = lines  # decoded lines, CRLF removed
		self.code = int(lines[-1][:3])
		check(all(l[:3] == lines[-1][:3] for l in lines), "reply lines with different codes: %r" % lines)
		self.text = "\n".join(lines)

	def __repr__(self):
		return "<%s>" % self.text.replace("\n", " | ")


class Smtp:
	"""A raw-socket SMTP client: the case decides every byte sent."""

	def __init__(self, port=None, greet=True, timeout=10, host="127.0.0.1", unix=None, source=None):
		if unix:
			self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
			self.sock.settimeout(timeout)
			self.sock.connect(unix)
		else:
			self.sock = socket.create_connection((host, port), timeout=timeout,
							     source_address=(source, 0) if source else None)
		self.buf = b""
		self.greeting = self.expect(220, timeout=timeout) if greet else None

	def send(self, data):
		if isinstance(data, str):
			data = data.encode()
		self.sock.sendall(data)

	def _fill(self, timeout):
		self.sock.settimeout(timeout)
		try:
			chunk = self.sock.recv(65536)
		except ConnectionResetError:
			chunk = b""
		if not chunk:
			raise Closed("connection closed by the server")
		self.buf += chunk

	def read_line(self, timeout=10):
		end = time.monotonic() + timeout
		while b"\n" not in self.buf:
			left = end - time.monotonic()
			if left <= 0:
				raise Fail("no reply line within %gs (buffer %r)" % (timeout, self.buf[:200]))
			try:
				self._fill(left)
			except socket.timeout:
				raise Fail("no reply line within %gs (buffer %r)" % (timeout, self.buf[:200]))
		line, _, self.buf = self.buf.partition(b"\n")
		check(line.endswith(b"\r"), "reply line not ended by CRLF: %r" % line)
		return line[:-1].decode(errors="replace")

	def reply(self, timeout=10):
		"""Reads one (possibly multi-line) reply."""
		lines = []
		while True:
			line = self.read_line(timeout)
			check(re.match(r"^[2-5][0-9][0-9][ -]", line) or re.match(r"^[2-5][0-9][0-9]$", line),
			      "malformed reply line %r" % line)
			lines.append(line)
			if len(line) == 3 or line[3] == " ":
				return Reply(lines)

	def expect(self, code, timeout=10, what=None):
		r = self.reply(timeout)
		if r.code != code:
			raise Fail("%sexpected %d, got %r" % (what + ": " if what else "", code, r))
		return r

	def cmd(self, line, expect=None, timeout=10):
		"""Sends one command line (CRLF added) and reads its reply."""
		if isinstance(line, str):
			line = line.encode()
		self.send(line + b"\r\n")
		if expect is None:
			return self.reply(timeout)
		return self.expect(expect, timeout, what=line[:80].decode(errors="replace"))

	def ehlo(self, name="client.example"):
		return self.cmd("EHLO " + name, 250)

	def wait_closed(self, timeout=10):
		"""True when the server closes within timeout; data read meanwhile
		is kept in self.buf."""
		end = time.monotonic() + timeout
		while True:
			left = end - time.monotonic()
			if left <= 0:
				return False
			try:
				self._fill(left)
			except Closed:
				return True
			except socket.timeout:
				return False
			except OSError:
				return True

	def close(self):
		try:
			self.sock.close()
		except OSError:
			pass

	def __enter__(self):
		return self

	def __exit__(self, *a):
		self.close()


def dot_stuff(msg):
	"""RFC 5321 4.5.2: a leading '.' on a line is doubled."""
	out = re.sub(rb"(^|\r\n)\.", rb"\1..", msg)
	return out


def data_terminated(msg):
	"""The message as sent after 354: stuffed, CRLF-terminated, then '.'."""
	body = dot_stuff(msg)
	if not body.endswith(b"\r\n"):
		body += b"\r\n"
	return body + b".\r\n"


def queue_id(reply):
	m = re.search(r"^250 2\.0\.0 Ok: queued as (" + QID_RE + r")$", reply.lines[-1])
	check(m, "250 reply to DATA is not 'Ok: queued as ID': %r" % reply)
	return m.group(1)


def send_mail(port, sender, rcpts, msg, ehlo=True):
	"""One whole transaction; returns the queue id."""
	with Smtp(port) as c:
		if ehlo:
			c.ehlo()
		else:
			c.cmd("HELO client.example", 250)
		qid = c_transaction(c, sender, rcpts, msg)
		c.cmd("QUIT", 221)
		return qid


def c_transaction(c, sender, rcpts, msg):
	"""MAIL, RCPT..., DATA on an open session, each expected to succeed;
	returns the queue id of the 250."""
	c.cmd("MAIL FROM:<%s>" % sender, 250)
	for r in rcpts:
		c.cmd("RCPT TO:<%s>" % r, 250)
	c.cmd("DATA", 354)
	c.send(data_terminated(msg))
	return queue_id(c.expect(250, what="end of data"))


def simple_message(tag="hello"):
	return ("From: sender@client.example\r\nTo: rcpt@test.laim.example\r\n"
		"Subject: %s\r\n\r\nbody of %s\r\n" % (tag, tag)).encode()


def handler_started(d):
	"""The handler process, once its start is over: the new journal's
	syncs, which may come after the parent's "ready", must not be counted
	or failed by a trace attached for what follows."""
	d.wait_log(r"laimd\[\d+\]: \d+ aliases loaded from ")
	return d.child("handler")


def traced(d, args):
	"""strace -y with args on the handler process, attached; returns it
	and its trace file."""
	trace = os.path.join(d.dir, "strace-%d.out" % len(os.listdir(d.dir)))
	return strace_attach([handler_started(d)], ["-y", "-s", "100"] + args, trace), trace


def synced_alone(trace, qid):
	"""Whether the trace shows qid's queue file fdatasynced, then fsynced
	(its committed mode), before its from= line was logged."""
	calls = strace_calls(trace)
	def at(name, pattern):
		return [start for _, n, text, start, _ in calls if n == name and re.search(pattern, text)]
	datasynced = at("fdatasync", r"^\d+<\S+/queue/%s>\)" % qid)
	synced = at("fsync", r"^\d+<\S+/queue/%s>\)" % qid)
	logged = at("write", r"%s: from=<" % qid)
	return bool(datasynced and synced and logged and datasynced[0] < synced[0] < logged[0])


def varied_message(tag, size=30000):
	"""A message that arrives intact only if every byte does: a Subject of
	tag, then lines of pseudo-random printable text seeded by tag (some
	starting with a dot, some with trailing white space, one near the 998
	limit), about size bytes, CRLF line ends."""
	rnd = random.Random(tag)
	chars = "".join(chr(c) for c in range(33, 127))
	lines = [b"From: sender@client.example", b"To: rcpt@test.laim.example",
		 ("Subject: %s" % tag).encode(), b"", b"." + b"x" * 990]
	total = 0
	while total < size:
		line = "".join(rnd.choice(chars) for _ in range(rnd.randrange(0, 120)))
		line = rnd.choice(["", ".", "..", " ", "\t"]) + line + rnd.choice(["", " ", "\t "])
		lines.append(line.encode())
		total += len(line) + 2
	return b"\r\n".join(lines) + b"\r\n"


def journal_of_another_boot(spool):
	"""What a stop of the system leaves for the next start to find: the
	journal's header names another boot, so its records decide
	(Spool::recover)."""
	with open(os.path.join(spool, "journal"), "r+b") as f:
		f.seek(16)  # the boot id, 48 bytes
		f.write(b"another boot".ljust(48, b"\0"))


def journal_records(spool, kind):
	"""The queue ids of the journal's records of kind (b"C", b"D"), stale
	ones included (a byte search: enough for ids seen only once)."""
	with open(os.path.join(spool, "journal"), "rb") as f:
		data = f.read()
	return set(m.decode() for m in re.findall(rb"(?<=" + kind + rb")[0-9A-F]{10}(?=\0)", data))


def journal_counted(spool):
	"""The journal's records as the next start counts them
	(Journal::read_records): (kind, queue id) of each record of the
	header's generation whose sum holds, up to the first that is not."""
	with open(os.path.join(spool, "journal"), "rb") as f:
		data = f.read()
	generation, end, counted = struct.unpack_from("<Q", data, 8)[0], 64, []
	while end + 32 <= len(data):
		magic, length, gen = struct.unpack_from("<IIQ", data, end)
		if magic != 0x4c4a5243 or gen != generation or length > len(data) - end - 32:
			break
		rec = bytearray(data[end:end + 32 + length])
		rec[28:32] = bytes(4)
		if struct.unpack_from("<I", data, end + 28)[0] != zlib.crc32(rec):
			break
		counted.append((chr(rec[16]), rec[17:27].decode()))
		end += len(rec)
	return counted


def delivered_by_id(maildir):
	"""The Maildir's copies by the queue id in their Received: line, each
	as {Delivered-To: (Return-Path, Received: unfolded, the message after
	Received:)}; fails on two copies of one id for one recipient. The
	Maildir is read once."""
	out = {}
	for data in maildir_messages(maildir):
		rp, dt, rec, rest = split_delivered(data)
		m = re.search(rb"\bid (%s)\b" % QID_RE.encode(), rec)
		if not m:
			continue
		qid, key = m.group(1).decode(), dt.decode(errors="replace")
		copies = out.setdefault(qid, {})
		check(key not in copies, "two copies of %s for %s in the Maildir" % (qid, key))
		flat = re.sub(rb"\r\n[ \t]+", b" ", rec).decode(errors="replace").rstrip("\r\n")
		copies[key] = (rp.decode(errors="replace"), flat, rest)
	return out


def check_delivered_exactly(d, sent, maildir=None, rcpt="rcpt@test.laim.example"):
	"""sent maps queue ids to the messages their clients sent: the Maildir
	holds exactly one copy of each, for rcpt, and nothing else, and each
	copy after laimd's Received: is byte for byte what was sent."""
	maildir = maildir or d.maildir
	check_eq(len(maildir_files(maildir)), len(sent), "messages in %s" % maildir)
	by_id = delivered_by_id(maildir)
	for qid, msg in sent.items():
		copies = by_id.get(qid, {})
		check_eq(sorted(copies), [rcpt], "recipients of the copies of %s" % qid)
		got = copies[rcpt][2]
		if got != msg:
			n = next((i for i in range(min(len(got), len(msg))) if got[i] != msg[i]), min(len(got), len(msg)))
			raise Fail("%s: delivered %d bytes, sent %d; first difference at byte %d: sent %r, got %r" %
				   (qid, len(got), len(msg), n, msg[n:n + 40], got[n:n + 40]))


# ------------------------------------------------------------------ the daemon

def _port_for(name, attempt):
	h = zlib.crc32(name.encode())
	return 20000 + (h + attempt * 7919) % 10000


def _port_free(port):
	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
	try:
		s.bind(("127.0.0.1", port))
		return True
	except OSError:
		return False
	finally:
		s.close()


class Laimd:
	"""A laimd under test, in its own temp dir with its own port.

	dir/laimd.yml   the config (root, 0600)
	dir/spool       the spool (the daemon creates it)
	dir/Maildir     the default handler's Maildir (owned by the test user)
	dir/laimd.log   stderr of every run, appended
	"""

	def __init__(self, name=None, **config):
		self.name = name or test_name()
		self.uid, self.gid = test_ids()
		smtp_pw = ensure_user(TEST_SMTP_USER)
		self.smtp_uid, self.smtp_gid = smtp_pw.pw_uid, smtp_pw.pw_gid
		ensure_hosts_entry()
		self.laimd = laimd_path()
		self.proc = None
		self.dir = tempfile.mkdtemp(prefix="laim-e2e-%s-" % self.name)
		_daemons.append(self)  # from now on cleanup() removes the dir
		os.chmod(self.dir, 0o755)
		self.confpath = os.path.join(self.dir, "laimd.yml")
		self.logpath = os.path.join(self.dir, "laimd.log")
		self.spool = os.path.join(self.dir, "spool")
		self.maildir = os.path.join(self.dir, "Maildir")
		self.make_user_dir(self.maildir)
		aliases = os.path.join(self.dir, "aliases")
		open(aliases, "w").close()
		os.chmod(aliases, 0o644)
		# What sendmail qualifies domainless addresses with (LAIM_MAILNAME),
		# so that it never looks up the host's FQDN.
		self.mailname = os.path.join(self.dir, "mailname")
		with open(self.mailname, "w") as f:
			f.write(HOSTNAME + "\n")
		os.chmod(self.mailname, 0o644)
		self.attempt = 0
		self.one_cpu = False  # for steal_seqpacket(): laimd and its children on one CPU
		self.port = _port_for(self.name, 0)
		self.start_mark = 0
		self.known_children = set()
		self.config = {
			"listen": None,  # ["127.0.0.1:{port}"], {port} filled in at start; DEFAULT_LISTEN: no listen:
			"socket": os.path.join(self.dir, "submit.sock"),
			"control_socket": os.path.join(self.dir, "control.sock"),
			"user": TEST_USER,
			"smtp_user": TEST_SMTP_USER,
			"hostname": HOSTNAME,
			"ident": IDENT,
			"spool": self.spool,
			"aliases": aliases,
			"retry_initial": 1,
			"retry_max": 2,
			"handlers": {"inbox": {"type": "maildir", "path": self.maildir}},
			"routes": [{"match": "*", "handlers": ["inbox"]}],
		}
		self.config.update(config)
		open(self.logpath, "ab").close()

	# -- files and dirs

	def make_user_dir(self, path, mode=0o700):
		"""A directory the handler (test user) may write."""
		os.makedirs(path, exist_ok=True)
		os.chown(path, self.uid, self.gid)
		os.chmod(path, mode)
		return path

	def make_blocked_dir(self, path):
		"""A directory owned by root, mode 0700: the test user cannot write
		into it, so a maildir handler there always defers."""
		os.makedirs(path, exist_ok=True)
		os.chown(path, 0, 0)
		os.chmod(path, 0o700)
		return path

	def block_inbox(self):
		"""Routes everything to a maildir handler "inbox" in a blocked
		directory (make_blocked_dir): messages stay queued, deferred,
		until unblock_dir(); returns the directory."""
		blocked = self.make_blocked_dir(os.path.join(self.dir, "blocked"))
		self.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
		return blocked

	def unblock_dir(self, path):
		os.chown(path, self.uid, self.gid)

	def spool_files(self, sub):
		try:
			return sorted(os.listdir(os.path.join(self.spool, sub)))
		except FileNotFoundError:
			return []

	def pending_files(self):
		"""Files of queue/ still mode 0700: being received or in their
		commit, never answered 250."""
		return [f for f in self.spool_files("queue") if self._queue_mode(f) == 0o700]

	def committed_files(self):
		"""Files of queue/ whose commit returned (mode 0600)."""
		return [f for f in self.spool_files("queue") if self._queue_mode(f) == 0o600]

	def _queue_mode(self, name):
		try:
			return stat.S_IMODE(os.lstat(os.path.join(self.spool, "queue", name)).st_mode)
		except FileNotFoundError:
			return None

	def write_config(self, text=None):
		if text is None:
			cfg = dict(self.config)
			if cfg.get("listen") is None:
				cfg["listen"] = ["127.0.0.1:{port}"]
			if cfg["listen"] == DEFAULT_LISTEN:
				del cfg["listen"]
			else:
				cfg["listen"] = [dict(a, addr=a["addr"].format(port=self.port)) if isinstance(a, dict)
						 else a.format(port=self.port) for a in cfg["listen"]]
			text = yaml_dump(cfg) + "\n"
		with open(self.confpath, "w") as f:
			f.write(text)
		os.chown(self.confpath, 0, 0)
		os.chmod(self.confpath, 0o600)

	# -- log

	def log(self, since=None):
		with open(self.logpath, "rb") as f:
			f.seek(self.start_mark if since is None else since)
			return f.read().decode(errors="replace")

	def mark(self):
		return os.path.getsize(self.logpath)

	def search_log(self, pattern, since=None):
		return re.search(pattern, self.log(since), re.M)

	def findall_log(self, pattern, since=None):
		return list(re.finditer(pattern, self.log(since), re.M))

	def wait_log(self, pattern, timeout=10, since=None):
		"""Waits until a log line matches pattern (a regex); returns the match."""
		return wait_for(lambda: self.search_log(pattern, since), timeout,
				"log line /%s/" % pattern)

	def dump_log(self, lines=80):
		try:
			text = self.log(0).splitlines()
		except OSError:
			return
		print("---- %s (last %d lines)" % (self.logpath, lines))
		for l in text[-lines:]:
			print("   " + l)
		print("----")

	# -- process control

	def wrap(self, setup="", runner=""):
		"""Makes start() run laimd through a shell script: the setup
		lines, then exec runner laimd; the pid stays laimd's (a runner
		such as strace -D must keep it so)."""
		path = os.path.join(self.dir, "laimd-wrapped")
		with open(path, "w") as f:
			f.write('#!/bin/sh\n%s\nexec %s %s "$@"\n' % (setup, runner, self.laimd))
		os.chmod(path, 0o755)
		self.laimd = path

	def start(self, timeout=15):
		"""Starts laimd -d -v and waits for "ready" and the listening port.
		When the port is taken, another one is tried."""
		check(self.proc is None or self.proc.poll() is not None, "laimd already running")
		for _ in range(8):
			if not _port_free(self.port):
				self._next_port()
				continue
			self.write_config()
			self.start_mark = self.mark()
			logf = open(self.logpath, "ab")
			self.proc = subprocess.Popen([self.laimd, "-d", "-v", "-f", self.confpath],
						     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
						     start_new_session=True, close_fds=True,
						     preexec_fn=_on_one_cpu if self.one_cpu else None)
			logf.close()
			end = time.monotonic() + timeout
			while time.monotonic() < end:
				if self.search_log(r"laimd\[\d+\]: ready$"):
					break
				if self.proc.poll() is not None:
					break
				time.sleep(0.02)
			if self.proc.poll() is not None:
				text = self.log()
				if re.search(r"(?i)address already in use|EADDRINUSE", text):
					self._next_port()
					continue
				raise Fail("laimd exited with status %d before ready:\n%s" % (self.proc.returncode, text))
			check(self.search_log(r"laimd\[\d+\]: ready$"), "laimd not ready within %ds" % timeout)
			wait_for(lambda: port_listening(self.port), 5, "127.0.0.1:%d listening" % self.port)
			self.wait_children()
			return self
		raise Fail("no free port found for %s" % self.name)

	def _next_port(self):
		self.attempt += 1
		self.port = _port_for(self.name, self.attempt)

	@property
	def pid(self):
		return self.proc.pid

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def children(self):
		"""{'smtp': pid, 'handler': pid, ...} from the titles of the living
		children of the parent."""
		out = {}
		for pid, title in children_of(self.proc.pid).items():
			self.known_children.add(pid)
			m = re.match(r"laimd: (\w+)", title)
			if m:
				out[m.group(1)] = pid
		return out

	def wait_children(self, timeout=10, old=None):
		"""Waits until both children run (with pids other than those in old,
		when given); returns children()."""
		old = old or {}

		def ok():
			k = self.children()
			if all(n in k and k[n] != old.get(n) for n in ("smtp", "handler")):
				return k
			return None
		return wait_for(ok, timeout, "laimd children smtp and handler")

	def child(self, name):
		k = self.children()
		check(name in k, "no %s child (children: %r)" % (name, children_of(self.proc.pid)))
		return k[name]

	def send_signal(self, sig):
		os.kill(self.proc.pid, sig)

	def stop(self, sig=signal.SIGTERM, timeout=20):
		"""Signals the parent and waits for it; returns its exit status."""
		self.send_signal(sig)
		try:
			return self.proc.wait(timeout)
		except subprocess.TimeoutExpired:
			self.kill_tree()
			raise Fail("laimd did not exit within %ds of signal %d" % (timeout, sig))
		finally:
			wait_for(lambda: not self._leftovers(), 10, "laimd children to exit")

	def _leftovers(self):
		pids = set(_pgid_members(self.proc.pid))
		pids |= {p for p in self.known_children if proc_alive(p) and
			 (proc_title(p) or "").startswith("laimd")}
		return pids

	def kill_tree(self):
		"""SIGKILL to the parent and every child (the process group plus
		children seen earlier that still carry a laimd title)."""
		if self.proc is None:
			return
		try:
			os.killpg(self.proc.pid, signal.SIGKILL)
		except ProcessLookupError:
			pass
		for p in self._leftovers():
			try:
				os.kill(p, signal.SIGKILL)
			except ProcessLookupError:
				pass
		try:
			self.proc.wait(10)
		except subprocess.TimeoutExpired:
			pass
		end = time.monotonic() + 5
		while self._leftovers() and time.monotonic() < end:
			time.sleep(0.05)

	def cleanup(self, keep_dir=False):
		self.kill_tree()
		if self in _daemons:
			_daemons.remove(self)
		if keep_dir:
			print("test dir kept: %s" % self.dir)
		else:
			shutil.rmtree(self.dir, ignore_errors=True)

	# -- conveniences

	def smtp(self, **kw):
		return Smtp(self.port, **kw)

	def send(self, sender="sender@client.example", rcpts=("rcpt@test.laim.example",), msg=None):
		return send_mail(self.port, sender, list(rcpts), msg if msg is not None else simple_message())

	def wait_delivered(self, qid, rcpt=None, timeout=15):
		who = re.escape(rcpt) if rcpt else ".*?"
		# A network handler's line ends with the peer's answer in parentheses.
		return self.wait_log(r"%s: to=<%s>, handler=\w+, status=delivered, delay=[0-9.]+( \(.*\))?$" % (qid, who),
				     timeout, since=0)

	def wait_removed(self, qid, timeout=15):
		return self.wait_log(r"%s: removed$" % qid, timeout, since=0)

	# -- laimd -n

	def check_config(self, path=None):
		"""laimd -n on path, or on this laimd's config (written first);
		returns the CompletedProcess."""
		if path is None:
			self.write_config()
		return laimd_n(path or self.confpath, self.laimd)

	def check_example(self, name, files):
		"""laimd -n takes the source tree's etc/NAME.yml once the paths it
		names (each key of files, which it must hold) are the case's."""
		with open(os.path.join(os.environ.get("LAIM_SRCDIR", "."), "etc", name + ".yml")) as f:
			text = f.read()
		for example, path in files.items():
			check(example in text, "etc/%s.yml names no %s" % (name, example))
			text = text.replace(example, path)
		path = os.path.join(self.dir, "example.yml")
		with open(path, "w") as f:
			f.write(text)
		os.chmod(path, 0o600)
		r = self.check_config(path)
		check_eq((r.returncode, r.stderr), (0, b""), "laimd -n etc/%s.yml" % name)

	def option_line(self, instance, key):
		"""The line of KEY in the section of handler INSTANCE in the config."""
		with open(self.confpath) as f:
			lines = f.read().split("\n")
		start = lines.index("  %s:" % instance)
		for n in range(start + 1, len(lines)):
			if lines[n].strip().startswith(key + ":"):
				return n + 1
		raise Fail("no %s: in handlers.%s" % (key, instance))

	# -- local submission: the installed sendmail and laimctl against this laimd

	def local_env(self):
		"""The environment that points sendmail, laimctl and the test
		build's laim-drop at this laimd and its spool."""
		return {
			"LAIM_SOCKET": self.config["socket"],
			"LAIM_TEST_SPOOL_DIR": self.spool,
			"LAIM_CONTROL": self.config["control_socket"],
			"LAIM_DROP": drop_path(),
			"LAIM_MAILNAME": self.mailname,
			"LAIM_ALIASES": self.config["aliases"],
		}

	def sendmail(self, args, stdin=b"", user=None, argv0="sendmail", env=None, timeout=20):
		"""Runs the installed sendmail (as argv0: "mailq", "newaliases") as
		root or as user (a pwd entry); returns a Run."""
		e = self.local_env()
		e.update(env or {})
		return run_program(sendmail_path(), args, stdin, user=user, env=e, argv0=argv0, timeout=timeout)

	def laimctl(self, args, user=None, timeout=20):
		return run_program(laimctl_path(), args, b"", user=user, env=self.local_env(), timeout=timeout)

	def wait_local_submission(self, since, sender=None, timeout=10):
		"""Waits for the from= line of a local submission logged after the
		mark since (client=local, uid=U, and ", offline=NAME" for an
		imported offline file); returns its match: groups qid, sender,
		size, nrcpt, uid, offline name or None."""
		who = re.escape(sender) if sender is not None else r"[^>]*"
		return self.wait_log(LOCAL_FROM_RE % who, timeout, since=since)

	def delivered_copies(self, qid, maildir=None):
		"""The copies of qid in the Maildir, as {Delivered-To: (Return-Path,
		Received: unfolded, the message after Received:)}; fails on two
		copies for one recipient."""
		return delivered_by_id(maildir or self.maildir).get(qid, {})


# ------------------------------------------------------------------ the installed tree
#
# make check installs the programs into a DESTDIR and exports
# LAIM_DESTDIR, LAIM_SBINDIR, LAIM_BINDIR, LAIM_PKGLIBEXECDIR and
# LAIM_DROP_GROUP. By hand, as root:
#   make install-exec DESTDIR=$PWD/destdir LAIM_DROP_SETGID=no
#   LAIM_DESTDIR=$PWD/destdir LAIM_SBINDIR=/usr/sbin LAIM_BINDIR=/usr/bin \
#   LAIM_PKGLIBEXECDIR=/usr/libexec/laim LAIMD=$PWD/laimd python3 t_x.py
# The cases run them as root or as LOCAL_USER, an ordinary login user.
# Each case makes that laim-drop setgid DROP_GROUP (_accounts_enter): a
# test build's own group, never the package's laimdrop, which a test run
# must neither create (and then remove under an installed package) nor
# remove.

LOCAL_USER = "laimuser"
LOCAL_GECOS = "Laim Local User"
DROP_GROUP = os.environ.get("LAIM_DROP_GROUP") or "laimtestdrop"

# A from= line of a local submission (see Laimd.wait_local_submission).
LOCAL_FROM_RE = (r"(" + QID_RE + r"): from=<(%s)>, size=(\d+), nrcpt=(\d+), client=local, uid=(\d+)"
		 r"(?:, offline=(\S+))?$")
# RFC 5322 3.3 date-time (day of week and seconds optional, zone numeric).
DATE_RE = (r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
	   r"\d{4} \d\d:\d\d(?::\d\d)? [+-]\d{4}(?: \([^()]*\))?")
# RFC 5322 3.6.4 msg-id, in its dot-atom form.
MSGID_RE = r"<[^<>@\s]+@[^<>@\s]+>"


def installed(dirvar, name):
	"""$LAIM_DESTDIR$dirvar/name, an executable of the DESTDIR install."""
	destdir = os.environ.get("LAIM_DESTDIR")
	sub = os.environ.get(dirvar)
	if not destdir or not sub:
		raise Fail("LAIM_DESTDIR and %s are not set (make check sets them; by hand: "
			   "make install-exec DESTDIR=..., then set them)" % dirvar)
	path = destdir + sub + "/" + name
	if not os.access(path, os.X_OK):
		raise Fail("%s is not an installed executable" % path)
	return path


def sendmail_path():
	return installed("LAIM_SBINDIR", "sendmail")


def laimctl_path():
	return installed("LAIM_SBINDIR", "laimctl")


def drop_path():
	return installed("LAIM_PKGLIBEXECDIR", "laim-drop")


def _setgid_drop(gid):
	"""The DESTDIR laim-drop, when there is one, root:gid 2755, as the
	package's postinst makes it. Only what differs is changed: a chown
	clears the setgid bit of a laim-drop another case may be running."""
	try:
		path = drop_path()
	except Fail:
		return  # no DESTDIR install (a case run by hand without one)
	st = os.stat(path)
	if (st.st_uid, st.st_gid) != (0, gid):
		os.chown(path, 0, gid)
	if stat.S_IMODE(os.stat(path).st_mode) != 0o2755:
		os.chmod(path, 0o2755)


def offline_header(sender, rcpts):
	"""The offline file header of common/offline.h."""
	ns = lambda s: b"%d:%s," % (len(s.encode()), s.encode())
	return b"LAIMDROP 1\n" + ns(sender) + ns(str(len(rcpts))) + b"".join(ns(r) for r in rcpts) + b"\n"


def plant_offline(spool, sender, rcpts, body, gid):
	"""A file in spool's offline/ as laim-drop makes one (root's, group
	gid, 0644), named EPOCH.PID.RANDOM; returns its name."""
	name = "%d.%d.%08x" % (time.time(), os.getpid(), random.getrandbits(32))
	path = os.path.join(spool, "offline", name)
	with open(path, "wb") as f:
		f.write(offline_header(sender, rcpts) + body)
	os.chown(path, 0, gid)
	os.chmod(path, 0o644)
	return name


def drop_gid():
	"""The gid of DROP_GROUP, failing when the installed laim-drop is not
	setgid to it (each case's start makes it so)."""
	try:
		gid = grp.getgrnam(DROP_GROUP).gr_gid
	except KeyError:
		raise Fail("group %s does not exist (each case's start creates it)" % DROP_GROUP)
	st = os.stat(drop_path())
	check(st.st_gid == gid and st.st_mode & stat.S_ISGID and st.st_mode & 0o777 == 0o755,
	      "%s is not mode 2755 group %s: mode %o gid %d" % (drop_path(), DROP_GROUP, st.st_mode & 0o7777, st.st_gid))
	return gid


# ------------------------------------------------------------------ the system spool
#
# No case touches the system's spool: every Laimd has its own, and the
# test build's laim-drop writes where LAIM_TEST_SPOOL_DIR points
# (local_env). run() holds every case to that: what SYSTEM_SPOOL's
# offline/, queue/ and incoming/ hold (or that they do not exist) must be
# the same when the case ends.

SYSTEM_SPOOL = os.environ.get("LAIM_SPOOL_DIR") or "/var/spool/laim"


def system_spool_state():
	"""{SUB: {NAME: (inode, size, mtime_ns)}} for SYSTEM_SPOOL's offline/,
	queue/ and incoming/; None for a directory that does not exist."""
	state = {}
	for sub in ("offline", "queue", "incoming"):
		path = os.path.join(SYSTEM_SPOOL, sub)
		try:
			names = os.listdir(path)
		except FileNotFoundError:
			state[sub] = None
			continue
		files = {}
		for name in names:
			try:
				st = os.lstat(os.path.join(path, name))
			except FileNotFoundError:
				continue
			files[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
		state[sub] = files
	return state


def check_system_spool(before):
	after = system_spool_state()
	for sub in before:
		check(before[sub] == after[sub], "%s/%s/ changed while the case ran (by the case, or by "
		      "something else using the system's spool meanwhile): before %r, after %r"
		      % (SYSTEM_SPOOL, sub, before[sub], after[sub]))


def mount_tmpfs(path, mounts, size, inodes):
	"""A tmpfs of size bytes and inodes inodes on path (made), appended to
	mounts, which the case unmounts at its end."""
	os.makedirs(path, exist_ok=True)
	r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,nr_inodes=%d,mode=0755" % (size, inodes),
			    "tmpfs", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	check_eq(r.returncode, 0, "mount tmpfs on %s (%r)" % (path, r.stdout))
	mounts.append(path)


def spool_on_tmpfs(d, mounts, size, inodes):
	"""Puts d's spool on a tmpfs (mount_tmpfs) in its dir; returns the
	mount point."""
	fs = os.path.join(d.dir, "spoolfs")
	mount_tmpfs(fs, mounts, size, inodes)
	d.spool = d.config["spool"] = os.path.join(fs, "spool")
	return fs


def fill_space(fs, leave):
	"""A root file that leaves about leave bytes free on fs; returns its path."""
	path = os.path.join(fs, "filler")
	st = os.statvfs(fs)
	free = st.f_bavail * st.f_frsize
	check(free > leave, "%s: %d bytes free, fewer than the %d to leave" % (fs, free, leave))
	fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
	try:
		os.posix_fallocate(fd, 0, free - leave)
	finally:
		os.close(fd)
	return path


def local_user():
	"""LOCAL_USER, an ordinary login user with a home and a GECOS name."""
	return _ensure_account(LOCAL_USER, ["--create-home", "--comment", LOCAL_GECOS, "--shell", "/bin/sh"])


def mbox_laimd():
	"""A Laimd (not started) whose every recipient goes to the mbox handler
	instance "local", with a mail_dir of its own made like Debian's
	/var/mail (root:mail 2775); returns (laimd, mail_dir)."""
	d = Laimd(handlers={"local": {"type": "mbox"}}, routes=[{"match": "*", "handlers": ["local"]}])
	mail_dir = os.path.join(d.dir, "mail")
	os.mkdir(mail_dir)
	os.chown(mail_dir, 0, grp.getgrnam("mail").gr_gid)
	os.chmod(mail_dir, 0o2775)
	d.config["mail_dir"] = mail_dir
	return d, mail_dir


class Run:
	"""What one run of an installed program did."""

	def __init__(self, argv, user, returncode, out, err, elapsed):
		self.argv = argv
		self.user = user
		self.returncode = returncode
		self.out = out
		self.err = err
		self.elapsed = elapsed

	@property
	def stdout(self):
		return self.out.decode(errors="replace")

	@property
	def stderr(self):
		return self.err.decode(errors="replace")

	def __repr__(self):
		return "<%s as %s: exit %d, stdout %r, stderr %r>" % (
			" ".join(self.argv), self.user, self.returncode, self.out[:500], self.err[:500])


def run_program(path, args, stdin=b"", user=None, env=None, argv0=None, timeout=20):
	"""Runs path with argv[0] argv0 (default its name) as root, or as user
	(a pwd entry: its uid and gid, no supplementary group), in /, with a
	small environment plus env; returns a Run."""
	pw = user or pwd.getpwuid(0)
	e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": pw.pw_dir, "USER": pw.pw_name,
	     "LOGNAME": pw.pw_name, "LANG": "C.UTF-8"}
	e.update(env or {})
	kw = {}
	if user is not None and user.pw_uid != 0:
		kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
	argv = [argv0 or os.path.basename(path)] + list(args)
	t0 = time.monotonic()
	try:
		p = subprocess.run(argv, executable=path, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
				   env=e, cwd="/", timeout=timeout, close_fds=True, **kw)
	except subprocess.TimeoutExpired:
		raise Fail("%r as %s did not finish within %ds" % (argv, pw.pw_name, timeout))
	return Run(argv, pw.pw_name, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def check_ran(r, code=0, quiet=True):
	"""The run exited with code and, when quiet, wrote nothing on stderr."""
	check(r.returncode == code, "expected exit %d: %r" % (code, r))
	if quiet:
		check(r.err == b"", "expected nothing on stderr: %r" % r)


def openssl_policy_file(directory, policy):
	"""An openssl.cnf in directory whose system policy (the section
	system_default, as in Debian's own) is policy, such as "MinProtocol =
	TLSv1.3"; returns its path, for OPENSSL_CONF."""
	path = os.path.join(directory, "openssl-policy.cnf")
	with open(path, "w") as f:
		f.write("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = policy\n"
			"[policy]\n%s\n" % policy)
	return path


def restart_under_openssl_policy(d, policy):
	"""Restarts laimd d with OPENSSL_CONF naming openssl_policy_file()
	of policy; the variable is gone from this process again once d runs."""
	cnf = openssl_policy_file(d.dir, policy)
	d.stop()
	os.environ["OPENSSL_CONF"] = cnf
	try:
		d.start()
	finally:
		del os.environ["OPENSSL_CONF"]


def as_user(pw, fn):
	"""Runs fn() in a forked child with pw's uid and gid (no supplementary
	group); returns str(fn()) as the child printed it, failing when fn
	raised."""
	r, w = os.pipe()
	pid = os.fork()
	if pid == 0:
		code = 1
		try:
			signal.alarm(0)
			os.close(r)
			os.setgroups([])
			os.setgid(pw.pw_gid)
			os.setuid(pw.pw_uid)
			os.write(w, str(fn()).encode())
			code = 0
		except BaseException as e:
			os.write(w, ("%s: %s" % (type(e).__name__, e)).encode())
		finally:
			os._exit(code)
	os.close(w)
	out = b""
	while True:
		chunk = os.read(r, 65536)
		if not chunk:
			break
		out += chunk
	os.close(r)
	_, status = os.waitpid(pid, 0)
	check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "as %s: %s" % (pw.pw_name, out.decode(errors="replace")))
	return out.decode(errors="replace")


def run_rows(rows):
	"""Runs every (name, fn) of a table of cases, printing "ok - name" or
	"not ok - name: why"; fails at the end naming the rows that failed.
	Running out of time still ends the case at once."""
	failed = []
	for name, fn in rows:
		try:
			fn()
			print("ok - %s" % name)
		except Interrupted:
			raise
		except Fail as e:
			print("not ok - %s: %s" % (name, e))
			failed.append(name)
		except Exception:
			traceback.print_exc()
			print("not ok - %s: unexpected exception" % name)
			failed.append(name)
		sys.stdout.flush()
	check(not failed, "%d of %d rows failed: %s" % (len(failed), len(rows), "; ".join(failed)))


# ------------------------------------------------------------------ messages as delivered

def header_fields(msg):
	"""Splits a CRLF message into its header fields (each with its folded
	continuation lines and CRLF) and the rest, from the empty line on."""
	fields = []
	pos = 0
	while pos < len(msg) and not msg.startswith(b"\r\n", pos):
		end = msg.find(b"\r\n", pos)
		check(end >= 0, "header line without CRLF: %r" % msg[pos:pos + 200])
		end += 2
		while msg[end:end + 1] in (b" ", b"\t"):
			nl = msg.find(b"\r\n", end)
			check(nl >= 0, "header line without CRLF: %r" % msg[end:end + 200])
			end = nl + 2
		fields.append(msg[pos:end])
		pos = end
	return fields, msg[pos:]


def only(items, what):
	"""The one item of items; fails on none or several."""
	check(len(items) == 1, "%s: expected one, got %r" % (what, items))
	return items[0]


def after_received(data):
	"""A relayed message as its peer got it, less the Received: laimd added."""
	check(data.startswith(b"Received: "), "no Received: first: %r" % data[:200])
	fields, rest = header_fields(data)
	return b"".join(fields[1:]) + rest


def field_name(field):
	return field.split(b":", 1)[0].strip().lower().decode(errors="replace")


def field_value(field):
	v = field.split(b":", 1)[1] if b":" in field else b""
	return re.sub(rb"\r\n([ \t])", rb"\1", v).strip().decode(errors="replace")


def crlf(msg):
	"""LF line ends as CRLF, as sendmail sends them."""
	return msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def check_passthrough(delivered, sent, what, added=(), removed=()):
	"""Checks a delivered message (after laimd's Received:) against what
	the program wrote (LF line ends): byte for byte the same with CRLF,
	except that the header fields named in removed are gone and one field
	is added for each name in added (the program wrote none). Returns the
	added fields as {name: unfolded value}."""
	want_fields, want_rest = header_fields(crlf(sent))
	names_sent = {field_name(f) for f in want_fields}
	want_fields = [f for f in want_fields if field_name(f) not in removed]
	got_fields, got_rest = header_fields(delivered)
	extra = {}
	kept = []
	for f in got_fields:
		n = field_name(f)
		if n in added and n not in names_sent:
			check(n not in extra, "%s: two %s: headers added: %r" % (what, n, delivered[:1000]))
			extra[n] = field_value(f)
		else:
			kept.append(f)
	check(sorted(extra) == sorted(added), "%s: header fields added: expected %r, got %r (delivered header %r)" %
	      (what, sorted(added), sorted(extra), b"".join(got_fields)))
	check(kept == want_fields, "%s: the header was not passed through: expected %r, got %r" %
	      (what, b"".join(want_fields), b"".join(kept)))
	check(got_rest == want_rest, "%s: the body was not passed through: expected %r, got %r" %
	      (what, want_rest[:2000], got_rest[:2000]))
	return extra


def check_added_headers(extra, what, from_name=None, from_addr=None):
	"""The Date:, Message-ID: and From: that sendmail added are well formed;
	From: names from_addr with the phrase from_name (or as a comment)."""
	if "date" in extra:
		check(re.fullmatch(DATE_RE, extra["date"]), "%s: added Date: %r" % (what, extra["date"]))
	if "message-id" in extra:
		check(re.fullmatch(MSGID_RE, extra["message-id"]), "%s: added Message-ID: %r" % (what, extra["message-id"]))
	if "from" in extra:
		v = extra["from"]
		name, addr = re.escape(from_name), re.escape(from_addr)
		check(re.fullmatch(r'"?%s"? <%s>' % (name, addr), v) or re.fullmatch(r"%s \(%s\)" % (addr, name), v),
		      "%s: added From: %r, expected %s <%s>" % (what, v, from_name, from_addr))


def check_local_delivery(d, since, sender, rcpts, uid, login, timeout=15):
	"""After one local submission logged since the mark: its from= line
	names sender, len(rcpts) recipients and uid; each recipient gets one
	copy in the Maildir with Return-Path <sender> and a Received: naming
	"uid UID (login)". Returns (qid, {rcpt: message after Received:})."""
	m = d.wait_local_submission(since, sender, timeout)
	qid = m.group(1)
	check_eq(int(m.group(4)), len(rcpts), "nrcpt= in %r" % m.group(0))
	check_eq(int(m.group(5)), uid, "uid= in %r" % m.group(0))
	for r in rcpts:
		d.wait_delivered(qid, r, timeout)
	d.wait_removed(qid, timeout)
	copies = d.delivered_copies(qid)
	check_eq(sorted(copies), sorted(rcpts), "Delivered-To: of the copies of %s" % qid)
	out = {}
	for r, (rp, rec, rest) in copies.items():
		check_eq(rp, sender, "Return-Path: of %s to %s" % (qid, r))
		check(re.search(r"\buid %d \(%s\)" % (uid, re.escape(login)), rec),
		      "Received: of %s does not name uid %d (%s): %r" % (qid, uid, login, rec))
		out[r] = rest
	return qid, out
