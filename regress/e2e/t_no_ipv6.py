# A host without IPv6 (disable_ipv6 on loopback here, in a private network
# namespace; ipv6.disable=1 at boot on many servers): laimd with no listen:
# key starts all the same, says in its log that it does not listen on
# [::1]:25, and serves 127.0.0.1:25 and the local socket. A listen: entry
# naming [::1] stops the start with the file, line and entry to change.
# On a host with IPv6, an entry naming an IPv6 address that it does not
# have stops the start with the bind error, not a lack of IPv6.
import sys
sys.dont_write_bytecode = True
from peer_dns import enter_private_network
enter_private_network()

from harness import *
from peer_certs import Certs


def disable_ipv6():
	for knob in ("all", "default", "lo"):
		with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % knob, "w") as f:
			f.write("1\n")
	with open("/proc/net/if_inet6") as f:
		check_eq(f.read(), "", "IPv6 addresses left in this network namespace")


def check_refused(e, host, reason):
	"""laimd e, its listen[1] on host, does not start, and says why: the
	reason (a regular expression) with the file, line and entry."""
	try:
		e.start()
		raise Fail("laimd started with %s in listen:" % host)
	except Fail as err:
		check(re.search(r"exited with status 1 before ready", str(err)), str(err))
	check(e.search_log(r"laimd\.yml:\d+: listen\[1\]: cannot listen on %s:%d: %s$" %
			   (re.escape(host), e.port, reason)),
	      "no error naming listen[1]:\n" + e.log(0))


def unassigned_ipv6():
	with open("/proc/net/if_inet6") as f:
		check(f.read().startswith("00000000000000000000000000000001 "), "no ::1 in this network namespace")
	e = Laimd()
	certs = Certs(os.path.join(e.dir, "certs"))
	users = os.path.join(e.dir, "submit.passwd")
	with open(users, "w") as f:
		f.write("alice:$6$salt$hash\n")
	os.chmod(users, 0o600)
	e.config["listen"] = ["127.0.0.1:{port}", {"addr": "[fd00::99]:{port}", "tls": "implicit", "cert": certs.cert,
						  "key": certs.key, "auth": "required", "users": users}]
	check_refused(e, "[fd00::99]", r"Cannot assign requested address")


def main():
	unassigned_ipv6()
	disable_ipv6()

	d = Laimd(listen=DEFAULT_LISTEN)
	d.port = 25
	d.start()
	d.wait_log(r"not listening on \[::1\]:25: this host has no IPv6 \(Cannot assign requested address\)")
	check(d.search_log(r"listening on 127\.0\.0\.1:25$"), "laimd does not listen on 127.0.0.1:25")
	d.wait_delivered(d.send(msg=simple_message("no ipv6, port 25")))
	with Smtp(unix=d.config["socket"]) as c:
		c.ehlo("localhost")
		qid = c_transaction(c, "local@test.laim.example", ["rcpt@test.laim.example"],
				    simple_message("no ipv6, local socket"))
		c.cmd("QUIT", 221)
	d.wait_delivered(qid)
	d.stop()

	e = Laimd(listen=["127.0.0.1:{port}", "[::1]:{port}"])
	check_refused(e, "[::1]", r"this host has no IPv6 \(Cannot assign requested address\); "
			  r"remove the entry or enable IPv6")


run(main)
