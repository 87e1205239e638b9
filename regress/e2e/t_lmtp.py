# The lmtp handler against real LMTP servers: Debian's Dovecot (a private
# instance, regress/e2e/peer_dovecot.py) on its unix socket and on a
# 127.0.0.1 port, and aiosmtpd's LMTP class (no PIPELINING) and SMTP
# class (no LHLO). One message to four Dovecot users is settled per
# recipient after DATA: two delivered (byte for byte in Dovecot's
# Maildir, one through /etc/aliases), the quota user failed with
# Dovecot's 552, the user whose home is unwritable deferred with 451 and
# delivered alone after the fix and `laimctl flush`, the others never
# twice. A 550 at RCPT fails that recipient only; rcpt_to: user keeps
# another domain's address whole; verify_recipients answers 550 and 451
# at laim's own RCPT, also when the server is down or hangs, and 451 when
# a server (a scripted one, peer_scripted.py) refuses MAIL FROM:<>; a
# server that closes after the message's end defers, saying the message
# may have been delivered, and one that answers DATA with 250 defers
# (only a 354 sends the message); connection
# errors defer with what to fix (a socket laim may not open: its owner,
# mode and Dovecot's unix_listener setting; a socket whose listen queue
# is full: that it is full); laimctl test says LHLO was answered.
import sys
sys.dont_write_bytecode = True
import atexit
import socket
import subprocess
import time
import harness
from harness import *
from peer_dovecot import Dovecot
from peer_scripted import ScriptedPeer

H = "test.laim.example"
LHLO = "laim-lmtp.example"
SENDER = "sender@client.example"

# A real LMTP server without PIPELINING (aiosmtpd's LMTP class) and a real
# SMTP server that does not know LHLO, for Debian's python3 with
# python3-aiosmtpd. Each message is appended to OUT as
# "RCPT,RCPT LENGTH\n" and the bytes. Runs until stdin closes.
AIOSMTPD = r"""
import sys
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

lmtp_port, smtp_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

class Store:
	async def handle_RCPT(self, server, session, envelope, address, options):
		if address.startswith("unknown@"):
			return "550 5.1.1 <%s> no such user here" % address
		envelope.rcpt_tos.append(address)
		return "250 2.1.5 OK"

	async def handle_DATA(self, server, session, envelope):
		data = envelope.original_content
		with open(out, "ab") as f:
			f.write(("%s %d\n" % (",".join(envelope.rcpt_tos), len(data))).encode() + data)
		return "250 2.0.0 stored for %s" % ",".join(envelope.rcpt_tos)

class Server(Controller):
	def __init__(self, cls, port):
		self.cls = cls
		super().__init__(Store(), hostname="127.0.0.1", port=port)

	def factory(self):
		return self.cls(self.handler)

servers = [Server(LMTP, lmtp_port), Server(SMTP, smtp_port)]
for s in servers:
	s.start()
print("ready", flush=True)
sys.stdin.read()
for s in servers:
	s.stop()
"""


def free_port(name):
	"""A free 127.0.0.1 port, chosen as the harness chooses laimd's."""
	for attempt in range(16):
		port = harness._port_for("lmtp-" + name, attempt)
		if harness._port_free(port):
			return port
	raise Fail("no free port for %s" % name)


def start_aiosmtpd(directory, lmtp_port, smtp_port):
	"""Starts the two aiosmtpd servers with /usr/bin/python3 (Debian's
	python3-aiosmtpd); returns (process, the file they store into)."""
	script = os.path.join(directory, "aiosmtpd_peer.py")
	with open(script, "w") as f:
		f.write(AIOSMTPD)
	out = os.path.join(directory, "aiosmtpd.out")
	p = subprocess.Popen(["/usr/bin/python3", script, str(lmtp_port), str(smtp_port), out],
			     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	atexit.register(lambda: (p.kill(), p.wait()))
	line = p.stdout.readline()
	check(line == b"ready\n", "aiosmtpd did not start: %r %r" % (line, p.stdout.read(2000) if p.poll() is not None else b""))
	return p, out


def laim_copy(rest, qid, sent, what):
	"""rest (CRLF) is laim's Received: header naming qid, then sent byte for
	byte."""
	check(rest.startswith(b"Received: "), "%s: does not start with laim's Received: %r" % (what, rest[:200]))
	fields, body = header_fields(rest)
	received = fields[0]
	check(re.search(rb"\bid %s\b" % qid.encode(), received), "%s: laim's Received: does not name %s: %r" %
	      (what, qid, received))
	check_eq(b"".join(fields[1:]) + body, sent, "%s: the message after laim's Received:" % what)


def check_dovecot_copy(data, qid, sent, rcpt, single, what, sender=SENDER):
	"""What Dovecot stored: exactly the message laim sent, with LF line ends,
	after the headers Dovecot adds: Return-Path: <sender>, then, when the
	transaction had this one recipient, Delivered-To: RCPT, then its
	Received: "from LHLO ([127.0.0.1]) by HOST with LMTP id ID
	(envelope-from <sender>)", the address only over TCP, with "for <RCPT>"
	for a single recipient, and the date."""
	s, r, l = re.escape(sender.encode()), re.escape(rcpt.encode()), re.escape(LHLO.encode())
	added = (rb"Return-Path: <%s>\n" % s + (rb"Delivered-To: %s\n" % r if single else b"") +
		 rb"Received: from %s(?: \(\[127\.0\.0\.1\]\))?\n\tby \S+ with LMTP\n\tid \S+\n\t\(envelope-from <%s>\)" % (l, s) +
		 (rb"\n\tfor <%s>" % r if single else b"") + rb"; [^\n]+\n")
	m = re.match(added, data)
	check(m, "%s: Dovecot's copy does not start with %r: %r" % (what, added, data[:400]))
	check(b"\r" not in data, "%s: Dovecot stores LF line ends: %r" % (what, data[:200]))
	laim_copy(data[m.end():].replace(b"\n", b"\r\n"), qid, sent, what)


def message(tag):
	"""A message whose body has lines that dot-stuffing must carry: a lone
	dot, and lines starting with one and with two."""
	return ("From: %s\r\nTo: users@%s\r\nSubject: %s\r\n\r\nbody of %s\r\n.\r\n.leading dot\r\n"
		"..two dots\r\nend\r\n" % (SENDER, H, tag, tag)).encode()


def delivered(d, qid, rcpt, inst, reply):
	return d.wait_log(r"%s: to=<%s>, handler=%s, status=delivered, delay=[0-9.]+ \(%s\)$" %
			  (qid, re.escape(rcpt), inst, reply))


def failed(d, qid, rcpt, inst, dsn, reply):
	return d.wait_log(r"%s: to=<%s>, handler=%s, status=failed, dsn=%s \(%s\)$" %
			  (qid, re.escape(rcpt), inst, re.escape(dsn), reply))


def deferred(d, qid, rcpt, inst, reason, since=0):
	return d.wait_log(r"%s: to=<%s>, handler=%s, status=deferred, .*attempt=\d+, .*\(%s\)$" %
			  (qid, re.escape(rcpt), inst, reason), since=since)


def only_copy(dc, user, what):
	msgs = dc.messages(user)
	check_eq(len(msgs), 1, "messages in %s's Maildir (%s)" % (user, what))
	return msgs[0]


class Peers:
	"""The servers of the case: Dovecot (alice, bob through postmaster,
	carol over quota, dave with an unwritable home, erin and frank named by
	address), aiosmtpd's LMTP and SMTP servers, a port that refuses and one
	that never answers; and laimd, with an lmtp instance for each."""

	def __init__(self):
		self.dc = Dovecot("lmtp")
		for user in ("alice", "bob", "erin@lists.example", "frank@other.example"):
			self.dc.add_user(user)
		self.dc.add_user("carol", quota="1B")
		self.dc.add_user("dave", home_writable=False)
		self.dc.start()
		self.d = Laimd()
		self.lmtp_port, self.smtp_port = free_port("aiolmtp"), free_port("aiosmtp")
		self.refused_port = free_port("refused")
		self.aio, self.aio_out = start_aiosmtpd(self.d.dir, self.lmtp_port, self.smtp_port)
		self.hung = socket.socket()  # listens, never accepts: connects, never greets
		self.hung.bind(("127.0.0.1", 0))
		self.hung.listen(8)
		self.hung_port = self.hung.getsockname()[1]
		# A unix socket whose listen queue is full: it listens, never
		# accepts, and holds the one connection its backlog of 0 lets in.
		self.full_socket = os.path.join(self.d.dir, "full.sock")
		self.full = socket.socket(socket.AF_UNIX)
		self.full.bind(self.full_socket)
		os.chmod(self.full_socket, 0o666)
		self.full.listen(0)
		self.full_held = socket.socket(socket.AF_UNIX)
		self.full_held.connect(self.full_socket)
		self.scripted = ScriptedPeer(lmtp=True, mail=lambda sender: "550 5.7.1 null sender refused" if not sender
					     else "250 2.1.0 Ok", end=lambda session, rcpts: [None])
		self.data250 = ScriptedPeer(lmtp=True, data=lambda: "250 2.0.0 DATA? whatever")
		self.configure()
		self.d.start()

	def configure(self):
		d = self.d
		with open(d.config["aliases"], "w") as f:
			f.write("postmaster: bob\n")
		tcp = lambda port: "127.0.0.1:%d" % port
		d.config["retry_initial"] = 300  # only laimctl flush retries
		d.config["retry_max"] = 600
		d.config["handlers"] = {
			"dovecot": {"type": "lmtp", "socket": self.dc.socket, "lhlo": LHLO},
			"virtual": {"type": "lmtp", "host": tcp(self.dc.port), "rcpt_to": "address", "lhlo": LHLO,
				    "verify_recipients": True, "timeout": 5},
			"nopipe": {"type": "lmtp", "host": tcp(self.lmtp_port), "rcpt_to": "address"},
			"smtpish": {"type": "lmtp", "host": tcp(self.smtp_port)},
			"refused": {"type": "lmtp", "host": tcp(self.refused_port)},
			"hung": {"type": "lmtp", "host": tcp(self.hung_port), "timeout": 1},
			"nosocket": {"type": "lmtp", "socket": os.path.join(d.dir, "no", "lmtp")},
			"full": {"type": "lmtp", "socket": self.full_socket},
			"down": {"type": "lmtp", "host": tcp(self.refused_port), "verify_recipients": True},
			"slow": {"type": "lmtp", "host": tcp(self.hung_port), "verify_recipients": True, "timeout": 2},
			"scripted": {"type": "lmtp", "host": tcp(self.scripted.port), "verify_recipients": True},
			"closes": {"type": "lmtp", "host": tcp(self.scripted.port)},
			"data250": {"type": "lmtp", "host": tcp(self.data250.port)},
		}
		d.config["routes"] = [{"match": "*@%s.example" % name, "handlers": [name]}
				      for name in ("nopipe", "smtpish", "refused", "hung", "nosocket", "full", "down", "slow",
						   "scripted", "closes", "data250")]
		d.config["routes"] += [{"match": "*@lists.example", "handlers": ["virtual"]},
				       {"match": "*", "handlers": ["dovecot"]}]

	def stop(self):
		check_eq(self.d.stop(), 0, "laimd exit status")
		self.hung.close()
		self.full_held.close()
		self.full.close()
		self.scripted.stop()
		self.data250.stop()
		self.aio.stdin.close()
		self.aio.wait(10)
		self.dc.cleanup()


ALICE, BOB, CAROL, DAVE = ("%s@%s" % (u, H) for u in ("alice", "bob", "carol", "dave"))


def laimctl_test(p):
	"""Greeting and LHLO, then QUIT: ready, with the extensions; a refused
	connection is not ready, with the reason."""
	r = p.d.laimctl(["test", "dovecot"])
	check_eq((r.returncode, r.stdout), (0, "dovecot: ready: lmtp: %s answers LHLO %s with 250 "
					    "(8BITMIME CHUNKING ENHANCEDSTATUSCODES PIPELINING)\n" % (p.dc.socket, LHLO)),
		 "laimctl test dovecot (%r)" % r)
	# Without lhlo:, LHLO names the host as the hostname key gives it.
	r = p.d.laimctl(["test", "nopipe"])
	check(r.returncode == 0 and re.fullmatch(r"nopipe: ready: lmtp: 127\.0\.0\.1:%d answers LHLO %s with 250"
						 r"( \(.*\))?\n" % (p.lmtp_port, re.escape(HOSTNAME)), r.stdout),
	      "laimctl test nopipe, LHLO with the hostname key (%r)" % r)
	r = p.d.laimctl(["test", "refused"])
	check_eq((r.returncode, r.stderr), (1, "laimctl: refused: not ready: lmtp: connect to 127.0.0.1:%d: "
					    "Connection refused (is the LMTP server running, with a listener on "
					    "this port?)\n" % p.refused_port), "laimctl test refused")


def four_users(p):
	"""One transaction, four users, four outcomes after DATA; the deferred
	one is delivered alone after the fix and a flush."""
	d, dc, m1 = p.d, p.dc, message("four users")
	q1 = d.send(SENDER, [ALICE, "postmaster@" + H, CAROL, DAVE], m1)
	delivered(d, q1, ALICE, "dovecot", r"250 2\.0\.0 <alice> \S+ Saved")
	delivered(d, q1, BOB, "dovecot", r"250 2\.0\.0 <bob> \S+ Saved")
	failed(d, q1, CAROL, "dovecot", "5.2.2", r"552 5\.2\.2 <carol> Quota exceeded \(mailbox for user is full\)")
	deferred(d, q1, DAVE, "dovecot", r"451 4\.2\.0 <dave> Internal error occurred\. .*")
	for user in ("alice", "bob"):
		check_dovecot_copy(only_copy(dc, user, "first try"), q1, m1, user, False, "%s's copy" % user)
	check_eq((dc.messages("carol"), dc.messages("dave")), ([], []), "carol's and dave's Maildirs")

	dc.fix_home("dave")
	mark = d.mark()
	check_ran(d.laimctl(["flush"]), quiet=False)
	delivered(d, q1, DAVE, "dovecot", r"250 2\.0\.0 <dave> \S+ Saved")
	d.wait_log(r"%s: moved to failed/: <%s> handler dovecot: 5\.2\.2 552 " % (q1, re.escape(CAROL)), since=mark)
	check_eq(len(d.findall_log(r"%s: to=" % q1, mark)), 1, "log lines of %s after the flush (dave's only)" % q1)
	check_dovecot_copy(only_copy(dc, "dave", "after the fix"), q1, m1, "dave", True, "dave's copy")
	for user in ("alice", "bob"):
		check_dovecot_copy(only_copy(dc, user, "after the flush"), q1, m1, user, False, "%s's copy" % user)
	with open(os.path.join(d.spool, "failed", q1 + ".reason")) as f:
		check_eq(f.read(), "<%s> handler dovecot: 5.2.2 552 5.2.2 <carol> Quota exceeded (mailbox for user is "
			 "full)\n" % CAROL, "failed/%s.reason" % q1)
	check_eq(dc.messages("carol"), [], "carol's Maildir at the end")


def other_domain(p):
	"""rcpt_to: user keeps another domain's address whole: alice@other is
	not the local alice, and Dovecot refuses it at RCPT; the other
	recipient goes on."""
	d, dc, m2 = p.d, p.dc, message("other domain")
	q2 = d.send(SENDER, ["frank@other.example", "alice@other.example"], m2)
	failed(d, q2, "alice@other.example", "dovecot", "5.1.1",
	       r"RCPT: 550 5\.1\.1 <alice@other\.example> User doesn't exist: alice@other\.example")
	delivered(d, q2, "frank@other.example", "dovecot", r"250 2\.0\.0 <frank@other\.example> \S+ Saved")
	check_dovecot_copy(only_copy(dc, "frank@other.example", "other domain"), q2, m2, "frank@other.example", True,
			   "frank's copy")
	check_eq(len(dc.messages("alice")), 1, "alice's Maildir after mail to alice@other.example")


def verify_at_rcpt(p):
	"""verify_recipients: Dovecot's 550 at laim's RCPT; 451 when the
	server is down, or hangs past timeout (2 s a step), or refuses MAIL
	FROM:<> (a 550 that says nothing of the recipient)."""
	d, m3 = p.d, message("verified")
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<%s>" % SENDER, 250)
		c.cmd("RCPT TO:<nosuch@lists.example>", 550)
		c.cmd("RCPT TO:<erin@lists.example>", 250)
		c.cmd("RCPT TO:<x@down.example>", 451)
		c.cmd("RCPT TO:<x@scripted.example>", 451)
		t0 = time.monotonic()
		c.cmd("RCPT TO:<x@slow.example>", 451, timeout=20)
		waited = time.monotonic() - t0
		check(1.5 < waited < 4, "RCPT to a hung server answered after %.1f s, timeout is 2 s" % waited)
		c.cmd("DATA", 354)
		c.send(data_terminated(m3))
		q3 = queue_id(c.expect(250))
	d.wait_log(r"handler virtual: <nosuch@lists\.example> refused by 127\.0\.0\.1:%d: 550 5\.1\.1 "
		   r"<nosuch@lists\.example> User doesn't exist: nosuch@lists\.example$" % p.dc.port)
	d.wait_log(r"handler down: verifying <x@down\.example>: lmtp: connect to 127\.0\.0\.1:%d: Connection refused"
		   % p.refused_port)
	d.wait_log(r"handler scripted: verifying <x@scripted\.example>: 127\.0\.0\.1:%d refuses MAIL FROM:<>: 550 5\.7\.1 "
		   r"null sender refused$" % p.scripted.port)
	d.wait_log(r"handler slow: verifying <x@slow\.example>: lmtp: timeout after 2 s waiting for 127\.0\.0\.1:%d$"
		   % p.hung_port)
	delivered(d, q3, "erin@lists.example", "virtual", r"250 2\.0\.0 <erin@lists\.example> \S+ Saved")
	check_dovecot_copy(only_copy(p.dc, "erin@lists.example", "verified"), q3, m3, "erin@lists.example", True,
			   "erin's copy")


def without_pipelining(p):
	"""A server without PIPELINING: one command at a time, a 550 at RCPT,
	one reply after DATA; the copy arrives byte for byte (CRLF)."""
	d, m4 = p.d, message("no pipelining")
	q4 = d.send(SENDER, ["unknown@nopipe.example", "gina@nopipe.example"], m4)
	failed(d, q4, "unknown@nopipe.example", "nopipe", "5.1.1",
	       r"RCPT: 550 5\.1\.1 <unknown@nopipe\.example> no such user here")
	delivered(d, q4, "gina@nopipe.example", "nopipe", r"250 2\.0\.0 stored for gina@nopipe\.example")
	with open(p.aio_out, "rb") as f:
		head, _, data = f.read().partition(b"\n")
	check_eq(head, b"gina@nopipe.example %d" % len(data), "what aiosmtpd's LMTP server stored")
	laim_copy(data, q4, m4, "aiosmtpd's copy")


def unreachable(p):
	"""Connection errors, a server that is not LMTP and one that closes
	after the message's end: deferred, saying why."""
	d = p.d
	q5 = d.send(SENDER, ["x@smtpish.example", "x@refused.example", "x@hung.example", "x@nosocket.example",
			     "x@full.example", "x@closes.example", "x@data250.example"], message("unreachable"))
	# A 250 to DATA sends no message: never counted as its delivery.
	deferred(d, q5, "x@data250.example", "data250", r"127\.0\.0\.1:%d: DATA: unexpected reply 250 2\.0\.0 "
		 r"DATA\? whatever" % p.data250.port)
	check_eq(p.data250.messages, [], "messages the server that answered DATA with 250 received")
	deferred(d, q5, "x@closes.example", "closes", r"lmtp: after the end of the message \(it may have been "
		 r"delivered\): 127\.0\.0\.1:%d closed the connection" % p.scripted.port)
	deferred(d, q5, "x@smtpish.example", "smtpish",
		 r'lmtp: 127\.0\.0\.1:%d answers LHLO with 500 Error: command "LHLO" not recognized: an SMTP '
		 r'server, not LMTP \(RFC 2033\)\?' % p.smtp_port)
	deferred(d, q5, "x@refused.example", "refused", r"lmtp: connect to 127\.0\.0\.1:%d: Connection refused "
		 r"\(is the LMTP server running, with a listener on this port\?\)" % p.refused_port)
	deferred(d, q5, "x@hung.example", "hung", r"lmtp: timeout after 1 s waiting for 127\.0\.0\.1:%d" % p.hung_port)
	deferred(d, q5, "x@nosocket.example", "nosocket", r"lmtp: connect to %s: No such file or directory \(is the "
		 r"LMTP server running, and is this its unix_listener's path\?\)" %
		 re.escape(d.config["handlers"]["nosocket"]["socket"]))
	deferred(d, q5, "x@full.example", "full", r"lmtp: connect to %s: the server's listen queue is full "
		 r"\(Resource temporarily unavailable\)" % re.escape(p.full_socket))


def socket_mode(p):
	"""A socket the laim user may not open: the reason names its owner and
	mode and the setting to change; fixed, a flush delivers (this one from
	the null sender: MAIL FROM:<>)."""
	d, dc, m6 = p.d, p.dc, message("socket mode")
	os.chmod(dc.socket, 0o600)
	q6 = d.send("", [ALICE], m6)
	deferred(d, q6, ALICE, "dovecot", r"lmtp: connect to %s: Permission denied \(the socket is owned by "
		 r"root:root, mode 0600; %s needs write permission on it: set user = %s \(or group = a group %s is "
		 r"in, and mode = 0660\) in Dovecot's service lmtp \{ unix_listener lmtp \{ \.\.\. \} \}\)" %
		 ((re.escape(dc.socket),) + (TEST_USER,) * 3))
	os.chmod(dc.socket, 0o666)
	check_ran(d.laimctl(["flush"]), quiet=False)
	delivered(d, q6, ALICE, "dovecot", r"250 2\.0\.0 <alice> \S+ Saved")
	msgs = [m for m in dc.messages("alice") if b"Subject: four users\n" not in m]
	check_eq(len(msgs), 1, "messages in alice's Maildir besides the first")
	check_dovecot_copy(msgs[0], q6, m6, "alice", True, "alice's copy from <>", sender="")
	check_eq(len(dc.messages("alice")), 2, "messages in alice's Maildir at the end")


def main():
	p = Peers()
	for step in (laimctl_test, four_users, other_domain, verify_at_rcpt, without_pipelining, unreachable,
		     socket_mode):
		step(p)
	p.stop()


run(main)
