# Rate limits on the other keys, over TCP, and their administration:
#  - key sender, per recipient: a message's recipients count, the MAIL
#    after the limit gets 451 4.7.1 naming the recipients; the alert lists
#    a subject of C1 controls and bidi overrides as printable text; another sender
#    is not limited; sessions open at once cannot overshoot (a MAIL counts
#    when answered) and a transaction without data gives its place back; the alert (from the null sender) counts under no key,
#    so it can never trigger a limit, and <> is a sender like any other;
#  - SIGHUP keeps the windows of a limit whose count changed;
#  - laimctl show limits lists the key, reset-limit KEY clears it (a
#    sender key with a space in its quoted local part too); both are
#    root's only, and an unknown key is an error;
#  - key client, mode strict: refused attempts count, so a client that
#    keeps trying is still refused in the next window (leaky would accept
#    it, t_ratelimit) and gets through once it has been quiet; the local
#    socket is another client;
#  - strict: a burst of refused MAILs on the local socket (one key for
#    every local user) holds the key back for the window after it alone;
#  - a state file that does not parse is logged and laimd starts without it.
import sys
sys.dont_write_bytecode = True
import base64
import signal
import time
from harness import *

A = "a@client.example"
# A subject that decodes to C1 controls (CSI, OSC, ST), a right-to-left
# override and a line separator; the alert lists it with '?' for each
# control and without the others.
HOSTILE = "x\u009b2J\u009b31m\u009d0;pwned\u009c \u202eevil\u2028forged line"
HOSTILE_ENCODED = "=?utf-8?b?%s?=" % base64.b64encode(HOSTILE.encode()).decode()
HOSTILE_LISTED = "x?2J?31m?0;pwned? evilforged line"


def mail(d, sender, rcpts, tag):
	"""One TCP transaction; "250 QID" or the reply to MAIL."""
	with d.smtp() as c:
		c.ehlo()
		r = c.cmd("MAIL FROM:<%s>" % sender)
		if r.code != 250:
			return r.lines[-1]
		for x in rcpts:
			c.cmd("RCPT TO:<%s>" % x, 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message(tag)))
		return "250 " + queue_id(c.expect(250, what="end of data"))


def rcpts(n):
	return ["r%d@%s" % (i, HOSTNAME) for i in range(n)]


def per_recipient(d):
	"""Two messages of two recipients: both accepted (the limit of 3 is
	checked at MAIL), the third MAIL refused with 4 recipients."""
	check(mail(d, A, rcpts(2), "one").startswith("250 "), "first message")
	check(mail(d, A, rcpts(2), HOSTILE_ENCODED).startswith("250 "), "second message")
	check_eq(mail(d, A, rcpts(1), "three"),
		 "451 4.7.1 rate limit: 4 recipients in 60 s from <%s>; try again later" % A, "third MAIL")
	check(mail(d, "b@client.example", rcpts(3), "other").startswith("250 "), "another sender")
	msgs = wait_maildir(d.alerts, 1)
	check(b"Subject: rate limit: <%s> reached 4 recipients in 60 s\r\n" % A.encode() in msgs[0],
	      "the alert: %r" % msgs[0][:600])
	check(b"Counted:         4 recipients\r\n" in msgs[0], "the alert's count: %r" % msgs[0])
	listed = re.findall(rb"(?m)^ +1  (.*)\r$", msgs[0])
	check_eq(sorted(listed), [b"one", HOSTILE_LISTED.encode()], "subjects listed in the alert (%r)" % msgs[0])


def reservations(d):
	"""A MAIL is counted when it is answered, so sessions open at once
	cannot overshoot; a transaction that ends without data (QUIT, RSET)
	gives its place back."""
	c = "c@client.example"
	open_ = []
	try:
		for i in range(3):
			s = d.smtp()
			open_.append(s)
			s.ehlo()
			s.cmd("MAIL FROM:<%s>" % c, 250)
		check_eq(mail(d, c, rcpts(1), "fourth at once"),
			 "451 4.7.1 rate limit: 3 recipients in 60 s from <%s>; try again later" % c, "a fourth MAIL")
		open_[0].cmd("RSET", 250)
		open_[1].cmd("QUIT", 221)
		open_[2].close()
		time.sleep(0.3)
		check(mail(d, c, rcpts(2), "after the others left").startswith("250 "), "the places given back")
	finally:
		for s in open_:
			s.close()


def null_sender(d):
	"""The alert came from <> with one recipient and counted nowhere: <>
	still has all of its 3 recipients, then is limited like any sender."""
	for i in range(3):
		check(mail(d, "", rcpts(1), "bounce %d" % i).startswith("250 "), "message %d from <>" % (i + 1))
	check_eq(mail(d, "", rcpts(1), "bounce 4"), "451 4.7.1 rate limit: 3 recipients in 60 s from <>; try again later",
		 "fourth message from <>")
	time.sleep(0.5)
	check_eq(len(maildir_files(d.alerts)), 3, "alerts (one each for <%s>, <c@client.example> and <>)" % A)


def reload(d):
	"""SIGHUP with a higher count: the window is kept (4 recipients
	counted), the new limit applies to it."""
	d.config["rate_limits"][0]["count"] = 5
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"handler configuration reloaded$", since=mark)
	check(mail(d, A, rcpts(1), "fifth").startswith("250 "), "the fifth recipient under count 5")
	check_eq(mail(d, A, rcpts(1), "sixth"), "451 4.7.1 rate limit: 5 recipients in 60 s from <%s>; try again later" % A,
		 "the sixth")


def administration(d, lu):
	"""show limits and reset-limit: root's; reset lets the sender in."""
	r = d.laimctl(["show", "limits"])
	check_ran(r)
	row = [l.split() for l in r.stdout.splitlines() if l.startswith("sender:" + A)]
	check(row, "show limits does not list sender:%s:\n%s" % (A, r.stdout))
	check_eq(row[0][1:4] + row[0][5:8], ["5/5", "rcpt", "60s", "2", "no", "sent"], "its row")
	check(re.search(r"^KEY +USED +PER +WINDOW +LEFT +DEFERRED +HELD +ALERT +WHO$", r.stdout, re.M),
	      "show limits header: %r" % r.stdout)
	for args in (["show", "limits"], ["reset-limit", "sender:" + A]):
		r = d.laimctl(args, user=lu)
		check_ran(r, 1, quiet=False)
		check_eq(r.stderr, "laimctl: permission denied\n", "laimctl %s as %s" % (" ".join(args), lu.pw_name))
	check(mail(d, A, rcpts(1), "still limited").startswith("451 4.7.1 "), "before the reset")
	mark = d.mark()
	r = d.laimctl(["reset-limit", "sender:" + A])
	check_ran(r)
	check_eq(r.stdout, "sender:%s: rate limit reset\n" % A, "reset-limit's answer")
	d.wait_log(r"rate limit: sender:%s reset by laimctl$" % re.escape(A), since=mark)
	check(mail(d, A, rcpts(1), "after reset").startswith("250 "), "after the reset")
	r = d.laimctl(["reset-limit", "sender:nobody@client.example"])
	check_ran(r, 1, quiet=False)
	check_eq(r.stderr, "laimctl: no rate limit window for sender:nobody@client.example\n", "unknown key")
	# Any client may give a quoted local part with a space: its key too.
	q = '"john doe"@client.example'
	check(mail(d, q, rcpts(5), "quoted").startswith("250 "), "%s's first message" % q)
	check(mail(d, q, rcpts(1), "quoted limited").startswith("451 4.7.1 "), "%s limited" % q)
	r = d.laimctl(["reset-limit", "sender:" + q])
	check_ran(r)
	check_eq(r.stdout, "sender:%s: rate limit reset\n" % q, "reset-limit's answer for a key with a space")
	check(mail(d, q, rcpts(1), "quoted after reset").startswith("250 "), "%s after the reset" % q)


def strict(d):
	"""count 2 in 2 s, strict: two accepted, then refusals that count; the
	window that follows opens with what was counted beyond the limit (at
	most the limit), so the client stays refused until it has been quiet.
	The local socket is another client. Times are from the start of a
	second, the windows' resolution."""
	time.sleep(1.05 - time.time() % 1)
	s0 = int(time.time())
	got = [mail(d, A, rcpts(1), "s%d" % i)[:3] for i in range(4)]
	check_eq(got, ["250", "250", "451", "451"], "four messages in the first window")
	check_eq(mail(d, A, rcpts(1), "s5"), "451 4.7.1 rate limit: 4 messages in 2 s from 127.0.0.1; try again later",
		 "the fifth (the refusals counted)")
	with Smtp(unix=d.config["socket"]) as c:
		c.ehlo("localhost")
		c_transaction(c, "root@" + HOSTNAME, rcpts(1), simple_message("local socket"))

	def at(t, what, code):
		time.sleep(max(0, s0 + t - time.time()))
		check_eq(mail(d, A, rcpts(1), what)[:3], code, "%s (%.1f s after the first)" % (what, t))
	# 5 counted, 2 allowed: the second window opens with the 2 of the limit
	# (leaky would let the client in); its refusal makes 3, 1 goes on into
	# the third window: room again.
	at(2.3, "second window", "451")
	at(4.3, "third window", "250")


def strict_burst(d, lu):
	"""A local user's 2 messages and 30 refused MAILs on the local socket
	(key client:local, every local user's), then quiet: the second window
	holds the 2 of the limit carried (show limits: 2/2), not 30, and
	root's message in the third is accepted (without the cap it would wait
	15 windows)."""
	time.sleep(1.05 - time.time() % 1)
	b0 = int(time.time())
	sender = "%s@%s" % (lu.pw_name, HOSTNAME)

	def burst():
		with Smtp(unix=d.config["socket"]) as c:
			c.ehlo("localhost")
			for i in range(2):
				c_transaction(c, sender, rcpts(1), simple_message("burst %d" % i))
			return [c.cmd("MAIL FROM:<%s>" % sender).code for i in range(30)]
	check_eq(as_user(lu, burst), str([451] * 30), "replies to the 30 MAILs after the limit")
	check(time.time() < b0 + 1.8, "the burst outlasted its window (%.1f s)" % (time.time() - b0))
	time.sleep(max(0, b0 + 2.3 - time.time()))
	r = d.laimctl(["show", "limits"])
	check_ran(r)
	row = [l.split() for l in r.stdout.splitlines() if l.startswith("client:local ")]
	check(row, "show limits does not list client:local in the window after the burst:\n%s" % r.stdout)
	check_eq(row[0][1], "2/2", "client:local's count in the window after the burst")
	time.sleep(max(0, b0 + 4.3 - time.time()))
	with Smtp(unix=d.config["socket"]) as c:
		c.ehlo("localhost")
		r = c.cmd("MAIL FROM:<root@%s>" % HOSTNAME)
		check_eq(r.lines[-1][:3], "250", "root's MAIL in the third window (%r)" % r.lines[-1])


def main():
	lu = local_user()
	d = Laimd()
	d.alerts = d.make_user_dir(os.path.join(d.dir, "alerts"))
	d.config["handlers"]["admin"] = {"type": "maildir", "path": d.alerts}
	d.config["rate_limits"] = [{"key": "sender", "count": 3, "window": 60, "per": "recipient", "alert": "admin"}]
	d.start()
	run_rows([
		("key sender, per recipient: the MAIL after 4 recipients gets 451 4.7.1; one alert",
		 lambda: per_recipient(d)),
		("MAIL reserves its count, a transaction without data gives it back", lambda: reservations(d)),
		("the alert counts under no key: <> has its own 3 recipients", lambda: null_sender(d)),
		("SIGHUP keeps the windows of a limit whose count changed", lambda: reload(d)),
		("laimctl show limits and reset-limit: root only; reset lets the sender in", lambda: administration(d, lu)),
	])
	d.stop()
	# A state file that does not parse (a disk's fault) costs the counts,
	# never the start.
	state = os.path.join(d.spool, "ratelimit.json")
	check(os.path.exists(state), "no %s after a stop" % state)
	with open(state, "w") as f:
		f.write('{"version": 1, "windows": [{"rule": "sender/60/recipient", "key": 7')
	d.config["rate_limits"] = [{"key": "client", "count": 2, "window": 2, "mode": "strict"}]
	d.start()
	d.wait_log(r"%s: unusable rate limit state \(.+\): starting without it$" % re.escape(state))
	run_rows([("key client, strict: refusals count, carried into the next window", lambda: strict(d)),
		  ("strict: a burst of refusals holds a key back for one window", lambda: strict_burst(d, lu))])
	d.stop()


run(main)
