# A message laim gives up gets its local sender a delivery status
# notification (RFC 3464) from the null sender, routed like any mail: the
# failed recipient with its status, and the original header section. A
# remote sender gets none (its notice would leave the host), and neither
# does the null sender, so a notice that fails in turn is given up
# quietly: no loop. A burst of failures gets every notice. A file of
# offline/ refused at its import (here: over data_size_limit) is told to
# its local sender the same way, once.
import sys
sys.dont_write_bytecode = True
import email
import email.policy
from harness import *

DOOMED = "doomed@" + HOSTNAME
ALICE = "alice@" + HOSTNAME


def given_up(d, qid):
	d.wait_log(r"%s: moved to failed/" % qid, 15)


def notices(d):
	return [m for m in maildir_messages(d.maildir) if b"MAILER-DAEMON@" in m.split(b"\r\n\r\n")[0]]


def check_notice(raw, qid):
	msg = email.message_from_bytes(raw, policy=email.policy.compat32)
	check_eq(msg["To"], "<%s>" % ALICE, "the notice's To:")
	check_eq(msg["Auto-Submitted"], "auto-replied", "the notice's Auto-Submitted:")
	check_eq((msg.get_content_type(), msg.get_param("report-type")), ("multipart/report", "delivery-status"),
		 "the notice's type")
	parts = msg.get_payload()
	check_eq([p.get_content_type() for p in parts], ["text/plain", "message/delivery-status", "text/rfc822-headers"],
		 "the notice's parts")
	check(qid in parts[0].get_payload(), "the notice's text does not name %s" % qid)
	report = parts[1].as_string()
	for line in ("Reporting-MTA: dns; " + HOSTNAME, "Final-Recipient: rfc822; " + DOOMED, "Action: failed",
		     "Status: 5.1.1"):
		check(line in report, "%r not in the delivery-status part:\n%s" % (line, report))
	check("rcpt@" not in report, "the delivered recipient is in the report:\n%s" % report)
	original = parts[2].get_payload()
	check("Subject: doomed\n" in original.replace("\r\n", "\n"), "original header section: %r" % original)
	check("body of doomed" not in original, "the original body came back: %r" % original)


def main():
	d = Laimd()
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"doomed": {"type": "pipe", "user": "nobody", "command": ["/bin/sh", "-c", "exit 67"]},
	}
	d.config["routes"] = [{"match": "doomed@*", "handlers": ["doomed"]}, {"match": "*", "handlers": ["inbox"]}]
	d.config["data_size_limit"] = 8192
	d.start()

	# A local sender: one recipient delivered, one failed for good.
	qid = send_mail(d.port, ALICE, [DOOMED, "rcpt@" + HOSTNAME], simple_message("doomed"))
	given_up(d, qid)
	m = d.wait_log(r"(\w+): from=<>, size=\d+, nrcpt=1, client=laimd, notice of the failure of %s to <%s>$" %
		       (qid, re.escape(ALICE)))
	d.wait_removed(m.group(1))
	got = notices(d)
	check_eq(len(got), 1, "notices in the inbox")
	check_notice(got[0], qid)
	check_eq(len(maildir_files(d.maildir)), 2, "messages in the inbox (the delivered copy and the notice)")

	# A remote sender, and a local one whose notice fails in turn.
	remote = send_mail(d.port, "a@client.example", [DOOMED], simple_message("remote"))
	looping = send_mail(d.port, DOOMED, [DOOMED], simple_message("loop"))
	given_up(d, remote)
	given_up(d, looping)
	m = d.wait_log(r"(\w+): from=<>, size=\d+, nrcpt=1, client=laimd, notice of the failure of %s to <%s>$" %
		       (looping, re.escape(DOOMED)))
	given_up(d, m.group(1))
	d.wait_removed(d.send(rcpts=["rcpt@" + HOSTNAME], msg=simple_message("after")))
	check_eq(len(d.findall_log(r"notice of the failure of", 0)), 2, "notices stored")
	check(not d.search_log(r"notice of the failure of %s" % remote, 0), "the remote sender was sent a notice")
	check(not d.search_log(r"(%s|%s): no notice" % (remote, m.group(1)), 0),
	      "a notice was attempted for the remote sender or the null one:\n" + d.log(0))
	check_eq(sorted(d.spool_files("failed")),
		 sorted(x + s for x in (qid, remote, looping, m.group(1)) for s in ("", ".reason")), "failed/")
	check_eq(len(notices(d)), 1, "notices in the inbox at the end")
	check_eq(d.spool_files("queue"), [], "queue/ at the end")

	# A burst of failures: more notices than the handler process stores in
	# one loop turn; each message waits for its own, none is lost.
	burst = [send_mail(d.port, ALICE, [DOOMED], simple_message("burst %d" % i)) for i in range(12)]
	for b in burst:
		given_up(d, b)
		d.wait_log(r"notice of the failure of %s to <%s>$" % (b, re.escape(ALICE)))
	wait_for(lambda: len(notices(d)) == 13, 15, "13 notices in the inbox")
	wait_for(lambda: d.spool_files("queue") == [], 15, "an empty queue/")

	# Files of offline/ over data_size_limit, from a local and a remote sender.
	big = b"Subject: too big\r\n\r\n" + b"x" * 76 + b"\r\n"
	big = big * 200
	gid = drop_gid()
	local = plant_offline(d.spool, ALICE, ["rcpt@" + HOSTNAME], big, gid)
	remote_file = plant_offline(d.spool, "b@client.example", ["rcpt@" + HOSTNAME], big, gid)
	for name in (local, remote_file):
		d.wait_log(r"offline/%s: refused \(message of \d+ bytes exceeds data_size_limit\)" % re.escape(name), 15)
	m = d.wait_log(r"(\w+): from=<>, size=\d+, nrcpt=1, client=laimd, notice of the failure of offline\.%s to <%s>$"
		       % (re.escape(local), re.escape(ALICE)))
	d.wait_removed(m.group(1))
	raw = [n for n in notices(d) if b"offline." + local.encode() in n]
	check_eq(len(raw), 1, "notices of offline/%s in the inbox" % local)
	report = email.message_from_bytes(raw[0], policy=email.policy.compat32).get_payload()[1].as_string()
	for line in ("Final-Recipient: rfc822; rcpt@" + HOSTNAME, "Status: 5.3.4"):
		check(line in report, "%r not in the delivery-status part:\n%s" % (line, report))
	d.wait_removed(d.send(rcpts=["rcpt@" + HOSTNAME], msg=simple_message("after the imports")))
	check(not d.search_log(r"notice of the failure of offline\.%s" % re.escape(remote_file), 0),
	      "the remote sender of offline/%s was sent a notice" % remote_file)
	check_eq(len(notices(d)), 14, "notices in the inbox after the imports")


run(main)
