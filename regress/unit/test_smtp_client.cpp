// SmtpClient against a scripted peer on a real unix socket: replies read
// whole with their enhanced codes, the data dot-stuffed with CRLF line
// ends, a peer that stalls ends in a timeout, a peer that sends lies ends
// in an error, a socket whose listen queue is full says so. The TLS side
// is covered by the smarthost end-to-end case.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "handler/api/smtp_client.h"

// After the API: check.h defines fail(), a name HandlerOptions uses.
#include <check.h>

using namespace laim;

// ck_assert_str_eq keeps the pointers it is given, so temporaries die first.
#define CHECK_STR(a, b)                                                              \
	do {                                                                         \
		std::string seen_ = (a), want_ = (b);                                \
		ck_assert_msg(seen_ == want_, "\"%s\" != \"%s\"", seen_.c_str(), want_.c_str()); \
	} while (0)

namespace {

// A peer that writes `script` once a client connects, then `later` in a
// segment of its own a moment after, and keeps what the client sent until
// it closes; at most one connection.
struct ScriptedPeer {
	std::string path, script, later, received;
	int listener = -1;
	std::thread thread;

	explicit ScriptedPeer(std::string s, std::string l = "") : script(std::move(s)), later(std::move(l))
	{
		char dir[] = "/tmp/laim-smtpc-XXXXXX";
		ck_assert_ptr_nonnull(mkdtemp(dir));
		path = std::string(dir) + "/peer";
		listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sun = {};
		sun.sun_family = AF_UNIX;
		strcpy(sun.sun_path, path.c_str());
		ck_assert_int_eq(bind(listener, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
		ck_assert_int_eq(listen(listener, 1), 0);
		thread = std::thread([this] {
			int c = accept(listener, nullptr, nullptr);
			ck_assert_int_ge(c, 0);
			ck_assert_int_eq(write(c, script.data(), script.size()), (ssize_t)script.size());
			if (!later.empty()) {
				usleep(200 * 1000);
				ck_assert_int_eq(write(c, later.data(), later.size()), (ssize_t)later.size());
			}
			char buf[4096];
			ssize_t n;
			while ((n = read(c, buf, sizeof buf)) > 0)
				received.append(buf, static_cast<size_t>(n));
			close(c);
		});
	}
	~ScriptedPeer()
	{
		close(listener);
		unlink(path.c_str());
		rmdir(path.substr(0, path.rfind('/')).c_str());
	}
	// What the client sent, once it has closed the connection.
	const std::string& wait()
	{
		thread.join();
		return received;
	}
};

}  // namespace

START_TEST(replies_whole_with_enhanced_codes)
{
	ScriptedPeer peer("220 lmtp ready\r\n250-mx\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
			  "552 5.2.2 <carol> Quota exceeded\r\n451 4.3.0\r\n250 ok 4.2.0 is no code here\r\n354 go on\r\n");
	SmtpClient c;
	c.connect_unix(peer.path, 5);
	SmtpReply r = c.read_reply(5);
	ck_assert_int_eq(r.code, 220);
	CHECK_STR(r.text(), "220 lmtp ready");
	r = c.read_reply(5);
	ck_assert_int_eq(r.code, 250);
	ck_assert_int_eq(r.lines.size(), 4);
	CHECK_STR(r.extension("pipelining").value(), "");
	CHECK_STR(r.extension("AUTH").value(), "PLAIN LOGIN");
	ck_assert(!r.extension("STARTTLS").has_value());
	ck_assert(!r.extension("mx").has_value());  // the greeting line is no keyword
	CHECK_STR(r.text(), "250 mx / PIPELINING / AUTH PLAIN LOGIN / 8BITMIME");

	r = c.read_reply(5);
	CHECK_STR(r.enhanced, "5.2.2");
	Result res = r.result("DATA: ");
	ck_assert(res.status == Result::Status::PermFail);
	CHECK_STR(res.reason, "DATA: 552 5.2.2 <carol> Quota exceeded");
	CHECK_STR(res.code, "5.2.2");
	r = c.read_reply(5);
	CHECK_STR(r.enhanced, "4.3.0");
	ck_assert(r.result().status == Result::Status::TempFail);
	r = c.read_reply(5);
	CHECK_STR(r.enhanced, "");
	ck_assert(r.result().status == Result::Status::Delivered);
	ck_assert(r.ok());
	r = c.read_reply(5);
	ck_assert(!r.ok());  // a 3xx is no answer to MAIL, RCPT or EHLO
	res = r.result();    // only a 5xx fails for good
	ck_assert(res.status == Result::Status::TempFail);
	CHECK_STR(res.reason, "unexpected reply 354 go on");
	c.quit();
	peer.wait();
}
END_TEST

START_TEST(data_dot_stuffed_with_crlf)
{
	ScriptedPeer peer("");
	SmtpClient c;
	c.connect_unix(peer.path, 5);
	c.queue("MAIL FROM:<>");
	c.queue("RCPT TO:<a>");
	c.flush(5);
	c.send_data("Subject: x\r\n\r\n.\r\n..two\r\nbare\n.lf\nno end", 5);
	c.send_data("", 5);
	c.send_data("ends\r\n", 5);
	c.quit();  // the peer answers nothing: QUIT gives up after its short wait
	ck_assert_str_eq(peer.wait().c_str(),
			 "MAIL FROM:<>\r\nRCPT TO:<a>\r\n"
			 "Subject: x\r\n\r\n..\r\n...two\r\nbare\r\n..lf\r\nno end\r\n.\r\n"
			 ".\r\n"
			 "ends\r\n.\r\n"
			 "QUIT\r\n");
}
END_TEST

START_TEST(stalled_peer_times_out)
{
	ScriptedPeer peer("220-first line only\r\n");
	SmtpClient c;
	c.connect_unix(peer.path, 5);
	time_t start = time(nullptr);
	try {
		c.read_reply(1);
		ck_abort_msg("a reply without its last line was taken");
	} catch (const SmtpError& e) {
		CHECK_STR(e.what(), "timeout after 1 s waiting for " + peer.path);
	}
	ck_assert_int_le(time(nullptr) - start, 3);
	c.quit();
	peer.wait();
}
END_TEST

// A reply line longer than 4096 bytes is cut there and marked, whether its
// LF comes in the same segment or a later one; the next reply follows.
START_TEST(long_line_cut_wherever_it_breaks)
{
	std::string text = "2.0.0 " + std::string(5000, 'x');
	std::string cut = text.substr(0, 4096 - 4) + " [...]";
	ScriptedPeer peer("250 " + text + "\r\n250 " + text, "\r\n221 2.0.0 bye\r\n");
	SmtpClient c;
	c.connect_unix(peer.path, 5);
	for (int i = 0; i < 2; i++) {
		SmtpReply r = c.read_reply(5);
		ck_assert_int_eq(r.code, 250);
		ck_assert_int_eq(r.lines.size(), 1);
		CHECK_STR(r.lines[0], cut);
		ck_assert(r.result().status == Result::Status::Delivered);
	}
	CHECK_STR(c.read_reply(5).text(), "221 2.0.0 bye");
	c.quit();
	peer.wait();
}
END_TEST

START_TEST(malformed_replies_refused)
{
	const char* bad[] = {"hello\r\n", "250-a\r\n451 b\r\n", "25\r\n", "250x\r\n"};
	for (const char* script : bad) {
		ScriptedPeer peer(script);
		{
			SmtpClient c;  // closed without QUIT at the end of the block
			c.connect_unix(peer.path, 5);
			try {
				c.read_reply(2);
				ck_abort_msg("malformed reply %s taken", script);
			} catch (const SmtpError& e) {
				ck_assert_msg(strstr(e.what(), "reply") != nullptr, "%s: %s", script, e.what());
			}
		}
		peer.wait();
	}
}
END_TEST

START_TEST(connect_errors_carry_errno)
{
	SmtpClient c;
	try {
		c.connect_unix("/nonexistent/laim/lmtp", 2);
		ck_abort_msg("connected to nothing");
	} catch (const SmtpError& e) {
		ck_assert_int_eq(e.error, ENOENT);
		ck_assert_str_eq(e.what(), "connect to /nonexistent/laim/lmtp: No such file or directory");
	}
}
END_TEST

// A unix socket whose listen queue is full (a server that accepts no more):
// the connect fails at once and says so, rather than the session going on
// on a socket that never connected ("reading from ...: Invalid argument").
START_TEST(full_listen_queue_said)
{
	char dir[] = "/tmp/laim-smtpc-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	std::string path = std::string(dir) + "/full";
	struct sockaddr_un sun = {};
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path.c_str());
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(listener, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
	ck_assert_int_eq(listen(listener, 0), 0);
	int first = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(first, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);  // fills the queue
	SmtpClient c;
	try {
		c.connect_unix(path, 2);
		c.read_reply(2);
		ck_abort_msg("a session on a socket whose listen queue is full");
	} catch (const SmtpError& e) {
		CHECK_STR(e.what(), "connect to " + path + ": the server's listen queue is full (" + strerror(EAGAIN) + ")");
		ck_assert_int_eq(e.error, EAGAIN);
	}
	close(first);
	close(listener);
	unlink(path.c_str());
	rmdir(dir);
}
END_TEST

int main()
{
	Suite* s = suite_create("smtp_client");
	TCase* tc = tcase_create("client");
	tcase_add_test(tc, replies_whole_with_enhanced_codes);
	tcase_add_test(tc, data_dot_stuffed_with_crlf);
	tcase_add_test(tc, stalled_peer_times_out);
	tcase_add_test(tc, long_line_cut_wherever_it_breaks);
	tcase_add_test(tc, malformed_replies_refused);
	tcase_add_test(tc, connect_errors_carry_errno);
	tcase_add_test(tc, full_listen_queue_said);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
