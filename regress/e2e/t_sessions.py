# max_sessions concurrent sessions; the next connection gets 421 at the
# greeting and is closed; once a session ends there is room again.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd(max_sessions=3).start()
	held = [d.smtp() for _ in range(3)]
	for c in held:
		c.ehlo()
	extra = d.smtp(greet=False)
	r = extra.reply(5)
	check_eq(r.code, 421, "4th concurrent session's greeting (%r)" % r)
	check(extra.wait_closed(5), "4th session not closed after 421")
	extra.close()

	# The three still work.
	for c in held:
		c.cmd("NOOP", 250)
	held[0].cmd("QUIT", 221)
	held[0].wait_closed(5)
	held[0].close()

	# A slot is free again (the smtp process may notice the close a bit later).
	def fresh():
		c = d.smtp(greet=False)
		r = c.reply(5)
		if r.code == 220:
			return c
		c.close()
		return None
	c = wait_for(fresh, 5, "a session slot to be free", interval=0.2)
	c.ehlo()
	qid = c_transaction(c, "a@client.example", ["r@test.laim.example"], simple_message("slot"))
	c.cmd("QUIT", 221)
	c.close()
	for h in held[1:]:
		h.cmd("QUIT", 221)
		h.close()
	d.wait_removed(qid)


run(main)
