# The forward handler: laimd -> forward -> smarthost -> a real SMTP server
# (aiosmtpd, peer_smtp.py, STARTTLS and AUTH with the private CA of
# peer_certs.py), in a private network whose only DNS server is the
# case's (peer_dns.py), so that the DMARC lookups never leave the machine.
# In one session a name the map does not know gets 550 5.1.1 at RCPT and
# the known ones 250; the relay gets each target once, the envelope
# sender in SRS form (hash checked here with the secret; a quoted local
# part's text, the SRS local part quoted as a whole), the subject
# prefixed once (RFC 2047 subjects decoded and encoded again in UTF-8), every
# other byte as sent; a sender whose domain publishes p=reject gets a
# From: of the forwarder's with the original in Reply-To:; each target
# settles on its own and a retry sends only to the deferred one; a map
# that cannot be read (mode 000) or has an error gives 451 4.3.0 and is
# read again once fixed; five Received: lines of this host make a mail
# loop (failed/); laimd -n names a missing or mistyped relay by line.
import sys
sys.dont_write_bytecode = True
from peer_dns import DnsPeer, check_private_network, enter_private_network
enter_private_network()

import base64
import email.header
import signal
import email.utils
import hashlib
import hmac
import time
from harness import *
from peer_certs import Certs
from peer_smtp import SmtpPeer

USER, PASSWORD = "fwd@example.org", "relay-Pass-4711"
SRS_SECRET = "srs-secret-0123456789abcdef"
SRS_DOMAIN = "fwd.example"
DEST = "dest.example"
MAP = """# the forward map of the case
admin: ok-admin@dest.example
all:   ok-a@dest.example, ok-b@dest.example,
       ok-admin@dest.example
mixed: ok-m@dest.example, defer-m@dest.example
bounce: reject-x@dest.example
drop:
"""


def srs(address):
	"""SRS0 as Mail::SRS and postsrsd write it, computed independently: of
	the local part's text ("john doe" without its quotes), the whole SRS
	local part quoted when it is no dot-atom, as Postfix writes it."""
	local, domain = address.rsplit("@", 1)
	if local.startswith('"'):
		local = re.sub(r"\\(.)", r"\1", local[1:-1])
	days = int(time.time() // 86400) % 1024
	b32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	tt = b32[(days >> 5) & 31] + b32[days & 31]
	mac = hmac.new(SRS_SECRET.encode(), (tt + domain + local).lower().encode(), hashlib.sha1).digest()
	srs_local = "SRS0=%s=%s=%s=%s" % (base64.b64encode(mac).decode()[:4], tt, domain, local)
	if not re.fullmatch(r"[\w!#$%&'*+/=?^`{|}~-]+(\.[\w!#$%&'*+/=?^`{|}~-]+)*", srs_local, re.A):
		srs_local = '"%s"' % re.sub(r'(["\\])', r"\\\1", srs_local)
	return srs_local + "@" + SRS_DOMAIN


def message(sender_header, subject, extra=b"", tag=b""):
	return (extra + b"From: " + sender_header + b"\r\nTo: list@lists.example\r\nSubject: " + subject +
		b"\r\nMessage-ID: <" + tag + b"@client.example>\r\n\r\nbody of " + tag + b"\r\n.dot line\r\n")


def relayed(peer, mail_from, count=1, timeout=15):
	"""The messages the peer accepted from mail_from, once there are count."""
	wait_for(lambda: len([m for m in peer.messages() if m["mail_from"] == mail_from]) >= count, timeout,
		 "%d message(s) from <%s> at the peer" % (count, mail_from))
	return [m for m in peer.messages() if m["mail_from"] == mail_from]


def log_line(d, qid, rcpt, status, why, handler="lists"):
	return d.wait_log(r"%s: to=<%s>, handler=%s, status=%s.* \(%s\)$" % (qid, re.escape(rcpt), handler, status, why),
			  timeout=15, since=0)


def put_file(path, text, mode):
	with open(path, "w") as f:
		f.write(text)
	os.chmod(path, mode)


def configure(d, certs, peer, mapfile, secret):
	forward = {"type": "forward", "map": mapfile, "relay": "relay"}
	d.config["handlers"] = {
		"lists": dict(forward, subject_prefix="[lists]", mail_from="srs", srs_secret=secret, srs_domain=SRS_DOMAIN,
			      from_rewrite="dmarc"),
		"plain": dict(forward, mail_from="forwarder@" + SRS_DOMAIN, from_rewrite="dmarc"),
		"relay": {"type": "smarthost", "host": "localhost", "port": peer.ports["starttls"], "ca_file": certs.ca,
			  "credentials": os.path.join(d.dir, "relay.secret")},
		"inbox": {"type": "maildir", "path": d.maildir},
	}
	d.config["routes"] = [{"match": "*@lists.example", "handlers": ["lists"]},
			      {"match": "*@plain.example", "handlers": ["plain"]},
			      {"match": "*", "handlers": ["inbox"]}]


def check_config_errors(d):
	"""laimd -n: relay naming no instance, or one of another type; dmarc
	without mail_from; each with file, line and key."""
	rows = [("relay", "nosuch", r'no handler instance named "nosuch"'),
		("relay", "inbox", r'instance "inbox" is of type maildir, expected one of type smarthost')]
	for key, value, why in rows:
		d.config["handlers"]["plain"][key] = value
		r = d.check_config()
		check(r.returncode == 1 and re.search(r"^laimd: %s:%d: handlers\.plain\.%s: %s$" % (
			re.escape(d.confpath), d.option_line("plain", key), key, why), r.stderr.decode(), re.M),
		      "laimd -n with relay: %s: %r" % (value, r))
	d.config["handlers"]["plain"]["relay"] = "relay"
	del d.config["handlers"]["plain"]["mail_from"]
	r = d.check_config()
	check(r.returncode == 1 and re.search(r"^laimd: %s:%d: handlers\.plain\.from_rewrite: dmarc needs mail_from" % (
		re.escape(d.confpath), d.option_line("plain", "from_rewrite")), r.stderr.decode(), re.M),
	      "laimd -n with from_rewrite: dmarc and no mail_from: %r" % r)
	d.config["handlers"]["plain"]["mail_from"] = "forwarder@" + SRS_DOMAIN
	r = d.check_config()
	check_eq((r.returncode, r.stderr), (0, b""), "laimd -n with the case's config")


def check_verdicts(d, peer):
	"""550 and 250 in one session; targets translated, each once; SRS;
	the subject prefixed; every other byte as sent."""
	sent = message(b"Alice <alice@client.example>", b"disk full", tag=b"verdicts")
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<alice@client.example>", 250)
		c.cmd("RCPT TO:<admin@lists.example>", 250)
		r = c.cmd("RCPT TO:<nobody@lists.example>", 550)
		check(r.text.startswith("550 5.1.1 "), "RCPT of an unknown name: %r" % r)
		c.cmd("RCPT TO:<All@lists.example>", 250)
		c.cmd("RCPT TO:<drop@lists.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(sent))
		qid = queue_id(c.expect(250, what="end of data"))
		c.cmd("QUIT", 221)
	d.wait_log(r"handler lists: <nobody@lists\.example> refused: not in the forward map %s$" % re.escape(
		d.config["handlers"]["lists"]["map"]), since=0)
	ok = r"250 2\.0\.0 Ok: queued as P\d+"
	log_line(d, qid, "admin@lists.example", "delivered", r"forwarded to <ok-admin@dest\.example>: %s" % ok)
	log_line(d, qid, "All@lists.example", "delivered", r"forwarded to <ok-a@dest\.example>: %s; "
		 r"<ok-b@dest\.example>: %s; <ok-admin@dest\.example>: %s" % (ok, ok, ok))
	log_line(d, qid, "drop@lists.example", "delivered", r"dropped: the forward map lists no target")
	d.wait_removed(qid)
	m = only(relayed(peer, srs("alice@client.example")), "messages from alice")
	check_eq((m["rcpt_tos"], m["auth"], m["tls"]), (["ok-admin@" + DEST, "ok-a@" + DEST, "ok-b@" + DEST], USER, True),
		 "recipients, AUTH and TLS at the peer")
	check_eq(after_received(m["data"]), sent.replace(b"Subject: disk full", b"Subject: [lists] disk full"),
		 "the message as forwarded")


def check_quoted_sender(d, peer):
	"""A sender with a quoted local part: its SRS form is made of the
	text and quoted as a whole, so the relay's MAIL FROM is a valid
	address."""
	sender = '"john doe"@client.example'
	d.wait_removed(d.send(sender, ["admin@lists.example"], message(b"<john@client.example>", b"quoted", tag=b"quoted")))
	want = srs(sender)
	check(want.startswith('"SRS0=') and '=john doe"@' in want, "the expected SRS address: %r" % want)
	mails = [re.match(r"FROM:<([^>]*)>", e["arg"]).group(1) for e in peer.events()
		 if e.get("cmd") == "MAIL" and "john doe" in e["arg"]]
	check_eq(mails, [want], "MAIL FROM at the peer for <%s>" % sender)
	only(relayed(peer, want), "messages from " + sender)


def check_subjects(d, peer):
	"""The prefix once: not again on a reply, not inside an encoded word;
	an encoded subject decoded, prefixed and encoded again."""
	rows = [
		("bob1@client.example", b"Re: [lists] disk full", None),
		("bob2@client.example", b"=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "[lists] Gr\u00fc\u00dfe aus K\u00f6ln"),
		("bob3@client.example", b"=?UTF-8?Q?=5Blists=5D_Gr=C3=BC=C3=9Fe?=", None),
	]
	for sender, subject, want in rows:
		sent = message(sender.encode(), subject, tag=sender.split("@")[0].encode())
		d.wait_removed(d.send(sender, ["admin@lists.example"], sent))
		got = after_received(only(relayed(peer, srs(sender)), "messages from " + sender)["data"])
		if want is None:
			check_eq(got, sent, "a subject that holds the prefix already")
			continue
		fields, rest = header_fields(got)
		subj = [f for f in fields if field_name(f) == "subject"]
		check(len(subj) == 1 and subj[0].startswith(b"Subject: [lists] =?UTF-8?"), "encoded subject: %r" % subj)
		words = email.header.decode_header(field_value(subj[0]))
		check_eq(str(email.header.make_header(words)), want, "the decoded subject")
		check_eq({charset for _, charset in words if charset}, {"utf-8"}, "charsets of the encoded subject "
			 "(decoded and encoded again in UTF-8)")
		check_eq(b"".join(f for f in fields if field_name(f) != "subject") + rest,
			 sent.replace(b"Subject: " + subject + b"\r\n", b""), "the other bytes of the message")


def check_dmarc(d, peer, dns):
	"""p=reject: From: becomes the forwarder's (SRS, or mail_from) with
	the original name, the original goes to Reply-To:; p=none and the
	null sender; a failed lookup defers."""
	orig = b" \"Alice Example\" <alice@reject.example>\r\n"
	sent = message(b"\"Alice Example\" <alice@reject.example>", b"dmarc", tag=b"dmarc")
	qids = [d.send("carol@reject.example", ["admin@lists.example"], sent),
		d.send("carol@reject.example", ["admin@plain.example"], sent),
		d.send("", ["admin@plain.example"], message(b"MAILER-DAEMON@reject.example", b"bounce", tag=b"dsn")),
		d.send("dave@none.example", ["admin@lists.example"], message(b"dave@none.example", b"p none", tag=b"none"))]
	for qid in qids:
		d.wait_removed(qid)
	prefixed = sent.replace(b"Subject: dmarc", b"Subject: [lists] dmarc")
	expect = [(srs("carol@reject.example"), prefixed, "Alice Example", srs("alice@reject.example")),
		  ("forwarder@" + SRS_DOMAIN, sent, "Alice Example", "forwarder@" + SRS_DOMAIN)]
	for mail_from, msg, name, addr in expect:
		m = [m for m in relayed(peer, mail_from) if b"<dmarc@" in m["data"]]
		got = after_received(only(m, "dmarc messages from <%s>" % mail_from)["data"])
		fields, rest = header_fields(got)
		check_eq(email.utils.parseaddr(field_value(fields[0])), (name, addr), "From: rewritten for <%s>" % mail_from)
		check_eq(b"".join(fields[1:]) + rest, b"Reply-To:" + orig + b"X-Original-From:" + orig +
			 msg[msg.index(b"To: "):], "the rest of the message for <%s>" % mail_from)
	# A long name (folded as sent) stays whole, in a From: folded again.
	long_name = "Alice" + " Example" * 150
	qid = d.send("carol@reject.example", ["admin@plain.example"],
		     message(b'"Alice' + b"\r\n Example" * 150 + b'" <alice@reject.example>', b"long", tag=b"long"))
	d.wait_removed(qid)
	m = [m for m in relayed(peer, "forwarder@" + SRS_DOMAIN, 2) if b"<long@" in m["data"]]
	fields, _ = header_fields(after_received(only(m, "messages with the long name")["data"]))
	check_eq(email.utils.parseaddr(field_value(fields[0])), (long_name, "forwarder@" + SRS_DOMAIN),
		 "From: rewritten for the long name")
	lines = fields[0].split(b"\r\n")[:-1]
	check(len(lines) > 1 and max(map(len, lines)) <= 78, "From: not folded to 78 octets a line: %r" % fields[0])
	dsn = only(relayed(peer, "<>"), "messages from the null sender (aiosmtpd writes <>)")
	fields, rest = header_fields(after_received(dsn["data"]))
	check_eq(email.utils.parseaddr(field_value(fields[0])), ("MAILER-DAEMON@reject.example", "forwarder@" + SRS_DOMAIN),
		 "From: of the null sender's message")
	none = after_received(only(relayed(peer, srs("dave@none.example")), "p=none message")["data"])
	check_eq(none, message(b"dave@none.example", b"[lists] p none", tag=b"none"), "the p=none message")
	for name in ("_dmarc.reject.example", "_dmarc.none.example"):
		check((name, 16) in dns.queries, "no TXT query for %s: %r" % (name, dns.queries))
	qid = d.send("erin@servfail.example", ["admin@lists.example"], message(b"erin@servfail.example", b"x", tag=b"sf"))
	log_line(d, qid, "admin@lists.example", "deferred", r"DMARC lookup of _dmarc\.servfail\.example: .*")
	check(not relayed_any(peer, srs("erin@servfail.example")), "a message whose DMARC lookup failed was relayed")


def relayed_any(peer, mail_from):
	return [m for m in peer.messages() if m["mail_from"] == mail_from]


def check_targets(d, peer):
	"""Per target: 250, 451 and 550 on the first try; the retry goes to the
	deferred target alone; then delivered, and failed/ for the 550."""
	qid = d.send("frank@client.example", ["mixed@lists.example", "bounce@lists.example"],
		     message(b"frank@client.example", b"targets", tag=b"targets"))
	log_line(d, qid, "bounce@lists.example", r"failed, dsn=5\.1\.1",
		 r"<reject-x@dest\.example>: RCPT TO: 550 5\.1\.1 <reject-x@dest\.example>: .*")
	for attempt in (1, 2):
		log_line(d, qid, "mixed@lists.example", r"deferred, .*attempt=%d, .*dsn=4\.2\.1" % attempt,
			 r"<defer-m@dest\.example>: RCPT TO: 451 4\.2\.1 .* \(delivered: <ok-m@dest\.example>: .*\)")
	mail_from = srs("frank@client.example")
	sessions = [s for s in peer.sessions().values() if any(e.get("cmd") == "MAIL" and mail_from in e["arg"] for e in s)]
	rcpts = [[e["arg"] for e in s if e.get("cmd") == "RCPT"] for s in sessions]
	check(len(rcpts) >= 2, "sessions of the retries: %r" % rcpts)
	check_eq(sorted(rcpts[0]), ["TO:<defer-m@dest.example>", "TO:<ok-m@dest.example>", "TO:<reject-x@dest.example>"],
		 "RCPTs of the first try")
	for r in rcpts[1:]:
		check_eq(r, ["TO:<defer-m@dest.example>"], "RCPTs of a retry")
	peer.release()
	check_ran(d.laimctl(["flush"]), quiet=False)
	log_line(d, qid, "mixed@lists.example", "delivered",
		 r"forwarded to <ok-m@dest\.example>: 250 .*; <defer-m@dest\.example>: 250 .*")
	d.wait_log(r"%s: moved to failed/: <bounce@lists\.example> handler lists: 5\.1\.1 <reject-x@dest\.example>" % qid,
		   10, since=0)
	check_eq([m["rcpt_tos"] for m in relayed(peer, mail_from, 2)], [["ok-m@" + DEST], ["defer-m@" + DEST]],
		 "messages relayed for frank")


def rcpt(d, name, code):
	"""The reply to RCPT TO:<NAME@lists.example>, expected to be code."""
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<gina@client.example>", 250)
		r = c.cmd("RCPT TO:<%s@lists.example>" % name, code)
		c.cmd("QUIT", 221)
		return r


def check_map_errors(d, mapfile):
	"""Mode 000: 451 4.3.0 at RCPT; readable again: 250; a new name is
	seen; an error in the map: 451 naming file and line."""
	try:
		os.chmod(mapfile, 0)
		r = rcpt(d, "admin", 451)
		check(r.text.startswith("451 4.3.0 "), "RCPT with the map unreadable: %r" % r)
		d.wait_log(r"handler lists: forward map %s: Permission denied; its recipients get 451 until it is "
			   r"fixed$" % re.escape(mapfile), since=0)
		os.chmod(mapfile, 0o644)
		rcpt(d, "admin", 250)
		put_file(mapfile, MAP + "new: ok-new@dest.example\n", 0o644)
		rcpt(d, "new", 250)
		put_file(mapfile, MAP + "broken ok@dest.example\n", 0o644)
		rcpt(d, "admin", 451)
		d.wait_log(r"handler lists: forward map %s:8: expected 'name: targets'; its recipients get 451" %
			   re.escape(mapfile), since=0)
		put_file(mapfile, MAP + "bad: \"|/bin/sh\"\n", 0o644)
		rcpt(d, "admin", 451)
		d.wait_log(r"handler lists: forward map %s:8: expected an address \(user@domain\), got '\"\|/bin/sh\"'" %
			   re.escape(mapfile), since=0)
	finally:  # whatever failed, the rows after this one get the map back
		put_file(mapfile, MAP, 0o644)
	rcpt(d, "admin", 250)


def received_lines(n, host="test.laim.example"):
	return b"".join(b"Received: from relay%d.example (127.0.0.1)\r\n\tby %s (laim) with ESMTP id X%d;\r\n"
			b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, host.encode(), i) for i in range(n))


def check_loop(d, peer):
	"""Five Received: lines of this host (six with laimd's): mail loop,
	failed/; two of them Delivered-To: lines: the same; four (and two of
	another host): forwarded."""
	loops = [d.send("hank@client.example", ["admin@lists.example"],
			message(b"hank@client.example", b"loop", received_lines(5), b"loop5")),
		 d.send("hank@client.example", ["admin@lists.example"],
			message(b"hank@client.example", b"loop", received_lines(3) + received_lines(2, "other.example") +
				b"Delivered-To: admin@test.laim.example\r\nDelivered-To: <x@localhost>\r\n", b"loopdt"))]
	fine = d.send("ivan@client.example", ["admin@lists.example"],  # other hosts' lines do not count
		      message(b"ivan@client.example", b"four", received_lines(4) + received_lines(2, "other.example"), b"four"))
	for qid in loops:
		log_line(d, qid, "admin@lists.example", r"failed, dsn=5\.4\.6",
			 r"mail loop: the message passed this host 6 times \(Received:, Delivered-To:\), more than loop_limit 5")
		d.wait_log(r"%s: moved to failed/: <admin@lists\.example> handler lists: 5\.4\.6 mail loop" % qid, 10, since=0)
		check(qid in d.spool_files("failed"), "%s not in failed/" % qid)
	d.wait_removed(fine)
	only(relayed(peer, srs("ivan@client.example")), "the message with four Received: lines")
	check(not relayed_any(peer, srs("hank@client.example")), "a looping message was relayed")


def check_sighup(d, peer):
	"""After SIGHUP the new instances are linked: forwarding goes on,
	with the prefix the new config gives."""
	d.config["handlers"]["lists"]["subject_prefix"] = "[reloaded]"
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"handler configuration reloaded$", since=mark)
	sent = message(b"judy@client.example", b"after reload", tag=b"hup")
	d.wait_removed(d.send("judy@client.example", ["admin@lists.example"], sent))
	got = after_received(only(relayed(peer, srs("judy@client.example")), "the message after SIGHUP")["data"])
	check_eq(got, sent.replace(b"Subject: after", b"Subject: [reloaded] after"), "the message after SIGHUP")


def check_laimctl_test(d):
	r = d.laimctl(["test", "lists"])
	check_ran(r, quiet=False)
	check(re.fullmatch(r"lists: ready: forward map %s: 5 names; relay relay: connected to localhost:\d+; .*"
			   r"AUTH PLAIN as %s: 235 .*; QUIT\n" % (re.escape(d.config["handlers"]["lists"]["map"]),
								  re.escape(USER)), r.stdout), "laimctl test lists: %r" % r)


def main():
	check_private_network()
	dns = DnsPeer({"_dmarc.reject.example": ["v=DMARC1; p=reject; rua=mailto:d@reject.example"],
		       "_dmarc.none.example": ["v=DMARC1; p=none"]}, servfail=["_dmarc.servfail.example"])
	d = Laimd()
	certs = Certs(os.path.join(d.dir, "certs"))
	peer = SmtpPeer(os.path.join(d.dir, "peer"), certs, {USER: PASSWORD})
	mapfile = os.path.join(d.dir, "forward.map")
	put_file(mapfile, MAP, 0o644)
	secret = os.path.join(d.dir, "srs.secret")
	put_file(secret, SRS_SECRET + "\n", 0o600)
	put_file(os.path.join(d.dir, "relay.secret"), "%s:%s\n" % (USER, PASSWORD), 0o600)
	configure(d, certs, peer, mapfile, secret)
	check_config_errors(d)
	d.check_example("forward", {"/etc/laim/srs.secret": secret,
				    "/etc/laim/relay.secret": os.path.join(d.dir, "relay.secret")})
	d.start()
	run_rows([
		("550 and 250 in one session, targets once, SRS, prefix", lambda: check_verdicts(d, peer)),
		("the subject prefix once, RFC 2047", lambda: check_subjects(d, peer)),
		("SRS of a quoted local part is quoted as a whole", lambda: check_quoted_sender(d, peer)),
		("from_rewrite dmarc", lambda: check_dmarc(d, peer, dns)),
		("per-target results and retries", lambda: check_targets(d, peer)),
		("a map that cannot be read, or has an error", lambda: check_map_errors(d, mapfile)),
		("mail loop", lambda: check_loop(d, peer)),
		("SIGHUP", lambda: check_sighup(d, peer)),
		("laimctl test", lambda: check_laimctl_test(d)),
	])
	check_eq(d.stop(), 0, "laimd exit status")
	check(SRS_SECRET not in d.log(0) and PASSWORD not in d.log(0), "a secret in the log")
	peer.stop()


run(main)
