# Under systemd (Type=notify) laimd sends READY=1 to NOTIFY_SOCKET once
# its children run: to a socket path, or to an abstract name ("@...").
import sys
sys.dont_write_bytecode = True
from harness import *


def ready_received(d, address, env_value):
	with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
		s.bind(address)
		os.environ["NOTIFY_SOCKET"] = env_value
		try:
			d.start()
		finally:
			del os.environ["NOTIFY_SOCKET"]
		s.settimeout(10)
		try:
			got = s.recv(64)
		except socket.timeout:
			raise Fail("no datagram on %s within 10 s" % env_value)
		check_eq(got, b"READY=1", "datagram on %s" % env_value)
	check_eq(d.stop(), 0, "exit status")


def main():
	d = Laimd()
	path = os.path.join(d.dir, "notify.sock")
	ready_received(d, path, path)
	name = "laim-e2e-notify-%d" % os.getpid()
	ready_received(d, "\0" + name, "@" + name)


run(main)
