# A delivery that ends as the handler process begins to stop (SIGTERM)
# is settled before it exits: logged, its file removed, never delivered
# again when the process is started anew. The probe handler's term...
# recipient signals the process's main thread in its delivery, which
# then returns success; the parent restarts the handler process, which
# loads what is left in queue/. Three rounds: the delivery's end and the
# stop race, and an end left unsettled shows as a second delivery.
import sys
sys.dont_write_bytecode = True
from harness import *

ROUNDS = 3


def main():
	d = Laimd()
	out = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"probe": {"type": "probe", "path": out}}
	d.config["routes"] = [{"match": "*", "handlers": ["probe"]}]
	d.start()
	deliveries = os.path.join(out, "deliveries")
	for i in range(ROUNDS):
		old = d.child("handler")
		qid = d.send(rcpts=["term%d@test.laim.example" % i])
		d.wait_log(r"handler process \(pid %d\) exited with status 0; restarting" % old, 10)
		new = d.wait_children(15, old={"handler": old})["handler"]
		d.wait_log(r"handler process started, pid %d" % new, 10)
		wait_for(lambda: not d.spool_files("queue"), 10, "queue/ empty after the restart")
		with open(deliveries) as f:
			lines = [l for l in f.read().splitlines() if l.startswith(qid + " ")]
		check_eq(len(lines), 1, "deliveries of %s (round %d)" % (qid, i + 1))
		d.wait_log(r"%s: to=<term%d@test\.laim\.example>, handler=probe, status=delivered" % (qid, i), 10, since=0)
	print("%d deliveries ended by the process's stop: each settled once" % ROUNDS)


run(main)
