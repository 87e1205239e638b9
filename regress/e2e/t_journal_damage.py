# A damaged journal at start, after a stop of the system
# (doc/architecture.md, "The spool": Without a journal): a message is
# committed and held, laimd killed, its chmod undone as a power cut may
# leave it (its file pending, whole), and the journal damaged: its header
# overwritten, cut to half its size, or made root's. Each time the next
# start says what is wrong with the journal, moves it aside as it was
# (SPOOL/journal.damaged.TIME), never overwritten or removed, makes a new
# one, and judges queue/ by its files: the pending file is whole, so the
# message is kept, made committed, and in the end delivered once.
import sys
sys.dont_write_bytecode = True
import glob
from harness import *

SIZE = 32 * 1024 * 1024


def garbage_header(path):
	with open(path, "r+b") as f:
		f.write(b"garbage!")


def cut_in_half(path):
	os.truncate(path, SIZE // 2)


def owned_by_root(path):
	os.chown(path, 0, 0)


DAMAGES = [
	(garbage_header, "has no journal header"),
	(cut_in_half, "has %d bytes, not %d" % (SIZE // 2, SIZE)),
	(owned_by_root, "cannot be opened: Permission denied"),
]


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()
	sent = {}
	journal = os.path.join(d.spool, "journal")
	for damage, what in DAMAGES:
		msg = varied_message(damage.__name__, 3000)
		qid = d.send(msg=msg)
		sent[qid] = msg
		d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % qid)
		d.kill_tree()
		journal_of_another_boot(d.spool)
		os.chmod(os.path.join(d.spool, "queue", qid), 0o700)
		damage(journal)
		with open(journal, "rb") as f:
			damaged = f.read()
		d.start()
		m = d.wait_log(r"^laimd\[\d+\]: %s %s: moved to (%s\.damaged\.\d+); a new journal is made, and queue/ judged "
			       r"by its files alone$" % (re.escape(journal), re.escape(what), re.escape(journal)),
			       since=d.start_mark)
		aside = m.group(1)
		with open(aside, "rb") as f:
			check(f.read() == damaged, "%s: not the damaged journal as it was" % aside)
		m = d.wait_log(r"%s: (to=<[^>]*>, handler=inbox, status=deferred|.*removed)" % qid, since=d.start_mark)
		check("deferred" in m.group(0), "%s, answered 250, after %s: %s" % (qid, damage.__name__, m.group(0)))
		check_eq(os.path.getsize(journal), SIZE, "size of the new journal after %s" % damage.__name__)
		check_eq(d.committed_files(), sorted(sent), "committed files in queue/ after %s" % damage.__name__)
		os.unlink(aside)  # seen; the next damage may come within the same second
	d.unblock_dir(blocked)
	for qid in sent:
		d.wait_removed(qid)
	check_delivered_exactly(d, sent, blocked)
	check_eq(glob.glob(journal + ".*"), [], "files beside the journal")
	print("a damaged journal moved aside, logged, a new one made, the pending whole files kept: %s" %
	      ", ".join(damage.__name__ for damage, _ in DAMAGES))


run(main)
