# kill -9 of the smtp process: a message answered 250 just before is
# delivered, byte for byte as sent; a session killed in the middle of DATA (before the final dot)
# sees its connection drop, its message is never delivered, and its
# pending file in queue/ is gone at the latest after the next start. A
# session killed while its message is in the handler's group commit
# never got its 250, so its client sends it again: the handler removes
# that message once the sync returns, rather than deliver it twice.
import sys
sys.dont_write_bytecode = True
import signal
import time
from harness import *

FDATASYNC = 75  # x86_64
RESTART = r"smtp process \(pid %d\) killed by signal SIGKILL; restarting in [0-9.]+s$"


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()

	# Right after a 250.
	sent = {}
	msg = varied_message("after 250")
	qid = d.send(msg=msg)
	sent[qid] = msg
	old = d.children()
	os.kill(old["smtp"], signal.SIGKILL)
	d.wait_log(RESTART % old["smtp"], 10)
	d.wait_children(15, old={"smtp": old["smtp"]})
	check_eq(d.committed_files(), [qid], "committed files in queue/ after the smtp kill")

	# In the middle of DATA.
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<partial@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	c.cmd("DATA", 354)
	c.send(b"Subject: partial\r\n\r\n" + b"half a message\r\n" * 2000)
	wait_for(lambda: d.pending_files(), 5, "the pending spool file in queue/")
	old = d.children()
	os.kill(old["smtp"], signal.SIGKILL)
	check(c.wait_closed(5), "connection still open after the smtp process died")
	check(b"250" not in c.buf, "a 250 arrived for the partial message: %r" % c.buf)
	c.close()
	d.wait_log(RESTART % old["smtp"], 10)
	d.wait_children(15, old={"smtp": old["smtp"]})

	# In the group commit: the journal's fdatasync held while smtp dies.
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<in-commit@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	c.cmd("DATA", 354)
	handler = d.child("handler")
	tracer = strace_attach([handler], ["-e", "trace=fdatasync", "-e", "inject=fdatasync:delay_enter=2000000"])
	try:
		mark = d.mark()
		c.send(b"Subject: in commit\r\n\r\nbody\r\n.\r\n")
		wait_for(lambda: in_syscall(handler, FDATASYNC), 5, "the handler held in its commit's fdatasync")
		old = d.children()
		os.kill(old["smtp"], signal.SIGKILL)
		check(c.wait_closed(5), "connection still open after the smtp process died")
		check(b"250 2.0.0" not in c.buf, "a 250 arrived for the message in its commit: %r" % c.buf)
		c.close()
		d.wait_log(r"[0-9A-F]{10}: removed: the smtp process ended before its 250$", 10, since=mark)
	finally:
		strace_detach(tracer)
	d.wait_children(15, old={"smtp": old["smtp"]})
	check(not d.search_log(r"from=<in-commit@client\.example>", mark),
	      "the message whose smtp process died in its commit was queued, to be delivered besides the copy "
	      "its client sends again")
	check_eq(d.committed_files(), [qid], "committed files in queue/ after the kill in the commit")

	# Deliver what was committed, then restart: no pending file may be
	# left and the partial message never delivered.
	d.unblock_dir(blocked)
	d.wait_removed(qid, 15)
	time.sleep(1.5)
	check_eq(d.stop(), 0, "exit status after SIGTERM")
	d.start()
	wait_for(lambda: not d.pending_files(), 5, "no pending file in queue/ after the start")
	msg = varied_message("after restart")
	q2 = d.send(msg=msg)
	sent[q2] = msg
	d.wait_removed(q2)
	msgs = maildir_messages(blocked)
	check_eq(len(msgs), 2, "messages delivered (never the partial one)")
	check(not any(b"Subject: partial" in m or b"Subject: in commit" in m for m in msgs),
	      "the partial message or the one in its commit was delivered")
	check(not d.search_log(r"from=<partial@client\.example>", 0), "the partial message was committed")
	check_delivered_exactly(d, sent, blocked)


run(main)
