# A handler instance whose calls hang for good (a probe handler waiting
# for its hang_until file for the whole case, well inside delivery_timeout)
# does not stop the others: mail for other instances, sent before and
# after it hangs, is delivered at once, byte for byte; a message for both
# the hanging instance and another gets the other's copy and stays queued
# for the hanging one; the handler process and the parent keep running.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd(delivery_timeout=300)
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	go = os.path.join(probe, "go")
	other = d.make_user_dir(os.path.join(d.dir, "Other"))
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"other": {"type": "maildir", "path": other},
		"stuck": {"type": "probe", "path": probe, "hang_until": go},
	}
	d.config["routes"] = [
		{"match": "stuck@*", "handlers": ["stuck"]},
		{"match": "both@*", "handlers": ["stuck", "other"]},
		{"match": "*", "handlers": ["inbox"]},
	]
	d.start()

	stuck = [d.send(rcpts=["stuck@test.laim.example"], msg=varied_message("stuck %d" % i)) for i in range(3)]
	d.wait_log(r"%s: from=" % stuck[-1])
	sent = {}
	for i in range(6):
		msg = varied_message("flows %d" % i)
		sent[d.send(msg=msg)] = msg
	both_msg = varied_message("both")
	both = d.send(rcpts=["both@test.laim.example"], msg=both_msg)
	for qid in sent:
		d.wait_removed(qid, 10)
	d.wait_delivered(both, "both@test.laim.example", 10)
	check_delivered_exactly(d, sent)
	check_delivered_exactly(d, {both: both_msg}, other, rcpt="both@test.laim.example")

	check_eq(sorted(d.spool_files("queue")), sorted(stuck + [both]), "queue/ while the stuck instance hangs")
	check_eq(os.listdir(probe), [], "the hanging instance's deliveries")
	check(not d.search_log(r"handler=stuck, status=", 0), "the hanging instance reported a result")
	check(d.running(), "the parent died")
	check(d.children().get("handler"), "the handler process is gone")
	open(go, "w").close()


run(main)
