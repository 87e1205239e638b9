# A sibling that breaks the imsg protocol is ended: the case takes one end
# of the smtp<->handler channel (pidfd_getfd, as root, standing in for
# code subverted in the other process) and sends a malformed frame. The
# receiver drops the channel and reports it; the parent kills the sender
# and starts a fresh one; mail flows again.
import sys
sys.dont_write_bytecode = True
import socket
import struct
from harness import *

IMSG_S_RCPT, IMSG_H_MAIL = 101, 200


def steal_sibling_channel(pid):
	"""A copy of pid's end of the smtp<->handler channel: its oldest
	seqpacket socket, in children the parent started at once (it makes
	that pair before their own channels)."""
	return steal_seqpacket(pid, min)


def frame(type, payload):
	return struct.pack("<IIII", type, 16 + len(payload), 1, 0) + payload


def main():
	d = Laimd()

	def broken_by(sender, receiver, data, what):
		d.start()
		mark = d.mark()
		pid = d.child(sender)
		chan = steal_sibling_channel(pid)
		chan.send(data)
		d.wait_log(r"protocol error from the %s process: %s; asking the parent to restart it" % (sender, what),
			   since=mark)
		d.wait_log(r"%s process reports a protocol error from the %s process \(%s\): ending it" %
			   (receiver, sender, what), since=mark)
		d.wait_children(old={sender: pid})
		chan.close()
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after " + what))
		check(qid, "no queue id after the restart")
		d.stop()

	run_rows([
		("a malformed RCPT from smtp ends the smtp process",
		 lambda: broken_by("smtp", "handler", frame(IMSG_S_RCPT, b"bad"), "malformed IMSG_S_RCPT")),
		("a status out of range from the handler ends the handler process",
		 lambda: broken_by("handler", "smtp", frame(IMSG_H_MAIL, struct.pack("<I", 99)), "malformed IMSG_H_MAIL")),
	])


run(main)
