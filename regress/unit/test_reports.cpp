// What the parent and the handler process believe of what a child tells
// them: the parent's judgment of a protocol error report
// (sibling_frame_fault), the handler's reading of a local submitter's uid
// from the connection smtp passes (submitter_uid), and the escaping of
// every log line (log_escape), so that no child's words forge one.
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "common/fd.h"
#include "common/imsg.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/submitter.h"

using namespace laim;

namespace {

void expect_str(const std::string& got, const std::string& want)
{
	ck_assert_msg(got == want, "got \"%s\", want \"%s\"", got.c_str(), want.c_str());
}

std::string record(uint32_t type, std::string_view payload)
{
	std::string out;
	imsg_encode(type, 7, 1234, payload, out);
	return out;
}

// A unix stream socket listening at a fresh path, a client connected to
// it, and the server's end of that connection.
struct Submission {
	std::string dir, path;
	UniqueFd listener, client, accepted;

	Submission()
	{
		char tmpl[] = "/tmp/laim-test-reports.XXXXXX";
		ck_assert_ptr_nonnull(mkdtemp(tmpl));
		dir = tmpl;
		path = dir + "/submit.sock";
		listener = bind_listen(path);
		client.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		struct sockaddr_un sun = address(path);
		ck_assert_int_eq(connect(client.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
		accepted.reset(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
		ck_assert(accepted);
	}
	~Submission()
	{
		unlink(path.c_str());
		unlink((dir + "/other.sock").c_str());
		rmdir(dir.c_str());
	}

	static struct sockaddr_un address(const std::string& p)
	{
		struct sockaddr_un sun = {};
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, p.c_str(), p.size() + 1);
		return sun;
	}
	static UniqueFd bind_listen(const std::string& p)
	{
		UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		struct sockaddr_un sun = address(p);
		ck_assert_int_eq(bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
		ck_assert_int_eq(listen(fd.get(), 4), 0);
		return fd;
	}
};

}  // namespace

START_TEST(log_escape_forms)
{
	expect_str(log_escape("plain <a@b.example> 250 2.0.0"), "plain <a@b.example> 250 2.0.0");
	expect_str(log_escape("x\nlaimd[1]: forged"), "x\\nlaimd[1]: forged");
	expect_str(log_escape("a\r\tb"), "a\\r\\tb");
	expect_str(log_escape("\x1b[2K\x7f"), "\\x1b[2K\\x7f");
	expect_str(log_escape(std::string("nul\0end", 7)), "nul\\x00end");
	// Well-formed UTF-8 stays readable; anything else goes as bytes.
	expect_str(log_escape("j\xc3\xb6rg@b\xc3\xbc" "cher.example"), "j\xc3\xb6rg@b\xc3\xbc" "cher.example");
	expect_str(log_escape("bad \xff\xc3\xb6"), "bad \\xff\\xc3\\xb6");
	// A C1 control (U+0085, NEL) is not let through as UTF-8 either.
	expect_str(log_escape("nel\xc2\x85"), "nel\\xc2\\x85");
	expect_str(log_escape(""), "");
}
END_TEST

// The parent ends the reported sibling only for a frame that breaks a
// rule its receiver applies; a valid frame makes the reporter the liar.
START_TEST(fault_of_forwarded_frames)
{
	auto to_smtp = [](std::string_view rec, int fd = -1) {
		return sibling_frame_fault(rec, fd, imsg_valid_handler_to_smtp, "/s");
	};
	auto to_handler = [](std::string_view rec) { return sibling_frame_fault(rec, -1, imsg_valid_smtp_to_handler, "/s"); };
	std::string ok = record(IMSG_H_MAIL, encode(StatusMsg{BackendStatus::Ok}));
	expect_str(to_smtp(ok), "");
	expect_str(to_handler(record(IMSG_S_RCPT, encode(RcptMsg{"a@b.example"}))), "");
	expect_str(to_handler(record(IMSG_S_COMMIT, encode(CommitMsg{12}))), "");

	// Payloads that do not decode.
	expect_str(to_smtp(record(IMSG_H_MAIL, std::string("\x63\0\0\0\0\0\0\0", 8))),  // status 99
			    "malformed IMSG_H_MAIL");
	expect_str(to_handler(record(IMSG_S_RCPT, "bad")), "malformed IMSG_S_RCPT");
	expect_str(to_handler(record(IMSG_S_DATA, "x")), "malformed IMSG_S_DATA");
	// A MAIL that claims a uid, as smtp's MAIL did before the handler
	// process read it from the connection: no longer a field of it.
	std::string claim = encode(MailMsg{"a@b.example", "h", "local"}) + std::string("\1\0\0\0\0\0\0\0", 8);
	expect_str(to_handler(record(IMSG_S_MAIL, claim)), "malformed IMSG_S_MAIL");
	// Framing: a type the receiving end does not take (smtp's own type
	// sent back to it), a cut record, bytes past the header's length.
	expect_str(to_smtp(record(IMSG_S_RCPT, encode(RcptMsg{"a"}))), "unknown message type");
	expect_str(to_smtp(ok.substr(0, ok.size() - 1)), "truncated frame");
	expect_str(to_smtp(ok + "x"), "trailing bytes after frame");
	expect_str(to_smtp(""), "truncated frame");
	// A descriptor where the type has none, none where it needs one.
	UniqueFd fd(dup(STDERR_FILENO));
	expect_str(to_smtp(ok, fd.get()), "unexpected or missing descriptor");
	expect_str(to_smtp(record(IMSG_H_DATA_OK, encode(DataOkMsg{"0123456789", 0, "root"}))),
			    "unexpected or missing descriptor");
	// The descriptor stays the caller's.
	ck_assert(fcntl(fd.get(), F_GETFD) != -1);
}
END_TEST

// A local MAIL's descriptor must be a client's connection to the
// submission socket: the handler reads the uid from it, the parent judges
// a report about it with the same check.
START_TEST(local_mail_connection)
{
	Submission sub;
	std::string why;
	std::optional<uid_t> uid = submitter_uid(sub.accepted.get(), sub.path, &why);
	ck_assert_msg(uid && *uid == getuid(), "accepted connection: %s", why.c_str());
	std::string mail = record(IMSG_S_MAIL_LOCAL, encode(MailMsg{"a@b.example", "h", "local"}));
	expect_str(sibling_frame_fault(mail, sub.accepted.get(), imsg_valid_smtp_to_handler, sub.path), "");

	auto refused = [&](int fd, const std::string& path, const std::string& want) {
		std::string w;
		ck_assert(!submitter_uid(fd, path, &w));
		ck_assert_msg(w.find(want) != std::string::npos, "why: %s (want %s)", w.c_str(), want.c_str());
		std::string fault = sibling_frame_fault(mail, fd, imsg_valid_smtp_to_handler, path);
		expect_str(fault, "IMSG_S_MAIL_LOCAL with " + w);
	};
	// The listener: its SO_PEERCRED is whoever called listen().
	refused(sub.listener.get(), sub.path, "the listening socket");
	// The client's own end has no address; so has a socketpair.
	refused(sub.client.get(), sub.path, "a socket bound to \"\"");
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	UniqueFd a(sv[0]), b(sv[1]);
	refused(a.get(), sub.path, "a socket bound to \"\"");
	// The right kind of socket at another path.
	UniqueFd other = Submission::bind_listen(sub.dir + "/other.sock");
	refused(sub.accepted.get(), sub.dir + "/other.sock", "a socket bound to \"" + sub.path + "\", not ");
	// Not a unix stream socket, or no socket at all.
	UniqueFd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	refused(tcp.get(), sub.path, "not a unix stream socket");
	UniqueFd dgram(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
	refused(dgram.get(), sub.path, "not a unix stream socket");
	int p[2];
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	UniqueFd r(p[0]), w(p[1]);
	refused(r.get(), sub.path, "not a socket");
}
END_TEST

int main()
{
	Suite* s = suite_create("reports");
	TCase* tc = tcase_create("core");
	tcase_add_test(tc, log_escape_forms);
	tcase_add_test(tc, fault_of_forwarded_frames);
	tcase_add_test(tc, local_mail_connection);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
