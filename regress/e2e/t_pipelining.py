# PIPELINING (RFC 2920): a group of MAIL, RCPT..., DATA sent at once gets
# its replies in order; the message data sent in the same group as DATA,
# before the 354, is a protocol violation: 503 and the connection closes,
# nothing is delivered.
import sys
sys.dont_write_bytecode = True
from harness import *


def main():
	d = Laimd().start()

	# A well-behaved pipelining client.
	with d.smtp() as c:
		c.ehlo()
		c.send("RSET\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<r1@test.laim.example>\r\n"
		       "RCPT TO:<bad address>\r\nRCPT TO:<r2@test.laim.example>\r\nDATA\r\n")
		codes = [c.reply().code for _ in range(6)]
		# "<bad address>" is a bad mailbox (553 5.1.3, as Postfix answers it).
		check_eq(codes, [250, 250, 250, 553, 250, 354], "replies to the pipelined group")
		c.send(data_terminated(simple_message("pipelined")) + b"MAIL FROM:<b@client.example>\r\n"
		       b"RCPT TO:<r3@test.laim.example>\r\nDATA\r\n")
		qid1 = queue_id(c.expect(250))
		c.expect(250)
		c.expect(250)
		c.expect(354)
		c.send(data_terminated(simple_message("second")) + b"QUIT\r\n")
		qid2 = queue_id(c.expect(250))
		c.expect(221)
		check(c.wait_closed(5), "not closed after the pipelined QUIT")
	d.wait_removed(qid1)
	d.wait_removed(qid2)
	check_eq(len(maildir_files(d.maildir)), 3, "copies delivered (r1, r2, r3)")

	# Data pushed with DATA, before the 354.
	with d.smtp() as c:
		c.ehlo()
		c.send("MAIL FROM:<eager@client.example>\r\nRCPT TO:<r@test.laim.example>\r\nDATA\r\n"
		       "Subject: eager\r\n\r\ntoo early\r\n.\r\n")
		# One segment, read at once: MAIL and RCPT are answered, DATA
		# finds the message already waiting behind it (RFC 2920 3.1).
		replies = [c.reply(5).lines for _ in range(3)]
		check_eq(replies, [["250 2.1.0 Ok"], ["250 2.1.5 Ok"],
				   ["503 5.5.0 Improper use of SMTP command pipelining"]], "replies to the eager group")
		check(c.wait_closed(5), "connection not closed after the 503")
		check_eq(c.buf, b"", "what the server sent after the 503")
	# Give a wrong delivery a chance to appear.
	qid = d.send(msg=simple_message("check"))
	d.wait_removed(qid)
	check_eq(len(maildir_files(d.maildir)), 4, "messages after the eager client (it must add none)")
	check(not d.search_log(r"from=<eager@client\.example>", 0), "the eager message reached the queue")


run(main)
