# The parent's command service against a subverted handler process. The
# case takes the handler's end of its command channel (pidfd_getfd, as
# root, standing in for code running as the laim user in the handler),
# stops the real handler, and sends raw IMSG_H_COMMAND_RUN frames to the
# root parent, each with a reply channel of its own. A "|command" that
# the aliases file lists runs, as nobody (the control: the forged
# requests work); one it does not list, an instance that is no pipe
# handler, a mailbox while no mbox handler is configured, and a recipient
# that would become an option to the command are refused on the reply
# channel, logged, and start nothing; a malformed frame, or a reply channel
# that is a file or a stream socket, ends the handler, which is restarted,
# and never the parent. When the handler process
# dies, the parent kills the commands it was feeding.
import sys
sys.dont_write_bytecode = True
import pwd
import socket
from harness import *


def main():
	d = Laimd(alias_commands=True)
	d.one_cpu = True  # its channels are stolen by age
	cmd = os.path.join(d.dir, "cmd")
	os.mkdir(cmd, 0o755)
	nobody = pwd.getpwnam("nobody")
	os.chown(cmd, nobody.pw_uid, nobody.pw_gid)
	listed = "|touch %s/listed.ran" % cmd
	with open(d.config["aliases"], "w") as f:
		f.write('ran: "%s"\n' % listed)
	script = os.path.join(d.dir, "sleeper.sh")
	with open(script, "w") as f:
		f.write("#!/bin/sh\necho $$ > %s/sleeper.pid\nexec sleep 60\n" % cmd)
	os.chmod(script, 0o755)
	d.config["handlers"]["sleeper"] = {"type": "pipe", "user": "nobody", "command": [script, "{recipient}"],
					   "timeout": 40}
	d.config["routes"] = [{"match": "sleep@*", "handlers": ["sleeper"]}, {"match": "*", "handlers": ["inbox"]}]
	d.start()

	def forged(instance, rcpts):
		"""Sends one request over the stolen channel with the real handler
		stopped; returns the frames answered on its reply channel."""
		pid = d.child("handler")
		chan = steal_command_channel(pid)
		os.kill(pid, signal.SIGSTOP)
		mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
		try:
			socket.send_fds(chan, [run_request(instance, rcpts)], [theirs.fileno()])
			theirs.close()
			got = frames(mine)
		finally:
			os.kill(pid, signal.SIGCONT)
			chan.close()
			mine.close()
		for _, _, fds in got:
			for fd in fds:
				os.close(fd)
		check_eq(d.child("handler"), pid, "the handler process (a refusal does not end it)")
		return got

	def refused(instance, rcpts, permanent, why):
		mark = d.mark()
		got = forged(instance, rcpts)
		check_eq([k for k, _, _ in got], [IMSG_P_COMMAND_FAIL], "frames answered")
		flag, n = struct.unpack("<II", got[0][1][:8])
		check_eq((flag, got[0][1][8:8 + n].decode()), (int(permanent), why), "the refusal")
		d.wait_log(r"0123456789: handler=%s, command refused: %s$" % (re.escape(instance), re.escape(why)), since=mark)

	def listed_runs():
		got = forged("alias:command", [listed])
		check_eq([k for k, _, _ in got], [IMSG_P_COMMAND_INPUT, IMSG_P_COMMAND_UNREAD, IMSG_P_COMMAND_OUTPUT,
						 IMSG_P_COMMAND_EXIT], "frames answered")
		check_eq(got[2][1], imsg_str("nobody"), "the user it ran as")
		check_eq(struct.unpack("<III", got[3][1]), (0, 0, 299), "exit status, timed out, time limit")
		st = os.stat(os.path.join(cmd, "listed.ran"))
		check_eq(st.st_uid, nobody.pw_uid, "owner of the file the command made")

	def unlisted():
		target = "|touch %s/unlisted.ran" % cmd
		refused("alias:command", [target], True,
			"%s is not a command that %s lists (run newaliases)" % (target, d.config["aliases"]))
		check(not os.path.exists(os.path.join(cmd, "unlisted.ran")), "the unlisted command ran")

	def no_pipe():
		refused("inbox", ["a@b.example"], False, 'no pipe handler "inbox" in %s' % d.confpath)

	def option():
		refused("sleeper", ["-oQ/tmp@b.example"], True,
			"\"-oQ/tmp@b.example\" would be an option to the command (it begins with '-')")
		check(not os.path.exists(os.path.join(cmd, "sleeper.pid")), "the sleeper ran")

	def no_mbox():
		refused("mbox:mailbox", ["nobody"], False, "no mbox handler in %s" % d.confpath)

	def ends_handler(request, reply_fd, line=None):
		"""request, with reply_fd as its reply channel, ends the handler
		process (restarted); the parent goes on."""
		mark = d.mark()
		pid = d.child("handler")
		chan = steal_command_channel(pid)
		os.kill(pid, signal.SIGSTOP)
		socket.send_fds(chan, [request], [reply_fd])
		chan.close()
		try:
			if line:
				d.wait_log(re.escape(line), since=mark)
			d.wait_log(r"handler process broke the command protocol \(bad request\): ending it", since=mark)
		finally:
			if proc_alive(pid):
				os.kill(pid, signal.SIGCONT)
		d.wait_children(30, old={"handler": pid})  # each restart waits twice as long as the last
		check(d.running(), "the parent ended")
		qid = d.send(msg=simple_message("after the restart"))
		d.wait_delivered(qid)

	def malformed():
		mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
		with mine, theirs:
			ends_handler(run_request("sleeper", ["a@b"], cut=3), theirs.fileno())

	def file_as_reply():
		with open(os.path.join(d.dir, "not-a-channel"), "w") as f:
			ends_handler(run_request("alias:command", [listed]), f.fileno(),
				     "command request whose reply channel is not a unix seqpacket socket")
		mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
		with mine, theirs:
			ends_handler(run_request("alias:command", [listed]), theirs.fileno())

	def dies_with_handler():
		mark = d.mark()
		qid = d.send(rcpts=["sleep@" + HOSTNAME], msg=simple_message("sleeper"))
		m = d.wait_log(r"%s: handler=sleeper, command started as nobody \(uid \d+\), pid (\d+): " % qid, since=mark)
		sleeper = int(m.group(1))
		wait_for(lambda: os.path.exists(os.path.join(cmd, "sleeper.pid")), 5, "the sleeper to start")
		check(proc_alive(sleeper), "the sleeper runs")
		handler = d.child("handler")
		os.kill(handler, signal.SIGKILL)
		wait_for(lambda: not proc_alive(sleeper), 5, "the sleeper killed with the handler process")
		d.wait_children(30, old={"handler": handler})  # the restarts above doubled the wait

	run_rows([
		("a listed alias command runs, as nobody", listed_runs),
		("an alias command the aliases file does not list is refused", unlisted),
		("an instance that is no pipe handler is refused", no_pipe),
		("a recipient that would be an option is refused", option),
		("a mailbox without an mbox handler is refused", no_mbox),
		("a malformed request ends the handler, which is restarted", malformed),
		("a reply channel that is a file or a stream socket ends the handler", file_as_reply),
		("the commands of a handler process that dies are killed", dies_with_handler),
	])


run(main)
