# DATA (RFC 5321 4.1.1.4, 4.5.2): dot-unstuffing is byte-exact, 8-bit data
# passes untouched; bare LF or bare CR anywhere makes the message rejected
# with 550 5.6.0 at its real end, a line over 1000 octets too (4.5.3.1.6),
# a NUL gets 554. A rejected message is never delivered and the session
# can go on with another transaction.
import sys
sys.dont_write_bytecode = True
from harness import *

DOTS = (b"Subject: dots\r\nX-8bit: \xe9t\xe9\r\n\r\n"
	b".\r\n..\r\n.leading dot\r\n...\r\nmid.dle\r\n. space\r\n\r\n"
	b"\xff\x80\xc3\xa9 8-bit\r\n" + b"L" * 998 + b"\r\n"
	b"\t.tab\r\nlast line .\r\n")

REJECTS = [
	# (name, bytes after 354, expected reply code, enhanced code prefix)
	("bare LF", b"Subject: lf\r\n\r\nline\nbare\r\n.\r\n", 550, "5.6.0"),
	("bare CR", b"Subject: cr\r\n\r\nline\rbare\r\n.\r\n", 550, "5.6.0"),
	("bare LF in header", b"Subject: lf\nX: y\r\n\r\nbody\r\n.\r\n", 550, "5.6.0"),
	("bare CR at the end", b"Subject: cr\r\n\r\nbody\r\r\n.\r\n", 550, "5.6.0"),
	("line of 1200", b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\nafter\r\n.\r\n", 550, "5.6.0"),
	("NUL", b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n", 554, ""),
]


def transaction(c, msg_bytes_on_wire):
	c.cmd("MAIL FROM:<a@client.example> BODY=8BITMIME", 250)
	c.cmd("RCPT TO:<r@test.laim.example>", 250)
	c.cmd("DATA", 354)
	c.send(msg_bytes_on_wire)
	return c.reply(15)


def main():
	d = Laimd().start()
	delivered = {}
	with d.smtp() as c:
		c.ehlo()
		for name, wire, code, enh in REJECTS:
			r = transaction(c, wire)
			check(r.code == code and r.lines[-1][4:].startswith(enh),
			      "%s: expected %d %s, got %r" % (name, code, enh, r))
			# The session goes on: a new transaction may start.
			c.cmd("NOOP", 250)
		# Byte-exact unstuffing.
		r = transaction(c, data_terminated(DOTS))
		check_eq(r.code, 250, "reply to the dotted message")
		delivered[queue_id(r)] = DOTS
		# The empty message.
		r = transaction(c, b".\r\n")
		check_eq(r.code, 250, "reply to the empty message")
		delivered[queue_id(r)] = b""
		# The end of data is only CRLF.CRLF; the server removes the first
		# dot of any other line that starts with one (4.5.2).
		wire = b"Subject: near\r\n\r\n..\r\n. \r\n.x\r\n.\r\n"
		r = transaction(c, wire)
		delivered[queue_id(r)] = b"Subject: near\r\n\r\n.\r\n \r\nx\r\n"
		c.cmd("QUIT", 221)

	for qid in delivered:
		d.wait_removed(qid)
	msgs = maildir_messages(d.maildir)
	check_eq(len(msgs), len(delivered), "messages delivered (the rejected ones must not be)")
	for m in msgs:
		ret, to, received, rest = split_delivered(m)
		check_eq((ret, to), (b"a@client.example", b"r@test.laim.example"), "envelope lines")
		qid = re.search(rb"\bid (" + QID_RE.encode() + rb")\b", received)
		check(qid, "Received: header names no queue id: %r" % received)
		qid = qid.group(1).decode()
		check(qid in delivered, "delivered message %s not among %r" % (qid, list(delivered)))
		check_eq(rest, delivered[qid], "message %s after the Received: header" % qid)
	wait_for(lambda: not d.pending_files(), 5, "no pending file left in queue/")
	check_eq(d.spool_files("queue"), [], "queue/ after delivery")


run(main)
