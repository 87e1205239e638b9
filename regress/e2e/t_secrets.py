# Secret files named by handler options: the root parent reads them (the
# handler process, as the laim user, never could) and refuses one that is
# not root's or that others may read, naming file and line, under
# `laimd -n` and on SIGHUP; the bytes reach the handler, at start and after
# a reload, and never the log or laimd -n's output. The smtp process, which
# faces the network, holds no handler secret in its memory: neither a
# secret file's bytes nor a webhook's inline token or header value from
# the config, at start and after SIGHUP; the handler process still sends
# them.
import sys
sys.dont_write_bytecode = True
import signal
import subprocess
from harness import *
from peer_certs import Certs
from peer_https import HttpsPeer
from tls_util import secrets_in_memory

H = "test.laim.example"
SECRET = "s3cr3t-Token-4711"
RENEWED = "renewed-Token-0815"
# Written in the config: (token, header value) at start, then after SIGHUP.
INLINE = [("inline-Token-9f3a1c", "HdrKey-77c0ffee12"), ("inline-Token-5e8d2b", "HdrKey-0ddba11a34")]


def put_secret(path, text, mode=0o600, owner=(0, 0)):
	with open(path, "w") as f:
		f.write(text + "\n")
	os.chown(path, *owner)
	os.chmod(path, mode)


def credentials_line(d):
	with open(d.confpath) as f:
		for n, line in enumerate(f, 1):
			if line.strip().startswith("credentials:"):
				return n
	raise Fail("no credentials: line in %s" % d.confpath)


def hook_sends(d, peer, n, token, header):
	"""The handler process sends the webhook's token and header (request n)."""
	qid = d.send(rcpts=["hook@" + H])
	d.wait_log(r"%s: to=<hook@%s>, handler=hook, status=delivered" % (qid, re.escape(H)))
	req = peer.wait_requests("/hook", n)[n - 1]
	check_eq((req.header("Authorization"), req.header("X-Api-Key")), (["Bearer " + token], [header]),
		 "the webhook's token and header, request %d" % n)


def smtp_holds_nothing(d, secrets, when):
	"""No secret of the config or of a secret file in the smtp process's
	memory; the parent's holds some, so the search finds them. Its stack
	is not searched: the vector registers it inherits from the parent
	may still hold pieces of the config text, which get saved there."""
	check(secrets_in_memory(d.pid, secrets), "the parent holds no secret %s: the memory check finds nothing" % when)
	found = secrets_in_memory(d.child("smtp"), secrets, skip=("[stack]",))
	check(not found, "the smtp process's memory holds %s %s" % (sorted(found), when))


def main():
	# The memory search cannot tell what the smtp process holds from what
	# the parent had freed before the fork (its parse's temporaries):
	# glibc's malloc reuses such chunks, ASan's quarantine keeps them whole
	# unless told to fill them. In a sanitizer build they are filled, so
	# that the search sees what this case is about.
	os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
							     "max_free_fill_size=16777216"]))
	d = Laimd()
	out = d.make_user_dir(os.path.join(d.dir, "probe"))
	secret = os.path.join(d.dir, "relay.secret")
	certs = Certs(os.path.join(d.dir, "certs"))
	peer = HttpsPeer(certs, {"/hook": (200, {}, b"")})

	def hook(token, header):
		return {"type": "webhook", "url": peer.url("/hook", "localhost"), "ca_file": certs.ca, "format": "json",
			"token": token, "headers": ["X-Api-Key: " + header]}
	d.config["handlers"] = {"relay": {"type": "probe", "path": out, "credentials": secret}, "hook": hook(*INLINE[0])}
	d.config["routes"] = [{"match": "hook@*", "handlers": ["hook"]}, {"match": "*", "handlers": ["relay"]}]
	d.write_config()
	line = credentials_line(d)
	uid, gid = test_ids()

	refused = [
		("mode 0644", 0o644, (0, 0), "not readable by others.*mode 0644"),
		("mode 0602", 0o602, (0, 0), "mode 0602"),
		("group-writable", 0o660, (0, 0), "mode 0660"),
		("owned by the laim user", 0o600, (uid, gid), "owned by root.*uid %d" % uid),
	]
	for what, mode, owner, why in refused:
		put_secret(secret, SECRET, mode, owner)
		r = laimd_n(d.confpath)
		err = r.stderr.decode()
		check_eq(r.returncode, 1, "laimd -n exit status with a secret %s" % what)
		check(re.search(r"^laimd: %s:%d: handlers\.relay\.credentials: %s: .*%s" %
				(re.escape(d.confpath), line, re.escape(secret), why), err, re.M),
		      "laimd -n on a secret %s: %r" % (what, err))
		check(SECRET not in err + r.stdout.decode(), "secret in laimd -n output")
	os.remove(secret)
	os.symlink("/etc/hostname", secret)
	err = laimd_n(d.confpath).stderr.decode()
	check(re.search(r":%d: handlers\.relay\.credentials: .*symbolic link" % line, err), "symlinked secret: %r" % err)
	os.remove(secret)

	put_secret(secret, SECRET)
	r = laimd_n(d.confpath)
	check_eq(r.returncode, 0, "laimd -n with a root 0600 secret (%r)" % r.stderr)
	d.start()
	q1 = d.send(rcpts=["ok@" + H])
	d.wait_removed(q1)
	with open(os.path.join(out, "secret-seen")) as f:
		check_eq(f.read(), SECRET, "what the handler process got at start")
	r = d.laimctl(["test", "relay"])
	check_eq(r.stdout, "relay: ready: probe: credentials of %d bytes\n" % len(SECRET), "laimctl test relay")
	in_memory = {"secret file": SECRET.encode(), "renewed secret file": RENEWED.encode()}
	for i, (token, header) in enumerate(INLINE):
		in_memory.update({"token %d" % i: token.encode(), "header value %d" % i: header.encode()})
	hook_sends(d, peer, 1, *INLINE[0])
	smtp_holds_nothing(d, in_memory, "at start")

	# Renewed and reloaded: the new bytes travel with the config.
	put_secret(secret, RENEWED)
	d.config["handlers"]["hook"] = hook(*INLINE[1])
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"configuration reloaded$", since=mark)
	q2 = d.send(rcpts=["ok@" + H])
	d.wait_removed(q2)
	with open(os.path.join(out, "secret-seen")) as f:
		check_eq(f.read(), SECRET + RENEWED, "what the handler process got after SIGHUP")
	hook_sends(d, peer, 2, *INLINE[1])
	smtp_holds_nothing(d, in_memory, "after SIGHUP")

	# An open secret on SIGHUP: refused with file and line, old config kept.
	put_secret(secret, "leaked-Token-0000", 0o644)
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	d.wait_log(r"%s:%d: handlers\.relay\.credentials: %s: .*mode 0644.*keeping the previous configuration" %
		   (re.escape(d.confpath), line, re.escape(secret)), since=mark)

	check_eq(d.stop(), 0, "laimd exit status")
	log = d.log(0)
	for s in (SECRET, RENEWED, "leaked-Token-0000"):
		check(s not in log, "secret %s in the log" % s)


run(main)
