# A scripted SMTP or LMTP server on 127.0.0.1 for the cases of the
# handlers that relay (smarthost, lmtp), where a real server cannot
# misbehave on demand: it answers MAIL and RCPT as the case says and,
# after the message's end, does what the case's end() returns for that
# session: bytes to send (each item in its own write), a number of seconds
# to wait, or None to close the connection without a word. Everything
# else gets the plain answer; a slow server waits `pause` seconds before
# each reply, the greeting included. Threads in the case's process; every
# socket has a timeout, so nothing outlives the case.
import socket
import threading
import time


class ScriptedPeer:
	"""lmtp: answer LHLO, and after the message once per recipient.
	mail(sender) and rcpt(address) return the reply line (no CRLF), as
	does data() for DATA (a reply other than 354 reads no message);
	end(session, rcpts) the list of actions after "." of the session's
	number (0 for the first)."""

	def __init__(self, lmtp=False, mail=None, rcpt=None, end=None, data=None, pause=0):
		self.lmtp = lmtp
		self.pause = pause
		self.mail = mail or (lambda sender: "250 2.1.0 Ok")
		self.rcpt = rcpt or (lambda address: "250 2.1.5 Ok")
		self.data = data or (lambda: "354 End data with <CR><LF>.<CR><LF>")
		self.end = end or (lambda session, rcpts: [b"250 2.0.0 Ok\r\n"] * (len(rcpts) if lmtp else 1))
		self.messages = []  # (session, rcpts, data) of each message received whole
		self.sessions = 0
		self.lock = threading.Lock()
		self.sock = socket.socket()
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(16)
		self.port = self.sock.getsockname()[1]
		threading.Thread(target=self._accept, daemon=True).start()

	def stop(self):
		self.sock.close()

	def _accept(self):
		while True:
			try:
				conn, _ = self.sock.accept()
			except OSError:
				return
			with self.lock:
				n = self.sessions
				self.sessions += 1
			threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

	def _serve(self, conn, n):
		conn.settimeout(30)
		f = conn.makefile("rb")
		def send(line):
			time.sleep(self.pause)
			conn.sendall(line.encode("latin-1") + b"\r\n")
		try:
			send("220 scripted.test ready")
			rcpts = []
			for raw in f:
				line = raw.decode("latin-1").rstrip("\r\n")
				verb = line.split(" ")[0].upper()
				arg = line[line.find("<") + 1:line.rfind(">")]
				if verb in ("EHLO", "LHLO"):
					send("250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME")
				elif verb == "MAIL":
					rcpts = []
					send(self.mail(arg))
				elif verb == "RCPT":
					reply = self.rcpt(arg)
					if reply.startswith("2"):
						rcpts.append(arg)
					send(reply)
				elif verb == "DATA":
					reply = self.data()
					send(reply)
					if not reply.startswith("354"):
						continue
					data, l = b"", f.readline()
					while l not in (b".\r\n", b""):
						data, l = data + l, f.readline()
					if not l:
						return
					with self.lock:
						self.messages.append((n, rcpts, data))
					for action in self.end(n, rcpts):
						if action is None:
							return
						if isinstance(action, bytes):
							conn.sendall(action)
						else:
							time.sleep(action)
				elif verb == "QUIT":
					send("221 2.0.0 Bye")
					return
				else:
					send("250 2.0.0 Ok")
		except OSError:
			pass
		finally:
			conn.close()
