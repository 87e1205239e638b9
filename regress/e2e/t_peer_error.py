# A sibling that breaks the imsg protocol is ended: the case takes one end
# of the smtp<->handler channel (pidfd_getfd, as root, standing in for
# code subverted in the other process) and sends a malformed frame. The
# receiver drops the channel and reports it with the frame; the parent
# finds the frame invalid, kills the sender and starts a fresh one; mail
# flows again.
#
# A child that reports a valid frame is the liar: the case takes the smtp
# process's parent channel and reports a well-formed IMSG_H_MAIL from the
# handler; the parent ends smtp, not the handler. Its words, which carry a
# line feed and a forged "laimd[1]:" line, are logged escaped, as is a
# handler's reason with the same trick (the probe's forge... recipient):
# no log line starts with the forged text.
import sys
sys.dont_write_bytecode = True
import os
import socket
import struct
from harness import *

IMSG_S_RCPT, IMSG_H_MAIL, IMSG_C_PEER_ERROR = 101, 200, 300
FORGED = "\nlaimd[1]: forged line\x1b[2K\r"


def steal_sibling_channel(pid):
	"""A copy of pid's end of the smtp<->handler channel: its oldest
	seqpacket socket, in children the parent started at once (it makes
	that pair before their own channels)."""
	return steal_seqpacket(pid, min)


def parent_channel(found):
	"""smtp's channel to the parent: the pair made after the sibling pair
	and before the key channel's (parent/parent.cpp, start_child)."""
	return sorted(found)[1]


def frame(type, payload):
	return struct.pack("<IIII", type, 16 + len(payload), 1, 0) + payload


def imsg_str(b):
	return struct.pack("<I", len(b)) + b


def no_forged_line(d):
	for line in d.log().splitlines():
		check(not re.match(r"\s*laimd\[1\]: forged", line), "a forged log line: %r" % line)


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

	def lying_report():
		"""smtp reports a valid H_MAIL (status Ok): smtp is ended."""
		d.start()
		mark = d.mark()
		kids = d.children()
		chan = steal_seqpacket(kids["smtp"], parent_channel)
		valid = frame(IMSG_H_MAIL, struct.pack("<I", 0) + imsg_str(b""))
		chan.send(frame(IMSG_C_PEER_ERROR, imsg_str(("made up" + FORGED).encode()) + imsg_str(valid)))
		d.wait_log(r"smtp process reports a protocol error from the handler process \(made up\\nlaimd\[1\]: "
			   r"forged line\\x1b\[2K\\r\), but the frame it forwards is valid: ending the smtp process$",
			   since=mark)
		d.wait_children(old={"smtp": kids["smtp"]})
		chan.close()
		check_eq(d.child("handler"), kids["handler"], "the handler's pid after smtp's lie")
		check(not d.search_log(r"handler process \(pid", since=mark), "the handler process was restarted")
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after the lie"))
		d.wait_removed(qid)
		no_forged_line(d)
		d.stop()

	def malformed_report():
		"""A report that does not decode breaks the parent channel's
		protocol: the reporter is ended, its sibling keeps running."""
		d.start()
		mark = d.mark()
		kids = d.children()
		chan = steal_seqpacket(kids["smtp"], parent_channel)
		chan.send(frame(IMSG_C_PEER_ERROR, b"bad"))
		d.wait_log(r"smtp process broke the parent channel's protocol \(malformed IMSG_C_PEER_ERROR\): "
			   r"ending it$", since=mark)
		d.wait_children(old={"smtp": kids["smtp"]})
		chan.close()
		check_eq(d.child("handler"), kids["handler"], "the handler's pid after smtp's malformed report")
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after the bad report"))
		d.wait_removed(qid)
		d.stop()

	def forged_reason():
		"""A handler's reason with a line feed and an escape sequence."""
		out = d.make_user_dir(os.path.join(d.dir, "probe"))
		d.config["handlers"]["probe"] = {"type": "probe", "path": out}
		d.config["routes"] = [{"match": "forge@*", "handlers": ["probe"]}, {"match": "*", "handlers": ["inbox"]}]
		d.start()
		qid = send_mail(d.port, "a@example.org", ["forge@" + HOSTNAME], simple_message("forge"))
		# The queue makes the reason's line breaks spaces; the log escapes
		# what is left (ESC).
		d.wait_log(r"%s: to=<forge@%s>, handler=probe, status=failed \(554 5\.0\.0 forged laimd\[1\]: "
			   r"forged line\\x1b\[2K \)$" % (qid, re.escape(HOSTNAME)))
		no_forged_line(d)
		d.stop()

	def stopped(fn):
		def row():
			try:
				fn()
			finally:
				if d.running():
					d.stop()
		return row

	run_rows([(name, stopped(fn)) for name, fn in [
		("a report about a valid frame ends the reporter, and its words are escaped", lying_report),
		("a report that does not decode ends the reporter", malformed_report),
		("a handler's reason is logged escaped", forged_reason),
		("a malformed RCPT from smtp ends the smtp process",
		 lambda: broken_by("smtp", "handler", frame(IMSG_S_RCPT, b"bad"), "malformed IMSG_S_RCPT")),
		("a status out of range from the handler ends the handler process",
		 lambda: broken_by("handler", "smtp", frame(IMSG_H_MAIL, struct.pack("<I", 99)), "malformed IMSG_H_MAIL")),
	]])


run(main)
