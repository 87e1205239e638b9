# A group of commits larger than the journal (doc/architecture.md, "The
# spool": Checkpoints): 560 messages of 64000 bytes, their ends of data
# sent while strace holds the first group's fdatasync for 4 s, make one
# group of 35.9 MB of records for a 32 MiB journal. Every message gets
# its 250; the group checkpoints first, the journal takes what fits, and
# each one it has no room for is committed on its own (its file
# fdatasynced, then its committed mode fsynced, before its 250, as the
# trace shows); each is delivered byte for byte.
import sys
sys.dont_write_bytecode = True
import threading
from harness import *


def overflowing_group():
	n = 560
	d = Laimd(max_sessions=700, max_queue_size=2000)
	d.start()
	# The first fdatasync, message 0's group's, held 4 s: the n ends of
	# data sent meanwhile make the next group, 35.9 MB of records for a
	# 32 MiB journal.
	tracer, trace = traced(d, ["-e", "trace=fdatasync,fsync,write", "-e",
				   "inject=fdatasync:delay_enter=4000000:when=1"])
	msgs = [varied_message("group %d" % i, 64000) for i in range(n + 1)]
	codes, ids = {}, {}
	go = threading.Event()

	def one(i):
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<sender@client.example>", 250)
			c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
			c.cmd("DATA", 354)
			if i > 0:
				go.wait(60)
			c.send(data_terminated(msgs[i]))
			if i == 0:
				time.sleep(0.5)  # its group is in the held fdatasync
				go.set()
			r = c.reply(timeout=60)
			codes[i] = r.code
			if r.code == 250:
				ids[i] = queue_id(r)

	threads = [threading.Thread(target=one, args=(i,)) for i in range(1, n + 1)]
	try:
		for t in threads:
			t.start()
		one(0)
		for t in threads:
			t.join(90)
		# A from= line may be written after the 250s went out: the trace
		# must still hold each one when it ends.
		for q in ids.values():
			d.wait_log(r"%s: from=<" % q, 30)
	finally:
		strace_detach(tracer)
	check_eq(sorted(set(codes.values())), [250], "replies to the ends of data")
	# The group checkpointed first (it could not fit): its records are
	# all the journal has.
	journaled = journal_records(d.spool, b"C")
	group = [ids[i] for i in range(1, n + 1)]
	alone = [q for q in group if q not in journaled]
	check(alone and len(alone) < n, "%d of the group's %d messages committed without the journal" % (len(alone), n))
	for q in alone:
		check(synced_alone(trace, q), "%s: not in the journal, and its file not fdatasynced and fsynced before "
		      "its 250 (trace %s)" % (q, trace))
	for q in ids.values():
		d.wait_removed(q, 60)
	check_delivered_exactly(d, {ids[i]: msgs[i] for i in ids})
	d.stop()
	print("a group of %d messages of 64000 bytes: all 250, %d committed without the journal" % (n, len(alone)))


run(overflowing_group)
