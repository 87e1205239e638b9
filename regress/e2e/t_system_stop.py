# What a stop of the whole system (a power cut) may leave, and what the
# next start makes of it (doc/architecture.md, "The spool"). Messages are
# committed and held in queue/ (the Maildir refuses them), laimd is
# killed with SIGKILL, and the spool is left as a power cut could leave
# it: the journal's header names another boot, and of the committed
# messages one file is torn, one is gone (its rename never reached the
# disk), one is still pending (its chmod never did), one is whole, and
# a medium one (its record copied from its file) has a block of zeros; a
# large message (too large for the journal, its file synced on its own)
# is pending with a block of zeros, as a power cut in its commit can
# leave it (its size on disk, its data not all); and a small pending
# file the journal never held is there too. At the next start the torn,
# the lost and the medium ones are restored from the journal, the
# pending one is kept, the large one goes to failed/, the unheld one is
# removed; then every committed message but the large one is delivered
# once, byte for byte as sent.
import sys
sys.dont_write_bytecode = True
from harness import *


def queue_path(d, qid):
	return os.path.join(d.spool, "queue", qid)


def plant_unheld(d, model, qid):
	"""A pending queue file for qid that no journal record stands for."""
	with open(queue_path(d, model), "rb") as f:
		data = f.read().replace(b"\nid %s\n" % model.encode(), b"\nid %s\n" % qid.encode(), 1)
	path = queue_path(d, qid)
	with open(path, "wb") as f:
		f.write(data)
	os.chown(path, d.uid, d.gid)
	os.chmod(path, 0o700)


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()
	sent = {}
	for tag, size in (("torn", 30000), ("lost", 30000), ("pending", 30000), ("whole", 30000), ("medium", 300000)):
		msg = varied_message(tag, size)
		sent[d.send(msg=msg)] = msg
	large_msg = varied_message("large", 3000000)  # over the journal's RECORD_MAX, 2 MiB
	large = d.send(msg=large_msg)
	torn, lost, pending, whole, medium = list(sent)
	for q in list(sent) + [large]:
		d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % q)
	d.kill_tree()

	journal_of_another_boot(d.spool)
	os.truncate(queue_path(d, torn), os.path.getsize(queue_path(d, torn)) // 2)
	for q in (medium, large):
		with open(queue_path(d, q), "r+b") as f:
			f.seek(40960)
			f.write(bytes(4096))
		os.chmod(queue_path(d, q), 0o700)
	os.unlink(queue_path(d, lost))
	os.chmod(queue_path(d, pending), 0o700)
	unheld = "0123456789"
	plant_unheld(d, whole, unheld)

	d.unblock_dir(blocked)
	d.start()
	for qid, what in ((torn, "queue file not whole after a stop of the system: restored from the journal"),
			  (lost, "queue file missing after a stop of the system: restored from the journal"),
			  (medium, "queue file not whole after a stop of the system: restored from the journal"),
			  (large, "queue file not whole after a stop of the system: moved to failed/"),
			  (unheld, "commit cut off before the journal held it, so before any 250: removed")):
		d.wait_log(r"%s: %s$" % (qid, re.escape(what)), since=0)
	for q in sent:
		d.wait_delivered(q, "rcpt@test.laim.example")
		d.wait_removed(q)
	check_delivered_exactly(d, sent, blocked)
	check(os.path.exists(os.path.join(d.spool, "failed", large)), "the torn large message in failed/")
	check(not d.search_log(r"%s: (from|to)=" % unheld, 0), "the file the journal never held was delivered")
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	print("after a stop of the system: torn, lost and medium restored from the journal, pending kept, "
	      "large with a hole to failed/, unheld removed; %d delivered byte for byte" % len(sent))


run(main)
