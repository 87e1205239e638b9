# A step of the system's date (date -s, an NTP step at boot) moves no
# timer: a delivery call is cut after delivery_timeout of time that passed,
# and a deferred message is retried after retry_in, whichever way the
# wall clock jumps meanwhile; so is a pipe handler's command after its
# timeout (the root parent's timer). laimd runs with clock_shift.so preloaded,
# which moves the wall clock of its processes (and no other clock) by the
# seconds in a file this case writes; the "delay=" of the log lines, a
# message's age on the wall clock, shows the step reached the queue.
#
# Forward by 2 hours, just after a call began to hang and a message was
# deferred: on the wall clock the call would time out, the command be
# killed and the retry come at once. Back by 4 hours: the wall clock would hold the retry and the
# next hung call's timeout for hours. Each still comes when due.
import sys
sys.dont_write_bytecode = True
import socket
import struct
import time
from harness import *

HANG = "stuck@test.laim.example"
AWAY = "away@test.laim.example"
KILLED = r"command \(pid \d+\) still running after 3s: killed"


def build_shim(d):
	path = os.path.join(d.dir, "clock_shift.so")
	src = os.path.join(os.environ.get("LAIM_SRCDIR", "."), "regress", "e2e", "clock_shift.c")
	r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", path, src, "-ldl"], stdout=subprocess.PIPE,
			   stderr=subprocess.STDOUT)
	check_eq((r.returncode, r.stdout), (0, b""), "cc clock_shift.c")
	return path


def step(shift_file, seconds):
	with open(shift_file, "r+b") as f:
		f.write(struct.pack("=q", seconds))


def deferred(d, qid, attempt):
	return r"%s: to=<%s>, handler=relay, status=deferred, delay=(-?[0-9.]+), attempt=%d, " % (
		qid, re.escape(AWAY), attempt)


def timed_out(qid):
	return r"%s: handler stuck timed out after 4s" % qid


def main():
	d = Laimd(delivery_timeout=4, retry_initial=3, retry_max=3)
	shift_file = os.path.join(d.dir, "clock.shift")
	with open(shift_file, "wb") as f:
		f.write(struct.pack("=q", 0))
	d.wrap(setup="export LD_PRELOAD=%s LAIM_CLOCK_SHIFT=%s ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}"
		     "verify_asan_link_order=0" % (build_shim(d), shift_file))
	closed = socket.socket()  # bound, never listening: a connection is refused
	closed.bind(("127.0.0.1", 0))
	slow_done = os.path.join(d.dir, "slow.done")  # then the command ends at once
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {
		"stuck": {"type": "probe", "path": probe, "hang_until": probe + "/go", "workers": 2},
		"slowpipe": {"type": "pipe", "user": "nobody", "timeout": 3,
			     "command": ["/bin/sh", "-c", "test -e %s && exec cat >/dev/null; exec sleep 30" % slow_done]},
		"relay": {"type": "smarthost", "host": "127.0.0.1", "port": closed.getsockname()[1], "tls": "none"},
	}
	d.config["routes"] = [{"match": "stuck@*", "handlers": ["stuck"]}, {"match": "stuck2@*", "handlers": ["stuck"]},
			      {"match": "slow@*", "handlers": ["slowpipe"]}, {"match": "*", "handlers": ["relay"]}]
	d.start()  # the probe's calls hang until its hang_until file exists

	hung = d.send(rcpts=[HANG], msg=simple_message("hangs"))
	slow = d.send(rcpts=["slow@test.laim.example"], msg=simple_message("sleeps"))
	away = d.send(rcpts=[AWAY], msg=simple_message("deferred"))
	d.wait_log(deferred(d, away, 1), 10)
	step(shift_file, 2 * 3600)
	t0 = time.monotonic()
	time.sleep(1.5)
	check(not d.search_log(timed_out(hung)), "the hung call timed out at once when the date stepped 2 h forward")
	check(not d.search_log(deferred(d, away, 2)), "the retry came at once when the date stepped 2 h forward")
	check(not d.search_log(KILLED), "the command was killed at once when the date stepped 2 h forward")
	m = d.wait_log(deferred(d, away, 2), 6)
	check(time.monotonic() - t0 >= 1.5, "attempt 2 came before its retry_in")
	check(float(m.group(1)) > 7000, "delay of attempt 2 after the step: %s s, not on the stepped wall clock "
	      "(is clock_shift.so preloaded?)" % m.group(1))
	d.wait_log(timed_out(hung), 6)
	d.wait_log(r"%s: to=<slow@test\.laim\.example>, handler=slowpipe, status=deferred, .*still running after 3s: "
		   r"killed\)$" % slow, 6)
	open(slow_done, "w").close()

	step(shift_file, -2 * 3600)  # 4 hours back
	t1 = time.monotonic()
	hung2 = d.send(rcpts=["stuck2@test.laim.example"], msg=simple_message("hangs too"))
	d.wait_log(deferred(d, away, 3), 8)
	d.wait_log(timed_out(hung2), 10)
	check(time.monotonic() - t1 < 9, "the timeout after the step back took %.1fs" % (time.monotonic() - t1))

	open(probe + "/go", "w").close()
	for qid in (hung, hung2, slow):
		d.wait_removed(qid, 15)
	closed.close()


def arrival_ahead():
	"""A message that arrived while the wall clock was a year ahead (a
	wrong RTC until NTP steps it back) still expires at max_queue_age:
	its age counts at least from when laimd took it."""
	d = Laimd(name="t_clock_step_ahead", retry_initial=1, retry_max=1, max_queue_age=5)
	shift_file = os.path.join(d.dir, "clock.shift")
	with open(shift_file, "wb") as f:
		f.write(struct.pack("=q", 365 * 86400))
	d.wrap(setup="export LD_PRELOAD=%s LAIM_CLOCK_SHIFT=%s ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}"
		     "verify_asan_link_order=0" % (build_shim(d), shift_file))
	probe = d.make_user_dir(os.path.join(d.dir, "probe"))
	d.config["handlers"] = {"p": {"type": "probe", "path": probe, "release": probe + "/release"}}
	d.config["routes"] = [{"match": "*", "handlers": ["p"]}]
	d.start()
	qid = d.send(rcpts=["defer@test.laim.example"], msg=simple_message("from the future"))
	d.wait_log(r"%s: to=<defer@test\.laim\.example>, handler=p, status=deferred, .*attempt=1, " % qid)
	step(shift_file, 0)
	d.wait_log(r"%s: moved to failed/: <defer@test\.laim\.example> handler p: expired after " % qid, 15)


def both():
	main()
	arrival_ahead()


if __name__ == "__main__":
	run(both)
