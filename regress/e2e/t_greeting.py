# The 220 greeting names the hostname and ident (RFC 5321 4.2); a client
# that talks before it gets 554 and is closed (greeting_delay: 300 ms).
import sys
sys.dont_write_bytecode = True
import time
from harness import *


def main():
	d = Laimd(greeting_delay=300).start()

	# A patient client waits for the delayed greeting.
	t0 = time.monotonic()
	with d.smtp() as c:
		waited = time.monotonic() - t0
		check_eq(c.greeting.lines, ["220 %s ESMTP %s" % (HOSTNAME, IDENT)], "greeting")
		check(waited >= 0.25, "greeting came after %.3fs, before greeting_delay (0.3s)" % waited)
		c.cmd("QUIT", 221)
		check(c.wait_closed(5), "connection not closed after QUIT")

	# A client that talks first: 554, then the connection closes, and
	# its command is never executed.
	with d.smtp(greet=False) as c:
		c.send("EHLO early.example\r\nMAIL FROM:<early@client.example>\r\n")
		r = c.reply(5)
		check_eq(r.code, 554, "reply to a client talking before the greeting (%r)" % r)
		check(c.wait_closed(5), "connection not closed after the pregreet 554")
		check(b"250" not in c.buf, "commands of the pregreet client answered: %r" % c.buf)

	# The daemon still serves.
	with d.smtp() as c:
		c.ehlo()
		c.cmd("QUIT", 221)


run(main)
