# A mail loop ends at hop_count_limit (default 50, as Postfix's): a
# message whose header holds 50 Received: fields is queued and
# delivered; one with 51 gets 554 5.4.6 at the end of DATA, is logged and
# leaves nothing in the queue. sendmail gets the same 554 and exits 65
# (EX_DATAERR), a permanent failure its caller sees; a file laim-drop
# stored while laimd was down is refused at import to failed/ with the
# reason. A "Received:" line in the body does not count.
import sys
sys.dont_write_bytecode = True
from harness import *

LIMIT = 50


def message(hops, tag):
	head = "".join("Received: from hop%d.example\r\n\tby hop%d.example; %s\r\n" % (i, i + 1, tag)
		       for i in range(hops))
	return ("%sSubject: %s\r\n\r\nReceived: in the body, not counted\r\n" % (head, tag)).encode()


def main():
	d = Laimd().start()
	rcpt = "rcpt@test.laim.example"

	# At the limit: queued and delivered, with laim's own Received: on top.
	qid = d.send(rcpts=[rcpt], msg=message(LIMIT, "at the limit"))
	d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages delivered")
	check_eq(len(re.findall(rb"(?m)^Received:", msgs[0].split(b"\r\n\r\n")[0])), LIMIT + 1,
		 "Received: fields in the delivered copy")

	# One over: 554 5.4.6 at the final dot, nothing stored, the session goes on.
	mark = d.mark()
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<loop@client.example>", 250)
		c.cmd("RCPT TO:<%s>" % rcpt, 250)
		c.cmd("DATA", 354)
		c.send(data_terminated(message(LIMIT + 1, "one over")))
		r = c.reply()
		check(r.code == 554 and r.lines[-1] == "554 5.4.6 Message rejected: too many hops (51 Received: headers): "
		      "mail loop?", "message with %d Received: fields: expected 554 5.4.6, got %r" % (LIMIT + 1, r))
		c.cmd("NOOP", 250)
	d.wait_log(r"\w+: reject: DATA from client\.example\[127\.0\.0\.1\]: mail loop: 51 Received: headers, "
		   r"over hop_count_limit 50; from=<loop@client\.example>$", since=mark)
	# The smtp process's abort reaches the handler process after the 554:
	# it removes the file as soon as it reads it.
	wait_for(lambda: d.spool_files("queue") == [], 10, "queue/ to be empty after the refused message")
	check(not d.search_log(r"from=<loop@client\.example>, size=", mark), "the refused message was queued")

	# sendmail: the same refusal, a permanent failure (EX_DATAERR).
	plain = message(LIMIT + 1, "by sendmail").replace(b"\r\n", b"\n")
	r = d.sendmail(["-f", "loop@client.example", rcpt], plain)
	check(r.returncode == 65 and b"554 5.4.6" in r.err, "sendmail of a looping message: %r" % r)
	check_eq(d.spool_files("offline"), [], "offline/ after sendmail's refused message")

	# laimd down: laim-drop stores it, the import refuses it to failed/.
	d.stop()
	check_ran(d.sendmail(["-f", "loop@client.example", rcpt], plain))
	names = d.spool_files("offline")
	check_eq(len(names), 1, "files in offline/")
	mark = d.mark()
	d.start()
	why = "mail loop: 51 Received: headers, over hop_count_limit 50"
	d.wait_log(r"offline/%s: refused \(%s\): moved to failed/offline\.%s$" % (names[0], why, names[0]), since=mark)
	with open(os.path.join(d.spool, "failed", "offline." + names[0] + ".reason")) as f:
		reason = f.read()
	check(why in reason, "failed/offline.%s.reason: %r" % (names[0], reason))
	check_eq(d.spool_files("queue"), [], "queue/ after the refused import")
	check_eq(len(maildir_messages(d.maildir)), 1, "messages delivered in all")


run(main)
