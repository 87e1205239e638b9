# The queue at scale (a handler down for a day): a real laimd whose only
# handler fails every delivery (a Maildir its user cannot write, retry in
# an hour) takes messages from Postfix's smtp-source over 8 reused
# connections until TOTAL are queued. Prints the intake rate while the
# queue grows, the handler process's memory per queued message, the time
# `laimctl show queue` takes, and the time a restarted laimd takes to load
# the queue. Runs in a private network namespace; not part of make check.
#
#   make bench-queue     (or: LAIMD=build/check/laimd LAIM_SRCDIR=.
#                         python3 regress/bench/queue_scale.py [TOTAL])
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.dont_write_bytecode = True
import tools  # noqa: E402
from harness import Laimd, wait_for  # noqa: E402

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
STEP = 20000


def pss_kb(pid):
	with open("/proc/%d/smaps_rollup" % pid) as f:
		return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))


def fill(d, source, count):
	"""count more messages over 8 reused connections: (accepted, seconds)."""
	before = len(d.findall_log(r"from=<bench@"))
	start = time.monotonic()
	source.run(d.port, count, sessions=8, reuse=True)
	took = time.monotonic() - start
	return len(d.findall_log(r"from=<bench@")) - before, took


def laimctl_show_queue(d):
	laimctl = os.path.join(os.path.dirname(d.laimd), "laimctl")
	start = time.monotonic()
	out = subprocess.run([laimctl, "show", "queue"], env=dict(os.environ, **d.local_env()),
			     capture_output=True, check=True).stdout
	return time.monotonic() - start, out.count(b"\n")


def restart_load_time(d):
	d.stop()
	start = time.monotonic()
	d.start(timeout=300)
	m = d.wait_log(r"(\d+) queued messages loaded from the spool", timeout=300)
	return time.monotonic() - start, int(m.group(1))


def main():
	source = tools.PostfixTools()
	d = Laimd(name="queue-scale", max_queue_size=TOTAL + 1000, retry_initial=3600, retry_max=3600)
	blocked = d.make_blocked_dir(os.path.join(d.dir, "blocked"))
	d.config["handlers"] = {"down": {"type": "maildir", "path": os.path.join(blocked, "Maildir")}}
	d.config["routes"] = [{"match": "*", "handlers": ["down"]}]
	try:
		d.start()
		handler = d.child("handler")
		base = pss_kb(handler)
		queued = 0
		print("queued before  intake (8 reused connections, every delivery failing)")
		while queued < TOTAL:
			n, took = fill(d, source, min(STEP, TOTAL - queued))
			print("%13d  %6.0f msg/s" % (queued, n / took))
			queued += n
		wait_for(lambda: len(d.findall_log(r"status=deferred")) >= queued, 120, "first attempts")
		grown = pss_kb(handler)
		print("handler PSS: %d KiB empty, %d KiB with %d queued: %.0f bytes per queued message"
		      % (base, grown, queued, (grown - base) * 1024 / queued))
		took, lines = laimctl_show_queue(d)
		print("laimctl show queue: %.2f s for %d lines" % (took, lines))
		took, loaded = restart_load_time(d)
		print("restart: %d queued messages loaded %.2f s after laimd started" % (loaded, took))
		print("handler PSS after the restart: %d KiB" % pss_kb(d.child("handler")))
	finally:
		d.cleanup()


tools.in_private_network(main)
