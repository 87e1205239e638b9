# The smarthost handler against a real SMTP server (aiosmtpd, peer_smtp.py)
# on 127.0.0.1 with certificates of a private CA (peer_certs.py):
# STARTTLS with AUTH PLAIN delivers the message byte for byte with the
# right user; per recipient, a 550 at RCPT fails that one, a 451 defers it
# and, once the server takes it, only it is sent again, and the reply to
# the message's end settles the others; implicit TLS with AUTH LOGIN,
# mail_from and rewrite_from as the server sees them; a rogue certificate,
# a wrong pin, a server without STARTTLS, a refused password and a server
# that wants AUTH from an instance without credentials defer with the
# reason, and the password never goes in clear or into the log; tls: none
# delivers in clear; a pin accepts the rogue certificate; laimctl test
# shows each step. laimd -n refuses a credentials file others can read and
# credentials with tls: none, and takes etc/smarthost.yml. Against a
# scripted server (peer_scripted.py): a 5000-byte reply to the message's
# end whose LF comes in a later segment delivers the message once; a 354
# to it defers (only a 5xx fails for good); a close right after it defers
# with a reason that says the message may have been delivered.
import sys
import time
sys.dont_write_bytecode = True
from harness import *
from peer_certs import Certs
from peer_smtp import SmtpPeer
from peer_scripted import ScriptedPeer

USER, PASSWORD = "alice@example.org", "app:Pass-4711"  # a ':' in the password
LOGIN_USER, LOGIN_PASSWORD = "bob", "Login-Pass-0815"
WRONG_PASSWORD = "Wrong-Pass-2342"
SENDER = "sender@client.example"
SPAM_SENDER = "spammer@client.example"
SENT = (b"From: Cron Daemon\r\n <root@client.example>\r\nTo: ops@example.org\r\nSubject: disk\r\n"
	b"\r\n.a line that starts with a dot\r\n\r\nFrom: not a header\r\n")


def put_secret(path, text, mode=0o600):
	with open(path, "w") as f:
		f.write(text + "\n")
	os.chown(path, 0, 0)
	os.chmod(path, mode)


def configure(d, certs, peer, secrets, scripted):
	ports = peer.ports
	verified = {"host": "localhost", "ca_file": certs.ca, "credentials": secrets["alice"]}
	d.config["handlers"] = {
		"relay": dict(verified, type="smarthost", port=ports["starttls"]),
		"implicit": {"type": "smarthost", "host": "127.0.0.1", "port": ports["implicit"], "tls": "implicit",
			     "ca_file": certs.ca, "credentials": secrets["bob"], "auth": "login", "mail_from": "alerts@",
			     "rewrite_from": "always"},
		"rogue": dict(verified, type="smarthost", port=ports["rogue"]),
		"tls12": dict(verified, type="smarthost", port=ports["tls12"]),
		"pinned": {"type": "smarthost", "host": "localhost", "port": ports["rogue"], "helo": "pinned.test",
			   "tls_fingerprint": certs.sha256(certs.rogue_cert), "credentials": secrets["alice"],
			   "mail_from": "relay@example.org", "rewrite_from": "missing"},
		"wrongpin": {"type": "smarthost", "host": "localhost", "port": ports["starttls"],
			     "tls_fingerprint": certs.sha256(certs.rogue_cert).replace(":", "").lower(),
			     "credentials": secrets["alice"]},
		"nostarttls": dict(verified, type="smarthost", host="127.0.0.1", port=ports["plain"]),
		"clear": {"type": "smarthost", "host": "127.0.0.1", "port": ports["plain"], "tls": "none"},
		"badpass": dict(verified, type="smarthost", port=ports["starttls"], credentials=secrets["wrong"]),
		"noauth": {"type": "smarthost", "host": "localhost", "port": ports["starttls"], "ca_file": certs.ca},
		"scripted": {"type": "smarthost", "host": "127.0.0.1", "port": scripted.port, "tls": "none"},
	}
	d.config["routes"] = [{"match": "*@%s.example" % name, "handlers": [name]} for name in d.config["handlers"]]


def check_config_refused(d, secrets):
	"""laimd -n: a credentials file others may read, and credentials
	without TLS, are refused with file, line and key."""
	put_secret(secrets["alice"], USER + ":" + PASSWORD, 0o644)
	r = d.check_config()
	err = r.stderr.decode()
	check_eq(r.returncode, 1, "laimd -n with a credentials file of mode 0644")
	check(re.search(r"^laimd: %s:%d: handlers\.relay\.credentials: %s: .*mode 0644" %
			(re.escape(d.confpath), d.option_line("relay", "credentials"), re.escape(secrets["alice"])),
			err, re.M), "laimd -n on a credentials file of mode 0644: %r" % err)
	check(PASSWORD not in err + r.stdout.decode(), "the password in laimd -n's output")
	put_secret(secrets["alice"], USER + ":" + PASSWORD)

	d.config["handlers"]["clear"]["credentials"] = secrets["alice"]
	r = d.check_config()
	err = r.stderr.decode()
	check(r.returncode == 1 and re.search(
		r"^laimd: %s:%d: handlers\.clear\.credentials: AUTH never goes in clear: credentials need tls: "
		r"starttls or implicit$" % (re.escape(d.confpath), d.option_line("clear", "credentials")), err, re.M),
	      "laimd -n on credentials with tls: none: %r" % r)
	del d.config["handlers"]["clear"]["credentials"]
	r = d.check_config()
	check_eq((r.returncode, r.stderr), (0, b""), "laimd -n with the case's config")


def helo(session):
	"""The name a session's first EHLO gave, or None before it."""
	return next((e["arg"] for e in session if e.get("cmd") == "EHLO"), None)


def log_line(d, qid, rcpt, handler, status, why):
	return d.wait_log(r"%s: to=<%s>, handler=%s, status=%s.* \(%s\)$" %
			  (qid, re.escape(rcpt), handler, status, why), timeout=15, since=0)


def check_relay(d, peer, qid):
	"""One transaction, per-recipient results; the 451 one alone again."""
	ok1, ok2, defer, reject = ("%s@relay.example" % n for n in ("ok1", "ok2", "defer1", "reject1"))
	log_line(d, qid, ok1, "relay", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	log_line(d, qid, ok2, "relay", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	log_line(d, qid, reject, "relay", r"failed, dsn=5\.1\.1",
		 r"RCPT TO: 550 5\.1\.1 <%s>: Recipient address rejected: User unknown" % re.escape(reject))
	log_line(d, qid, defer, "relay", r"deferred, .*attempt=1, .*dsn=4\.2\.1",
		 r"RCPT TO: 451 4\.2\.1 <%s>: Mailbox busy, try again later" % re.escape(defer))
	log_line(d, qid, defer, "relay", r"deferred, .*attempt=2, .*dsn=4\.2\.1", r"RCPT TO: 451 .*")
	m = only([m for m in peer.messages("starttls") if m["mail_from"] == SENDER], "messages on the STARTTLS port")
	check_eq((m["mail_from"], m["rcpt_tos"], m["auth"], m["tls"]), (SENDER, [ok1, ok2], USER, True),
		 "what the STARTTLS port got")
	check_eq(after_received(m["data"]), SENT, "the message as relayed")
	check_eq(m["mail_options"], ["SIZE=%d" % len(m["data"])], "MAIL parameters of a 7-bit message")
	# The retries of defer1 alone: its RCPT, no DATA.
	retries = [s for s in peer.sessions("starttls").values()
		   if any(e.get("cmd") == "MAIL" and "<%s>" % SENDER in e["arg"] for e in s) and
		   any(e.get("cmd") == "RCPT" and e["arg"].endswith("@relay.example>") for e in s)][1:]
	check(retries, "no retry session for %s" % defer)
	for s in retries:
		check_eq([(e["cmd"], e["arg"]) for e in s if e.get("cmd") in ("RCPT", "DATA")], [("RCPT", "TO:<%s>" % defer)],
			 "a retry of %s" % defer)

	peer.release()
	check_ran(d.laimctl(["flush"]), quiet=False)
	log_line(d, qid, defer, "relay", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	d.wait_log(r"%s: moved to failed/: <%s> handler relay: 5\.1\.1 RCPT TO: 550" % (qid, re.escape(reject)), 10)
	ms = [m for m in peer.messages("starttls") if m["mail_from"] == SENDER]
	check_eq([m["rcpt_tos"] for m in ms], [[ok1, ok2], [defer]], "messages on the STARTTLS port")
	check_eq(after_received(ms[1]["data"]), SENT, "the message as relayed to %s" % defer)
	check(qid not in d.spool_files("queue") and qid in d.spool_files("failed"), "%s in queue/ or not in failed/" % qid)
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		check_eq(f.read(), "<%s> handler relay: 5.1.1 RCPT TO: 550 5.1.1 <%s>: Recipient address rejected: "
			 "User unknown\n" % (reject, reject), "failed/%s.reason" % qid)


def check_end_of_data(d, peer, qid):
	"""The reply to the message's end settles the recipients accepted."""
	ok, reject = "ok9@relay.example", "reject9@relay.example"
	log_line(d, qid, ok, "relay", r"failed, dsn=5\.7\.1", r"554 5\.7\.1 Message refused as spam")
	log_line(d, qid, reject, "relay", r"failed, dsn=5\.1\.1", r"RCPT TO: 550 5\.1\.1 <%s>: .*" % re.escape(reject))
	m = only([m for m in peer.messages("starttls") if m["mail_from"] == SPAM_SENDER], "spam on the STARTTLS port")
	check_eq((m["rcpt_tos"], m["reply"]), ([ok], "554 5.7.1 Message refused as spam"), "the spam the peer refused")
	d.wait_log(r"%s: moved to failed/: <%s> handler relay: 5\.7\.1 554" % (qid, re.escape(ok)), 10)


def check_implicit(d, peer, qid):
	"""Implicit TLS, AUTH LOGIN, mail_from alerts@ and rewrite_from: always."""
	log_line(d, qid, "x@implicit.example", "implicit", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	m = only(peer.messages("implicit"), "messages on the implicit TLS port")
	masq = "alerts@" + HOSTNAME
	check_eq((m["mail_from"], m["rcpt_tos"], m["auth"], m["tls"]), (masq, ["x@implicit.example"], LOGIN_USER, True),
		 "what the implicit TLS port got")
	check_eq([(e["mechanism"], e["ok"]) for e in peer.events("implicit") if "auth" in e], [("LOGIN", True)],
		 "AUTH on the implicit TLS port")
	body8 = SENT + "caf\u00e9\r\n".encode()
	old_from = b" Cron Daemon\r\n <root@client.example>\r\n"
	want = (b"From: " + masq.encode() + b"\r\nReply-To:" + old_from + b"X-Original-From:" + old_from +
		body8[body8.index(b"To: "):])
	check_eq(after_received(m["data"]), want, "the message with rewrite_from: always")
	check_eq(m["mail_options"], ["SIZE=%d" % len(m["data"]), "BODY=8BITMIME"], "MAIL parameters of an 8-bit message")


def check_pinned(d, peer, qid):
	"""A pin accepts the rogue certificate; rewrite_from: missing adds From:."""
	log_line(d, qid, "x@pinned.example", "pinned", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	m = only(peer.messages("rogue"), "messages on the rogue port")
	check_eq((m["mail_from"], m["auth"], m["tls"]), ("relay@example.org", USER, True), "what the rogue port got")
	sent = SENT[SENT.index(b"To: "):]
	fields, rest = header_fields(sent)
	check_eq(after_received(m["data"]), b"".join(fields) + b"From: relay@example.org\r\n" + rest,
		 "the message with rewrite_from: missing")
	check_eq({helo(s) for s in peer.sessions("rogue").values()} - {None}, {"pinned.test", HOSTNAME},
		 "EHLO names on the rogue port")


def check_refusals(d, peer, qids, ports):
	"""Each reason to stop before MAIL defers with that reason."""
	log_line(d, qids["rogue"], "x@rogue.example", "rogue", "deferred",
		 r"TLS handshake with localhost:%d: certificate verify failed: self-signed certificate" % ports["rogue"])
	log_line(d, qids["wrongpin"], "x@wrongpin.example", "wrongpin", "deferred",
		 r"TLS handshake with localhost:%d: certificate fingerprint [0-9A-F]{64} does not match tls_fingerprint" %
		 ports["starttls"])
	log_line(d, qids["nostarttls"], "x@nostarttls.example", "nostarttls", "deferred",
		 r"127\.0\.0\.1:%d offers no STARTTLS \(tls: starttls\): not sending in clear" % ports["plain"])
	log_line(d, qids["badpass"], "x@badpass.example", "badpass", "deferred",
		 r"localhost:%d: AUTH PLAIN \*\*\*\*\*\*\*\*: 535 5\.7\.8 Authentication credentials invalid \(check the "
		 r"credentials file; a provider with two-factor login wants an application password\)" % ports["starttls"])
	log_line(d, qids["noauth"], "x@noauth.example", "noauth", "deferred",
		 r"localhost:%d: MAIL FROM: 530 5\.7\.0 Authentication required" % ports["starttls"])
	for e in peer.events("rogue"):
		if e.get("cmd") in ("AUTH", "MAIL"):
			check(helo(peer.sessions("rogue")[e["conn"]]) == "pinned.test",
			      "%s on the rogue port by an instance that does not pin it: %r" % (e["cmd"], e))
	check_eq([e for e in peer.events("plain") if e.get("cmd") == "AUTH"], [], "AUTH on the port without TLS")
	m = only(peer.messages("plain"), "messages on the port without TLS")
	check_eq((m["rcpt_tos"], m["tls"], m["auth"]), (["x@clear.example"], False, None), "what the plain port got")
	log_line(d, qids["clear"], "x@clear.example", "clear", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	check_eq([e for e in peer.events() if e.get("cmd") == "AUTH" and not e["tls"]], [], "AUTH in clear")


def check_system_tls_policy(d, peer, qid):
	"""A smarthost of TLS 1.2 at most takes the message (TLS 1.2 is laim's
	floor); under an OpenSSL system policy of TLS 1.3 only (MinProtocol in
	OPENSSL_CONF), which laim's floor never lowers, the next message to it
	is deferred at the handshake, and the peer gets no MAIL."""
	log_line(d, qid, "x@tls12.example", "tls12", "delivered", r"250 2\.0\.0 Ok: queued as P\d+")
	check_eq([m["rcpt_tos"] for m in peer.messages("tls12")], [["x@tls12.example"]], "messages on the TLS 1.2 port")
	restart_under_openssl_policy(d, "MinProtocol = TLSv1.3")
	later = d.send(SENDER, ["y@tls12.example"], SENT)
	log_line(d, later, "y@tls12.example", "tls12", "deferred",
		 r"TLS handshake with localhost:%d: .*" % peer.ports["tls12"])
	check_eq([m["rcpt_tos"] for m in peer.messages("tls12")], [["x@tls12.example"]], "messages on the TLS 1.2 port")


def check_laimctl_test(d, peer, ports):
	"""laimctl test relay: each step, then QUIT; nothing sent."""
	before = set(peer.sessions("starttls"))
	r = d.laimctl(["test", "relay"])
	check_ran(r, quiet=False)
	step = r"(?:TLSv1\.[23]) \S+, certificate CN=localhost verified for localhost"
	check(re.fullmatch(r"relay: ready: connected to localhost:%d; EHLO: 250 peer\.test / .*STARTTLS.*; "
			   r"STARTTLS: %s; EHLO: 250 peer\.test / .*AUTH LOGIN PLAIN.*; AUTH PLAIN as %s: "
			   r"235 2\.7\.0 Authentication successful; QUIT\n" % (ports["starttls"], step, re.escape(USER)),
			   r.stdout), "laimctl test relay: %r" % r.stdout)
	# badpass and wrongpin keep trying this port: the session is the one whose AUTH passed
	session = only([s for conn, s in peer.sessions("starttls").items() if conn not in before and
			any(e.get("ok") for e in s)], "new sessions with AUTH accepted")
	check_eq([e["cmd"] for e in session if "cmd" in e],
		 ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"], "the commands of laimctl test relay")
	r = d.laimctl(["test", "rogue"])
	check(r.returncode == 1 and re.fullmatch(
		r"laimctl: rogue: not ready: connected to localhost:%d; EHLO: 250 .*; TLS handshake with localhost:%d: "
		r"certificate verify failed: self-signed certificate\n" % (ports["rogue"], ports["rogue"]), r.stderr),
	      "laimctl test rogue: %r" % r)


CLOSED = set()  # the local parts whose message's end got no reply once


def scripted_end(session, rcpts):
	"""What the scripted server does after the message's end, by its
	recipient's local part."""
	local = rcpts[0].split("@")[0]
	if local == "long":  # a 5000-byte line, its CRLF in another segment
		return [b"250 2.0.0 " + b"x" * 5000, 0.3, b"\r\n"]
	if local == "odd":  # a reply no message's end can have
		return [b"354 go on\r\n"]
	if local == "escape":  # terminal controls, for whoever reads failed/
		return [b"550 5.7.1 bad\x1b[2J\x1b]0;pwned\x07 reply\r\n"]
	if local == "closes" and local not in CLOSED:  # the first time, no reply
		CLOSED.add(local)
		return [None]
	return [b"250 2.0.0 Ok\r\n"]


def check_scripted(d, scripted, qids):
	"""A reply line too long is cut, not a broken session: one copy."""
	# (the log cuts the line before the reply's end)
	d.wait_log(r"%s: to=<long@scripted\.example>, handler=scripted, status=delivered, .*\(250 2\.0\.0 x{1000}" %
		   qids["long"], timeout=15, since=0)
	time.sleep(2)  # past a retry, were there one
	check_eq(len([m for m in scripted.messages if m[1] == ["long@scripted.example"]]), 1,
		 "copies of the message answered with a 5000-byte line")
	log_line(d, qids["odd"], "odd@scripted.example", "scripted", "deferred, .*attempt=2,", r"unexpected reply 354 go on")
	check(qids["odd"] not in d.spool_files("failed"), "a message answered 354 at its end in failed/")
	log_line(d, qids["closes"], "closes@scripted.example", "scripted", "deferred, .*attempt=1,",
		 r"after the end of the message \(it may have been delivered\): 127\.0\.0\.1:%d closed the connection" %
		 scripted.port)
	log_line(d, qids["closes"], "closes@scripted.example", "scripted", "delivered", r"250 2\.0\.0 Ok")
	# A peer's words reach failed/ID.reason escaped, as they reach the log.
	reason_path = os.path.join(d.spool, "failed", qids["escape"] + ".reason")
	wait_for(lambda: os.path.exists(reason_path), 15, "failed/%s.reason" % qids["escape"])
	with open(reason_path, "rb") as f:
		reason = f.read()
	check(b"bad\\x1b[2J" in reason and not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", reason),
	      "failed/%s.reason holds a control byte: %r" % (qids["escape"], reason))


def main():
	d = Laimd()
	certs = Certs(os.path.join(d.dir, "certs"))
	peer = SmtpPeer(os.path.join(d.dir, "peer"), certs, {USER: PASSWORD, LOGIN_USER: LOGIN_PASSWORD})
	secrets = {name: os.path.join(d.dir, name + ".secret") for name in ("alice", "bob", "wrong")}
	put_secret(secrets["alice"], USER + ":" + PASSWORD)
	put_secret(secrets["bob"], LOGIN_USER + ":" + LOGIN_PASSWORD)
	put_secret(secrets["wrong"], USER + ":" + WRONG_PASSWORD)
	scripted = ScriptedPeer(end=scripted_end)
	configure(d, certs, peer, secrets, scripted)
	check_config_refused(d, secrets)
	d.check_example("smarthost", {"/etc/laim/relay.secret": secrets["alice"]})
	d.start()

	relay = d.send(SENDER, ["%s@relay.example" % n for n in ("ok1", "ok2", "defer1", "reject1")], SENT)
	qids = {"relay": relay, "implicit": d.send(SENDER, ["x@implicit.example"], SENT + "caf\u00e9\r\n".encode())}
	qids["spam"] = d.send(SPAM_SENDER, ["ok9@relay.example", "reject9@relay.example"], SENT)
	qids["pinned"] = d.send(SENDER, ["x@pinned.example"], SENT[SENT.index(b"To: "):])
	qids["tls12"] = d.send(SENDER, ["x@tls12.example"], SENT)
	for name in ("rogue", "wrongpin", "nostarttls", "clear", "badpass", "noauth"):
		qids[name] = d.send(SENDER, ["x@%s.example" % name], SENT)
	for name in ("long", "odd", "closes", "escape"):
		qids[name] = d.send(SENDER, ["%s@scripted.example" % name], SENT)

	run_rows([
		("STARTTLS, AUTH PLAIN, per-recipient results", lambda: check_relay(d, peer, relay)),
		("the reply to the message's end", lambda: check_end_of_data(d, peer, qids["spam"])),
		("implicit TLS, AUTH LOGIN, mail_from, rewrite_from always", lambda: check_implicit(d, peer, qids["implicit"])),
		("a pinned certificate, rewrite_from missing", lambda: check_pinned(d, peer, qids["pinned"])),
		("refusals before MAIL, tls: none", lambda: check_refusals(d, peer, qids, peer.ports)),
		("laimctl test", lambda: check_laimctl_test(d, peer, peer.ports)),
		("a scripted server's replies", lambda: check_scripted(d, scripted, qids)),
		("a TLS 1.2 smarthost, and OpenSSL's system policy of TLS 1.3 only", lambda: check_system_tls_policy(
			d, peer, qids["tls12"])),
	])
	check_eq(d.stop(), 0, "laimd exit status")
	log = d.log(0)
	for secret in (PASSWORD, LOGIN_PASSWORD, WRONG_PASSWORD):
		check(secret not in log, "a password in the log")
	peer.stop()
	scripted.stop()


run(main)
