# The spool belongs to the unprivileged user, so root must never follow a
# link planted there: with spool/failed replaced by a symbolic link to a
# root-owned directory, laimd refuses to start and the directory keeps its
# owner and mode; so for spool/lock, a hard link to a file of root's. A
# spool directory that the user does not own and that is
# not empty (a typo naming a system directory) is refused as well.
import sys
sys.dont_write_bytecode = True
import os
import subprocess
from harness import *


def main():
	d = Laimd()
	target = os.path.join(d.dir, "precious")
	os.mkdir(target, 0o755)
	os.makedirs(os.path.join(d.spool, "queue"))
	os.chown(d.spool, d.uid, d.gid)  # the user's spool, where it planted the link
	os.symlink(target, os.path.join(d.spool, "failed"))
	d.write_config()
	r = subprocess.run([d.laimd, "-d", "-f", d.confpath], stdin=subprocess.DEVNULL,
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode != 0, "laimd started on a spool holding a symbolic link:\n%s" % out)
	check("failed" in out and "symbolic link" in out, "no clear error naming spool/failed:\n%s" % out)
	st = os.lstat(target)
	check_eq((st.st_uid, st.st_gid, st.st_mode & 0o7777), (0, 0, 0o755), "owner and mode of the link's target")

	# The same for the spool's own parent: writable by others, refused.
	os.unlink(os.path.join(d.spool, "failed"))
	os.chmod(d.dir, 0o777)
	r = subprocess.run([d.laimd, "-d", "-f", d.confpath], stdin=subprocess.DEVNULL,
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode != 0 and "parent directory" in out,
	      "laimd accepted a spool in a directory writable by others:\n%s" % out)
	os.chmod(d.dir, 0o755)

	# spool/lock, which root opens to write its pid, planted as a hard
	# link to a file of root's: refused, and the file left as it was.
	# (The link of failed/ back in place ends a start that took it.)
	os.symlink(target, os.path.join(d.spool, "failed"))
	precious = os.path.join(d.dir, "precious-file")
	with open(precious, "w") as f:
		f.write("keep\n")
	os.chmod(precious, 0o600)
	lock = os.path.join(d.spool, "lock")
	if os.path.lexists(lock):
		os.unlink(lock)
	os.link(precious, lock)
	r = subprocess.run([d.laimd, "-d", "-f", d.confpath], stdin=subprocess.DEVNULL,
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode != 0 and "lock is not a file of root's with one link" in out,
	      "laimd took a hard link for its lock file:\n%s" % out)
	check_eq((open(precious).read(), os.stat(precious).st_mode & 0o7777), ("keep\n", 0o600),
		 "contents and mode of the link's target")

	# A spool whose parent is missing: said so, not blamed on an owner.
	d.config["spool"] = os.path.join(d.dir, "missing", "spool")
	d.write_config()
	r = subprocess.run([d.laimd, "-d", "-f", d.confpath], stdin=subprocess.DEVNULL,
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode != 0 and re.search(r"its parent directory \S+/missing/: No such file or directory", out),
	      "no clear error for a spool whose parent is missing:\n%s" % out)

	# A directory laimd's user does not own, not empty (a typo such as
	# "spool: /var/spool"): refused, and left as it was.
	other = os.path.join(d.dir, "var-spool")
	os.makedirs(os.path.join(other, "cron"), 0o755)
	d.config["spool"] = other
	d.write_config()
	r = subprocess.run([d.laimd, "-d", "-f", d.confpath], stdin=subprocess.DEVNULL,
			   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
	out = r.stdout.decode(errors="replace")
	check(r.returncode != 0 and "does not own, and not empty" in out,
	      "laimd took a directory it does not own:\n%s" % out)
	st = os.lstat(other)
	check_eq((st.st_uid, st.st_mode & 0o7777, sorted(os.listdir(other))), (0, 0o755, ["cron"]),
		 "owner, mode and entries of that directory")


run(main)
