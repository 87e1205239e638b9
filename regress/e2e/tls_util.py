# What the TLS cases share: a laimd with a STARTTLS listener (ECDSA key)
# on 127.0.0.1 and an implicit TLS listener (RSA key) on 127.0.0.2, both
# signed by the test CA of peer_certs.py; client contexts that verify
# against that CA; a certificate's fingerprint as a client saw it; and the
# private numbers of a key, for the memory checks.
import hashlib
import re
import ssl
import subprocess

from harness import *
from peer_certs import Certs, _openssl

IMPLICIT_HOST = "127.0.0.2"


def rsa_cert(certs, name, san="DNS:localhost,IP:127.0.0.1,IP:127.0.0.2", bits=2048, digest="sha256"):
	"""NAME.pem and NAME.key in the certs' directory: an RSA key of BITS and
	a certificate for it that the test CA signs with DIGEST. Returns
	(cert, key)."""
	d = certs.dir
	_openssl(["req", "-newkey", "rsa:%d" % bits, "-nodes", "-subj", "/CN=localhost", "-keyout", name + ".key",
		  "-out", name + ".csr"], d)
	with open(os.path.join(d, name + ".ext"), "w") as f:
		f.write("subjectAltName=%s\n" % san)
	_openssl(["x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
		  "-days", "2", "-" + digest, "-extfile", name + ".ext", "-out", name + ".pem"], d)
	key = os.path.join(d, name + ".key")
	os.chmod(key, 0o600)
	return os.path.join(d, name + ".pem"), key


def ec_cert(certs, name, curve="prime256v1"):
	"""Like rsa_cert, with an EC key on CURVE (P-256)."""
	d = certs.dir
	_openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + curve, "-nodes", "-subj", "/CN=localhost",
		  "-keyout", name + ".key", "-out", name + ".csr"], d)
	_openssl(["x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
		  "-days", "2", "-extfile", "san.ext", "-out", name + ".pem"], d)
	key = os.path.join(d, name + ".key")
	os.chmod(key, 0o600)
	return os.path.join(d, name + ".pem"), key


def tls_laimd(**config):
	"""A Laimd (not started) whose listen[0] is STARTTLS on 127.0.0.1:PORT
	with certs.cert/key (ECDSA) and listen[1] implicit TLS on
	127.0.0.2:PORT with an RSA certificate. Returns (d, certs, rsa)."""
	d = Laimd(**config)
	certs = Certs(os.path.join(d.dir, "certs"))
	rsa = rsa_cert(certs, "rsa")
	d.config["listen"] = [
		{"addr": "127.0.0.1:{port}", "tls": "starttls", "cert": certs.cert, "key": certs.key},
		{"addr": IMPLICIT_HOST + ":{port}", "tls": "implicit", "cert": rsa[0], "key": rsa[1]},
	]
	return d, certs, rsa


def client_context(certs, **kw):
	"""A client context that verifies the server against the test CA."""
	ctx = ssl.create_default_context(cafile=certs.ca)
	for k, v in kw.items():
		setattr(ctx, k, v)
	return ctx


def fingerprint(sslsock):
	"""The SHA-256 fingerprint of the certificate the server presented, as
	Certs.sha256 writes it."""
	h = hashlib.sha256(sslsock.getpeercert(binary_form=True)).hexdigest().upper()
	return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def key_secrets(keyfile):
	"""The private numbers of a PEM key (EC: the scalar; RSA: the private
	exponent and both primes) as bytes, and a line of the key file's
	base64 body, by name."""
	text = subprocess.run(["openssl", "pkey", "-in", keyfile, "-text", "-noout"], stdout=subprocess.PIPE,
			      check=True).stdout.decode()
	out = {}
	for name in ("priv", "privateExponent", "prime1", "prime2"):
		m = re.search(r"^%s:\s*\n((?:\s+[0-9a-f:]+\n)+)" % name, text, re.M)
		if m:
			out[name] = bytes.fromhex(re.sub(r"[\s:]", "", m.group(1))).lstrip(b"\0")
	check(out, "no private numbers in %s" % keyfile)
	body = [l for l in open(keyfile).read().splitlines() if not l.startswith("-----")]
	out["pem body line"] = body[len(body) // 2].encode()
	return out


def secrets_in_memory(pid, secrets, skip=()):
	"""Which of secrets (name -> bytes) the readable mappings of process
	pid hold, as it stores them (big-endian, as in the DER) or reversed
	(little-endian, as OpenSSL's BIGNUM words hold them on this machine).
	Mappings are read in pieces that overlap by the longest secret; those
	larger than 1 GiB are not read: a sanitizer build's shadow memory,
	reserved terabytes that hold no data of the program; nor those
	named in skip ("[stack]")."""
	found = set()
	needles = [(name, n) for name, b in secrets.items() for n in (b, b[::-1])]
	overlap = max(len(b) for b in secrets.values())
	chunk = 16 << 20
	with open("/proc/%d/maps" % pid) as f:
		maps = f.read().splitlines()
	with open("/proc/%d/mem" % pid, "rb", 0) as mem:
		for line in maps:
			addr, perms = line.split()[:2]
			lo, hi = (int(x, 16) for x in addr.split("-"))
			if perms[0] != "r" or hi - lo > 1 << 30 or line.split()[-1] in skip:
				continue
			tail = b""
			for at in range(lo, hi, chunk):
				try:
					mem.seek(at)
					data = tail + mem.read(min(chunk, hi - at))
				except (OSError, OverflowError, ValueError):
					break
				found.update(name for name, n in needles if n in data)
				tail = data[-overlap:]
	return found
