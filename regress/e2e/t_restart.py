# The parent restarts a child killed with SIGKILL, logging the signal; the
# daemon keeps serving with the new child, which is confined again, and
# delivers each message byte for byte as sent.
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
	st = confined_status(new[name])
	check_eq(st["NoNewPrivs"], "1", "NoNewPrivs of the new %s" % name)
	uid = d.smtp_uid if name == "smtp" else d.uid
	check_eq(st["Uid"].split()[0], str(uid), "uid of the new %s" % name)
	return new


def main():
	d = Laimd().start()
	sent = {}

	def send(tag):
		msg = varied_message(tag)
		qid = d.send(msg=msg)
		sent[qid] = msg
		d.wait_removed(qid)
	kill_and_wait(d, "smtp")
	send("after smtp restart")

	kill_and_wait(d, "handler")
	send("after handler restart")

	# Again, to see the back-off does not stop restarts.
	kill_and_wait(d, "smtp")
	kill_and_wait(d, "handler")
	send("after the second restarts")
	check_delivered_exactly(d, sent)
	check(d.running(), "the parent died")


run(main)
