# kill -9 of the handler process: a message answered 250 before it is
# delivered after the restart; one in DATA when it dies gets a temporary
# failure and is never delivered; while the handler is down a transaction
# gets 451 4.3.0 (or 250 once it is back), and nothing accepted is lost:
# each is delivered once, byte for byte as its client sent it.
import sys
sys.dont_write_bytecode = True
import signal
from harness import *

RESTART = r"handler process \(pid %d\) killed by signal SIGKILL; restarting in [0-9.]+s$"


def kill_handler(d):
	old = d.children()
	os.kill(old["handler"], signal.SIGKILL)
	return old


def try_transaction(c, tag, sent):
	"""Runs a transaction whatever happens; returns the queue id on 250
	(and notes what was sent in sent), None when the server refused with
	451 4.3.0 at some step."""
	steps = ["MAIL FROM:<%s@client.example>" % tag, "RCPT TO:<rcpt@test.laim.example>", "DATA"]
	for step in steps:
		r = c.cmd(step)
		if r.code in (451, 421):
			check(r.lines[-1][4:].startswith("4.3.0") or r.code == 421, "%s: %r" % (step, r))
			return None
		check_eq(r.code, 354 if step == "DATA" else 250, "%s (%r)" % (step, r))
	msg = varied_message(tag)
	c.send(data_terminated(msg))
	r = c.reply(15)
	if r.code == 451:
		check(r.lines[-1].startswith("451 4.3.0"), "end of data: %r" % r)
		return None
	check_eq(r.code, 250, "end of data (%r)" % r)
	sent[queue_id(r)] = msg
	return queue_id(r)


def main():
	d = Laimd()
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	d.start()

	# Right after a 250: the message is on disk, then the handler dies.
	sent = {}
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

	# Killed while a client is in DATA (before the final dot): the end of
	# data gets a temporary failure, never 250, and nothing is delivered.
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<cut@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	c.cmd("DATA", 354)
	c.send(b"Subject: cut\r\n\r\nfirst half\r\n")
	wait_for(lambda: d.spool_files("incoming"), 5, "the spool file in incoming/")
	old = kill_handler(d)
	d.wait_log(RESTART % old["handler"], 10)
	c.send(b"second half\r\n.\r\n")
	try:
		r = c.reply(15)
		check(r.lines[-1].startswith("451 4.3.0") or r.code == 421,
		      "end of data after the handler died: expected 451 4.3.0, got %r" % r)
	except Closed:
		pass
	c.close()
	d.wait_children(15, old={"handler": old["handler"]})

	# A transaction started the moment the handler dies, and one that was
	# in progress: 451 4.3.0 or, once it is back, 250; every 250 delivered.
	accepted = []
	refused = 0
	for i in range(2):
		fresh = d.smtp()
		fresh.ehlo()
		busy = d.smtp()
		busy.ehlo()
		busy.cmd("MAIL FROM:<busy%d@client.example>" % i, 250)
		busy.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		old = kill_handler(d)
		for c, tag in ((fresh, "fresh%d" % i), (busy, None)):
			if tag is None:
				r = c.cmd("DATA")
				if r.code == 354:
					msg = varied_message("busy%d" % i)
					c.send(data_terminated(msg))
					r = c.reply(15)
					if r.code == 250:
						accepted.append(queue_id(r))
						sent[queue_id(r)] = msg
					else:
						check(r.lines[-1].startswith("451 4.3.0"), "busy end of data: %r" % r)
						refused += 1
				else:
					check(r.lines[-1].startswith("451 4.3.0") or r.code == 421, "busy DATA: %r" % r)
					refused += 1
			else:
				q = try_transaction(c, tag, sent)
				if q:
					accepted.append(q)
				else:
					refused += 1
			c.close()
		d.wait_children(15, old={"handler": old["handler"]})
	print("accepted %d, refused %d while the handler was down" % (len(accepted), refused))
	for q in accepted:
		d.wait_removed(q, 15)
	check_eq(len(maildir_files(blocked)), 1 + len(accepted), "messages delivered (each accepted one once)")
	check_delivered_exactly(d, sent, blocked)
	check(not d.search_log(r"from=<cut@client\.example>", 0), "the message cut by the kill was committed")
	check(not any(b"Subject: cut" in m for m in maildir_messages(blocked)), "the cut message was delivered")
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	wait_for(lambda: not d.spool_files("incoming"), 5, "incoming/ to be empty")
	check(d.running(), "the parent died")


run(main)
