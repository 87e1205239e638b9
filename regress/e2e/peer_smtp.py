# A real SMTP server for the cases of the handlers that relay (smarthost):
# Debian's aiosmtpd, run as a subprocess with /usr/bin/python3 (the
# python3 that runs the cases may lack it), on 127.0.0.1, one port per
# kind of server:
#
#   starttls  STARTTLS required before MAIL (530), AUTH offered and
#             accepted only after it, and required before MAIL
#   implicit  TLS from the first byte (as on port 465), AUTH required
#   rogue     as starttls, but presenting the rogue self-signed certificate
#   tls12     as starttls, but speaking TLS 1.2 at most
#   plain     no TLS offered; AUTH offered in clear (as a badly set up
#             server would), not required: a client that AUTHs here sent
#             its password in clear
#
# Recipients answer by their local part: reject... gets 550 5.1.1 at RCPT,
# defer... gets 451 4.2.1 until the file DIR/release exists, any other is
# accepted. A message from a sender whose local part starts with "spam"
# gets 554 5.7.1 at its end. AUTH takes the users given (PLAIN and LOGIN);
# a wrong password gets 535 5.7.8.
#
# What the server saw goes to DIR/events.jsonl, one JSON object a line,
# each with the connection number "conn", the port kind "port" and "tls"
# (whether the connection was encrypted at that moment):
#   {"cmd": VERB, "arg": ...}     each command it dispatched (AUTH's
#                                 argument is the mechanism only)
#   {"reply": "250 ..."}          each reply line it sent
#   {"auth": USER, "mechanism": M, "ok": bool}
#   {"message": {...}}            each message received after DATA:
#                                 mail_from, mail_options, rcpt_tos, auth
#                                 (the user), data (base64), reply
# The case side is the class SmtpPeer; the server side is serve(), run by
# "/usr/bin/python3 peer_smtp.py DIR/peer.json".

import atexit
import base64
import json
import os
import subprocess
import sys
import time

PORT_KINDS = ("starttls", "implicit", "rogue", "tls12", "plain")
PEER_PYTHON = "/usr/bin/python3"


# ------------------------------------------------------------------ the case's side

class SmtpPeer:
	"""Starts the server in DIR (a directory of the case's) with the
	certificates certs (peer_certs.Certs) and users ({user: password});
	ports[kind] is the port of each kind once it runs."""

	def __init__(self, directory, certs, users):
		from harness import Fail
		self.dir = directory
		os.makedirs(directory, exist_ok=True)
		self.events_path = os.path.join(directory, "events.jsonl")
		self.release_path = os.path.join(directory, "release")
		conf = os.path.join(directory, "peer.json")
		ready = os.path.join(directory, "ports.json")
		with open(conf, "w") as f:
			json.dump({"dir": directory, "users": users, "cert": certs.cert, "key": certs.key,
				   "rogue_cert": certs.rogue_cert, "rogue_key": certs.rogue_key}, f)
		if not os.access(PEER_PYTHON, os.X_OK):
			raise Fail("%s is missing: the SMTP peer needs Debian's python3 with python3-aiosmtpd" % PEER_PYTHON)
		self.logpath = os.path.join(directory, "peer.log")
		with open(self.logpath, "ab") as log:
			self.proc = subprocess.Popen([PEER_PYTHON, os.path.abspath(__file__), conf], stdin=subprocess.DEVNULL,
						     stdout=log, stderr=log, close_fds=True)
		atexit.register(self.stop)
		end = time.monotonic() + 15
		while not os.path.exists(ready):
			if self.proc.poll() is not None or time.monotonic() > end:
				self.stop()
				raise Fail("the SMTP peer did not start: %s" % self.log())
			time.sleep(0.05)
		with open(ready) as f:
			self.ports = json.load(f)

	def log(self):
		with open(self.logpath, errors="replace") as f:
			return f.read()[-3000:]

	def stop(self):
		if self.proc.poll() is None:
			self.proc.terminate()
			try:
				self.proc.wait(5)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait()

	def release(self):
		"""From now on defer... recipients are accepted."""
		open(self.release_path, "w").close()

	def events(self, port=None):
		try:
			with open(self.events_path) as f:
				out = [json.loads(line) for line in f if line.endswith("\n")]
		except FileNotFoundError:
			return []
		return [e for e in out if port is None or e["port"] == port]

	def messages(self, port=None):
		"""The messages accepted, in order, each a dict with data as bytes."""
		out = []
		for e in self.events(port):
			if "message" in e:
				m = dict(e["message"], port=e["port"], tls=e["tls"], conn=e["conn"])
				m["data"] = base64.b64decode(m["data"])
				out.append(m)
		return out

	def sessions(self, port=None):
		"""{conn: [events]} of the connections, in order."""
		out = {}
		for e in self.events(port):
			out.setdefault(e["conn"], []).append(e)
		return out


# ------------------------------------------------------------------ the server

def serve(conf):
	import asyncio
	import itertools
	import ssl
	import aiosmtpd.smtp
	from aiosmtpd.smtp import SMTP, AuthResult

	# AUTH before STARTTLS reaches smtp_AUTH (which answers 538), so that
	# the record shows any AUTH a client sends in clear.
	aiosmtpd.smtp.ALLOWED_BEFORE_STARTTLS = aiosmtpd.smtp.ALLOWED_BEFORE_STARTTLS | {"AUTH"}

	directory = conf["dir"]
	events = open(os.path.join(directory, "events.jsonl"), "a")
	conn_numbers = itertools.count(1)
	queued = itertools.count(1)

	def context(cert, key):
		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		ctx.load_cert_chain(cert, key)
		return ctx

	class Recorder(SMTP):
		"""aiosmtpd's server, writing down every command and reply."""

		def __init__(self, kind, **kw):
			super().__init__(Handler(), hostname="peer.test", ident="laim test peer", timeout=30,
					 authenticator=self.authenticate, **kw)
			self.kind = kind
			self.conn = next(conn_numbers)

		def record(self, **event):
			tls = self.kind == "implicit" or self._tls_protocol is not None
			events.write(json.dumps(dict(event, conn=self.conn, port=self.kind, tls=tls)) + "\n")
			events.flush()

		async def push(self, status):
			self.record(reply=status if isinstance(status, str) else status.decode(errors="replace"))
			await super().push(status)

		def authenticate(self, server, session, envelope, mechanism, data):
			user = data.login.decode(errors="replace")
			ok = conf["users"].get(user) == data.password.decode(errors="replace")
			self.record(auth=user, mechanism=mechanism, ok=ok)
			if ok:
				return AuthResult(success=True, auth_data=user)
			return AuthResult(success=False, handled=False,
					  message="535 5.7.8 Authentication credentials invalid")

	def recorded(verb):
		async def method(self, arg):
			shown = arg.split()[0] if verb == "AUTH" and arg else arg
			self.record(cmd=verb, arg=shown)
			return await getattr(SMTP, "smtp_" + verb)(self, arg)
		return method

	for verb in ("EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"):
		setattr(Recorder, "smtp_" + verb, recorded(verb))

	class Handler:
		async def handle_RCPT(self, server, session, envelope, address, options):
			local = address.split("@")[0]
			if local.startswith("reject"):
				return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
			if local.startswith("defer") and not os.path.exists(os.path.join(directory, "release")):
				return "451 4.2.1 <%s>: Mailbox busy, try again later" % address
			envelope.rcpt_tos.append(address)
			envelope.rcpt_options.extend(options)
			return "250 2.1.5 Ok"

		async def handle_DATA(self, server, session, envelope):
			if envelope.mail_from.startswith("spam"):
				reply = "554 5.7.1 Message refused as spam"
			else:
				reply = "250 2.0.0 Ok: queued as P%04d" % next(queued)
			server.record(message={
				"mail_from": envelope.mail_from, "mail_options": envelope.mail_options,
				"rcpt_tos": envelope.rcpt_tos, "auth": session.auth_data,
				"data": base64.b64encode(envelope.original_content).decode(), "reply": reply})
			return reply

	good = context(conf["cert"], conf["key"])
	rogue = context(conf["rogue_cert"], conf["rogue_key"])
	tls12 = context(conf["cert"], conf["key"])
	tls12.maximum_version = ssl.TLSVersion.TLSv1_2
	kinds = {
		"starttls": dict(tls_context=good, require_starttls=True, auth_required=True),
		"implicit": dict(auth_required=True, auth_require_tls=False),
		"rogue": dict(tls_context=rogue, require_starttls=True, auth_required=True),
		"tls12": dict(tls_context=tls12, require_starttls=True, auth_required=True),
		"plain": dict(auth_require_tls=False),
	}

	async def main():
		loop = asyncio.get_running_loop()
		ports = {}
		for kind, kw in kinds.items():
			server = await loop.create_server(lambda kind=kind, kw=kw: Recorder(kind, loop=loop, **kw),
							  "127.0.0.1", 0, ssl=good if kind == "implicit" else None)
			ports[kind] = server.sockets[0].getsockname()[1]
		tmp = os.path.join(directory, "ports.json.tmp")
		with open(tmp, "w") as f:
			json.dump(ports, f)
		os.rename(tmp, os.path.join(directory, "ports.json"))
		await asyncio.Event().wait()

	asyncio.run(main())


if __name__ == "__main__":
	with open(sys.argv[1]) as f:
		serve(json.load(f))
