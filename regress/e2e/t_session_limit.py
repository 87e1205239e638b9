# A smarthost or lmtp session ends within delivery_timeout, however its
# steps add up: against a slow server (peer_scripted.py) that answers
# every step well within the step's timeout, the session is cut a second
# before delivery_timeout and deferred with "session timeout", before the
# queue would call the call timed out; the server never gets the message,
# and the instance's one worker is free for the next message at once
# rather than held by a session that goes on after its timeout. The wait
# for the reply to the message's end keeps its own data_timeout (giving
# up on it would send the message again): a server that answers it after
# delivery_timeout gets one copy, counted as delivered late.
import sys
sys.dont_write_bytecode = True
from harness import *
from peer_scripted import ScriptedPeer

DELIVERY_TIMEOUT = 4  # the session's limit: 3 s
PAUSE = 1.1  # before each reply: the greeting, EHLO (LHLO), then MAIL's past 3 s


def slow_session(d, peer, inst, reason_prefix, rcpts):
	"""rcpts' messages, sent at once to inst (one worker) whose server is
	peer, are each cut by the session's limit."""
	qids = [d.send(rcpts=[r], msg=simple_message(r)) for r in rcpts]
	cut = r"%ssession timeout after %d s (waiting for|sending to) 127\.0\.0\.1:%d" % (
		reason_prefix, DELIVERY_TIMEOUT - 1, peer.port)
	for i, (qid, rcpt) in enumerate(zip(qids, rcpts)):
		m = d.wait_log(r"%s: to=<%s>, handler=%s, status=deferred, delay=([0-9.]+), attempt=1, "
			       r"retry_in=\d+s \(%s\)$" % (qid, re.escape(rcpt), inst, cut), timeout=20, since=0)
		# The second waited for the first's worker, then was cut as quickly.
		check(float(m.group(1)) < DELIVERY_TIMEOUT * (i + 1), "%s deferred after %ss" % (qid, m.group(1)))
	check_eq(peer.sessions, len(rcpts), "sessions the server of %s saw" % inst)
	check_eq(peer.messages, [], "messages the server of %s received" % inst)
	check(not d.search_log(r"handler %s timed out" % inst, 0), "the queue timed out a session of %s" % inst)


def late_reply(d, peer, qid):
	"""The reply to the message's end, after delivery_timeout: the call,
	timed out by the queue meanwhile, still counts it; one copy."""
	d.wait_log(r"%s: to=<x@late\.example>, handler=late, status=delivered, late \(after its timeout\)$" % qid,
		   timeout=20, since=0)
	check_eq([m[1] for m in peer.messages], [["x@late.example"]], "copies the late server received")


def main():
	d = Laimd(delivery_timeout=DELIVERY_TIMEOUT, retry_initial=300, retry_max=300)
	slow = ScriptedPeer(pause=PAUSE)
	slow_lmtp = ScriptedPeer(lmtp=True, pause=PAUSE)
	late = ScriptedPeer(end=lambda session, rcpts: [DELIVERY_TIMEOUT + 1, b"250 2.0.0 Ok\r\n"])
	relay = lambda peer: {"type": "smarthost", "host": "127.0.0.1", "port": peer.port, "tls": "none",
			      "command_timeout": 10, "data_timeout": 10, "workers": 1}
	d.config["handlers"] = {
		"slow": relay(slow),
		"late": relay(late),
		"slowlmtp": {"type": "lmtp", "host": "127.0.0.1:%d" % slow_lmtp.port, "timeout": 10, "workers": 1},
	}
	d.config["routes"] = [{"match": "*@%s.example" % name, "handlers": [name]} for name in d.config["handlers"]]
	d.start()

	q_late = d.send(rcpts=["x@late.example"], msg=simple_message("late"))
	run_rows([
		("smarthost", lambda: slow_session(d, slow, "slow", "", ["a@slow.example", "b@slow.example"])),
		("lmtp", lambda: slow_session(d, slow_lmtp, "slowlmtp", "lmtp: ", ["c@slowlmtp.example"])),
		("the reply to the message's end", lambda: late_reply(d, late, q_late)),
	])
	check_eq(d.stop(), 0, "laimd exit status")
	for peer in (slow, slow_lmtp, late):
		peer.stop()


run(main)
