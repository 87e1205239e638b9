# GMime is not linked into laimd: the handler process loads
# libgmime-3.0.so.0 (and GObject, GIO, GPGME... with it) on its first
# parse, after its sandbox is in place (handler/api/gmime.h). No process
# maps it before that, the parent and smtp never do. When the library
# cannot be loaded, a delivery that parses is deferred with dlopen's
# reason and kept; one that does not parse still goes; once the library is
# back, the next retry loads it and delivers, without a restart.
import sys
sys.dont_write_bytecode = True
import glob
from harness import *

H = "test.laim.example"
# A multipart message: the log handler's line shows its decoded subject.
MSG = (b"Subject: =?UTF-8?B?w6l0w6k=?= and =?ISO-8859-1?Q?r=E9sum=E9?=\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
       b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n--b--\r\n")
SUBJECT = "\u00e9t\u00e9 and r\u00e9sum\u00e9"
LIBS = ("libgmime-3.0.so", "libgobject-2.0.so", "libgio-2.0.so", "libgpgme.so")


def maps(pid):
	with open("/proc/%d/maps" % pid) as f:
		return f.read()


def check_mapped(d, handler_maps):
	"""GMime and what it pulls in: mapped by the handler process when
	handler_maps, never by the parent or smtp."""
	kids = d.wait_children()
	for name, pid in (("parent", d.pid), ("smtp", kids["smtp"]), ("handler", kids["handler"])):
		text = maps(pid)
		for lib in LIBS:
			check_eq(lib in text, handler_maps and name == "handler", "%s mapped by the %s process" % (lib, name))


def audit_line(d, qid, timeout=10):
	return d.wait_log(r"%s: handler=audit, from=<sender@client\.example>, to=<audit@%s>, size=\d+, subject=(.*)$" %
			  (qid, re.escape(H)), timeout, since=0)


def main():
	d = Laimd()
	d.config["handlers"] = {"audit": {"type": "log"}, "trash": {"type": "discard"}}
	d.config["routes"] = [{"match": "audit@*", "handlers": ["audit"]}, {"match": "*", "handlers": ["trash"]}]
	d.start()
	check_mapped(d, False)
	q1 = d.send(rcpts=["audit@" + H], msg=MSG)
	check_eq(audit_line(d, q1).group(1), SUBJECT, "decoded subject, GMime loaded by the sandboxed handler")
	d.wait_delivered(q1)
	check_mapped(d, True)
	d.stop()

	# The library's file hidden behind /dev/null in a mount namespace of
	# laimd's own: dlopen fails as for a half-removed package.
	libs = glob.glob("/usr/lib/*/libgmime-3.0.so.0") + glob.glob("/lib/*/libgmime-3.0.so.0")
	check(libs, "no libgmime-3.0.so.0 (install libgmime-3.0-0)")
	real = os.path.realpath(libs[0])
	d.wrap(runner="unshare -m --propagation private sh -c 'mount --bind /dev/null %s && exec \"$0\" \"$@\"'" % real)
	d.start()
	handler = d.child("handler")
	q2 = d.send(rcpts=["audit@" + H], msg=MSG)
	for attempt in (1, 2):
		d.wait_log(r"%s: to=<audit@%s>, handler=audit, status=deferred, .*attempt=%d, .*"
			   r"\(cannot load GMime: \S*libgmime-3\.0\.so\.0: file too short\)$" % (q2, re.escape(H), attempt), 15)
	q3 = d.send(rcpts=["else@" + H], msg=MSG)
	d.wait_delivered(q3, "else@" + H)
	d.wait_removed(q3)
	check_eq(d.child("handler"), handler, "the handler process after the failed loads")
	check_eq(d.spool_files("queue"), [q2], "queue/ while GMime is missing")
	check(not d.search_log(r"%s: handler=audit" % q2, 0), "the log handler ran without GMime")
	check_mapped(d, False)

	# The library back (the next retry loads it, no restart needed).
	subprocess.run(["nsenter", "-t", str(handler), "-m", "umount", real], check=True, timeout=10)
	check_eq(audit_line(d, q2, 20).group(1), SUBJECT, "the deferred message, GMime back")
	d.wait_delivered(q2, "audit@" + H)
	d.wait_removed(q2)
	check_eq(d.child("handler"), handler, "the handler process at the end")
	check_mapped(d, True)


run(main)
