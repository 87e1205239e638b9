# A sibling that breaks the imsg protocol is ended: a test build's smtp
# process sends a malformed RCPT for a badframe@ recipient, its handler
# an out-of-range status for a badframe@ sender, each MACed with the key
# the parent gave it, as every frame on that channel. The receiver drops
# the channel and reports it with the frame; the parent verifies the
# sender's MAC, finds the frame invalid, kills the sender and starts a
# fresh one; mail flows again.
#
# A child that reports a valid frame is the liar: a test build's smtp
# process reports the handler's genuine answer to a liar@ sender; the
# parent ends smtp, not the handler. Its words, which carry a line feed
# and a forged "laimd[1]:" line, are logged escaped, as is a handler's
# reason with the same trick (the probe's forge... recipient): no log
# line starts with the forged text.
#
# A frame without the accused's MAC is made up: the case takes the smtp
# process's parent channel (pidfd_getfd, as root, standing in for code
# subverted in smtp) and reports an invalid IMSG_H_MAIL the handler never
# sent; or it takes smtp's end of the sibling channel and sends the
# handler a malformed frame without a MAC. The parent cannot tell the
# liar from the forger there, and ends both.
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
	d.one_cpu = True  # its channels are stolen by age

	def broken_by(sender, receiver, mail_from, rcpt, what):
		"""The test build's sender sends a genuine, MACed, invalid frame."""
		d.start()
		mark = d.mark()
		kids = d.children()
		try:
			send_mail(d.port, mail_from, [rcpt], simple_message("broken"))
		except Exception:
			pass  # the sender's or the receiver's end went away meanwhile
		d.wait_log(r"protocol error from the %s process: %s; asking the parent to restart it" % (sender, what),
			   since=mark)
		d.wait_log(r"%s process reports a protocol error from the %s process \(%s\): ending it$" %
			   (receiver, sender, what), since=mark)
		d.wait_children(old={sender: kids[sender]})
		check_eq(d.child(receiver), kids[receiver], "the %s's pid after the %s's bad frame" % (receiver, sender))
		# The restarted sender MACs with its new key, the receiver with
		# its old one: the parent judges with both.
		mark = d.mark()
		again = d.children()
		try:
			send_mail(d.port, mail_from, [rcpt], simple_message("broken again"))
		except Exception:
			pass
		d.wait_log(r"%s process reports a protocol error from the %s process \(%s\): ending it$" %
			   (receiver, sender, what), since=mark)
		d.wait_children(old={sender: again[sender]})
		check_eq(d.child(receiver), kids[receiver], "the %s's pid after the second bad frame" % receiver)
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after " + what))
		d.wait_removed(qid)
		d.stop()

	def lying_report():
		"""smtp reports the handler's genuine H_MAIL (status Ok): smtp is ended."""
		d.start()
		mark = d.mark()
		kids = d.children()
		try:
			send_mail(d.port, "liar@example.org", ["root@" + HOSTNAME], simple_message("lie"))
		except Exception:
			pass  # smtp is ended mid-transaction
		d.wait_log(r"smtp process reports a protocol error from the handler process \(made up\\nlaimd\[1\]: "
			   r"forged line\\x1b\[2K\\r\), but the frame it forwards is valid: ending the smtp process$",
			   since=mark)
		d.wait_children(old={"smtp": kids["smtp"]})
		check_eq(d.child("handler"), kids["handler"], "the handler's pid after smtp's lie")
		check(not d.search_log(r"handler process \(pid", since=mark), "the handler process was restarted")
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after the lie"))
		d.wait_removed(qid)
		no_forged_line(d)
		d.stop()

	def both_ended(chan_of, data, reporter, accused, what):
		"""A frame without the accused's MAC reaches the parent (sent as
		data on the channel chan_of picks in smtp): both are ended."""
		d.start()
		mark = d.mark()
		kids = d.children()
		chan = chan_of(kids["smtp"])
		chan.send(data)
		d.wait_log(r"%s process reports a protocol error from the %s process \(%s\), but the frame it forwards "
			   r"does not carry the %s process's MAC: ending both$" % (reporter, accused, what, accused),
			   since=mark)
		check(not d.search_log(r"protocol error from the %s process \([^)]*\): ending it" % accused, since=mark),
		      "the parent took the frame for the %s's" % accused)
		d.wait_children(old=kids)
		chan.close()
		qid = send_mail(d.port, "a@example.org", ["root@" + HOSTNAME], simple_message("after " + what))
		d.wait_removed(qid)
		d.stop()

	def fabricated_report():
		"""smtp forwards an invalid H_MAIL the handler never sent."""
		invalid = frame(IMSG_H_MAIL, struct.pack("<I", 99)) + os.urandom(16)
		both_ended(lambda pid: steal_seqpacket(pid, parent_channel),
			   frame(IMSG_C_PEER_ERROR, imsg_str(b"made up") + imsg_str(invalid)), "smtp", "handler", "made up")

	def unsealed_frame():
		"""smtp's end of the sibling channel, taken, sends the handler a
		frame without a MAC."""
		both_ended(steal_sibling_channel, frame(IMSG_S_RCPT, b"bad"), "handler", "smtp", "truncated frame")

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
		("a made-up frame without the handler's MAC ends both", fabricated_report),
		("a frame without a MAC on the sibling channel ends both", unsealed_frame),
		("a malformed RCPT from smtp ends the smtp process",
		 lambda: broken_by("smtp", "handler", "a@example.org", "badframe@" + HOSTNAME, "malformed IMSG_S_RCPT")),
		("a status out of range from the handler ends the handler process",
		 lambda: broken_by("handler", "smtp", "badframe@example.org", "root@" + HOSTNAME, "malformed IMSG_H_MAIL")),
	]])


run(main)
