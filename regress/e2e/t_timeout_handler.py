# A handler call that hangs is cut after delivery_timeout: the delivery is
# deferred with a timeout reason, and the handler process keeps delivering
# other mail; the message is retried once the call returns. The hanging handler is a file handler whose path is a FIFO
# without a reader, so its open(2) blocks.
import sys
sys.dont_write_bytecode = True
import time
from harness import *


def main():
	d = Laimd(delivery_timeout=2, retry_initial=1, retry_max=2)
	fifo = os.path.join(d.dir, "fifo")
	os.mkfifo(fifo, 0o600)
	os.chown(fifo, d.uid, d.gid)
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"stuck": {"type": "file", "path": fifo},
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

	# Other mail still flows while the stuck one waits for its retry.
	good = d.send(msg=simple_message("flows"))
	d.wait_removed(good, 15)
	check_eq(len(maildir_files(d.maildir)), 1, "messages delivered beside the stuck one")

	# The instance stays busy while its call hangs (calls on one instance
	# never overlap); once the open(2) returns (a reader appears), the
	# message is retried, and stays queued since a FIFO is no mbox.
	check(not d.search_log(r"%s: .*attempt=2, " % qid, 0), "retried while the first call still hangs")
	reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
	try:
		m = d.wait_log(r"%s: to=<stuck@test\.laim\.example>, handler=stuck, status=deferred, "
			       r"delay=[0-9.]+, attempt=2, retry_in=\d+s \((.+)\)$" % qid, 15)
		check("timed out" not in m.group(1), "second attempt timed out too: %r" % m.group(1))
	finally:
		os.close(reader)
	check(qid in d.spool_files("queue"), "the stuck message left queue/")
	check(d.running(), "the parent died")
	d.wait_children()

run(main)
