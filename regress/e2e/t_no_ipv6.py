# A host without IPv6 (disable_ipv6 on loopback here, in a private network
# namespace; ipv6.disable=1 at boot on many servers): laimd with no listen:
# key starts all the same, says in its log that it does not listen on
# [::1]:25, and serves 127.0.0.1:25 and the local socket. A listen: entry
# naming [::1] stops the start with the file, line and entry to change.
import sys
sys.dont_write_bytecode = True
from peer_dns import enter_private_network
enter_private_network()

from harness import *


def disable_ipv6():
	for knob in ("all", "default", "lo"):
		with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % knob, "w") as f:
			f.write("1\n")
	with open("/proc/net/if_inet6") as f:
		check_eq(f.read(), "", "IPv6 addresses left in this network namespace")


def main():
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
	try:
		e.start()
		raise Fail("laimd started with [::1] in listen: on a host without IPv6")
	except Fail as err:
		check(re.search(r"exited with status 1 before ready", str(err)), str(err))
	check(e.search_log(r"laimd\.yml:\d+: listen\[1\]: cannot listen on \[::1\]:%d: this host has no IPv6 "
			   r"\(Cannot assign requested address\); remove the entry or enable IPv6$" % e.port),
	      "no error naming listen[1]:\n" + e.log(0))


run(main)
