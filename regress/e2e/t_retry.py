# A temporary handler failure is retried with exponential back-off
# (retry_initial, doubling, capped at retry_max); each attempt is logged
# with its number and the next delay, and once the cause is fixed the
# message is delivered and removed from the queue.
import sys
sys.dont_write_bytecode = True
from harness import *

DEFERRED = (r"(%s): to=<rcpt@test\.laim\.example>, handler=inbox, status=deferred, "
	    r"delay=([0-9.]+), attempt=(\d+), retry_in=(\d+)s \((.+)\)$")


def main():
	d = Laimd(retry_initial=1, retry_max=2)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()
	qid = d.send()
	check(os.path.exists(os.path.join(d.spool, "queue", qid)), "queue/%s missing right after the 250" % qid)

	pat = DEFERRED % qid
	wait_for(lambda: len(d.findall_log(pat)) >= 4, 20, "four deferred attempts of %s" % qid)
	tries = d.findall_log(pat)
	attempts = [int(m.group(3)) for m in tries]
	retry_in = [int(m.group(4)) for m in tries]
	delays = [float(m.group(2)) for m in tries]
	print("attempts %r, retry_in %r, delays %r" % (attempts, retry_in, delays))
	check_eq(attempts[:4], [1, 2, 3, 4], "attempt numbers")
	check_eq(retry_in[:4], [1, 2, 2, 2], "back-off (retry_initial 1, doubling, retry_max 2)")
	check(all(b >= a for a, b in zip(delays, delays[1:])), "delay= goes backwards: %r" % delays)
	check(delays[3] - delays[0] >= 4.5, "attempts 1..4 span %.2fs, expected >= 5s of back-off" % (delays[3] - delays[0]))
	check(blocked in tries[0].group(5), "the reason does not name the Maildir: %r" % tries[0].group(5))
	check_eq(d.spool_files("queue"), [qid], "queue/ while deferred")

	d.unblock_dir(blocked)
	d.wait_delivered(qid, "rcpt@test.laim.example", 10)
	d.wait_removed(qid)
	msgs = maildir_messages(blocked)
	check_eq(len(msgs), 1, "messages delivered after the retries")
	check_eq(split_delivered(msgs[0])[3], simple_message(), "the delivered message")
	check_eq(d.spool_files("queue"), [], "queue/ after delivery")
	check_eq(d.spool_files("failed"), [], "failed/ after delivery")


run(main)
