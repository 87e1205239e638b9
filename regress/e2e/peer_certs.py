# Certificates for the cases whose peers speak TLS (smarthost, webhook):
# a private CA, a server certificate it signs for localhost and
# 127.0.0.1, and a rogue self-signed certificate with the same names,
# all made with openssl(1) in the case's directory.

import os
import subprocess

from harness import Fail


def _openssl(args, cwd):
	r = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	if r.returncode != 0:
		raise Fail("openssl %s: %s" % (" ".join(args), r.stdout.decode(errors="replace")))


class Certs:
	"""Files in DIR: ca.pem (the CA laim is told to trust), server.pem and
	server.key (signed by it), rogue.pem and rogue.key (self-signed, same
	names). Every key is readable by its owner only."""

	SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"

	def __init__(self, directory):
		self.dir = directory
		os.makedirs(directory, exist_ok=True)
		self.ca = os.path.join(directory, "ca.pem")
		self.cert = os.path.join(directory, "server.pem")
		self.key = os.path.join(directory, "server.key")
		self.rogue_cert = os.path.join(directory, "rogue.pem")
		self.rogue_key = os.path.join(directory, "rogue.key")
		key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
		_openssl(["req", "-x509"] + key + ["-subj", "/CN=laim test CA", "-keyout", "ca.key", "-out", "ca.pem"],
			 directory)
		_openssl(["req"] + key[:-2] + ["-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"],
			 directory)
		with open(os.path.join(directory, "san.ext"), "w") as f:
			f.write(self.SAN + "\n")
		_openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
			  "-days", "2", "-extfile", "san.ext", "-out", "server.pem"], directory)
		_openssl(["req", "-x509"] + key + ["-subj", "/CN=localhost", "-addext", self.SAN,
						   "-keyout", "rogue.key", "-out", "rogue.pem"], directory)
		for name in ("ca.key", "server.key", "rogue.key"):
			os.chmod(os.path.join(directory, name), 0o600)
		os.chmod(directory, 0o755)
		os.chmod(self.ca, 0o644)

	def sha256(self, cert=None):
		"""The SHA-256 fingerprint of a certificate, as AA:BB:... ."""
		r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", cert or self.cert],
				   stdout=subprocess.PIPE, check=True)
		return r.stdout.decode().strip().split("=", 1)[1]

	def server_context(self, rogue=False):
		"""An ssl.SSLContext for a server presenting the good (or the
		rogue) certificate."""
		import ssl
		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		if rogue:
			ctx.load_cert_chain(self.rogue_cert, self.rogue_key)
		else:
			ctx.load_cert_chain(self.cert, self.key)
		return ctx
