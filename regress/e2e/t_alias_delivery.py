# "|command" and "/file" targets of /etc/aliases with alias_commands and
# alias_files set: the root parent runs a command as nobody (Postfix's
# default_privs for a root-owned aliases file), no longer as the laim
# user, with the message (LF line ends, Return-Path first) on stdin and
# SENDER in its environment; a file gets an mbox copy (after ending its
# last line when that lacks its newline, and also when the file is
# write-only to laim; a reader's lock on it defers the delivery at once
# and other files' deliveries go on). Exit 75 defers and
# is retried, 67 fails with Postfix's text and the command's output as
# reason (the pipe handler's reading of exit statuses); two commands of one alias
# each run once even when the other is retried, and one that keeps
# deferring does not hold back the next; a command past
# delivery_timeout is killed with its whole session, as is what one that
# exits leaves running; a /file reached
# through a symbolic link, or a FIFO, is refused without blocking; a
# command from an :include: file is refused, even one root owns; a
# client's "|..." recipient gets 550.
import sys
sys.dont_write_bytecode = True
import fcntl
import mailbox
import pwd
import time
from harness import *
from harness import _pgid_members

ALIASES = """# aliases of t_alias_delivery
tocmd: "|cat > {cmd}/cmd.msg; printf '%s' \\"$SENDER\\" > {cmd}/cmd.sender; id -u > {cmd}/cmd.uid", dave
tofile: {out}/archive.mbox
tootherfile: {out}/other.mbox
twice: "|echo run >> {cmd}/twice.count", "|test -e {cmd}/go || exit 75"
refuse: "|echo 'no such list here' >&2; exit 67"
stuck: "|exit 75", "|touch {cmd}/second.ran"
leaves: "|sleep 300 & echo $! > {cmd}/bg.pid"
slow: "|echo $$ >> {cmd}/slow.pid; sleep 60 & sleep 61"
linked: {out}/link.mbox, {out}/linkdir/x.mbox, {out}/fifo.mbox
untrusted: :include:{out}/user.inc, :include:{out}/root.inc, erin
"""


def at(name):
	return "%s@%s" % (name, HOSTNAME)


def read(path):
	with open(path, "rb") as f:
		return f.read()


def main():
	d = Laimd(alias_commands=True, alias_files=True, delivery_timeout=3)
	out = d.make_user_dir(os.path.join(d.dir, "out"), 0o755)
	# Where the commands write: they run as nobody.
	cmd = os.path.join(d.dir, "cmd")
	os.mkdir(cmd, 0o755)
	nobody = pwd.getpwnam("nobody")
	os.chown(cmd, nobody.pw_uid, nobody.pw_gid)
	aliases = d.config["aliases"]
	with open(aliases, "w") as f:
		f.write(ALIASES.format(out=out, cmd=cmd))
	inc = os.path.join(out, "user.inc")
	with open(inc, "w") as f:
		f.write('"|touch %s/untrusted.ran"\n' % cmd)
	os.chown(inc, d.uid, d.gid)
	with open(os.path.join(out, "root.inc"), "w") as f:
		f.write('"|touch %s/root-include.ran"\n' % cmd)
	victim = os.path.join(d.dir, "victim")
	open(victim, "w").close()
	os.chown(victim, d.uid, d.gid)
	os.symlink(victim, os.path.join(out, "link.mbox"))
	victim_dir = d.make_user_dir(os.path.join(d.dir, "victim.d"))
	os.symlink(victim_dir, os.path.join(out, "linkdir"))
	os.mkfifo(os.path.join(out, "fifo.mbox"))
	os.chown(os.path.join(out, "fifo.mbox"), d.uid, d.gid)
	d.start()

	def command():
		msg = simple_message("to a command")
		qid = d.send(sender="ops@client.example", rcpts=[at("tocmd")], msg=msg)
		d.wait_log(r"%s: to=<\|cat > .*>, handler=alias:command, status=delivered" % qid)
		d.wait_removed(qid)
		got = read(os.path.join(cmd, "cmd.msg"))
		check(got.startswith(b"Return-Path: <ops@client.example>\nReceived: "), "command input starts %r" % got[:80])
		check(b"\r" not in got, "command input has CR: %r" % got[:200])
		check(got.endswith(msg.replace(b"\r\n", b"\n")), "command input ends %r" % got[-120:])
		check_eq(read(os.path.join(cmd, "cmd.sender")), b"ops@client.example", "SENDER")
		check_eq(int(read(os.path.join(cmd, "cmd.uid"))), nobody.pw_uid, "the command's uid")
		# dave, qualified as tocmd@HOST was.
		check(d.delivered_copies(qid).keys() == {at("dave")}, "dave's copy: %r" % d.delivered_copies(qid).keys())

	def mbox():
		qid = d.send(rcpts=[at("tofile")], msg=simple_message("From the archive"))
		d.wait_log(r"%s: to=<%s>, handler=alias:file, status=delivered" % (qid, re.escape(out + "/archive.mbox")))
		box = read(os.path.join(out, "archive.mbox"))
		check(re.match(rb"From sender@client\.example \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
			       rb"Return-Path: <sender@client\.example>\nReceived: ", box), "mbox copy starts %r" % box[:120])
		check(b"\r" not in box and box.endswith(b"\n\n"), "mbox copy: %r" % box[-80:])

	def no_final_newline():
		# The file's last line lacks its newline: the new From_ line still
		# starts a message of its own. Then, write-only to the laim user,
		# the file is still appended to.
		path = os.path.join(out, "archive.mbox")
		with open(path, "r+b") as f:
			raw = f.read().rstrip(b"\n") + b"\nlast line without newline"
			f.seek(0)
			f.write(raw)
			f.truncate()
		for subject, mode in (("after a cut line", 0o600), ("write-only", 0o200)):
			os.chmod(path, mode)
			qid = d.send(rcpts=[at("tofile")], msg=simple_message(subject))
			d.wait_log(r"%s: to=<%s>, handler=alias:file, status=delivered" % (qid, re.escape(path)))
		msgs = list(mailbox.mbox(path, create=False))
		check_eq([m["Subject"] for m in msgs], ["From the archive", "after a cut line", "write-only"],
			 "subjects read back as mbox")
		check_eq(msgs[0].get_payload().splitlines()[-1], "last line without newline", "the old message's end")
		check_eq(msgs[1].get_payload(), "body of after a cut line\n", "the new message's body")
		check_eq(read(path)[len(raw):len(raw) + 7], b"\n\nFrom ", "bytes after the old end")

	def locked():
		# A reader (anyone the file is readable to) holds a lock: the
		# delivery is deferred at once, not waited for in the instance's
		# one worker, and another file's mail goes on meanwhile.
		path = os.path.join(out, "archive.mbox")
		os.chmod(path, 0o644)
		size = os.path.getsize(path)
		with open(path, "rb") as f:
			fcntl.lockf(f, fcntl.LOCK_SH)
			qid = d.send(rcpts=[at("tofile")], msg=simple_message("while locked"))
			m = d.wait_log(r"%s: to=<%s>, handler=alias:file, status=deferred[^(]*\((.*)\)$" % (qid, re.escape(path)), 5)
			check_eq(m.group(1), path + ": locked (fcntl) by another process, not waited for", "reason")
			other = d.send(rcpts=[at("tootherfile")], msg=simple_message("to another file"))
			d.wait_log(r"%s: to=<%s/other\.mbox>, handler=alias:file, status=delivered" % (other, re.escape(out)), 5)
			check_eq(os.path.getsize(path), size, "size of the locked file")
		check_ran(d.laimctl(["flush"]), quiet=False)
		d.wait_log(r"%s: to=<%s>, handler=alias:file, status=delivered" % (qid, re.escape(path)), 5)
		check_eq(list(mailbox.mbox(path, create=False))[-1]["Subject"], "while locked", "the held message")

	def each_once():
		qid = d.send(rcpts=[at("twice")])
		d.wait_log(r"%s: to=<\|test -e .*, status=deferred" % qid)
		d.wait_log(r"%s: to=<\|test -e .*, status=deferred.*attempt=2" % qid, 10)
		open(os.path.join(cmd, "go"), "w").close()
		d.wait_log(r"%s: to=<\|test -e .*, status=delivered" % qid, 10)
		d.wait_removed(qid)
		check_eq(read(os.path.join(cmd, "twice.count")), b"run\n", "runs of the command that succeeded")

	def nothing_left():
		qid = d.send(rcpts=[at("leaves")])
		d.wait_log(r"%s: to=<\|sleep 300 .*>, handler=alias:command, status=delivered" % qid)
		bg = int(read(os.path.join(cmd, "bg.pid")))
		wait_for(lambda: not proc_alive(bg), 5, "the background job the command left killed")

	def not_held_back():
		qid = d.send(rcpts=[at("stuck")])
		d.wait_log(r"%s: to=<\|touch .*>, handler=alias:command, status=delivered" % qid)
		check(os.path.exists(os.path.join(cmd, "second.ran")), "the second command did not run")
		m = d.wait_log(r"%s: to=<\|exit 75>, handler=alias:command, status=deferred, .*?, dsn=4\.3\.0 \((.*)\)$" % qid)
		check_eq(m.group(1), "command as nobody exited with status 75 (temporary failure)", "reason")

	def permanent():
		qid = d.send(rcpts=[at("refuse")])
		m = d.wait_log(r"%s: to=<\|echo .*, status=failed, dsn=5\.1\.1 \((.*)\)$" % qid)
		check_eq(m.group(1), "command as nobody exited with status 67 (user unknown): no such list here", "reason")
		d.wait_log(r"%s: moved to failed/" % qid)

	def timeout():
		qid = d.send(rcpts=[at("slow")])
		m = d.wait_log(r"%s: to=<\|echo .*>, handler=alias:command, status=deferred.*\((.*)\)$" % qid, 10)
		check_eq(m.group(1), "command as nobody still running after 2s: killed", "timeout reason")
		# The shell led its own session: it and its background sleep are gone.
		first = int(read(os.path.join(cmd, "slow.pid")).split()[0])
		wait_for(lambda: not proc_alive(first) and not _pgid_members(first), 5, "the command's session killed")

	def symlink():
		qid = d.send(rcpts=[at("linked")])
		# A FIFO opened read-write never blocks, and is then refused.
		for target, why in (("link.mbox", "symbolic links"), ("linkdir/x.mbox", "symbolic links"),
				    ("fifo.mbox", "not a regular file")):
			m = d.wait_log(r"%s: to=<%s>, handler=alias:file, status=deferred.*\((.*)\)$" %
				       (qid, re.escape(out + "/" + target)))
			check(why in m.group(1), "reason for %s: %r" % (target, m.group(1)))
		check_eq(read(victim), b"", "the link's target")
		check_eq(os.listdir(victim_dir), [], "the linked directory")

	def untrusted():
		mark = d.mark()
		qid = d.send(rcpts=[at("untrusted")])
		d.wait_removed(qid)
		for inc in ("user.inc", "root.inc"):
			check(d.search_log(r"alias untrusted: target refused: \|touch .*%s:1\): only the aliases file itself"
					   % re.escape(inc), mark), "no refusal line for %s:\n%s" % (inc, d.log(mark)))
		check(not os.path.exists(os.path.join(cmd, "untrusted.ran")), "the user's include ran a command")
		check(not os.path.exists(os.path.join(cmd, "root-include.ran")), "root's include ran a command")

	def client_pipe():
		mark = d.mark()
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<a@client.example>", 250)
			for r in ("|touch@%s" % HOSTNAME, "/tmp/x@%s" % HOSTNAME):
				check_eq(c.cmd("RCPT TO:<%s>" % r).code, 550, "RCPT TO:<%s>" % r)
		check(d.search_log(r"recipient <\|touch@.*> refused: only /etc/aliases may name a command", mark),
		      "no refusal line:\n%s" % d.log(mark))

	run_rows([
		("|command: the message on stdin, SENDER, nobody's uid", command),
		("/file: an mbox copy", mbox),
		("/file: a last line without its newline is ended before the next copy", no_final_newline),
		("/file: a reader's lock defers the delivery at once; other files go on", locked),
		("two commands of one alias: the one that worked runs once while the other is retried", each_once),
		("what a command leaves running in its session is killed when it exits", nothing_left),
		("a command that keeps deferring does not hold back the next one", not_held_back),
		("a command's exit 67 fails the recipient with its output", permanent),
		("a command from an :include: file is refused, whoever owns it", untrusted),
		("a client's |command or /file recipient gets 550", client_pipe),
		# These two stay deferred and keep their instance busy: last.
		("a /file through a symbolic link, or a FIFO, is refused", symlink),
		("a command past delivery_timeout is killed with its session", timeout),
	])


run(main)
