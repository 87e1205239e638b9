# A message deferred for longer than max_queue_age is given up: moved to
# failed/ with a reason file, logged, not retried any more.
import sys
sys.dont_write_bytecode = True
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


run(main)
