# Every listener serves: 127.0.0.1, [::1] and the local submission unix
# socket, which any local user may connect to and where the daemon learns
# the client's uid (SO_PEERCRED) and names it in the Received: header.
import sys
sys.dont_write_bytecode = True
import stat
from harness import *


def unix_transaction(sock, tag):
	with Smtp(unix=sock) as c:
		c.ehlo("localhost")
		qid = c_transaction(c, "local@test.laim.example", ["rcpt@test.laim.example"], simple_message(tag))
		c.cmd("QUIT", 221)
	return qid


def received_of(d, qid):
	for m in maildir_messages(d.maildir):
		received = split_delivered(m)[2]
		if re.search(rb"\bid %s\b" % qid.encode(), received):
			return re.sub(rb"\r\n[ \t]+", b" ", received).decode()
	raise Fail("no delivered copy of %s" % qid)


def check_nodelay(d, c):
	"""The session's socket in the smtp process has TCP_NODELAY (from its
	listener): replies that follow each other wait for no ACK."""
	port = c.sock.getsockname()[1]
	smtp = d.child("smtp")
	for fd in os.listdir("/proc/%d/fd" % smtp):
		try:
			if not os.readlink("/proc/%d/fd/%s" % (smtp, fd)).startswith("socket:"):
				continue
			s = steal_fd(smtp, int(fd))
		except (FileNotFoundError, Fail):
			continue
		with s:
			if s.type == socket.SOCK_STREAM and s.family == socket.AF_INET6 and \
			   not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) and s.getpeername()[1] == port:
				check_eq(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1, "TCP_NODELAY of the session")
				return
	raise Fail("no socket of the session in the smtp process")


def main():
	d = Laimd(listen=["127.0.0.1:{port}", "[::1]:{port}"]).start()
	q4 = d.send(msg=simple_message("v4"))
	with Smtp(d.port, host="::1") as c:
		c.ehlo()
		check_nodelay(d, c)
		q6 = c_transaction(c, "a@client.example", ["rcpt@test.laim.example"], simple_message("v6"))
		c.cmd("QUIT", 221)

	sock = d.config["socket"]
	st = os.stat(sock)
	check(stat.S_ISSOCK(st.st_mode), "%s is not a socket" % sock)
	qroot = unix_transaction(sock, "unix root")
	quser = as_user(pwd.getpwnam(TEST_USER), lambda: unix_transaction(sock, "unix user"))
	check(re.fullmatch(QID_RE, quser), "transaction as %s: %r" % (TEST_USER, quser))

	for q in (q4, q6, qroot, quser):
		d.wait_removed(q)
	check("(127.0.0.1)" in received_of(d, q4), "Received: of the IPv4 message: %r" % received_of(d, q4))
	check("(::1)" in received_of(d, q6) or "(IPv6:::1)" in received_of(d, q6),
	      "Received: of the IPv6 message: %r" % received_of(d, q6))
	check(re.search(r"\buid 0\b", received_of(d, qroot)), "Received: via the socket as root: %r" % received_of(d, qroot))
	check(re.search(r"\buid %d\b" % d.uid, received_of(d, quser)),
	      "Received: via the socket as %s: %r" % (TEST_USER, received_of(d, quser)))
	check_eq(len(maildir_files(d.maildir)), 4, "messages delivered")
	check_eq(stat.S_IMODE(st.st_mode), 0o666, "mode of %s" % sock)
	socket_dirs(d)


def socket_dirs(d):
	"""laimd will not start with its socket in a directory that someone
	other than root could rename a file in: not root's, or writable by
	group or others without the sticky bit. A sticky one (as /tmp) is
	fine."""
	check_eq(d.stop(), 0, "laimd exit status")
	user = pwd.getpwnam(TEST_USER).pw_uid
	sockdir = os.path.join(d.dir, "sockets")
	os.mkdir(sockdir)
	d.config["socket"] = os.path.join(sockdir, "submit.sock")
	for uid, mode, why in ((user, 0o755, "belongs to uid %d, not root" % user),
			       (0, 0o777, r"is writable by group or others \(mode 0777\)"),
			       (0, 0o775, r"is writable by group or others \(mode 0775\)")):
		os.chown(sockdir, uid, 0)
		os.chmod(sockdir, mode)
		try:
			d.start()
			d.stop()
			failed = None
		except Fail as e:
			failed = str(e)
		check(failed and re.search(r"laimd\[\d+\]: socket %s: its directory %s %s: another socket could take its place" %
					   (re.escape(d.config["socket"]), re.escape(sockdir), why), failed),
		      "socket directory of uid %d, mode %o: %r" % (uid, mode, failed))
	os.chmod(sockdir, 0o1777)
	d.start()
	check_eq(stat.S_IMODE(os.stat(d.config["socket"]).st_mode), 0o666, "mode of the socket in a sticky directory")


run(main)
