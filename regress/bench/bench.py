#!/usr/bin/python3
# laim's throughput benchmark: `make bench` in the build directory, as root.
# Not part of `make check`; takes a few minutes.
#
# Postfix's smtp-source sends mail over loopback to one server at a time:
#
#   smtp-sink      Postfix's test sink: 250 to everything, nothing kept; the
#                  ceiling of what the client and the machine can do
#   laim-discard   laimd (LAIMD) with every message routed to a discard
#                  handler and max_queue_size 100000: the commit path alone,
#                  each message fsynced in the spool before its 250
#   laim-maildir   laimd with the harness's maildir handler (default
#                  workers, or --maildir-workers) and max_queue_size 50,
#                  laim's default
#   opensmtpd      OpenSMTPD (Debian's opensmtpd 6.8.0p2): its queue on the
#                  same file system as laim's spool, each message delivered
#                  by its maildir method into a Maildir, as the laim test
#                  user ("user" option): the closest to laim-maildir.
#                  "smtp limit max-mails" is raised from 100 to 100000, as
#                  laim has no such limit.
#
# in four scenarios (--quick: 500, 500, 20 and 100 messages):
#
#   small-conn     5000 messages of 1 KiB over 8 concurrent sessions, a new
#                  connection for each message
#   small-session  the same, each session sending its messages over one
#                  connection (smtp-source -d)
#   large          200 messages of 1 MiB over one session
#   medium         1000 messages of 256 KiB over 8 sessions, each over one
#                  connection: medium files that commit together (laim's
#                  journal takes up to 2 MiB of them a group)
#
# Each measurement starts its server afresh, on a file system of its own:
# a new ext4 (mkfs.ext4 defaults, so with a journal) on a loop device over
# a sparse file in --cache, mounted for that one run and removed after it.
# Every server then writes its queue and Maildir under the same conditions,
# whatever the disk under /tmp is and whatever the previous run left (on
# ext4 without a journal, for one, each new inode is searched for past
# every inode freed in the last minute). --fs tmpdir runs in TMPDIR
# instead. --fs tmpfs mounts a new tmpfs for each run, where a sync costs
# nothing: what each server's design does with the disk taken away, the
# ceiling of laim's durable commits on this machine. Within a repetition
# the servers take turns, scenario by scenario. The table shows, for each
# column on its own, the median over the repetitions (3 by default):
#
#   msg/s      messages accepted / wall time of smtp-source. Accepted is
#              what the server counted: smtp-sink's -c counter, laim's
#              "from=<" log lines, OpenSMTPD's "smtp message" log lines.
#   MiB/s      the same in payload bytes (smtp-source -l; headers aside)
#   452s       transactions refused with 452 (a full queue), and "other"
#              refusals with any other non-2xx code: smtp-source -A warns
#              "... rejected: CODE text" for each and goes on with its next
#              message
#   deliver    servers with a Maildir: messages accepted / time from the
#              start of the run until all of them are in Maildir/new
#   PSS        the peak, over samples every 50 ms until the run (and its
#              deliveries) ended, of the sum of Pss in
#              /proc/PID/smaps_rollup over the server's process tree
#   CPU        user and system time of the server's process tree over the
#              run and its deliveries, per message accepted
#   kthreads   the same of the kernel threads (those alive at the end of
#              the run): the work a server's writes and syncs leave to
#              the kernel (on the loop device of --fs fresh, each sync is
#              a write and an fsync of its backing file, done by the loop
#              worker on the same two CPUs)
#   flushes    the cache flushes (REQ_PREFLUSH) the loop device of --fs
#              fresh completed over the run and its deliveries, per
#              message accepted (/sys/block/loopN/stat): what a server
#              asks of the disk for its durability. smtp-sink and an
#              in-memory design ask none
#   ms/flush   the same device's flush time over its flushes: what one
#              costs on this machine in this run (each is an fsync of the
#              loop's backing file on the host's disk), by which a
#              server that syncs before its 250 waits
#   ratio      msg/s over smtp-sink's msg/s in the same scenario and
#              repetition
#
# Notes under the table tell of single runs that went amiss: a failure, a
# count that does not add up, deliveries not done in time, or SYNs dropped
# on a full listen queue (TcpExt ListenDrops of the namespace; each costs
# its client a retransmit 1 s later: OpenSMTPD listens with a backlog of 5,
# compiled in, which 8 sessions connecting anew for each message overrun).
#
# laimd runs as installed: the group its laim-drop is setgid to (laimdrop
# for a release build: LAIM_DROP_GROUP, which make bench sets) exists, as
# the package makes it, so that laimd imports offline/ and its parent finds
# the group in /etc/group (a missing one is looked up in every NSS module,
# libnss_systemd's pages then counting in the parent's PSS). When missing
# it is made for the run and removed after it.
#
# Postfix and OpenSMTPD are never installed (postfix conflicts with laim's
# package): apt-get download fetches their .debs into --cache (default
# /var/tmp/laim-bench, reused) and dpkg-deb -x unpacks them there; the
# Postfix tools run with LD_LIBRARY_PATH=<root>/usr/lib/postfix. The
# measurements then run in a private network namespace with only loopback
# (the script re-executes itself under unshare --net), so no server reaches
# another address or a resolver; every name is explicit (bench.example,
# client.example). OpenSMTPD has its paths compiled in; it runs in a mount
# and UTS namespace of its own, where tmpfs mounts hold them: its queue
# /var/spool/smtpd is bind-mounted from its scratch directory (on the
# file system laim's spool is on), /usr/libexec/opensmtpd from the unpacked
# package (see OPENSMTPD_NAMESPACE); its host name there is bench.example.
# Its privilege separation users opensmtpd and opensmtpq are created
# (useradd --system) when missing.
# laimd runs likewise with the spool and sockets built into it, which are
# all a release laimd takes: see at_builtin_paths().
#
#   make bench [BENCH_FLAGS="--reps 1 --scenario large --quick"]
#   LAIMD=build/check/laimd LAIM_SRCDIR=. /usr/bin/python3 regress/bench/bench.py \
#       [--reps N] [--scenario NAME]... [--server NAME]... [--quick] [--cache DIR]
#       [--strace DIR]   (laimd's system calls per message, from strace -c)
import argparse
import collections
import contextlib
import glob
import grp
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.dont_write_bytecode = True
from harness import (QID_RE, TEST_USER, Fail, Laimd, ensure_user, laimd_path, port_listening,  # noqa: E402
		     strace_attach, strace_detach)

Scenario = collections.namedtuple("Scenario", "messages quick size sessions reuse")
SCENARIOS = {
	"small-conn": Scenario(5000, 500, 1024, 8, False),
	"small-session": Scenario(5000, 500, 1024, 8, True),
	"large": Scenario(200, 20, 1024 * 1024, 1, True),
	"medium": Scenario(1000, 100, 256 * 1024, 8, True),
}
SERVERS = ["smtp-sink", "laim-discard", "laim-maildir", "opensmtpd"]
HOST = "bench.example"
SENDER = "bench@client.example"
RCPT = "root@" + HOST
SINK_PORT = 2525
OPENSMTPD_PORT = 2526
CLIENT_TIMEOUT = 600    # seconds for one smtp-source run
DELIVERY_TIMEOUT = 300  # seconds from the start of a run to its last delivery
NETNS_MARK = "LAIM_BENCH_NETNS"
CACHE = "/var/tmp/laim-bench"  # the packages, and the file systems while they are used


class Unavailable(Exception):
	"""A measurement cannot be made (a server does not start, the client
	fails); the table says why instead of its figures."""


# ------------------------------------------------------------------ the packages

def download(cache, package):
	"""apt-get download into cache, after an apt-get update when the first
	try fails (empty package lists)."""
	cmd = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package]
	if subprocess.run(cmd, cwd=cache).returncode != 0:
		subprocess.run(["apt-get", "-q", "update"], check=True)
		subprocess.run(cmd, cwd=cache, check=True)


def unpack(cache, package):
	"""cache/package, the files of the package (fetched and unpacked on the
	first run, never installed), and the package's version."""
	os.makedirs(cache, exist_ok=True)
	if not glob.glob(os.path.join(cache, package + "_*.deb")):
		download(cache, package)
	deb = sorted(glob.glob(os.path.join(cache, package + "_*.deb")))[-1]
	root = os.path.join(cache, package)
	if not os.path.isdir(root):
		subprocess.run(["dpkg-deb", "-x", deb, root + ".tmp"], check=True)
		os.rename(root + ".tmp", root)
	version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
				 stdout=subprocess.PIPE, text=True).stdout.strip()
	return root, version


class Tools:
	"""Where the unpacked Postfix and OpenSMTPD are."""

	def __init__(self, cache):
		self.postfix, self.postfix_version = unpack(cache, "postfix")
		self.opensmtpd, self.opensmtpd_version = unpack(cache, "opensmtpd")
		self.env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(self.postfix, "usr/lib/postfix"))

	def postfix_tool(self, name):
		return os.path.join(self.postfix, "usr/sbin", name)


# ------------------------------------------------------------------ processes

def process_tree(root):
	"""root and all its descendants, from the PPid of every process."""
	kids = collections.defaultdict(list)
	for name in filter(str.isdigit, os.listdir("/proc")):
		try:
			with open("/proc/%s/stat" % name) as f:
				stat = f.read()
		except OSError:
			continue
		kids[int(stat[stat.rfind(")") + 2:].split()[1])].append(int(name))
	tree, todo = [], [root]
	while todo:
		pid = todo.pop()
		tree.append(pid)
		todo.extend(kids[pid])
	return tree


CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000


def cpu_ticks(pids=None):
	"""{pid: user and system time, with reaped children's} of pids, or,
	when None, of every kernel thread: the loop device's workers, the
	flusher, jbd2 and the softirq threads, busy on behalf of whichever
	process wrote or synced."""
	ticks = {}
	for name in filter(str.isdigit, os.listdir("/proc")) if pids is None else map(str, pids):
		try:
			with open("/proc/%s/stat" % name) as f:
				stat = f.read()
		except OSError:
			continue
		fields = stat[stat.rfind(")") + 2:].split()
		if pids is None and not int(fields[6]) & PF_KTHREAD:
			continue
		ticks[name] = sum(int(v) for v in fields[11:15])
	return ticks


def cpu_seconds_since(before, after):
	"""CPU seconds between two cpu_ticks(): of the threads alive at the
	end (one that exited meanwhile took its time with it)."""
	return sum(max(0, t - before.get(pid, 0)) for pid, t in after.items()) / CLOCK_TICK


def pss_kb(pid):
	try:
		with open("/proc/%d/smaps_rollup" % pid) as f:
			for line in f:
				if line.startswith("Pss:"):
					return int(line.split()[1])
	except OSError:
		pass
	return 0


class PssSampler(threading.Thread):
	"""The peak of the summed Pss of a process tree, sampled every 50 ms
	from construction until stop(), which returns it in MiB. The tree is
	looked up again once a second: finding it reads every process's stat,
	and doing that at each sample took 5% of the two CPUs from the server
	under test."""

	TREE_EVERY = 20  # samples

	def __init__(self, pid):
		super().__init__(daemon=True)
		self.pid = pid
		self.peak_kb = 0
		self.done = threading.Event()
		self.start()

	def run(self):
		sample = 0
		while not self.done.is_set():
			if sample % self.TREE_EVERY == 0:
				tree = process_tree(self.pid)
			self.peak_kb = max(self.peak_kb, sum(pss_kb(p) for p in tree))
			sample += 1
			self.done.wait(0.05)

	def stop(self):
		self.done.set()
		self.join()
		return self.peak_kb / 1024


def kill_tree(proc):
	"""SIGKILL to a server started in a session of its own: to its process
	group and to every process below it."""
	if proc is None:
		return
	for pid in [-proc.pid] + process_tree(proc.pid):
		try:
			os.kill(pid, signal.SIGKILL)
		except ProcessLookupError:
			pass
	proc.wait()


def wait_listening(proc, port, what, timeout=15):
	"""Waits for 127.0.0.1:port; Unavailable when proc exits first."""
	end = time.monotonic() + timeout
	while not port_listening(port):
		if proc.poll() is not None:
			raise Unavailable("%s exited with status %d before listening" % (what, proc.returncode))
		if time.monotonic() > end:
			raise Unavailable("%s not listening within %d s" % (what, timeout))
		time.sleep(0.02)


def maildir_count(maildir):
	try:
		return len(os.listdir(os.path.join(maildir, "new")))
	except FileNotFoundError:
		return 0


def wait_maildir(maildir, count, since):
	"""Seconds from since until maildir/new holds count messages; None
	when that takes longer than DELIVERY_TIMEOUT."""
	while maildir_count(maildir) < count:
		if time.monotonic() - since > DELIVERY_TIMEOUT:
			return None
		time.sleep(0.02)
	return time.monotonic() - since


def make_dir(path, mode, owner=None):
	os.mkdir(path)
	os.chmod(path, mode)
	if owner:
		os.chown(path, owner.pw_uid, owner.pw_gid)
	return path


# ------------------------------------------------------------------ the servers
#
# Each has start() (returns the port), pid (the root of its process tree),
# accepted() (messages the server took), maildir (None: no deliveries)
# and stop() (kills it and removes what it wrote; safe after any failure).

class SmtpSink:
	name = "smtp-sink"
	maildir = None

	def __init__(self, tools):
		self.tools = tools
		self.proc = None

	def start(self):
		self.out = tempfile.TemporaryFile()
		self.proc = subprocess.Popen(
			[self.tools.postfix_tool("smtp-sink"), "-c", "-u", "nobody", "-h", HOST,
			 "127.0.0.1:%d" % SINK_PORT, "256"],
			env=self.tools.env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
		wait_listening(self.proc, SINK_PORT, "smtp-sink")
		return SINK_PORT

	@property
	def pid(self):
		return self.proc.pid

	def accepted(self):
		"""The last of the "mesg=N" counters that -c prints."""
		self.out.seek(0)
		counts = re.findall(rb"mesg=(\d+)", self.out.read())
		return int(counts[-1]) if counts else 0

	def stop(self):
		kill_tree(self.proc)


# A release laimd takes only the spool and sockets built into laim-drop,
# sendmail and laimctl (LAIM_SPOOL_DIR and LAIM_RUN_DIR, which make bench
# passes from configure's directories). at_builtin_paths() runs it in a
# mount namespace of its own in which directories of its scratch dir are
# bind-mounted on the parents of those paths, so that each laimd still has
# a spool of its own, on the file system under test. A test build runs the
# same way, so that the figures of both compare.
SPOOL_DIR = os.environ.get("LAIM_SPOOL_DIR", "/var/spool/laim")
RUN_DIR = os.environ.get("LAIM_RUN_DIR", "/run/laim")
BUILTIN_NAMESPACE = 'mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && exec "$@"'


def at_builtin_paths(d):
	"""Makes d's config name the built-in paths and d's laimd run where
	they are d.dir/root/<parent>/...; d.spool and d.control_path are the
	paths from outside."""
	binds = []
	for path in (SPOOL_DIR, RUN_DIR):
		parent = os.path.dirname(path)
		if not os.path.isdir(parent):
			raise Unavailable("%s does not exist to mount on (LAIM_SPOOL_DIR, LAIM_RUN_DIR)" % parent)
		outside = os.path.join(d.dir, "root" + parent)
		os.makedirs(outside, mode=0o755)
		for p in (d.dir, d.laimd):
			if os.path.realpath(p).startswith(parent + "/"):
				raise Unavailable("%s is under %s, which laimd's mount namespace hides" % (p, parent))
		binds += [outside, parent]
	d.spool = os.path.join(d.dir, "root" + SPOOL_DIR)
	d.control_path = os.path.join(d.dir, "root" + RUN_DIR, "control.sock")
	d.config.update(spool=SPOOL_DIR, socket=os.path.join(RUN_DIR, "submit.sock"),
			control_socket=os.path.join(RUN_DIR, "control.sock"))
	d.wrap(runner="unshare --mount --propagation private sh -c '%s' sh %s" % (BUILTIN_NAMESPACE, " ".join(binds)))


class LaimServer:
	"""laimd through the e2e harness (its temp dir, its test user)."""

	def __init__(self, name, workers=None):
		self.name = name
		self.workers = workers  # the maildir instance's, when not its type's default
		self.d = None

	def start(self):
		if self.name == "laim-discard":
			self.d = Laimd(name="bench-discard", hostname=HOST, max_queue_size=100000,
				       handlers={"sink": {"type": "discard"}},
				       routes=[{"match": "*", "handlers": ["sink"]}])
		else:  # the harness's default handler: a maildir in d.maildir
			self.d = Laimd(name="bench-maildir", hostname=HOST, max_queue_size=50)
			if self.workers:
				self.d.config["handlers"]["inbox"]["workers"] = self.workers
		at_builtin_paths(self.d)
		self.d.start()
		return self.d.port

	@property
	def pid(self):
		return self.d.pid

	@property
	def maildir(self):
		return self.d.maildir if self.name == "laim-maildir" else None

	def accepted(self):
		"""Its "from=<" log lines, one for each message committed."""
		return len(re.findall(r"^laimd\[\d+\]: %s: from=<" % QID_RE, self.d.log(0), re.M))

	def stop(self):
		if self.d:
			self.d.cleanup()


# OpenSMTPD's paths are compiled in. This runs it in a mount namespace of
# its own in which tmpfs mounts over OPENSMTPD_HIDES hold them: its queue
# /var/spool/smtpd (bind-mounted from the scratch directory, on the disk),
# its chroot /var/lib/opensmtpd/empty, /var/run/smtpd.sock, and
# /usr/libexec/opensmtpd (from the unpacked package: mail.maildir); and in
# which /etc/resolv.conf says "lookup file", /etc/hosts only (left as it is
# when a symbolic link). $1: the unpacked package, $2: the scratch directory.
OPENSMTPD_HIDES = ("/run", "/var/spool", "/var/lib", "/usr/libexec")
OPENSMTPD_NAMESPACE = """
set -e
hostname %s
for d in %s; do mount -t tmpfs -o mode=755 laim-bench $d; done
mkdir -p /var/spool/smtpd /var/lib/opensmtpd/empty /usr/libexec/opensmtpd
mount --bind "$2/spool" /var/spool/smtpd
mount --bind "$1/usr/libexec/opensmtpd" /usr/libexec/opensmtpd
test -L /etc/resolv.conf || mount --bind "$2/resolv.conf" /etc/resolv.conf
exec "$1/usr/sbin/smtpd" -d -f "$2/smtpd.conf"
""" % (HOST, " ".join(OPENSMTPD_HIDES))

OPENSMTPD_CONF = """smtp limit max-mails 100000
listen on 127.0.0.1 port {port} hostname {host}
action "bench" maildir "{maildir}" user {user}
match from any for domain "{host}" action "bench"
"""


def ensure_system_user(name):
	"""The privilege separation users, as the package's postinst would
	create them; says so when it does."""
	r = subprocess.run(["id", "-u", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
	if r.returncode == 0:
		return
	r = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
			    "--home-dir", "/var/lib/opensmtpd/empty", "--shell", "/usr/sbin/nologin", name],
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
	if r.returncode != 0:
		raise Unavailable("useradd %s: %s" % (name, r.stdout.strip()))
	print("created system user %s for OpenSMTPD (useradd --system)" % name)


class OpenSmtpd:
	name = "opensmtpd"

	def __init__(self, tools):
		self.tools = tools
		self.proc = None
		self.dir = None

	def start(self):
		for user in ("opensmtpd", "opensmtpq"):
			ensure_system_user(user)
		self.make_scratch_dir()
		self.log = os.path.join(self.dir, "smtpd.log")
		with open(self.log, "wb") as log:
			self.proc = subprocess.Popen(
				["unshare", "--mount", "--uts", "sh", "-c", OPENSMTPD_NAMESPACE, "sh",
				 self.tools.opensmtpd, self.dir],
				stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
		try:
			wait_listening(self.proc, OPENSMTPD_PORT, "smtpd")
		except Unavailable as e:
			raise Unavailable("%s: %s" % (e, self.last_log_line()))
		return OPENSMTPD_PORT

	def make_scratch_dir(self):
		"""Its queue, its Maildir (the laim test user's), smtpd.conf and
		resolv.conf, beside laim's temp dirs."""
		self.dir = tempfile.mkdtemp(prefix="laim-bench-opensmtpd-")
		for path in (self.tools.opensmtpd, self.dir):
			if any(os.path.realpath(path).startswith(hidden + "/") for hidden in OPENSMTPD_HIDES):
				raise Unavailable("%s is under a directory its mount namespace hides (%s)"
						  % (path, ", ".join(OPENSMTPD_HIDES)))
		os.chmod(self.dir, 0o755)
		make_dir(os.path.join(self.dir, "spool"), 0o711)
		self.maildir = make_dir(os.path.join(self.dir, "Maildir"), 0o700, ensure_user())
		with open(os.path.join(self.dir, "smtpd.conf"), "w") as f:
			f.write(OPENSMTPD_CONF.format(port=OPENSMTPD_PORT, host=HOST, maildir=self.maildir, user=TEST_USER))
		with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
			f.write("lookup file\n")

	@property
	def pid(self):
		return self.proc.pid

	def last_log_line(self):
		with open(self.log, errors="replace") as f:
			lines = f.read().strip().splitlines()
		return lines[-1] if lines else "no output"

	def accepted(self):
		"""Its "smtp message" log lines, one for each message queued."""
		with open(self.log, "rb") as f:
			return len(re.findall(rb" smtp message msgid=", f.read()))

	def stop(self):
		kill_tree(self.proc)
		if self.dir:
			shutil.rmtree(self.dir, ignore_errors=True)


def new_server(name, tools, args):
	if name == "smtp-sink":
		return SmtpSink(tools)
	if name == "opensmtpd":
		return OpenSmtpd(tools)
	return LaimServer(name, args.maildir_workers)


# ------------------------------------------------------------------ one measurement

REFUSAL_RE = re.compile(r"rejected: (\d\d\d) ")  # smtp-source -A's warnings


def source_argv(tools, sc, messages, port):
	argv = [tools.postfix_tool("smtp-source"), "-A", "-M", "client.example", "-f", SENDER, "-t", RCPT,
		"-S", "bench", "-l", str(sc.size), "-m", str(messages), "-s", str(sc.sessions)]
	return argv + (["-d"] if sc.reuse else []) + ["127.0.0.1:%d" % port]


def listen_drops():
	"""TcpExt ListenDrops of this network namespace: SYNs dropped because a
	listen queue was full, each costing its client a retransmit 1 s later."""
	with open("/proc/net/netstat") as f:
		names, values = [line.split() for line in f if line.startswith("TcpExt:")]
	return int(values[names.index("ListenDrops")])


def settled(count):
	"""count() once it stops changing: a server may count a message just
	after its 250 went out."""
	last = count()
	while True:
		time.sleep(0.1)
		now = count()
		if now == last:
			return now
		last = now


class FreshFileSystem:
	"""A new ext4 on a loop device over a sparse file in cache (or, with
	tmpfs, a new tmpfs), mounted while the with block runs, as the
	directory temp dirs are made in."""

	SIZE = "4G"

	def __init__(self, cache, tmpfs=False):
		self.image = None if tmpfs else os.path.join(cache, "fs.img")
		self.mountpoint = os.path.join(cache, "fs")

	def __enter__(self):
		os.makedirs(self.mountpoint, exist_ok=True)
		if self.image:
			subprocess.run(["truncate", "-s", self.SIZE, self.image], check=True)
			subprocess.run(["mkfs.ext4", "-q", "-F", self.image], check=True)
			subprocess.run(["mount", "-o", "loop", self.image, self.mountpoint], check=True)
		else:
			subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + self.SIZE, "laim-bench", self.mountpoint],
				       check=True)
		os.chmod(self.mountpoint, 0o755)
		tempfile.tempdir = self.mountpoint
		return self

	def flushes(self):
		"""(flushes completed, ms spent in them) by the loop device so
		far, or None on tmpfs (Documentation/block/stat.rst: fields 16
		and 17 of /sys/block/DEV/stat)."""
		if not self.image:
			return None
		source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", self.mountpoint], capture_output=True,
					text=True, check=True).stdout.strip()
		with open("/sys/block/%s/stat" % os.path.basename(source)) as f:
			fields = [int(x) for x in f.read().split()]
		return fields[15], fields[16]

	def __exit__(self, *exc):
		tempfile.tempdir = None
		for _ in range(50):  # a killed server's files may still be open for a moment
			if subprocess.run(["umount", self.mountpoint], stderr=subprocess.DEVNULL).returncode == 0:
				break
			time.sleep(0.1)
		else:
			subprocess.run(["umount", "--lazy", self.mountpoint])
		if self.image:
			os.unlink(self.image)


def syscalls_per_message(path, accepted):
	"""The total of strace -c's summary in path, per message."""
	with open(path) as f:
		total = [line.split() for line in f if line.rstrip().endswith(" total")]
	return int(total[-1][-3 if len(total[-1]) == 6 else -2]) / accepted if total and accepted else 0


def measure(tools, server, sc, messages, fs=None, strace_out=None):
	"""One smtp-source run against a freshly started server: the figures
	of the table (ratio aside) and notes on anything amiss; fs the
	FreshFileSystem it runs on, if any (the flushes). With
	strace_out, laimd's processes run under strace -c for the run, which
	slows them: the counts are the figure then, not the rates."""
	os.sync()  # the previous run's writes stay out of this one
	tracer = None
	try:
		port = server.start()
		sampler = PssSampler(server.pid)
		if strace_out and isinstance(server, LaimServer):
			tracer = strace_attach([server.pid] + sorted(server.d.children().values()), ["-c"], out=strace_out)
		try:
			drops = listen_drops()
			flushes = fs and fs.flushes()
			cpu = cpu_ticks(process_tree(server.pid)), cpu_ticks()
			start = time.monotonic()
			r = subprocess.run(source_argv(tools, sc, messages, port), env=tools.env, stdout=subprocess.DEVNULL,
					   stderr=subprocess.PIPE, text=True, timeout=CLIENT_TIMEOUT)
			took = time.monotonic() - start
			if r.returncode != 0:
				raise Unavailable("smtp-source: %s" % r.stderr.strip().splitlines()[-1])
			drops = listen_drops() - drops
			accepted = settled(server.accepted)
			delivered_in = wait_maildir(server.maildir, accepted, start) if server.maildir else None
			cpu = (cpu_seconds_since(cpu[0], cpu_ticks(process_tree(server.pid))),
			       cpu_seconds_since(cpu[1], cpu_ticks()))
			if flushes:
				flushes = [now - before for now, before in zip(fs.flushes(), flushes)]
		finally:
			pss = sampler.stop()
			if tracer:
				strace_detach(tracer)
	finally:
		server.stop()
	codes = REFUSAL_RE.findall(r.stderr)
	fig = {"rate": accepted / took, "mib": accepted * sc.size / 2 ** 20 / took, "452": codes.count("452"),
	       "other": len(codes) - codes.count("452"), "pss": pss, "notes": []}
	if accepted:
		fig["cpu"], fig["kcpu"] = (c * 1e6 / accepted for c in cpu)
		if flushes:
			fig["flushes"] = flushes[0] / accepted
	if flushes and flushes[0]:
		fig["flush_ms"] = flushes[1] / flushes[0]
	if delivered_in:
		fig["deliver"] = accepted / delivered_in
	elif server.maildir:
		fig["notes"].append("not all delivered within %d s" % DELIVERY_TIMEOUT)
	if accepted + len(codes) != messages:
		fig["notes"].append("%d sent, %d accepted, %d refused" % (messages, accepted, len(codes)))
	if drops:
		fig["notes"].append("%d SYNs dropped on a full listen queue" % drops)
	if tracer:
		fig["notes"].append("%.1f system calls/msg (%s)" % (syscalls_per_message(strace_out, accepted), strace_out))
	return fig


def progress(rep, scenario, name, fig):
	if isinstance(fig, str):
		line = fig
	else:
		line = "%.0f msg/s, %.1f MiB/s, %d 452s, %d other refusals, peak PSS %.1f MiB" % (
			fig["rate"], fig["mib"], fig["452"], fig["other"], fig["pss"])
		if "cpu" in fig:
			line += ", CPU %.0f us/msg (kernel threads %.0f)" % (fig["cpu"], fig["kcpu"])
		if "deliver" in fig:
			line += ", %.0f deliveries/s" % fig["deliver"]
		if "flushes" in fig:
			line += ", %.2f disk flushes/msg" % fig["flushes"]
		if "flush_ms" in fig:
			line += " (%.2f ms each)" % fig["flush_ms"]
		if fig["notes"]:
			line += " (%s)" % "; ".join(fig["notes"])
	print("rep %d %-13s %-12s %s" % (rep + 1, scenario, name, line), flush=True)


def run(args, tools):
	"""Every measurement, in turn; {(scenario, server): [figures or the
	reason it failed, one per repetition]}."""
	results = collections.defaultdict(list)
	for rep in range(args.reps):
		for scenario in args.scenario:
			sc = SCENARIOS[scenario]
			sink = None
			for name in args.server:
				try:
					with (FreshFileSystem(args.cache, args.fs == "tmpfs") if args.fs != "tmpdir"
					      else contextlib.nullcontext()) as fs:
						fig = measure(tools, new_server(name, tools, args), sc,
							      sc.quick if args.quick else sc.messages, fs,
							      args.strace and os.path.join(args.strace, "%s-%s-%d.txt" % (
								      scenario, name, rep + 1)))
				except Exception as e:  # one failed measurement does not end the run
					fig = "n/a (%s)" % (str(e).strip().splitlines() or [type(e).__name__])[0]
				if name == "smtp-sink" and not isinstance(fig, str):
					sink = fig["rate"]
				if sink and not isinstance(fig, str):
					fig["ratio"] = fig["rate"] / sink
				results[scenario, name].append(fig)
				progress(rep, scenario, name, fig)
	return results


# ------------------------------------------------------------------ the table

COLUMNS = [("msg/s", "rate", "%.0f"), ("MiB/s", "mib", "%.1f"), ("452s", "452", "%.0f"),
	   ("other", "other", "%.0f"), ("deliver msg/s", "deliver", "%.0f"),
	   ("peak PSS MiB", "pss", "%.1f"), ("CPU us/msg", "cpu", "%.0f"), ("kthreads us/msg", "kcpu", "%.0f"),
	   ("flushes/msg", "flushes", "%.2f"), ("ms/flush", "flush_ms", "%.2f"), ("ratio to smtp-sink", "ratio", "%.3f")]


def row(scenario, name, figs):
	"""The table's cells for one server in one scenario: medians over the
	repetitions that ran, or why none did."""
	ok = [f for f in figs if not isinstance(f, str)]
	if not ok:
		return [scenario, name, figs[0]]
	cells = [scenario, name]
	for _, key, fmt in COLUMNS:
		values = [f[key] for f in ok if key in f]
		cells.append(fmt % statistics.median(values) if values else "-")
	return cells


def notes(args, results):
	"""What went amiss in single runs, as lines under the table."""
	out = []
	for s in args.scenario:
		for n in args.server:
			for rep, f in enumerate(results[s, n]):
				text = f if isinstance(f, str) else "; ".join(f["notes"])
				if text:
					out.append("%s %s, rep %d: %s" % (s, n, rep + 1, text))
	return out


def print_table(args, results):
	head = ["scenario", "server"] + [c[0] for c in COLUMNS]
	rows = [row(s, n, results[s, n]) for s in args.scenario for n in args.server]
	width = [max(len(r[i]) for r in [head] + rows if len(r) == len(head)) for i in range(len(head))]
	print()
	for r in [head] + rows:
		cells = [c.ljust(w) for c, w in zip(r[:2], width)] + [c.rjust(w) for c, w in zip(r[2:], width[2:])]
		print(" | ".join(cells))
	lines = notes(args, results)
	if lines:
		print("\nnotes:\n  " + "\n  ".join(lines))


# ------------------------------------------------------------------ main

def parse_args():
	p = argparse.ArgumentParser(description="laim's throughput benchmark (the header of this file says more)")
	p.add_argument("--reps", type=int, default=3, help="repetitions (default 3); the table shows medians")
	p.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)")
	p.add_argument("--server", action="append", choices=SERVERS, help="only these (repeatable)")
	p.add_argument("--quick", action="store_true", help="500, 500, 20 and 100 messages instead of 5000, 5000, 200, 1000")
	p.add_argument("--cache", default=CACHE,
		       help="where Postfix and OpenSMTPD are unpacked and the file systems made")
	p.add_argument("--fs", choices=["fresh", "tmpfs", "tmpdir"], default="fresh",
		       help="a new ext4 for each run (default), a new tmpfs (a sync costs nothing), or TMPDIR")
	p.add_argument("--strace", metavar="DIR",
		       help="count laimd's system calls with strace -c into DIR/SCENARIO-SERVER-REP.txt "
		       "(slows laimd: the rates of such a run mean nothing)")
	p.add_argument("--maildir-workers", type=int, metavar="N",
		       help="laim-maildir's instance gets workers: N (default: the maildir type's)")
	args = p.parse_args()
	if args.reps < 1:
		p.error("--reps must be at least 1")
	if args.maildir_workers is not None and not 1 <= args.maildir_workers <= 64:
		p.error("--maildir-workers must be from 1 to 64")
	args.scenario = [s for s in SCENARIOS if s in (args.scenario or SCENARIOS)]
	args.server = [s for s in SERVERS if s in (args.server or SERVERS)]
	return args


def enter_network_namespace():
	"""Runs the script again in a network namespace of its own, with only
	loopback; returns in that run."""
	if os.environ.get(NETNS_MARK) != "1":
		os.environ[NETNS_MARK] = "1"
		os.execvp("unshare", ["unshare", "--net", sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:])
	subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
	interfaces = [name for _, name in socket.if_nameindex()]
	if interfaces != ["lo"]:
		sys.exit("bench.py: expected a network namespace with only lo, got %s" % interfaces)


def describe(args, tools, laimd):
	print("laimd %s; postfix %s (smtp-source, smtp-sink) and opensmtpd %s unpacked in %s" % (
		laimd, tools.postfix_version, tools.opensmtpd_version, args.cache))
	for s in args.scenario:
		sc = SCENARIOS[s]
		print("%s: %d messages of %d KiB over %d session(s), %s" % (
			s, sc.quick if args.quick else sc.messages, sc.size // 1024, sc.sessions,
			"many messages per connection" if sc.reuse else "a connection per message"))
	print("%d repetition(s), servers in turn: %s; %s" % (
		args.reps, ", ".join(args.server),
		{"fresh": "a new ext4 for each run", "tmpfs": "a new tmpfs for each run (no disk: a ceiling)"}.get(
			args.fs, "in " + tempfile.gettempdir())), flush=True)
	if args.maildir_workers and "laim-maildir" in args.server:
		print("laim-maildir's instance: workers: %d" % args.maildir_workers, flush=True)


@contextlib.contextmanager
def drop_group():
	"""The group laimd's laim-drop is setgid to, for the run (see the
	top of this file)."""
	name = os.environ.get("LAIM_DROP_GROUP", "laimdrop")
	if name in (g.gr_name for g in grp.getgrall()):
		yield
		return
	subprocess.run(["groupadd", "--system", name], check=True)
	try:
		yield
	finally:
		subprocess.run(["groupdel", name])


def on_signal(signum, frame):
	print("bench.py: interrupted by signal %d" % signum, file=sys.stderr)
	sys.exit(128 + signum)  # through every finally: the servers are killed, temp dirs removed


def main():
	args = parse_args()
	if os.geteuid() != 0:
		sys.exit("bench.py: run as root (it starts laimd, smtp-sink and OpenSMTPD)")
	try:
		laimd = laimd_path()
	except Fail as e:
		sys.exit("bench.py: %s" % e)
	tools = Tools(args.cache)  # downloads, if needed, before the namespace cuts the network
	enter_network_namespace()
	for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
		signal.signal(sig, on_signal)
	describe(args, tools, laimd)
	with drop_group():
		results = run(args, tools)
	print_table(args, results)


if __name__ == "__main__":
	main()
