# `laimd -n -f FILE` checks a config: exit 0, or exit 1 with
# "FILE:LINE: key: what is wrong". A config not owned by root or writable
# by group or others is refused (by -n and by the daemon); one readable by
# others is accepted with a warning. spool:, socket: and control_socket:
# other than the paths sendmail, laim-drop and laimctl use (a test
# build's, given in laimd's environment as the harness gives them to
# those programs) are refused by -n and by the daemon.
import sys
sys.dont_write_bytecode = True
import subprocess
from harness import *



def laimd_d_refused(confpath, what, env=None):
	"""laimd -d with confpath, which must not start: (exit status, stderr)."""
	p = subprocess.Popen([laimd_path(), "-d", "-f", confpath], stdout=subprocess.PIPE,
			     stderr=subprocess.PIPE, start_new_session=True, env=env)
	try:
		_, err = p.communicate(timeout=10)
	except subprocess.TimeoutExpired:
		os.killpg(p.pid, 9)
		p.wait()
		raise Fail("%s: laimd -d started anyway" % what)
	return p.returncode, err

def base_lines(d):
	return [
		'listen: ["127.0.0.1:%d"]' % d.port,        # 1
		"user: %s" % TEST_USER,                     # 2
		"hostname: %s" % HOSTNAME,                  # 3
		"spool: %s" % d.spool,                      # 4
		"socket: %s" % os.path.join(d.dir, "submit.sock"),  # 5
		"handlers:",                                # 6
		"  inbox:",                                 # 7
		"    type: maildir",                        # 8
		"    path: %s" % d.maildir,                 # 9
		"routes:",                                  # 10
		'  - match: "*"',                           # 11
		"    handlers: [inbox]",                    # 12
	]


# (what, edit(lines) -> lines, line, fragment of the key part)
BROKEN = [
	("unknown key", lambda l: l + ["bogus_key: 1"], 13, "bogus_key"),
	("wrong type", lambda l: l + ["max_queue_size: many"], 13, "max_queue_size"),
	("negative", lambda l: l + ["timeout: -5"], 13, "timeout"),
	("not a bool", lambda l: l + ["enable_smtputf8: perhaps"], 13, "enable_smtputf8"),
	("duplicate key", lambda l: l + ["user: root"], 13, "user"),
	("smtp_user is user", lambda l: l + ["smtp_user: %s" % TEST_USER], 13, "smtp_user"),
	# What laimd would refuse to start with, -n refuses too, at its line.
	("user root", lambda l: l[:1] + ["user: root"] + l[2:], 2, "user"),
	("no such user", lambda l: l[:1] + ["user: nosuchuser-laim"] + l[2:], 2, "user"),
	("no such smtp_user", lambda l: l + ["smtp_user: nosuchuser-laim"], 13, "smtp_user"),
	("one IPv6 address written twice", lambda l: ["listen:", '  - "[::1]:2599"', '  - "[0:0::1]:2599"'] + l[1:],
	 3, "listen[1]"),
	("spool through ..", lambda l: l[:3] + [l[3] + "/../spool"] + l[4:], 4, "spool"),
	# ident goes into the 220 line: printable ASCII, 512 octets in all.
	("ident of 2000 characters", lambda l: l + ["ident: " + "x" * 2000], 13, "ident"),
	("delivery_timeout past a day", lambda l: l + ["delivery_timeout: 4294967295"], 13, "delivery_timeout"),
	("ident with U+202E", lambda l: l + ['ident: "laim \\u202egnilbmaw"'], 13, "ident"),
	("bad port", lambda l: ['listen: ["127.0.0.1:99999"]'] + l[1:], 1, "listen"),
	("bad hostname", lambda l: l[:2] + ['hostname: "bad host"'] + l[3:], 3, "hostname"),
	("relative spool", lambda l: l[:3] + ["spool: var/spool"] + l[4:], 4, "spool"),
	("unknown handler type", lambda l: l[:7] + ["    type: nosuchtype"] + l[8:], 8, "type"),
	("handler option", lambda l: l[:8] + ["    path: relative/Maildir"] + l[9:], 9, "path"),
	("unknown handler option", lambda l: l[:9] + ["    colour: blue"] + l[9:], 10, "colour"),
	("pipe command as laimd's user", lambda l: l[:9] + ["  run:", "    type: pipe", "    command: [/bin/true]",
							  "    user: %s" % TEST_USER] + l[9:], 13, "run.user"),
	("alias commands as laimd's user", lambda l: l[:1] + ["user: nobody"] + l[2:] + ["alias_commands: true"], 13,
	 "alias_commands"),
	("alias commands as laimd's smtp_user", lambda l: l + ["smtp_user: nobody", "alias_commands: true"], 14,
	 "alias_commands"),
	("unknown route target", lambda l: l[:11] + ["    handlers: [inbox, nosuch]"], 12, "handlers"),
	("route without match", lambda l: l[:10] + ["  - handlers: [inbox]"], 11, "match"),
	("rate limit on auth", lambda l: l + ["rate_limits:", "  - {key: auth, count: 3, window: 5}"], 14,
	 "rate_limits[0].key"),
	("rate limit alert", lambda l: l + ["rate_limits:", "  - key: uid", "    count: 3", "    window: 5",
					   "    alert: nosuch"], 17, "rate_limits[0].alert"),
]


def write(d, lines, mode=0o600, owner=(0, 0)):
	with open(d.confpath, "w") as f:
		f.write("\n".join(lines) + "\n")
	os.chown(d.confpath, *owner)
	os.chmod(d.confpath, mode)


def main():
	d = Laimd()
	good = base_lines(d)
	write(d, good)
	r = laimd_n(d.confpath)
	check_eq(r.returncode, 0, "laimd -n on a valid config (stderr %r)" % r.stderr)
	check(b"no routes" not in r.stderr, "a warning of no routes for a config with routes: %r" % r.stderr)

	# Without routes (a file cut short, say) it is valid, with a warning.
	write(d, good[:9])
	r = laimd_n(d.confpath)
	check_eq((r.returncode, r.stderr.decode(errors="replace")),
		 (0, "laimd: warning: %s has no routes: every recipient is deferred\n" % d.confpath),
		 "laimd -n on a config without routes")

	# The harness's full config passes as well.
	d.write_config()
	r = laimd_n(d.confpath)
	check_eq(r.returncode, 0, "laimd -n on the harness config (stderr %r)" % r.stderr)

	for what, edit, line, key in BROKEN:
		write(d, edit(list(good)))
		r = laimd_n(d.confpath)
		err = r.stderr.decode(errors="replace")
		check_eq(r.returncode, 1, "%s: exit status of laimd -n (stderr %r)" % (what, err))
		m = re.search(re.escape(d.confpath) + r":(\d+): (\S[^\n]*: \S.*)", err)
		check(m, "%s: no 'FILE:LINE: key: what' on stderr: %r" % (what, err))
		check_eq(int(m.group(1)), line, "%s: line in %r" % (what, err))
		check(key in m.group(2), "%s: key %r not named in %r" % (what, key, err))

	# YAML syntax error: FILE:LINE names a line of the broken construct.
	write(d, good[:2] + ['hostname: "unterminated'] + good[3:])
	r = laimd_n(d.confpath)
	err = r.stderr.decode(errors="replace")
	check_eq(r.returncode, 1, "syntax error: exit status (stderr %r)" % err)
	m = re.search(re.escape(d.confpath) + r":(\d+): ", err)
	check(m and 3 <= int(m.group(1)) <= 13, "syntax error: no FILE:LINE near line 3: %r" % err)

	# Ownership and mode.
	write(d, good, mode=0o644)
	r = laimd_n(d.confpath)
	err = r.stderr.decode(errors="replace")
	check_eq(r.returncode, 0, "world-readable config: exit status (stderr %r)" % err)
	check(d.confpath in err and "readable" in err, "no warning for a world-readable config: %r" % err)
	for mode, owner, what in ((0o620, (0, 0), "group-writable"),
				  (0o602, (0, 0), "world-writable"),
				  (0o600, (d.uid, d.gid), "owned by %s" % TEST_USER),
				  (0o600, (0, d.gid), None)):
		write(d, good, mode=mode, owner=owner)
		r = laimd_n(d.confpath)
		err = r.stderr.decode(errors="replace")
		if what is None:  # root-owned, group not root, 0600: fine
			check_eq(r.returncode, 0, "root-owned 0600 config with group %d (stderr %r)" % (d.gid, err))
			continue
		check_eq(r.returncode, 1, "%s config: exit status of laimd -n (stderr %r)" % (what, err))
		check(d.confpath in err, "%s config: the refusal does not name the file: %r" % (what, err))
		# The daemon refuses to start with it too.
		status, perr = laimd_d_refused(d.confpath, "%s config" % what)
		check_eq(status, 1, "%s config: exit status of laimd -d (stderr %r)" % (what, perr))

	# The paths built into sendmail, laim-drop and laimctl: laim-drop would
	# store mail in an offline/ laimd never imports, and sendmail and
	# laimctl would not find laimd.
	tools = d.local_env()
	tools = {k: tools[k] for k in ("LAIM_TEST_SPOOL_DIR", "LAIM_SOCKET", "LAIM_CONTROL")}
	check_eq(laimd_n(d.confpath, env=tools).returncode, 0, "laimd -n with the tools' paths")
	moved = os.path.join(d.dir, "moved")
	for key, variable, users, line in (("spool", "LAIM_TEST_SPOOL_DIR", "laim-drop", 4),
					   ("socket", "LAIM_SOCKET", "sendmail", 5),
					   ("control_socket", "LAIM_CONTROL", "laimctl, mailq and newaliases", 13)):
		write(d, good[:line - 1] + ["%s: %s" % (key, moved)] + good[line:])
		want = "%s:%d: %s: must be %s, the path built into %s (they do not read this file)" % (
			d.confpath, line, key, tools[variable], users)
		r = laimd_n(d.confpath, env=tools)
		check_eq((r.returncode, r.stderr.decode(errors="replace")), (1, "laimd: %s\n" % want),
			 "laimd -n with %s: moved" % key)
		status, perr = laimd_d_refused(d.confpath, "laimd -d with %s: moved" % key, dict(os.environ, **tools))
		check(status == 1 and want in perr.decode(errors="replace"),
		      "laimd -d with %s: moved: exit %d, stderr %r" % (key, status, perr))

	# mail_dir, when an mbox handler delivers there: laim-mda wants a
	# directory owned by root, and would defer every delivery to another.
	mbox = good[:9] + ["  local:", "    type: mbox"] + good[9:11] + ["    handlers: [inbox, local]"]
	mail_dir = os.path.join(d.dir, "mail")
	os.mkdir(mail_dir)
	os.chmod(mail_dir, 0o2775)
	write(d, mbox + ["mail_dir: %s" % mail_dir])
	r = laimd_n(d.confpath)
	check_eq((r.returncode, r.stderr), (0, b""), "laimd -n with a mail_dir of root's")
	mail_file = os.path.join(d.dir, "mail-file")
	open(mail_file, "w").close()
	os.chown(mail_dir, d.uid, d.gid)
	tail = ": the mbox handler delivers there, and laim-mda wants a directory owned by root"
	for path, why in ((mail_dir, "not owned by root (uid %d)" % d.uid),
			  (os.path.join(d.dir, "nomail"), "No such file or directory"),
			  (mail_file, "Not a directory")):
		write(d, mbox + ["mail_dir: %s" % path])
		r = laimd_n(d.confpath)
		check_eq((r.returncode, r.stderr.decode(errors="replace")),
			 (1, "laimd: %s:15: mail_dir: %s: %s%s\n" % (d.confpath, path, why, tail)),
			 "laimd -n with mail_dir %s" % why)
	# Nothing delivers there: no check.
	write(d, good + ["mail_dir: %s" % mail_dir])
	check_eq(laimd_n(d.confpath).returncode, 0, "laimd -n with mail_dir not root's and no mbox handler")

	r = laimd_n(os.path.join(d.dir, "missing.yml"))
	check_eq(r.returncode, 1, "laimd -n on a missing file")

	# Paths with a trailing '/', "//" or "." are taken in their one
	# spelling: laimd starts with them (it once took "spool/" for the
	# spool's own parent) and delivers.
	d.config["spool"] = d.spool + "/./"
	d.config["socket"] = d.config["socket"].replace("/submit", "//submit")
	d.config["handlers"]["inbox"]["path"] = d.maildir + "/"
	d.start()
	send_mail(d.port, "sender@client.example", ["rcpt@%s" % HOSTNAME], simple_message("spelling"))
	wait_maildir(d.maildir, 1)


run(main)
