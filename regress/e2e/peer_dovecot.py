# A private Dovecot (Debian's dovecot-core, and dovecot-lmtpd for LMTP)
# for the cases of the handlers that deliver into it (lmtp, dovecot-lda):
# its own dovecot.conf, users file, sockets, state and log in a temporary
# directory, an LMTP unix socket and a 127.0.0.1 port, users with options
# (a quota, a home the mail user cannot write). It runs as root, delivers
# as mail_user (nobody), and is stopped on every way out of the case
# (atexit, which a failing or interrupted case passes through too).
#
#   dc = Dovecot("lmtp")
#   dc.add_user("alice")
#   dc.add_user("carol", quota="1B")          # 552 5.2.2 on delivery
#   dc.add_user("dave", home_writable=False)  # 451 4.2.0 until fix_home()
#   dc.start()
#   ... dc.socket, dc.port, dc.maildir("alice"), dc.messages("alice")
#   dc.stop()
#
# Nothing here is shared with the system's Dovecot: a new directory per
# instance (no stale base_dir), its own instance_name, state_dir and log.

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from harness import Fail, _port_free, _port_for, maildir_files, wait_for

DOVECOT = "/usr/sbin/dovecot"

_running = []


@atexit.register
def _stop_all():
	"""A case that did not reach cleanup() failed: its instances stop, and
	their directories stay for a look, as laimd's do."""
	for dc in list(_running):
		dc.stop()
		print("dovecot dir kept: %s" % dc.dir)


class Dovecot:
	"""One private Dovecot instance in its own directory DIR:
	DIR/dovecot.conf, DIR/users (passwd-file passdb and userdb),
	DIR/run (base_dir: the LMTP socket DIR/run/lmtp), DIR/state,
	DIR/dovecot.log, DIR/mail/USER (the users' homes, Maildir in
	~/Maildir)."""

	def __init__(self, name="dovecot", protocols=("lmtp",), mail_user="nobody", username_format=None):
		if not os.access(DOVECOT, os.X_OK):
			raise Fail("%s is missing: apt-get install dovecot-core dovecot-lmtpd" % DOVECOT)
		self.name = name
		self.protocols = protocols
		self.mail_user = pwd.getpwnam(mail_user)
		self.username_format = username_format  # auth_username_format; Dovecot's default is %Lu
		self.dir = tempfile.mkdtemp(prefix="laim-dovecot-%s-" % name)
		os.chmod(self.dir, 0o755)
		self.conf = os.path.join(self.dir, "dovecot.conf")
		self.base_dir = os.path.join(self.dir, "run")
		self.socket = os.path.join(self.base_dir, "lmtp")
		self.logpath = os.path.join(self.dir, "dovecot.log")
		self.users = {}  # name -> users file line
		self.port = None
		self.running = False
		os.mkdir(os.path.join(self.dir, "mail"), 0o755)

	# -- users

	def home(self, user):
		return os.path.join(self.dir, "mail", user)

	def maildir(self, user):
		return os.path.join(self.home(user), "Maildir")

	def add_user(self, user, quota=None, home_writable=True):
		"""A user of the passwd-file userdb, home DIR/mail/USER. quota: a
		storage limit as Dovecot writes it ("1B", "10M"). A home the mail
		user cannot write (root's, mode 0755) makes deliveries to USER
		fail with 451 4.2.0 until fix_home(USER)."""
		home = self.home(user)
		os.mkdir(home)
		if home_writable:
			self.fix_home(user)
		else:
			os.chown(home, 0, 0)
			os.chmod(home, 0o755)
		extra = "userdb_quota_rule=*:storage=%s" % quota if quota else ""
		self.users[user] = "%s:::::%s::%s" % (user, home, extra)
		if self.running:
			self._write_users()
		return home

	def fix_home(self, user):
		"""Hands USER's home to the mail user, mode 0700."""
		os.chown(self.home(user), self.mail_user.pw_uid, self.mail_user.pw_gid)
		os.chmod(self.home(user), 0o700)

	def messages(self, user):
		"""The files in USER's Maildir (new/ and cur/), sorted by name,
		as bytes."""
		out = []
		for path in maildir_files(self.maildir(user)):
			with open(path, "rb") as f:
				out.append(f.read())
		return out

	# -- configuration

	def _write_users(self):
		path = os.path.join(self.dir, "users")
		with open(path, "w") as f:
			f.write("".join(line + "\n" for line in self.users.values()))
		os.chmod(path, 0o644)

	def write_config(self):
		"""Writes DIR/dovecot.conf and DIR/users (start() does; a case
		that runs dovecot-lda -c DIR/dovecot.conf needs only this)."""
		if "lmtp" in self.protocols and not self.port:
			self.port = self._pick_port()
		self._write_users()
		with open(self.conf, "w") as f:
			f.write(self.config_text())
		os.chmod(self.conf, 0o644)

	def config_text(self):
		"""dovecot.conf: the instance's own directories, passwd-file
		users, Maildirs, the quota plugin when a user has a quota, and the
		LMTP listeners (a unix socket others may use, a 127.0.0.1 port)."""
		quota = any("quota_rule" in line for line in self.users.values())
		lines = [
			"protocols = %s" % (" ".join(self.protocols) or "none"),
			"instance_name = %s" % os.path.basename(self.dir),
			"base_dir = %s" % self.base_dir,
			"state_dir = %s" % os.path.join(self.dir, "state"),
			"log_path = %s" % self.logpath,
			"ssl = no",
			"listen = 127.0.0.1",
			"mail_location = maildir:~/Maildir",
			"mail_uid = %d" % self.mail_user.pw_uid,
			"mail_gid = %d" % self.mail_user.pw_gid,
			"passdb {\n  driver = passwd-file\n  args = %s\n}" % os.path.join(self.dir, "users"),
			"userdb {\n  driver = passwd-file\n  args = %s\n}" % os.path.join(self.dir, "users"),
			"mail_plugins = $mail_plugins quota" if quota else "",
			"plugin {\n  quota = maildir:User quota\n}" if quota else "",
		]
		if "lmtp" in self.protocols:
			lines.append("service lmtp {\n  unix_listener lmtp {\n    mode = 0666\n  }\n"
				     "  inet_listener lmtp {\n    address = 127.0.0.1\n    port = %d\n  }\n}" % self.port)
		if self.username_format:
			lines.append("auth_username_format = %s" % self.username_format)
		return "\n".join(l for l in lines if l) + "\n"

	# -- process control

	def _dovecot(self, *args):
		"""Runs dovecot -c CONF ARGS; returns (exit status, its output).
		The output goes through a file: the daemon it starts keeps a pipe
		open."""
		out = os.path.join(self.dir, "dovecot.out")
		with open(out, "wb") as f:
			r = subprocess.run([DOVECOT, "-c", self.conf] + list(args), stdin=subprocess.DEVNULL,
					   stdout=f, stderr=subprocess.STDOUT, timeout=20)
		with open(out, errors="replace") as f:
			return r.returncode, f.read()

	def _pick_port(self):
		for attempt in range(16):
			port = _port_for("dovecot-" + self.dir, attempt)
			if _port_free(port):
				return port
		raise Fail("no free port for Dovecot")

	def start(self, timeout=10):
		"""Writes the config and starts Dovecot; returns once its LMTP
		socket and port take connections."""
		self.write_config()
		status, out = self._dovecot()
		if status != 0:
			raise Fail("dovecot -c %s: exit %d: %s" % (self.conf, status, out))
		self.running = True
		_running.append(self)
		if "lmtp" in self.protocols:
			wait_for(self._ready, timeout, "Dovecot's LMTP socket %s and 127.0.0.1:%d" % (self.socket, self.port))
		return self

	def _ready(self):
		import socket
		try:
			with socket.socket(socket.AF_UNIX) as s:
				s.connect(self.socket)
			with socket.create_connection(("127.0.0.1", self.port), timeout=1):
				pass
			return True
		except OSError:
			return False

	def stop(self):
		"""Stops the instance (its master and every process it started)
		and waits until its master.pid is gone."""
		if not self.running:
			return
		self.running = False
		if self in _running:
			_running.remove(self)
		pidfile = os.path.join(self.base_dir, "master.pid")
		self._dovecot("stop")
		end = time.monotonic() + 10
		while os.path.exists(pidfile) and time.monotonic() < end:
			time.sleep(0.05)

	def log(self):
		try:
			with open(self.logpath, errors="replace") as f:
				return f.read()
		except FileNotFoundError:
			return ""

	def cleanup(self, keep_dir=False):
		self.stop()
		if keep_dir:
			print("dovecot dir kept: %s" % self.dir)
		else:
			shutil.rmtree(self.dir, ignore_errors=True)
