# The built-in handlers behind routes: file (mbox with From_ line, LF line
# ends and mboxrd >From quoting), log (one line with id, from, to, size and
# the decoded subject), discard; a route may name several handlers. A
# message that already carries Delivered-To: for its recipient fails at
# the maildir as a mail forwarding loop (5.4.6), into failed/; one with
# a Delivered-To: for another address is delivered. A message's own
# Return-Path: and Content-Length: fields (forged: any case, folded) are
# left out of the Maildir and mbox copies, whose only Return-Path is
# laim's; the body keeps its lines, and a Maildir copy too large to be
# read into memory (sent from the spool file) is cut the same way.
import sys
sys.dont_write_bytecode = True
from harness import *

ASCTIME = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d \d{4}"

BODY = (b"Subject: =?UTF-8?B?w6l0w6k=?= report\r\n\r\n"
	b"From the start\r\n>From quoted\r\n>>From twice\r\nFromage\r\n \r\nend\r\n")
MBOXRD = b">From the start\n>>From quoted\n>>>From twice\nFromage\n \nend\n"

FORGED_BODY = b"Return-Path: <in-body@bank.example>\r\nContent-Length: 1\r\n" + (b"x" * 78 + b"\r\n") * 4000
FORGED = (b"Return-Path: <ceo@bank.example>\r\nSubject: forged\r\ncontent-length: 3\r\n"
	  b"RETURN-PATH:\r\n <folded@bank.example>\r\n\r\n" + FORGED_BODY)


def main():
	d = Laimd()
	mail = d.make_user_dir(os.path.join(d.dir, "mail"))
	mbox = os.path.join(mail, "mbox")
	d.config["handlers"] = {
		"inbox": {"type": "maildir", "path": d.maildir},
		"archive": {"type": "file", "path": mbox},
		"audit": {"type": "log"},
		"trash": {"type": "discard"},
	}
	d.config["routes"] = [
		{"match": "mbox@*", "handlers": ["archive"]},
		{"match": "audit@*", "handlers": ["audit", "inbox"]},
		{"match": "*@null.example", "handlers": ["trash"]},
		{"match": "*", "handlers": ["inbox"]},
	]
	d.start()

	q1 = d.send(rcpts=["mbox@test.laim.example"], msg=BODY)
	q2 = d.send(rcpts=["audit@test.laim.example"], msg=BODY)
	q3 = d.send(rcpts=["x@null.example"], msg=BODY)
	q4 = d.send(sender="", rcpts=["mbox@test.laim.example"], msg=simple_message("bounce"))
	for q in (q1, q2, q3, q4):
		d.wait_removed(q)

	d.wait_delivered(q1, "mbox@test.laim.example")
	with open(mbox, "rb") as f:
		text = f.read()
	check(b"\r" not in text, "CR in the mbox")
	parts = re.split(rb"(?<=\n\n)(?=From )", text)
	check_eq(len(parts), 2, "messages in the mbox (%r)" % text[:600])
	first, second = parts
	m = re.match((r"From sender@client\.example %s\nReturn-Path: <sender@client\.example>\n"
		      r"Delivered-To: mbox@test\.laim\.example\nReceived: [^\n]*\n(?:[ \t][^\n]*\n)*"
		      % ASCTIME).encode(), first)
	check(m, "first mbox message starts wrong: %r" % first[:400])
	rest = first[m.end():]
	check_eq(rest, b"Subject: =?UTF-8?B?w6l0w6k=?= report\n\n" + MBOXRD + b"\n", "first mbox message body")
	check(re.match((r"From MAILER-DAEMON %s\nReturn-Path: <>\n" % ASCTIME).encode(), second),
	      "null-sender mbox message starts wrong: %r" % second[:200])
	check(second.endswith(b"body of bounce\n\n"), "second mbox message end: %r" % second[-60:])

	line = d.wait_log(r"%s: handler=audit, from=<sender@client\.example>, to=(.*), size=(\d+), subject=(.*)$" % q2)
	check("audit@test.laim.example" in line.group(1), "log handler line names no recipient: %r" % line.group(0))
	check_eq(line.group(3), "\u00e9t\u00e9 report", "decoded subject in the log handler line")
	d.wait_delivered(q2, "audit@test.laim.example")
	check(d.search_log(r"%s: to=<audit@test\.laim\.example>, handler=inbox, status=delivered" % q2, 0),
	      "the second handler of the route did not deliver")

	d.wait_delivered(q3, "x@null.example")
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 1, "messages in the Maildir (only the audit copy)")
	check_eq(split_delivered(msgs[0])[1], b"audit@test.laim.example", "Delivered-To of the Maildir copy")

	looped = b"Delivered-To: Loop@test.laim.example\r\n" + simple_message("came back")
	q5 = d.send(rcpts=["loop@test.laim.example"], msg=looped)
	q6 = d.send(rcpts=["other@test.laim.example"], msg=b"Delivered-To: loop@test.laim.example\r\n" + simple_message("other"))
	d.wait_log(r"%s: to=<loop@test\.laim\.example>, handler=inbox, status=failed, dsn=5\.4\.6 "
		   r"\(mail forwarding loop for loop@test\.laim\.example\)$" % q5)
	d.wait_log(r"%s: moved to failed/" % q5)
	with open(os.path.join(d.spool, "failed", q5 + ".reason")) as f:
		reason = f.read()
	check("5.4.6 mail forwarding loop for loop@test.laim.example" in reason, "failed/%s.reason: %r" % (q5, reason))
	d.wait_delivered(q6, "other@test.laim.example")
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), 2, "messages in the Maildir (the audit copy and the other address's)")
	check(any(b"body of other" in m for m in msgs), "the message with another Delivered-To: not in the Maildir")
	check(not any(b"came back" in m for m in msgs), "the looping message delivered to the Maildir")

	q7 = d.send(rcpts=["mbox@test.laim.example", "forged@test.laim.example"], msg=FORGED)
	d.wait_removed(q7)
	copy = [m for m in maildir_messages(d.maildir) if b"Subject: forged" in m]
	check_eq(len(copy), 1, "forged-field copies in the Maildir")
	ret, to, received, rest = split_delivered(copy[0])
	check_eq((ret, to), (b"sender@client.example", b"forged@test.laim.example"), "the Maildir copy's own fields")
	head, _, body = rest.partition(b"\r\n\r\n")
	check_eq(head, b"Subject: forged", "the Maildir copy's header fields after Received:")
	check(body == FORGED_BODY, "the Maildir copy's body changed: %r" % body[:200])
	with open(mbox, "rb") as f:
		last = re.split(rb"(?<=\n\n)(?=From )", f.read())[-1]
	m = re.match((r"From sender@client\.example %s\nReturn-Path: <sender@client\.example>\n"
		      r"Delivered-To: mbox@test\.laim\.example\nReceived: [^\n]*\n(?:[ \t][^\n]*\n)*"
		      % ASCTIME).encode(), last)
	check(m, "the forged-field mbox copy starts wrong: %r" % last[:400])
	head, _, body = last[m.end():].partition(b"\n\n")
	check_eq(head, b"Subject: forged", "the mbox copy's header fields after Received:")
	check(body == FORGED_BODY.replace(b"\r\n", b"\n") + b"\n", "the mbox copy's body changed: %r" % body[:200])


run(main)
