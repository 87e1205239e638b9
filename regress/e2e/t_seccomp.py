# A seccomp violation in the smtp process (the XSECCOMP command of test
# builds makes it call a forbidden syscall): the kernel kills it with
# SIGSYS, the parent logs it as a seccomp violation and restarts it, and
# the daemon keeps serving. The handler process cannot start a program
# (commands run from the parent): the probe handler's exec recipient gets
# EPERM from execve.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd()
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"]["probe"] = {"type": "probe", "path": probe}
	d.config["routes"] = [{"match": "exec@*", "handlers": ["probe"]}, {"match": "*", "handlers": ["inbox"]}]
	d.start()
	old = d.children()
	with d.smtp() as c:
		c.ehlo()
		c.send("XSECCOMP\r\n")
		check(c.wait_closed(10), "connection still open after XSECCOMP")
		check(b"500" not in c.buf, "XSECCOMP unknown: is laimd configured with --enable-seccomp-trigger? %r" % c.buf)
	m = d.wait_log(r"smtp process \(pid (\d+)\) killed by signal SIGSYS \(seccomp violation\); restarting in [0-9.]+s$")
	check_eq(int(m.group(1)), old["smtp"], "pid in the seccomp log line")
	wait_for(lambda: not proc_alive(old["smtp"]), 5, "the old smtp process to be gone")
	new = d.wait_children(15, old={"smtp": old["smtp"]})
	check_eq(new["handler"], old["handler"], "handler pid (it must not be restarted)")
	st = confined_status(new["smtp"])
	check_eq(st["NoNewPrivs"], "1", "NoNewPrivs of the restarted smtp")
	check(d.running(), "the parent died")

	qid = d.send(msg=simple_message("after seccomp"))
	d.wait_removed(qid)
	check_eq(len(maildir_files(d.maildir)), 1, "messages delivered after the restart")

	qid = d.send(rcpts=["exec@" + HOSTNAME], msg=simple_message("exec"))
	d.wait_log(r"%s: to=<exec@%s>, handler=probe, status=failed \(probe: exec /bin/true: Operation not permitted\)$"
		   % (qid, re.escape(HOSTNAME)))


run(main)
