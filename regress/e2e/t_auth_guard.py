# The AUTH guard across sessions (smtp/auth_guard.h), on t_auth's
# submission listeners: ten failures from a client, in any number of
# sessions, hold it off (454, the right password too), a client of this
# host being the uid that owns its socket, from any loopback address, so
# that one local user's guesses hold off no other; a client that leaves
# before the verdict has failed all the same. Checks in flight count as failures to come: an
# AUTH over them waits for a verdict, so parallel guesses get no more
# checks, while parallel right passwords all get 235; an AUTH waits in
# the line at most timeout:, and leaves it with its client. The host's
# own addresses, which a local user can bind(), are this host too: the
# case runs in a network namespace of its own, whose lo gets two.
import sys
sys.dont_write_bytecode = True
from peer_dns import enter_private_network
enter_private_network()

import pwd
import signal
import socket
import subprocess
import threading
from harness import *
from t_auth import Case, PASSWORDS, plain

NOBODY = pwd.getpwnam("nobody").pw_uid


class GuardCase(Case):
	def fresh_guard(self):
		"""Restarts laimd: a new smtp process counts no failures yet, and
		holds no address off."""
		check_eq(self.d.stop(), 0, "laimd exit status at SIGTERM")
		self.d.start()

	def guesser_held_off(self):
		"""Sessions from one address (127.0.0.5) fail AUTH ten times in
		all (three sessions of three in parallel, then one): then its AUTH
		gets 454 at once, the right password too, in that session and the
		next (logged once a session), whose third such AUTH ends it (421),
		and the parent checks nothing;
		another loopback address (127.0.0.6) is the same user of this
		host (root), held off too."""
		self.fresh_guard()
		replies = []

		def guess(n):
			c, _ = self.tls_session(source="127.0.0.5")
			with c:
				for k in range(3):
					c.send("AUTH PLAIN %s\r\n" % plain("alice", "guess %d.%d" % (n, k)))
					replies.append(c.reply(timeout=10).code)
		threads = [threading.Thread(target=guess, args=(n,)) for n in range(3)]
		for t in threads:
			t.start()
		for t in threads:
			t.join(30)
		check_eq(replies, [535] * 9, "the first nine failures")
		check(not self.d.search_log(r"held off", 0), "held off before the tenth failure")
		c, _ = self.tls_session(source="127.0.0.5")
		with c:
			c.cmd("AUTH PLAIN " + plain("alice", "guess 10"), 535)
			self.d.wait_log(r"smtp: AUTH from 127\.0\.0\.5 \(uid 0\) held off for 900s: 10 failed authentications within "
					r"600s$", since=0)
			mark = self.d.mark()
			t0 = time.monotonic()
			check_eq(c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"])).text,
				 "454 4.7.0 Temporary authentication failure, try again later", "the right password, held off")
			check(time.monotonic() - t0 < 1, "the 454 took %.2fs" % (time.monotonic() - t0))
		c, _ = self.tls_session(source="127.0.0.5")
		with c:
			for _ in range(3):
				c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 454)
			# A third AUTH held off ends the session, as a third failure does.
			check_eq(c.reply(timeout=5).text, "421 4.7.0 %s Error: too many failed authentications" % HOSTNAME,
				 "after the third AUTH held off")
			check_eq(c.sock.recv(1), b"", "the session after its 421")
		c, _ = self.tls_session(source="127.0.0.6")
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 454)
		# Each session's first 454 is logged, for the administrator.
		held = [m.group(1) for m in self.d.findall_log(r"smtp: AUTH for user=bob from (127\.0\.0\.[56]) held off, "
								 r"not checked$", since=mark)]
		check_eq(held, ["127.0.0.5", "127.0.0.5", "127.0.0.6"], "the held-off lines of three sessions")
		check(not self.d.search_log(r"AUTH (as|failed for user=)bob from 127\.0\.0\.[56]", mark),
		      "a password was checked during the hold")

	def left_before_verdict(self):
		"""Ten sessions each send a wrong password and close at once, while
		the parent checks it: each failure is logged and counted all the
		same, the tenth holds the address off, and the right password then
		gets 454."""
		self.fresh_guard()
		mark = self.d.mark()
		for n in range(10):
			c, _ = self.tls_session()
			c.send("AUTH PLAIN %s\r\n" % plain("alice", "gone %d" % n))
			c.sock.close()
		self.d.wait_log(r"smtp: AUTH from 127\.0\.0\.1 \(uid 0\) held off for 900s", since=mark)
		# A verdict that beat the end of the connection is a session's failure.
		failed = self.d.findall_log(r"smtp: AUTH failed for user=alice from 127\.0\.0\.1 \((client gone|1/3)\)$",
					    since=mark)
		check_eq(len(failed), 10, "AUTH failed lines of the ten sessions")
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 454)

	def parallel_guesses(self):
		"""Twenty sessions send a wrong password at once: ten are checked
		(535), the others wait for them and get 454 once the tenth failure
		holds the address off, and so does the right password sent while
		those ten are in flight."""
		self.fresh_guard()
		mark = self.d.mark()
		sessions = [self.tls_session()[0] for _ in range(20)]
		right, _ = self.tls_session()
		try:
			for n, c in enumerate(sessions):
				c.send("AUTH PLAIN %s\r\n" % plain("alice", "parallel %d" % n))
			time.sleep(0.1)  # the smtp process has read them all; the parent takes some 15 ms a check
			check_eq(right.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"])).text,
				 "454 4.7.0 Temporary authentication failure, try again later",
				 "the right password while ten checks are in flight")
			codes = sorted(c.reply(timeout=10).code for c in sessions)
		finally:
			for c in sessions + [right]:
				c.close()
		check_eq(codes, [454] * 10 + [535] * 10, "the replies to twenty wrong passwords at once")
		self.d.wait_log(r"smtp: AUTH from 127\.0\.0\.1 \(uid 0\) held off for 900s", since=mark)

	def parallel_right_passwords(self):
		"""Twelve sessions from loopback addresses (one client: this host)
		send the right password at once, as a web application's workers
		would: ten are checked at once, the other two wait for a verdict,
		and all twelve get 235; nothing is logged as held off."""
		self.fresh_guard()
		mark = self.d.mark()
		sessions = [self.tls_session(source="127.0.0.%d" % (10 + n))[0] for n in range(12)]
		try:
			for c in sessions:
				c.send("AUTH PLAIN %s\r\n" % plain("bob", PASSWORDS["bob"]))
			replies = [c.reply(timeout=15).text for c in sessions]
		finally:
			for c in sessions:
				c.close()
		check_eq(replies, ["235 2.7.0 Authentication successful"] * 12, "twelve right passwords at once")
		check(not self.d.search_log(r"held off", mark), "an AUTH was logged as held off")

	def auth_line(self):
		"""With the parent stopped (SIGSTOP), ten AUTHs from loopback are in
		flight; an eleventh waits in the line and gets 454 after timeout:
		(3 s), logged as having waited, not as held off; a twelfth leaves
		the line with its client. Once the parent goes on, the ten get 235
		and the smtp process serves on."""
		d = self.d
		d.stop()
		d.config["timeout"] = 3
		try:
			d.start()
			smtp = d.child("smtp")
			mark = d.mark()
			sessions = [self.tls_session(source="127.0.0.%d" % (20 + n))[0] for n in range(12)]
			waiting, leaving = sessions[10], sessions[11]
			os.kill(d.proc.pid, signal.SIGSTOP)
			try:
				# The ten first, so that they are the ones in flight: the
				# smtp process reads sessions in no set order.
				for i, c in enumerate(sessions):
					if i == 10:
						time.sleep(1)
					c.send("AUTH PLAIN %s\r\n" % plain("bob", PASSWORDS["bob"]))
				time.sleep(0.5)
				leaving.sock.close()
				t0 = time.monotonic()
				check_eq(waiting.reply(timeout=10).text,
					 "454 4.7.0 Temporary authentication failure, try again later", "an AUTH that waited 3 s")
				check(time.monotonic() - t0 > 2, "the 454 came after %.1fs" % (time.monotonic() - t0))
			finally:
				os.kill(d.proc.pid, signal.SIGCONT)
			replies = [c.reply(timeout=15).text for c in sessions[:10]]
			check_eq(replies, ["235 2.7.0 Authentication successful"] * 10, "the ten in flight")
			d.wait_log(r"smtp: AUTH for user=bob from 127\.0\.0\.30 waited too long behind other checks of its "
				   r"address, not checked$", since=mark)
			check(not d.search_log(r"held off", mark), "an AUTH was logged as held off")
			for c in sessions:
				c.close()
			c, _ = self.tls_session()
			with c:
				c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 235)
			check_eq(d.child("smtp"), smtp, "the smtp process")
		finally:
			d.stop()
			del d.config["timeout"]
			d.start()

	def local_users_apart(self):
		"""Ten clients of nobody's from 127.0.0.1 send a wrong password
		and leave: nobody is held off, by uid, from any loopback address;
		root's clients from the same addresses are another user of this
		host, whose right password still gets 235."""
		self.fresh_guard()
		mark = self.d.mark()
		for n in range(10):
			c, _ = self.tls_session(source="127.0.0.1", uid=NOBODY)
			c.send("AUTH PLAIN %s\r\n" % plain("alice", "nobody %d" % n))
			c.sock.close()
		self.d.wait_log(r"smtp: AUTH from 127\.0\.0\.1 .*held off for 900s", since=mark)
		for source in ("127.0.0.1", "127.0.0.7"):
			c, _ = self.tls_session(source=source)
			with c:
				check_eq(c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"])).code, 235,
					 "root's right password from %s" % source)
		c, _ = self.tls_session(source="127.0.0.7", uid=NOBODY)
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 454)
		check(self.d.search_log(r"smtp: AUTH from 127\.0\.0\.1 \(uid %d\) held off for 900s: 10 failed "
					r"authentications within 600s$" % NOBODY, mark), "the hold's line names nobody's uid")

	def under_unit_families(self):
		"""laimd under the shipped unit's RestrictAddressFamilies= (read
		from etc/laim.service, applied by a seccomp filter as systemd
		applies it): it still finds this host's addresses and the uid of a
		local client, so nobody's failures still hold off nobody alone."""
		src = os.environ.get("LAIM_SRCDIR", ".")
		with open(os.path.join(src, "etc", "laim.service")) as f:
			line = only([l for l in f if l.startswith("RestrictAddressFamilies=")], "RestrictAddressFamilies=")
		families = [str(getattr(socket, name)) for name in line.split("=", 1)[1].split()]
		runner = os.path.join(self.d.dir, "address_families")
		r = subprocess.run(["cc", "-O2", "-o", runner, os.path.join(src, "regress", "e2e", "address_families.c"),
				    "-lseccomp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
		check_eq((r.returncode, r.stdout), (0, b""), "cc address_families.c")
		self.d.wrap(runner="%s %s --" % (runner, " ".join(families)))
		self.local_users_apart()  # which starts laimd anew
		check(not self.d.search_log(r"getifaddrs", 0), "getifaddrs failed: %s" % self.d.log(0))

	def host_addresses(self):
		"""Two addresses added to the host (lo), then SIGHUP: ten clients
		from them, five each, send a wrong password and leave; they are
		clients of this host, counted by their user (root), so the ten
		failures hold root off, from 127.0.0.1 too, though no address
		failed ten times."""
		d = self.d
		self.fresh_guard()
		own = ("10.9.0.1", "10.8.0.1")
		for a in own:
			subprocess.run(["ip", "addr", "add", a + "/32", "dev", "lo"], check=True)
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		d.wait_log(r"configuration reloaded$", since=mark)
		for n in range(10):
			c, _ = self.tls_session(source=own[n % 2])
			c.send("AUTH PLAIN %s\r\n" % plain("alice", "bound %d" % n))
			c.sock.close()
		d.wait_log(r"smtp: AUTH from 10\.[89]\.0\.1 \(uid 0\) held off for 900s", since=mark)
		c, _ = self.tls_session()
		with c:
			c.cmd("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]), 454)


def main():
	t = GuardCase()
	t.d.start()
	run_rows([
		("ten failures from loopback: its AUTH held off", t.guesser_held_off),
		("clients that leave before the verdict are counted", t.left_before_verdict),
		("parallel guesses: no more checks than failures left", t.parallel_guesses),
		("twelve right passwords at once: all 235", t.parallel_right_passwords),
		("an AUTH waits in line at most timeout:, and leaves it with its client", t.auth_line),
		("the host's own addresses count by user, as loopback", t.host_addresses),
		("each local user is a client of its own", t.local_users_apart),
		("so under laim.service's RestrictAddressFamilies", t.under_unit_families),
	])


if __name__ == "__main__":
	run(main)
