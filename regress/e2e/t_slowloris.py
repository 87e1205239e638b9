# Slowloris: max_sessions (100) network clients that sit idle or send a
# byte a second hold every network session; the next one gets 421 4.3.2.
# Local submission is not locked out: the local socket has sessions of
# its own beyond max_sessions (smtp.cpp, LOCAL_RESERVE), so sendmail
# delivers over it at once, not through its offline fallback (which this
# case disables, LAIM_DROP=/bin/false, so that a fallback fails it). When
# the slow clients go, network clients are served again.
import sys
sys.dont_write_bytecode = True
import threading
import time
from harness import *

SESSIONS = 100


def drip(clients, stop):
	"""One byte a second to each client, until stop is set."""
	while not stop.wait(1):
		for c in clients:
			try:
				c.send(b"X")
			except OSError:
				pass


def main():
	d = Laimd(max_sessions=SESSIONS, timeout=300)
	d.start()
	clients = [d.smtp() for _ in range(SESSIONS)]  # each read its 220
	slow = clients[SESSIONS // 2:]
	stop = threading.Event()
	dripping = threading.Thread(target=drip, args=(slow, stop), daemon=True)
	dripping.start()
	try:
		mark = d.mark()
		extra = d.smtp(greet=False)
		r = extra.reply(5)
		check(r.code == 421 and r.lines[-1].startswith("421 4.3.2 "), "network client %d: %r" % (SESSIONS + 1, r))
		extra.close()
		d.wait_log(r"max_sessions \(%d\) reached: refused a client on 127\.0\.0\.1:%d$" % (SESSIONS, d.port),
			   since=mark)

		msg = (b"From: root@test.laim.example\nTo: rcpt@test.laim.example\nSubject: while the network is full\n"
		       b"Date: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <slowloris@test.laim.example>\n\n"
		       b"through the local socket\n")
		mark = d.mark()
		r = d.sendmail(["rcpt@test.laim.example"], stdin=msg, env={"LAIM_DROP": "/bin/false"}, timeout=15)
		check_ran(r)
		check(r.elapsed < 5, "sendmail took %.1fs beside %d slow clients" % (r.elapsed, SESSIONS))
		m = d.wait_local_submission(mark)
		check(m.group(6) is None, "the message came through offline/, not the socket")
		qid = m.group(1)
		d.wait_removed(qid)
		copies = d.delivered_copies(qid)
		check_eq(sorted(copies), ["rcpt@test.laim.example"], "recipients of the sendmail message")
		check_passthrough(copies["rcpt@test.laim.example"][2], msg, "the message sendmail submitted")
		check(not any(c.wait_closed(0.01) for c in clients), "a slow or idle client was disconnected")
	finally:
		stop.set()
		dripping.join(5)
	for c in clients:
		c.close()

	def served():
		try:
			return d.send()
		except (Fail, OSError):
			return None
	d.wait_removed(wait_for(served, 10, "a network client to be served again"))
	check(d.running(), "the parent died")


run(main)
