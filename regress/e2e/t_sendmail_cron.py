# The cron daemons' command lines, run as root the way they run them:
#   Debian cron  sendmail -FCronDaemon -i -B8BITMIME -oem root
#   cronie       sendmail -FCronDaemon -i -odi -oem -oi -t -f root
# Each is one submission over the local socket (client=local, uid=0) with
# the envelope the flags imply (domainless addresses qualified with the
# mailname), the job's output passed through byte for byte (8-bit bytes,
# a long line and, under -i, a lone "." line included), and only the
# missing Date:, Message-ID: and From: added (From: with the -F name).
import sys
sys.dont_write_bytecode = True
from harness import *

ROOT = "root@" + HOSTNAME
LONG = b"x" * 5000  # over RFC 5321's 998: the socket takes it as it is

# What Debian's cron (3.0pl1) writes after a job printed something.
DEBIAN_CRON = (b"From: root (Cron Daemon)\n"
	       b"To: root\n"
	       b"Subject: Cron <root@vm> /usr/local/sbin/backup\n"
	       b"MIME-Version: 1.0\n"
	       b"Content-Type: text/plain; charset=UTF-8\n"
	       b"Content-Transfer-Encoding: 8bit\n"
	       b"X-Cron-Env: <SHELL=/bin/sh>\n"
	       b"X-Cron-Env: <HOME=/root>\n"
	       b"X-Cron-Env: <PATH=/usr/bin:/bin>\n"
	       b"X-Cron-Env: <LOGNAME=root>\n"
	       b"\n"
	       b"backup: 3 files copied to /srv/b\xc3\xa4ckup (\xe9t\xe9 in latin-1, \xff)\n"
	       b".\n"
	       b"the job printed a lone dot above; -i keeps it and what follows\n"
	       b"..two dots\n" + LONG + b"\n")

# The same job output from a cron that leaves From: to sendmail.
NO_FROM = b"".join(l for l in DEBIAN_CRON.splitlines(True) if not l.startswith(b"From:"))

CRONIE = (b"From: \"(Cron Daemon)\" <root>\n"
	  b"To: root\n"
	  b"Subject: Cron <root@vm> run-parts /etc/cron.hourly\n"
	  b"Content-Type: text/plain; charset=\"UTF-8\"\n"
	  b"Auto-Submitted: auto-generated\n"
	  b"Precedence: bulk\n"
	  b"X-Cron-Env: <LANG=C.UTF-8>\n"
	  b"X-Cron-Env: <SHELL=/bin/sh>\n"
	  b"\n"
	  b"/etc/cron.hourly/check:\n"
	  b"r\xc3\xa9sultat: 1 avertissement\n"
	  b".\n"
	  b"end of output\n")


def row(d, args, msg, added, from_name=None):
	mark = d.mark()
	r = d.sendmail(args, msg)
	check_ran(r)
	qid, copies = check_local_delivery(d, mark, ROOT, [ROOT], 0, "root")
	extra = check_passthrough(copies[ROOT], msg, " ".join(args), added=added)
	check_added_headers(extra, " ".join(args), from_name, ROOT)


def main():
	d = Laimd().start()
	run_rows([
		("Debian cron: sendmail -FCronDaemon -i -B8BITMIME -oem root",
		 lambda: row(d, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], DEBIAN_CRON,
			     ("date", "message-id"))),
		("Debian cron, output without From: (From: CronDaemon <root@mailname> added)",
		 lambda: row(d, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], NO_FROM,
			     ("date", "message-id", "from"), "CronDaemon")),
		("cronie: sendmail -FCronDaemon -i -odi -oem -oi -t -f root",
		 lambda: row(d, ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"], CRONIE,
			     ("date", "message-id"))),
	])


run(main)
