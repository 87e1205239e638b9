# laimctl and mailq over the control socket, with a handler that defers:
# show queue (id, sender, recipients, attempts, last error), show stats,
# flush (a retry now, although retry_initial is 60 s; also sendmail -q),
# remove ID, show failed; mailq in Postfix's layout, everything for root
# and only the caller's own messages for another user, who may flush them
# (not root's) but not remove nor see the stats; an argument laimd would refuse (empty, a
# control character, too long) is a usage error. A smarthost's reply with
# C1 controls, a raw 8-bit CSI and a bidi override is escaped in show
# queue and mailq as in the log, and a long reply of many lines is kept
# as its first 500 bytes in show queue, mailq and failed/ID.reason. A
# recipient that has the message is no longer listed under it.
import sys
sys.dont_write_bytecode = True
import signal
import threading
import time
from harness import *
from peer_scripted import ScriptedPeer

ROOT = "root@" + HOSTNAME
OPS = "ops@" + HOSTNAME
BAD = '"a/b"@' + HOSTNAME
# ScriptedPeer sends its replies as latin-1: "\xc2\x9b" is UTF-8 U+009B (CSI),
# "\x9b" the raw 8-bit CSI, "\xe2\x80\xae" U+202E (right-to-left override).
HOSTILE = "4.3.0 \xc2\x9b2J\xc2\x9b31mcleared\xc2\x9d0;title\xc2\x9c raw\x9b7m \xe2\x80\xaedesrever"
HOSTILE_ESCAPED = r"4.3.0 \xc2\x9b2J\xc2\x9b31mcleared\xc2\x9d0;title\xc2\x9c raw\x9b7m \xe2\x80\xaedesrever"
# Ten lines, the first HOSTILE, the rest 1 KB each: 10 KB the queue must
# not keep whole (a peer may send 200 lines of 4 KB, for each recipient).
LONG = "x" * 1000
STORED_REASON = 500  # bytes of a reason the queue keeps, then " [...]"
OPENAT = 257  # x86_64


def long_reply(code, enhanced, first):
	return "\r\n".join(["%s-%s" % (code, first)] + ["%s-%s %s" % (code, enhanced, LONG)] * 8 +
			    ["%s %s %s" % (code, enhanced, LONG)])
DEFERRED = r"%s: to=<%s>, handler=inbox, status=deferred, delay=[0-9.]+, attempt=%d, retry_in=\d+s \((.+)\)$"
# A row of "laimctl show queue": ID AGE SIZE SENDER RECIPIENTS ATTEMPTS LAST ERROR
ROW = r"^(%s) +(\d+[smhd]) +(\S+) +(\S+) +(\S+) +(\d+)(?:  (.*))?$" % QID_RE


def queue_rows(r):
	check_ran(r)
	rows = {}
	for line in r.stdout.splitlines()[1:]:
		m = re.match(ROW, line)
		check(m, "not a row of show queue: %r in %r" % (line, r))
		rows[m.group(1)] = m
	return rows


def mailq_blocks(text):
	"""{id: block of lines} of a Postfix-style mailq listing."""
	blocks = {}
	for chunk in text.split("\n\n"):
		m = re.search(r"(?m)^(%s)\*?!? +(\d+) (\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d) +(\S+)\n" % QID_RE, chunk)
		if m:
			check(m.group(1) not in blocks, "%s twice in mailq: %r" % (m.group(1), text))
			blocks[m.group(1)] = chunk[m.start():]
	return blocks


def main():
	lu = local_user()
	user = "%s@%s" % (lu.pw_name, HOSTNAME)
	d = Laimd(retry_initial=60, retry_max=3600)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()

	mark = d.mark()
	check_ran(d.sendmail(["-f", OPS, "root"], b"Subject: from root\n\nroot's\n"))
	qroot = d.wait_local_submission(mark, OPS).group(1)
	check_ran(d.sendmail(["root"], b"Subject: from a user\n\nthe user's\n", user=lu))
	quser = d.wait_local_submission(mark, user).group(1)
	reason = {}
	for q in (qroot, quser):
		reason[q] = d.wait_log(DEFERRED % (q, re.escape(ROOT), 1)).group(1)

	def show_queue():
		rows = queue_rows(d.laimctl(["show", "queue"]))
		check_eq(sorted(rows), sorted([qroot, quser]), "ids in laimctl show queue")
		for q, sender in ((qroot, OPS), (quser, user)):
			m = rows[q]
			check_eq((m.group(4), m.group(5), m.group(6)), (sender, ROOT, "1"),
				 "sender, recipients, attempts of %s" % q)
			check_eq(m.group(7), reason[q], "last error of %s" % q)

	def stats():
		r = d.laimctl(["show", "stats"])
		check_ran(r)
		st = dict(re.findall(r"(?m)^(\S+) +(\d+)$", r.stdout))
		for k, v in (("received", "2"), ("deferred", "2"), ("queue_length", "2"), ("delivered", "0"),
			     ("handler.inbox.deferred", "2")):
			check_eq(st.get(k), v, "%s in show stats (%r)" % (k, r.stdout))

	def flush():
		m = d.mark()
		r = d.laimctl(["flush"])
		check_ran(r)
		for q in (qroot, quser):
			d.wait_log(DEFERRED % (q, re.escape(ROOT), 2), timeout=5, since=m)

	def sendmail_q():
		m = d.mark()
		check_ran(d.sendmail(["-q"]), quiet=False)
		d.wait_log(DEFERRED % (qroot, re.escape(ROOT), 3), timeout=5, since=m)

	def mailq_root():
		r = d.sendmail([], argv0="mailq")
		check_ran(r)
		check(r.stdout.startswith("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"),
		      "mailq heading: %r" % r.stdout)
		blocks = mailq_blocks(r.stdout)
		check_eq(sorted(blocks), sorted([qroot, quser]), "ids in mailq (%r)" % r.stdout)
		for q, sender in ((qroot, OPS), (quser, user)):
			b = blocks[q]
			check(re.match(r"%s +\d+ .{20} %s\n" % (q, re.escape(sender)), b), "mailq: sender of %s: %r" % (q, b))
			check(re.search(r"(?m)^ *\(maildir: %s/.*\)$" % re.escape(blocked), b), "mailq: no (last error) line for %s: %r" % (q, b))
			check(re.search(r"(?m)^ {42}%s$" % re.escape(ROOT), b), "mailq: recipient of %s: %r" % (q, b))
		check(re.search(r"(?m)^-- \d+ Kbytes in 2 Requests\.$", r.stdout), "mailq total line: %r" % r.stdout)

	def mailq_user():
		for argv0, args in (("mailq", []), ("sendmail", ["-bp"])):
			r = d.sendmail(args, argv0=argv0, user=lu)
			check_ran(r)
			check_eq(sorted(mailq_blocks(r.stdout)), [quser], "ids in %s as %s (%r)" % (argv0, lu.pw_name, r.stdout))
			check(qroot not in r.stdout, "root's message shown to %s: %r" % (lu.pw_name, r.stdout))
		rows = queue_rows(d.laimctl(["show", "queue"], user=lu))
		check_eq(sorted(rows), [quser], "laimctl show queue as %s" % lu.pw_name)

	def user_limits():
		m = d.mark()
		r = d.laimctl(["flush"], user=lu)
		check_ran(r)
		time.sleep(1)
		check(not d.search_log(r"%s: to=<" % qroot, m), "%s's flush retried root's message %s" % (lu.pw_name, qroot))
		check(not d.search_log(r"%s: to=<" % quser, m),
		      "%s's flush retried %s, whose last round ended less than retry_initial ago" % (lu.pw_name, quser))
		for args in (["remove", qroot], ["show", "stats"], ["show", "failed"]):
			r = d.laimctl(args, user=lu)
			check(r.returncode != 0 and r.err.strip(), "laimctl %s as %s: %r" % (" ".join(args), lu.pw_name, r))
		check(qroot in d.spool_files("queue"), "%s left queue/ after a user's remove" % qroot)

	def remove():
		r = d.laimctl(["remove", qroot])
		check_ran(r)
		d.wait_log(r"%s: removed by the administrator$" % qroot, since=0)
		check_eq(d.spool_files("queue"), [quser], "queue/ after remove")
		check_eq(sorted(queue_rows(d.laimctl(["show", "queue"]))), [quser], "show queue after remove")
		r = d.laimctl(["remove", qroot])
		check(r.returncode != 0 and "no such message" in r.stderr, "removing it again: %r" % r)

	def failed():
		# Accepted while inbox is a plain Maildir, then inbox delivers per
		# recipient, where "a/b" cannot be a directory: a permanent failure.
		qbad = d.send(sender="bad@client.example", rcpts=[BAD], msg=simple_message("doomed"))
		d.wait_log(DEFERRED % (qbad, re.escape(BAD), 1))
		boxes = d.make_user_dir(os.path.join(d.dir, "boxes"))
		d.config["handlers"] = {"inbox": {"type": "maildir", "path": boxes, "per_recipient": True}}
		d.write_config()
		m = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=m)
		check_ran(d.laimctl(["flush"]))
		d.wait_log(r"%s: moved to failed/" % qbad, since=m)
		d.wait_removed(quser)
		r = d.laimctl(["show", "failed"])
		check_ran(r)
		row = re.search(r"(?m)^%s +\d+[smhd] +\S+ +bad@client\.example +%s +(.*a/b.*)$" % (qbad, re.escape(BAD)),
				r.stdout)
		check(row, "show failed does not list %s with its reason: %r" % (qbad, r.stdout))
		st = dict(re.findall(r"(?m)^(\S+) +(\d+)$", d.laimctl(["show", "stats"]).stdout))
		check(int(st.get("failed", 0)) >= 1 and int(st.get("delivered", 0)) >= 1, "stats after: %r" % st)
		r = d.sendmail([], argv0="mailq")
		check_ran(r)
		check_eq(r.stdout, "Mail queue is empty\n", "mailq with an empty queue")

	def failed_off_loop():
		"""show failed reads failed/ on a thread of its own: while opening a
		file there takes 5 s (strace holds the open), a message sent
		meanwhile still gets its 250 at once, and the list comes whole."""
		qbad = d.spool_files("failed")[0]
		handler = d.child("handler")
		tracer = strace_attach([handler], ["-P", os.path.join(d.spool, "failed", qbad), "-e", "trace=openat",
						   "-e", "inject=openat:delay_enter=5000000"])
		try:
			shown = {}
			lister = threading.Thread(target=lambda: shown.update(r=d.laimctl(["show", "failed"])))
			lister.start()
			wait_for(lambda: in_syscall(handler, OPENAT), 10, "show failed held in the open of failed/" + qbad)
			start = time.monotonic()
			q = d.send(sender="s@client.example", rcpts=[ROOT], msg=simple_message("while listing"))
			took = time.monotonic() - start
			check(took < 2.5, "%s got its 250 after %.1f s, while show failed read failed/" % (q, took))
			lister.join(30)
			check_ran(shown["r"])
			check(re.search(r"(?m)^%s " % qbad, shown["r"].stdout), "show failed: %r" % shown["r"].stdout)
		finally:
			strace_detach(tracer)

	def peer_words():
		"""A smarthost's 451 of ten lines, the first with C1 controls, a raw
		8-bit CSI and a bidi override: show queue and mailq print its
		first 500 bytes, escaped as the log does, no byte of it raw. Its
		550 of ten 1 KB lines to five recipients: each line of
		failed/ID.reason keeps 500 bytes of it."""
		peer = ScriptedPeer(rcpt=lambda a: long_reply("451", "4.3.0", HOSTILE) if a.startswith("defer")
				    else long_reply("550", "5.1.1", "5.1.1 " + LONG))
		try:
			d.config["handlers"]["relay"] = {"type": "smarthost", "host": "127.0.0.1", "port": peer.port,
							 "tls": "none"}
			d.config["routes"] = [{"match": "*@relay.example", "handlers": ["relay"]},
					      {"match": "*", "handlers": ["inbox"]}]
			d.write_config()
			m = d.mark()
			d.send_signal(signal.SIGHUP)
			d.wait_log(r"configuration reloaded$", since=m)
			q = d.send(sender="s@client.example", rcpts=["defer@relay.example"], msg=simple_message("hostile"))
			d.wait_log(r"%s: to=<defer@relay\.example>, handler=relay, status=deferred, .* \(RCPT TO: 451 %s / "
				   % (q, re.escape(HOSTILE_ESCAPED)))
			head = "RCPT TO: 451 %s / 4.3.0 " % HOSTILE
			stored = ("RCPT TO: 451 %s / 4.3.0 " % HOSTILE_ESCAPED) + "x" * (STORED_REASON - len(head)) + " [...]"
			for what, r, want in (("laimctl show queue", d.laimctl(["show", "queue"]), "  %s\n" % stored),
					      ("mailq", d.sendmail([], argv0="mailq"), "(%s)\n" % stored)):
				check_ran(r)
				check(all(b < 0x80 for b in r.out), "%s prints the peer's bytes raw: %r" % (what, r.out[:3000]))
				check(want in r.stdout, "%s lacks the reason %r: %r" % (what, want, r.stdout[:3000]))
			check_ran(d.laimctl(["remove", q]))

			rcpts = ["reject%d@relay.example" % i for i in range(5)]
			q = d.send(sender="s@client.example", rcpts=rcpts, msg=simple_message("rejected"))
			d.wait_log(r"%s: moved to failed/" % q)
			stored = "5.1.1 RCPT TO: 550 5.1.1 " + "x" * (STORED_REASON - len("RCPT TO: 550 5.1.1 ")) + " [...]"
			with open(os.path.join(d.spool, "failed", q + ".reason")) as f:
				reason = f.read()
			check_eq(reason, "".join("<%s> handler relay: %s\n" % (r, stored) for r in rcpts), "failed/%s.reason" % q)
			r = d.laimctl(["show", "failed"])
			check_ran(r)
			check(re.search(r"(?m)^%s .* %s$" % (q, re.escape("<reject0@relay.example> handler relay: " + stored)),
					r.stdout), "show failed: %r" % r.stdout[:3000])
		finally:
			peer.stop()

	def done_recipients():
		"""A recipient that has the message is left out of show queue and
		mailq, as Postfix's showq leaves it out; one routed to two
		instances stays until both have it."""
		d.config["handlers"]["blk"] = {"type": "maildir", "path": blocked}
		d.config["routes"] = [{"match": "*@blocked.example", "handlers": ["blk"]},
				      {"match": "*@both.example", "handlers": ["inbox", "blk"]},
				      {"match": "*", "handlers": ["inbox"]}]
		d.write_config()
		m = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=m)
		check_ran(d.sendmail(["root", "x@blocked.example", "y@both.example"], b"Subject: mixed\n\nbody\n"))
		q = d.wait_local_submission(m, "root@" + HOSTNAME).group(1)
		for rcpt, inst, status in ((ROOT, "inbox", "delivered"), ("y@both.example", "inbox", "delivered"),
					   ("x@blocked.example", "blk", "deferred"), ("y@both.example", "blk", "deferred")):
			d.wait_log(r"%s: to=<%s>, handler=%s, status=%s" % (q, re.escape(rcpt), inst, status), since=m)
		rows = queue_rows(d.laimctl(["show", "queue"]))
		check_eq(rows[q].group(5), "x@blocked.example,y@both.example", "recipients of %s in show queue" % q)
		r = d.sendmail([], argv0="mailq")
		check_ran(r)
		b = mailq_blocks(r.stdout)[q]
		check_eq(re.findall(r"(?m)^ {42}(\S+)$", b), ["x@blocked.example", "y@both.example"],
			 "recipients of %s in mailq (%r)" % (q, b))
		check_ran(d.laimctl(["remove", q]))

	def usage_errors():
		"""An argument laimd would refuse is a usage error (64) naming what
		is wrong, before sending it; the longest one laimd reads goes."""
		longest = "x" * (1024 - len("test \n"))
		for args, what in ((["test", ""], "test: INSTANCE is empty"),
				   (["test", "a b"], "test: INSTANCE holds a space"),
				   (["test", "a\tb"], "test: INSTANCE holds a control character"),
				   (["reset-limit", ""], "reset-limit: KEY is empty"),
				   (["reset-limit", "uid:0\x7f"], "reset-limit: KEY holds a control character"),
				   (["test", longest + "x"], "test: INSTANCE is longer than %d bytes" % len(longest)),
				   (["reset-limit", "k" * 2000], "reset-limit: KEY is longer than 1011 bytes")):
			r = d.laimctl(args)
			check_ran(r, 64, quiet=False)
			check_eq(r.stderr, "laimctl: %s\n" % what, "laimctl %r" % args[:1])
		r = d.laimctl(["test", longest])
		check_ran(r, 1, quiet=False)
		check_eq(r.stderr, "laimctl: no handler instance %s\n" % longest, "the longest request")

	def user_flush_pace():
		"""A user's flush in a loop starts a round of their message once
		retry_initial (4 s here) has passed since the last, not at each
		call: a round may be a smarthost's session."""
		e = Laimd(name="t_laimctl_pace", retry_initial=4, retry_max=3600)
		e.config["handlers"] = {"inbox": {"type": "maildir", "path": e.make_blocked_dir(os.path.join(e.dir, "b"))}}
		e.start()
		try:
			m = e.mark()
			check_ran(e.sendmail(["root"], b"Subject: paced\n\nbody\n", user=lu))
			q = e.wait_local_submission(m, user).group(1)
			e.wait_log(DEFERRED % (q, re.escape(ROOT), 1), since=m)
			t0 = time.monotonic()
			while time.monotonic() - t0 < 6:
				check_ran(e.laimctl(["flush"], user=lu))
				time.sleep(0.05)
			rounds = len(e.findall_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % q, m))
			check_eq(rounds, 2, "rounds of %s in 6 s of %s's flushes, retry_initial 4 s" % (q, lu.pw_name))
		finally:
			e.cleanup()

	run_rows([
		("laimctl show queue: id, sender, recipients, attempts, last error", show_queue),
		("laimctl show stats: received, deferred, queue_length", stats),
		("laimctl flush: a retry now (attempt=2) despite retry_initial 60", flush),
		("sendmail -q: a retry now (attempt=3)", sendmail_q),
		("mailq as root: every message, Postfix layout", mailq_root),
		("mailq, sendmail -bp, laimctl show queue as a user: only the user's message", mailq_user),
		("a user may flush, but not remove, show stats or show failed", user_limits),
		("a user's flush starts a round at most every retry_initial", user_flush_pace),
		("laimctl remove ID", remove),
		("laimctl show failed; mailq with an empty queue", failed),
		("show failed reads failed/ off the handler's main loop: a 250 meanwhile comes at once", failed_off_loop),
		("a peer's reply in show queue, mailq, failed/: escaped as in the log, 500 bytes of it", peer_words),
		("show queue and mailq leave out a recipient that has the message", done_recipients),
		("laimctl usage errors exit 64 before sending; the longest request goes", usage_errors),
	])


run(main)
