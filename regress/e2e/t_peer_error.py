# A sibling that breaks the imsg protocol is ended: the case takes one end
# of the smtp<->handler channel (pidfd_getfd, as root, standing in for
# code subverted in the other process) and sends a malformed frame. The
# receiver drops the channel and reports it; the parent kills the sender
# and starts a fresh one; mail flows again.
import sys
sys.dont_write_bytecode = True
import ctypes
import socket
import struct
from harness import *

IMSG_S_RCPT, IMSG_H_MAIL = 101, 200
SYS_pidfd_getfd = 438  # x86_64 and most others
libc = ctypes.CDLL(None, use_errno=True)


def seqpacket_inodes():
	"""Inodes of the unix SOCK_SEQPACKET sockets (type 0005)."""
	out = set()
	with open("/proc/net/unix") as f:
		next(f)
		for line in f:
			cols = line.split()
			if cols[4] == "0005":
				out.add(int(cols[6]))
	return out


def steal_sibling_channel(pid):
	"""A copy of pid's end of the smtp<->handler channel: its oldest
	seqpacket socket, in children the parent started at once (it makes
	that pair before their own channels)."""
	seq = seqpacket_inodes()
	found = []
	for fd in os.listdir("/proc/%d/fd" % pid):
		m = re.match(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
		if m and int(m.group(1)) in seq:
			found.append((int(m.group(1)), int(fd)))
	check(found, "process %d has no seqpacket socket" % pid)
	pidfd = os.pidfd_open(pid)
	try:
		fd = libc.syscall(SYS_pidfd_getfd, pidfd, min(found)[1], 0)
	finally:
		os.close(pidfd)
	check(fd >= 0, "pidfd_getfd: errno %d" % ctypes.get_errno())
	return socket.socket(fileno=fd)


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
