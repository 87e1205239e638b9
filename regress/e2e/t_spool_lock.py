# One laimd per spool: a second laimd on the spool of a running one (its
# config differs only in listen:, as "laimd -d -v -f test.yml" while the
# service runs) exits 1 naming the spool and the first one's pid, before
# it binds a socket or touches a file: the first keeps its sockets, its
# queue and the message in DATA, which it answers 250. The handler
# process holds the lock too: a handler left by a parent killed -9 still
# keeps a second laimd out; once it is gone, a laimd starts on the spool
# and delivers each message once.
import sys
sys.dont_write_bytecode = True
import os
import re
import signal
import subprocess
from harness import *


def second_start(d2):
	"""Runs the second laimd; returns its exit status and output. One
	that still runs after 10 s took the spool: it and its children are
	killed."""
	p = subprocess.Popen([d2.laimd, "-d", "-f", d2.confpath], stdin=subprocess.DEVNULL,
			     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
	try:
		out = p.communicate(timeout=10)[0]
	except subprocess.TimeoutExpired:
		os.killpg(p.pid, signal.SIGKILL)
		out = p.communicate()[0]
		raise Fail("a second laimd runs on the spool of the first:\n%s" % out.decode(errors="replace"))
	return p.returncode, out.decode(errors="replace")


def fds_to(pid, path):
	return [fd for fd in os.listdir("/proc/%d/fd" % pid) if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path]


def main():
	d1 = Laimd("first")
	blocked = d1.block_inbox()
	d1.start()
	sent = {}
	for i in range(2):
		msg = varied_message("queued %d" % i, 2000)
		sent[d1.send(msg=msg)] = msg
	c = d1.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<sender@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	c.cmd("DATA", 354)
	in_data = varied_message("in DATA across the second start", 2000)
	c.send(dot_stuff(in_data)[:500])
	wait_for(lambda: d1.pending_files(), 5, "the pending file of the message in DATA")
	pending = d1.pending_files()

	lock = os.path.join(d1.spool, "lock")
	st = os.lstat(lock)
	check_eq((st.st_uid, st.st_nlink), (0, 1), "owner and links of %s" % lock)
	check_eq(open(lock).read(), "%d\n" % d1.pid, "contents of %s" % lock)
	kids = d1.children()
	check(fds_to(kids["handler"], lock), "the handler process does not hold %s" % lock)
	check_eq(fds_to(kids["smtp"], lock), [], "descriptors of the smtp process to %s" % lock)

	sockets = [d1.config["socket"], d1.config["control_socket"]]
	inodes = [os.stat(s).st_ino for s in sockets]
	d2 = Laimd("second", spool=d1.spool, socket=sockets[0], control_socket=sockets[1],
		   aliases=d1.config["aliases"], handlers=dict(d1.config["handlers"]))
	d2.write_config()
	status, out = second_start(d2)
	check_eq(status, 1, "exit status of a second laimd on the spool; its output:\n%s" % out)
	check(re.search(r"^laimd\[\d+\]: %s is in use by laimd pid %d; stop it first$" % (re.escape(d1.spool), d1.pid),
			out, re.M), "no message naming the spool and pid %d:\n%s" % (d1.pid, out))
	check("listening on" not in out, "the second laimd bound a socket:\n%s" % out)
	check_eq([os.stat(s).st_ino for s in sockets], inodes, "inodes of the first laimd's sockets")
	check_eq(d1.committed_files(), sorted(sent), "committed files after the second start")
	check_eq(d1.pending_files(), pending, "pending files after the second start")
	with Smtp(unix=sockets[0]) as local:
		local.cmd("QUIT", 221)

	c.send(dot_stuff(in_data)[500:] + b".\r\n")
	sent[queue_id(c.expect(250))] = in_data
	c.close()
	check_eq(d1.committed_files(), sorted(sent), "committed files")

	# The parent and smtp killed -9, the handler stopped on its way.
	handler = kids["handler"]
	os.kill(handler, signal.SIGSTOP)
	os.kill(kids["smtp"], signal.SIGKILL)
	os.kill(d1.pid, signal.SIGKILL)
	d1.proc.wait(10)
	status, out = second_start(d2)
	check_eq(status, 1, "exit status with the first's handler left; output:\n%s" % out)
	check(re.search(r"^laimd\[\d+\]: %s is in use by a process left by laimd pid %d, which ended; stop it first$" %
			(re.escape(d1.spool), d1.pid), out, re.M),
	      "no message naming the spool and the ended pid %d:\n%s" % (d1.pid, out))
	os.kill(handler, signal.SIGKILL)
	wait_for(lambda: not proc_alive(handler), 10, "the handler process to die")

	d1.unblock_dir(blocked)
	d2.start()
	for qid in sent:
		d2.wait_delivered(qid, "rcpt@test.laim.example")
	check_delivered_exactly(d2, sent, blocked)
	check_eq(d2.stop(), 0, "exit status of the second laimd")


run(main)
