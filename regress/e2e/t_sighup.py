# SIGHUP re-reads the config: a valid changed one takes effect (the next
# message goes to the new Maildir) without losing messages; an invalid
# one is logged with FILE:LINE and the old one stays in force. A new
# socket: path waits for a restart, and local mail over the socket still
# bound keeps its submitter's uid (the handler process checks each local
# MAIL's connection against the bound path, not the reloaded one). A new
# hostname waits for a restart too, in the greeting as in the aliases. A
# config without routes defers every recipient, at RCPT as in the queue,
# until a reload brings routes back. An instance's workers bound its calls
# across a reload.
import sys
sys.dont_write_bytecode = True
import signal
import time
from harness import *


def main():
	d = Laimd().start()
	first = d.maildir
	second = d.make_user_dir(os.path.join(d.dir, "Maildir2"))

	qid1 = d.send(msg=simple_message("before reload"))
	d.wait_removed(qid1)

	# A message in a session that spans the reload.
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<span@client.example>", 250)
	c.cmd("RCPT TO:<r@test.laim.example>", 250)

	d.config["handlers"] = {"inbox": {"type": "maildir", "path": second}}
	bound = d.config["socket"]
	d.config["socket"] = os.path.join(d.dir, "moved.sock")
	d.write_config()
	d.config["socket"] = bound
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	check(d.search_log(r"listen, socket, control_socket, user, smtp_user, spool and hostname changes take "
			   r"effect at the next restart", since=mark), "no warning that socket: waits for a restart")
	with Smtp(unix=bound) as lc:
		lc.ehlo("localhost")
		qid_local = c_transaction(lc, "local@test.laim.example", ["r@test.laim.example"],
					  simple_message("local after reload"))
		lc.cmd("QUIT", 221)
	d.wait_log(r"%s: from=<local@test\.laim\.example>, .*client=local, uid=0$" % qid_local, since=mark)

	c.cmd("DATA", 354)
	c.send(data_terminated(simple_message("spanning")))
	qid_span = queue_id(c.expect(250))
	c.cmd("QUIT", 221)
	c.close()
	qid2 = d.send(msg=simple_message("after reload"))
	d.wait_removed(qid_span)
	d.wait_removed(qid2)
	d.wait_removed(qid_local)
	check_eq(len(maildir_files(first)), 1, "messages in the first Maildir")
	got = maildir_messages(second)
	check_eq(len(got), 3, "messages in the second Maildir")
	check(any(b"Subject: after reload" in m for m in got), "the message after the reload is not in the new Maildir")

	# An invalid config: logged with file and line, the old one stays.
	bad = open(d.confpath).read() + "max_queue_size: many\n"
	line = bad.count("\n")
	d.write_config(bad)
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	m = d.wait_log(r"(\S+):(\d+): .*; keeping the previous configuration$", since=mark)
	check_eq((m.group(1), int(m.group(2))), (d.confpath, line), "FILE:LINE of the refused config")
	check(not d.search_log(r"configuration reloaded$", mark), "invalid config reported as reloaded")
	check(d.running(), "the parent died on an invalid config")
	qid3 = d.send(msg=simple_message("after bad reload"))
	d.wait_removed(qid3)
	check_eq(len(maildir_files(second)), 4, "messages in the second Maildir after the bad reload")

	# A config the parent refuses to read (group-writable) is not taken.
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": first}}
	d.write_config()
	os.chmod(d.confpath, 0o620)
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"keeping the previous configuration$", since=mark)
	qid4 = d.send(msg=simple_message("after refused reload"))
	d.wait_removed(qid4)
	check_eq(len(maildir_files(second)), 5, "messages in the second Maildir after the refused reload")
	check_eq(len(maildir_files(first)), 1, "messages in the first Maildir after the refused reload")
	check(d.running(), "the parent died")

	# A new hostname waits for a restart, as the handler process's local
	# domains do: the greeting keeps the name of the start, and mail to
	# postmaster at it is still aliased (to root, Debian's default).
	d.config["hostname"] = "new.laim.example"
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	check(d.search_log(r"spool and hostname changes take effect at the next restart", since=mark),
	      "no warning that hostname: waits for a restart")
	with d.smtp() as c:
		check(c.greeting.text.startswith("220 %s ESMTP " % HOSTNAME), "greeting after the reload: %r" % c.greeting)
	qid5 = d.send(rcpts=["postmaster@" + HOSTNAME], msg=simple_message("postmaster after reload"))
	d.wait_log(r"%s: to=<root@%s>, handler=inbox, status=delivered" % (qid5, re.escape(HOSTNAME)), since=mark)
	d.wait_children()

	# A config without routes (a file cut short, say): each recipient is
	# deferred, never refused for good, and the reload warns.
	d.config["routes"] = []
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	check(d.search_log(r"%s has no routes: every recipient is deferred$" % re.escape(d.confpath), mark),
	      "no warning that the reloaded config has no routes")
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<noroute@client.example>", 250)
		c.cmd("RCPT TO:<root@%s>" % HOSTNAME, 451)
	d.wait_log(r"recipient <root@%s> deferred: %s has no routes$" % (re.escape(HOSTNAME), re.escape(d.confpath)),
		   since=mark)


def workers_hold():
	"""workers bounds an instance's calls across a reload: a call still
	running (here one past its timeout, waiting for its probe's
	hang_until file) keeps its worker, so a message waiting for that worker does
	not start on the reloaded instance."""
	d = Laimd(name="t_sighup_workers", delivery_timeout=2, retry_initial=1, retry_max=1)
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"a": {"type": "probe", "path": probe, "hang_until": probe + "/go", "workers": 1}}
	d.config["routes"] = [{"match": "*", "handlers": ["a"]}]
	d.start()
	x = d.send(rcpts=["x@test.laim.example"], msg=simple_message("X"))
	d.wait_log(r"%s: handler a timed out after 2s" % x, 10)
	y = d.send(rcpts=["y@test.laim.example"], msg=simple_message("Y"))
	for _ in range(2):
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=mark)
	time.sleep(3.5)  # past delivery_timeout: a call of Y's would have timed out
	check(not d.search_log(r"%s: handler a timed out" % y, 0), "Y's call started beside X's after a reload")
	open(probe + "/go", "w").close()
	d.wait_removed(x, 10)
	d.wait_removed(y, 10)
	with open(probe + "/deliveries") as f:
		check_eq(len(f.readlines()), 2, "deliveries")


def routes_cut():
	"""A config without routes, at a reload or a start, defers the queued
	recipients (a message deferred before, one that sendmail left in
	offline/ while laimd was down) instead of failing them "no route";
	they wait in queue/, and a reload that brings the routes back
	delivers them. A recipient delivered before the cut is neither
	deferred again nor listed by show queue."""
	d = Laimd(name="t_sighup_routes_cut")
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"]["stuck"] = {"type": "maildir", "path": blocked}
	routes = d.config["routes"]
	d.config["routes"] = [{"match": "had@*", "handlers": ["inbox"]}, {"match": "*", "handlers": ["stuck"]}]
	d.start()
	had, rcpt = "had@" + HOSTNAME, "rcpt@" + HOSTNAME
	x = d.send(rcpts=[had, rcpt], msg=simple_message("queued before the cut"))
	d.wait_log(r"%s: to=<%s>, handler=inbox, status=delivered" % (x, re.escape(had)))
	d.wait_log(r"%s: to=<rcpt@test\.laim\.example>, handler=stuck, status=deferred" % x)

	d.config["routes"] = []
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	waits = r"to=<[^>]*>, handler=none, status=deferred, .* \(%s has no routes\)$" % re.escape(d.confpath)
	d.wait_log(r"%s: %s" % (x, waits), since=mark)
	check_eq(d.spool_files("failed"), [], "failed/ after a reload without routes")
	redone = r"%s: to=<%s>, handler=none, status=deferred" % (x, re.escape(had))

	def had_left_alone(when):
		check(not d.search_log(redone, mark), "%s, delivered before the cut, deferred %s" % (had, when))
		rows = [l.split() for l in d.laimctl(["show", "queue"]).stdout.splitlines()[1:]]
		check_eq([r[4] for r in rows if r[0] == x], [rcpt], "show queue's recipients of %s %s" % (x, when))
	had_left_alone("after a reload without routes")

	d.stop()
	r = d.sendmail(["rcpt@" + HOSTNAME], b"Subject: while down\n\nbody\n")
	check_eq((r.returncode, len(d.spool_files("offline"))), (0, 1), "sendmail while laimd is down, offline/ files")
	mark = d.mark()
	d.start()
	y = d.wait_local_submission(mark).group(1)
	d.wait_log(r"%s: %s" % (y, waits), since=mark)
	d.wait_log(r"%s: %s" % (x, waits), since=mark)
	check_eq(d.spool_files("failed"), [], "failed/ after a start without routes")
	had_left_alone("after a start without routes")

	d.config["routes"] = routes
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	d.wait_removed(x)
	d.wait_removed(y)
	check_eq(len(maildir_files(d.maildir)), 3, "copies delivered (had@ before the cut, rcpt@ and y after)")


def route_removed():
	"""A reload that leaves a recipient without a route fails it "no
	route" only if it was still owed the message: one delivered before
	the reload is not, and the message is removed, not put in failed/,
	once its other recipient has it."""
	d = Laimd(name="t_sighup_route_removed")
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"]["stuck"] = {"type": "maildir", "path": blocked}
	d.config["routes"] = [{"match": "had@*", "handlers": ["inbox"]}, {"match": "*", "handlers": ["stuck"]}]
	d.start()
	had, rcpt = "had@" + HOSTNAME, "rcpt@" + HOSTNAME
	x = d.send(rcpts=[had, rcpt], msg=simple_message("route removed"))
	d.wait_log(r"%s: to=<%s>, handler=inbox, status=delivered" % (x, re.escape(had)))
	d.wait_log(r"%s: to=<%s>, handler=stuck, status=deferred" % (x, re.escape(rcpt)))
	for routes in ([{"match": "rcpt@*", "handlers": ["stuck"]}], [{"match": "*", "handlers": ["inbox"]}]):
		d.config["routes"] = routes
		d.write_config()
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=mark)
		if routes[0]["match"] == "rcpt@*":  # a round without had@'s route
			d.wait_log(r"%s: to=<%s>, handler=stuck, status=deferred" % (x, re.escape(rcpt)), since=mark)
	d.wait_log(r"%s: removed$" % x)
	check(not d.search_log(r"%s: to=<%s>, handler=none, status=failed" % (x, re.escape(had)), 0),
	      "%s, delivered before the reload, failed 'no route' after it" % had)
	check_eq(len(maildir_files(d.maildir)), 2, "copies delivered (had@ before the reloads, rcpt@ after)")
	d.stop()


def retry_lowered():
	"""A reload that lowers retry_max brings a retry set for later
	forward at once, as laimd(8) says: the retry policy is replaced."""
	d = Laimd(name="t_sighup_retry", retry_initial=600, retry_max=600)
	d.block_inbox()
	d.start()
	x = d.send(msg=simple_message("retried after the reload"))
	d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred, .*attempt=1, retry_in=600s" % x)
	d.config.update(retry_initial=1, retry_max=2)
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred, .*attempt=2, " % x, 10, since=mark)
	d.stop()


def both():
	main()
	workers_hold()
	routes_cut()
	route_removed()
	retry_lowered()


run(both)
