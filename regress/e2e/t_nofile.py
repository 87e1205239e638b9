# laimd under a low open file limit (ulimit -n 64, far below what
# max_sessions' 100 sessions need): the smtp process takes only as many
# sessions as it has descriptors for (a socket, and a spool file in DATA,
# each) and says so at start; a client past that gets 421 4.3.2 at once;
# every session it took completes its transaction, delivered byte for
# byte; and once they end, new clients are served again.
import sys
sys.dont_write_bytecode = True
from harness import *

NOFILE = 64


def main():
	d = Laimd()
	d.wrap(setup="ulimit -n %d || exit 1" % NOFILE)
	d.start()
	m = d.wait_log(r"the open file limit leaves room for (\d+) sessions, fewer than max_sessions \(100\)$")
	room = int(m.group(1))
	check(8 <= room < NOFILE // 2, "sessions within %d descriptors: %d" % (NOFILE, room))
	print("room for %d sessions within %d descriptors" % (room, NOFILE))
	with open("/proc/%d/limits" % d.child("smtp")) as f:
		check(re.search(r"^Max open files +%d +" % NOFILE, f.read(), re.M), "the smtp process's open file limit")

	sessions = []
	for i in range(room):
		c = d.smtp()
		c.ehlo()
		sessions.append(c)
	mark = d.mark()
	extra = d.smtp(greet=False)
	r = extra.reply(5)
	check(r.code == 421 and r.lines[-1].startswith("421 4.3.2 "), "client %d past the limit: %r" % (room + 1, r))
	check(extra.wait_closed(5), "the refused client's connection stays open")
	extra.close()
	d.wait_log(r"open file limit: %d sessions reached: refused a client on 127\.0\.0\.1:%d$" % (room, d.port),
		   since=mark)

	# Every session taken has the descriptors for its transaction, all at
	# once: each is in DATA, holding its spool file, before any ends.
	sent = {}
	for i, c in enumerate(sessions):
		c.cmd("MAIL FROM:<s%d@client.example>" % i, 250)
		c.cmd("RCPT TO:<rcpt@test.laim.example>", 250)
		c.cmd("DATA", 354)
	for i, c in enumerate(sessions):
		msg = varied_message("session %d" % i, 2000)
		c.send(data_terminated(msg))
		sent[queue_id(c.expect(250, what="end of data of session %d" % i))] = msg
		c.cmd("QUIT", 221)
		c.close()
	for qid in sent:
		d.wait_removed(qid)
	after = varied_message("after", 2000)
	sent[d.send(msg=after)] = after
	for qid in sent:
		d.wait_removed(qid)
	check_delivered_exactly(d, sent)
	check(not d.search_log(r"(?i)too many open files", 0), "a process ran out of descriptors")
	check(d.running(), "the parent died")


run(main)
