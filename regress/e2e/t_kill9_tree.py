# kill -9 of the whole process tree right after a 250: the message is on
# disk and is delivered, byte for byte as sent, when laimd starts again; a transaction cut in the
# middle of DATA by the same kill is never delivered, its incoming/ file is
# removed at start.
import sys
sys.dont_write_bytecode = True
import signal
from harness import *


def main():
	d = Laimd()
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()

	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<partial@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	c.cmd("DATA", 354)
	c.send(b"Subject: partial\r\n\r\nno end yet\r\n")
	wait_for(lambda: d.spool_files("incoming"), 5, "the spool file in incoming/")

	committed = varied_message("committed")
	qid = d.send(msg=committed)
	pids = [d.pid] + list(d.children().values())
	os.killpg(d.pid, signal.SIGKILL)
	for p in pids:
		try:
			os.kill(p, signal.SIGKILL)
		except ProcessLookupError:
			pass
	d.proc.wait(10)
	wait_for(lambda: not any(proc_alive(p) for p in pids), 10, "every laimd process to die")
	check(c.wait_closed(5), "connection open after the tree died")
	c.close()
	check_eq(d.spool_files("queue"), [qid], "queue/ after kill -9 of the tree")
	check(d.spool_files("incoming"), "the partial transaction left nothing in incoming/ (test premise)")

	d.unblock_dir(blocked)
	d.start()
	d.wait_delivered(qid, "rcpt@test.laim.example")
	d.wait_removed(qid)
	wait_for(lambda: not d.spool_files("incoming"), 5, "incoming/ to be cleaned at start")
	check_delivered_exactly(d, {qid: committed}, blocked)
	check(not d.search_log(r"from=<partial@client\.example>", 0), "the partial message was committed")


run(main)
