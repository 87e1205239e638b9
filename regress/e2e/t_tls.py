# TLS on a submission listener (issue 14, section 2). A STARTTLS listener
# (ECDSA key) and an implicit TLS listener (RSA key), with certificates of
# the test CA: swaks and smtplib deliver over STARTTLS, verifying the
# server, and smtplib over implicit TLS; STARTTLS is offered before TLS
# only, and the session starts over after it (a second EHLO, no HELO kept);
# TLS 1.1 is refused with one log line; no session ticket is issued (TLS
# 1.2 and 1.3); what a client sends behind STARTTLS in the same write is
# dropped (CVE-2011-0411); during a TLS session the smtp process is
# confined and its memory holds neither key, which the parent's does; a
# pending handshake holds no stop; beyond max_sessions the implicit TLS
# port closes without a 421 in the clear.
import sys
sys.dont_write_bytecode = True
import smtplib
import socket
import ssl
import time
import subprocess
from harness import *
from tls_util import *


def swaks_starttls(d, certs):
	r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--tls", "--tls-verify", "--tls-ca-path",
			    certs.ca, "--tls-sni", "localhost", "--from", "swaks@client.example", "--to",
			    "rcpt@test.laim.example", "--header", "Subject: over swaks"],
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode == 0, "swaks failed:\n%s" % out)
	check(re.search(r"^<-  250-STARTTLS", out, re.M), "STARTTLS not offered to swaks:\n%s" % out)
	check(re.search(r"^=== TLS started with cipher TLSv1\.[23]", out, re.M), "swaks did not start TLS:\n%s" % out)
	check(re.search(r"^<~  250 2\.0\.0 Ok: queued as", out, re.M), "not queued over TLS:\n%s" % out)


def smtplib_starttls(d, certs):
	"""smtplib with STARTTLS: returns the TLS version it got."""
	with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
		s.ehlo("client.example")
		check(s.has_extn("starttls"), "STARTTLS not in the EHLO reply: %r" % s.esmtp_features)
		code, _ = s.starttls(context=client_context(certs))
		check_eq(code, 220, "reply to STARTTLS")
		# RFC 3207 4.2: the session starts over; a MAIL now needs EHLO.
		code, _ = s.docmd("MAIL", "FROM:<a@client.example>")
		check_eq(code, 503, "MAIL right after STARTTLS, before a new EHLO")
		s.ehlo("client.example")
		check(not s.has_extn("starttls"), "STARTTLS offered again under TLS: %r" % s.esmtp_features)
		code, msg = s.docmd("STARTTLS")
		check_eq((code, msg), (503, b"5.5.1 Error: TLS already active"), "STARTTLS under TLS")
		s.sendmail("smtplib@client.example", ["rcpt@test.laim.example"], simple_message("over smtplib starttls"))
		version = s.sock.version()
		check(not s.sock.session.has_ticket, "a session ticket was issued (%s)" % version)
	return version


def smtplib_implicit(certs, port):
	with smtplib.SMTP_SSL(IMPLICIT_HOST, port, context=client_context(certs), timeout=10) as s:
		s.ehlo("client.example")
		check(not s.has_extn("starttls"), "STARTTLS offered on implicit TLS: %r" % s.esmtp_features)
		s.sendmail("implicit@client.example", ["rcpt@test.laim.example"], simple_message("over implicit tls"))
		check(not s.sock.session.has_ticket, "a session ticket was issued on implicit TLS")


def no_ticket_tls12(certs, port):
	"""TLS 1.2 carries tickets in the handshake: none must come."""
	ctx = client_context(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
	with smtplib.SMTP_SSL(IMPLICIT_HOST, port, context=ctx, timeout=10) as s:
		check_eq(s.sock.version(), "TLSv1.2", "protocol with a TLS 1.2 client")
		s.noop()
		check(not s.sock.session.has_ticket, "a session ticket was issued (TLS 1.2)")


def tls11_refused(d, certs):
	ctx = client_context(certs, minimum_version=ssl.TLSVersion.TLSv1_1, maximum_version=ssl.TLSVersion.TLSv1_1)
	ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
	mark = d.mark()
	try:
		with socket.create_connection((IMPLICIT_HOST, d.port), timeout=10) as raw:
			with ctx.wrap_socket(raw, server_hostname="localhost") as s:
				raise Fail("a TLS 1.1 handshake succeeded (%s)" % s.version())
	except ssl.SSLError:
		pass
	d.wait_log(r"smtp: TLS handshake failed from 127\.0\.0\.1: .*unsupported protocol$", since=mark)


def injection(d, certs):
	"""STARTTLS with RSET behind it in one write: the RSET was sent in the
	clear, so it must not be answered, neither in the clear nor under TLS."""
	c = d.smtp()
	c.ehlo()
	c.send("STARTTLS\r\nRSET\r\n")
	c.expect(220)
	check_eq(c.buf, b"", "bytes in the clear after the 220 to STARTTLS")
	c.sock.settimeout(10)
	c.sock = client_context(certs).wrap_socket(c.sock, server_hostname="localhost")
	try:
		line = c.read_line(timeout=1.5)
	except (socket.timeout, Fail):
		line = None
	check(line is None, "the RSET sent before the handshake was answered under TLS: %r" % line)
	r = c.cmd("EHLO client.example", expect=250)
	check_eq(r.lines[0], "250-" + HOSTNAME, "first reply under TLS (not EHLO's: the RSET sent in the clear was answered)")
	check("STARTTLS" not in r.text, "STARTTLS offered after the handshake: %r" % r.text)
	c.cmd("QUIT", expect=221)
	c.close()


def confinement_and_memory(d, certs, rsa):
	"""During a TLS session: the smtp process's status, and neither key in
	its memory nor the handler's, while the parent holds both."""
	with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
		s.starttls(context=client_context(certs))
		s.ehlo("client.example")
		with smtplib.SMTP_SSL(IMPLICIT_HOST, d.port, context=client_context(certs), timeout=10) as t:
			t.ehlo("client.example")
			kids = d.children()
			st = proc_status(kids["smtp"])
			print("smtp process /proc status during a TLS session: Uid %s, CapEff %s, NoNewPrivs %s, Seccomp %s"
			      % (st["Uid"], st["CapEff"], st["NoNewPrivs"], st["Seccomp"]))
			uid = str(d.smtp_uid)  # smtp_user, not the handler's user
			check_eq(st["Uid"].split(), [uid] * 4, "Uid of smtp")
			check_eq(st["CapEff"], "0000000000000000", "CapEff of smtp")
			check_eq(st["NoNewPrivs"], "1", "NoNewPrivs of smtp")
			check_eq(st["Seccomp"], "2", "Seccomp of smtp")
			for keyfile in (certs.key, rsa[1]):
				secrets = key_secrets(keyfile)
				check(secrets_in_memory(d.pid, secrets),
				      "the parent holds nothing of %s: the memory check finds nothing" % keyfile)
				for who in ("smtp", "handler"):
					found = secrets_in_memory(kids[who], secrets)
					check(not found, "the %s process's memory holds %s of %s" % (who, sorted(found), keyfile))
			t.noop()
		s.noop()


def stop_with_stalled_handshake(d):
	"""A client that connects to the implicit TLS port and sends nothing
	holds no stop: laimd exits at once, as with an idle session, not after
	the handshake timeout (30 s)."""
	with socket.create_connection((IMPLICIT_HOST, d.port), timeout=10):
		time.sleep(0.5)  # accepted, its handshake waiting
		start = time.monotonic()
		check_eq(d.stop(), 0, "laimd's exit status after SIGTERM")
		took = time.monotonic() - start
	check(took < 10, "laimd took %.1f s to stop with a TLS handshake pending" % took)
	d.wait_log(r"smtp: TLS handshake from 127\.0\.0\.1 cut off by laimd's stop$")


def full_implicit():
	"""At max_sessions, a client of the implicit TLS port is closed with
	nothing sent in the clear: a 421 there reads as a broken handshake."""
	d, certs, rsa = tls_laimd(max_sessions=1)
	d.start()
	with Smtp(d.port) as held:
		held.ehlo()
		with socket.create_connection((IMPLICIT_HOST, d.port), timeout=10) as s:
			check_eq(s.recv(100), b"", "what a client of the implicit TLS port beyond max_sessions read")
		d.wait_log(r"max_sessions \(1\) reached: refused a client on 127\.0\.0\.2:%d$" % d.port)


def main():
	d, certs, rsa = tls_laimd()
	d.start()
	swaks_starttls(d, certs)
	version = smtplib_starttls(d, certs)
	check_eq(version, "TLSv1.3", "protocol smtplib got")
	d.wait_log(r"smtp: TLS from 127\.0\.0\.1 on 127\.0\.0\.1:%d: TLSv1\.3 TLS_\w+$" % d.port)
	smtplib_implicit(certs, d.port)
	d.wait_log(r"smtp: TLS from 127\.0\.0\.1 on 127\.0\.0\.2:%d: TLSv1\.3 TLS_\w+$" % d.port)
	wait_maildir(d.maildir, 3)
	msgs = maildir_messages(d.maildir)
	for tag in ("over swaks", "over smtplib starttls", "over implicit tls"):
		m = [x for x in msgs if tag.encode() in x]
		check_eq(len(m), 1, "messages delivered %s" % tag)
		check(re.search(rb"\s+by test\.laim\.example \(laim\) with ESMTPS id ", m[0]),
		      "Received: does not say ESMTPS for the message %s:\n%r" % (tag, m[0][:400]))
	no_ticket_tls12(certs, d.port)
	tls11_refused(d, certs)
	injection(d, certs)
	confinement_and_memory(d, certs, rsa)
	check(not d.search_log(r"key service: refused"), "the parent refused a key operation")
	stop_with_stalled_handshake(d)
	full_implicit()


run(main)
