# A removal while a checkpoint empties the journal (doc/architecture.md,
# "The spool": Checkpoints, Removals). 128 delivered messages wait in
# free/ for a barrier, so the next group, Y's, checkpoints first; strace
# holds the committer in the fdatasync of the journal's new header, and
# meanwhile `laimctl remove X` removes a held message, whose D record is
# written at once, and another session's MAIL gets its answer: the main
# loop never waits for the disk. Then Z is committed, laimd killed, and
# the spool left as a stop of the system could leave it (the journal of
# another boot, Y's chmod and Z's name never on disk): the next start
# counts Y's and Z's records, keeps Y and restores Z. A D record of the
# old generation written after the new header would end the journal
# before them.
import sys
sys.dont_write_bytecode = True
import threading
from harness import *

FDATASYNC = 75  # x86_64
HELD = 3  # seconds the header's fdatasync is held
FREED = 128  # Spool::MAX_FREE_FILES / 2: removals that call for a checkpoint


def main():
	d = Laimd(retry_initial=3600, retry_max=3600)
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"probe": {"type": "probe", "path": probe}}
	d.config["routes"] = [{"match": "*", "handlers": ["probe"]}]
	d.start()
	x = d.send(rcpts=["defer-x@test.laim.example"], msg=simple_message("X"))
	d.wait_log(r"%s: to=<defer-x@test.laim.example>, handler=probe, status=deferred" % x)
	with d.smtp() as c:
		c.ehlo()
		delivered = [c_transaction(c, "sender@client.example", ["ok%d@test.laim.example" % i],
					   simple_message("ok%d" % i)) for i in range(FREED)]
	for q in delivered:
		d.wait_removed(q)
	check_eq(len(d.spool_files("free")), FREED, "files in free/")

	handler = d.child("handler")
	tracer = strace_attach([handler], ["-e", "trace=fdatasync",
					   "-e", "inject=fdatasync:delay_enter=%d:when=1" % (HELD * 1000000)])
	sent = {}
	y_thread = threading.Thread(target=lambda: sent.update(
		y=d.send(rcpts=["defer-y@test.laim.example"], msg=simple_message("Y"))))
	try:
		y_thread.start()
		wait_for(lambda: in_syscall(handler, FDATASYNC), 10, "the checkpoint held in the header's fdatasync")
		held_at = time.monotonic()
		check_ran(d.laimctl(["remove", x]))
		with d.smtp() as c:
			c.ehlo()
			c.cmd("MAIL FROM:<other@client.example>", 250)
		took = time.monotonic() - held_at
		check(took < HELD / 2, "laimctl remove and another session's MAIL took %.2fs while the checkpoint's "
		      "fdatasync was held %ds: the main loop waited for the disk" % (took, HELD))
		y_thread.join(HELD + 10)
	finally:
		strace_detach(tracer)
	check("y" in sent, "no 250 for Y")
	y = sent["y"]
	z = d.send(rcpts=["defer-z@test.laim.example"], msg=simple_message("Z"))
	d.kill_tree()
	counted = journal_counted(d.spool)
	for q in (y, z):
		check(("C", q) in counted, "%s (250) not counted in the journal: %r" % (q, counted))

	journal_of_another_boot(d.spool)
	os.chmod(os.path.join(d.spool, "queue", y), 0o700)
	os.unlink(os.path.join(d.spool, "queue", z))
	d.start()
	d.wait_log(r"%s: queue file missing after a stop of the system: restored from the journal$" % z, since=0)
	check(not d.search_log(r"%s: .*removed$" % y, 0), "%s, answered 250, removed at the start" % y)
	check_eq(d.spool_files("queue"), sorted([y, z]), "queue/ after the start")
	print("a removal during a checkpoint's header sync answered in %.2fs; after a stop of the system "
	      "the journal still counts the later records" % took)


run(main)
