# sendmail's option parsing, hostile and odd: an unknown option, a
# recipient that looks like an option, CR or LF in an envelope value are
# usage errors (64, with a message naming what is wrong, and nothing is
# submitted); no recipient at all is a data error (65); every option that
# is accepted and ignored leaves the message delivered; -v shows the SMTP
# dialogue on stderr; commas split recipients; -r and -F NAME work (a
# long NAME folded); more
# recipients than one transaction takes go in several, and a refused one
# among them leaves nothing stored.
import sys
sys.dont_write_bytecode = True
import time
from harness import *

ROOT = "root@" + HOSTNAME


def msg(tag):
	return ("Subject: %s\n\nbody of %s\n" % (tag, tag)).encode()


def refused(d, args, code, names, stdin=None):
	"""sendmail args exits with code, says something naming each of names
	on stderr, and submits nothing."""
	mark = d.mark()
	r = d.sendmail(args, stdin if stdin is not None else msg("refused"))
	check(r.returncode == code, "expected exit %d: %r" % (code, r))
	check(r.err.strip(), "no message on stderr: %r" % r)
	for n in names:
		check(n in r.stderr, "stderr does not name %r: %r" % (n, r))
	time.sleep(0.2)
	check(not d.search_log(r"from=<", mark), "a message was submitted: %s" % d.log(mark))


def accepted(d, args, tag, sender=ROOT, rcpts=(ROOT,)):
	"""sendmail args delivers the message, silently."""
	mark = d.mark()
	r = d.sendmail(args, msg(tag))
	check_ran(r)
	qid, copies = check_local_delivery(d, mark, sender, list(rcpts), 0, "root")
	for rest in copies.values():
		check(b"Subject: " + tag.encode() + b"\r\n" in rest, "the copy is not the message sent: %r" % rest[:300])
	return copies


IGNORED = [
	["-B8BITMIME"], ["-B", "8BITMIME"], ["-oem"], ["-oep"], ["-odi"], ["-odb"], ["-oXanything"],
	["-em"], ["-ep"], ["-N", "never"], ["-R", "hdrs"], ["-V", "xyz"], ["-bm"], ["-m"], ["-h", "17"], ["-U"],
	["-L", "cron"], ["-n"], ["-G"], ["-Am"], ["-Ac"], ["-X", "/dev/null"],  # Postfix's
]


def verbose(d):
	r = d.sendmail(["-v", "root"], msg("verbose"))
	check(r.returncode == 0, "sendmail -v: %r" % r)
	for step in ("EHLO", "MAIL FROM:<%s>" % ROOT, "RCPT TO:<%s>" % ROOT, "DATA", "354", "250", "QUIT"):
		check(step in r.stderr, "-v: %r missing from the dialogue on stderr: %r" % (step, r))
	m = re.search(r"queued as (%s)" % QID_RE, r.stderr)
	check(m, "-v: no 'queued as ID' on stderr: %r" % r)
	d.wait_delivered(m.group(1), ROOT)


def from_name(d):
	copies = accepted(d, ["-F", "Nightly Job", "-r", "jobs@other.example", "root"], "fullname",
			  sender="jobs@other.example")
	extra = check_passthrough(copies[ROOT], msg("fullname"), "-F NAME -r ADDR",
				  added=("date", "message-id", "from"))
	check_added_headers(extra, "-F NAME", "Nightly Job", "jobs@other.example")  # the envelope sender, as sendmail 8 and Postfix do


def long_name(d):
	"""-F with a 1200-character name: the From: field is folded, no line of
	the delivered header passes RFC 5322's 998 octets."""
	copies = accepted(d, ["-F", "x" * 1200, "root"], "long name")
	head = copies[ROOT].split(b"\r\n\r\n")[0]
	longest = max(len(line) for line in head.split(b"\r\n"))
	check(longest <= 998, "a header line of %d octets: %r" % (longest, head[:2000]))
	check(re.search(rb"(?m)^From:(\r\n[ \t].*)*<root@", head), "no From: field: %r" % head[:2000])


def many_recipients(d):
	"""More recipients than laimd takes in one transaction (100): sendmail
	sends the message in as many, each recipient gets one copy."""
	rcpts = ["r%d@%s" % (i, HOSTNAME) for i in range(250)]
	mark = d.mark()
	r = d.sendmail(["-i"] + rcpts, msg("many"))
	check_ran(r)
	sizes = [int(m.group(1)) for m in d.findall_log(r"%s: from=<[^>]*>, size=\d+, nrcpt=(\d+), client=local" % QID_RE,
							      since=mark)]
	check_eq(sorted(sizes), [50, 100, 100], "recipients of each transaction")
	wait_for(lambda: len(d.findall_log(r"status=delivered", since=mark)) >= 250, 30, "250 deliveries")
	got = [split_delivered(m)[1] for m in maildir_messages(d.maildir) if b"Subject: many\r\n" in m]
	check_eq(sorted(got), sorted(x.encode() for x in rcpts), "Delivered-To of the copies")


def refused_later(d):
	"""150 recipients, the 120th without a route: laimd would take the
	first 100 in one transaction and refuse the 120th in the next, so
	sendmail tries every recipient before any DATA: 67 naming it, and
	nothing is stored (a caller that retries sends no duplicates)."""
	rcpts = ["r%d@%s" % (i, HOSTNAME) for i in range(150)]
	rcpts[119] = "nobody@nowhere.example"
	mark = d.mark()
	r = d.sendmail(["-i"] + rcpts, msg("later refused"))
	check(r.returncode == 67, "expected exit 67: %r" % r)
	check("<nobody@nowhere.example>" in r.stderr, "stderr does not name the recipient: %r" % r)
	time.sleep(0.5)
	check(not d.search_log(r"from=<", mark), "a message was stored: %s" % d.log(mark))


def main():
	# No route for nowhere.example: laimd refuses it at RCPT.
	d = Laimd(routes=[{"match": m, "handlers": ["inbox"]} for m in ("*@" + HOSTNAME, "*@other.example")]).start()
	run_rows([
		("unknown option -Y: 64 naming it", lambda: refused(d, ["-Y", "root"], 64, ["Y"])),
		("--help: 64 naming it whole", lambda: refused(d, ["--help"], 64, ["unknown option --help\n"])),
		("recipient -oQ/tmp/x after --: 64", lambda: refused(d, ["--", "-oQ/tmp/x"], 64, ["-oQ/tmp/x"])),
		("recipient --help after --: 64", lambda: refused(d, ["-i", "--", "--help"], 64, ["--help"])),
		("recipient -oQ/tmp/x split from root,-oQ/tmp/x: 64",
		 lambda: refused(d, ["root,-oQ/tmp/x"], 64, ["-oQ/tmp/x"])),
		("CR LF in the -f value: 64",
		 lambda: refused(d, ["-f", "a@b.example\r\nRCPT TO:<evil@x.example>", "root"], 64, [])),
		("LF in the -f value: 64", lambda: refused(d, ["-fa@b.example\nX", "root"], 64, [])),
		("LF in a recipient: 64",
		 lambda: refused(d, ["root\nRCPT TO:<evil@x.example>"], 64, [])),
		("-t with To: -x@other.example: 65 (a bad header address)",
		 lambda: refused(d, ["-t"], 65, ["To: header", "-x@other.example"],
				 stdin=b"To: -x@other.example\nSubject: s\n\nb\n")),
		("-t without any recipient: 65",
		 lambda: refused(d, ["-t"], 65, [], stdin=b"Subject: nobody\n\nno To, Cc or Bcc\n")),
	] + [
		("accepted and ignored: %s" % " ".join(a), lambda a=a: accepted(d, a + ["root"], "ign" + "".join(a)))
		for a in IGNORED
	] + [
		("-v prints the SMTP dialogue on stderr", lambda: verbose(d)),
		("comma-separated recipients are split",
		 lambda: accepted(d, ["alpha, beta@other.example,gamma"], "commas",
				  rcpts=("alpha@" + HOSTNAME, "beta@other.example", "gamma@" + HOSTNAME))),
		("-F NAME (separate) and -r ADDR", lambda: from_name(d)),
		("-F with a 1200-character name: From: folded", lambda: long_name(d)),
		("250 recipients: three transactions, one copy each", lambda: many_recipients(d)),
		("150 recipients, the 120th refused: 67, nothing stored", lambda: refused_later(d)),
	])


run(main)
