# The parent's key service, from a subverted smtp process: the case takes
# a copy of the smtp process's key channel (pidfd_getfd) and sends what
# such a process could. The parent signs a digest with the ECDSA key
# (the signature verifies against the certificate), refuses an unknown key
# id, an input too large for the key, an RSA operation on the ECDSA key,
# a padding it does not do and a raw RSA operation on anything but a PSS
# encoding (a ciphertext of the RSA key, which it would have decrypted),
# each with an answer and a log line, while the PSS encoding of a digest
# comes back as a signature that verifies; a
# malformed request ends the smtp process, never the parent, and the
# restarted smtp process serves TLS again. A reload that renews no
# certificate keeps the key ids. Handshakes that fail or time out
# (timeout: 3, which bounds the handshake too) log one line each.
# A test build's smtp process that refuses a chain the parent's check
# passed (LAIM_TEST_SMTP_REFUSE_TLS): at start, the STARTTLS listener
# answers STARTTLS with 454 and the implicit TLS one refuses its clients, each
# said in the log (the refused clients in one line a minute, and their
# count when a reload brings the certificate); at reload, it keeps its previous certificate, whose
# key the parent keeps serving across two reloads.
import sys
sys.dont_write_bytecode = True
import hashlib
import shutil
import signal
import smtplib
import ssl
import socket
import struct
import subprocess
from harness import *
from tls_util import *

T_RSA_PRIV_ENC, T_ECDSA_SIGN, K_RESULT = 600, 601, 602
EC_KEY_ID, RSA_KEY_ID = 1, 2  # the parent numbers the keys of listen[0], listen[1] from 1
RSA_PKCS1_PADDING, RSA_NO_PADDING, RSA_PKCS1_OAEP_PADDING = 1, 3, 4


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


def pss_encoding(digest, em_bits):
	"""EMSA-PSS (RFC 8017 9.1.1) of a SHA-256 digest, salt of 32 bytes, as
	OpenSSL makes it for TLS: what the smtp process sends for a raw RSA
	operation."""
	h_len = len(digest)
	em_len = (em_bits + 7) // 8
	salt = os.urandom(h_len)
	h = hashlib.sha256(b"\0" * 8 + digest + salt).digest()
	db = b"\0" * (em_len - 2 * h_len - 2) + b"\1" + salt
	mask = b"".join(hashlib.sha256(h + struct.pack(">I", i)).digest() for i in range(len(db) // h_len + 1))
	masked = bytearray(a ^ b for a, b in zip(db, mask))
	masked[0] &= 0xff >> (8 * em_len - em_bits)
	return bytes(masked) + h + b"\xbc"


def raw_rsa(d, chan, rsa):
	"""The raw RSA operation: a PSS encoding is signed, a ciphertext is not
	decrypted."""
	digest = hashlib.sha256(b"laim raw").digest()
	with open(os.path.join(d.dir, "digest"), "wb") as f:
		f.write(digest)
	for salt in range(16):  # half of the encodings have the mask's top bit set, which EM clears
		ok, sig = request(chan, T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_NO_PADDING, pss_encoding(digest, 2047))
		check_eq((ok, len(sig)), (1, 256), "raw RSA operation on a PSS encoding (salt %d)" % salt)
	with open(os.path.join(d.dir, "sig.pss"), "wb") as f:
		f.write(sig)
	subprocess.run(["openssl", "x509", "-in", rsa[0], "-pubkey", "-noout", "-out", "rsa.pub"], cwd=d.dir, check=True)
	r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "rsa.pub", "-in", "digest", "-sigfile",
			    "sig.pss", "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "digest:sha256",
			    "-pkeyopt", "rsa_pss_saltlen:32"], cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	check(r.returncode == 0, "the parent's PSS signature does not verify: %s" % r.stdout.decode(errors="replace"))

	secret = b"\0" + os.urandom(255)
	with open(os.path.join(d.dir, "secret"), "wb") as f:
		f.write(secret)
	ciphertext = subprocess.run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", "rsa.pub", "-in", "secret",
				     "-pkeyopt", "rsa_padding_mode:none"], cwd=d.dir, stdout=subprocess.PIPE,
				    check=True).stdout
	refused(d, chan, "a ciphertext of the RSA key", T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_NO_PADDING, ciphertext,
		"a raw RSA operation on a block that is not a PSS signature's encoding")
	tampered = bytearray(pss_encoding(digest, 2047))
	tampered[100] ^= 1  # in the padding's zeros once unmasked
	refused(d, chan, "a PSS encoding with a bit flipped", T_RSA_PRIV_ENC, RSA_KEY_ID, RSA_NO_PADDING,
		bytes(tampered), "a raw RSA operation on a block that is not a PSS signature's encoding")


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
	d.one_cpu = True  # its key channel is stolen by age
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
	raw_rsa(d, chan, rsa)
	check_eq(d.child("smtp"), smtp_pid, "smtp pid after refused requests")

	# Reloads that renew nothing keep the key ids: a handshake whose
	# context is older than the last two loads is still served.
	for _ in range(2):
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=mark)
	ok, sig = request(chan, T_ECDSA_SIGN, EC_KEY_ID, 0, digest)
	check_eq(ok, 1, "ECDSA signature under the key id of the start, after two reloads that renewed nothing")

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
	d.stop()
	smtp_refuses_at_start()
	smtp_refuses_at_reload()


def smtp_refuses_at_start():
	d, certs, rsa = tls_laimd()
	d.wrap(setup="export LAIM_TEST_SMTP_REFUSE_TLS=start")
	d.start()
	d.wait_log(r"smtp: listen\[0\] serves no TLS \(STARTTLS gets 454\): TLS context: refused for the test$")
	d.wait_log(r"smtp: listen\[1\] serves no TLS \(it refuses every client\): TLS context: refused for the test$")
	with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
		s.ehlo("client.example")
		check(s.has_extn("starttls"), "STARTTLS not offered without a certificate: %r" % s.ehlo_resp)
		check_eq(s.docmd("STARTTLS"), (454, b"4.7.0 TLS not available due to temporary reason"),
			 "STARTTLS without a certificate")
	mark = d.mark()
	for n in range(20):
		with socket.create_connection((IMPLICIT_HOST, d.port), timeout=10) as c:
			check_eq(c.recv(100), b"", "what the implicit TLS listener without a certificate sends")
	d.wait_log(r"smtp: refused a client on \S+: its certificate did not load$", since=mark)
	time.sleep(0.5)
	refused = d.findall_log(r"smtp: refused .*: its certificate did not load$", since=mark)
	check_eq(len(refused), 1, "lines for 20 clients refused within a minute")
	# The reload loads the certificate: the count since the line is logged.
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"smtp: refused 19 clients on \S+ in the last \d+s: its certificate did not load$", since=mark)
	with socket.create_connection((IMPLICIT_HOST, d.port), timeout=10) as c:
		with client_context(certs, check_hostname=False).wrap_socket(c) as t:
			check_eq(t.recv(100)[:4], b"220 ", "the implicit TLS listener's greeting after the reload")
	d.stop()


def smtp_refuses_at_reload():
	d, certs, rsa = tls_laimd()
	d.wrap(setup="export LAIM_TEST_SMTP_REFUSE_TLS=reload")
	d.start()
	old_fp = certs.sha256()
	renewed_cert, renewed_key = ec_cert(certs, "renewed")
	shutil.copyfile(renewed_key, certs.key)
	shutil.copyfile(renewed_cert, certs.cert)
	for n in (1, 2):
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"smtp: keeping the previous certificate of listen\[0\]: TLS context: refused for the test$",
			   since=mark)
		with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
			try:
				s.starttls(context=client_context(certs))
			except ssl.SSLError as e:
				raise Fail("STARTTLS after reload %d, the smtp process on its previous certificate: %s" % (n, e))
			check_eq(fingerprint(s.sock), old_fp, "certificate after reload %d" % n)
			s.sendmail("kept@client.example", ["rcpt@test.laim.example"], simple_message("reload %d" % n))
	wait_maildir(d.maildir, 2)
	check(not d.search_log(r"key service: refused"), "the parent retired the key the smtp process kept")
	d.stop()


run(main)
