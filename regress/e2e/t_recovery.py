# At start, a half-received message (a pending file in queue/, or in
# incoming/ as an earlier laim left it) is removed and never delivered,
# and the messages in queue/ (committed by a previous run, not yet
# handled) are delivered, byte for byte as sent, also one that root
# restored by hand (root's own, readable by laim).
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()
	sent = {}
	for i in range(3):
		msg = varied_message("queued %d" % i)
		sent[d.send(msg=msg)] = msg
	queued = list(sent)
	for q in queued:
		d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % q)
	check_eq(d.spool_files("queue"), sorted(queued), "queue/ before the stop")
	check_eq(d.stop(), 0, "exit status of the first run")

	# Half-received messages, as a crash during DATA leaves them: in
	# queue/, pending, and in incoming/, where an earlier laim wrote.
	stale, old_stale = "0123456789", "0123456788"
	for sub, qid, mode in (("queue", stale, 0o700), ("incoming", old_stale, 0o600)):
		path = os.path.join(d.spool, sub, qid)
		with open(path, "wb") as f:
			f.write(b"LAIM 1\nsum --------\nid %s\narrival 1\nsender stale@client.example\n"
				b"rcpt r@test.laim.example\nclient 127.0.0.1\nhelo x\n\nSubject: stale\r\n\r\nhalf" %
				qid.encode())
		os.chown(path, d.uid, d.gid)
		os.chmod(path, mode)

	# A queued file restored by hand as root: laim reads it, though the
	# O_NOATIME it reads with is refused on a file it does not own.
	restored = os.path.join(d.spool, "queue", queued[0])
	os.chown(restored, 0, 0)
	os.chmod(restored, 0o644)

	d.unblock_dir(blocked)
	d.start()
	for q in queued:
		d.wait_delivered(q, "rcpt@test.laim.example")
		d.wait_removed(q)
	d.wait_log(r"%s: message cut off by laimd's end, before any 250: removed$" % stale, since=0)
	d.wait_log(r"removed 1 incomplete messages from incoming/$", since=0)
	check_eq(d.spool_files("incoming"), [], "incoming/ after the start")
	check_delivered_exactly(d, sent, blocked)
	for qid in (stale, old_stale):
		check(not d.search_log(r"%s: (from|to)=" % qid, 0), "the stale file %s was handled as a message" % qid)
	check_eq(d.spool_files("queue"), [], "queue/ at the end")


run(main)
