# The control socket is open to every local user (mode 0666): a user who
# opens connections and sends nothing gets only a few of them, the rest are
# refused at once (laimctl then says why, although laimd closes with its
# request unread), and mail keeps flowing meanwhile.
import sys
sys.dont_write_bytecode = True
import json
import socket
import encodings.idna  # noqa: F401 (loaded before as_user drops to a user who cannot read it)
from harness import *

HELD = 40


def flood(path, port):
	held, refused = [], 0
	for _ in range(HELD):
		s = socket.socket(socket.AF_UNIX)
		s.connect(path)
		held.append(s)
	for s in held:
		s.settimeout(0.5)
		try:
			if s.recv(100).startswith(b"ERR too many connections"):
				refused += 1
		except socket.timeout:
			pass
	# Still holding them all: laimctl is refused with the reason, and the
	# daemon must accept and commit mail.
	r = run_program(laimctl_path(), ["show", "queue"], env={"LAIM_CONTROL": path})
	with Smtp(port) as c:
		c.ehlo()
		qid = c_transaction(c, "flood@client.example", ["root"], simple_message("during flood"))
	return json.dumps([refused, qid, r.returncode, r.stderr])


def main():
	d = Laimd().start()
	pw = local_user()
	refused, qid, code, err = json.loads(as_user(pw, lambda: flood(d.config["control_socket"], d.port)))
	check_eq(refused, HELD - 4, "connections refused beyond the per-user limit of 4")
	check_eq((code, err), (1, "laimctl: too many connections\n"), "laimctl during the flood")
	d.wait_delivered(qid)
	# And once the flood is gone, the control socket answers as before.
	r = subprocess.run([installed("LAIM_SBINDIR", "laimctl"), "show", "stats"],
			   env=dict(os.environ, LAIM_CONTROL=d.config["control_socket"]),
			   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
	check(r.returncode == 0 and b"received" in r.stdout, "laimctl after the flood: %r" % (r,))


run(main)
