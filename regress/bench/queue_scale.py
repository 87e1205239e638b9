#!/usr/bin/python3
# The queue at scale, a handler down for a day: laimd's only handler fails
# every delivery (a Maildir its user cannot write; retry in an hour), and
# Postfix's smtp-source sends 1 KiB messages over 8 reused connections
# until TOTAL (default 100000) are queued. Prints the intake rate as the
# queue grows (commits must not slow down behind failing deliveries), the
# handler process's PSS per queued message, how long `laimctl show queue`
# takes, and how long a restarted laimd takes to load the queue. Runs on a
# fresh ext4 in a private network namespace, as bench.py does; not part of
# make check.
#
#   make bench-queue [BENCH_QUEUE=20000]       (as root, in the build directory)
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import bench  # noqa: E402
from harness import Laimd, laimd_path, wait_for  # noqa: E402

STEP = 20000


def queued(d):
	return len(d.findall_log(r"from=<%s>" % bench.SENDER, 0))


def fill(d, tools, count):
	"""count more messages over 8 reused connections: (accepted, seconds)."""
	sc = bench.Scenario(count, count, 1024, 8, True)
	before = queued(d)
	start = time.monotonic()
	subprocess.run(bench.source_argv(tools, sc, count, d.port), env=tools.env, check=True,
		       stdout=subprocess.DEVNULL, timeout=bench.CLIENT_TIMEOUT)
	took = time.monotonic() - start
	return queued(d) - before, took


def show_queue_time(d):
	"""Seconds `laimctl show queue` takes, and the lines it printed."""
	laimctl = os.path.join(os.path.dirname(laimd_path()), "laimctl")
	start = time.monotonic()
	out = subprocess.run([laimctl, "show", "queue"], env=dict(os.environ, LAIM_CONTROL=d.control_path),
			     stdout=subprocess.PIPE, check=True).stdout
	return time.monotonic() - start, out.count(b"\n")


def restart_load_time(d):
	"""Seconds from laimd's start until its handler process has loaded
	the queue, and how many messages it loaded."""
	d.stop()
	start = time.monotonic()
	d.start(timeout=300)
	m = d.wait_log(r"(\d+) queued messages loaded from the spool", timeout=300)
	return time.monotonic() - start, int(m.group(1))


def measure(tools, total):
	# TCP clients, one source, may hold a third of max_queue_size in open
	# transactions and a third of max_deferred deferred (handler/intake.cpp).
	room = 3 * (total + 1000)
	d = Laimd(name="bench-queue", hostname=bench.HOST, max_queue_size=room, max_deferred=room, retry_initial=3600,
		  retry_max=3600)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"down": {"type": "maildir", "path": os.path.join(blocked, "Maildir")}}
	d.config["routes"] = [{"match": "*", "handlers": ["down"]}]
	bench.at_builtin_paths(d)
	try:
		d.start()
		empty = bench.pss_kb(d.child("handler"))
		print("queued before | intake msg/s (8 reused connections, every delivery failing)")
		n = 0
		while n < total:
			got, took = fill(d, tools, min(STEP, total - n))
			print("%13d | %6.0f" % (n, got / took), flush=True)
			n += got
		wait_for(lambda: len(d.findall_log(r"status=deferred", 0)) >= n, 300, "every first attempt")
		full = bench.pss_kb(d.child("handler"))
		print("handler process PSS: %.1f MiB empty, %.1f MiB with %d queued: %.0f bytes per queued message"
		      % (empty / 1024, full / 1024, n, (full - empty) * 1024 / n))
		took, lines = show_queue_time(d)
		print("laimctl show queue: %.2f s (%d lines)" % (took, lines))
		took, loaded = restart_load_time(d)
		print("restart: %d queued messages loaded %.2f s after laimd started; handler PSS then %.1f MiB"
		      % (loaded, took, bench.pss_kb(d.child("handler")) / 1024))
	finally:
		d.cleanup()


def main():
	total = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
	if os.geteuid() != 0:
		sys.exit("queue_scale.py: run as root")
	tools = bench.Tools(bench.CACHE)
	bench.enter_network_namespace()
	with bench.FreshFileSystem(bench.CACHE):
		measure(tools, total)


main()
