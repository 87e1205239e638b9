# A handler call that hangs is cut after delivery_timeout: the delivery is
# deferred with a timeout reason, and the handler process keeps delivering
# other mail. The recipient is not tried again while the call hangs, not
# even on the instance's other worker; when the call returns delivered
# after all, that counts, and the message is removed with one copy, not
# delivered again; a call that hangs past max_queue_age still lets the
# message expire to failed/. laimctl remove refuses the message while
# the call hangs. The hanging handler is a file handler (two
# workers) whose mbox a reader holds locked (fcntl), as mail readers do.
import sys
sys.dont_write_bytecode = True
import fcntl
import time
from harness import *


def main():
	d = Laimd(delivery_timeout=2, retry_initial=1, retry_max=2)
	box = os.path.join(d.dir, "stuck.mbox")
	open(box, "w").close()
	os.chown(box, d.uid, d.gid)
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"stuck": {"type": "file", "path": box, "workers": 2},
	}
	d.config["routes"] = [
		{"match": "stuck@*", "handlers": ["stuck"]},
		{"match": "*", "handlers": ["inbox"]},
	]
	d.start()

	reader = open(box, "r+")
	fcntl.lockf(reader, fcntl.LOCK_EX)
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
	check_eq(os.path.getsize(box), 0, "the mbox while locked")
	# The call may still deliver: laimctl remove refuses, saying why.
	r = d.laimctl(["remove", qid])
	check(r.returncode == 1 and "a delivery call of %s is still running" % qid in r.stderr,
	      "laimctl remove of a message whose call outlived its timeout: exit %d, %r %r"
	      % (r.returncode, r.stdout, r.stderr))
	check_eq(d.spool_files("queue"), [qid], "queue/ after the refused remove")

	fcntl.lockf(reader, fcntl.LOCK_UN)
	reader.close()
	d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=delivered, late \(after its timeout\)$"
		   % qid, 10)
	d.wait_removed(qid, 10)
	with open(box, "rb") as f:
		copies = f.read().count(b"\nSubject: stuck")
	check_eq(copies, 1, "copies in the mbox")
	check(not d.search_log(r"%s: .*attempt=2, " % qid, 0), "delivered again after the late success")
	check(d.running(), "the parent died")
	d.wait_children()
	d.stop()
	hangs_past_max_age(d, box)


def hangs_past_max_age(d, box):
	"""A call that hangs past max_queue_age: the message, waiting for it,
	still expires to failed/; the call's late success is logged, and
	nothing is delivered twice."""
	d.config["max_queue_age"] = 6
	d.start()
	reader = open(box, "r+")
	fcntl.lockf(reader, fcntl.LOCK_EX)
	qid = d.send(rcpts=["stuck@test.laim.example"], msg=simple_message("hangs"))
	d.wait_log(r"%s: moved to failed/: <stuck@test\.laim\.example> handler stuck: expired after 1 attempts: "
		   r"handler stuck timed out after 2s$" % qid, 20)
	check(d.search_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=failed \(expired after 1 attempts: "
			   r"handler stuck timed out after 2s\)$" % qid, 0), "no failed line for the expired recipient")
	fcntl.lockf(reader, fcntl.LOCK_UN)
	reader.close()
	d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=delivered, late \(after its timeout\), "
		   r"message no longer queued$" % qid, 10)
	with open(box, "rb") as f:
		check_eq(f.read().count(b"\nSubject: hangs"), 1, "copies of the expired message in the mbox")
	check(d.running(), "the parent died")

run(main)
