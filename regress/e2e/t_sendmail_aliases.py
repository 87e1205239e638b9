# /etc/aliases (the `aliases` key) at RCPT time, before routing: chains,
# :include:, the Debian defaults (postmaster -> root, routed as root), a
# loop cut and logged, |command and /file targets refused and logged while
# the other targets still get the mail; an alias past 1000 addresses gets
# 452 4.5.3, never a 250 for part of its list; an :include: file the
# handler cannot read defers its alias (451), an aliases file it cannot
# read on reload keeps the table read before, and without one (at start)
# local recipients get 451; newaliases run by root makes laimd re-read its
# file and prints the path and count laimd gives (not /etc/aliases, which
# it would count itself); run by a user, it reports a broken file as
# FILE:LINE and exits 65, or checks a good one and exits 77.
import sys
sys.dont_write_bytecode = True
import signal
from harness import *

ROOT = "root@" + HOSTNAME
FORBIDDEN = "/tmp/laim-e2e-alias-file-target"

ALIASES = """# aliases of t_sendmail_aliases
team: admins,
	:include:{inc}
admins: alice, bob@remote.example
alice: alice@mail.example
# a loop: loopa -> loopb -> loopa
loopa: loopb, carol
loopb: loopa
pipe: "|/usr/bin/touch /tmp/laim-e2e-alias-pipe", dave
tofile: {forbidden}, erin
changeme: first@remote.example
big: :include:{big}
"""
COUNT = 9  # aliases the file defines
INCLUDE = "# staff\nfrank\ngrace@remote.example\n"

BROKEN = """# broken on line 3
good: root
this line has no colon
"""


def local_or_qualified(name):
	"""A local result of the expansion, with or without the mailname."""
	return r"%s(?:@%s)?" % (re.escape(name), re.escape(HOSTNAME))


def mail_to(d, alias, expected, maildir=None, handler="inbox"):
	"""sendmail ALIAS as root reaches exactly the expected recipients
	(full addresses, or local names that may come back qualified), through
	handler into maildir (default the inbox)."""
	mark = d.mark()
	check_ran(d.sendmail([alias], ("Subject: to %s\n\nfor %s\n" % (alias, alias)).encode()))
	m = d.wait_local_submission(mark, ROOT)
	qid = m.group(1)
	d.wait_removed(qid)
	got = sorted(d.delivered_copies(qid, maildir))
	check_eq(int(m.group(4)), len(expected), "nrcpt= for %s (delivered to %r)" % (alias, got))
	left = list(got)
	for e in expected:
		pat = local_or_qualified(e) if "@" not in e else re.escape(e)
		hit = [g for g in left if re.fullmatch(pat, g)]
		check(hit, "mail to %s: no copy for %s (Delivered-To: %r)" % (alias, e, got))
		left.remove(hit[0])
	check(not left, "mail to %s: unexpected copies for %r" % (alias, left))
	for g in got:
		check(re.search(r"to=<%s>, handler=%s, status=delivered" % (re.escape(g), handler), d.log(mark)),
		      "no delivery log line for %s" % g)
	return mark


def rcpt_reply(d, rcpt):
	"""The reply to RCPT TO:<rcpt> in a fresh SMTP transaction."""
	with d.smtp() as c:
		c.ehlo()
		c.cmd("MAIL FROM:<s@client.example>", 250)
		return c.cmd("RCPT TO:<%s>" % rcpt)


def newaliases(d, path, argv0="newaliases", args=(), user=None):
	return d.sendmail(list(args), b"", argv0=argv0, env={"LAIM_ALIASES": path}, user=user)


def main():
	d = Laimd()
	inc = os.path.join(d.dir, "staff.inc")
	with open(inc, "w") as f:
		f.write(INCLUDE)
	os.chmod(inc, 0o644)
	big = os.path.join(d.dir, "big.inc")
	with open(big, "w") as f:
		f.write("".join("u%d@remote.example\n" % i for i in range(1500)))
	os.chmod(big, 0o644)
	secret = os.path.join(d.dir, "secret.inc")
	with open(secret, "w") as f:
		f.write("hidden@remote.example\n")
	os.chmod(secret, 0o600)  # root's: the handler process cannot read it
	aliases = d.config["aliases"]
	text = ALIASES.format(inc=inc, forbidden=FORBIDDEN, big=big)
	with open(aliases, "w") as f:
		f.write(text)
	broken = os.path.join(d.dir, "aliases.broken")
	with open(broken, "w") as f:
		f.write(BROKEN)
	# Routes see the expanded recipients: root's mail has its own box.
	rootbox = d.make_user_dir(os.path.join(d.dir, "rootbox"))
	d.config["handlers"]["rootbox"] = {"type": "maildir", "path": rootbox}
	d.config["routes"] = [{"match": "root@*", "handlers": ["rootbox"]}, {"match": "*", "handlers": ["inbox"]}]
	for p in (FORBIDDEN, "/tmp/laim-e2e-alias-pipe"):
		if os.path.exists(p):
			os.unlink(p)
	d.start()

	def loop():
		mark = mail_to(d, "loopa", ["carol"])
		check(d.search_log(r"alias loopa: .*loop", mark), "the loop was not logged:\n%s" % d.log(mark))

	def pipe():
		mark = mail_to(d, "pipe", ["dave"])
		check(d.search_log(r"alias pipe: target refused: .*\|/usr/bin/touch.*command is not enabled", mark),
		      "the |command target was not logged as refused:\n%s" % d.log(mark))
		check(not os.path.exists("/tmp/laim-e2e-alias-pipe"), "the |command ran")

	def tofile():
		mark = mail_to(d, "tofile", ["erin"])
		check(d.search_log(r"alias tofile: target refused: .*%s.*file is not enabled" % re.escape(FORBIDDEN), mark),
		      "the /file target was not logged as refused:\n%s" % d.log(mark))
		check(not os.path.exists(FORBIDDEN), "the /file target was written")

	def too_many():
		mark = d.mark()
		r = rcpt_reply(d, "big@" + HOSTNAME)
		check_eq(r.text, "452 4.5.3 Too many recipients", "RCPT big@HOST")
		d.wait_log(r"alias big: expansion stopped at 1000 addresses; recipient <big@%s> refused$" %
			   re.escape(HOSTNAME), since=mark)

	def unreadable_file():
		os.chmod(aliases, 0o600)
		try:
			mark = d.mark()
			d.send_signal(signal.SIGHUP)
			d.wait_log(r"%s: Permission denied$" % re.escape(aliases), since=mark)
			mail_to(d, "changeme", ["first@remote.example"])
			check(d.search_log(r"aliases file %s unreadable: keeping the %d aliases read before$" %
					   (re.escape(aliases), COUNT), since=mark), "no 'keeping the aliases' line")
		finally:
			os.chmod(aliases, 0o644)

	def unreadable_include():
		with open(aliases, "w") as f:
			f.write(text + "secret: :include:%s\n" % secret)
		try:
			d.laimctl(["reload", "aliases"])
			mark = d.mark()
			r = rcpt_reply(d, "secret@" + HOSTNAME)
			check_eq(r.text, "451 4.3.0 Recipient temporarily unavailable, try again later", "RCPT secret@HOST")
			d.wait_log(r"alias secret: cannot read :include: file %s: Permission denied .*; "
				   r"recipient <secret@%s> deferred$" % (re.escape(secret), re.escape(HOSTNAME)), since=mark)
			mail_to(d, "changeme", ["first@remote.example"])
		finally:
			with open(aliases, "w") as f:
				f.write(text)
			d.laimctl(["reload", "aliases"])

	def broken_file():
		r = newaliases(d, broken, user=local_user())
		check_eq(r.returncode, 65, "newaliases exit with a broken file (%r)" % r)
		check(re.search(r"%s:3: \S" % re.escape(broken), r.stderr), "no %s:3: error on stderr: %r" % (broken, r))
		check(not re.search(r"%s:[12]: " % re.escape(broken), r.stderr), "errors on good lines: %r" % r)

	def reload():
		mail_to(d, "changeme", ["first@remote.example"])
		with open(aliases, "w") as f:
			f.write(text.replace("first@", "second@"))
		r = newaliases(d, aliases)
		check_ran(r, quiet=False)
		check(re.search(r"%s: %d aliases" % (re.escape(aliases), COUNT), r.stdout),
		      "newaliases did not print '%s: %d aliases': %r" % (aliases, COUNT, r))
		mail_to(d, "changeme", ["second@remote.example"])
		r = newaliases(d, aliases, argv0="sendmail", args=["-bi"])
		check_ran(r, quiet=False)
		check(re.search(r"%s: %d aliases" % (re.escape(aliases), COUNT), r.stdout), "sendmail -bi: %r" % r)
		# Without LAIM_ALIASES, and with it naming another file, root's
		# newaliases prints the file laimd read, as laimd counted it.
		for other in ("", broken):
			r = newaliases(d, other)
			check_eq((r.returncode, r.stdout), (0, "%s: %d aliases\n" % (aliases, COUNT)),
				 "newaliases with LAIM_ALIASES=%r (%r)" % (other, r))

	def not_root():
		r = newaliases(d, aliases, user=local_user())
		check_eq(r.returncode, 77, "newaliases exit as a user (%r)" % r)
		check("only root can make laimd re-read" in r.stderr, "newaliases as a user: %r" % r)
		r = d.laimctl(["reload", "aliases"], user=local_user())
		check(r.returncode != 0 and "permission denied" in r.stderr, "laimctl reload aliases as a user: %r" % r)

	def unreadable_at_start():
		os.chmod(aliases, 0o600)
		try:
			mark = d.mark()
			d.start()
			d.wait_log(r"aliases file %s unreadable: local recipients are deferred until it can be read$" %
				   re.escape(aliases), since=mark)
			r = rcpt_reply(d, "changeme@" + HOSTNAME)
			check_eq(r.text, "451 4.3.0 Recipient temporarily unavailable, try again later",
				 "RCPT changeme@HOST with no table")
			check_eq(rcpt_reply(d, "x@remote.example").code, 250, "RCPT of a remote address with no table")
		finally:
			os.chmod(aliases, 0o644)
		check_ran(d.laimctl(["reload", "aliases"]))
		mail_to(d, "changeme", ["second@remote.example"])

	def daemon_down():
		d.stop()
		r = newaliases(d, aliases)
		check_eq(r.returncode, 0, "newaliases exit with laimd down (%r)" % r)
		check(r.err.strip(), "newaliases with laimd down says nothing on stderr: %r" % r)

	run_rows([
		("a chain with :include: reaches every final recipient",
		 lambda: mail_to(d, "team", ["alice@mail.example", "bob@remote.example", "frank", "grace@remote.example"])),
		("postmaster -> root, mailer-daemon -> postmaster -> root (Debian defaults), routed as root",
		 lambda: (mail_to(d, "postmaster", ["root"], rootbox, "rootbox"),
			  mail_to(d, "MAILER-DAEMON", ["root"], rootbox, "rootbox"))),
		("a name without an alias stays itself", lambda: mail_to(d, "nobody-here", ["nobody-here"])),
		("a loop is cut and logged, the other target gets the mail", loop),
		("a |command target is refused and logged", pipe),
		("a /file target is refused and logged", tofile),
		("an alias past 1000 addresses: 452 4.5.3 at RCPT, logged", too_many),
		("an aliases file unreadable on SIGHUP: the table read before stays", unreadable_file),
		("an :include: file the handler cannot read: its alias gets 451", unreadable_include),
		("newaliases by a user with a broken file: FILE:LINE on stderr, exit 65", broken_file),
		("newaliases with a good file: exit 0, laimd's file and count printed, laimd uses the changed alias",
		 reload),
		("newaliases as a user checks the file but may not reload: exit 77", not_root),
		("newaliases with laimd down: says so, exit 0", daemon_down),
		("an aliases file unreadable at start: local recipients get 451 until a reload reads it",
		 unreadable_at_start),
	])


run(main)
