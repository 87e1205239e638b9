# The parent's key service, from a subverted smtp process: the case takes
# a copy of the smtp process's key channel (pidfd_getfd) and sends what
# such a process could. The parent signs a digest with the ECDSA key
# (the signature verifies against the certificate), refuses an unknown key
# id, an input too large for the key, an RSA operation on the ECDSA key
# and a padding it does not do, each with an answer and a log line; a
# malformed request ends the smtp process, never the parent, and the
# restarted smtp process serves TLS again. Handshakes that fail or time
# out (timeout: 3, which bounds the handshake too) log one line each.
import sys
sys.dont_write_bytecode = True
import hashlib
import smtplib
import socket
import struct
import subprocess
from harness import *
from tls_util import *

T_RSA_PRIV_ENC, T_ECDSA_SIGN, K_RESULT = 600, 601, 602
EC_KEY_ID, RSA_KEY_ID = 1, 2  # the parent numbers the keys of listen[0], listen[1] from 1
RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING = 1, 4


def request(chan, type, key_id, padding, data, peerid=1):
	"""One key operation; returns (ok, result bytes) of the parent's answer."""
	payload = struct.pack("<III", key_id, padding, len(data)) + data
	chan.send(struct.pack("<IIII", type, 16 + len(payload), peerid, 0) + payload)
	chan.settimeout(10)
	frame = chan.recv(65536)
	rtype, rlen, rpeer, _ = struct.unpack("<IIII", frame[:16])
	check_eq((rtype, rlen, rpeer), (K_RESULT, len(frame), peerid), "answer frame header")
	ok, n = struct.unpack("<II", frame[16:24])
	check_eq(len(frame), 24 + n, "answer length")
	return ok, frame[24:]


def refused(d, chan, what, type, key_id, padding, data, why):
	mark = d.mark()
	ok, out = request(chan, type, key_id, padding, data)
	check_eq((ok, out), (0, b""), "answer to %s" % what)
	d.wait_log(r"key service: refused IMSG_T_\w+ from the smtp process: %s$" % re.escape(why), since=mark)


def failed_handshakes(d):
	"""A client that sends nothing after connecting to the implicit TLS
	listener, and one that talks in the clear after STARTTLS's 220."""
	mark = d.mark()
	silent = socket.create_connection((IMPLICIT_HOST, d.port), timeout=10)
	c = d.smtp()
	c.ehlo()
	c.cmd("STARTTLS", expect=220)
	c.send("EHLO client.example\r\n")
	check(c.wait_closed(10), "connection open after plain text where a handshake belongs")
	print(d.wait_log(r"smtp: TLS handshake failed from 127\.0\.0\.1: error:[0-9A-F]+:SSL routines::\S.*$",
			 since=mark).group(0))
	started = time.monotonic()
	print(d.wait_log(r"smtp: TLS handshake failed from 127\.0\.0\.1: timed out$", timeout=10, since=mark).group(0))
	check(time.monotonic() - started < 8, "the handshake of a silent client was not ended after timeout: 3")
	silent.settimeout(5)
	check_eq(silent.recv(100), b"", "what a silent client got before its connection closed")
	silent.close()


def main():
	d, certs, rsa = tls_laimd(timeout=3)
	d.start()
	failed_handshakes(d)
	smtp_pid = d.child("smtp")
	chan = steal_seqpacket(smtp_pid, max)  # the key channel is the last pair the parent made for smtp

	digest = hashlib.sha256(b"laim").digest()
	ok, sig = request(chan, T_ECDSA_SIGN, EC_KEY_ID, 0, digest)
	check_eq(ok, 1, "ECDSA signature of a digest")
	with open(os.path.join(d.dir, "sig.der"), "wb") as f:
		f.write(sig)
	with open(os.path.join(d.dir, "digest"), "wb") as f:
		f.write(digest)
	pub = subprocess.run(["openssl", "x509", "-in", certs.cert, "-pubkey", "-noout"], stdout=subprocess.PIPE,
			     check=True).stdout
	with open(os.path.join(d.dir, "pub.pem"), "wb") as f:
		f.write(pub)
	r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "digest", "-sigfile",
			    "sig.der"], cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	check(r.returncode == 0, "the parent's signature does not verify: %s" % r.stdout.decode(errors="replace"))

	refused(d, chan, "an unknown key id", T_ECDSA_SIGN, 77, 0, digest, "unknown key id 77")
	refused(d, chan, "a digest too long", T_ECDSA_SIGN, EC_KEY_ID, 0, b"x" * 65, "input of 65 bytes")
	refused(d, chan, "an empty input", T_ECDSA_SIGN, EC_KEY_ID, 0, b"", "input of 0 bytes")
	refused(d, chan, "RSA on the ECDSA key", T_RSA_PRIV_ENC, EC_KEY_ID, RSA_PKCS1_PADDING, digest,
		"operation for another key type")
	refused(d, chan, "input larger than the RSA key", T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_PKCS1_PADDING, b"x" * 257,
		"input of 257 bytes")
	refused(d, chan, "OAEP padding", T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_PKCS1_OAEP_PADDING, digest, "padding 4")
	ok, sig = request(chan, T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_PKCS1_PADDING, digest)
	check_eq((ok, len(sig)), (1, 256), "RSA PKCS#1 signature of 32 bytes")
	check_eq(d.child("smtp"), smtp_pid, "smtp pid after refused requests")

	# A malformed request: a payload shorter than its fields.
	mark = d.mark()
	chan.send(struct.pack("<IIII", T_ECDSA_SIGN, 16 + 6, 1, 0) + b"\x01\x00\x00\x00\x00\x00")
	d.wait_log(r"smtp process broke the key protocol \(malformed IMSG_T_ECDSA_SIGN\): ending it$", since=mark)
	d.wait_log(r"smtp process \(pid %d\) killed by signal SIGKILL; restarting in \d+s$" % smtp_pid, since=mark)
	chan.close()
	d.wait_children(15, old={"smtp": smtp_pid})
	check(d.running(), "the parent ended")
	with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
		s.starttls(context=client_context(certs))
		s.sendmail("after@client.example", ["rcpt@test.laim.example"], simple_message("after a malformed request"))
	wait_maildir(d.maildir, 1)


run(main)
