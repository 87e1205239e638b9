# The parent restarts a child killed with SIGKILL, logging the signal; the
# daemon keeps serving with the new child, which is confined again.
import sys
sys.dont_write_bytecode = True
import os
import signal
from harness import *


def kill_and_wait(d, name):
	old = d.children()
	mark = d.mark()
	os.kill(old[name], signal.SIGKILL)
	m = d.wait_log(r"%s process \(pid (\d+)\) killed by signal SIGKILL; restarting in [0-9.]+s$" % name,
		       15, since=mark)
	check_eq(int(m.group(1)), old[name], "pid in the %s restart log line" % name)
	new = d.wait_children(15, old={name: old[name]})
	other = "handler" if name == "smtp" else "smtp"
	check_eq(new[other], old[other], "%s pid after the %s restart" % (other, name))
	st = proc_status(new[name])
	check_eq((st["Seccomp"], st["NoNewPrivs"]), ("2", "1"), "confinement of the new %s" % name)
	check_eq(st["Uid"].split()[0], str(d.uid), "uid of the new %s" % name)
	return new


def main():
	d = Laimd().start()
	kill_and_wait(d, "smtp")
	qid = d.send(msg=simple_message("after smtp restart"))
	d.wait_removed(qid)

	kill_and_wait(d, "handler")
	qid = d.send(msg=simple_message("after handler restart"))
	d.wait_removed(qid)

	# Again, to see the back-off does not stop restarts.
	kill_and_wait(d, "smtp")
	kill_and_wait(d, "handler")
	qid = d.send(msg=simple_message("after the second restarts"))
	d.wait_removed(qid)
	check_eq(len(maildir_files(d.maildir)), 3, "messages delivered")
	check(d.running(), "the parent died")


run(main)
