# The uid of a local submitter comes from the kernel, not from the smtp
# process: the handler process reads SO_PEERCRED on the connection smtp
# passes with each local MAIL (IMSG_S_MAIL_LOCAL), and checks that it is a
# client's connection to the submission socket.
#
# The honest row submits as the test user and finds that uid and login in
# the delivered Received: and in the queue's log line. The lying row runs
# a test build's smtp process that passes the listening socket instead
# (LAIM_TEST_SMTP_PASS_LISTENER), whose SO_PEERCRED is root's, the parent
# that called listen(): the handler process refuses it as a protocol
# error, the parent confirms the frame is invalid and ends smtp, nothing is
# delivered, and TCP mail flows again once smtp is back.
import sys
sys.dont_write_bytecode = True
from harness import *

LIE = "IMSG_S_MAIL_LOCAL with the listening socket, not a client's connection"


def received(msg):
	return re.sub(rb"\r\n[ \t]+", b" ", split_delivered(msg)[2]).decode()


def local_mail(sock, tag):
	"""A transaction over the unix socket: the queue id, or the reply (or
	"closed") that ended it."""
	with Smtp(unix=sock) as c:
		c.ehlo("localhost")
		try:
			r = c.cmd("MAIL FROM:<local@test.laim.example>")
		except Closed:
			return "closed"
		if r.code != 250:
			return repr(r)
		c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(simple_message(tag)))
		return queue_id(c.expect(250))


def honest():
	d = Laimd()
	d.start()
	user = pwd.getpwnam(TEST_USER)
	qid = as_user(user, lambda: local_mail(d.config["socket"], "honest"))
	check(re.fullmatch(QID_RE, qid), "local transaction as %s: %r" % (TEST_USER, qid))
	d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages delivered")
	check(re.search(r"\(local uid %d \(%s\)\)" % (user.pw_uid, TEST_USER), received(msgs[0])),
	      "Received: names uid %d (%s): %r" % (user.pw_uid, TEST_USER, received(msgs[0])))
	check(d.search_log(r"%s: from=<local@test\.laim\.example>, .*client=local, uid=%d$" % (qid, user.pw_uid)),
	      "no queue log line with uid=%d" % user.pw_uid)
	d.stop()


def lying_smtp():
	d = Laimd()
	d.wrap(setup="export LAIM_TEST_SMTP_PASS_LISTENER=1")
	d.start()
	mark = d.mark()
	smtp = d.child("smtp")
	got = as_user(pwd.getpwnam(TEST_USER), lambda: local_mail(d.config["socket"], "lie"))
	# The handler process drops the channel, then reports: smtp answers
	# the waiting MAIL with 451 when it sees the channel go before the
	# parent's SIGKILL arrives (the usual order), else the kill closes the
	# connection. Either way the MAIL is refused; never a 250.
	check(got in ("closed", "<451 4.3.0 Local error in processing, try again later>"),
	      "MAIL over the socket with smtp passing the listener: %r" % got)
	d.wait_log(r"protocol error from the smtp process: %s; asking the parent to restart it" % LIE, since=mark)
	d.wait_log(r"handler process reports a protocol error from the smtp process \(%s\): ending it$" % LIE,
		   since=mark)
	d.wait_children(old={"smtp": smtp})
	qid = d.send(msg=simple_message("tcp after the lie"))
	d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages delivered (only the TCP one)")
	check(b"tcp after the lie" in msgs[0] and "uid" not in received(msgs[0]),
	      "the delivered message: %r" % received(msgs[0]))
	check(not d.search_log(r"client=local", since=mark), "a local message was queued")
	d.stop()


def main():
	run_rows([
		("an honest smtp: the submitter's uid in Received: and the log", honest),
		("smtp passes the listening socket (root's SO_PEERCRED): refused, smtp ended", lying_smtp),
	])


run(main)
