# The command lines of the daemons that report by mail, each run as the
# user the daemon runs it as:
#   sudo                          sendmail -t                 (the invoking user)
#   unattended-upgrades, apt-listchanges  sendmail -oi -t     (root)
#   mdadm, logwatch, debsecan     sendmail -t, no -i: a lone "." line ends
#                                 the input, as with the real sendmail
#   fail2ban                      sendmail -f "fail2ban <root@localhost>" root@localhost
#   a bounce or vacation reply    sendmail -f '<>' root, with its own From:,
#   from a uid without a passwd   which needs no login name (one without
#   entry (a container's)         From: is refused: 67, saying why)
# Each checks the envelope (sender, recipients, uid in the from= line and
# in the Received: header) and the delivered message byte for byte, with
# only the missing Date:/Message-ID:/From: added.
import sys
sys.dont_write_bytecode = True
import pwd
import time
from harness import *

ROOT = "root@" + HOSTNAME

SUDO = (b"To: root\n"
	b"From: laimuser\n"
	b"Auto-Submitted: auto-generated\n"
	b"Subject: *** SECURITY information for vm ***\n"
	b"\n"
	b"vm : Jan  6 10:00:00 : laimuser : user NOT in sudoers ; TTY=pts/0 ; "
	b"PWD=/home/laimuser ; USER=root ; COMMAND=/usr/bin/id\n")

UNATTENDED = (b"Content-Type: text/plain; charset=\"utf-8\"\n"
	      b"MIME-Version: 1.0\n"
	      b"Content-Transfer-Encoding: 8bit\n"
	      b"Subject: [reboot required] unattended-upgrades result for vm: SUCCESS\n"
	      b"From: root\n"
	      b"To: root\n"
	      b"Auto-Submitted: auto-generated\n"
	      b"\n"
	      b"Unattended upgrade result: All upgrades installed\n"
	      b"\n"
	      b"Packages that were upgraded:\n"
	      b" libc-bin libc6 tzdata\n"
	      b".\n"
	      b"Unattended-upgrades log: caf\xc3\xa9 \xe2\x9c\x93\n")

MDADM_HEAD = (b"From: mdadm monitoring <root>\n"
	      b"To: root\n"
	      b"Subject: Fail event on /dev/md0:vm\n"
	      b"\n"
	      b"This is an automatically generated mail message from mdadm\n"
	      b"running on vm\n"
	      b"\n"
	      b"A Fail event had been detected on md device /dev/md0.\n")
MDADM_TAIL = (b".\n"
	      b"After the lone dot: never delivered.\n")

FAIL2BAN = (b"Subject: [Fail2Ban] sshd: started on vm\n"
	    b"Date: Wed, 08 Jan 2025 12:00:00 +0000\n"
	    b"From: fail2ban <root@localhost>\n"
	    b"To: root@localhost\n"
	    b"\n"
	    b"Hi,\n"
	    b"\n"
	    b"The jail sshd has been started successfully.\n"
	    b"\n"
	    b"Regards,\n"
	    b"\n"
	    b"Fail2Ban\n")


def submit(d, args, msg, user, sender, rcpts, added, sent=None):
	"""One row: runs sendmail as user (None: root), checks the delivery and
	returns the added header fields of the first recipient's copy."""
	mark = d.mark()
	check_ran(d.sendmail(args, msg, user=user))
	login = user.pw_name if user else "root"
	uid = user.pw_uid if user else 0
	qid, copies = check_local_delivery(d, mark, sender, rcpts, uid, login)
	what = "sendmail " + " ".join(args)
	extras = [check_passthrough(copies[r], sent if sent is not None else msg, what, added=added) for r in rcpts]
	return extras[0]


def sudo(d, lu):
	addr = "%s@%s" % (lu.pw_name, HOSTNAME)
	extra = submit(d, ["-t"], SUDO, lu, addr, [ROOT], ("date", "message-id"))
	check_added_headers(extra, "sudo")


def unattended(d):
	extra = submit(d, ["-oi", "-t"], UNATTENDED, None, ROOT, [ROOT], ("date", "message-id"))
	check_added_headers(extra, "unattended-upgrades")


def mdadm(d):
	extra = submit(d, ["-t"], MDADM_HEAD + MDADM_TAIL, None, ROOT, [ROOT], ("date", "message-id"),
		       sent=MDADM_HEAD)
	check_added_headers(extra, "mdadm")


def fail2ban(d):
	extra = submit(d, ["-f", "fail2ban <root@localhost>", "root@localhost"], FAIL2BAN, None,
		       "root@localhost", ["root@localhost"], ("message-id",))
	check_added_headers(extra, "fail2ban")


def unknown_uid(d):
	def known(uid):
		try:
			return pwd.getpwuid(uid)
		except KeyError:
			return None
	uid = next(u for u in range(54321, 60000) if not known(u))
	pw = pwd.struct_passwd(("uid%d" % uid, "x", uid, uid, "", "/", "/bin/sh"))
	msg = b"From: app@x.example\nSubject: vacation\n\nback on Monday\n"
	mark = d.mark()
	check_ran(d.sendmail(["-f", "<>", "root"], msg, user=pw))
	qid = d.wait_local_submission(mark, "").group(1)
	d.wait_delivered(qid, ROOT)
	d.wait_removed(qid)
	rp, rec, rest = d.delivered_copies(qid)[ROOT]
	check_eq(rp, "", "Return-Path: of the copy")
	check_passthrough(rest, msg, "sendmail -f '<>' as uid %d" % uid, added=("date", "message-id"))
	mark = d.mark()
	r = d.sendmail(["-f", "<>", "root"], b"Subject: no From:\n\nbody\n", user=pw)
	check_eq((r.returncode, r.stderr), (67, "sendmail: the message has no From: header, and cannot find the "
				    "login name of uid %d: give a sender with -f\n" % uid), "exit status and message")
	time.sleep(0.2)
	check(not d.search_log(r"from=<", mark), "a message was submitted: %s" % d.log(mark))


def stderr_closed(d):
	"""sendmail -v -t run with its stderr closed, as a daemon that
	closed its own may run it: the connection to laimd must not become
	fd 2, where -v's dialogue (and any message) would be written into the
	SMTP session. The message arrives whole, and laimd got no stray line."""
	mark = d.mark()
	msg = b"From: root\nTo: root\nSubject: stderr closed\n\nfrom a daemon without stderr\n"
	r = run_program("/bin/sh", ["-c", 'exec "$0" "$@" 2>&-', sendmail_path(), "-v", "-t"], msg,
			env=d.local_env())
	check_eq(r.returncode, 0, "exit status")
	qid, copies = check_local_delivery(d, mark, ROOT, [ROOT], 0, "root")
	check_passthrough(copies[ROOT], msg, "sendmail -v -t without stderr", added=("date", "message-id"))
	check(not d.search_log(r"unrecognized|syntax|not implemented", mark), "laimd got a stray line: %s" % d.log(mark))


def main():
	lu = local_user()
	d = Laimd().start()
	run_rows([
		("sudo: sendmail -t, run as %s" % lu.pw_name, lambda: sudo(d, lu)),
		("unattended-upgrades, apt-listchanges: sendmail -oi -t (a lone dot line kept)", lambda: unattended(d)),
		("mdadm, logwatch, debsecan: sendmail -t (input ends at the lone dot line)", lambda: mdadm(d)),
		('fail2ban: sendmail -f "fail2ban <root@localhost>" root@localhost', lambda: fail2ban(d)),
		("a uid without a passwd entry: sendmail -f '<>' root, with a From: of its own",
		 lambda: unknown_uid(d)),
		("a daemon without stderr: sendmail -v -t, fd 2 closed", lambda: stderr_closed(d)),
	])


run(main)
