# laim-mda sends nothing to syslog on a delivery to a user's mailbox.
# It runs as the user, without CAP_SETPCAP: libcap-ng, asked then to
# clear the bounding set too, logs "failed dropping bounding set due to
# not having CAP_SETPCAP" to syslog at each delivery, an error that is
# none. laimd runs in a mount namespace of its own where /dev/log is this
# case's socket (or that socket is /dev/log, on a machine without one), so
# what laim-mda, its child, sends to syslog is read here; a line that the
# wrapper logs with logger(1) before laimd starts shows that it arrives.
import sys
sys.dont_write_bytecode = True
import socket
from harness import *


def main():
	user = local_user()
	d, mail_dir = mbox_laimd()
	path = os.path.join(d.dir, "devlog")
	own = not os.path.lexists("/dev/log")
	if own:
		path = "/dev/log"
	log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
	log.bind(path)
	try:
		os.chmod(path, 0o666)
		probe = "logger -u /dev/log -t laim-test syslog-probe || exit 1"
		if own:
			d.wrap(setup=probe)
		else:
			d.wrap(runner="unshare --mount --propagation private sh -c 'mount --bind %s /dev/log || exit 1; %s; "
				      "exec \"$0\" \"$@\"'" % (path, probe))
		d.start()
		rcpt = "%s@%s" % (user.pw_name, HOSTNAME)
		for subject in ("first", "second"):
			qid = d.send(rcpts=[rcpt], msg=simple_message(subject))
			why = d.wait_log(r"%s: to=<%s>, handler=local, status=delivered[^(]*\((.*)\)$"
					 % (qid, re.escape(rcpt)), 15).group(1)
			check(why.startswith("laim-mda as %s exited with status 0: " % user.pw_name), "the delivery: " + why)
		d.stop()
		lines = []
		log.setblocking(False)
		while True:
			try:
				lines.append(log.recv(65536).decode(errors="replace"))
			except BlockingIOError:
				break
		check(any("syslog-probe" in l for l in lines), "the probe reached the test's syslog socket: %r" % lines)
		check_eq([l for l in lines if "laim-mda" in l], [], "laim-mda's lines in syslog")
	finally:
		log.close()
		if own:
			os.unlink(path)


run(main)
