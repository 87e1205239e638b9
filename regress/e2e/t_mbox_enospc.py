# laim-mda on a full file system: the mail directory is a small tmpfs the
# case mounts over mbox_laimd's (root:mail 2775, as Debian's /var/mail)
# and fills as root. A message that does not fit is deferred with
# laim-mda's line naming the failed write and the size the mailbox was cut
# back to; the mailbox keeps exactly its previous bytes, and no dotlock is
# left. Once space is back the retry delivers it: the mailbox is its
# previous bytes, then the copy, with the message byte for byte as sent
# (LF line ends).
import sys
sys.dont_write_bytecode = True
import grp
import subprocess
from harness import *


def main():
	user = local_user()
	d, mail_dir = mbox_laimd()
	box = os.path.join(mail_dir, user.pw_name)
	rcpt = "%s@%s" % (user.pw_name, HOSTNAME)
	mounts = []
	try:
		mount_tmpfs(mail_dir, mounts, 256 * 1024, 100)
		os.chown(mail_dir, 0, grp.getgrnam("mail").gr_gid)
		os.chmod(mail_dir, 0o2775)
		d.start()
		first = d.send(rcpts=[rcpt], msg=simple_message("before"))
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % first)
		before = open(box, "rb").read()

		filler = fill_space(mail_dir, 8 * 1024)
		msg = varied_message("no room", 40000)
		qid = d.send(rcpts=[rcpt], msg=msg)
		d.wait_log(r"%s: to=<.*>, handler=local, status=deferred.*\(mbox: laim-mda as %s exited with status 75 "
			   r"\(temporary failure\): %s: write: No space left on device \(cut back to %d bytes\)\)$"
			   % (qid, user.pw_name, re.escape(box), len(before)))
		check_eq(open(box, "rb").read(), before, "the mailbox after a write that found no room")
		check_eq(sorted(os.listdir(mail_dir)), sorted([user.pw_name, "filler"]), "files in the mail directory")

		os.unlink(filler)
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid, 20)
		after = open(box, "rb").read()
		check(after.startswith(before), "the mailbox's earlier bytes changed")
		m = re.match(rb"From sender@client\.example [^\n]+\nReturn-Path: <sender@client\.example>\n"
			     rb"Delivered-To: %s\nReceived: [^\n]*\n(?:[ \t][^\n]*\n)*" % re.escape(rcpt.encode()),
			     after[len(before):])
		check(m, "the copy starts %r" % after[len(before):len(before) + 300])
		check_eq(after[len(before) + m.end():], msg.replace(b"\r\n", b"\n") + b"\n", "the message in the mailbox")
		d.kill_tree()
	finally:
		for path in reversed(mounts):
			subprocess.run(["umount", "-l", path])


run(main)
