# The pipe handler through a real laimd: the root parent starts each
# command as the configured user (its uid, gid and supplementary groups),
# with a clean environment, the user's home as working directory, leading
# its own session, without laim's seccomp filter or no_new_privs, with the
# default scheduling policy (not the handler process's SCHED_BATCH); the
# placeholders fill argv words ({sender} empty for the null sender), and
# with per_recipient: false one command takes every recipient, its
# {recipient} word repeated, and reads an mbox copy, and 2400 recipients
# of 4 bytes (an alias expanded) go in three runs, 1024, 1024 and 352,
# none too large for the request to the parent; with per_recipient
# each recipient's command settles it alone; a recipient whose {user} or
# {extension} would begin an argument with '-' gets 550 at RCPT, and one
# that begins a word only after "rcpt=" is accepted. What a script's end
# means: exit 0 delivers, 75 defers, 67 fails with 5.1.1 "user unknown",
# a signal defers, a leading "5.1.1 no such user" with exit 1 fails with
# that code, exit 1 alone defers (lmtp-bridge's "try again"), exit 0 after
# reading 10 bytes of the message defers, and a command past its timeout
# is killed with its session and deferred. Dovecot's own dovecot-lda, run
# as the user with the config of regress/e2e/peer_dovecot.py (no daemon),
# stores the message byte for byte. etc/pipe.yml passes laimd -n, which
# refuses user: root and a user that does not exist with file and line;
# laimctl test says whether the program is executable.
import sys
sys.dont_write_bytecode = True
import grp
import pwd
import subprocess
from harness import *
from harness import _ensure_account, _pgid_members
from peer_dovecot import Dovecot

H = "test.laim.example"
USER = "laimpipe"
GROUP = "laimpipegrp"  # a supplementary group of USER
HOME = "/var/lib/laimpipe"
LDA = "/usr/lib/dovecot/dovecot-lda"

# argv: OUT USER SENDER RECIPIENT EXTENSION QUEUE_ID. Each recipient's
# user part picks what the script does.
SCRIPT = r"""#!/bin/sh
out="$1"; user="$2"
case "$user" in
ok|null)
	cat > "$out/$user.stdin"
	printf '%s\n' "$@" > "$out/$user.argv"
	tr '\0' '\n' < /proc/$$/environ > "$out/$user.env"
	{ id -u; id -g; id -G; } > "$out/$user.id"
	echo $$ $(awk '{print $5, $6}' /proc/$$/stat) > "$out/$user.session"
	readlink /proc/$$/cwd > "$out/$user.cwd"
	grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/$$/status > "$out/$user.status"
	chrt -p $$ > "$out/$user.sched"
	exit 0 ;;
twice) cat > /dev/null; echo run >> "$out/twice.count"; exit 0 ;;
tempfail) echo "mailbox busy, try later"; exit 75 ;;
unknown) exit 67 ;;
killed) kill -9 $$ ;;
nosuch) echo "5.1.1 no such user"; exit 1 ;;
bridge) echo "Failed to connect to /var/run/dovecot-lmtp/lmtp"; exit 1 ;;
short) head -c 10 > "$out/short.stdin"; exit 0 ;;
slow) sleep 60 & echo $$ $! > "$out/slow.pids"; wait ;;
esac
echo "unexpected user $user"
exit 70
"""

# per_recipient: false, stdin: mbox: the whole input and the argv.
BATCH = r"""#!/bin/sh
out="$1"
shift
cat > "$out/batch.$$"
printf '%s\n' "$@" > "$out/batch.argv"
"""

# per_recipient: false, for many recipients: the count of each run.
WIDE = r"""#!/bin/sh
out="$1"
shift
cat > /dev/null
echo $# >> "$out/wide.runs"
"""

# 2400 distinct addresses of 4 bytes at the domain b, 800 to each of the
# aliases wide0, wide1 and wide2.
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WIDE_TARGETS = [a + b + "@b" for a in CHARS for b in CHARS][:2400]


def ensure_pipe_user():
	"""USER, with its home and the supplementary group GROUP."""
	gid = ensure_group(GROUP)
	pw = _ensure_account(USER, ["--system", "--create-home", "--home-dir", HOME, "--shell", "/bin/sh",
				    "--groups", GROUP])
	return pw, gid


def write_script(path, text):
	with open(path, "w") as f:
		f.write(text)
	os.chmod(path, 0o755)


def read(path):
	with open(path, "rb") as f:
		return f.read()


def queued_lf(stdin, qid, sent, what):
	"""stdin is laim's Received: naming qid, then sent, with LF line ends."""
	check(b"\r" not in stdin, "%s: CR in the command's input: %r" % (what, stdin[:200]))
	check_eq(after_received(crlf(stdin)), sent, "%s: the message after laim's Received:" % what)
	received = header_fields(crlf(stdin))[0][0]
	check(re.search(rb"\bid %s\b" % qid.encode(), received), "%s: laim's Received: names no %s: %r" % (what, qid, received))


def main():
	pw, extra_gid = ensure_pipe_user()
	if not os.access(LDA, os.X_OK):
		raise Fail("%s is missing: apt-get install dovecot-core" % LDA)
	d = Laimd()
	out = os.path.join(d.dir, "out")
	os.mkdir(out, 0o700)
	os.chown(out, pw.pw_uid, pw.pw_gid)
	script, batch = os.path.join(d.dir, "script.sh"), os.path.join(d.dir, "batch.sh")
	write_script(script, SCRIPT)
	write_script(batch, BATCH)
	wide = os.path.join(d.dir, "wide.sh")
	write_script(wide, WIDE)
	with open(d.config["aliases"], "w") as f:
		for k in range(3):
			f.write("wide%d: %s\n" % (k, ", ".join(WIDE_TARGETS[k * 800:(k + 1) * 800])))
	dc = Dovecot("pipe", protocols=(), mail_user=USER)
	dc.add_user("dcuser")
	dc.write_config()
	open(dc.logpath, "w").close()
	os.chown(dc.logpath, pw.pw_uid, pw.pw_gid)
	d.config["handlers"] = {
		"scripts": {"type": "pipe", "user": USER, "timeout": 2, "env": ["PIPE_TEST=yes"],
			    "command": [script, out, "{user}", "{sender}", "{recipient}", "{extension}", "{queue_id}"]},
		"batch": {"type": "pipe", "user": USER, "per_recipient": False, "stdin": "mbox",
			  "command": [batch, out, "rcpt={recipient}", "{queue_id}"]},
		"wide": {"type": "pipe", "user": USER, "per_recipient": False, "command": [wide, out, "{recipient}"]},
		"lda": {"type": "pipe", "user": USER,
			"command": [LDA, "-c", dc.conf, "-f", "{sender}",
				    "-o", "mail_location=maildir:%s/mail/{user}/Maildir" % dc.dir]},
	}
	d.config["routes"] = [{"match": "*@batch.example", "handlers": ["batch"]},
			      {"match": "*@b", "handlers": ["wide"]},
			      {"match": "*@lda.example", "handlers": ["lda"]},
			      {"match": "*", "handlers": ["scripts"]}]
	d.start()

	def identity():
		msg = simple_message("to a pipe")
		rcpt = "ok+ext@" + H
		qid = d.send(rcpts=[rcpt], msg=msg)
		d.wait_log(r"%s: to=<%s>, handler=scripts, status=delivered, delay=[0-9.]+ "
			   r"\(command as %s exited with status 0\)$" % (qid, re.escape(rcpt), USER))
		queued_lf(read(os.path.join(out, "ok.stdin")), qid, msg, "stdin: raw")
		check_eq(read(os.path.join(out, "ok.argv")).decode().split("\n")[:-1],
			 [out, "ok", "sender@client.example", rcpt, "ext", qid], "argv")
		env = dict(l.split("=", 1) for l in read(os.path.join(out, "ok.env")).decode().split("\n") if l)
		check_eq(env, {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": HOME, "USER": USER, "LOGNAME": USER,
			       "SHELL": "/bin/sh", "SENDER": "sender@client.example", "RECIPIENT": rcpt,
			       "QUEUE_ID": qid, "PIPE_TEST": "yes"}, "the command's environment")
		uid, gid, groups = read(os.path.join(out, "ok.id")).decode().split("\n")[:3]
		check_eq((int(uid), int(gid)), (pw.pw_uid, pw.pw_gid), "uid and gid")
		check_eq(sorted(int(g) for g in groups.split()), sorted({pw.pw_gid, extra_gid}), "groups")
		pid, pgrp, sid = read(os.path.join(out, "ok.session")).split()
		check(pid == pgrp == sid, "the command leads its session: pid %s, group %s, session %s" % (pid, pgrp, sid))
		check_eq(read(os.path.join(out, "ok.cwd")).decode().strip(), HOME, "working directory")
		status = dict(l.split(":\t") for l in read(os.path.join(out, "ok.status")).decode().split("\n") if l)
		check_eq((status["Seccomp"], status["NoNewPrivs"], int(status["CapEff"], 16)), ("0", "0", 0),
			 "Seccomp, NoNewPrivs, CapEff of the command")
		check(b"scheduling policy: SCHED_OTHER\n" in read(os.path.join(out, "ok.sched")),
		      "the command's scheduling policy: %r" % read(os.path.join(out, "ok.sched")))

	def null_sender():
		with d.smtp() as c:
			c.ehlo()
			qid = c_transaction(c, "", ["null@" + H], simple_message("bounce"))
		d.wait_log(r"%s: to=<null@%s>, handler=scripts, status=delivered" % (qid, H))
		check_eq(read(os.path.join(out, "null.argv")).decode().split("\n")[2], "", "{sender} of <>")
		env = read(os.path.join(out, "null.env")).decode().split("\n")
		check("SENDER=" in env, "SENDER of <>: %r" % env)

	def one_for_all():
		msg = simple_message("batch") + b"From the body\r\n>From quoted\r\n"
		a, b = "a@batch.example", "b@batch.example"
		qid = d.send(rcpts=[a, b], msg=msg)
		for r in (a, b):
			d.wait_log(r"%s: to=<%s>, handler=batch, status=delivered" % (qid, re.escape(r)))
		runs = [f for f in os.listdir(out) if f.startswith("batch.") and f != "batch.argv"]
		check_eq(len(runs), 1, "commands for two recipients with per_recipient: false")
		check_eq(read(os.path.join(out, "batch.argv")).decode().split("\n")[:-1], ["rcpt=" + a, "rcpt=" + b, qid],
			 "a {recipient} word per recipient")
		got = read(os.path.join(out, runs[0]))
		m = re.match(rb"From sender@client\.example \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
			     rb"Return-Path: <sender@client\.example>\n(Received: .*)\n\n\Z", got, re.S)
		check(m, "stdin: mbox: From_ line, Return-Path, no Delivered-To for two, an empty line at the end: %r" % got)
		want = msg.replace(b"\r\n", b"\n").replace(b"\nFrom the", b"\n>From the").replace(b">From quoted", b">>From quoted")
		check((m.group(1) + b"\n").endswith(want), "mboxrd quoting: %r" % m.group(1))

	def batches():
		qid = d.send(rcpts=["wide0", "wide1", "wide2"], msg=simple_message("wide"))
		m = d.wait_log(r"%s: (removed|moved to failed/.*)$" % qid, 30)
		check_eq(m.group(1), "removed", "the message to 2400 addresses")
		runs = [int(n) for n in read(os.path.join(out, "wide.runs")).split()]
		check_eq(runs, [1024, 1024, 352], "recipients of each run (8192 bytes, 4 for each address's length)")

	def dash():
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<sender@client.example>", 250)
			check_eq(c.cmd("RCPT TO:<-oQ/tmp/x@%s>" % H).code, 550, "RCPT of an address that begins with '-'")
			check_eq(c.cmd("RCPT TO:<alice+-oQ@%s>" % H).code, 550, "RCPT of an {extension} that begins with '-'")
			check_eq(c.cmd("RCPT TO:<-x@batch.example>").code, 250, "RCPT of '-x' for the word rcpt={recipient}")

	def each_own():
		qid = d.send(rcpts=["twice@" + H, "tempfail@" + H], msg=simple_message("each"))
		d.wait_log(r"%s: to=<twice@%s>, handler=scripts, status=delivered" % (qid, H))
		d.wait_log(r"%s: to=<tempfail@%s>, handler=scripts, status=deferred, .*attempt=3" % (qid, H), 15)
		check_eq(read(os.path.join(out, "twice.count")), b"run\n", "runs of the command that delivered")

	def ending(user, status, reason, code=None, timeout=10):
		qid = d.send(rcpts=["%s@%s" % (user, H)], msg=simple_message(user))
		dsn = r" dsn=%s" % re.escape(code) if code else ""
		line = r"%s: to=<%s@%s>, handler=scripts, status=%s,.*?%s \((.*)\)$" % (qid, user, H, status, dsn)
		m = d.wait_log(line, timeout)
		check_eq(m.group(1), "command as %s %s" % (USER, reason), "reason of %s" % user)
		return qid

	def statuses():
		ending("tempfail", "deferred", "exited with status 75 (temporary failure): mailbox busy, try later", "4.3.0")
		qid = ending("unknown", "failed", "exited with status 67 (user unknown)", "5.1.1")
		d.wait_log(r"%s: moved to failed/" % qid)
		ending("killed", "deferred", "killed by signal 9 (SIGKILL)")
		ending("nosuch", "failed", "exited with status 1: no such user", "5.1.1")
		ending("bridge", "deferred", "exited with status 1: Failed to connect to /var/run/dovecot-lmtp/lmtp")
		qid = d.send(rcpts=["short@" + H], msg=simple_message("short"))
		m = d.wait_log(r"%s: to=<short@%s>, handler=scripts, status=deferred, .*\(command as %s exited before "
			       r"reading all of its input \((\d+) bytes left\)\)$" % (qid, H, USER))
		check_eq(len(read(os.path.join(out, "short.stdin"))), 10, "bytes the short reader took")
		check(int(m.group(1)) > 0, "bytes left: %s" % m.group(1))

	def timeout():
		ending("slow", "deferred", "still running after 2s: killed")
		shell, bg = (int(p) for p in read(os.path.join(out, "slow.pids")).split())
		wait_for(lambda: not proc_alive(shell) and not proc_alive(bg) and not _pgid_members(shell), 5,
			 "the command and its background sleep killed")

	def config_check():
		mine = "    user: %s " % USER
		d.check_example("pipe", {"    user: vmail ": mine})
		path = os.path.join(d.dir, "example.yml")
		with open(path) as f:
			text = f.read()
		line = text[:text.index(mine)].count("\n") + 1
		for user, why in (("root", '"root" is root: a command never runs as root'),
				  ("no-such-laim-user", 'no such user "no-such-laim-user"')):
			with open(path, "w") as f:
				f.write(text.replace(mine, "    user: %s " % user))
			r = d.check_config(path)
			check_eq((r.returncode, r.stderr.decode()), (1, "laimd: %s:%d: handlers.lda.user: %s\n" % (path, line, why)),
				 "laimd -n of etc/pipe.yml with user %s" % user)

	def laimctl_test():
		r = d.laimctl(["test", "lda"])
		check_eq((r.returncode, r.stdout), (0, "lda: ready: pipe: %s is executable; it runs as %s\n" % (LDA, USER)),
			 "laimctl test lda")
		os.chmod(batch, 0o644)
		try:
			r = d.laimctl(["test", "batch"])
		finally:
			os.chmod(batch, 0o755)
		check_eq((r.returncode, r.stderr), (1, "laimctl: batch: not ready: pipe: %s is not an executable file\n" % batch),
			 "laimctl test of a program without x bits")

	def dovecot_lda():
		msg = simple_message("to dovecot-lda") + b"..two dots\r\n.\r\nend\r\n"
		qid = d.send(rcpts=["dcuser@lda.example"], msg=msg)
		d.wait_log(r"%s: to=<dcuser@lda\.example>, handler=lda, status=delivered" % qid)
		stored = wait_for(lambda: dc.messages("dcuser"), 5, "dcuser's Maildir")
		check_eq(len(stored), 1, "messages in dcuser's Maildir")
		queued_lf(stored[0], qid, msg, "what dovecot-lda stored")
		check(re.search(r"lda\(%s\).*saved mail to INBOX" % USER, dc.log()), "Dovecot's log: %s" % dc.log())

	run_rows([
		("the command runs as the user, its groups, a clean environment, its home, its own session", identity),
		("the null sender is an empty {sender}", null_sender),
		("per_recipient: false: one command, {recipient} once per recipient, an mbox copy", one_for_all),
		("per_recipient: false: batches of 8192 bytes, each address counted with 4 more", batches),
		("per_recipient: a command per recipient; the one delivered never runs again", each_own),
		("a recipient that would begin an argument with '-' gets 550 at RCPT", dash),
		("exit statuses: 75, 67, a signal, 5.1.1 output, exit 1, a short read", statuses),
		("dovecot-lda stores the message byte for byte", dovecot_lda),
		("etc/pipe.yml passes laimd -n; root or a missing user is refused at its line", config_check),
		("laimctl test: the program is executable", laimctl_test),
		("a command past its timeout is killed with its session", timeout),
	])
	dc.cleanup()


run(main)
