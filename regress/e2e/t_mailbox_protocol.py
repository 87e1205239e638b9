# The parent's mailbox service against a subverted handler process. The
# case takes the handler's end of its mailbox channel (pidfd_getfd, as
# root, standing in for code running as the laim user in the handler),
# stops the real handler, and speaks raw imsg frames to the root parent:
# a request naming no possible user, or requests whose answers are never
# read, end the handler (which is restarted) without a forged log line or
# the parent growing; the dotlock of a lease the handler never returns
# goes when the handler dies.
import sys
sys.dont_write_bytecode = True
import array
import socket
import struct
from harness import *

IMSG_H_MAILBOX_OPEN, IMSG_P_MAILBOX_OK = 400, 402


def steal_mailbox_channel(pid):
	"""A copy of the handler's mailbox channel: its newest seqpacket socket
	(the parent makes that pair last when it forks the handler)."""
	return steal_seqpacket(pid, max)


def open_request(peerid, user):
	payload = struct.pack("<I", len(user)) + user
	return struct.pack("<IIII", IMSG_H_MAILBOX_OPEN, 16 + len(payload), peerid, 0) + payload


def main():
	user = local_user()
	d, mail_dir = mbox_laimd()
	d.start()

	def subvert():
		"""The stolen channel, with the real handler stopped."""
		pid = d.child("handler")
		chan = steal_mailbox_channel(pid)
		os.kill(pid, signal.SIGSTOP)
		return pid, chan

	def ended(pid, mark):
		d.wait_log(r"handler process broke the mailbox protocol \(bad request\): ending it", since=mark)
		d.wait_children(old={"handler": pid})

	def delivers():
		qid = d.send(rcpts=["%s@%s" % (user.pw_name, HOSTNAME)], msg=simple_message("still works"))
		d.wait_log(r"%s: to=<.*>, handler=local, status=delivered" % qid)

	def bad_name():
		mark = d.mark()
		pid, chan = subvert()
		chan.send(open_request(1, b"x\nlaimd[1]: FORGED line"))
		ended(pid, mark)
		chan.close()
		check(not d.search_log(r"^laimd\[1\]: FORGED", mark), "a forged log line:\n%s" % d.log(mark))
		delivers()

	def unread_answers():
		mark = d.mark()
		parent_kb = rss_kb(d.pid)
		pid, chan = subvert()
		chan.setblocking(False)
		sent = 0
		try:
			for sent in range(20000):
				chan.send(open_request(1, b"no-such-user-" + b"x" * 200))
		except (BlockingIOError, BrokenPipeError, ConnectionResetError):
			pass
		ended(pid, mark)
		chan.close()
		grown = rss_kb(d.pid) - parent_kb
		print("# %d requests sent before the parent ended the handler; parent grew %d kB" % (sent, grown))
		check(grown < 4096, "the parent grew by %d kB" % grown)
		delivers()

	def lease_dies_with_handler():
		pid, chan = subvert()
		chan.send(open_request(7, user.pw_name.encode()))
		chan.settimeout(5)
		data, anc, _, _ = chan.recvmsg(1024, socket.CMSG_SPACE(4))
		fds = array.array("i")
		for _, _, cdata in anc:
			fds.frombytes(cdata[:len(cdata) - len(cdata) % 4])
		check_eq(struct.unpack("<I", data[:4])[0], IMSG_P_MAILBOX_OK, "answer type")
		for fd in fds:
			os.close(fd)
		lock = os.path.join(mail_dir, user.pw_name + ".lock")
		check(os.path.exists(lock), "no dotlock while the lease is held")
		chan.close()
		os.kill(pid, signal.SIGKILL)
		d.wait_children(old={"handler": pid})
		wait_for(lambda: not os.path.exists(lock), 5, "the dotlock removed")
		delivers()

	run_rows([
		("a request naming no possible user ends the handler, no forged log line", bad_name),
		("a handler that never reads its answers is ended; the parent stays small", unread_answers),
		("a lease's dotlock goes when the handler dies", lease_dies_with_handler),
	])


run(main)
