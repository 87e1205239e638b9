# AUTH on submission listeners (listen: with auth: required, STARTTLS on
# 127.0.0.1 and implicit TLS on 127.0.0.2): AUTH is offered only under
# TLS, MAIL needs STARTTLS and then AUTH (530), PLAIN and LOGIN with
# smtplib, swaks and a raw client deliver, a wrong password gets 535 after a delay that holds up no other
# session and the third ends the session (421), an unknown mechanism 504,
# the senders file binds MAIL FROM (553 5.7.1), the user reaches the
# Received: header, the handler's Envelope (the probe handler writes it),
# the queue file across a restart, the log and the auth rate-limit key,
# and the users file is re-read on SIGHUP (a broken one keeps the old
# table) and checked by laimd -n, which warns that it mixes methods. The
# root parent checks the passwords (crypt(3)); hashes made here with
# libcrypt (yescrypt, bcrypt) and openssl passwd (sha512crypt,
# sha256crypt). A forged request from the smtp process ends it;
# etc/submission.yml passes laimd -n. A listener whose certificate did
# not load answers STARTTLS, AUTH and MAIL with 454, never a 5xx. The
# guard against guessing across sessions: t_auth_guard.py.
import sys
sys.dont_write_bytecode = True
import base64
import ctypes
import signal
import smtplib
import ssl
import struct
import subprocess
import threading
from harness import *
from peer_certs import Certs

RCPT = "rcpt@test.laim.example"
IMSG_S_AUTH = 700
PASSWORDS = {"alice": "alice pass 1", "bob": "b0b-pass", "carol": "carol-pass", "dave": "dave-pass",
	     "erin": "erin-pass"}
IMPLICIT_HOST = "127.0.0.2"  # the implicit TLS listener: the same port there
SENDERS = ("alice: alice@example.org\n"
	   "bob: bob@example.org, bob+*@example.org, @bob.example\n"
	   "carol: carol@example.org\n"
	   "dave: dave@example.org\n"
	   "erin: erin@example.org\n")


def libcrypt_hash(prefix, password):
	"""A hash from libcrypt itself: yescrypt ($y$) as mkpasswd -m yescrypt
	makes it, or bcrypt ($2b$)."""
	lib = ctypes.CDLL("libcrypt.so.1")
	lib.crypt_gensalt.restype = ctypes.c_char_p
	lib.crypt.restype = ctypes.c_char_p
	setting = lib.crypt_gensalt(prefix.encode(), 0, None, 0)
	check(setting, "crypt_gensalt(%s) failed" % prefix)
	h = lib.crypt(password.encode(), setting)
	check(h and h.startswith(prefix.encode()), "crypt with %r gave %r" % (setting, h))
	return h.decode()


def openssl_passwd(method, password):
	r = subprocess.run(["openssl", "passwd", method, "-stdin"], input=password.encode(), stdout=subprocess.PIPE,
			   check=True)
	return r.stdout.decode().strip()


def write_root_file(path, text):
	with open(path, "w") as f:
		f.write(text)
	os.chown(path, 0, 0)
	os.chmod(path, 0o600)


def users_text(passwords):
	methods = {"alice": "$y$", "bob": "-6", "carol": "-5", "dave": "-6", "erin": "$2b$"}
	lines = ["# submission users, made by t_auth"]
	for user, pw in passwords.items():
		m = methods[user]
		lines.append("%s:%s" % (user, libcrypt_hash(m, pw) if m.startswith("$") else openssl_passwd(m, pw)))
	return "\n".join(lines) + "\n"


def yescrypt_users():
	"""The case's users with yescrypt hashes alone, as etc/submission.yml
	makes them."""
	return "".join("%s:%s\n" % (user, libcrypt_hash("$y$", pw)) for user, pw in PASSWORDS.items())


def plain(user, password):
	return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


class Case:
	def __init__(self):
		self.d = Laimd()
		d = self.d
		d.one_cpu = True  # a row steals the smtp process's channels
		self.certs = Certs(os.path.join(d.dir, "certs"))
		self.users = os.path.join(d.dir, "submit.passwd")
		self.senders = os.path.join(d.dir, "senders")
		write_root_file(self.users, users_text(PASSWORDS))
		write_root_file(self.senders, SENDERS)
		self.probe = d.make_user_dir(os.path.join(d.dir, "probe"))
		self.release = os.path.join(self.probe, "release")
		d.config["listen"] = [{"addr": "127.0.0.1:{port}", "tls": "starttls", "cert": self.certs.cert,
				       "key": self.certs.key, "auth": "required", "users": self.users,
				       "senders": self.senders},
				      {"addr": IMPLICIT_HOST + ":{port}", "tls": "implicit", "cert": self.certs.cert,
				       "key": self.certs.key, "auth": "required", "users": self.users,
				       "senders": self.senders}]
		d.config["handlers"] = {"inbox": {"type": "maildir", "path": d.maildir},
					"probe": {"type": "probe", "path": self.probe, "release": self.release}}
		d.config["routes"] = [{"match": "defer@*", "handlers": ["probe"]},
				      {"match": "*", "handlers": ["inbox", "probe"]}]
		d.config["rate_limits"] = [{"key": "auth", "count": 2, "window": 600}]
		self.ctx = ssl.create_default_context(cafile=self.certs.ca)

	# -- clients

	def tls_session(self, source=None, uid=None):
		"""A raw session after STARTTLS (verified against the test CA) and
		a second EHLO, whose reply it returns with the client; from the
		address source when given, over a socket that uid owns (made with
		that effective uid, as a local user's client) when given."""
		if uid is None:
			c = self.d.smtp(source=source)
		else:
			"localhost".encode("idna")  # its codec loaded as root: the modules may be root's alone
			os.seteuid(uid)
			try:
				c = self.d.smtp(source=source)
			finally:
				os.seteuid(0)
		c.ehlo()
		c.cmd("STARTTLS", 220)
		check_eq(c.buf, b"", "bytes after the 220 to STARTTLS")
		c.sock = self.ctx.wrap_socket(c.sock, server_hostname="localhost")
		return c, c.ehlo()

	def system_tls_policy(self):
		"""Under an OpenSSL system policy of TLS 1.3 only (MinProtocol in
		OPENSSL_CONF), a client of TLS 1.2 at most fails its handshake,
		after STARTTLS and on implicit TLS; TLS 1.3 goes on. laim's own
		floor, TLS 1.2, raises a policy's minimum, never lowers it."""
		d = self.d
		tls12 = ssl.create_default_context(cafile=self.certs.ca)
		tls12.maximum_version = ssl.TLSVersion.TLSv1_2
		try:
			restart_under_openssl_policy(d, "MinProtocol = TLSv1.3")
			for implicit in (False, True):
				c = d.smtp(host=IMPLICIT_HOST, greet=False) if implicit else d.smtp()
				with c:
					if not implicit:
						c.ehlo()
						c.cmd("STARTTLS", 220)
					try:
						tls12.wrap_socket(c.sock, server_hostname="localhost")
						refused = None
					except (ssl.SSLError, OSError) as e:
						refused = e
				check(refused is not None, "a TLS 1.2 handshake (%s) under MinProtocol = TLSv1.3" %
				      ("implicit" if implicit else "STARTTLS"))
			c, ehlo = self.tls_session()
			with c:
				check_eq(c.sock.version(), "TLSv1.3", "the version of a default client")
		finally:
			d.stop()
			d.start()

	def implicit_tls(self):
		"""The implicit TLS listener (listen[1]): AUTH offered from the
		first EHLO, MAIL needs it, erin (bcrypt) delivers."""
		c = self.d.smtp(host=IMPLICIT_HOST, greet=False)
		with c:
			c.sock = self.ctx.wrap_socket(c.sock, server_hostname="localhost")
			c.expect(220)
			ehlo = c.ehlo()
			check("250-AUTH PLAIN LOGIN" in ehlo.lines and not any("STARTTLS" in l for l in ehlo.lines),
			      "EHLO on implicit TLS: %r" % ehlo)
			check_eq(c.cmd("MAIL FROM:<erin@example.org>").text, "530 5.7.0 Authentication required",
				 "MAIL before AUTH on implicit TLS")
			c.cmd("AUTH PLAIN " + plain("erin", PASSWORDS["erin"]), 235)
			qid = c_transaction(c, "erin@example.org", [RCPT], simple_message("implicit"))
		self.delivered_as(qid, "erin")

	def smtplib_session(self):
		s = smtplib.SMTP("127.0.0.1", self.d.port, timeout=10)
		s.starttls(context=self.ctx)
		s.ehlo("client.example")
		return s

	def delivered_as(self, qid, user, rcpt=RCPT):
		"""qid reached the probe with auth=user in its Envelope, was logged
		with auth=user, and (for rcpt@) its Maildir copy's Received: names
		the user."""
		d = self.d
		d.wait_log(r"%s: from=<[^>]*>, size=\d+, nrcpt=1, client=127\.0\.0\.1, auth=%s$" % (qid, user), since=0)
		line = "%s %s auth=%s" % (qid, rcpt, user)
		wait_for(lambda: line in self.deliveries(), 15, "probe delivery %r" % line)
		if rcpt != RCPT:
			return
		d.wait_log(r"%s: to=<%s>, handler=inbox, status=delivered" % (qid, re.escape(rcpt)), since=0)
		copies = d.delivered_copies(qid)
		rec = copies[rcpt][1]
		check(re.match(r"Received: from client\.example \(127\.0\.0\.1\) \(authenticated as %s\) by %s \(laim\) "
			       r"with ESMTPSA id %s for <%s>; " % (user, re.escape(HOSTNAME), qid, re.escape(rcpt)), rec),
		      "Received: of %s: %r" % (qid, rec))

	def deliveries(self):
		try:
			with open(os.path.join(self.probe, "deliveries")) as f:
				return f.read().splitlines()
		except FileNotFoundError:
			return []

	# -- rows

	def before_tls(self):
		with self.d.smtp() as c:
			ehlo = c.ehlo()
			check("STARTTLS" in ehlo.lines[-1] or any("STARTTLS" in l for l in ehlo.lines),
			      "no STARTTLS offered: %r" % ehlo)
			check(not any("AUTH" in l for l in ehlo.lines), "AUTH offered before TLS: %r" % ehlo)
			check_eq(c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"])).text,
				 "503 5.5.1 Error: authentication not enabled", "AUTH before TLS")
			check_eq(c.cmd("MAIL FROM:<alice@example.org>").text,
				 "530 5.7.0 Must issue a STARTTLS command first", "MAIL before STARTTLS")
		check(not self.d.search_log(r"smtp: AUTH"), "an AUTH before TLS was logged as tried")

	def after_tls(self):
		c, ehlo = self.tls_session()
		with c:
			check("250-AUTH PLAIN LOGIN" in ehlo.lines, "AUTH PLAIN LOGIN not offered under TLS: %r" % ehlo)
			check(not any("STARTTLS" in l for l in ehlo.lines), "STARTTLS offered again: %r" % ehlo)
			check_eq(c.cmd("MAIL FROM:<alice@example.org>").text, "530 5.7.0 Authentication required",
				 "MAIL before AUTH")
			check_eq(c.cmd("AUTH CRAM-MD5").text, "504 5.5.4 Unrecognized authentication type", "AUTH CRAM-MD5")
			check_eq(c.cmd("AUTH PLAIN").text, "334 ", "AUTH PLAIN without a response")
			check_eq(c.cmd("*").text, "501 5.0.0 Authentication cancelled", "* after 334")
			check_eq(c.cmd("AUTH PLAIN not*base64").text, "501 5.5.2 Cannot decode response", "bad base64")
			# A reply other than 334 ends the exchange: the next line is a
			# command again, not a credential.
			for long_line in ("x" * 600, "x" * 5000):
				check_eq(c.cmd("AUTH LOGIN").text, "334 VXNlcm5hbWU6", "AUTH LOGIN")
				check_eq(c.cmd(long_line).text, "500 5.5.2 Line too long", "a %d-byte answer" % len(long_line))
				check_eq(c.cmd("NOOP").text, "250 2.0.0 Ok", "NOOP after the 500")

	def smtplib_plain_and_login(self):
		msg = simple_message("smtplib auth").decode()
		for how in ("PLAIN", "LOGIN"):
			with self.smtplib_session() as s:
				check("PLAIN" in s.esmtp_features.get("auth", "") and "LOGIN" in s.esmtp_features["auth"],
				      "AUTH after STARTTLS: %r" % s.esmtp_features)
				s.user, s.password = "alice", PASSWORDS["alice"]
				# PLAIN answers the 334 (no initial response); LOGIN sends the
				# user name with the command, the password after 334.
				if how == "PLAIN":
					code, text = s.auth("PLAIN", s.auth_plain, initial_response_ok=False)
				else:
					code, text = s.auth("LOGIN", s.auth_login)
				check_eq((code, text), (235, b"2.7.0 Authentication successful"), "AUTH %s as alice" % how)
				mark = self.d.mark()
				s.sendmail("alice@example.org", [RCPT], msg)
			m = self.d.wait_log(r"(%s): from=<alice@example\.org>" % QID_RE, since=mark)
			self.delivered_as(m.group(1), "alice")
		check(len(self.d.findall_log(r"smtp: AUTH as alice from 127\.0\.0\.1$", since=0)) >= 2,
		      "no 'smtp: AUTH as alice from 127.0.0.1' lines")

	def mail_auth_param(self):
		"""MAIL's AUTH= parameter (RFC 4954 5), as Postfix's client and
		Office 365 send it after AUTH: taken and ignored, also on a MAIL
		line 500 octets longer than 512; one that is not xtext gets 501."""
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("erin", PASSWORDS["erin"]), 235)
			for param in ("AUTH=<>", "AUTH=erin+2Bx@example.org", "AUTH=%s@example.org" % ("e" * 963)):
				c.cmd("MAIL FROM:<erin@example.org> " + param, 250)
				c.cmd("RSET", 250)
			check_eq(c.cmd("MAIL FROM:<erin@example.org> AUTH=erin=x").text, "501 5.5.4 Syntax error in parameters",
				 "MAIL with AUTH= not xtext")
		with self.smtplib_session() as s:
			s.login("erin", PASSWORDS["erin"])
			mark = self.d.mark()
			s.sendmail("erin@example.org", [RCPT], simple_message("AUTH= on MAIL").decode(),
				   mail_options=["AUTH=erin@example.org"])
		m = self.d.wait_log(r"(%s): from=<erin@example\.org>" % QID_RE, since=mark)
		self.delivered_as(m.group(1), "erin")

	def swaks_plain_and_login(self):
		for mech in ("PLAIN", "LOGIN"):
			mark = self.d.mark()
			r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.d.port, "--tls", "--tls-verify",
					    "--tls-ca-path", self.certs.ca, "--tls-sni", "localhost", "-a", mech,
					    "-au", "dave", "-ap", PASSWORDS["dave"], "--from", "dave@example.org",
					    "--to", RCPT, "--helo", "client.example", "--h-Subject", "swaks " + mech],
					   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
			out = r.stdout.decode(errors="replace")
			check(r.returncode == 0 and "235 2.7.0 Authentication successful" in out,
			      "swaks -a %s: exit %d: %s" % (mech, r.returncode, out[-1500:]))
			m = self.d.wait_log(r"(%s): from=<dave@example\.org>" % QID_RE, since=mark)
			self.delivered_as(m.group(1), "dave")

	def wrong_password(self):
		"""Three failures, each 535 after 1 to 3 s, while another session is
		served at once; the third ends the session."""
		c, _ = self.tls_session()
		other = self.d.smtp()
		blobs = [plain("alice", "wrong %d" % n) for n in (1, 2, 3)]
		with c, other:
			for n in (1, 2, 3):
				t0 = time.monotonic()
				c.send("AUTH PLAIN %s\r\n" % blobs[n - 1])
				if n == 1:
					# Once the parent said no (a check takes some 15 ms), another
					# session goes on during the delay: no sleep in the smtp process.
					time.sleep(0.5)
					t1 = time.monotonic()
					other.ehlo()
					check(time.monotonic() - t1 < 0.3, "EHLO of another session during the delay waited "
					      "%.2fs" % (time.monotonic() - t1))
				r = c.reply(timeout=10)
				took = time.monotonic() - t0
				check_eq(r.text, "535 5.7.8 Authentication credentials invalid", "wrong password %d" % n)
				check(1.0 <= took <= 4.0, "the 535 of failure %d took %.2fs, not 1 to 3 s" % (n, took))
				self.d.wait_log(r"smtp: AUTH failed for user=alice from 127\.0\.0\.1 \(%d/3\)$" % n, since=0)
			r = c.reply()
			check(r.text.startswith("421 4.7.0 ") and "too many failed authentications" in r.text,
			      "after the third failure: %r" % r)
			check(c.wait_closed(5), "the session did not end after three failures")
		for secret in blobs + ["wrong 1", "wrong 2", "wrong 3", PASSWORDS["alice"]]:
			check(secret not in self.d.log(0), "%r reached the log" % secret)

	def flooded_failure(self):
		"""Replies piled up unread (OpenSSL's write once wanted the socket
		writable), then a failed AUTH with commands behind it: the smtp
		process waits out the delay without spinning on EPOLLOUT."""
		c, _ = self.tls_session()
		smtp = self.d.child("smtp")
		payload = b"NOOP\r\n" * 400000 + b"AUTH PLAIN " + plain("alice", "wrong").encode() + b"\r\n" + \
			b"NOOP\r\n" * 2000
		writer = threading.Thread(target=c.sock.sendall, args=(payload,))
		with c:
			writer.start()
			time.sleep(3)
			c.sock.settimeout(10)
			tail, before, failed = b"", None, False
			while not failed:  # the NOOPs' replies, then the delayed 535
				chunk = c.sock.recv(65536)
				check(chunk, "the session ended before the 535")
				failed = b"535 " in tail + chunk
				tail = (tail + chunk)[-8:]
				now = (cpu_seconds(smtp), time.monotonic())
				if not failed:
					before = now
			writer.join(10)
		check(before, "no reply before the 535")
		used, waited = now[0] - before[0], now[1] - before[1]
		check(used < 0.3 * waited + 0.2, "the smtp process used %.2fs of CPU in the %.1fs before the 535"
		      % (used, waited))

	def certificate_not_loaded(self):
		"""The smtp process refused the listener's certificate (a test
		seam): STARTTLS is still offered and gets 454, as do AUTH and MAIL
		before TLS; a fault of the server is never a client's 5xx."""
		d = self.d
		laimd = d.laimd
		d.stop()
		d.wrap(setup="export LAIM_TEST_SMTP_REFUSE_TLS=start")
		try:
			d.start()
			d.wait_log(r"smtp: listen\[0\] serves no TLS \(STARTTLS gets 454\): TLS context: refused for the test$")
			with d.smtp() as c:
				ehlo = c.ehlo()
				check(any("STARTTLS" in l for l in ehlo.lines), "no STARTTLS offered: %r" % ehlo)
				unavailable = "454 4.7.0 TLS not available due to temporary reason"
				check_eq(c.cmd("MAIL FROM:<alice@example.org>").text, unavailable, "MAIL without a certificate")
				check_eq(c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"])).text, unavailable,
					 "AUTH without a certificate")
				check_eq(c.cmd("STARTTLS").text, unavailable, "STARTTLS without a certificate")
				check_eq(c.cmd("NOOP").text, "250 2.0.0 Ok", "NOOP after the 454")
		finally:
			d.stop()
			d.laimd = laimd
			d.start()

	def senders_bound(self):
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 235)
			for ok in ("bob@example.org", "bob+lists@example.org", "anyone@bob.example", ""):
				c.cmd("MAIL FROM:<%s>" % ok, 250)
				c.cmd("RSET", 250)
			for bad in ("alice@example.org", "bob@example.org.evil", "bob@sub.bob.example.net"):
				check_eq(c.cmd("MAIL FROM:<%s>" % bad).text, "553 5.7.1 <%s>: sender not owned by user bob" % bad,
					 "MAIL FROM:<%s> as bob" % bad)

	def rate_limit_per_user(self):
		"""key: auth, count 2: carol's third message waits, bob's goes;
		laimctl shows auth:carol, and resetting it lets her in."""
		for n in range(2):
			c, _ = self.tls_session()
			with c:
				c.cmd("AUTH PLAIN " + plain("carol", PASSWORDS["carol"]), 235)
				c_transaction(c, "carol@example.org", [RCPT], simple_message("carol %d" % n))
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("carol", PASSWORDS["carol"]), 235)
			r = c.cmd("MAIL FROM:<carol@example.org>")
			check(r.code == 451 and r.text.startswith("451 4.7.1 ") and "user carol" in r.text,
			      "carol's third MAIL: %r" % r)
			r = self.d.laimctl(["show", "limits"])
			check_ran(r)
			row = [l.split() for l in r.stdout.splitlines() if l.startswith("auth:carol ")]
			check(row and row[0][1] == "2/2" and row[0][-2:] == ["user", "carol"],
			      "show limits on auth:carol:\n%s" % r.stdout)
			r = self.d.laimctl(["reset-limit", "auth:carol"])
			check_ran(r)
			check_eq(r.stdout, "auth:carol: rate limit reset\n", "reset-limit auth:carol")
			c.cmd("MAIL FROM:<carol@example.org>", 250)
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH LOGIN " + base64.b64encode(b"bob").decode(), 334)
			c.cmd(base64.b64encode(PASSWORDS["bob"].encode()).decode(), 235)
			qid = c_transaction(c, "bob@example.org", [RCPT], simple_message("bob"))
		self.delivered_as(qid, "bob")

	def queue_file_survives_restart(self):
		"""A deferred message keeps its user in queue/ID and across a
		restart of laimd."""
		d = self.d
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 235)
			qid = c_transaction(c, "", ["defer@test.laim.example"], simple_message("deferred"))
		d.wait_log(r"%s: to=<defer@test\.laim\.example>, handler=probe, status=deferred" % qid, since=0)
		with open(os.path.join(d.spool, "queue", qid), "rb") as f:
			header = f.read().split(b"\n\n", 1)[0].split(b"\n")
		check(b"auth bob" in header, "queue/%s header has no auth line: %r" % (qid, header))
		check_eq(d.stop(), 0, "laimd exit status at SIGTERM")
		d.start()
		open(self.release, "w").close()
		self.delivered_as(qid, "bob", rcpt="defer@test.laim.example")

	def sighup_rereads_users(self):
		d = self.d
		good = open(self.users).read()
		write_root_file(self.users, good + "eve:plaintext\n")
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"%s:\d+: listen\[0\]\.users: .*%s:\d+: user eve: not a yescrypt.*keeping the previous "
			   r"configuration" % (re.escape(d.confpath), re.escape(self.users)), since=mark)
		# laimd -n names the config's line, the users file and its line.
		r = d.check_config(d.confpath)
		err = r.stderr.decode()
		check(r.returncode == 1 and re.search(r"%s:\d+: listen\[0\]\.users: %s:%d: user eve: not a yescrypt" %
						      (re.escape(d.confpath), re.escape(self.users), good.count("\n") + 1), err),
		      "laimd -n on a broken users file: %r" % r)
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]), 235)
		# A valid new file replaces the table: alice's new password works,
		# the old one no longer.
		renewed = dict(PASSWORDS, alice="renewed alice")
		write_root_file(self.users, users_text(renewed))
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=mark)
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("alice", "renewed alice"), 235)
		c, _ = self.tls_session()
		with c:
			check_eq(c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]), timeout=10).code, 535,
				 "alice's old password after the reload")

	def mixed_methods_warned(self):
		"""The case's users file mixes four methods: laimd -n and the start
		warn, naming the file and the settings; one method does not."""
		d = self.d
		warning = (r"laimd: warning: %s: hashes of 4 settings \(\$2b\$\d+\$, \$5\$, \$6\$, \$y\$j9T\$\): a wrong "
			   r"password for one user answers faster than for another or for an unknown user: make every "
			   r"hash with one method$" % re.escape(self.users))
		check(len(d.findall_log(warning, since=0)) >= 1, "no warning at start: %r" % d.log(0)[-2000:])
		r = d.check_config(d.confpath)
		err = r.stderr.decode()
		check(r.returncode == 0 and re.search(warning, err, re.M), "laimd -n on mixed hashes: %r" % r)
		good = open(self.users).read()
		write_root_file(self.users, yescrypt_users())
		r = d.check_config(d.confpath)
		write_root_file(self.users, good)
		check(r.returncode == 0 and b"warning" not in r.stderr, "laimd -n on yescrypt hashes: %r" % r)

	def users_file_mistakes(self):
		"""laimd -n names a carriage return or a space after a hash (a
		valid hash otherwise) and warns about a file without users."""
		d = self.d
		good = open(self.users).read()
		try:
			for text, what in ((good.replace("\n", "\r\n"), "the hash ends with a carriage return"),
					   (good.replace("\n", " \n"), "a space after the hash")):
				write_root_file(self.users, text)
				r = d.check_config(d.confpath)
				check(r.returncode == 1 and re.search(r"listen\[0\]\.users: %s:2: user alice: %s" %
								      (re.escape(self.users), what), r.stderr.decode()),
				      "laimd -n on a users file with %s: %r" % (what, r))
			for text in ("", "# nobody yet\n"):
				write_root_file(self.users, text)
				write_root_file(self.senders, "")
				r = d.check_config(d.confpath)
				check(r.returncode == 0 and r.stderr.decode() ==
				      "laimd: warning: %s: no users: nobody can log in on its listener\n" % self.users,
				      "laimd -n on a users file %r: %r" % (text, r))
		finally:
			write_root_file(self.users, good)
			write_root_file(self.senders, SENDERS)

	def forged_request(self):
		"""A subverted smtp process that asks about a listener without
		auth, or sends a request that does not decode, is ended by the
		parent and restarted; AUTH works again."""
		d = self.d
		for payload, what in ((struct.pack("<I", 5) + struct.pack("<I", 5) + b"alice" + struct.pack("<I", 1) + b"x",
				       "listener 5"), (b"bad", "malformed")):
			mark = d.mark()
			pid = d.child("smtp")
			# smtp's channels by age: the sibling's, the parent's, the key channel.
			chan = steal_seqpacket(pid, lambda found: sorted(found)[1])
			chan.send(struct.pack("<IIII", IMSG_S_AUTH, 16 + len(payload), 1, 0) + payload)
			d.wait_log(r"smtp process broke the parent channel's protocol \(bad AUTH request\): ending it",
				   since=mark)
			d.wait_children(old={"smtp": pid})
			chan.close()
			c, _ = self.tls_session()
			with c:
				check_eq(c.cmd("AUTH PLAIN " + plain("dave", PASSWORDS["dave"])).code, 235,
					 "AUTH after the smtp process that sent a forged request (%s) was replaced" % what)

	def example_config(self):
		"""etc/submission.yml passes laimd -n, without a warning, with the
		case's files (its users' hashes made as it says: yescrypt)."""
		secret = os.path.join(self.d.dir, "relay.secret")
		write_root_file(secret, "relay:password\n")
		users = os.path.join(self.d.dir, "submit-yescrypt.passwd")
		write_root_file(users, yescrypt_users())
		self.d.check_example("submission", {
			"/etc/letsencrypt/live/mail.example.org/fullchain.pem": self.certs.cert,
			"/etc/letsencrypt/live/mail.example.org/privkey.pem": self.certs.key,
			"/etc/laim/submit.passwd": users, "/etc/laim/senders": self.senders,
			"/etc/laim/relay.secret": secret})


def main():
	t = Case()
	t.d.start()
	run_rows([
		("before STARTTLS: no AUTH, 503, 530", t.before_tls),
		("under TLS: AUTH PLAIN LOGIN, 530 before AUTH, 504, 501, 500 ends it", t.after_tls),
		("smtplib PLAIN and LOGIN deliver as alice", t.smtplib_plain_and_login),
		("swaks PLAIN and LOGIN deliver as dave", t.swaks_plain_and_login),
		("implicit TLS: AUTH, 530, erin (bcrypt) delivers", t.implicit_tls),
		("OpenSSL's system policy of TLS 1.3 only holds", t.system_tls_policy),
		("MAIL's AUTH= parameter after AUTH is taken", t.mail_auth_param),
		("wrong password: 535 after 1-3 s, 421 after 3", t.wrong_password),
		("a failed AUTH behind unread replies: no busy wait", t.flooded_failure),
		("senders file binds MAIL FROM", t.senders_bound),
		("rate limit key auth counts per user", t.rate_limit_per_user),
		("queue file keeps the user across a restart", t.queue_file_survives_restart),
		("SIGHUP re-reads the users file", t.sighup_rereads_users),
		("a users file of mixed methods is warned about", t.mixed_methods_warned),
		("laimd -n: a CR or space after a hash, a file without users", t.users_file_mistakes),
		("a forged AUTH request ends the smtp process", t.forged_request),
		("etc/submission.yml passes laimd -n", t.example_config),
		("no certificate: 454 to STARTTLS, AUTH and MAIL", t.certificate_not_loaded),
	])


if __name__ == "__main__":
	run(main)
