# An HTTPS peer for the cases whose handlers post over HTTP (webhook): a
# ThreadingHTTPServer on a loopback address, in a thread of the case's
# own process, presenting the test CA's server certificate (or the rogue
# one) from peer_certs. It answers each path as the case's table says,
# records every request (method, path, headers, body) and every completed
# TLS handshake, and can hold a request without ever answering until it
# is stopped. Only the standard library is used.

import http.server
import threading
import time

from harness import wait_for

# An answer that never comes: the request is held until stop().
NEVER = object()


class Request:
	"""One request as the peer read it."""

	def __init__(self, method, path, headers, body, at):
		self.method = method
		self.path = path
		self.headers = headers  # [(name, value)] in order, repeats kept
		self.body = body        # bytes
		self.at = at            # time.monotonic() when it was read

	def header(self, name):
		"""The values of every header of that name (case-insensitive)."""
		return [v for n, v in self.headers if n.lower() == name.lower()]

	def __repr__(self):
		return "<%s %s %r %r>" % (self.method, self.path, self.headers, self.body[:300])


class _Server(http.server.ThreadingHTTPServer):
	daemon_threads = True

	def get_request(self):
		# The handshake is made in the request's thread, so that a client
		# that stalls or refuses the certificate holds up no other.
		sock, addr = self.socket.accept()
		if self.peer.context is None:
			return sock, addr
		return self.peer.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

	def handle_error(self, request, client_address):
		pass  # a refused handshake is recorded, not printed


class _Handler(http.server.BaseHTTPRequestHandler):
	protocol_version = "HTTP/1.0"

	def setup(self):
		self.request.settimeout(15)
		if self.server.peer.context is not None:
			try:
				self.request.do_handshake()
			except (OSError, ValueError) as e:
				self.server.peer._record_handshake(False, e)
				raise
			self.server.peer._record_handshake(True, None)
		super().setup()

	def log_message(self, fmt, *args):
		pass

	def do_POST(self):
		peer = self.server.peer
		length = int(self.headers.get("Content-Length", "0"))
		body = self.rfile.read(length)
		req = Request("POST", self.path, list(self.headers.items()), body, time.monotonic())
		with peer.lock:
			peer.requests.append(req)
		answer = peer.routes.get(self.path)
		if answer is None:
			answer = (404, {}, b"no route for " + self.path.encode() + b"\n")
		if answer is NEVER:
			peer.stopping.wait(60)
			return
		if callable(answer):
			answer = answer(req)
		status, headers, data = answer
		self.send_response(status)
		for name, value in headers.items():
			self.send_header(name, value)
		if isinstance(data, bytes):
			self.send_header("Content-Length", str(len(data)))
		self.end_headers()
		if isinstance(data, bytes):
			self.wfile.write(data)
			return
		# Chunks of an answer without a length, that ends when the
		# connection does (HTTP/1.0), until the client stops reading.
		for chunk in data:
			if peer.stopping.is_set():
				break
			self.wfile.write(chunk)

	do_GET = do_PUT = do_POST


class HttpsPeer:
	"""routes: {path: (status, {header: value}, body)}, or a function of
	the Request giving that, or NEVER; body is bytes, or an iterable of
	chunks sent without a Content-Length. certs: a peer_certs.Certs, or
	None for plain HTTP. rogue: present the self-signed impostor. tls12:
	speak TLS 1.2 at most."""

	def __init__(self, certs, routes, rogue=False, host="127.0.0.1", tls12=False):
		import ssl
		self.routes = routes
		self.context = certs.server_context(rogue=rogue) if certs else None
		if tls12:
			self.context.maximum_version = ssl.TLSVersion.TLSv1_2
		self.lock = threading.Lock()
		self.requests = []
		self.handshakes = []  # (ok, error) per connection
		self.stopping = threading.Event()
		self.server = _Server((host, 0), _Handler)
		self.server.peer = self
		self.host = host
		self.port = self.server.server_address[1]
		self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
					       daemon=True)
		self.thread.start()

	def url(self, path, name=None):
		scheme = "https" if self.context else "http"
		return "%s://%s:%d%s" % (scheme, name or self.host, self.port, path)

	def _record_handshake(self, ok, error):
		with self.lock:
			self.handshakes.append((ok, error))

	def seen(self, path=None):
		"""The requests so far (to path only, when given)."""
		with self.lock:
			return [r for r in self.requests if path is None or r.path == path]

	def wait_requests(self, path, count, timeout=15):
		"""Waits until count requests to path came in; returns them all."""
		return wait_for(lambda: len(self.seen(path)) >= count and self.seen(path), timeout,
				"%d request(s) to %s at %s" % (count, path, self.url("")))

	def handshake_count(self, ok=True):
		with self.lock:
			return sum(1 for good, _ in self.handshakes if good == ok)

	def stop(self):
		self.stopping.set()
		self.server.shutdown()
		self.server.server_close()
