# DATA's spool file when things go wrong (doc/architecture.md, "The
# spool"), strace injecting the faults into the running handler process:
#   - queue ids drawn again while their messages are still in queue/
#     (the random pool not refilled: getrandom returns without writing):
#     each clash is logged and another id drawn, up to a bound, then
#     DATA gets 451; every message in queue/ keeps its file;
#   - the spool file made, then DATA failing (its descriptor cannot be
#     duplicated) and its removal failing too (EIO): DATA gets 451, the
#     error is logged, and the handler process goes on, as does another
#     session's transaction;
#   - a client gone in the middle of DATA while removals fail (EIO): the
#     same;
#   - a directory named like a queue id in free/: ignored at start, never
#     taken for a message's file.
# Needs strace (bootstrap's PEERS); without it the case fails.
import sys
sys.dont_write_bytecode = True
from harness import *

POOL_IDS = 51  # ids a getrandom of Spool::new_id's pool makes


def open_session(d, tag):
	"""A session with MAIL and RCPT accepted, its DATA to come."""
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<%s@client.example>" % tag, 250)
	c.cmd("RCPT TO:<ok-%s@test.laim.example>" % tag, 250)
	return c


def finish(c, tag):
	"""DATA on a session open_session() began: 250."""
	c.cmd("DATA", 354)
	c.send(data_terminated(simple_message(tag)))
	qid = queue_id(c.expect(250, what="end of data of %s" % tag))
	c.cmd("QUIT", 221)
	c.close()
	return qid


def id_clash(d):
	"""The ids of the random pool drawn again (getrandom returns without
	refilling it) while their 51 messages are held in queue/: each DATA
	draws ids until one is free, or gives up with 451; every message in
	queue/ keeps its file."""
	held = []
	with d.smtp() as c:
		c.ehlo()
		for i in range(POOL_IDS):
			held.append(c_transaction(c, "sender@client.example", ["defer%d@test.laim.example" % i],
						  simple_message("held %d" % i)))
	def queue_files():
		files = {}
		for q in d.spool_files("queue"):
			with open(os.path.join(d.spool, "queue", q), "rb") as f:
				files[q] = f.read()
		return files
	kept = queue_files()
	check_eq(sorted(kept), sorted(held), "queue/ with the held messages")
	tracer = strace_attach([d.child("handler")], ["-e", "trace=getrandom", "-e", "inject=getrandom:retval=255"])
	try:
		mark = d.mark()
		c = open_session(d, "clash")
		r = c.cmd("DATA")
		c.close()
		check(queue_files() == kept, "the held messages' files, answered 250, changed or removed by a DATA "
		      "whose ids clashed with theirs")
		check_eq(r.code, 451, "DATA when every id drawn is in queue/ (%r)" % r)
		drawn = [m.group(1) for m in d.findall_log(r"(%s): in \S+/queue already: drawing another queue id$" % QID_RE,
							    mark)]
		drawn.append(d.wait_log(r"cannot create a spool file: create \S+/queue/(%s): File exists$" % QID_RE,
					since=mark).group(1))
		check_eq(drawn, held[:len(drawn)], "the ids DATA drew")
		# The next id drawn is held, the one after it free: drawn again.
		check_ran(d.laimctl(["remove", held[len(drawn) + 1]]))
		mark = d.mark()
		qid = finish(open_session(d, "next"), "after a clash")
		check_eq(qid, held[len(drawn) + 1], "the id of the message after a clash")
		d.wait_log(r"%s: in \S+/queue already: drawing another queue id$" % held[len(drawn)], since=mark)
	finally:
		strace_detach(tracer)
	del kept[qid]
	check_eq({q: b for q, b in queue_files().items() if q != qid}, kept, "the other held messages' files")


def failing_removal(d, what, syscalls, injections, fault):
	"""fault(c) with the injections on: the spool file of session c cannot
	be removed (EIO); the handler process logs it and goes on."""
	handler = d.child("handler")
	other = open_session(d, "other")
	c = open_session(d, "faulty")
	mark = d.mark()
	args = ["-e", "trace=" + syscalls] + [a for i in injections for a in ("-e", "inject=" + i)]
	tracer = strace_attach([handler], args)
	try:
		fault(c)
		m = d.wait_log(r"(%s: unlink \S+/queue/\2: Input/output error|handler process \(pid %d\) .*)$" %
			       ("(%s)" % QID_RE, handler), since=mark)
		check(m.group(2), "after %s: %s" % (what, m.group(0)))
	finally:
		strace_detach(tracer)
	check_eq(d.child("handler"), handler, "the handler process after %s" % what)
	d.wait_removed(finish(other, "other"))


def data_refused(c):
	check_eq(c.cmd("DATA").code, 451, "DATA whose spool file cannot be handed over")
	c.close()


def client_gone(c):
	c.cmd("DATA", 354)
	c.send(b"Subject: cut off\r\n\r\nhalf a message\r\n")
	c.close()


def stray_in_free(d):
	"""A directory in free/, found at start: ignored, never taken."""
	check_eq(d.stop(), 0, "exit status")
	stray = os.path.join(d.spool, "free", "0123456789")
	os.mkdir(stray, 0o700)
	os.chown(stray, d.uid, d.gid)
	d.start()
	for i in range(3):
		d.wait_removed(d.send(rcpts=["ok-after-stray@test.laim.example"], msg=simple_message("after %d" % i)))
	check_eq([f for f in d.spool_files("queue") if not os.path.isfile(os.path.join(d.spool, "queue", f))], [],
		 "entries of queue/ that are not files")
	check(os.path.isdir(stray), "free/0123456789 left where it was")
	d.wait_log(r"%s: not a regular file, ignored$" % re.escape(stray), since=d.start_mark)


def main():
	d = Laimd(retry_initial=3600, retry_max=3600, max_queue_size=200)
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"probe": {"type": "probe", "path": probe}}
	d.config["routes"] = [{"match": "*", "handlers": ["probe"]}]
	d.start()
	id_clash(d)
	stray_in_free(d)  # a restart: ids of a fresh pool from here on
	failing_removal(d, "a failed DATA", "fcntl,unlinkat", ["fcntl:error=EMFILE", "unlinkat:error=EIO"], data_refused)
	failing_removal(d, "a client gone in DATA", "unlinkat", ["unlinkat:error=EIO"], client_gone)
	print("a clashing queue id drawn again, failed removals logged, a stray in free/ ignored")


run(main)
