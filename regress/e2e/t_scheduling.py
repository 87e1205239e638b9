# The smtp and handler processes, and every thread of the handler, run
# SCHED_BATCH (mail is not interactive: a woken laim process does not
# preempt the running one); the parent keeps the policy it was started
# with. A laimd started with another policy than the default (systemd's
# CPUSchedulingPolicy=, here chrt --idle) keeps it in every process.
# t_pipe checks that a command the parent runs has the default policy.
import sys
sys.dont_write_bytecode = True
from harness import *

NAMES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE"}


def policy(pid):
	return NAMES.get(os.sched_getscheduler(pid), str(os.sched_getscheduler(pid)))


def check_policies(d, parent, children):
	check_eq(policy(d.pid), parent, "the parent's scheduling policy")
	for name, pid in sorted(d.children().items()):
		tasks = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
		check_eq({t: policy(t) for t in tasks}, {t: children for t in tasks},
			 "the scheduling policy of the %s process's threads" % name)


def default_policy():
	d = Laimd()
	d.start()
	d.wait_removed(d.send())  # the handler's committer and a worker exist
	check(len(os.listdir("/proc/%d/task" % d.child("handler"))) > 1, "the handler process has threads")
	check_policies(d, "SCHED_OTHER", "SCHED_BATCH")
	d.stop()


def given_policy():
	d = Laimd(name="t_scheduling_idle")
	d.wrap(runner="chrt --idle 0")
	d.start()
	d.wait_removed(d.send())
	check_policies(d, "SCHED_IDLE", "SCHED_IDLE")
	d.stop()


def main():
	run_rows([
		("by default: smtp and handler SCHED_BATCH, the parent SCHED_OTHER", default_policy),
		("started SCHED_IDLE: every process keeps it", given_policy),
	])


run(main)
