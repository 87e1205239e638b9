# A handler call that hangs is cut after delivery_timeout: the delivery is
# deferred with a timeout reason, and the handler process keeps delivering
# other mail. The recipient is not tried again while the call hangs, not
# even on the instance's other worker; when the call returns delivered
# after all, that counts, and the message is removed with one copy, not
# delivered again; a call that hangs past max_queue_age still lets the
# message expire to failed/. laimctl remove refuses the message while
# the call hangs. The hanging handler is a probe handler (two workers)
# whose calls wait for its hang_until file.
import sys
sys.dont_write_bytecode = True
import time
from harness import *


def main():
	d = Laimd(delivery_timeout=2, retry_initial=1, retry_max=2)
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	go = os.path.join(probe, "go")
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"stuck": {"type": "probe", "path": probe, "hang_until": go, "workers": 2},
	}
	d.config["routes"] = [
		{"match": "stuck@*", "handlers": ["stuck"]},
		{"match": "*", "handlers": ["inbox"]},
	]
	d.start()

	t0 = time.monotonic()
	qid = d.send(rcpts=["stuck@test.laim.example"], msg=simple_message("stuck"))
	m = d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=deferred, "
		       r"delay=([0-9.]+), attempt=1, retry_in=\d+s \((.+)\)$" % qid, 15)
	took = time.monotonic() - t0
	check(took >= 1.5, "deferred after %.2fs, before delivery_timeout (2s)" % took)
	check(re.search(r"(?i)\btime(d ?out|out)\b", m.group(2)), "the reason does not say timeout: %r" % m.group(2))
	check_eq(d.spool_files("queue"), [qid], "queue/ with the stuck message")

	# Other mail still flows while the stuck one waits.
	good = d.send(msg=simple_message("flows"))
	d.wait_removed(good, 15)
	check_eq(len(maildir_files(d.maildir)), 1, "messages delivered beside the stuck one")

	time.sleep(2.5)  # past retry_in: a retry would start now if the call had returned
	check(not d.search_log(r"%s: .*attempt=2, " % qid, 0), "retried while the first call still hangs")
	check_eq(os.listdir(probe), [], "the hanging instance's deliveries")
	# The call may still deliver: laimctl remove refuses, saying why.
	r = d.laimctl(["remove", qid])
	check(r.returncode == 1 and "a delivery call of %s is still running" % qid in r.stderr,
	      "laimctl remove of a message whose call outlived its timeout: exit %d, %r %r"
	      % (r.returncode, r.stdout, r.stderr))
	check_eq(d.spool_files("queue"), [qid], "queue/ after the refused remove")

	open(go, "w").close()
	d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=delivered, late \(after its timeout\)$"
		   % qid, 10)
	d.wait_removed(qid, 10)
	check_eq(deliveries(probe, qid), 1, "deliveries of the message")
	check(not d.search_log(r"%s: .*attempt=2, " % qid, 0), "delivered again after the late success")
	check(d.running(), "the parent died")
	d.wait_children()
	d.stop()
	hangs_past_max_age(d, probe)


def deliveries(probe, qid):
	"""How often the probe handler delivered qid."""
	with open(os.path.join(probe, "deliveries")) as f:
		return f.read().split().count(qid)


def hangs_past_max_age(d, probe):
	"""A call that hangs past max_queue_age: the message, waiting for it,
	still expires to failed/, whose reason says the call may yet deliver;
	the call's late success is logged, and nothing is delivered twice."""
	d.config["max_queue_age"] = 6
	go = os.path.join(probe, "go")
	os.unlink(go)
	d.start()
	qid = d.send(rcpts=["stuck@test.laim.example"], msg=simple_message("hangs"))
	still = "handler stuck timed out after 2s; its call still runs and may yet deliver"
	d.wait_log(r"%s: moved to failed/: <stuck@test\.laim\.example> handler stuck: expired after 1 attempt: %s$"
		   % (qid, still), 20)
	check(d.search_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=failed \(expired after 1 attempt: "
			   r"%s\)$" % (qid, still), 0), "no failed line for the expired recipient")
	with open(os.path.join(d.spool, "failed", qid + ".reason")) as f:
		check_eq(f.read(), "<stuck@test.laim.example> handler stuck: expired after 1 attempt: %s\n" % still,
			 "failed/%s.reason" % qid)
	open(go, "w").close()
	d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=delivered, late \(after its timeout\), "
		   r"message no longer queued \(if it went to failed/, its reason lists this recipient as expired\)$"
		   % qid, 10)
	check_eq(deliveries(probe, qid), 1, "deliveries of the expired message")
	check(d.running(), "the parent died")

run(main)
