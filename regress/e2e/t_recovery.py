# At start, leftovers in incoming/ (transactions a previous run never
# committed) are removed and never delivered, and the messages in queue/
# (committed by a previous run, not yet handled) are delivered, byte for
# byte as sent.
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

	# A half-received message, as a crash during DATA leaves it.
	stale = "0123456789"
	path = os.path.join(d.spool, "incoming", stale)
	with open(path, "wb") as f:
		f.write(b"LAIM 1\nid %s\narrival 1\nsender stale@client.example\nrcpt r@test.laim.example\n"
			b"client 127.0.0.1\nhelo x\n\nSubject: stale\r\n\r\nhalf" % stale.encode())
	os.chown(path, d.uid, d.gid)
	os.chmod(path, 0o600)

	d.unblock_dir(blocked)
	d.start()
	for q in queued:
		d.wait_delivered(q, "rcpt@test.laim.example")
		d.wait_removed(q)
	wait_for(lambda: not d.spool_files("incoming"), 5, "incoming/ to be cleaned")
	check_delivered_exactly(d, sent, blocked)
	check(not d.search_log(r"%s: (from|to)=" % stale, 0),
	      "the stale incoming/ file was handled as a message")
	check_eq(d.spool_files("queue"), [], "queue/ at the end")


run(main)
