# Handler API v2 through a real laimd: one call answered per recipient
# (as Dovecot's LMTP answers after DATA) is settled per recipient. The
# delivered one is never delivered again, the deferred one is retried
# until it gets through, the failed one lands in failed/ with the peer's
# code and text, and neither is tried again after a restart or a kill -9
# (queue/ID.done). A Retry-After later than the back-off is honoured. The
# probe handler (regress/handlers/probe.cpp, a check build only) gives the
# answers its recipients' local parts ask for.
import sys
sys.dont_write_bytecode = True
import time
from harness import *

H = "test.laim.example"


def deliveries(path):
	try:
		with open(os.path.join(path, "deliveries")) as f:
			return f.read().split("\n")[:-1]
	except FileNotFoundError:
		return []


def main():
	d = Laimd()
	out = d.make_user_dir(os.path.join(d.dir, "probe"))
	release = os.path.join(out, "release")
	d.config["handlers"] = {
		"lmtp": {"type": "probe", "path": out, "release": release},
		"hook": {"type": "probe", "path": out, "retry_after": 30},
	}
	d.config["routes"] = [{"match": "later@*", "handlers": ["hook"]}, {"match": "*", "handlers": ["lmtp"]}]
	d.start()

	ok, defer, fail = "ok@" + H, "defer@" + H, "fail@" + H
	qid = d.send(rcpts=[ok, defer, fail], msg=simple_message("mixed"))
	d.wait_log(r"%s: to=<%s>, handler=lmtp, status=delivered, delay=[0-9.]+ \(250 2\.0\.0 <%s> Saved\)$" %
		   (qid, re.escape(ok), re.escape(ok)))
	d.wait_log(r"%s: to=<%s>, handler=lmtp, status=failed, dsn=5\.2\.2 \(552 5\.2\.2 <%s> Quota exceeded\)$" %
		   (qid, re.escape(fail), re.escape(fail)))
	d.wait_log(r"%s: to=<%s>, handler=lmtp, status=deferred, .*attempt=1, .*dsn=4\.2\.0 \(451 4\.2\.0 .*\)$" %
		   (qid, re.escape(defer)))
	# Retried (retry_initial 1 s) without the others.
	d.wait_log(r"%s: to=<%s>, handler=lmtp, status=deferred, .*attempt=3" % (qid, re.escape(defer)), 15)
	check_eq(deliveries(out), ["%s %s" % (qid, ok)], "deliveries while defer@ is deferred")
	check_eq(len(d.findall_log(r"%s: to=<%s>" % (qid, re.escape(fail)), 0)), 1, "log lines for fail@")
	check_eq(d.spool_files("queue"), [qid, qid + ".done"], "queue/ while defer@ waits")

	# A stop, then a kill -9: neither delivers ok@ again nor fails fail@ again.
	for how in ("stop", "kill -9"):
		if how == "stop":
			check_eq(d.stop(), 0, "laimd exit status")
		else:
			d.kill_tree()
		d.start()
		d.wait_log(r"%s: to=<%s>, handler=lmtp, status=deferred, .*attempt=2" % (qid, re.escape(defer)))
		check_eq(deliveries(out), ["%s %s" % (qid, ok)], "deliveries after a %s while defer@ is deferred" % how)
		check_eq(len(d.findall_log(r"%s: to=<%s>" % (qid, re.escape(fail)), 0)), 1,
			 "log lines for fail@ after a %s" % how)

	open(release, "w").close()
	d.wait_log(r"%s: to=<%s>, handler=lmtp, status=delivered" % (qid, re.escape(defer)), 15)
	d.wait_log(r"%s: moved to failed/: <%s> handler lmtp: 5\.2\.2 552" % (qid, re.escape(fail)), 10)
	check_eq(deliveries(out), ["%s %s" % (qid, ok), "%s %s" % (qid, defer)], "deliveries at the end")
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		check_eq(f.read(), "<%s> handler lmtp: 5.2.2 552 5.2.2 <%s> Quota exceeded\n" % (fail, fail),
			 "failed/%s.reason" % qid)
	check_eq(d.spool_files("queue"), [], "queue/ at the end")

	# HTTP 429 with Retry-After: 30 beats the 1-second back-off.
	q2 = d.send(rcpts=["later@" + H], msg=simple_message("throttled"))
	d.wait_log(r"%s: to=<later@%s>, handler=hook, status=deferred, .*attempt=1, retry_in=30s \(HTTP 429" %
		   (q2, re.escape(H)))
	time.sleep(3)
	check_eq(len(d.findall_log(r"%s: to=<later@" % q2, 0)), 1, "attempts within 3 s of a Retry-After: 30")
	check_eq(d.stop(), 0, "laimd exit status")
	unfinished()


def unfinished():
	"""A message whose move to failed/ fails (failed/ unwritable, as a
	full disk would make it) stays queued, listed by show queue, and
	goes to failed/ once it can, with its reason once; ok@ has it once."""
	d = Laimd(name="t_results_unfinished", retry_initial=1, retry_max=1)
	out = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"lmtp": {"type": "probe", "path": out}}
	d.config["routes"] = [{"match": "*", "handlers": ["lmtp"]}]
	d.start()
	failed = os.path.join(d.spool, "failed")
	os.chmod(failed, 0o500)
	ok, fail = "ok@" + H, "fail@" + H
	qid = d.send(rcpts=[ok, fail], msg=simple_message("unfinished"))
	d.wait_log(r"%s: finishing the queue file: .*Permission denied: it stays queued, tried again in 1s$" % qid)
	rows = d.laimctl(["show", "queue"]).stdout.splitlines()[1:]
	check_eq([r.split()[0] for r in rows], [qid], "show queue while failed/ is unwritable")
	os.chmod(failed, 0o700)
	d.wait_log(r"%s: moved to failed/" % qid)
	check_eq(deliveries(out), ["%s %s" % (qid, ok)], "deliveries")
	with open(os.path.join(failed, qid + ".reason")) as f:
		check_eq(f.read(), "<%s> handler lmtp: 5.2.2 552 5.2.2 <%s> Quota exceeded\n" % (fail, fail),
			 "failed/%s.reason" % qid)
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	check_eq(d.stop(), 0, "laimd exit status")


run(main)
