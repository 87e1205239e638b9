# No mail is lost while laimd is down or its queue is full: sendmail hands
# the message to the setgid laim-drop, which stores it in the spool's
# offline/ (owned by the caller, laim-drop's group, one link), and laimd
# imports it at start or once the queue has room, delivered once with the
# caller's uid; meanwhile mailq and laimctl show offline count it among
# the caller's mail (and root's). A file planted in offline/ that
# laim-drop did not make (wrong group, two links, not a regular file) is
# moved to failed/ and logged, not delivered, and laimctl show failed
# lists it with its reason. laim-drop leaves a floor of the spool's
# file system free, of blocks and of inodes. A login name that would close the Received: comment
# and open another ("x)(authenticated_as_admin") is written there as the
# online path writes it, printable ASCII without parentheses.
#
# The laimd under test has a spool of its own, where the test build's
# laim-drop writes too (LAIM_TEST_SPOOL_DIR, see harness.local_env).
import sys
sys.dont_write_bytecode = True
import pwd
import signal
import subprocess
import time
from harness import *
from harness import _ensure_account

ROOT = "root@" + HOSTNAME
# useradd --badname takes it; its Received: comment must not close early
# and open another. (No space: the cases' accounts file holds one name a
# word.)
ODD_LOGIN = "laimrdz)(authenticated_as_admin"
ODD_SHOWN = "laimrdz__authenticated_as_admin"
QUICK = 5  # seconds sendmail may take when laimd is down
UNLINK = 87  # x86_64


def msg(tag):
	return ("Subject: %s\n\nbody of %s \u00e9\n" % (tag, tag)).encode()


def check_dropped(spool, name, uid, gid, sender, rcpts, body_tail):
	path = os.path.join(spool, "offline", name)
	st = os.lstat(path)
	check(stat.S_ISREG(st.st_mode), "offline/%s is not a regular file" % name)
	check_eq((st.st_uid, st.st_gid, st.st_nlink), (uid, gid, 1), "offline/%s owner, group, links" % name)
	check(re.fullmatch(r"\d+\.\d+\.[0-9a-f]{8}", name), "offline/%s: not named EPOCH.PID.RANDOM" % name)
	with open(path, "rb") as f:
		data = f.read()
	head = offline_header(sender, rcpts)
	check(data.startswith(head), "offline/%s starts with %r, expected %r" % (name, data[:200], head))
	check(data.endswith(body_tail) or data.endswith(crlf(body_tail)),
	      "offline/%s does not end with the message body: %r" % (name, data[-200:]))


def down(d, lu, gid):
	"""laimd stopped: sendmail as root and as a user exits 0 at once."""
	check(not d.running(), "laimd is running")
	r1 = d.sendmail(["root"], msg("down root"))
	check_ran(r1)
	check(r1.elapsed < QUICK, "sendmail took %.1fs with laimd down" % r1.elapsed)
	r2 = d.sendmail(["root"], msg("down user"), user=lu)
	check_ran(r2)
	check(r2.elapsed < QUICK, "sendmail as %s took %.1fs with laimd down" % (lu.pw_name, r2.elapsed))
	names = d.spool_files("offline")
	check_eq(len(names), 2, "files in offline/ (%r)" % names)
	owners = {os.lstat(os.path.join(d.spool, "offline", n)).st_uid: n for n in names}
	check_eq(sorted(owners), sorted([0, lu.pw_uid]), "owners of the offline/ files")
	check_dropped(d.spool, owners[0], 0, gid, ROOT, [ROOT], b"body of down root \xc3\xa9\n")
	check_dropped(d.spool, owners[lu.pw_uid], lu.pw_uid, gid, "%s@%s" % (lu.pw_name, HOSTNAME), [ROOT],
		      b"body of down user \xc3\xa9\n")
	return owners


def imported(d, lu, owners):
	"""At start both are imported and each is delivered once."""
	mark = d.mark()
	d.start()
	seen = {}
	for uid, login, sender in ((0, "root", ROOT), (lu.pw_uid, lu.pw_name, "%s@%s" % (lu.pw_name, HOSTNAME))):
		qid, copies = check_local_delivery(d, mark, sender, [ROOT], uid, login)
		m = d.wait_local_submission(mark, sender)
		check_eq(m.group(6), owners[uid], "offline= in %r" % m.group(0))
		check(b"\r\n\r\nbody of down " in copies[ROOT], "the imported copy: %r" % copies[ROOT][:400])
		seen[uid] = qid
	wait_for(lambda: not d.spool_files("offline"), 5, "offline/ to be empty")
	time.sleep(2.5)  # another import round: nothing is imported twice
	check_eq(len(d.findall_log(r"client=local", mark)), 2, "from= lines after the import")
	check_eq(len(maildir_files(d.maildir)), 2, "messages delivered from offline/")
	d.stop()


def stopped_after(d, row, *args):
	"""row(d, *args), laimd stopped after it whatever happened, for the next rows."""
	try:
		row(d, *args)
	finally:
		if d.running():
			d.stop()


def synced_removal(d, gid):
	"""An import removes the offline file and fsyncs offline/ before the
	message is delivered: a stop of the system cannot bring the file
	back once its message is gone."""
	d.start()
	trace = os.path.join(d.dir, "strace-import")
	tracer = strace_attach([d.child("handler")], ["-y", "-s", "300", "-e", "trace=unlink,fsync,openat"], trace)
	try:
		mark = d.mark()
		name = plant_offline(d.spool, ROOT, [ROOT], crlf(msg("synced removal")), gid)
		m = d.wait_local_submission(mark, ROOT)
		d.wait_delivered(m.group(1), ROOT)
	finally:
		strace_detach(tracer)
	calls = strace_calls(trace)
	removed = [end for _, call, text, _, end in calls if call == "unlink" and
		   re.match(r'"[^"]*/offline/%s"\) += 0$' % re.escape(name), text)]
	offline = re.escape(os.path.join(os.path.realpath(d.spool), "offline"))
	synced = [(start, end) for _, call, text, start, end in calls if call == "fsync" and
		  re.match(r"\d+<%s>\) += 0$" % offline, text)]
	written = [start for _, call, text, start, _ in calls if call == "openat" and
		   "/Maildir/tmp/" in text and "O_CREAT" in text]
	check(removed and written, "no unlink of offline/%s or no file made in the Maildir in the trace:\n%s"
	      % (name, open(trace).read()[-3000:]))
	check([s for s, e in synced if removed[0] < s and e < written[0]],
	      "no fsync of offline/ begun after the unlink of offline/%s (trace line %d) and returned before the "
	      "Maildir's file was made (line %d); fsyncs of offline/ at %r" % (name, removed[0] + 1, written[0] + 1, synced))


def cut_off(d, gid):
	"""The handler process dies after an import stored the message, in the
	unlink of its offline file (held there by strace): the restarted
	handler finds the message in queue/ naming the file, removes the file
	and does not import it again. One copy."""
	d.start()
	before = len(maildir_files(d.maildir))
	handler = d.child("handler")
	tracer = strace_attach([handler], ["-e", "trace=unlink", "-e", "inject=unlink:delay_enter=20000000"], timeout=5)
	try:
		mark = d.mark()
		name = plant_offline(d.spool, ROOT, [ROOT], crlf(msg("cut off")), gid)
		wait_for(lambda: in_syscall(handler, UNLINK), 10, "the handler held in the unlink of offline/%s" % name)
		ids = d.spool_files("queue")
		check_eq(len(ids), 1, "files in queue/ while the unlink waits")
		check(os.path.exists(os.path.join(d.spool, "offline", name)), "offline/%s gone before the kill" % name)
		os.kill(handler, signal.SIGKILL)  # first: see t_kill9_handler.py
		tracer.kill()
	finally:
		if tracer.poll() is None:
			tracer.kill()
		tracer.wait()
	d.wait_children(15, old={"handler": handler})
	d.wait_delivered(ids[0], ROOT)
	d.wait_removed(ids[0])
	time.sleep(2.5)  # another import round
	check_eq(len(maildir_files(d.maildir)) - before, 1, "copies delivered of the file")
	check_eq(len(d.findall_log(r"client=local, uid=0, offline=%s$" % re.escape(name), mark)), 1,
		 "from= lines for the file (imported once)")
	check(d.search_log(r"offline/%s: imported before as %s: removed, not imported again$" % (re.escape(name), ids[0]),
			   mark), "the restarted handler did not log the removal of offline/%s:\n%s" % (name, d.log(mark)))
	check_eq(d.spool_files("offline"), [], "offline/ after the restart")


def queue_full(d, lu, gid):
	"""max_queue_size 1 and a deferring handler: laimd answers 452 and
	sendmail falls back to laim-drop; mailq counts the waiting file for
	its owner and for root, not for another user; once the queue drains
	the file is imported and delivered."""
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["max_queue_size"] = 1
	d.config["max_deferred"] = 1
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": blocked}}
	mark = d.mark()
	d.start()
	check_ran(d.sendmail(["root"], msg("fills the queue")))
	q1 = d.wait_local_submission(mark, ROOT).group(1)
	d.wait_log(r"%s: to=<%s>, handler=inbox, status=deferred" % (q1, re.escape(ROOT)))

	user = "%s@%s" % (lu.pw_name, HOSTNAME)
	r = d.sendmail(["root"], msg("queue full"), user=lu)
	check_ran(r)
	check(r.elapsed < QUICK, "sendmail took %.1fs with the queue full" % r.elapsed)
	d.wait_log(r"queue full .*deferring mail from <%s>" % re.escape(user), since=mark)
	names = d.spool_files("offline")
	check_eq(len(names), 1, "files in offline/ after the 452")
	check_dropped(d.spool, names[0], lu.pw_uid, gid, user, [ROOT], b"body of queue full \xc3\xa9\n")
	time.sleep(2.5)  # an import round while the queue is still full
	check_eq(d.spool_files("offline"), names, "offline/ while the queue is full")
	check_eq(d.spool_files("queue"), [q1], "queue/ while full")
	waits = "-- 1 message waits in offline/ to be taken into the queue\n"
	r = d.sendmail([], user=lu, argv0="mailq")
	check_ran(r)
	check_eq(r.stdout, waits, "mailq as %s" % lu.pw_name)
	r = d.sendmail([], argv0="mailq")
	check_ran(r)
	check(r.stdout.startswith("-Queue ID-") and q1 in r.stdout and r.stdout.endswith(" Request.\n" + waits),
	      "mailq as root: %r" % r.stdout)
	r = d.sendmail([], user=pwd.getpwnam("nobody"), argv0="mailq")
	check_ran(r)
	check_eq(r.stdout, "Mail queue is empty\n", "mailq as nobody")
	for who, expected in ((lu, 1), (None, 1), (pwd.getpwnam("nobody"), 0)):
		r = d.laimctl(["show", "offline"], user=who)
		check_eq((r.returncode, r.stdout), (0, "%d message%s in offline/, not taken into the queue yet\n" % (
			expected, "" if expected == 1 else "s")), "laimctl show offline as %s" % (who.pw_name if who else "root"))

	d.unblock_dir(blocked)
	d.wait_removed(q1)
	m = d.wait_local_submission(mark, user, timeout=15)
	check_eq((int(m.group(5)), m.group(6)), (lu.pw_uid, names[0]), "uid= and offline= of the import")
	d.wait_delivered(m.group(1), ROOT)
	d.wait_removed(m.group(1))
	check_eq(len(maildir_files(blocked)), 2, "messages delivered after the queue drained")
	check_eq(len(d.findall_log(r"client=local", mark)), 2, "from= lines (each message once)")
	check_eq(d.spool_files("offline"), [], "offline/ after the import")
	d.stop()
	return blocked


def planted(d, gid, link):
	"""Files laim-drop did not make are moved aside, not delivered; a
	symlink, a directory and a FIFO too, and show failed lists them all."""
	body = msg("planted")
	bad = {}
	for why in ("group", "links"):
		name = plant_offline(d.spool, "planted-%s@%s" % (why, HOSTNAME), [ROOT], body,
				     0 if why == "group" else gid)
		if why == "links":
			os.link(os.path.join(d.spool, "offline", name), link)
		bad[why] = name
	odd = {}
	for kind, make in (("symlink", lambda p: os.symlink(link, p)), ("directory", os.mkdir), ("fifo", os.mkfifo)):
		odd[kind] = "%d.%d.planted-%s" % (time.time(), os.getpid(), kind)
		make(os.path.join(d.spool, "offline", odd[kind]))
	# Moving a directory rewrites its "..": the spool's owner made it.
	os.chown(os.path.join(d.spool, "offline", odd["directory"]), os.stat(d.spool).st_uid, -1)
	mark = d.mark()
	before = len(maildir_files(d.config["handlers"]["inbox"]["path"]))
	d.start()
	for name in list(bad.values()) + list(odd.values()):
		d.wait_log(r"offline/%s: refused \(.+\): moved to failed/offline\.%s$" % (re.escape(name), re.escape(name)),
			   since=mark)
		check(os.path.lexists(os.path.join(d.spool, "failed", "offline." + name)), "failed/offline.%s missing" % name)
	check_eq(d.spool_files("offline"), [], "offline/ after the refusals")
	time.sleep(2.5)
	check(not d.search_log(r"from=<planted-", mark), "a planted file was imported:\n%s" % d.log(mark))
	check_eq(len(maildir_files(d.config["handlers"]["inbox"]["path"])), before, "messages after the refusals")
	r = d.laimctl(["show", "failed"])
	check_ran(r)
	reasons = {"group": "not created by laim-drop (group 0)", "links": "not a regular file with one link"}
	for why, name in bad.items():
		row = re.search(r"(?m)^offline\.%s +\S+ +\S+ +planted-%s@\S+ +%s +(.+)$"
				% (re.escape(name), why, re.escape(ROOT)), r.stdout)
		check(row and row.group(1) == reasons[why], "show failed does not list offline.%s with its reason: %r"
		      % (name, r.stdout))
	reasons = {"symlink": "cannot open: Too many levels of symbolic links",
		   "directory": "not a regular file with one link", "fifo": "not a regular file with one link"}
	for kind, name in odd.items():
		row = re.search(r"(?m)^offline\.%s +\S+ +0B +<> +(.+)$" % re.escape(name), r.stdout)
		check(row and row.group(1) == reasons[kind], "show failed does not list the %s offline.%s with its reason: %r"
		      % (kind, name, r.stdout))
	d.stop()


def raw_drop(d, lu):
	"""laim-drop run directly, not by sendmail (which makes every line end
	CRLF and drops NUL): a message with a bare CR, a bare LF or a NUL is
	refused as the smtp process refuses it in DATA (a bare CR or LF could
	end a line or the data at a peer further on: SMTP smuggling), moved to
	failed/ with its reason, and its sender is mailed a notice; a line of
	5000 octets is delivered, as through the local socket."""
	check(not d.running(), "laimd is running")
	user = "%s@%s" % (lu.pw_name, HOSTNAME)
	bad = {
		b"Subject: cr\r\n\r\na\r.\r\nb\r\n": "bare CR or LF in the message at octet 16",
		b"Subject: lf\r\n\r\na\n.\nb\r\n": "bare CR or LF in the message at octet 16",
		b"Subject: nul\r\n\r\na\x00b\r\n": "NUL in the message at octet 17",
	}
	long_line = b"Subject: long\r\n\r\n" + b"L" * 5000 + b"\r\n"
	names = {}
	for body in list(bad) + [long_line]:
		before = set(d.spool_files("offline"))
		r = run_program(drop_path(), ["-f", user, "--", ROOT], stdin=body, user=lu, env=d.local_env())
		check_ran(r)
		new = set(d.spool_files("offline")) - before
		check_eq(len(new), 1, "files laim-drop made")
		names[body] = new.pop()
	inbox = d.config["handlers"]["inbox"]["path"]
	before = len(maildir_files(inbox))
	mark = d.mark()
	d.start()
	for body, why in bad.items():
		name = re.escape(names[body])
		d.wait_log(r"offline/%s: refused \(%s\): moved to failed/offline\.%s$" % (name, why, name), since=mark)
	m = d.wait_local_submission(mark, user)
	check_eq(m.group(6), names[long_line], "offline= of the message with the long line")
	d.wait_removed(m.group(1))
	got = [x for x in maildir_messages(inbox) if b"Subject: long\r\n" in x]
	check(len(got) == 1 and got[0].endswith(b"\r\n\r\n" + b"L" * 5000 + b"\r\n"),
	      "the message with the long line as delivered: %r" % [x[-100:] for x in got])
	for body in bad:
		d.wait_log(r"notice of the failure of offline\.%s to <%s>$" % (re.escape(names[body]), re.escape(user)),
			   since=mark)
	wait_for(lambda: len(maildir_files(inbox)) - before == 4, 15,
		 "the long line's message and the three notices in the inbox")
	check_eq(len(d.findall_log(r"client=local", mark)), 1, "from= lines (only the long line's)")
	r = d.laimctl(["show", "failed"])
	check_ran(r)
	for body, why in bad.items():
		check(re.search(r"(?m)^offline\.%s .* %s$" % (re.escape(names[body]), why), r.stdout),
		      "show failed does not list offline.%s with its reason: %r" % (names[body], r.stdout))
	d.stop()


def space_floor(lu, gid):
	"""laim-drop, which any user may run, leaves 5% of the spool's file
	system (at least 64 MiB, at most 1 GiB) free for laimd (which has no
	reserved blocks): on a tmpfs of 128 MiB, a message that would leave 63 MiB is
	refused with 75, run directly or by sendmail, naming the file system
	and its free space, and leaves no file in offline/; a small message is
	still stored."""
	d = Laimd(name="t_sendmail_offline_floor")
	mounts = []
	try:
		fs = spool_on_tmpfs(d, mounts, 128 * 1024 * 1024, 200)
		d.start()
		d.stop()
		def free():
			st = os.statvfs(fs)
			return st.f_bavail * st.f_frsize
		before = free()
		user = "%s@%s" % (lu.pw_name, HOSTNAME)
		line = b"y" * 1022 + b"\r\n"
		big = b"Subject: big\r\n\r\n" + line * ((before - 63 * 1024 * 1024) // len(line))
		refused = (r"^laim-drop: cannot store the message: the file system of %s/offline has [0-9.]+ MiB free, "
			   r"and laim-drop leaves 64\.0 MiB of it free for laimd$" % re.escape(d.spool))
		r = run_program(drop_path(), ["-f", user, "--", ROOT], stdin=big, user=lu, env=d.local_env())
		check(r.returncode == 75 and re.search(refused, r.stderr, re.M),
		      "laim-drop of %d bytes with %d free: %r" % (len(big), before, r))
		r = d.sendmail(["root"], big, user=lu)
		check(r.returncode == 75 and re.search(refused, r.stderr, re.M),
		      "sendmail of %d bytes with %d free, laimd down: %r" % (len(big), before, r))
		check_eq(d.spool_files("offline"), [], "offline/ after the refusals")
		check_eq(free(), before, "free space after the refusals")
		r = run_program(drop_path(), ["-f", user, "--", ROOT], stdin=msg("small"), user=lu, env=d.local_env())
		check_ran(r)
		names = d.spool_files("offline")
		check_eq(len(names), 1, "files in offline/ after the small message")
		check_dropped(d.spool, names[0], lu.pw_uid, gid, user, [ROOT], b"body of small \xc3\xa9\n")
	finally:
		if d.running():
			d.kill_tree()
		for m in reversed(mounts):
			subprocess.run(["umount", "-l", m])


def inode_floor(lu):
	"""laim-drop leaves inodes free too (5% of the file system's, at least
	64): on a tmpfs of 128 MiB and 160 inodes, a user over a rate limit
	(their files wait in offline/) runs laim-drop until it exits 75 naming
	the free inodes, with 64 still free; root's mail is then taken by
	laimd and delivered, not refused for want of a spool file."""
	d = Laimd(name="t_sendmail_offline_inodes", rate_limits=[{"key": "uid", "count": 1, "window": 3600}])
	mounts = []
	try:
		fs = spool_on_tmpfs(d, mounts, 128 * 1024 * 1024, 160)
		d.start()
		user = "%s@%s" % (lu.pw_name, HOSTNAME)
		refused = (r"^laim-drop: cannot store the message: the file system of %s/offline has [0-9]+ free inodes, "
			   r"and laim-drop leaves 64 of them free for laimd$" % re.escape(d.spool))
		for i in range(160):
			# CRLF, as sendmail writes it: laimd would move a bare LF
			# to failed/, with a .reason file, another inode.
			r = run_program(drop_path(), ["-f", user, "--", ROOT], stdin=b"Subject: tiny %d\r\n\r\nx\r\n" % i,
					user=lu, env=d.local_env())
			if r.returncode != 0:
				break
		check(r.returncode == 75 and re.search(refused, r.stderr, re.M),
		      "laim-drop after %d files, %d inodes free: %r" % (i, os.statvfs(fs).f_favail, r))
		check(i > 50, "laim-drop refused after only %d files" % i)
		check(os.statvfs(fs).f_favail >= 64, "inodes free after the refusal: %d" % os.statvfs(fs).f_favail)
		mark = d.mark()
		check_ran(d.sendmail(["root"], msg("root's cron mail")))
		m = d.wait_local_submission(mark, ROOT)
		d.wait_delivered(m.group(1))
	finally:
		if d.running():
			d.kill_tree()
		for m in reversed(mounts):
			subprocess.run(["umount", "-l", m])


def many_recipients(d):
	"""laimd down, 1001 recipients: laim-drop takes 1000 a file, so two
	files; each recipient gets one copy once laimd starts."""
	check(not d.running(), "laimd is running")
	rcpts = ["r%d@%s" % (i, HOSTNAME) for i in range(1001)]
	check_ran(d.sendmail(["-i"] + rcpts, msg("many offline")))
	check_eq(len(d.spool_files("offline")), 2, "files in offline/")
	mark = d.mark()
	d.start()
	wait_for(lambda: len(d.findall_log(r"status=delivered", since=mark)) >= 1001, 60, "1001 deliveries")
	got = [split_delivered(m)[1] for m in maildir_messages(d.config["handlers"]["inbox"]["path"])
	       if b"Subject: many offline\r\n" in m]
	check_eq(sorted(got), sorted(r.encode() for r in rcpts), "Delivered-To of the copies")
	d.stop()


def odd_login(d):
	"""A login name with parentheses: the Received: of a message given
	over the socket and of one imported from offline/ both name it as
	"uid N (laimrdz__authenticated_as_admin)"."""
	check(not d.running(), "laimd is running")
	pw = _ensure_account(ODD_LOGIN, ["--badname", "--no-create-home", "--no-user-group", "--gid", "nogroup",
					 "--shell", "/usr/sbin/nologin"])
	sender = "odd@" + HOSTNAME
	d.config["handlers"] = {"inbox": {"type": "maildir", "path": d.maildir}}  # where check_local_delivery looks
	d.start()
	mark = d.mark()
	check_ran(d.sendmail(["-f", sender, "root"], msg("odd online"), user=pw))
	check_local_delivery(d, mark, sender, [ROOT], pw.pw_uid, ODD_SHOWN)
	d.stop()
	check_ran(d.sendmail(["-f", sender, "root"], msg("odd offline"), user=pw))
	check_eq(len(d.spool_files("offline")), 1, "files in offline/")
	mark = d.mark()
	d.start()
	check_local_delivery(d, mark, sender, [ROOT], pw.pw_uid, ODD_SHOWN)
	d.stop()


def main():
	gid = drop_gid()
	lu = local_user()
	d = Laimd()
	link = os.path.join(d.dir, "second-link")
	try:
		d.start()
		st = os.stat(os.path.join(d.spool, "offline"))
		check_eq((st.st_mode & 0o7777, st.st_gid), (0o1730, gid), "mode and group of offline/")
		d.stop()
		owners = {}
		run_rows([
			("laimd down: sendmail exits 0 at once, the file is the caller's, laim-drop's group, one link",
			 lambda: owners.update(down(d, lu, gid))),
			("laimd started: each offline message delivered once with its uid",
			 lambda: imported(d, lu, owners)),
			("an import fsyncs offline/ after the unlink, before the delivery",
			 lambda: stopped_after(d, synced_removal, gid)),
			("the handler dies between an import's store and its unlink: removed after the restart, one copy",
			 lambda: stopped_after(d, cut_off, gid)),
			("queue full: 452, laim-drop, imported and delivered once the queue has room",
			 lambda: queue_full(d, lu, gid)),
			("planted files (wrong group, two links, symlink, directory, FIFO) moved to failed/, logged, listed",
			 lambda: planted(d, gid, link)),
			("laim-drop run directly: bare CR, bare LF, NUL refused to failed/, the sender told; a long line delivered",
			 lambda: stopped_after(d, raw_drop, lu)),
			("laim-drop leaves 64 MiB of a 128 MiB spool free: a message crossing it exits 75, no file; a small one is stored",
			 lambda: space_floor(lu, gid)),
			("laim-drop leaves 64 of 160 inodes free: a user's tiny files stop there, root's mail is still delivered",
			 lambda: inode_floor(lu)),
			("1001 recipients, laimd down: two offline files, one copy each", lambda: many_recipients(d)),
			("a login name \"x)(authenticated_as_admin\": the same Received: comment online and offline",
			 lambda: stopped_after(d, odd_login)),
		])
	finally:
		if d.running():
			d.kill_tree()


run(main)
