# Final recipients after /etc/aliases, as sendmail, Postfix and Exim see
# them: one copy per final recipient however many addresses lead to it
# (To: root plus Bcc: postmaster@HOST), but one for each recipient that
# the routes send to other handlers (Carol@* and carol@*, root@localhost
# and root@HOST: each got 250, each keeps its copy); the machine's own
# host name and FQDN are local even when the config sets another
# hostname; and a name
# an alias produces is qualified like the address it came from, so a
# *@domain route sees it. laimd runs in a mount namespace of its own
# where /etc/mailname is empty, as on a machine without one: a mailname
# that names this host (Debian's) would make its FQDN local by itself.
import sys
sys.dont_write_bytecode = True
import socket
from harness import *


def machine_fqdn():
	"""What sendmail qualifies with when there is no mailname: the host name,
	canonicalized (from /etc/hosts) when it has no dot."""
	host = socket.gethostname()
	if "." in host:
		return host
	try:
		return socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)[0][3] or host
	except OSError:
		return host


def without_mailname(d):
	"""Makes start() run laimd in a private mount namespace where
	/etc/mailname, when the machine has one, is an empty file."""
	empty = os.path.join(d.dir, "empty-mailname")
	open(empty, "w").close()
	hide = "[ ! -e /etc/mailname ] || mount --bind %s /etc/mailname || exit 1; exec \"$0\" \"$@\"" % empty
	d.wrap(runner="unshare --mount --propagation private sh -c '%s'" % hide)


def main():
	d = Laimd()
	without_mailname(d)
	with open(d.config["aliases"], "w") as f:
		f.write("ops: alice\n")
	domainbox = d.make_user_dir(os.path.join(d.dir, "domainbox"))
	d.config["handlers"]["domainbox"] = {"type": "maildir", "path": domainbox}
	upper = d.make_user_dir(os.path.join(d.dir, "upper"))
	lower = d.make_user_dir(os.path.join(d.dir, "lower"))
	d.config["handlers"]["upper"] = {"type": "maildir", "path": upper}
	d.config["handlers"]["lower"] = {"type": "maildir", "path": lower}
	d.config["routes"] = [{"match": "Carol@*", "handlers": ["upper"]},
			      {"match": "carol@*", "handlers": ["lower"]},
			      {"match": "*@" + HOSTNAME, "handlers": ["domainbox"]},
			      {"match": "*", "handlers": ["inbox"]}]
	d.start()
	if os.path.exists("/etc/mailname"):
		with open("/proc/%d/root/etc/mailname" % d.proc.pid) as f:
			check_eq(f.read(), "", "/etc/mailname as laimd sees it")

	def one_copy():
		mark = d.mark()
		msg = (b"To: root\nCc: Root@" + HOSTNAME.encode() + b"\nBcc: postmaster@" + HOSTNAME.encode() +
		       b"\nSubject: once\n\nbody\n")
		check_ran(d.sendmail(["-t", "-i"], msg))
		m = d.wait_local_submission(mark)
		check_eq(m.group(4), "1", "nrcpt= of root, Root@%s and postmaster@%s" % (HOSTNAME, HOSTNAME))
		d.wait_removed(m.group(1))
		check_eq(sorted(d.delivered_copies(m.group(1), domainbox)), ["root@" + HOSTNAME], "the copies")

	def routed_apart():
		rcpts = ["Carol@" + HOSTNAME, "carol@" + HOSTNAME, "root@localhost", "root@" + HOSTNAME]
		qid = d.send(rcpts=rcpts, msg=simple_message("apart"))
		check(d.search_log(r"%s: from=<[^>]*>, size=\d+, nrcpt=4," % qid, since=0), "nrcpt=4 for %s" % rcpts)
		d.wait_removed(qid)
		check_eq(sorted(d.delivered_copies(qid, upper)), ["Carol@" + HOSTNAME], "the Carol@* route's copy")
		check_eq(sorted(d.delivered_copies(qid, lower)), ["carol@" + HOSTNAME], "the carol@* route's copy")
		check_eq(sorted(d.delivered_copies(qid)), ["root@localhost"], "the default route's copy")
		check_eq(sorted(d.delivered_copies(qid, domainbox)), ["root@" + HOSTNAME], "the domain route's copy")

	def own_names():
		# No mailname: sendmail qualifies with the FQDN, which the config's
		# hostname does not name; it is still this host, so postmaster is
		# aliased (to root, the Debian default).
		fqdn = machine_fqdn()
		mark = d.mark()
		check_ran(d.sendmail(["postmaster"], b"Subject: fqdn\n\nbody\n",
				     env={"LAIM_MAILNAME": os.path.join(d.dir, "no-mailname")}))
		m = d.wait_local_submission(mark, "root@" + fqdn)
		d.wait_removed(m.group(1))
		check_eq(sorted(d.delivered_copies(m.group(1))), ["root@" + fqdn], "the copy for postmaster@%s" % fqdn)
		short = socket.gethostname().split(".")[0]
		qid = d.send(rcpts=["postmaster@" + short], msg=simple_message("short"))
		d.wait_removed(qid)
		check_eq(sorted(d.delivered_copies(qid)), ["root@" + short], "the copy for postmaster@%s" % short)

	def qualified():
		qid = d.send(rcpts=["ops@" + HOSTNAME], msg=simple_message("ops"))
		d.wait_removed(qid)
		check_eq(sorted(d.delivered_copies(qid, domainbox)), ["alice@" + HOSTNAME], "ops's copy, by the domain route")
		check_eq(d.delivered_copies(qid), {}, "copies in the default route's Maildir")

	run_rows([
		("To: root + Cc: Root@HOST + Bcc: postmaster@HOST: one copy", one_copy),
		("Carol, carol, root@localhost, root@HOST routed apart: four copies", routed_apart),
		("the machine's own name and FQDN are local beside hostname:", own_names),
		("an alias's result is qualified like its address: the *@domain route takes it", qualified),
	])


run(main)
