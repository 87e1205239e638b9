# A message deferred for longer than max_queue_age is given up: moved to
# failed/ with a reason file, logged, not retried any more.
import sys
sys.dont_write_bytecode = True
import re
import time
from harness import *


def main():
	d = Laimd(max_queue_age=3, retry_initial=1, retry_max=1)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()
	t0 = time.monotonic()
	qid = d.send()
	d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred, delay=[0-9.]+, attempt=1, " % qid)
	m = d.wait_log(r"%s: moved to failed/: (.+)$" % qid, 15)
	took = time.monotonic() - t0
	check(took >= 2.5, "given up after %.2fs, before max_queue_age (3s)" % took)
	check(os.path.exists(os.path.join(d.spool, "failed", qid)), "failed/%s missing" % qid)
	reason_file = os.path.join(d.spool, "failed", qid + ".reason")
	check(os.path.exists(reason_file), "failed/%s.reason missing" % qid)
	with open(reason_file) as f:
		text = f.read().strip()
	check(text, "empty reason file")
	print("reason: %s | log: %s" % (text, m.group(1)))
	check_eq(d.spool_files("queue"), [], "queue/ after giving up")
	with open(os.path.join(d.spool, "failed", qid), "rb") as f:
		check(simple_message() in f.read(), "failed/%s does not hold the message" % qid)

	# No attempt after giving up, even once the Maildir is writable.
	n = len(d.findall_log(r"%s: to=" % qid, 0))
	d.unblock_dir(blocked)
	time.sleep(2.5)
	check_eq(len(d.findall_log(r"%s: to=" % qid, 0)), n, "delivery lines of %s after giving up" % qid)
	check_eq(maildir_files(blocked), [], "Maildir after giving up")


def waiting():
	"""A message that expires while it waits for a worker leaves the worker
	to the next one waiting: that one is not stuck in queue/."""
	d = Laimd(name="t_queue_age_waiting", max_queue_age=5, retry_initial=2, retry_max=2, delivery_timeout=120)
	bd = d.make_blocked_dir(os.path.join(d.dir, "bd"))
	go = os.path.join(d.dir, "go")
	open(go, "w").close()
	d.config["handlers"] = {"a": {"type": "probe", "path": bd, "hang_until": go, "workers": 1}}
	d.config["routes"] = [{"match": "*", "handlers": ["a"]}]
	d.start()
	m = d.send(rcpts=["m@test.laim.example"], msg=simple_message("M"))
	d.wait_log(r"%s: to=.*status=deferred.*attempt=1" % m)
	d.unblock_dir(bd)
	# Without its hang_until file the probe holds the one worker in X's
	# call (X comes before M's retry, due in 2s); M's retry, then N, wait
	# for the worker, and M grows older than max_queue_age meanwhile.
	os.unlink(go)
	x = d.send(rcpts=["x@test.laim.example"], msg=simple_message("X"))
	time.sleep(2.5)
	n = d.send(rcpts=["n@test.laim.example"], msg=simple_message("N"))
	time.sleep(4)
	open(go, "w").close()
	d.wait_removed(x, 10)
	d.wait_log(r"%s: moved to failed/" % m, 10)
	d.wait_removed(n, 10)
	check_eq(d.spool_files("queue"), [], "queue/ once the worker is free")


def probe_laimd(name):
	"""A started laimd whose only route is a probe handler p, with
	max_queue_age 4 and retries every 3 s."""
	d = Laimd(name=name, max_queue_age=4, retry_initial=3, retry_max=3)
	p = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"p": {"type": "probe", "path": p, "release": p + "/release"}}
	d.config["routes"] = [{"match": "*", "handlers": ["p"]}]
	d.start()
	return d


def at_retry():
	"""A message that expires when its retry comes up (not at the end of a
	round) is counted and logged as failed per recipient, with the last
	error in its reason, like one that expires at the end of a round."""
	d = probe_laimd("t_queue_age_retry")
	# Deferred at 0s and 3s (younger than 4s); given up at its retry at 6s.
	qid = d.send(rcpts=["defer@test.laim.example"])
	d.wait_log(r"%s: to=.*status=deferred.*attempt=2, " % qid, 10)
	d.wait_log(r"%s: moved to failed/" % qid, 10)
	err = r"451 4\.2\.0 <defer@test\.laim\.example> Temporary internal error"
	check(d.search_log(r"%s: to=<defer@test\.laim\.example>, handler=p, status=failed \(expired after 2 attempts: %s\)$"
			   % (qid, err), 0), "no failed line for the recipient of %s" % qid)
	st = dict(re.findall(r"(?m)^(\S+) +(\d+)$", d.laimctl(["show", "stats"]).stdout))
	check_eq((st.get("failed"), st.get("handler.p.failed")), ("1", "1"), "failed counters after the expiry")
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		reason = f.read().strip()
	check(re.fullmatch(r"<defer@test\.laim\.example> handler p: expired after 2 attempts: " + err, reason),
	      "reason of %s: %r" % (qid, reason))


def after_restart():
	"""A message loaded at start counts its attempts from then, and its
	reason says so: "expired after 1 attempt since laimd started"."""
	d = probe_laimd("t_queue_age_restart")
	qid = d.send(rcpts=["defer@test.laim.example"])
	d.wait_log(r"%s: to=.*status=deferred.*attempt=1, " % qid, 10)
	d.stop()
	d.start()
	d.wait_log(r"%s: moved to failed/" % qid, 10)
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		reason = f.read().strip()
	check(re.fullmatch(r"<defer@test\.laim\.example> handler p: expired after (1 attempt|[2-9] attempts) since laimd started: "
			   r"451 4\.2\.0 .*", reason), "reason of %s: %r" % (qid, reason))


def both():
	main()
	waiting()
	at_retry()
	after_restart()


run(both)
