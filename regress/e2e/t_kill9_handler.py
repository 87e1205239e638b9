# kill -9 of the handler process, at defined points, each with the one
# outcome laim promises there:
#  - right after a 250: the message is on disk and is delivered after the
#    restart;
#  - while a commit waits (held in the fdatasync of the message's file by
#    strace's delay injection, the file already in queue/ but still 0700,
#    pending): the client gets exactly 451 4.3.0, and the restarted
#    handler process removes the file, since no 250 can have gone out for
#    it in this boot, so the message is never delivered;
#  - while the handler is down (the parent is stopped with SIGSTOP, so it
#    cannot restart it, and the smtp process has logged the loss): a
#    session in the middle of DATA gets exactly 451 4.3.0 at its final
#    dot, one with MAIL and RCPT accepted gets it for DATA, a new session
#    gets it for MAIL; each session goes on, and once the parent runs
#    again and smtp has logged "handler process is back", each of them
#    gets its next message through with 250.
# Every 250 is delivered once, byte for byte as its client sent it.
# Needs strace (bootstrap's PEERS); without it the case fails.
import sys
sys.dont_write_bytecode = True
import signal
from harness import *

RESTART = r"handler process \(pid %d\) killed by signal SIGKILL; restarting in [0-9.]+s$"
LOST = r"lost the handler process; new transactions get 451 until it is back$"
BACK = r"handler process is back$"
TEMPFAIL = "451 4.3.0 Local error in processing, try again later"
FDATASYNC = 75  # x86_64


def kill_handler(d):
	old = d.children()
	os.kill(old["handler"], signal.SIGKILL)
	return old


def transaction(c, tag, sent):
	"""A whole transaction that must get 250; notes what was sent."""
	msg = varied_message(tag)
	qid = c_transaction(c, "%s@client.example" % tag, ["rcpt@test.laim.example"], msg)
	sent[qid] = msg
	return qid


def expect_line(c, want, what, timeout=15):
	r = c.reply(timeout)
	check_eq(r.lines, [want], what)


def after_250(d, blocked, sent):
	"""The handler dies right after a 250: delivered after the restart."""
	msg = varied_message("after 250")
	qid = d.send(msg=msg)
	sent[qid] = msg
	check(os.path.exists(os.path.join(d.spool, "queue", qid)), "queue/%s missing right after the 250" % qid)
	old = kill_handler(d)
	d.wait_log(RESTART % old["handler"], 10)
	d.unblock_dir(blocked)
	d.wait_children(15, old={"handler": old["handler"]})
	d.wait_removed(qid, 15)
	check_eq(len(maildir_files(blocked)), 1, "copies of the message committed before the kill")


def while_commit_waits(d, sent):
	"""The handler dies while the committer is in the message's fdatasync:
	exactly 451 4.3.0, and the message is never delivered."""
	handler = d.child("handler")
	tracer = strace_attach([handler], ["-e", "trace=fdatasync", "-e", "inject=fdatasync:delay_enter=20000000"],
			       timeout=5)
	try:
		c = d.smtp()
		c.ehlo()
		c.cmd("MAIL FROM:<stalled@client.example>", 250)
		c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(varied_message("stalled")))
		wait_for(lambda: in_syscall(handler, FDATASYNC), 10, "the committer held in fdatasync")
		ids = d.spool_files("queue")
		check_eq(len(ids), 1, "files in queue/ while the commit waits")
		check_eq(d.pending_files(), ids, "pending (0700) files in queue/ while the commit waits")
		# SIGKILL first, then the tracer: a thread strace holds in a
		# stop leaves it only when strace lets go, and then with the
		# SIGKILL pending it never returns to rename the file.
		old = kill_handler(d)
		tracer.kill()
		expect_line(c, TEMPFAIL, "end of data when the handler died in the commit's fdatasync")
		c.cmd("NOOP", 250)
		c.cmd("QUIT", 221)
	finally:
		if tracer.poll() is None:
			tracer.kill()
		tracer.wait()
	d.wait_children(15, old={"handler": old["handler"]})
	d.wait_log(r"%s: message cut off by laimd's end, before any 250: removed$" % ids[0], 10)
	check(not os.path.exists(os.path.join(d.spool, "queue", ids[0])), "queue/%s after the restart" % ids[0])
	return ids[0]


def while_down(d, sent):
	"""The parent stopped, the handler killed: every step that needs the
	handler gets exactly 451 4.3.0; once it is back, each session's next
	transaction gets 250."""
	in_data = d.smtp()
	in_data.ehlo()
	in_data.cmd("MAIL FROM:<cut@client.example>", 250)
	in_data.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	in_data.cmd("DATA", 354)
	in_data.send(b"Subject: cut\r\n\r\nfirst half\r\n")
	wait_for(lambda: d.pending_files(), 5, "the pending spool file in queue/")
	busy = d.smtp()
	busy.ehlo()
	busy.cmd("MAIL FROM:<busy@client.example>", 250)
	busy.cmd("RCPT TO:<rcpt@test.laim.example>", 250)

	mark = d.mark()
	d.send_signal(signal.SIGSTOP)
	try:
		old = kill_handler(d)
		d.wait_log(LOST, 10, since=mark)
		in_data.send(b"second half\r\n.\r\n")
		expect_line(in_data, TEMPFAIL, "end of data with the handler gone")
		in_data.cmd("NOOP", 250)
		r = busy.cmd("DATA")
		check_eq(r.lines, [TEMPFAIL], "DATA with the handler gone")
		fresh = d.smtp()
		fresh.ehlo()
		r = fresh.cmd("MAIL FROM:<fresh@client.example>")
		check_eq(r.lines, [TEMPFAIL], "MAIL with the handler gone")
		check_eq(d.children().get("handler"), None, "a handler process while the parent is stopped")
	finally:
		d.send_signal(signal.SIGCONT)
	d.wait_log(RESTART % old["handler"], 10, since=mark)
	d.wait_log(BACK, 15, since=mark)
	for c, tag in ((in_data, "after-cut"), (busy, "busy"), (fresh, "fresh")):
		transaction(c, tag, sent)
		c.cmd("QUIT", 221)


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()
	sent = {}
	stalled = []
	run_rows([
		("right after a 250: delivered after the restart", lambda: after_250(d, blocked, sent)),
		("in the commit's fdatasync: 451 4.3.0, never delivered",
		 lambda: stalled.append(while_commit_waits(d, sent))),
		("handler down: 451 4.3.0 at the dot, for DATA and for MAIL; 250 once it is back",
		 lambda: while_down(d, sent)),
	])
	for qid in sent:
		d.wait_removed(qid, 15)
	check_delivered_exactly(d, sent, blocked)
	check_eq(len(maildir_files(blocked)), len(sent), "messages delivered (each accepted one once)")
	for tag in (b"Subject: stalled", b"Subject: cut"):
		check(not any(tag in m for m in maildir_messages(blocked)), "%r was delivered" % tag)
	check(not d.search_log(r"%s: to=" % stalled[0], 0), "the stalled message was handed to a handler")
	check(not d.search_log(r"from=<cut@client\.example>", 0), "the message cut by the kill was committed")
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	check(d.running(), "the parent died")


run(main)
