# SIGTERM: the daemon stops accepting, lets a session in progress finish
# its transaction (then 421), exits 0; a message committed but not yet
# delivered stays in queue/ and is delivered at the next start, byte for byte as sent.
# A stop held open by a slow delivery refuses new clients at once (TCP,
# sendmail, laimctl) instead of leaving them to wait for its end.
import sys
sys.dont_write_bytecode = True
import signal
import socket
import time
from harness import *


def main():
	d = Laimd()
	blocked = d.block_inbox()
	d.start()

	# A committed message the handler cannot deliver yet.
	sent = {}
	msg = varied_message("queued before SIGTERM")
	queued = d.send(msg=msg)
	sent[queued] = msg
	d.wait_log(r"%s: to=<[^>]*>, handler=inbox, status=deferred" % queued)
	check_eq(d.spool_files("queue"), [queued], "queue/ before SIGTERM")

	# A session in the middle of a transaction when SIGTERM arrives.
	c = d.smtp()
	c.ehlo()
	c.cmd("MAIL FROM:<inflight@client.example>", 250)
	c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
	d.send_signal(signal.SIGTERM)
	d.wait_log(r"received SIGTERM, shutting down$")
	c.cmd("DATA", 354)
	msg = varied_message("in flight")
	c.send(data_terminated(msg))
	inflight = queue_id(c.expect(250, what="end of data after SIGTERM"))
	sent[inflight] = msg
	r = c.cmd("NOOP")
	check_eq(r.code, 421, "command after the transaction during shutdown (%r)" % r)
	check(c.wait_closed(5), "session not closed after 421")
	c.close()

	try:
		status = d.proc.wait(20)
	except subprocess.TimeoutExpired:
		raise Fail("laimd did not exit within 20 s of SIGTERM")
	check_eq(status, 0, "exit status after SIGTERM")
	wait_for(lambda: not d._leftovers(), 10, "children to exit")
	check(not port_listening(d.port), "port still listening after exit")
	check_eq(sorted(d.spool_files("queue")), sorted([queued, inflight]), "queue/ after the shutdown")

	# Next start, with the Maildir writable: both are delivered.
	d.unblock_dir(blocked)
	d.start()
	d.wait_removed(queued)
	d.wait_removed(inflight)
	check_delivered_exactly(d, sent, blocked)
	check_eq(d.spool_files("queue"), [], "queue/ at the end")
	check_eq(d.stop(), 0, "exit status of the second run")


def idle_sessions():
	"""An idle session gets 421 4.3.2 at once; new connections are refused."""
	d = Laimd(name="t_sigterm_idle")
	d.start()
	c = d.smtp()
	c.ehlo()
	t0 = time.monotonic()
	d.send_signal(signal.SIGTERM)
	r = c.reply(10)
	check(r.code == 421, "idle session at SIGTERM: expected 421, got %r" % r)
	check(c.wait_closed(5), "idle session not closed after 421")
	c.close()
	check_eq(d.proc.wait(20), 0, "exit status after SIGTERM")
	check(time.monotonic() - t0 < 15, "shutdown with an idle session took %.1fs" % (time.monotonic() - t0))
	try:
		socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
		raise Fail("connection accepted after the daemon exited")
	except ConnectionRefusedError:
		pass


SLOW = 6  # seconds the slow delivery takes


def slow_delivery():
	"""A stop held open by a slow delivery serves no new client, and
	makes none wait: a TCP connection is refused, sendmail falls back to
	offline/ at once, laimctl says laimd is not running; the delivery
	still ends, delivered once."""
	d = Laimd(name="t_sigterm_slow", delivery_timeout=60)
	d.config["handlers"] = {"slow": {"type": "pipe", "user": "nobody",
					 "command": ["/bin/sh", "-c", "cat >/dev/null; sleep %d" % SLOW]}}
	d.config["routes"] = [{"match": "*", "handlers": ["slow"]}]
	d.start()
	qid = d.send()
	d.wait_log(r"%s: handler=slow, command started as nobody" % qid)
	t0 = time.monotonic()
	d.send_signal(signal.SIGTERM)
	d.wait_log(r"smtp process exited with status 0", 5)
	try:
		socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
		raise Fail("TCP connection accepted while laimd stops")
	except ConnectionRefusedError:
		pass
	r = d.sendmail(["rcpt@test.laim.example"], b"Subject: during the stop\n\nx\n", timeout=SLOW * 3)
	check_eq(r.returncode, 0, "sendmail's exit status during the stop (%r)" % r.stderr)
	check(r.elapsed < 2, "sendmail waited %.1fs for a stopping laimd" % r.elapsed)
	check_eq(len(d.spool_files("offline")), 1, "files in offline/ after sendmail during the stop")
	r = d.laimctl(["show", "queue"], timeout=SLOW * 3)
	check_eq(r.returncode, 69, "laimctl's exit status during the stop (%r)" % r.stderr)
	check(r.elapsed < 2, "laimctl waited %.1fs for a stopping laimd" % r.elapsed)
	check(d.running(), "laimd exited before the slow delivery ended: the clients did not meet a stop")
	check_eq(d.proc.wait(SLOW + 20), 0, "exit status after SIGTERM")
	check(time.monotonic() - t0 >= SLOW - 1, "laimd exited before the slow delivery could end")
	delivered = d.findall_log(r"%s: to=<[^>]*>, handler=slow, status=(\w+)" % qid)
	check_eq([m.group(1) for m in delivered], ["delivered"], "ends of the slow delivery")
	check_eq(d.spool_files("queue"), [], "queue/ after the stop")


def both():
	main()
	idle_sessions()
	slow_delivery()


run(both)
