# Throughput benchmark: a real laimd (as the e2e cases start it) receives
# N small messages over C concurrent loopback SMTP sessions, each message
# committed durably before its 250; prints messages per second and the
# smtp process's resident memory. With "maildir W", the route is a
# maildir instance with W workers whose directory the laim user cannot
# write at first: the messages queue up, then the directory is handed
# over, the queue flushed, and it prints how fast the instance drained
# the queue (each copy fsynced). With SMTP_SINK naming Postfix's smtp-sink
# (apt-get download postfix; dpkg-deb -x; LD_LIBRARY_PATH=.../usr/lib/postfix),
# the same client then runs against it in the same run, and the ratio is
# printed. Not part of `make check`.
#
#   LAIMD=build/check/laimd LAIM_SRCDIR=. python3 regress/bench/smtp_rate.py [N] [C] [maildir W]
import sys
import os
import socket
import subprocess
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.dont_write_bytecode = True
from harness import Laimd, Smtp, port_listening, rss_kb, wait_for  # noqa: E402

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CONNS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
WORKERS = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "maildir" else 0
MESSAGE = b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 12 + b".\r\n"


def client(port, count, errors):
	try:
		with Smtp(port) as c:
			c.ehlo()
			for _ in range(count):
				c.send(b"MAIL FROM:<bench@client.example>\r\nRCPT TO:<root>\r\nDATA\r\n")
				c.expect(250)
				c.expect(250)
				c.expect(354)
				c.send(MESSAGE)
				c.expect(250)
			c.cmd("QUIT", 221)
	except Exception as e:  # reported below, the run goes on
		errors.append(repr(e))


def handlers(d):
	if not WORKERS:
		return {"sink": {"type": "discard"}}
	held = d.make_blocked_dir(os.path.join(d.dir, "held"))  # root's until drain() hands it over
	return {"sink": {"type": "maildir", "path": os.path.join(held, "Maildir"), "workers": WORKERS}}


def drain(d, n):
	"""Hands the Maildir's directory to the laim user, flushes the queue and
	times the delivery of all n queued messages."""
	held = os.path.join(d.dir, "held")
	d.unblock_dir(held)
	start = time.monotonic()
	with socket.socket(socket.AF_UNIX) as c:  # laimctl flush, without an installed laimctl
		c.connect(d.config["control_socket"])
		c.sendall(b"flush\n")
		c.recv(64)
	new = os.path.join(held, "Maildir", "new")
	while (not os.path.isdir(new) or len(os.listdir(new)) < n) and time.monotonic() - start < 600:
		time.sleep(0.01)
	took = time.monotonic() - start
	got = len(os.listdir(new))
	print("maildir, %d workers: %d queued messages delivered in %.2f s: %.0f messages/s"
	      % (WORKERS, got, took, got / took))


def burst(port):
	"""TOTAL messages over CONNS sessions to port: (messages, seconds, errors)."""
	errors = []
	per = TOTAL // CONNS
	threads = [threading.Thread(target=client, args=(port, per, errors)) for _ in range(CONNS)]
	start = time.monotonic()
	for t in threads:
		t.start()
	for t in threads:
		t.join()
	return per * CONNS, time.monotonic() - start, errors


def smtp_sink_rate():
	"""The same burst against Postfix's smtp-sink (accepts and discards)."""
	port = 29925
	sink = subprocess.Popen([os.environ["SMTP_SINK"], "-u", "nobody", "127.0.0.1:%d" % port, "256"])
	try:
		wait_for(lambda: port_listening(port), 5, "smtp-sink listening")
		n, took, errors = burst(port)
	finally:
		sink.kill()
		sink.wait()
	return n / took


def main():
	d = Laimd(name="bench", max_queue_size=100000, routes=[{"match": "*", "handlers": ["sink"]}])
	d.config["handlers"] = handlers(d)
	try:
		d.start()
		smtp = d.child("smtp")
		n, took, errors = burst(d.port)
		print("%d messages over %d sessions in %.2f s: %.0f messages/s (each fsynced before 250)"
		      % (n, CONNS, took, n / took))
		print("smtp process RSS after the run: %d kB" % rss_kb(smtp))
		if WORKERS:
			drain(d, n)
		if os.environ.get("SMTP_SINK"):
			sink = smtp_sink_rate()
			print("smtp-sink: %.0f messages/s; laim/smtp-sink = %.2f" % (sink, n / took / sink))
		if errors:
			print("client errors: %d, first: %s" % (len(errors), errors[0]))
			return 1
	finally:
		d.cleanup()
	return 0


sys.exit(main())
