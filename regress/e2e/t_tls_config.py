# `laimd -n` on the listen: mappings of issue 14: every unsafe or broken
# submission listener is refused with "FILE:LINE: key: what", exit 1 (an
# address other than loopback without TLS and auth: required, AUTH
# without TLS, TLS without a certificate, a key, users or senders file
# that group or others can read or write or that root does not own, an
# unreadable certificate, a key that is not RSA or ECDSA, a key that does
# not match the certificate, a key behind a passphrase, a certificate
# that the smtp process's OpenSSL refuses: an RSA-1024 key or a SHA-1
# signature below the security level, a curve outside the groups that a
# handshake offers). The handshakes checked are those that OpenSSL's
# system policy leaves (TLS 1.3 only, or 1.2 only). A certbot-style
# layout (live/ links into archive/) passes; the daemon refuses to start
# with a refused key as laimd -n does.
import sys
sys.dont_write_bytecode = True
import shutil
import subprocess
from harness import *
from peer_certs import Certs, _openssl
from tls_util import ec_cert, rsa_cert


def secret_file(path, text, mode=0o600, owner=(0, 0)):
	with open(path, "w") as f:
		f.write(text)
	os.chown(path, *owner)
	os.chmod(path, mode)
	return path


def config(d, entry):
	"""The config text with one listen entry (line 2 on), then the rest."""
	return ("listen:\n  - " + entry.replace("\n", "\n    ") + "\n"
		"user: %s\nhostname: %s\nspool: %s\nsocket: %s\n" % (TEST_USER, HOSTNAME, d.spool,
								  os.path.join(d.dir, "submit.sock")))


def expect_refused(d, what, entry, line, key, fragment):
	d.write_config(config(d, entry))
	r = laimd_n(d.confpath)
	err = r.stderr.decode(errors="replace")
	check_eq(r.returncode, 1, "%s: exit status of laimd -n (stderr %r)" % (what, err))
	prefix = "laimd: %s:%d: %s: " % (d.confpath, line, key)
	check(err.startswith(prefix) and fragment in err, "%s: expected %s...%s, got %r" % (what, prefix, fragment, err))
	return err


def main():
	d = Laimd()
	certs = Certs(os.path.join(d.dir, "certs"))
	c = certs.dir
	users = secret_file(os.path.join(c, "submit.passwd"), "alice:$6$salt$hash\n")
	senders = secret_file(os.path.join(c, "senders"), "alice: alice@client.example\n")
	tls = "addr: 192.0.2.1:587\ntls: starttls\ncert: %s\nkey: %s" % (certs.cert, certs.key)
	auth = "\nauth: required\nusers: %s" % users

	# certbot's layout: live/NAME/*.pem are links into archive/NAME/.
	archive, live = os.path.join(c, "archive"), os.path.join(c, "live")
	os.makedirs(archive)
	os.makedirs(live)
	shutil.copyfile(certs.cert, os.path.join(archive, "fullchain1.pem"))
	secret_file(os.path.join(archive, "privkey1.pem"), open(certs.key).read())
	os.symlink("../archive/fullchain1.pem", os.path.join(live, "fullchain.pem"))
	os.symlink("../archive/privkey1.pem", os.path.join(live, "privkey.pem"))
	good = ("addr: 192.0.2.1:587\ntls: starttls\ncert: %s/fullchain.pem\nkey: %s/privkey.pem%s\nsenders: %s"
		% (live, live, auth, senders))
	d.write_config(config(d, good))
	r = laimd_n(d.confpath)
	check_eq(r.returncode, 0, "laimd -n on a submission listener with certbot's links (stderr %r)" % r.stderr)
	# A system policy of one TLS version: the check makes the handshake
	# at that version, and not at the other.
	for bound in ("MinProtocol = TLSv1.3", "MaxProtocol = TLSv1.2"):
		cnf = openssl_policy_file(d.dir, bound)
		r = laimd_n(d.confpath, env={"OPENSSL_CONF": cnf})
		check_eq(r.returncode, 0, "laimd -n under OpenSSL's %s (stderr %r)" % (bound, r.stderr))

	expect_refused(d, "open relay", "0.0.0.0:25", 2, "listen[0]",
		       '"0.0.0.0" is not a loopback address: a listener for other hosts needs tls: starttls or '
		       "tls: implicit, and auth: required")
	expect_refused(d, "TLS without auth", tls, 2, "listen[0]", "is not a loopback address")
	expect_refused(d, "auth without TLS", "addr: 127.0.0.1:587\nauth: required\nusers: " + users, 2, "listen[0]",
		       "auth: required needs tls: starttls or tls: implicit (AUTH is only offered under TLS)")
	expect_refused(d, "auth without users", tls + "\nauth: required", 2, "listen[0]",
		       "auth: required needs users")
	expect_refused(d, "TLS without a certificate", "addr: 127.0.0.1:587\ntls: implicit\nkey: " + certs.key, 2,
		       "listen[0]", "tls needs cert")
	expect_refused(d, "unknown key", tls + auth + "\nciphers: all", 8, "listen[0].ciphers", "unknown key")

	rule = "must be owned by root and without access for group or others"
	for mode, owner in ((0o644, (0, 0)), (0o640, (0, 0)), (0o620, (0, 0)), (0o604, (0, 0)), (0o600, (d.uid, 0))):
		bad = secret_file(os.path.join(c, "bad"), open(certs.key).read(), mode, owner)
		expect_refused(d, "key mode %o uid %d" % (mode, owner[0]), tls.replace(certs.key, bad) + auth, 5,
			       "listen[0].key", "%s: refusing TLS key: %s" % (bad, rule))
		expect_refused(d, "users mode %o uid %d" % (mode, owner[0]), tls + auth.replace(users, bad), 7,
			       "listen[0].users", "%s: refusing users file: %s" % (bad, rule))
		expect_refused(d, "senders mode %o uid %d" % (mode, owner[0]), tls + auth + "\nsenders: " + bad, 8,
			       "listen[0].senders", "%s: refusing senders file: %s" % (bad, rule))
	missing = os.path.join(c, "missing.pem")
	expect_refused(d, "missing certificate", tls.replace(certs.cert, missing) + auth, 4, "listen[0].cert",
		       missing + ": No such file or directory")
	expect_refused(d, "no certificate in the file", tls.replace(certs.cert, users) + auth, 4, "listen[0].cert",
		       users + ": no PEM certificate")

	_openssl(["genpkey", "-algorithm", "ed25519", "-out", "ed.key"], c)
	ed = secret_file(os.path.join(c, "ed.key"), open(os.path.join(c, "ed.key")).read())
	expect_refused(d, "Ed25519 key", tls.replace(certs.key, ed) + auth, 5, "listen[0].key",
		       "%s: a ED25519 key; laim takes RSA and ECDSA keys" % ed)
	expect_refused(d, "key of another certificate", tls.replace(certs.key, certs.rogue_key) + auth, 5,
		       "listen[0].key", "%s: does not match the certificate %s" % (certs.rogue_key, certs.cert))
	_openssl(["pkey", "-in", certs.key, "-aes256", "-passout", "pass:secret", "-out", "locked.key"], c)
	locked = secret_file(os.path.join(c, "locked.key"), open(os.path.join(c, "locked.key")).read())
	expect_refused(d, "key behind a passphrase", tls.replace(certs.key, locked) + auth, 5, "listen[0].key",
		       "%s: no PEM private key without a passphrase" % locked)

	for what, (cert, key), why in (
		("RSA-1024 key", rsa_cert(certs, "rsa1024", bits=1024), "ee key too small"),
		("SHA-1 signature", rsa_cert(certs, "sha1", digest="sha1"), "ca md too weak"),
		("secp256k1 key", ec_cert(certs, "k1", curve="secp256k1"), "a TLS 1.2 handshake with it fails: ")):
		err = expect_refused(d, what, tls.replace(certs.cert, cert).replace(certs.key, key) + auth, 4,
				     "listen[0].cert", "%s: the smtp process could not serve TLS with it: " % cert)
		check(why in err, "%s: laimd -n does not say %r: %r" % (what, why, err))

	# The daemon refuses it the same way, before it binds anything.
	bad = secret_file(os.path.join(c, "bad"), open(certs.key).read(), 0o644)
	d.write_config(config(d, tls.replace(certs.key, bad) + auth))
	r = subprocess.run([laimd_path(), "-d", "-f", d.confpath], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
			   timeout=20)
	err = r.stderr.decode(errors="replace")
	check_eq(r.returncode, 1, "laimd -d with a readable key (stderr %r)" % err)
	check("listen[0].key: %s: refusing TLS key" % bad in err, "laimd -d does not say why: %r" % err)


run(main)
