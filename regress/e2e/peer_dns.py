# A private network for the cases whose laimd asks DNS (the forward
# handler's DMARC lookups), so that no query ever leaves the machine:
#
#   enter_private_network()  re-executes the case, as root, under
#                            unshare(1) in new network and mount
#                            namespaces: only a loopback interface (brought
#                            up), and /etc/resolv.conf bind-mounted to
#                            "nameserver 127.0.0.1" in the new namespace
#                            alone. Ports, users, /etc/hosts and the
#                            files the case writes are the machine's.
#   DnsPeer(records)         a DNS server on 127.0.0.1:53 of that network
#                            (a thread of the case, Python's standard
#                            library): TXT answers from records
#                            ({name: [text, ...]}), SERVFAIL for the names
#                            in servfail, NXDOMAIN for any other; every
#                            question is written down (queries).

import os
import socket
import struct
import subprocess
import sys
import threading

from harness import Fail

_MARK = "LAIM_E2E_PRIVATE_NETWORK"


def enter_private_network():
	"""Called first by the case: outside the namespaces it re-executes
	itself inside them (never returning); inside it sets them up. Not
	root: nothing happens, and harness.run() skips the case."""
	if os.geteuid() != 0:
		return
	if os.environ.get(_MARK) != "1":
		env = dict(os.environ, **{_MARK: "1"})
		argv = ["unshare", "--net", "--mount", "--propagation", "private", "--",
			sys.executable] + sys.argv
		sys.stdout.flush()
		try:
			os.execvpe("unshare", argv, env)
		except OSError as e:
			print("FAIL: cannot run unshare(1) for a private network: %s" % e)
			sys.exit(1)
	r = subprocess.run(["ip", "link", "set", "lo", "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	if r.returncode != 0:
		print("FAIL: ip link set lo up: %s" % r.stdout.decode(errors="replace"))
		sys.exit(1)
	_private_resolv_conf()


def _private_resolv_conf():
	"""/etc/resolv.conf of this mount namespace: 127.0.0.1 only."""
	path = "/run/laim-e2e-resolv.conf.%d" % os.getpid()
	with open(path, "w") as f:
		f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
	os.chmod(path, 0o644)
	r = subprocess.run(["mount", "--bind", path, "/etc/resolv.conf"], stdout=subprocess.PIPE,
			   stderr=subprocess.STDOUT)
	os.unlink(path)  # the mount keeps the file
	if r.returncode != 0:
		print("FAIL: bind-mounting /etc/resolv.conf: %s" % r.stdout.decode(errors="replace"))
		sys.exit(1)


def check_private_network():
	"""Fails unless the case runs where no packet can leave: one network
	interface, lo, and the resolver pointed at 127.0.0.1."""
	with open("/proc/net/dev") as f:  # this network namespace's (/sys shows the machine's)
		ifaces = sorted(l.split(":")[0].strip() for l in f.readlines()[2:])
	if ifaces != ["lo"]:
		raise Fail("not in a private network namespace: interfaces %r" % ifaces)
	with open("/etc/resolv.conf") as f:
		servers = [l.split()[1] for l in f if l.startswith("nameserver")]
	if servers != ["127.0.0.1"]:
		raise Fail("/etc/resolv.conf names %r, not 127.0.0.1 alone" % servers)


TXT, NXDOMAIN, SERVFAIL = 16, 3, 2


def _question(packet):
	"""(name, qtype, end offset) of a query's one question."""
	labels, pos = [], 12
	while packet[pos]:
		n = packet[pos]
		labels.append(packet[pos + 1:pos + 1 + n].decode("ascii", "replace"))
		pos += 1 + n
	qtype, = struct.unpack("!H", packet[pos + 1:pos + 3])
	return ".".join(labels).lower(), qtype, pos + 5


def _txt_rdata(text):
	"""A TXT record's data: the text in character-strings of 255 bytes."""
	raw = text.encode()
	chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
	return b"".join(bytes([len(c)]) + c for c in chunks)


class DnsPeer:
	def __init__(self, records, servfail=()):
		self.records = {k.lower(): v for k, v in records.items()}
		self.servfail = {n.lower() for n in servfail}
		self.queries = []  # (name, qtype)
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
		try:
			self.sock.bind(("127.0.0.1", 53))
		except OSError as e:
			raise Fail("the DNS peer cannot bind 127.0.0.1:53: %s" % e)
		threading.Thread(target=self._serve, daemon=True).start()

	def answer(self, query):
		name, qtype, end = _question(query)
		self.queries.append((name, qtype))
		rcode, answers = 0, []
		if name in self.servfail:
			rcode = SERVFAIL
		elif name not in self.records:
			rcode = NXDOMAIN
		elif qtype == TXT:
			answers = self.records[name]
		flags = 0x8080 | (query[2] & 0x01) << 8 | rcode  # QR, RA, RD as asked
		head = query[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, 0)
		out = head + query[12:end]
		for text in answers:
			rdata = _txt_rdata(text)
			out += struct.pack("!HHHIH", 0xC00C, TXT, 1, 60, len(rdata)) + rdata
		return out

	def _serve(self):
		while True:
			try:
				query, addr = self.sock.recvfrom(4096)
				self.sock.sendto(self.answer(query), addr)
			except (OSError, IndexError, struct.error):
				continue
