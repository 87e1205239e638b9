# A large message streams through sendmail: a 24 MiB message (8-bit
# bytes, a 1 MiB line, lone "." lines under -i) is delivered byte for
# byte, and sendmail's peak memory is not more than 4 MiB above what it
# takes for a three-line message (it holds a few MiB, never the message).
# With $TMPDIR on a full file system, a 1 MiB message goes on in memory.
import sys
sys.dont_write_bytecode = True
import subprocess
from harness import *

ROOT = "root@" + HOSTNAME
SIZE = 24 << 20
GROWTH_KB = 4096

# Runs argv with stdin from a file and prints the peak RSS (kB) of the
# children: the file keeps the message out of every process's memory.
PEAK = ("import resource, subprocess, sys\n"
	"with open(sys.argv[1], 'rb') as f:\n"
	"    p = subprocess.run(sys.argv[2:], stdin=f)\n"
	"print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def big_message():
	chunk = (b"caf\xc3\xa9 \xff " + b"z" * 60 + b"\n") * 1000 + b".\n" + b"L" * (1 << 20) + b"\n"
	body = chunk * (SIZE // len(chunk) + 1)
	return b"Subject: large\nTo: root\n\n" + body


def peak_kb(d, path):
	env = dict(d.local_env(), PATH="/usr/bin:/bin", LANG="C.UTF-8", USER="root", LOGNAME="root", HOME="/root")
	r = subprocess.run(["python3", "-c", PEAK, path, sendmail_path(), "-i", "root"], env=env,
			   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40, cwd="/")
	check(r.returncode == 0 and r.stderr == b"", "the measuring wrapper: %r" % (r,))
	code, kb = r.stdout.split()
	check_eq(int(code), 0, "sendmail exit for %s" % path)
	return int(kb)


def main():
	d = Laimd().start()
	small = os.path.join(d.dir, "small")
	large = os.path.join(d.dir, "large")
	with open(small, "wb") as f:
		f.write(b"Subject: small\n\nhi\n")
	msg = big_message()
	with open(large, "wb") as f:
		f.write(msg)

	base = peak_kb(d, small)
	mark = d.mark()
	peak = peak_kb(d, large)
	print("sendmail peak RSS: %d kB for a small message, %d kB for %d bytes" % (base, peak, len(msg)))
	check(peak - base < GROWTH_KB, "sendmail grew by %d kB for a %d MiB message" % (peak - base, SIZE >> 20))
	qid, copies = check_local_delivery(d, mark, ROOT, [ROOT], 0, "root", timeout=30)
	check_passthrough(copies[ROOT], msg, "24 MiB message", added=("date", "message-id", "from"))
	full_tmp(d)


def full_tmp(d):
	"""$TMPDIR on a file system with room for 64 KiB: a 1 MiB message goes
	on in memory and is delivered whole."""
	tmp = os.path.join(d.dir, "small-tmp")
	os.mkdir(tmp)
	subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", tmp], check=True)
	try:
		msg = b"Subject: full tmp\nTo: root\n\n" + b"".join(b"line %d of a message larger than /tmp\n" % i
								       for i in range(30000))
		mark = d.mark()
		r = d.sendmail(["-i", "root"], msg, env={"TMPDIR": tmp})
		check_ran(r)
		qid, copies = check_local_delivery(d, mark, ROOT, [ROOT], 0, "root", timeout=30)
		check_passthrough(copies[ROOT], msg, "a message larger than $TMPDIR", added=("date", "message-id", "from"))
	finally:
		subprocess.run(["umount", tmp], check=True)
	print("a %d-byte message with $TMPDIR on a 64 KiB file system: delivered whole" % len(msg))


run(main)
