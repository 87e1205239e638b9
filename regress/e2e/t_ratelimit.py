# A rate limit on a local uid (key uid, count 3, window 5 s, alert to a
# Maildir of its own), end to end:
#  - five SMTP sessions over the local socket as one uid: 250 three times,
#    then 451 4.7.1 "rate limit: 3 messages in 5 s from uid U (laimuser);
#    try again later", logged once; exactly one alert, which names who, how
#    many, the window, the first and last queue ids and the subjects;
#    root (a second uid) is unaffected;
#  - after the window, five sendmail runs as that uid: all exit 0 with
#    nothing on stderr, three are accepted again at once and two wait in
#    offline/ (laim-drop, the 451 is no error to the caller);
#  - SIGTERM and restart mid-window: still limited (the state is in the
#    spool), the files still wait, laimctl show limits lists the key;
#  - after the window both files are imported with their uid, delivered
#    and counted (one more session fits in their window); still one
#    alert: a key limited window after window, and mail held in offline/,
#    alert no more.
#
# The test build's laim-drop writes to this laimd's own spool
# (LAIM_TEST_SPOOL_DIR, see harness.local_env).
import sys
sys.dont_write_bytecode = True
import time
from harness import *

COUNT, WINDOW = 3, 5


def sessions(sock, tags):
	"""One SMTP transaction per tag over the local socket, as whoever
	calls it; returns "250 QID" or the reply to MAIL, one line per tag."""
	out = []
	for tag in tags:
		with Smtp(unix=sock) as c:
			c.ehlo("localhost")
			r = c.cmd("MAIL FROM:<%s@%s>" % (LOCAL_USER, HOSTNAME))
			if r.code == 250:
				c.cmd("RCPT TO:<rcpt@%s>" % HOSTNAME, 250)
				c.cmd("DATA", 354)
				c.send(data_terminated(simple_message(tag)))
				out.append("250 " + queue_id(c.expect(250, what="end of data")))
			else:
				out.append(r.lines[-1])
			c.cmd("QUIT", 221)
	return "\n".join(out)


def limits(d):
	"""laimctl show limits as root: {KEY: [KEY, USED, PER, WINDOW, LEFT,
	DEFERRED, HELD, ALERT, WHO...]}."""
	r = d.laimctl(["show", "limits"])
	check_ran(r)
	rows = {}
	for line in r.stdout.splitlines()[1:]:
		if line.startswith("no key"):
			continue
		cols = line.split()
		rows[cols[0]] = cols
	return rows


def wait_window_end(d, key):
	"""Waits until key's window is over (no longer listed)."""
	wait_for(lambda: key not in limits(d), WINDOW + 2, "the window of %s to end" % key, interval=0.1)


def alerts(d):
	return maildir_messages(d.alerts)


def smtp_burst(d, lu, key):
	"""Five sessions as lu: three accepted, two refused with the limit's
	words, logged once; one alert; root is not limited."""
	mark = d.mark()
	got = as_user(lu, lambda: sessions(d.config["socket"], ["burst %d" % i for i in range(1, 6)])).split("\n")
	refusal = "451 4.7.1 rate limit: 3 messages in 5 s from uid %d (%s); try again later" % (lu.pw_uid, LOCAL_USER)
	check([g[:3] for g in got] == ["250"] * 3 + ["451"] * 2, "replies of the five sessions: %r" % got)
	check_eq(got[3:], [refusal, refusal], "the 451s")
	qids = [g[4:] for g in got[:3]]
	for q in qids:
		d.wait_delivered(q)
	with Smtp(unix=d.config["socket"]) as c:  # root: another uid, another key
		c.ehlo("localhost")
		c_transaction(c, "root@" + HOSTNAME, ["rcpt@" + HOSTNAME], simple_message("root is not limited"))
	msgs = wait_maildir(d.alerts, 1)
	logged = d.findall_log(r"rate limit: uid %d \(%s\) reached 3 messages in 5 s \(key uid, per message, leaky\): "
			       r"deferring its mail for [1-5] s$" % (lu.pw_uid, LOCAL_USER), mark)
	check_eq(len(logged), 1, "refusal log lines for two 451s in one window")
	d.wait_log(r"(%s): from=<>, size=\d+, nrcpt=1, client=laimd, rate limit alert for handler admin$" % QID_RE,
		   since=mark)
	time.sleep(0.5)
	check_eq(len(alerts(d)), 1, "alerts in the alert Maildir")
	check_alert(msgs[0], lu, qids, key)


def check_alert(data, lu, qids, key):
	"""The alert names who, how many, the window, the first and last
	queue ids, the subjects; it comes from the null sender to postmaster
	(root, by Debian's default aliases)."""
	check(data.startswith(b"Return-Path: <>\r\nDelivered-To: root@" + HOSTNAME.encode() + b"\r\n"),
	      "the alert's envelope: %r" % data[:200])
	text = data.decode()
	who = "uid %d (%s)" % (lu.pw_uid, LOCAL_USER)
	for want in ["From: Mail Delivery System <MAILER-DAEMON@%s>" % HOSTNAME,
		     "Subject: rate limit: %s reached 3 messages in 5 s" % who,
		     "Auto-Submitted: auto-generated",
		     "%s reached its rate limit on %s: 3 messages in 5 s" % (who, HOSTNAME),
		     "Counted:         3 messages",
		     "Deferred so far: 1",
		     "First queue id:  %s" % qids[0],
		     "Last queue id:   %s" % qids[2],
		     "reset-limit\r\n%s clears this one" % key]:
		check(want in text, "the alert lacks %r:\n%s" % (want, text))
	check(re.search(r"\(5 s\)\r\n", text), "the alert does not give the window:\n%s" % text)
	for i in (1, 2, 3):
		check(re.search(r"\r\n +1  burst %d\r\n" % i, text), "subject 'burst %d' not listed:\n%s" % (i, text))
	check("burst 4" not in text, "a refused message's subject is listed:\n%s" % text)


def sendmail_burst(d, lu, mark):
	"""After the window: five sendmail runs all exit 0 at once; three are
	accepted, two wait in offline/, owned by lu."""
	runs = [d.sendmail(["rcpt@" + HOSTNAME], ("Subject: cron %d\n\nreport %d\n" % (i, i)).encode(), user=lu)
		for i in range(1, 6)]
	for r in runs:
		check_ran(r)
	direct = [m for m in d.findall_log(LOCAL_FROM_RE % re.escape("%s@%s" % (LOCAL_USER, HOSTNAME)), mark)]
	check_eq([m.group(6) for m in direct], [None] * 3, "offline= of the messages accepted at once")
	names = d.spool_files("offline")
	check_eq(len(names), 2, "files in offline/ (%r)" % names)
	for n in names:
		check_eq(os.lstat(os.path.join(d.spool, "offline", n)).st_uid, lu.pw_uid, "owner of offline/%s" % n)
	return names


def restart(d, lu, key):
	"""SIGTERM and a restart in the window: still limited, the files still
	wait, show limits lists the key at 3 of 3 with its alert sent earlier."""
	row = limits(d)[key]
	check(int(row[4].rstrip("s")) >= 3, "too little of the window left to restart in it: %r" % row)
	d.stop()
	check(os.path.exists(os.path.join(d.spool, "ratelimit.json")), "no rate limit state in the spool")
	d.start()
	got = as_user(lu, lambda: sessions(d.config["socket"], ["after restart"]))
	check(got.startswith("451 4.7.1 rate limit: 3 messages in 5 s from uid %d" % lu.pw_uid),
	      "after the restart: %r" % got)
	row = limits(d)[key]
	check_eq(row[1:4] + row[5:8], ["3/3", "msg", "5s", "3", "yes", "earlier"], "show limits after the restart: %r" % row)
	check_eq(len(d.spool_files("offline")), 2, "files in offline/ after the restart")


def imported(d, lu, names, mark):
	"""After the window: both files imported with lu's uid, delivered."""
	sender = "%s@%s" % (LOCAL_USER, HOSTNAME)
	wait_for(lambda: len(d.findall_log(LOCAL_FROM_RE % re.escape(sender), mark)) == 5, WINDOW + 5,
		 "the two held files to be imported")
	got = {m.group(6): m for m in d.findall_log(LOCAL_FROM_RE % re.escape(sender), mark) if m.group(6)}
	check_eq(sorted(got), sorted(names), "offline= of the imports")
	for m in got.values():
		check_eq(int(m.group(5)), lu.pw_uid, "uid= of %r" % m.group(0))
		d.wait_delivered(m.group(1))
	check_eq(d.spool_files("offline"), [], "offline/ after the import")
	# The imports counted: one more message fits in their window.
	got = as_user(lu, lambda: sessions(d.config["socket"], ["after import 1", "after import 2"])).split("\n")
	check(got[0].startswith("250 ") and got[1].startswith("451 4.7.1 rate limit: 3 messages in 5 s"),
	      "two sessions after the two imports: %r" % got)
	d.wait_log(r"rate limit: uid %d \(%s\): window of 5 s over: 3 messages counted, 3 deferred, "
		   r"mail held in offline/$" % (lu.pw_uid, LOCAL_USER), since=mark)
	time.sleep(1)
	check_eq(len(alerts(d)), 1, "alerts after the sendmail burst, the restart and the import")
	# 3 + root's + 5 + 1: each once.
	d.wait_delivered(got[0][4:])
	check_eq(len(maildir_files(d.maildir)), 10, "messages in the inbox")


def main():
	gid = drop_gid()
	lu = local_user()
	key = "uid:%d" % lu.pw_uid
	d = Laimd()
	d.alerts = d.make_user_dir(os.path.join(d.dir, "alerts"))
	d.config["handlers"]["admin"] = {"type": "maildir", "path": d.alerts}
	d.config["rate_limits"] = [{"key": "uid", "count": COUNT, "window": WINDOW, "alert": "admin"}]
	try:
		d.start()
		check_eq(os.stat(os.path.join(d.spool, "offline")).st_gid, gid, "group of offline/")
		run_rows([
			("five sessions as one uid: 250 x3, 451 4.7.1 x2, logged once, one alert; root unaffected",
			 lambda: smtp_burst(d, lu, key)),
		])
		wait_window_end(d, key)
		mark = d.mark()
		names = []
		run_rows([
			("after the window: five sendmail runs exit 0, three accepted, two wait in offline/",
			 lambda: names.extend(sendmail_burst(d, lu, mark))),
			("SIGTERM and restart mid-window: still limited, the files still wait",
			 lambda: restart(d, lu, key)),
			("after the window: both files imported with the uid and delivered; still one alert",
			 lambda: imported(d, lu, names, mark)),
		])
		d.stop()
	finally:
		if d.running():
			d.kill_tree()


run(main)
