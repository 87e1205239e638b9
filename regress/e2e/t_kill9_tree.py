# kill -9 of the whole process tree right after a 250: the message is on
# disk and is delivered, byte for byte as sent, when laimd starts again; a transaction cut in the
# middle of DATA by the same kill is never delivered, its pending file in
# queue/ is removed at start.
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
	wait_for(lambda: d.pending_files(), 5, "the partial message's pending file in queue/")
	partial = d.pending_files()[0]

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
	check_eq(d.committed_files(), [qid], "committed files in queue/ after kill -9 of the tree")
	check_eq(d.pending_files(), [partial], "pending files in queue/ after kill -9 of the tree (test premise)")

	d.unblock_dir(blocked)
	d.start()
	d.wait_delivered(qid, "rcpt@test.laim.example")
	d.wait_removed(qid)
	d.wait_log(r"%s: message cut off by laimd's end, before any 250: removed$" % partial, since=0)
	check_eq(d.pending_files(), [], "pending files in queue/ after the start")
	check_delivered_exactly(d, {qid: committed}, blocked)
	check(not d.search_log(r"from=<partial@client\.example>", 0), "the partial message was committed")


run(main)
