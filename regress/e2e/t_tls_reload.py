# A renewed certificate and key, written over the old files as certbot
# does, and SIGHUP: a session opened before it goes on and delivers; a new
# session sees the new certificate. A broken renewal, or one that the
# smtp process's OpenSSL would refuse (a SHA-1 signature), is logged and
# the last good certificate stays, across two SIGHUPs. The seccomp violation trigger still kills
# the smtp process from inside a TLS session; the restarted process, forked
# by a parent that has signed with the keys, holds no trace of them and
# serves TLS again.
import sys
sys.dont_write_bytecode = True
import shutil
import smtplib
from harness import *
from tls_util import *


def starttls_session(d, certs):
	s = smtplib.SMTP("127.0.0.1", d.port, timeout=10)
	s.ehlo("client.example")
	s.starttls(context=client_context(certs))
	s.ehlo("client.example")
	return s


def deliver(d, certs, tag):
	"""A message over STARTTLS; returns the fingerprint the client saw."""
	with starttls_session(d, certs) as s:
		s.sendmail("new@client.example", ["rcpt@test.laim.example"], simple_message(tag))
		return fingerprint(s.sock)


def main():
	d, certs, rsa = tls_laimd()
	d.start()
	old_fp = certs.sha256()

	before = starttls_session(d, certs)
	check_eq(fingerprint(before.sock), old_fp, "certificate of the session opened before SIGHUP")
	before.mail("before@client.example")
	check_eq(before.rcpt("rcpt@test.laim.example")[0], 250, "RCPT before SIGHUP")

	renewed_cert, renewed_key = ec_cert(certs, "renewed")
	new_fp = certs.sha256(renewed_cert)
	check(new_fp != old_fp, "the renewed certificate is the old one")
	shutil.copyfile(renewed_key, certs.key)
	shutil.copyfile(renewed_cert, certs.cert)
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"smtp: new sessions on listen\[0\] get the reloaded certificate$", since=mark)
	check_eq(deliver(d, certs, "after renewal"), new_fp, "certificate of a session opened after SIGHUP")

	code, _ = before.data(simple_message("opened before renewal"))
	check_eq(code, 250, "end of data of the session opened before SIGHUP")
	check_eq(fingerprint(before.sock), old_fp, "certificate of the older session after SIGHUP")
	before.quit()
	wait_maildir(d.maildir, 2)

	# A broken renewal: logged, and the last good certificate stays.
	with open(certs.cert, "w") as f:
		f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"laimd\.yml:\d+: listen\[0\]\.cert: %s: .*; keeping the previous configuration and certificates$"
		   % re.escape(certs.cert), since=mark)
	check_eq(deliver(d, certs, "after a broken renewal"), new_fp, "certificate after a broken renewal")

	# A renewal signed with SHA-1, which OpenSSL's security level refuses:
	# the last good certificate stays, and its key serves on across a
	# second SIGHUP that changes nothing.
	weak_cert, weak_key = rsa_cert(certs, "weak", digest="sha1")
	shutil.copyfile(weak_key, certs.key)
	shutil.copyfile(weak_cert, certs.cert)
	for n in (1, 2):
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"listen\[0\]\.cert: %s: the smtp process could not serve TLS with it: .*ca md too weak; "
			   r"keeping the previous configuration and certificates$" % re.escape(certs.cert), since=mark)
		check_eq(deliver(d, certs, "after weak renewal %d" % n), new_fp, "certificate after weak renewal %d" % n)

	# The seccomp trigger from inside a TLS session.
	old = d.children()
	s = starttls_session(d, certs)
	try:
		s.docmd("XSECCOMP")
	except smtplib.SMTPServerDisconnected:
		pass
	m = d.wait_log(r"smtp process \(pid (\d+)\) killed by signal SIGSYS \(seccomp violation\); restarting in \d+s$")
	check_eq(int(m.group(1)), old["smtp"], "pid in the seccomp log line")
	new = d.wait_children(15, old={"smtp": old["smtp"]})
	confined_status(new["smtp"])
	check_eq(deliver(d, certs, "after the seccomp kill"), new_fp, "certificate after the smtp restart")
	for keyfile in (renewed_key, rsa[1]):
		secrets = key_secrets(keyfile)
		check(secrets_in_memory(d.pid, secrets), "the parent holds nothing of %s" % keyfile)
		found = secrets_in_memory(d.child("smtp"), secrets)
		check(not found, "the restarted smtp process holds %s of %s" % (sorted(found), keyfile))
	wait_maildir(d.maildir, 6)
	check(not d.search_log(r"key service: refused"), "the parent refused a key operation")


run(main)
