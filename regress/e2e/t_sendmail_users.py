# The mail user agents' command lines, run as an ordinary login user:
#   bsd-mailx        sendmail -i -t, with a Bcc: header (removed from the
#                    message, its recipient still gets a copy)
#   mailutils mail   sendmail -oi -f root -t
#   PHP mail()       sendmail -t -i -fwww@localhost
#   git send-email   sendmail -f a@example.org -i b@example.org c@example.org
#   mutt             sendmail -oem -oi -B8BITMIME -f a@x -- b@y
# Each checks the envelope (sender, recipients, the user's uid in the
# from= line and the Received: header) and the delivered message byte for
# byte, with only the missing Date:/Message-ID:/From: added (From: with the
# user's login and GECOS name).
import sys
sys.dont_write_bytecode = True
from harness import *


def q(local):
	return "%s@%s" % (local, HOSTNAME)


MAILX = (b"To: root, ops\n"
	 b"Subject: disk usage\n"
	 b"Cc: audit@" + HOSTNAME.encode() + b"\n"
	 b"Bcc: hidden@" + HOSTNAME.encode() + b"\n"
	 b"\n"
	 b"/srv is 93% full (\xc3\xa9t\xc3\xa9)\n"
	 b".\n"
	 b"-i: the lone dot above does not end the input\n")
MAILX_DELIVERED = MAILX.replace(b"Bcc: hidden@" + HOSTNAME.encode() + b"\n", b"")

MAILUTILS = (b"From: Laim Local User <laimuser@vm>\n"
	     b"To: root\n"
	     b"Subject: backup done\n"
	     b"Date: Thu, 09 Jan 2025 08:00:00 +0100\n"
	     b"\n"
	     b"ok \xc2\xb5s\n")

PHP = (b"To: root@localhost\n"
       b"Subject: contact form\n"
       b"X-PHP-Originating-Script: 33:form.php\n"
       b"From: www@localhost\n"
       b"MIME-Version: 1.0\n"
       b"Content-type: text/plain; charset=UTF-8\n"
       b"\n"
       b"Bonjour, \xc3\xa7a marche.\n"
       b".\n"
       b"still the message (-i)\n")

GIT = (b"From: A U Thor <a@example.org>\n"
       b"To: b@example.org\n"
       b"Cc: c@example.org\n"
       b"Subject: [PATCH] frob: fix the frobnicator\n"
       b"Date: Mon,  6 Jan 2025 10:00:00 +0100\n"
       b"Message-Id: <20250106090000.1234-1-a@example.org>\n"
       b"X-Mailer: git-send-email 2.39.5\n"
       b"MIME-Version: 1.0\n"
       b"Content-Transfer-Encoding: 8bit\n"
       b"\n"
       b"Signed-off-by: A U Thor <a@example.org>\n"
       b"---\n"
       b" frob.c | 2 +-\n"
       b".\n"
       b"diff --git a/frob.c b/frob.c\n"
       b"-\tint x = 0;\n"
       b"+\tint x = 1; /* na\xc3\xafve */\n")

MUTT = (b"Date: Tue, 7 Jan 2025 11:12:13 +0000\n"
	b"From: A <a@x>\n"
	b"To: b@y\n"
	b"Subject: =?utf-8?Q?r=C3=A9union?=\n"
	b"Message-ID: <Z3x1AbCd@x>\n"
	b"MIME-Version: 1.0\n"
	b"Content-Type: text/plain; charset=utf-8\n"
	b"Content-Disposition: inline\n"
	b"Content-Transfer-Encoding: 8bit\n"
	b"User-Agent: Mutt/2.2.9 (2022-11-12)\n"
	b"\n"
	b"R\xc3\xa9union \xc3\xa0 10h.\n"
	b"\n"
	b"-- \n"
	b"A\n")


def submit(d, lu, args, msg, sender, rcpts, added, sent=None):
	mark = d.mark()
	check_ran(d.sendmail(args, msg, user=lu))
	qid, copies = check_local_delivery(d, mark, sender, rcpts, lu.pw_uid, lu.pw_name)
	what = "sendmail " + " ".join(args)
	extras = [check_passthrough(copies[r], sent if sent is not None else msg, what, added=added,
				    removed=("bcc",)) for r in rcpts]
	for r in rcpts:
		names = [field_name(f) for f in header_fields(copies[r])[0]]
		check("bcc" not in names, "%s: a Bcc: header in the copy for %s" % (what, r))
	return extras[0]


def mailx(d, lu):
	rcpts = [q("root"), q("ops"), q("audit"), q("hidden")]
	extra = submit(d, lu, ["-i", "-t"], MAILX, q(lu.pw_name), rcpts, ("date", "message-id", "from"),
		       sent=MAILX_DELIVERED)
	check_added_headers(extra, "bsd-mailx", LOCAL_GECOS, q(lu.pw_name))


def mailutils(d, lu):
	extra = submit(d, lu, ["-oi", "-f", "root", "-t"], MAILUTILS, q("root"), [q("root")], ("message-id",))
	check_added_headers(extra, "mailutils")


def php(d, lu):
	extra = submit(d, lu, ["-t", "-i", "-fwww@localhost"], PHP, "www@localhost", ["root@localhost"],
		       ("date", "message-id"))
	check_added_headers(extra, "PHP mail()")


def git(d, lu):
	submit(d, lu, ["-f", "a@example.org", "-i", "b@example.org", "c@example.org"], GIT, "a@example.org",
	       ["b@example.org", "c@example.org"], ())


def mutt(d, lu):
	submit(d, lu, ["-oem", "-oi", "-B8BITMIME", "-f", "a@x", "--", "b@y"], MUTT, "a@x", ["b@y"], ())


def main():
	lu = local_user()
	d = Laimd().start()
	run_rows([
		("bsd-mailx: sendmail -i -t with Bcc:", lambda: mailx(d, lu)),
		("mailutils: sendmail -oi -f root -t", lambda: mailutils(d, lu)),
		("PHP mail(): sendmail -t -i -fwww@localhost", lambda: php(d, lu)),
		("git send-email: sendmail -f a@example.org -i b@example.org c@example.org", lambda: git(d, lu)),
		("mutt: sendmail -oem -oi -B8BITMIME -f a@x -- b@y", lambda: mutt(d, lu)),
	])


run(main)
