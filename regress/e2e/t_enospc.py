# A full file system never costs an accepted message: the spool and the
# Maildir are each on a small tmpfs the case mounts and fills as root.
#   - no inode left for the spool file: DATA gets 451/452;
#   - no space left in the middle of a large message, or at the last write
#     before the commit: the end of data gets 451, nothing is committed or
#     delivered and its file is gone from queue/;
#   - no space left while the maildir handler writes: the message stays in
#     queue/ (deferred), no half-written copy reaches new/ or stays in tmp/;
# and once space is back the daemon takes and delivers each message byte
# for byte as sent, the deferred one included. Twice: with a spool of 36
# MiB, which holds the commit journal (32 MiB, made at the first start),
# and with one of 2 MiB, which does not: laimd says so and commits each
# file with syncs of its own.
import sys
sys.dont_write_bytecode = True
import errno
import subprocess
from harness import *

PAGE = 4096


def fill_inodes(fs):
	"""Root files in fs/inodes/ until the file system has no inode left."""
	d = os.path.join(fs, "inodes")
	os.makedirs(d, exist_ok=True)
	n = 0
	while True:
		try:
			open(os.path.join(d, str(n)), "w").close()
		except OSError as e:
			check_eq(e.errno, errno.ENOSPC, "error creating inode filler %d" % n)
			return d
		n += 1


def refused_at_data(d, tag, msg):
	"""A transaction whose message does not fit: DATA or the end of data
	gets 451/452, never 250."""
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<%s@client.example>" % tag, 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	r = c.cmd("DATA")
	if r.code == 354:
		c.send(data_terminated(msg))
		r = c.reply(15)
	check(r.code in (451, 452) and r.lines[-1][4:6] == "4.",
	      "%s: expected 451 or 452 with a 4.x.x code, got %r" % (tag, r))
	c.cmd("QUIT", 221)
	c.close()
	return r


def check_nothing_kept(d, what):
	wait_for(lambda: not d.pending_files(), 5, "no pending file in queue/ after %s" % what)
	check_eq(d.spool_files("queue"), [], "queue/ after %s" % what)


def spool_full(d, sent):
	fs = os.path.dirname(d.spool)
	inodes = fill_inodes(fs)
	refused_at_data(d, "noinode", varied_message("no inode"))
	d.wait_log(r"cannot create a spool file: create %s/queue/%s: No space left on device$" %
		   (re.escape(d.spool), QID_RE), since=0)
	check_nothing_kept(d, "the spool ran out of inodes")
	shutil.rmtree(inodes)

	filler = fill_space(fs, 16 * PAGE)
	r = refused_at_data(d, "large", varied_message("large", 400000))
	check_eq(r.code, 451, "end of data with the spool full in mid-message")
	d.wait_log(r"session \d+: %s: write to spool file: No space left on device$" % QID_RE, since=0)
	check_nothing_kept(d, "the spool filled in mid-message")
	os.unlink(filler)

	# 30 kB is less than smtp's write buffer: its one write is the last
	# before the commit.
	filler = fill_space(fs, 2 * PAGE)
	r = refused_at_data(d, "lastwrite", varied_message("last write", 30000))
	check_eq(r.code, 451, "end of data with the spool full at the last write")
	check_nothing_kept(d, "the spool filled at the last write")
	os.unlink(filler)
	check(not d.search_log(r"%s: from=<(noinode|large|lastwrite)@client\.example>, size=" % QID_RE, 0),
	      "a message refused for want of space was committed")

	for tag, size in (("large", 400000), ("last write", 30000), ("no inode", 30000)):
		msg = varied_message(tag + " again", size)
		sent[d.send(msg=msg)] = msg


def maildir_full(d, sent):
	mfs = os.path.dirname(d.maildir)
	for qid in sent:
		d.wait_removed(qid)
	before = maildir_files(d.maildir)
	filler = fill_space(mfs, 4 * PAGE)
	msg = varied_message("maildir full", 100000)
	qid = d.send(msg=msg)
	sent[qid] = msg
	d.wait_log(r"%s: to=<rcpt@test\.laim\.example>, handler=inbox, status=deferred, .*No space left on device\)$" % qid, since=0)
	check_eq(d.spool_files("queue"), [qid], "queue/ while the Maildir is full")
	check_eq(maildir_files(d.maildir), before, "messages in the full Maildir")
	check_eq(os.listdir(os.path.join(d.maildir, "tmp")), [], "half-written files in the full Maildir's tmp/")
	os.unlink(filler)
	d.wait_removed(qid, 15)


JOURNAL_SIZE = 32 * 1024 * 1024


def full_disks(spool_size):
	d = Laimd(name="t_enospc_%d" % spool_size)
	mounts = []
	try:
		spool_on_tmpfs(d, mounts, spool_size, 200)
		mount_tmpfs(os.path.join(d.dir, "mailfs"), mounts, 1024 * 1024, 200)
		d.maildir = os.path.join(d.dir, "mailfs", "Maildir")
		for sub in ("", "tmp", "new", "cur"):
			d.make_user_dir(os.path.join(d.maildir, sub))
		d.config["handlers"] = {"inbox": {"type": "maildir", "path": d.maildir}}
		d.start()
		journal = os.path.join(d.spool, "journal")
		if spool_size > JOURNAL_SIZE:  # the handler process makes it as it starts, after laimd's "ready"
			wait_for(lambda: os.path.exists(journal) and os.path.getsize(journal) == JOURNAL_SIZE, 10,
				 "a journal of %d bytes" % JOURNAL_SIZE)
		else:
			d.wait_log(r"%s: no journal \(write %s\.new: No space left on device\): each commit syncs its own "
				   r"files and queue/, a slower way$" % (re.escape(d.spool), re.escape(journal)), since=0)
			check(not os.path.exists(journal) and not os.path.exists(journal + ".new"),
			      "a journal left on the full spool")
		sent = {}
		spool_full(d, sent)
		maildir_full(d, sent)
		for qid in sent:
			d.wait_removed(qid)
		check_delivered_exactly(d, sent)
		check(d.running(), "the parent died")
		d.kill_tree()
	finally:
		for m in reversed(mounts):
			subprocess.run(["umount", "-l", m])


def main():
	full_disks(36 * 1024 * 1024)
	full_disks(2 * 1024 * 1024)


run(main)
