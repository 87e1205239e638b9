# The mbox handler: each recipient's mail goes to mail_dir/USER, which
# laim-mda, started by the root parent as USER, creates (USER 0600, the
# directory's group), locks (fcntl and dotlock) and appends to. Mail to root goes to
# /var/mail/root-style mail_dir/root unless /etc/aliases sends it
# elsewhere, and then the parent refuses root's mailbox even to a handler
# with a stale alias table; an unknown user, or an address at another
# domain, gets 550 at RCPT; a mailbox
# that is a symbolic link, has a second hard link or belongs to someone
# else is refused and the message stays queued; a mail reader's fcntl lock
# or dotlock holds the delivery back until it is released, and a stale
# dotlock is removed; the result reads as mbox, also after a mailbox
# whose last line lacked its newline (it is ended first); a restarted handler
# process gets a fresh channel to the parent and still delivers.
import sys
sys.dont_write_bytecode = True
import fcntl
import grp
import mailbox
import pwd
from harness import *


def main():
	user = local_user()
	mail_gid = grp.getgrnam("mail").gr_gid
	d, mail_dir = mbox_laimd()
	d.start()
	box = lambda name: os.path.join(mail_dir, name)

	def messages(name):
		return [m for m in mailbox.mbox(box(name), create=False)]

	def deliver(rcpt, subject, status="delivered", timeout=15):
		"""Sends and waits for the status line; returns its reason."""
		qid = d.send(rcpts=[rcpt], msg=simple_message(subject))
		m = d.wait_log(r"%s: to=<%s>, handler=local, status=%s[^(]*\((.*)\)$" % (qid, re.escape(rcpt), status),
			       timeout)
		return m.group(1)

	def created():
		body = ("From: sender@client.example\r\nSubject: quoting\r\n\r\nFrom the start\r\n"
			">From quoted\r\n").encode()
		why = deliver("%s@%s" % (user.pw_name, HOSTNAME), "first")
		check(re.fullmatch(r"laim-mda as %s exited with status 0: %s: \d+ bytes appended, mailbox created"
				   % (user.pw_name, re.escape(box(user.pw_name))), why), "the creation line: " + why)
		qid = d.send(rcpts=["%s@%s" % (user.pw_name, HOSTNAME)], msg=body)
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid)
		st = os.lstat(box(user.pw_name))
		check_eq((st.st_uid, st.st_gid, st.st_mode & 0o7777), (user.pw_uid, mail_gid, 0o600),
			 "owner, group and mode of the new mailbox")
		raw = open(box(user.pw_name), "rb").read()
		check(re.match(rb"From sender@client\.example \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
			       rb"Return-Path: <sender@client\.example>\nDelivered-To: laimuser@test\.laim\.example\n"
			       rb"Received: ", raw), "mailbox starts %r" % raw[:200])
		check(b"\n>From the start\n>>From quoted\n\n" in raw, "mboxrd quoting: %r" % raw[-120:])
		msgs = messages(user.pw_name)
		check_eq([m["Subject"] for m in msgs], ["first", "quoting"], "subjects read back as mbox")
		check_eq(os.listdir(mail_dir), [user.pw_name], "files in mail_dir (no dotlock left)")

	def root_unaliased():
		deliver("root@" + HOSTNAME, "to root")
		deliver("Root", "to Root")
		st = os.lstat(box("root"))
		check_eq((st.st_uid, st.st_gid, st.st_mode & 0o7777), (0, mail_gid, 0o600), "root's mailbox")
		check_eq([m["Subject"] for m in messages("root")], ["to root", "to Root"], "root's messages")

	def root_aliased():
		with open(d.config["aliases"], "w") as f:
			f.write("root: %s\n" % user.pw_name)
		# The handler still has the old table: the parent reads the file
		# itself and will not open root's mailbox.
		mark = d.mark()
		deliver("root@" + HOSTNAME, "stale alias", "failed")
		check(d.search_log(r"handler=mbox:mailbox, command refused: mailbox of root: .*aliases sends this "
				   r"user's mail elsewhere \(run newaliases\)$", mark), "no refusal line:\n%s" % d.log(mark))
		check_eq(len(messages("root")), 2, "messages in root's mailbox")
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded", since=mark)
		before = len(messages(user.pw_name))
		qid = d.send(rcpts=["root@" + HOSTNAME], msg=simple_message("aliased"))
		# The alias target is qualified as root@HOSTNAME was.
		d.wait_log(r"%s: to=<%s@%s>, handler=local, status=delivered" % (qid, user.pw_name, re.escape(HOSTNAME)))
		check_eq(messages(user.pw_name)[-1]["Subject"], "aliased", "the aliased copy")
		check_eq(len(messages(user.pw_name)), before + 1, "messages in the alias target's mailbox")
		check_eq(len(messages("root")), 2, "messages in root's mailbox")
		# "root@localhost" is root itself.
		with open(d.config["aliases"], "w") as f:
			f.write("root: root@localhost\n")
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded", since=mark)
		qid = d.send(rcpts=["root@" + HOSTNAME], msg=simple_message("root at localhost"))
		d.wait_log(r"%s: to=<root@localhost>, handler=local, status=delivered" % qid)
		check_eq(messages("root")[-1]["Subject"], "root at localhost", "root's last message")

	def unknown():
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<a@client.example>", 250)
			check_eq(c.cmd("RCPT TO:<no-such-user-here@%s>" % HOSTNAME).code, 550, "RCPT of an unknown user")
			check_eq(c.cmd("RCPT TO:<%s@elsewhere.example>" % user.pw_name).code, 550, "RCPT at another domain")
			c.cmd("RCPT TO:<%s@%s>" % (user.pw_name, HOSTNAME), 250)

	def refused():
		# laimtest's mailbox is a link to a file of its own; daemon's has a
		# second hard link; bin's belongs to root (and is writable by all).
		target = os.path.join(d.dir, "target")
		open(target, "w").close()
		os.chown(target, d.uid, d.gid)
		os.symlink(target, box(TEST_USER))
		daemon, binu = pwd.getpwnam("daemon"), pwd.getpwnam("bin")
		open(box("daemon"), "w").close()
		os.chown(box("daemon"), daemon.pw_uid, mail_gid)
		os.link(box("daemon"), os.path.join(d.dir, "daemon.link"))
		open(box("bin"), "w").close()
		os.chmod(box("bin"), 0o666)  # bin can open it: the owner check refuses it
		mark = d.mark()
		for name, why in ((TEST_USER, "is a symbolic link"), ("daemon", "has 2 hard links"),
				  ("bin", "is owned by uid 0, not bin")):
			got = deliver("%s@%s" % (name, HOSTNAME), "refused", "deferred")
			check_eq(got, "mbox: laim-mda as %s exited with status 75 (temporary failure): %s: %s"
				 % (name, box(name), why), "the refusal of %s" % name)
		for path in (target, box("daemon"), box("bin")):
			check_eq(os.path.getsize(path), 0, "size of " + path)
		check_eq(sorted(n for n in os.listdir(mail_dir) if n.endswith(".lock")), [], "dotlocks left")

	def held(lock, release, what, reason):
		"""Delivery waits while lock() is in force, and goes on after
		release(). The mailbox is only stat()ed meanwhile: closing any
		descriptor of it would drop this process's fcntl lock."""
		path = box(user.pw_name)
		size = os.path.getsize(path)
		lock()
		qid = d.send(rcpts=["%s@%s" % (user.pw_name, HOSTNAME)], msg=simple_message(what))
		d.wait_log(r"%s: to=<.*>, handler=local, status=deferred.*\(mbox: laim-mda as %s exited with status 75 "
			   r"\(temporary failure\): %s: locked \(%s\) by a mail reader\)$"
			   % (qid, user.pw_name, re.escape(path), reason))
		check_eq(os.path.getsize(path), size, "mailbox size while a reader holds the %s" % what)
		check(not d.search_log(r"%s: to=.*status=delivered" % qid), "delivered while locked")
		release()
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid, 20)
		check_eq(messages(user.pw_name)[-1]["Subject"], what, "the held message")

	def fcntl_lock():
		with open(box(user.pw_name), "r+b") as f:
			held(lambda: fcntl.lockf(f, fcntl.LOCK_EX), lambda: fcntl.lockf(f, fcntl.LOCK_UN), "fcntl lock", "fcntl")

	def dotlock():
		lock = box(user.pw_name) + ".lock"
		held(lambda: open(lock, "w").close(), lambda: os.unlink(lock), "dotlock",
		     re.escape(user.pw_name + ".lock"))
		open(lock, "w").close()
		os.utime(lock, (time.time() - 600, time.time() - 600))
		why = deliver("%s@%s" % (user.pw_name, HOSTNAME), "after a stale dotlock")
		check(why.endswith("bytes appended, a stale dotlock removed"), "no stale dotlock note: " + why)
		check(not os.path.exists(lock), "dotlock left behind")

	def no_final_newline():
		# A mail reader or an append cut short left the last line without
		# its newline: the new From_ line must still start a line of its own.
		path = box(user.pw_name)
		with open(path, "r+b") as f:
			raw = f.read().rstrip(b"\n") + b"\nlast line without newline"
			f.seek(0)
			f.write(raw)
			f.truncate()
		before = [m["Subject"] for m in messages(user.pw_name)]
		why = deliver("%s@%s" % (user.pw_name, HOSTNAME), "after a cut line")
		msgs = messages(user.pw_name)
		check_eq([m["Subject"] for m in msgs], before + ["after a cut line"], "subjects read back as mbox")
		check_eq(msgs[-2].get_payload().splitlines()[-1], "last line without newline", "the old message's end")
		check_eq(msgs[-1].get_payload(), "body of after a cut line\n", "the new message's body")
		check_eq(open(path, "rb").read()[len(raw):len(raw) + 7], b"\n\nFrom ", "bytes after the old end")
		check(why.endswith("bytes appended, after ending the mailbox's last line"), "no line end note: " + why)

	def handler_restarted():
		# The restarted handler process gets a fresh command channel.
		old = d.child("handler")
		os.kill(old, signal.SIGKILL)
		d.wait_children(old={"handler": old})
		deliver("%s@%s" % (user.pw_name, HOSTNAME), "after a handler restart")
		check_eq(messages(user.pw_name)[-1]["Subject"], "after a handler restart", "the last message")

	run_rows([
		("a new mailbox: USER, the directory's group, 0600; From_ line, Delivered-To, mboxrd quoting", created),
		("mail to root, in any case, goes to root's own mailbox", root_unaliased),
		("root aliased: the parent refuses root's mailbox, the alias gets the mail", root_aliased),
		("an unknown user, or one at another domain, gets 550 at RCPT", unknown),
		("a fcntl lock holds delivery back until released", fcntl_lock),
		("a dotlock holds delivery back; a stale one is removed", dotlock),
		("a mailbox whose last line lacks its newline gets it before the new From_ line", no_final_newline),
		("a restarted handler process still reaches the mailboxes", handler_restarted),
		# These stay deferred: last.
		("a symbolic link, a second hard link, another owner: refused", refused),
	])


run(main)
