# The webhook handler against a real HTTPS server on loopback
# (peer_https.py: Python's http.server with the test CA's certificate),
# through a real laimd. Checked byte for byte: the bodies it posts in the
# three formats (Slack's chat.postMessage, the JSON object, the raw
# message with slimta's envelope headers, an empty X-Envelope-Sender for
# the null sender): escaping, a UTF-8 subject from
# RFC 2047, truncation by characters with its mark, the uid and user name
# of a local submission; the bearer token from a root-only secret file.
# Each answer is settled as it should be and logged with the peer's
# words: 200 delivered; Slack's {"ok":false} failed, its "ratelimited"
# deferred; 429 and 503 deferred for their Retry-After (seconds and
# HTTP-date); 408 deferred; 400 failed with the body's first line, also
# when the body never ends (read up to 64 KiB); a redirect failed, not
# followed; a 2xx whose body breaks off, or Slack's acceptance longer
# than 64 KiB, delivered and posted once; a peer that never answers deferred after `timeout`, two
# deliveries of one instance at once (workers); an impostor's
# certificate and a certificate for another name deferred with curl's
# reason, and nothing sent to them. etc/webhook.yml passes laimd -n. Proxy variables in laimd's environment are
# ignored; http:// needs allow_http. `laimctl test` makes the TLS
# handshake and sends nothing. laimd -n refuses a token file others can
# read and an http:// URL without allow_http.
import sys
sys.dont_write_bytecode = True
import base64
import email.utils
import itertools
import json
import subprocess
from harness import *
from peer_certs import Certs
from peer_https import HttpsPeer, NEVER

H = "test.laim.example"
TOKEN = "xoxb-1234-s3cr3t-Webhook"
INLINE_TOKEN = "inline-Token-42"
HOST = HOSTNAME  # the hostname key of the harness's config


def ok_json(body):
	return (200, {"Content-Type": "application/json"}, json.dumps(body).encode())


def retry_later(req):
	"""503 with a Retry-After 45 s from now, as an HTTP-date."""
	return (503, {"Retry-After": email.utils.formatdate(time.time() + 45, usegmt=True)},
		b"maintenance until noon\nsecond line\n")


def routes_of_good_peer():
	return {
		"/slack/ok": ok_json({"ok": True, "channel": "C1", "ts": "1700000000.000100"}),
		"/slack/error": ok_json({"ok": False, "error": "channel_not_found"}),
		"/slack/subject": ok_json({"ok": True}),
		"/slack/ratelimited": (200, {"Retry-After": "20"}, b'{"ok":false,"error":"ratelimited"}'),
		"/json": (200, {}, b"accepted\n"),
		"/rfc822": (204, {}, b""),
		"/busy": (429, {"Retry-After": "30"}, b"slow down\nplease\n"),
		"/down": retry_later,
		"/slow": (408, {}, b""),
		"/bad": (400, {}, b'invalid payload: no "text"\nsecond line\n'),
		"/hang": NEVER,
		"/endless": (400, {}, itertools.chain([b"too much\n"], itertools.repeat(b"x" * 65536))),
		"/moved": (302, {"Location": "/json"}, b""),
		# A 200 whose body breaks off: 2 of the 100 bytes announced.
		"/partial": (200, {"Content-Length": "100"}, [b"ok"]),
		# Slack's acceptance echoes the message: past the 64 KiB kept.
		"/slack/big": (200, {}, b'{"ok":true,"message":{"text":"' + b"x" * 70000 + b'"}}'),
	}


def expected_slack(subject, sender, rcpts, text, max_text, qid):
	"""Slack's text as the handler composes it, &, < and > escaped."""
	keep = text[:max_text]  # characters, not bytes
	out = "[%s] %s\n%s \u2192 %s" % (HOST, subject or "(no subject)", sender or "<>", ", ".join(rcpts))
	if text:
		out += "\n\n" + keep
	if len(keep) < len(text):
		out += "\n[truncated, %d bytes, queue id %s]" % (len(text.encode()), qid)
	return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def dump(obj):
	"""nlohmann::json::dump(): keys sorted, no spaces, UTF-8 as is."""
	return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def logged_size(d, qid):
	m = d.wait_log(r"%s: from=<[^>]*>, size=(\d+)," % qid, since=0)
	return int(m.group(1))


def config_line(d, text):
	with open(d.confpath) as f:
		for n, line in enumerate(f, 1):
			if text in line:
				return n
	raise Fail("no line with %r in %s" % (text, d.confpath))


def check_example(d):
	"""etc/webhook.yml passes laimd -n once its token files exist."""
	with open(os.path.join(os.environ.get("LAIM_SRCDIR", "."), "etc", "webhook.yml")) as f:
		text = f.read().replace("/etc/laim/", d.dir + "/example-")
	check("type: webhook" in text and "format: slack" in text, "etc/webhook.yml has no slack webhook")
	for name in ("slack.token", "events.token"):
		with open(os.path.join(d.dir, "example-" + name), "w") as f:
			f.write("example-token\n")
		os.chmod(os.path.join(d.dir, "example-" + name), 0o600)
	path = os.path.join(d.dir, "example.yml")
	with open(path, "w") as f:
		f.write(text)
	os.chmod(path, 0o600)
	r = laimd_n(path)
	check_eq((r.returncode, r.stdout.decode(), r.stderr), (0, path + ": configuration OK\n", b""),
		 "laimd -n of etc/webhook.yml")


def check_libcurl_mapped(d):
	"""libcurl (and GnuTLS, Kerberos, LDAP it pulls in) is mapped by the
	handler process, which runs the webhook instances, and by no other.
	The handler process loads it when it starts the instances, which
	may come after the parent's "ready"."""
	kids = d.wait_children()
	def maps(pid):
		with open("/proc/%d/maps" % pid) as f:
			return f.read()
	wait_for(lambda: "libcurl.so" in maps(kids["handler"]), 10, "libcurl mapped by the handler process")
	for name, pid in (("parent", d.pid), ("smtp", kids["smtp"])):
		check("libcurl.so" not in maps(pid), "libcurl mapped by the %s process" % name)
		check("libgnutls" not in maps(pid), "GnuTLS mapped by the %s process" % name)


def main():
	d = Laimd()
	certs = Certs(os.path.join(d.dir, "certs"))
	good = HttpsPeer(certs, routes_of_good_peer())
	rogue = HttpsPeer(certs, {"/rogue": (200, {}, b"")}, rogue=True)
	elsewhere = HttpsPeer(certs, {"/name": (200, {}, b"")}, host="127.0.0.2")
	plain = HttpsPeer(None, {"/plain": (200, {}, b"")})
	# Only laimctl test talks to this one: its handshakes and requests are
	# not mixed with the retries of deferred deliveries.
	quiet = HttpsPeer(certs, {"/quiet": (200, {}, b"")})
	tls12 = HttpsPeer(certs, {"/tls12": (200, {}, b"")}, tls12=True)
	token_file = os.path.join(d.dir, "slack.token")
	with open(token_file, "w") as f:
		f.write(TOKEN + "\n")
	os.chmod(token_file, 0o600)

	def hook(path, **opts):
		h = {"type": "webhook", "url": good.url(path, "localhost"), "ca_file": certs.ca}
		h.update(opts)
		return h
	slack = {"format": "slack", "channel": "#alerts", "token_file": token_file}
	d.config["handlers"] = {
		"slack": hook("/slack/ok", max_text=40, **slack),
		"slackerr": hook("/slack/error", **slack),
		"slacksubj": hook("/slack/subject", **slack),
		"slackrl": hook("/slack/ratelimited", **slack),
		"json": hook("/json", format="json", max_text=60, token=INLINE_TOKEN, headers=["X-Laim-Test: yes"]),
		"raw": hook("/rfc822", format="rfc822"),
		"busy": hook("/busy"),
		"down": hook("/down"),
		"slow": hook("/slow"),
		"bad": hook("/bad"),
		"hang": hook("/hang", timeout=2),
		"endless": hook("/endless", timeout=5),
		"moved": hook("/moved"),
		"partial": hook("/partial"),
		"slackbig": hook("/slack/big", **slack),
		"rogue": {"type": "webhook", "url": rogue.url("/rogue", "localhost"), "ca_file": certs.ca},
		"name": {"type": "webhook", "url": elsewhere.url("/name"), "ca_file": certs.ca},
		"plain": {"type": "webhook", "url": plain.url("/plain"), "allow_http": True},
		"quiet": {"type": "webhook", "url": quiet.url("/quiet", "localhost"), "ca_file": certs.ca},
		"tls12": {"type": "webhook", "url": tls12.url("/tls12", "localhost"), "ca_file": certs.ca},
	}
	d.config["routes"] = [{"match": "%s@*" % n, "handlers": [n]} for n in d.config["handlers"]] + \
		[{"match": "raw2@*", "handlers": ["raw"]}]

	# laimd -n: a token file others may read, an http:// URL without allow_http.
	os.chmod(token_file, 0o644)
	r = d.check_config()
	line = config_line(d, "token_file:")
	check(r.returncode == 1 and re.search(r"^laimd: %s:%d: handlers\.\w+\.token_file: %s: .*mode 0644" %
					      (re.escape(d.confpath), line, re.escape(token_file)), r.stderr.decode(), re.M),
	      "laimd -n with a token file of mode 0644: %r" % r)
	check(TOKEN not in (r.stdout + r.stderr).decode(), "the token in laimd -n's output")
	os.chmod(token_file, 0o600)
	del d.config["handlers"]["plain"]["allow_http"]
	r = d.check_config()
	check(r.returncode == 1 and re.search(r":%d: handlers\.plain\.url: http:// sends the message in clear" %
					      config_line(d, plain.url("/plain")), r.stderr.decode()),
	      "laimd -n with an http:// URL and no allow_http: %r" % r)
	d.config["handlers"]["plain"]["allow_http"] = True
	r = d.check_config()
	check_eq((r.returncode, r.stderr), (0, b""), "laimd -n of the case's config")
	check_example(d)

	# A proxy in laimd's environment would take every request elsewhere.
	for var in ("https_proxy", "http_proxy", "ALL_PROXY"):
		os.environ[var] = "http://127.0.0.1:9"
	d.start()
	check_libcurl_mapped(d)

	sent = {}
	rows = []

	def slack_truncated():
		subject = "\u00dcberwachung: Platte <sda> fast voll \u2713"
		body = "a & b < c > \"q\" \\ \t\U0001F600\n" + "\u00e9" * 50 + "\n"
		msg = ("From: root@%s\r\nTo: slack@%s\r\nSubject: =?UTF-8?B?%s?=\r\nMIME-Version: 1.0\r\n"
		       "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" %
		       (H, H, base64.b64encode(subject.encode()).decode())).encode() + crlf(body.encode())
		qid = d.send(sender="root@" + H, rcpts=["slack@" + H], msg=msg)
		d.wait_log(r"%s: to=<slack@%s>, handler=slack, status=delivered, delay=[0-9.]+ \(HTTP 200 OK\)$" %
			   (qid, re.escape(H)))
		req = good.wait_requests("/slack/ok", 1)[0]
		text = expected_slack(subject, "root@" + H, ["slack@" + H], body, 40, qid)
		check("[truncated, %d bytes, queue id %s]" % (len(body.encode()), qid) in text, "the mark in %r" % text)
		check_eq(req.body, dump({"channel": "#alerts", "text": text}), "Slack's body")
		check(b'\\n\\na &amp; b &lt; c &gt; \\"q\\" \\\\ \\t\xf0\x9f\x98\x80\\n' + "\u00e9".encode() * 19 +
		      b"\\n[truncated, 125 bytes, queue id " + qid.encode() + b']"}' in req.body, "Slack's text: %r" % req.body)
		check_eq(req.header("Authorization"), ["Bearer " + TOKEN], "Slack's Authorization")
		check_eq(req.header("Content-Type"), ["application/json; charset=utf-8"], "Slack's Content-Type")
		sent["slack"] = qid
	rows.append(("slack: chat.postMessage body, escaped, truncated with its mark", slack_truncated))

	def slack_subject():
		# A subject that decodes to line feeds forging the "sender →
		# recipients" line, with ESC, a C1 CSI and a bidi override.
		subject = "Invoice\nceo@corp.example \u2192 ops@%s\n\nplease pay \x1b[31m \u009b2J \u202eevil" % H
		msg = ("From: a@client.example\r\nSubject: =?UTF-8?B?%s?=\r\n\r\nbody text\r\n" %
		       base64.b64encode(subject.encode()).decode()).encode()
		qid = d.send(sender="attacker@client.example", rcpts=["slacksubj@" + H], msg=msg)
		req = good.wait_requests("/slack/subject", 1)[0]
		shown = "Invoice?ceo@corp.example \u2192 ops@%s??please pay ?[31m ?2J evil" % H
		lines = json.loads(req.body)["text"].split("\n")
		check_eq(lines[:2], ["[%s] %s" % (HOST, shown), "attacker@client.example \u2192 slacksubj@" + H],
			 "the first two lines of Slack's text")
		text = expected_slack(shown, "attacker@client.example", ["slacksubj@" + H], "body text\n", 3000, qid)
		check_eq(req.body, dump({"channel": "#alerts", "text": text}), "Slack's body")
	rows.append(("slack: a subject's line feeds and controls cannot forge a line of the text", slack_subject))

	def json_local():
		lu = local_user()
		subject = "Backup fertig \u2013 Gr\u00fc\u00dfe"
		body = ("quote \" backslash \\ tab\t ctl \x01 euro \u20ac smile \U0001F600 </script>\n"
			+ "\u00e4" * 30 + "\n")
		date, msgid = "Tue, 14 Nov 2023 10:00:00 +0100", "<backup.42@%s>" % H
		msg = ("Date: %s\nMessage-ID: %s\nFrom: %s@%s\nTo: json@%s\n"
		       "Subject: =?UTF-8?Q?Backup_fertig_=E2=80=93_Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
		       "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" %
		       (date, msgid, lu.pw_name, H, H)).encode() + body.encode()
		mark = d.mark()
		r = d.sendmail(["-i", "json@" + H], msg, user=lu)
		check_ran(r)
		qid = d.wait_local_submission(mark).group(1)
		d.wait_log(r"%s: to=<json@%s>, handler=json, status=delivered, delay=[0-9.]+ \(HTTP 200 OK\)$" %
			   (qid, re.escape(H)))
		req = [q for q in good.wait_requests("/json", 1) if qid.encode() in q.body]
		check_eq(len(req), 1, "requests to /json for %s" % qid)
		want = {"client": "local", "date": date, "from": "%s@%s" % (lu.pw_name, H), "host": HOST, "id": qid,
			"message_id": msgid, "size": logged_size(d, qid), "subject": subject, "text": body[:60],
			"to": ["json@" + H], "truncated": True, "uid": lu.pw_uid, "user": lu.pw_name}
		check_eq(req[0].body, dump(want), "the JSON of a local submission")
		check(b'"text":"quote \\" backslash \\\\ tab\\t ctl \\u0001 euro \xe2\x82\xac' in req[0].body,
		      "escapes in the JSON: %r" % req[0].body)
		check_eq(req[0].header("Authorization"), ["Bearer " + INLINE_TOKEN], "Authorization from token:")
		check_eq(req[0].header("X-Laim-Test"), ["yes"], "the configured header")
	rows.append(("json: local submission with uid and user, RFC 2047 subject, escapes", json_local))

	def json_smtp():
		msg = b"Subject: short\r\n\r\nall of it\r\n"
		qid = d.send(sender="", rcpts=["json@" + H], msg=msg)
		d.wait_log(r"%s: to=<json@%s>, handler=json, status=delivered" % (qid, re.escape(H)))
		req = [q for q in good.wait_requests("/json", 2) if qid.encode() in q.body]
		want = {"client": "127.0.0.1", "date": None, "from": "", "host": HOST, "id": qid, "message_id": None,
			"size": logged_size(d, qid), "subject": "short", "text": "all of it\n", "to": ["json@" + H],
			"truncated": False, "uid": None, "user": None}
		check_eq([q.body for q in req], [dump(want)], "the JSON of an SMTP message from <>")
	rows.append(("json: SMTP, null sender, no uid, nothing truncated", json_smtp))

	def rfc822():
		msg = simple_message("raw one")
		qid = d.send(rcpts=["raw@" + H, "raw2@" + H], msg=msg)
		for rc in ("raw", "raw2"):
			d.wait_log(r"%s: to=<%s@%s>, handler=raw, status=delivered, delay=[0-9.]+ \(HTTP 204 No Content\)$" %
				   (qid, rc, re.escape(H)))
		req = good.wait_requests("/rfc822", 1)
		check_eq(len(req), 1, "one POST for both recipients")
		body = req[0].body
		check_eq(len(body), logged_size(d, qid), "size of the posted message")
		fields, rest = header_fields(body)
		check(field_name(fields[0]) == "received" and qid in field_value(fields[0]),
		      "the posted message starts with laimd's Received: %r" % body[:300])
		check_eq(b"".join(fields[1:]) + rest, msg, "the posted message after Received:")
		b64 = lambda s: base64.b64encode(s.encode()).decode()
		check_eq(req[0].header("X-Envelope-Sender"), [b64("sender@client.example")], "X-Envelope-Sender")
		check_eq(req[0].header("X-Envelope-Recipient"), [b64("raw@" + H), b64("raw2@" + H)],
			 "X-Envelope-Recipient")
		check_eq(req[0].header("X-Ehlo"), [HOST], "X-Ehlo")
		check_eq(req[0].header("Content-Type"), ["message/rfc822"], "Content-Type")
		check_eq(req[0].header("Authorization"), [], "Authorization without a token")
		qid = d.send(sender="", rcpts=["raw@" + H], msg=simple_message("raw bounce"))
		d.wait_log(r"%s: to=<raw@%s>, handler=raw, status=delivered" % (qid, re.escape(H)))
		req = good.wait_requests("/rfc822", 2)
		check_eq(req[1].header("X-Envelope-Sender"), [""], "X-Envelope-Sender of the null sender")
	rows.append(("rfc822: the message as queued, envelope in slimta's headers, also for <>", rfc822))

	def failures():
		q_err = d.send(rcpts=["slackerr@" + H])
		q_bad = d.send(rcpts=["bad@" + H])
		d.wait_log(r"%s: to=<slackerr@%s>, handler=slackerr, status=failed \(slack: channel_not_found\)$" %
			   (q_err, re.escape(H)))
		d.wait_log(r"%s: to=<bad@%s>, handler=bad, status=failed \(HTTP 400 Bad Request: "
			   r"invalid payload: no \"text\"\)$" % (q_bad, re.escape(H)))
		for qid, why in ((q_err, "<slackerr@%s> handler slackerr: slack: channel_not_found\n" % H),
				 (q_bad, "<bad@%s> handler bad: HTTP 400 Bad Request: invalid payload: no \"text\"\n" % H)):
			d.wait_log(r"%s: moved to failed/" % qid)
			with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
				check_eq(f.read(), why, "failed/%s.reason" % qid)
		check_eq(len(good.seen("/slack/error")) + len(good.seen("/bad")), 2, "one attempt each")
	rows.append(("slack ok:false and HTTP 400: failed with the peer's words", failures))

	def odd_answers():
		t0 = time.monotonic()
		json_before = len(good.seen("/json"))
		q_end = d.send(rcpts=["endless@" + H])
		q_moved = d.send(rcpts=["moved@" + H])
		d.wait_log(r"%s: to=<endless@%s>, handler=endless, status=failed \(HTTP 400 Bad Request: too much\)$" %
			   (q_end, re.escape(H)))
		check(time.monotonic() - t0 < 4, "an endless answer was read until the timeout")
		d.wait_log(r"%s: to=<moved@%s>, handler=moved, status=failed \(HTTP 302 Found\)$" % (q_moved, re.escape(H)))
		check_eq([q.path for q in good.seen() if q_moved.encode() in q.body], ["/moved"], "requests for %s" % q_moved)
		check_eq(len(good.seen("/json")), json_before, "requests to the redirect's Location")
	rows.append(("an endless answer is cut, a redirect is not followed", odd_answers))

	def accepted_body_lost():
		q_part = d.send(rcpts=["partial@" + H])
		q_big = d.send(rcpts=["slackbig@" + H])
		d.wait_log(r"%s: to=<partial@%s>, handler=partial, status=delivered, delay=[0-9.]+ \(HTTP 200 OK "
			   r"\(its body broke off: .+\)\)$" % (q_part, re.escape(H)))
		d.wait_log(r"%s: to=<slackbig@%s>, handler=slackbig, status=delivered, delay=[0-9.]+ \(HTTP 200 OK\)$" %
			   (q_big, re.escape(H)))
		time.sleep(2.5)  # past the first retries a deferral would have made
		for q, path in ((q_part, "/partial"), (q_big, "/slack/big")):
			check_eq(len(good.seen(path)), 1, "POSTs of %s to %s" % (q, path))
	rows.append(("a 2xx whose body breaks off or passes 64 KiB is delivered, posted once", accepted_body_lost))

	def deferrals():
		t0 = time.monotonic()
		qids = {n: d.send(rcpts=["%s@%s" % (n, H)]) for n in ("busy", "down", "slackrl", "slow")}
		reasons = {
			"busy": r"retry_in=30s \(HTTP 429 Too Many Requests: slow down\)",
			"down": r"retry_in=(4[3-6])s \(HTTP 503 Service Unavailable: maintenance until noon\)",
			"slackrl": r"retry_in=20s \(slack: ratelimited\)",
			"slow": r"retry_in=1s \(HTTP 408 Request Timeout\)",
		}
		for n, qid in qids.items():
			d.wait_log(r"%s: to=<%s@%s>, handler=%s, status=deferred, delay=[0-9.]+, attempt=1, %s$" %
				   (qid, n, re.escape(H), n, reasons[n]))
		# 408 comes back after the 1-second back-off; the others wait.
		good.wait_requests("/slow", 2, timeout=10)
		time.sleep(max(0, 3 - (time.monotonic() - t0)))
		for n in ("busy", "down", "slackrl"):
			check_eq(len(good.seen("/" + n if n != "slackrl" else "/slack/ratelimited")), 1,
				 "attempts of %s within 3 s of its Retry-After" % n)
		rows_q = {l.split()[0]: l for l in d.laimctl(["show", "queue"]).stdout.splitlines()[1:]}
		check(re.search(r"\s1\s+HTTP 429 Too Many Requests: slow down$", rows_q.get(qids["busy"], "")),
		      "laimctl show queue for the 429: %r" % rows_q)
		sent["deferred"] = qids
	rows.append(("429, 503 and Slack's ratelimited wait for Retry-After; 408 retried", deferrals))

	def timeout():
		t0 = time.monotonic()
		q1 = d.send(rcpts=["hang@" + H])
		q2 = d.send(rcpts=["hang@" + H])
		reqs = good.wait_requests("/hang", 2, timeout=5)
		check(abs(reqs[1].at - reqs[0].at) < 1.5, "two deliveries of one instance at once (workers): %r" %
		      [r.at - t0 for r in reqs])
		for qid in (q1, q2):
			m = d.wait_log(r"%s: to=<hang@%s>, handler=hang, status=deferred, delay=([0-9.]+), attempt=1, "
				       r"retry_in=1s \(Operation timed out after (\d+) milliseconds with 0 bytes received\)$" %
				       (qid, re.escape(H)), timeout=8)
			check(2000 <= int(m.group(2)) < 3000, "timed out after 2 s: %r" % m.group(0))
	rows.append(("a peer that never answers: deferred after timeout: 2", timeout))

	def certificates():
		q_rogue = d.send(rcpts=["rogue@" + H])
		q_name = d.send(rcpts=["name@" + H])
		d.wait_log(r"%s: to=<rogue@%s>, handler=rogue, status=deferred, .*attempt=1, .*"
			   r"\(SSL certificate problem: self-signed certificate\)$" % (q_rogue, re.escape(H)))
		d.wait_log(r"%s: to=<name@%s>, handler=name, status=deferred, .*attempt=1, .*"
			   r"\(SSL: no alternative certificate subject name matches target host name '127\.0\.0\.2'\)$" %
			   (q_name, re.escape(H)))
		check_eq(rogue.seen(), [], "requests sent to the impostor")
		check_eq(elsewhere.seen(), [], "requests sent to a certificate for another name")
		wait_for(lambda: rogue.handshake_count(ok=False) >= 1, 5, "the impostor's handshake refused by laim")
	rows.append(("an impostor and a wrong name: deferred, nothing sent", certificates))

	def plain_http():
		qid = d.send(rcpts=["plain@" + H])
		d.wait_log(r"%s: to=<plain@%s>, handler=plain, status=delivered, delay=[0-9.]+ \(HTTP 200 OK\)$" %
			   (qid, re.escape(H)))
		check_eq(len(plain.wait_requests("/plain", 1)), 1, "requests over http://")
	rows.append(("allow_http: http:// delivers", plain_http))

	def laimctl_test():
		r = d.laimctl(["test", "quiet"])
		check_ran(r, quiet=False)
		check_eq(r.stdout, "quiet: ready: webhook: connected to localhost:%d (127.0.0.1), certificate verified; "
			 "nothing sent\n" % quiet.port, "laimctl test quiet")
		# The peer records a handshake in its own thread, after laimctl's ends.
		wait_for(lambda: quiet.handshake_count() >= 1, 5, "the handshake of laimctl test")
		time.sleep(0.3)
		check_eq(quiet.handshake_count(), 1, "TLS handshakes made by laimctl test")
		check_eq(len(quiet.seen()), 0, "requests sent by laimctl test")
		r = d.laimctl(["test", "rogue"])
		check_eq((r.returncode, r.stderr), (1, "laimctl: rogue: not ready: webhook: localhost:%d: SSL certificate "
						     "problem: self-signed certificate\n" % rogue.port), "laimctl test rogue")
		r = d.laimctl(["test", "plain"])
		check_eq(r.stdout, "plain: ready: webhook: connected to 127.0.0.1:%d (127.0.0.1), plain http; "
			 "nothing sent\n" % plain.port, "laimctl test plain")
	rows.append(("laimctl test: TLS handshake verified, nothing sent", laimctl_test))

	def system_tls_policy():
		"""A peer of TLS 1.2 at most gets the post (laim's floor is 1.2);
		under an OpenSSL system policy of TLS 1.3 only (MinProtocol in
		OPENSSL_CONF), which laim's floor never lowers, the next one is
		deferred at the handshake and the peer gets no request."""
		qid = d.send(rcpts=["tls12@" + H])
		d.wait_log(r"%s: to=<tls12@%s>, handler=tls12, status=delivered, delay=[0-9.]+ \(HTTP 200 OK\)$" %
			   (qid, re.escape(H)))
		restart_under_openssl_policy(d, "MinProtocol = TLSv1.3")
		qid = d.send(rcpts=["tls12@" + H])
		d.wait_log(r"%s: to=<tls12@%s>, handler=tls12, status=deferred, .*attempt=1, .*\(.*\)$" %
			   (qid, re.escape(H)))
		check_eq(len(tls12.seen()), 1, "requests the TLS 1.2 peer got")
	rows.append(("a TLS 1.2 peer, and OpenSSL's system policy of TLS 1.3 only", system_tls_policy))

	try:
		run_rows(rows)
		check_eq(d.stop(), 0, "laimd exit status")
		log = d.log(0)
		check(TOKEN not in log and INLINE_TOKEN not in log, "a token in the log")
	finally:
		for p in (good, rogue, elsewhere, plain, quiet, tls12):
			p.stop()


run(main)
