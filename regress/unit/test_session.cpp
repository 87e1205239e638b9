// Unit tests of the SMTP session state machine (smtp/session.cpp), driven
// through the public Session interface with a fake backend that records
// every call and answers at once or later, as the test says.
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/hop_count.h"
#include "smtp/auth_guard.h"
#include "smtp/session.h"

// Last: check.h defines a fail() macro that clashes with <ios>.
#include <check.h>

using namespace laim;
using namespace std::string_literals;

// Every heap allocation of the program is counted (operator new ends in
// malloc), so a test can assert that the session allocates nothing once
// warmed up.
static unsigned long allocations;
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
// AddressSanitizer owns malloc: count through its allocation hook
// (declared here: GCC does not install <sanitizer/allocator_interface.h>).
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*)(const volatile void*, size_t),
							 void (*)(const volatile void*));
static void count_allocation(const volatile void*, size_t) { allocations++; }
static void ignore_free(const volatile void*) {}
static const int hooks_installed = __sanitizer_install_malloc_and_free_hooks(count_allocation, ignore_free);
#else
extern "C" void* __libc_malloc(size_t n);
extern "C" void* malloc(size_t n) noexcept
{
	allocations++;
	return __libc_malloc(n);
}
#endif

namespace {

constexpr const char* QUEUE_ID = "4F3A2C1B0D";

// Printable form of bytes for failure messages.
std::string escape(std::string_view s)
{
	std::string r;
	for (unsigned char c : s) {
		if (c == '\r')
			r += "\\r";
		else if (c == '\n')
			r += "\\n";
		else if (c < 0x20 || c >= 0x7f) {
			char b[8];
			snprintf(b, sizeof b, "\\x%02x", c);
			r += b;
		} else
			r += char(c);
	}
	return r;
}

#define expect_eq(got, want)                                                                      \
	do {                                                                                      \
		std::string g_ = (got), w_ = (want);                                              \
		ck_assert_msg(g_ == w_, "%s:\n got  \"%s\"\n want \"%s\"", #got, escape(g_).c_str(), \
			      escape(w_).c_str());                                                \
	} while (0)

bool fd_is_open(int fd) { return fd >= 0 && fcntl(fd, F_GETFD) != -1; }

// Records the session's calls ("mail:ADDR", "rcpt:ADDR", "data",
// "commit:SIZE", "abort") and answers them synchronously unless async.
// Its checks use ck_abort_msg only on failure: Check's passing
// assertions allocate, which would spoil the allocation count.
struct FakeBackend : SessionBackend {
	std::vector<std::string> calls;
	bool record = true;  // false: keep no call log (allocation-free)
	bool async = false;
	BackendStatus mail_st = BackendStatus::Ok;
	std::string mail_text;  // RateLimited's words
	BackendStatus rcpt_st = BackendStatus::Ok;
	BackendStatus data_st = BackendStatus::Ok;
	BackendStatus commit_st = BackendStatus::Ok;
	std::set<std::string> reject_rcpts;
	bool readonly_spool = false;  // hand out an fd that cannot be written

	int spool_read = -1;   // our fd on the spool file, to read it back
	int spool_given = -1;  // the fd number handed to the session
	bool spool_closed_at_end = false;  // closed by the time of on_commit/on_abort
	int seccomp_triggers = 0;
	// AUTH: the passwords the "parent" accepts, and its senders answer.
	std::map<std::string, std::string> passwords;
	bool senders_bound = false;
	std::vector<std::string> senders;
	bool hold_delay = false;  // leave a failed AUTH waiting for auth_delay_over()

	~FakeBackend() override
	{
		if (spool_read >= 0)
			close(spool_read);
	}

	void on_mail(Session& s, const std::string& sender) override
	{
		if (record)
			calls.push_back("mail:" + sender);
		if (s.sender() != sender)
			ck_abort_msg("sender() differs from on_mail's argument");
		if (!async)
			s.mail_reply(mail_st, mail_text);
	}
	void on_rcpt(Session& s, const std::string& rcpt) override
	{
		if (record)
			calls.push_back("rcpt:" + rcpt);
		if (!async)
			s.rcpt_reply(reject_rcpts.count(rcpt) ? BackendStatus::Reject : rcpt_st);
	}
	void on_data(Session& s) override
	{
		if (record)
			calls.push_back("data");
		if (!async)
			answer_data(s);
	}
	void on_commit(Session& s, uint64_t size) override
	{
		if (record)
			calls.push_back("commit:" + std::to_string(size));
		spool_closed_at_end = !fd_is_open(spool_given);
		if (!async)
			s.commit_reply(commit_st);
	}
	void on_abort(Session&) override
	{
		if (record)
			calls.push_back("abort");
		spool_closed_at_end = !fd_is_open(spool_given);
	}
#ifdef LAIM_SECCOMP_TRIGGER
	void on_seccomp_trigger() override { seccomp_triggers++; }
#endif
	void on_auth(Session& s, const std::string& user, const std::string& password) override
	{
		calls.push_back("auth:" + user + ":" + password);
		auto it = passwords.find(user);
		bool ok = it != passwords.end() && it->second == password;
		s.auth_reply(ok, ok && senders_bound, ok ? senders : std::vector<std::string>{});
	}
	void on_auth_delay(Session& s) override
	{
		calls.push_back("delay");
		if (!hold_delay)
			s.auth_delay_over();
	}

	// Creates an anonymous temporary spool file and hands a second fd on
	// it to the session, as the handler process would.
	void answer_data(Session& s)
	{
		if (data_st != BackendStatus::Ok) {
			s.data_reply(data_st, -1, "");
			return;
		}
		char path[] = "/tmp/laim-test-spool-XXXXXX";
		int fd = mkstemp(path);
		if (fd < 0)
			ck_abort_msg("mkstemp: %s", strerror(errno));
		unlink(path);
		if (spool_read >= 0)
			close(spool_read);
		spool_read = fd;
		spool_given = readonly_spool ? open("/dev/null", O_RDONLY) : dup(fd);
		if (spool_given < 0)
			ck_abort_msg("spool fd: %s", strerror(errno));
		s.data_reply(BackendStatus::Ok, spool_given, QUEUE_ID);
	}

	std::string spool_content() const
	{
		std::string r;
		char buf[65536];
		off_t off = 0;
		ssize_t n;
		while ((n = pread(spool_read, buf, sizeof buf, off)) > 0) {
			r.append(buf, n);
			off += n;
		}
		return r;
	}

	int count(std::string_view prefix) const
	{
		int n = 0;
		for (const auto& c : calls)
			n += c.compare(0, prefix.size(), prefix) == 0;
		return n;
	}
	std::string joined() const
	{
		std::string r;
		for (const auto& c : calls)
			r += c + ";";
		return r;
	}
};

// A session with its settings, backend and helpers to talk to it.
struct Harness {
	SmtpSettings settings;
	FakeBackend be;
	ClientInfo client;
	std::unique_ptr<Session> s;

	explicit Harness(ClientInfo c = {"127.0.0.1", std::nullopt, ""}) : client(std::move(c))
	{
		settings.hostname = "mx.example";
		settings.ident = "laim 0.1.0";
	}
	// Starts the session (after settings were adjusted) and eats the greeting.
	Session& start()
	{
		s = std::make_unique<Session>(be, settings, client, 7);
		s->greet();
		take();
		return *s;
	}
	// Feeds bytes through input_space/input_commit in pieces of at most
	// chunk; returns how many were accepted (all, unless backpressure).
	size_t feed(std::string_view data, size_t chunk = SIZE_MAX)
	{
		size_t fed = 0;
		while (fed < data.size()) {
			auto [p, n] = s->input_space();
			if (n == 0)
				break;
			n = std::min({n, chunk, data.size() - fed});
			memcpy(p, data.data() + fed, n);
			s->input_commit(n);
			fed += n;
		}
		return fed;
	}
	std::string take()
	{
		std::string o = s->output();
		s->output_consumed(o.size());
		return o;
	}
	std::string cmd(std::string_view line)
	{
		feed(line);
		return take();
	}
	// EHLO, MAIL and one RCPT, all answered Ok.
	void envelope(std::string_view rcpt = "<c@d.example>")
	{
		expect_eq(cmd("EHLO client.example\r\n").substr(0, 4), "250-");
		expect_eq(cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
		expect_eq(cmd("RCPT TO:"s + std::string(rcpt) + "\r\n"), "250 2.1.5 Ok\r\n");
	}
};

// The Received: header laim writes for a date string.
std::string received(const std::string& from, const std::string& with, const std::string& rcpt,
		     const std::string& date)
{
	std::string r = "Received: from " + from + "\r\n\tby mx.example (laim) with " + with + " id " + QUEUE_ID;
	if (!rcpt.empty())
		r += "\r\n\tfor <" + rcpt + ">";
	return r + "; " + date + "\r\n";
}

// RFC 5322 date of t in UTC, computed independently of the session.
std::string rfc5322_date(time_t t)
{
	static const char* wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char* mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	gmtime_r(&t, &tm);
	char b[64];
	snprintf(b, sizeof b, "%s, %d %s %d %02d:%02d:%02d +0000", wd[tm.tm_wday], tm.tm_mday, mon[tm.tm_mon],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return b;
}

// Checks that the spool holds exactly the Received: header and body,
// allowing the date of any second between before and now. time() reads
// the coarse clock, which may trail the session's system_clock by a
// tick across a second's turn: one second more is allowed.
void expect_spool(const Harness& h, const std::string& from, const std::string& with, const std::string& rcpt,
		  const std::string& body, time_t before)
{
	std::string got = h.be.spool_content();
	for (time_t t = before; t <= time(nullptr) + 1; t++)
		if (got == received(from, with, rcpt, rfc5322_date(t)) + body)
			return;
	expect_eq(got, received(from, with, rcpt, rfc5322_date(time(nullptr))) + body);
}

// Sends DATA and a message, returns the reply to the final dot.
std::string send_data(Harness& h, std::string_view message, size_t chunk = SIZE_MAX)
{
	expect_eq(h.cmd("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
	h.feed(message, chunk);
	return h.take();
}

}  // namespace

// ------------------------------------------------------------ STARTTLS

// RFC 3207 on a STARTTLS listener: offered in EHLO before TLS only; what
// follows the command in the same read is dropped unanswered (CVE-2011-0411);
// nothing is read until the handshake is done; then the session starts over.
START_TEST(test_starttls)
{
	Harness h(ClientInfo{"192.0.2.1", std::nullopt, "", true});
	h.start();
	std::string ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.find("\r\n250-STARTTLS\r\n") != std::string::npos, "%s", escape(ehlo).c_str());
	expect_eq(h.cmd("STARTTLS now\r\n"), "501 5.5.4 Syntax error: no arguments allowed\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("STARTTLS\r\nRSET\r\nMAIL FROM:<x@y.example>\r\n"), "220 2.0.0 Ready to start TLS\r\n");
	ck_assert(h.s->starttls_wanted());
	ck_assert(!h.s->tls_active());
	ck_assert(!h.s->has_pending_input());
	ck_assert_uint_eq(h.s->input_space().second, 0);
	expect_eq(h.be.joined(), "mail:a@b.example;abort;");
	h.s->tls_started();
	ck_assert(h.s->tls_active());
	ck_assert(!h.s->starttls_wanted());
	expect_eq(h.take(), "");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
	ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.rfind("250-mx.example\r\n", 0) == 0 && ehlo.find("STARTTLS") == std::string::npos, "%s",
		      escape(ehlo).c_str());
	expect_eq(h.cmd("STARTTLS\r\n"), "503 5.5.1 Error: TLS already active\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;abort;");
}
END_TEST

// Without tls: starttls on the listener, STARTTLS is what it was before.
START_TEST(test_starttls_not_offered)
{
	Harness h;
	h.start();
	ck_assert(h.cmd("EHLO client.example\r\n").find("STARTTLS") == std::string::npos);
	expect_eq(h.cmd("STARTTLS\r\n"), "500 5.5.2 Command unrecognized\r\n");
	ck_assert(!h.s->starttls_wanted());
}
END_TEST

// A STARTTLS listener whose certificate did not load: STARTTLS is still
// offered and gets 454 (RFC 3207 4), as do AUTH and MAIL that need TLS
// on an auth: required listener; the session goes on in the clear.
START_TEST(test_starttls_unavailable)
{
	Harness h(ClientInfo{"192.0.2.7", std::nullopt, "", true, 1, true, true});
	h.start();
	const char* unavailable = "454 4.7.0 TLS not available due to temporary reason\r\n";
	std::string ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.find("\r\n250-STARTTLS\r\n") != std::string::npos, "%s", escape(ehlo).c_str());
	expect_eq(h.cmd("MAIL FROM:<alice@example.org>\r\n"), unavailable);
	expect_eq(h.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), unavailable);
	expect_eq(h.cmd("STARTTLS\r\n"), unavailable);
	ck_assert(!h.s->starttls_wanted());
	expect_eq(h.cmd("NOOP\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.be.joined(), "");
}
END_TEST

// ------------------------------------------------------------ greeting

START_TEST(test_greeting)
{
	Harness h;
	h.s = std::make_unique<Session>(h.be, h.settings, h.client, 1);
	ck_assert_uint_eq(h.s->id(), 1);
	h.s->greet();
	expect_eq(h.take(), "220 mx.example ESMTP laim 0.1.0\r\n");
	ck_assert(!h.s->closing());
}
END_TEST

START_TEST(test_pregreet)
{
	Harness h;
	h.s = std::make_unique<Session>(h.be, h.settings, h.client, 1);
	h.s->pregreet();
	std::string o = h.take();
	ck_assert_msg(o.rfind("554 5.5.1 ", 0) == 0 && o.ends_with("\r\n"), "%s", escape(o).c_str());
	ck_assert(h.s->closing());
}
END_TEST

// ------------------------------------------------------------ HELO/EHLO

START_TEST(test_ehlo)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("EHLO client.example\r\n"),
		  "250-mx.example\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
		  "250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
	expect_eq(h.s->helo(), "client.example");
	expect_eq(h.cmd("HELO other.example\r\n"), "250 mx.example\r\n");
	expect_eq(h.s->helo(), "other.example");
	expect_eq(h.cmd("EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
	expect_eq(h.cmd("HELO\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
	// Only a domain or an address literal goes into Received: (4.1.1.1).
	std::vector<std::string> bad_names = {
		"two words", "b\xc3\xbc" "cher", std::string(254, 'h'), "-lead.example", "trail-.example",
		"a..b", "dot.", ".dot", "under_score.example", "a;b", "x(y)", std::string(64, 'l') + ".example",
		"[300.1.1.1]", "[IPv6:::g]", "[tag:x]", "[127.0.0.1", "127.0.0.1]"};
	for (const std::string& bad : bad_names) {
		expect_eq(h.cmd("EHLO " + bad + "\r\n"), "501 5.5.4 Invalid domain name\r\n");
		expect_eq(h.cmd("HELO " + bad + "\r\n"), "501 5.5.4 Invalid domain name\r\n");
	}
	expect_eq(h.s->helo(), "other.example");
	std::vector<std::string> good_names = {"[127.0.0.1]", "[IPv6:::1]", "[ipv6:2001:db8::1]", "localhost", "x",
					       "0.example", std::string(63, 'l') + ".example", "a-b.c-d.example"};
	for (const std::string& good : good_names) {
		expect_eq(h.cmd("ehlo " + good + "\r\n").substr(0, 15), "250-mx.example\r");
		expect_eq(h.s->helo(), good);
	}
}
END_TEST

START_TEST(test_ehlo_no_limit_no_utf8)
{
	Harness h;
	h.settings.size_limit = 0;
	h.settings.smtputf8 = false;
	h.start();
	expect_eq(h.cmd("EHLO client.example\r\n"),
		  "250-mx.example\r\n250-SIZE\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SMTPUTF8\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	// No limit: any declared size goes.
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n"), "250 2.1.0 Ok\r\n");
}
END_TEST

// ------------------------------------------------------------ simple commands

START_TEST(test_simple_commands)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("NOOP\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("noop anything\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("RSET x\r\n"), "501 5.5.4 Syntax error: no arguments allowed\r\n");
	expect_eq(h.cmd("VRFY root\r\n"), "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	expect_eq(h.cmd("VRFY\r\n"), "501 5.5.4 Syntax: VRFY address\r\n");
	std::string help = h.cmd("HELP\r\n");
	ck_assert_msg(help.rfind("214-2.0.0 ", 0) == 0 && help.find("\r\n214 2.0.0 ") != std::string::npos,
		      "%s", escape(help).c_str());
	expect_eq(h.cmd("EXPN staff\r\n"), "500 5.5.2 Command unrecognized\r\n");
	expect_eq(h.cmd("STARTTLS\r\n"), "500 5.5.2 Command unrecognized\r\n");
	expect_eq(h.cmd("\r\n"), "500 5.5.2 Command unrecognized\r\n");
	expect_eq(h.cmd("NOOPX\r\n"), "500 5.5.2 Command unrecognized\r\n");
	expect_eq(h.cmd("QUIT now\r\n"), "501 5.5.4 Syntax error: no arguments allowed\r\n");
	ck_assert(h.be.calls.empty());
	expect_eq(h.cmd("qUiT\r\n"), "221 2.0.0 Bye\r\n");
	ck_assert(h.s->closing());
	// Nothing is read or answered after that.
	ck_assert_uint_eq(h.s->input_space().second, 0);
	expect_eq(h.cmd("NOOP\r\n"), "");
	ck_assert(h.be.calls.empty());
}
END_TEST

// RFC 5321 2.3.8: a command line ends at CRLF only; a line with a bare
// LF or CR is answered and not run, and the session goes on.
START_TEST(test_bare_lf_and_trailing_space)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("NOOP\n"), "500 5.5.2 Line must end with CRLF\r\n");
	expect_eq(h.cmd("\n"), "500 5.5.2 Line must end with CRLF\r\n");
	expect_eq(h.cmd("HELO x \r\n"), "250 mx.example\r\n");
	expect_eq(h.cmd("NOOP\r\r\n"), "500 5.5.2 Line must end with CRLF\r\n");
	expect_eq(h.cmd("HELO y\rMAIL FROM:<a@b.example>\r\n"), "500 5.5.2 Line must end with CRLF\r\n");
	// A bare LF ends nothing: what follows it is read as the next line.
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n"),
		  "500 5.5.2 Line must end with CRLF\r\n503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.s->helo(), "x");
	ck_assert(h.be.calls.empty());
	expect_eq(h.cmd("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}
END_TEST

START_TEST(test_case_insensitive)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("ehlo x\r\n").substr(0, 4), "250-");
	expect_eq(h.cmd("mail from:<a@b.example> size=10 body=8bitmime\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("rCpT tO:<c@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("DaTa\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
	expect_eq(h.cmd(".\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
}
END_TEST

START_TEST(test_nul_in_command)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("NO\0OP\r\n"s), "501 5.5.2 NUL character in command\r\n");
	expect_eq(h.cmd("EHLO x\r\n").substr(0, 4), "250-");
	expect_eq(h.cmd("MAIL FROM:<a@b.example\0>\r\n"s), "501 5.5.2 NUL character in command\r\n");
	ck_assert(h.be.calls.empty());
}
END_TEST

// ------------------------------------------------------------ sequence

START_TEST(test_wrong_order)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
	expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.cmd("DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.cmd("EHLO x\r\n").substr(0, 4), "250-");
	expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.cmd("DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "503 5.5.1 Error: nested MAIL command\r\n");
	expect_eq(h.cmd("DATA\r\n"), "503 5.5.1 Error: need RCPT command\r\n");
	h.be.reject_rcpts.insert("nobody@d.example");
	expect_eq(h.cmd("RCPT TO:<nobody@d.example>\r\n"), "550 5.1.1 Recipient address rejected: user unknown\r\n");
	expect_eq(h.cmd("DATA\r\n"), "554 5.5.1 Error: no valid recipients\r\n");
	expect_eq(h.cmd("DATA x\r\n"), "501 5.5.4 Syntax error: no arguments allowed\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:nobody@d.example;");
}
END_TEST

// ------------------------------------------------------------ MAIL

START_TEST(test_mail_syntax)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	expect_eq(h.cmd("MAIL FROM:a@b.example\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL FROM:  <a@b.example>\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL TO:<a@b.example>\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>junk\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@@b.example>\r\n"), "553 5.1.7 Bad sender address syntax\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example\r>\r\n"), "500 5.5.2 Line must end with CRLF\r\n");
	expect_eq(h.cmd("MAIL FROM:<a\t@b.example>\r\n"), "553 5.1.7 Bad sender address syntax\r\n");
	expect_eq(h.cmd("MAIL FROM:<a b@b.example>\r\n"), "553 5.1.7 Bad sender address syntax\r\n");
	ck_assert(h.be.calls.empty());
	// One space after the colon is tolerated.
	expect_eq(h.cmd("MAIL FROM: <a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.s->sender(), "a@b.example");
	expect_eq(h.be.joined(), "mail:a@b.example;");
}
END_TEST

START_TEST(test_mail_null_route_bare)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	expect_eq(h.cmd("MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("MAIL FROM:<@relay.example,@r2.example:a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("MAIL FROM:<root>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<root>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<@hop.example:alice>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.be.joined(), "mail:;abort;mail:a@b.example;abort;mail:root;rcpt:root;rcpt:alice;");
	ck_assert_uint_eq(h.s->recipients().size(), 2);
}
END_TEST

START_TEST(test_mail_params)
{
	Harness h;
	h.settings.size_limit = 1000;
	h.start();
	h.cmd("EHLO x\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=1001\r\n"), "552 5.3.4 Message size exceeds fixed limit\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n"),
		  "552 5.3.4 Message size exceeds fixed limit\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=abc\r\n"), "501 5.5.4 Syntax error in parameters\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=\r\n"), "501 5.5.4 Syntax error in parameters\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=-1\r\n"), "501 5.5.4 Syntax error in parameters\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> BODY\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> AUTH=<>\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	ck_assert(h.be.calls.empty());
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=1000 BODY=7BIT SMTPUTF8\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> BODY=8BITMIME\r\n"), "250 2.1.0 Ok\r\n");
}
END_TEST

// RFC 5321 4.1.1.11 and 3.3: MAIL parameters belong to the extensions
// EHLO announced; after HELO they get 555 and the session goes on.
START_TEST(test_mail_params_need_ehlo)
{
	Harness h;
	h.start();
	h.cmd("HELO x\r\n");
	for (const char* p : {"SIZE=10", "BODY=8BITMIME", "SMTPUTF8", "FOO=bar", "SIZE=10 BODY=7BIT"})
		expect_eq(h.cmd("MAIL FROM:<a@b.example> "s + p + "\r\n"), "555 5.5.4 MAIL parameters need EHLO\r\n");
	ck_assert(h.be.calls.empty());
	expect_eq(h.cmd("MAIL FROM:<a@b.example> \r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("EHLO x\r\n").substr(0, 4), "250-");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> SIZE=10\r\n"), "250 2.1.0 Ok\r\n");
}
END_TEST

START_TEST(test_mail_backend_status)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	h.be.mail_st = BackendStatus::Full;
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "452 4.3.1 Insufficient system storage, try again later\r\n");
	expect_eq(h.s->sender(), "");
	h.be.mail_st = BackendStatus::Unavailable;
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "451 4.3.0 Local error in processing, try again later\r\n");
	h.be.mail_st = BackendStatus::Error;
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "451 4.3.0 Local error in processing, try again later\r\n");
	h.be.mail_st = BackendStatus::RateLimited;
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "451 4.7.1 rate limit exceeded; try again later\r\n");
	expect_eq(h.s->sender(), "");
	h.be.mail_text = "rate limit: 3 messages in 5 s from uid 1000 (alice); try again later";
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"),
		  "451 4.7.1 rate limit: 3 messages in 5 s from uid 1000 (alice); try again later\r\n");
	// No transaction was opened: RCPT is out of order, RSET aborts nothing.
	expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	h.be.mail_st = BackendStatus::Ok;
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;mail:a@b.example;mail:a@b.example;mail:a@b.example;mail:a@b.example;"
		  "mail:a@b.example;");
}
END_TEST

// ------------------------------------------------------------ RCPT

START_TEST(test_rcpt)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	h.cmd("MAIL FROM:<a@b.example>\r\n");
	expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("RCPT TO: <e@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	expect_eq(h.cmd("RCPT TO:<c@d..example>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	expect_eq(h.cmd("RCPT TO:c@d.example\r\n"), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	expect_eq(h.cmd("RCPT FROM:<c@d.example>\r\n"), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	expect_eq(h.cmd("RCPT TO:<c@d.example> NOTIFY=NEVER\r\n"), "555 5.5.4 RCPT parameters are not supported\r\n");
	expect_eq(h.cmd("RCPT TO:<\"x\ty\"@d.example>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	h.be.rcpt_st = BackendStatus::Reject;
	expect_eq(h.cmd("RCPT TO:<r@d.example>\r\n"), "550 5.1.1 Recipient address rejected: user unknown\r\n");
	h.be.rcpt_st = BackendStatus::Defer;
	expect_eq(h.cmd("RCPT TO:<r@d.example>\r\n"), "451 4.3.0 Recipient temporarily unavailable, try again later\r\n");
	h.be.rcpt_st = BackendStatus::Unavailable;
	expect_eq(h.cmd("RCPT TO:<r@d.example>\r\n"), "451 4.3.0 Recipient temporarily unavailable, try again later\r\n");
	ck_assert_uint_eq(h.s->recipients().size(), 2);
	expect_eq(h.s->recipients()[0], "c@d.example");
	expect_eq(h.s->recipients()[1], "e@d.example");
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;rcpt:e@d.example;rcpt:r@d.example;"
				 "rcpt:r@d.example;rcpt:r@d.example;");
}
END_TEST

START_TEST(test_rcpt_limit)
{
	Harness h;
	h.start();
	ck_assert_uint_eq(h.settings.max_rcpts, 100);
	h.cmd("EHLO x\r\n");
	h.cmd("MAIL FROM:<a@b.example>\r\n");
	for (int i = 0; i < 100; i++)
		expect_eq(h.cmd("RCPT TO:<u" + std::to_string(i) + "@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<u100@d.example>\r\n"), "452 4.5.3 Too many recipients\r\n");
	ck_assert_uint_eq(h.s->recipients().size(), 100);
	ck_assert_int_eq(h.be.count("rcpt:"), 100);
	// A rejected recipient does not count against the limit.
	Harness k;
	k.settings.max_rcpts = 2;
	k.start();
	k.be.reject_rcpts.insert("bad@d.example");
	k.cmd("EHLO x\r\n");
	k.cmd("MAIL FROM:<a@b.example>\r\n");
	expect_eq(k.cmd("RCPT TO:<bad@d.example>\r\n").substr(0, 4), "550 ");
	expect_eq(k.cmd("RCPT TO:<1@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(k.cmd("RCPT TO:<2@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(k.cmd("RCPT TO:<3@d.example>\r\n"), "452 4.5.3 Too many recipients\r\n");
}
END_TEST

START_TEST(test_utf8_addresses)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	expect_eq(h.cmd("MAIL FROM:<用户@例子.广告>\r\n"), "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	expect_eq(h.cmd("MAIL FROM:<a\xff@b.example> SMTPUTF8\r\n"), "553 5.1.7 Bad sender address syntax\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<jörg@bücher.example>\r\n"), "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	expect_eq(h.cmd("MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<jörg@bücher.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(h.cmd("RCPT TO:<j\xc2\x85@b.example>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	// A right-to-left override (U+202E) or a line separator (U+2028).
	expect_eq(h.cmd("RCPT TO:<j\xe2\x80\xaegpj.exe@b.example>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	expect_eq(h.cmd("RCPT TO:<j\xe2\x80\xa8x@b.example>\r\n"), "553 5.1.3 Bad recipient address syntax\r\n");
	time_t before = time(nullptr);
	expect_eq(send_data(h, "x\r\n.\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
	expect_spool(h, "x (127.0.0.1)", "UTF8SMTP", "jörg@bücher.example", "x\r\n", before);
	expect_eq(h.be.joined(), "mail:a@b.example;abort;mail:用户@例子.广告;rcpt:jörg@bücher.example;data;commit:" +
				 std::to_string(h.be.spool_content().size()) + ";");
}
END_TEST

// ------------------------------------------------------------ aborts

START_TEST(test_abort_points)
{
	const char* resets[] = {"RSET\r\n", "HELO y\r\n", "EHLO y\r\n"};
	for (const char* r : resets) {
		Harness h;
		h.start();
		h.envelope();
		std::string o = h.cmd(r);
		ck_assert_msg(o.rfind("250", 0) == 0, "%s", escape(o).c_str());
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;abort;");
		ck_assert(h.s->recipients().empty());
		ck_assert(h.s->sender().empty());
		expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	}
	{
		Harness h;
		h.start();
		h.envelope();
		expect_eq(h.cmd("QUIT\r\n"), "221 2.0.0 Bye\r\n");
		ck_assert(h.s->closing());
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;abort;");
		h.s->disconnected();  // no second abort
		ck_assert_int_eq(h.be.count("abort"), 1);
	}
	{
		Harness h;
		h.start();
		h.envelope();
		h.s->disconnected();
		ck_assert(h.s->closing());
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;abort;");
	}
	{
		// Without an accepted MAIL there is nothing to abort.
		Harness h;
		h.start();
		h.cmd("EHLO x\r\n");
		h.cmd("RSET\r\n");
		h.cmd("QUIT\r\n");
		h.s->disconnected();
		ck_assert(h.be.calls.empty());
	}
	{
		// Disconnect in the middle of the data: abort with the spool closed.
		Harness h;
		h.start();
		h.envelope();
		send_data(h, "partial line\r\n");
		h.s->disconnected();
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
		ck_assert(h.be.spool_closed_at_end);
	}
}
END_TEST

// ------------------------------------------------------------ line limits

START_TEST(test_command_line_length)
{
	Harness h;
	h.start();
	// 512 octets with CRLF is the limit (RFC 5321 4.5.3.1.4).
	std::string ok = "NOOP " + std::string(505, 'x') + "\r\n";
	ck_assert_uint_eq(ok.size(), 512);
	expect_eq(h.cmd(ok), "250 2.0.0 Ok\r\n");
	std::string tl = "NOOP " + std::string(506, 'x') + "\r\n";
	expect_eq(h.cmd(tl), "500 5.5.2 Line too long\r\n");
	// Same, arriving a byte at a time, then a normal command.
	h.feed(tl + "NOOP\r\n", 1);
	expect_eq(h.take(), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	// A long MAIL line is not executed.
	h.cmd("EHLO x\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example> " + std::string(600, ' ') + "\r\n"), "500 5.5.2 Line too long\r\n");
	ck_assert(h.be.calls.empty());
}
END_TEST

START_TEST(test_long_line_flat_memory)
{
	Harness h;
	h.start();
	const size_t MiB = 1 << 20;
	std::string chunk(8192, 'A');
	size_t sent = 0, max_space = 0;
	while (sent < MiB) {
		auto [p, n] = h.s->input_space();
		ck_assert_uint_gt(n, 0);
		max_space = std::max(max_space, n);
		ck_assert_uint_le(n, 4096);
		n = std::min(n, MiB - sent);
		memcpy(p, chunk.data(), n);
		h.s->input_commit(n);
		sent += n;
		ck_assert_uint_le(h.s->output().size(), 64);
		ck_assert(!h.s->has_pending_input() || sent < 512);
	}
	ck_assert_uint_eq(max_space, 4096);
	expect_eq(h.take(), "500 5.5.2 Line too long\r\n");
	// The rest of the line up to its LF is dropped; then all is normal.
	h.feed("AAAA\r\nNOOP\r\n");
	expect_eq(h.take(), "250 2.0.0 Ok\r\n");
	ck_assert(!h.s->closing());
}
END_TEST

// ------------------------------------------------------------ pipelining

START_TEST(test_pipelining_sync)
{
	Harness h;
	h.start();
	h.be.reject_rcpts.insert("bad@d.example");
	h.feed("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<bad@d.example>\r\n"
	       "RCPT TO:<e@d.example>\r\nNOOP\r\nDATA\r\n");
	expect_eq(h.take(),
		  "250-mx.example\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n"
		  "250 ENHANCEDSTATUSCODES\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		  "550 5.1.1 Recipient address rejected: user unknown\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
		  "354 End data with <CR><LF>.<CR><LF>\r\n");
	// End of data, then QUIT in the same packet: fine after the 354.
	h.feed("body\r\n.\r\nQUIT\r\n");
	expect_eq(h.take(), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n221 2.0.0 Bye\r\n");
	expect_eq(h.be.joined(),
		  "mail:a@b.example;rcpt:c@d.example;rcpt:bad@d.example;rcpt:e@d.example;data;commit:" +
			  std::to_string(h.be.spool_content().size()) + ";");
}
END_TEST

START_TEST(test_pipelining_async)
{
	Harness h;
	h.be.async = true;
	h.start();
	h.feed("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nDATA\r\n");
	expect_eq(h.take().substr(0, 15), "250-mx.example\r");
	// MAIL is out; nothing else is processed until the backend answers.
	ck_assert(h.s->waiting());
	ck_assert(h.s->has_pending_input());
	expect_eq(h.be.joined(), "mail:a@b.example;");
	h.s->mail_reply(BackendStatus::Ok);
	expect_eq(h.take(), "250 2.1.0 Ok\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;");
	h.s->rcpt_reply(BackendStatus::Defer);
	expect_eq(h.take(), "451 4.3.0 Recipient temporarily unavailable, try again later\r\n");
	h.s->rcpt_reply(BackendStatus::Ok);
	expect_eq(h.take(), "250 2.1.5 Ok\r\n");
	ck_assert(h.s->waiting());
	ck_assert(!h.s->has_pending_input());
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;rcpt:e@d.example;data;");
	// Replies nobody waits for are ignored.
	h.s->mail_reply(BackendStatus::Ok);
	h.s->commit_reply(BackendStatus::Ok);
	expect_eq(h.take(), "");
	time_t before = time(nullptr);
	h.be.answer_data(*h.s);
	expect_eq(h.take(), "354 End data with <CR><LF>.<CR><LF>\r\n");
	ck_assert(!h.s->waiting());
	h.feed("Subject: hi\r\n\r\nbody\r\n.\r\nNOOP\r\n");
	ck_assert(h.s->waiting());
	expect_eq(h.take(), "");
	std::string body = "Subject: hi\r\n\r\nbody\r\n";
	expect_spool(h, "x (127.0.0.1)", "ESMTP", "e@d.example", body, before);
	ck_assert(h.be.spool_closed_at_end);
	h.s->commit_reply(BackendStatus::Ok);
	expect_eq(h.take(), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n250 2.0.0 Ok\r\n");
	ck_assert_int_eq(h.be.count("abort"), 0);
}
END_TEST

START_TEST(test_pipelining_after_data)
{
	// Synchronous backend: the body follows DATA in the same packet.
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	h.feed("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
	expect_eq(h.take(), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n503 5.5.0 Improper use of SMTP command pipelining\r\n");
	ck_assert(h.s->closing());
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
	ck_assert(h.be.spool_closed_at_end);
	expect_eq(h.be.spool_content(), "");

	// Asynchronous: bytes arrive while the backend prepares the spool.
	Harness k;
	k.be.async = true;
	k.start();
	k.cmd("EHLO x\r\n");
	k.feed("MAIL FROM:<a@b.example>\r\n");
	k.s->mail_reply(BackendStatus::Ok);
	k.feed("RCPT TO:<c@d.example>\r\n");
	k.s->rcpt_reply(BackendStatus::Ok);
	k.feed("DATA\r\n");
	k.take();
	k.feed("QUIT\r\n");
	k.be.answer_data(*k.s);
	expect_eq(k.take(), "503 5.5.0 Improper use of SMTP command pipelining\r\n");
	ck_assert(k.s->closing());
	expect_eq(k.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
	ck_assert(k.be.spool_closed_at_end);
}
END_TEST

START_TEST(test_output_backpressure)
{
	// A client that never reads its replies stops being read.
	Harness h;
	h.start();
	std::string ehlos;
	for (int i = 0; i < 4000; i++)
		ehlos += "EHLO x\r\n";
	size_t fed = h.feed(ehlos);
	ck_assert_uint_lt(fed, ehlos.size());
	ck_assert_uint_eq(h.s->input_space().second, 0);
	ck_assert_uint_lt(h.s->output().size(), 256 * 1024);
	h.take();
	ck_assert_uint_gt(h.s->input_space().second, 0);
}
END_TEST

// ------------------------------------------------------------ data

START_TEST(test_data_received_and_unstuffing)
{
	// The same message whole and a byte at a time: identical spool bytes.
	for (size_t chunk : {SIZE_MAX, size_t(1), size_t(3)}) {
		Harness h;
		h.start();
		h.envelope();
		time_t before = time(nullptr);
		std::string wire = "Subject: dots\r\n\r\n..leading\r\n...\r\n.x\r\n..\r\n\r\nend . \r\n.\r\n";
		std::string stored = "Subject: dots\r\n\r\n.leading\r\n..\r\nx\r\n.\r\n\r\nend . \r\n";
		expect_eq(send_data(h, wire, chunk), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
		expect_spool(h, "client.example (127.0.0.1)", "ESMTP", "c@d.example", stored, before);
		std::string all = h.be.spool_content();
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;commit:" + std::to_string(all.size()) + ";");
		ck_assert(h.be.spool_closed_at_end);
		// The transaction is over: a new one may start.
		ck_assert(h.s->recipients().empty());
		expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	}
}
END_TEST

START_TEST(test_data_empty_message)
{
	Harness h;
	h.start();
	h.envelope();
	time_t before = time(nullptr);
	expect_eq(send_data(h, ".\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
	expect_spool(h, "client.example (127.0.0.1)", "ESMTP", "c@d.example", "", before);
}
END_TEST

START_TEST(test_received_variants)
{
	{
		// HELO, two recipients: "with SMTP", no "for".
		Harness h;
		h.start();
		h.cmd("HELO old.example\r\n");
		h.cmd("MAIL FROM:<a@b.example>\r\n");
		h.cmd("RCPT TO:<c@d.example>\r\n");
		h.cmd("RCPT TO:<e@d.example>\r\n");
		time_t before = time(nullptr);
		expect_eq(send_data(h, "hi\r\n.\r\n").substr(0, 4), "250 ");
		expect_spool(h, "old.example (127.0.0.1)", "SMTP", "", "hi\r\n", before);
	}
	{
		// Local submission with the caller's uid and login.
		Harness h(ClientInfo{"local", 1000, "alice"});
		h.start();
		h.envelope("<root>");
		time_t before = time(nullptr);
		expect_eq(send_data(h, "hi\r\n.\r\n").substr(0, 4), "250 ");
		expect_spool(h, "client.example (local uid 1000 (alice))", "ESMTP", "root", "hi\r\n", before);
	}
	{
		// A login name cannot break the header.
		Harness h(ClientInfo{"local", 1001, "bad\r\nX-Injected: (yes)"});
		h.start();
		h.envelope();
		time_t before = time(nullptr);
		expect_eq(send_data(h, "hi\r\n.\r\n").substr(0, 4), "250 ");
		expect_spool(h, "client.example (local uid 1001 (bad__X-Injected:__yes_))", "ESMTP", "c@d.example",
			     "hi\r\n", before);
	}
	{
		Harness h(ClientInfo{"local", 0, ""});
		h.start();
		h.envelope();
		time_t before = time(nullptr);
		expect_eq(send_data(h, "hi\r\n.\r\n").substr(0, 4), "250 ");
		expect_spool(h, "client.example (local uid 0)", "ESMTP", "c@d.example", "hi\r\n", before);
	}
}
END_TEST

START_TEST(test_data_line_length)
{
	{
		// 998 octets + CRLF = 1000: accepted, never re-wrapped. A stuffed
		// line of 998 unstuffed octets is 1001 on the wire: accepted too.
		Harness h;
		h.start();
		h.envelope();
		std::string l998(998, 'x');
		std::string d998 = "." + std::string(997, 'y');
		expect_eq(send_data(h, l998 + "\r\n." + d998 + "\r\n.\r\n", 100).substr(0, 4), "250 ");
		std::string all = h.be.spool_content();
		ck_assert(all.ends_with("\r\n" + l998 + "\r\n" + d998 + "\r\n"));
	}
	{
		Harness h;
		h.start();
		h.envelope();
		expect_eq(send_data(h, std::string(999, 'x') + "\r\nnext\r\n.\r\n"),
			  "550 5.6.0 Message rejected: line longer than 1000 octets\r\n");
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
		ck_assert(h.be.spool_closed_at_end);
	}
	{
		// A huge line without end, fed in pieces: rejected at the real end.
		Harness h;
		h.start();
		h.envelope();
		send_data(h, "");
		std::string big(100000, 'z');
		for (int i = 0; i < 20; i++)
			h.feed(big);
		h.feed("\r\n.\r\n");
		expect_eq(h.take(), "550 5.6.0 Message rejected: line longer than 1000 octets\r\n");
		ck_assert_int_eq(h.be.count("abort"), 1);
		ck_assert_int_eq(h.be.count("commit"), 0);
	}
	{
		// The unix socket (sendmail) takes long lines as they are.
		Harness h({"local", 1000, "alice"});
		h.start();
		h.envelope();
		std::string big(300000, 'z');
		expect_eq(send_data(h, big + "\r\nnext\r\n.\r\n", 4096).substr(0, 4), "250 ");
		ck_assert(h.be.spool_content().ends_with("\r\n" + big + "\r\nnext\r\n"));
	}
}
END_TEST

START_TEST(test_data_nul)
{
	Harness h;
	h.start();
	h.envelope();
	expect_eq(send_data(h, "a\0b\r\n.\r\n"s), "554 5.6.0 Message rejected: NUL in data\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
	// Back to the ready state: a new transaction works.
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
}
END_TEST

START_TEST(test_data_size_limit)
{
	{
		// Exactly at the limit (unstuffed bytes, Received: not counted).
		Harness h;
		h.settings.size_limit = 100;
		h.start();
		h.envelope();
		time_t before = time(nullptr);
		std::string body = std::string(48, 'a') + "\r\n." + std::string(47, 'b') + "\r\n";  // 100 octets stored
		ck_assert_uint_eq(body.size(), 100);
		expect_eq(send_data(h, std::string(48, 'a') + "\r\n.." + std::string(47, 'b') + "\r\n.\r\n"),
			  "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
		expect_spool(h, "client.example (127.0.0.1)", "ESMTP", "c@d.example", body, before);
	}
	{
		Harness h;
		h.settings.size_limit = 100;
		h.start();
		h.envelope();
		expect_eq(send_data(h, std::string(99, 'a') + "\r\n.\r\n"), "552 5.3.4 Message size exceeds fixed limit\r\n");
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
	}
	{
		// Many lines past the limit: scanning continues to the real end.
		Harness h;
		h.settings.size_limit = 1000;
		h.start();
		h.envelope();
		std::string msg;
		for (int i = 0; i < 2000; i++)
			msg += "line of text\r\n";
		expect_eq(send_data(h, msg + ".\r\nNOOP\r\n"), "552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n");
		ck_assert_uint_lt(h.be.spool_content().size(), 1000);
		ck_assert_int_eq(h.be.count("commit"), 0);
	}
}
END_TEST

// The Received: fields of the header section, whatever the pieces the
// text comes in.
START_TEST(test_hop_counter)
{
	struct Row {
		const char* text;
		unsigned hops;
	} rows[] = {
	    {"", 0},
	    {"Received: a\r\n", 1},
	    {"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nbody\r\n", 2},
	    {"received: a\r\nRECEIVED: b\r\nReCeIvEd:c\r\n", 3},                   // any case
	    {"Received : a\r\nReceived\t: b\r\n", 2},                               // obs-optional WSP
	    {"Received: from a\r\n\tby b\r\n Received: c\r\n", 1},                 // folded
	    {"Subject: x\r\n\r\nReceived: in the body\r\n", 0},                    // after the empty line
	    {"\r\nReceived: x\r\n", 0},                                             // no header at all
	    {"X-Received: a\r\nReceived-SPF: b\r\nReceivedx: c\r\nReceived x: d\r\n", 0},
	    {"Subject: Received: a\r\nReceive: b\r\nReceived\r\nReceived: e\r\n", 1},
	    {"Received: a\r\n \r\nReceived: b\r\n", 2},  // a blank continuation line is not the empty line
	};
	for (const Row& r : rows) {
		std::string_view text = r.text;
		for (size_t chunk : {SIZE_MAX, size_t(1), size_t(3)}) {
			HopCounter c;
			for (size_t i = 0; i < text.size(); i += std::min(chunk, text.size() - i))
				c.feed(text.substr(i, chunk));
			ck_assert_msg(c.hops() == r.hops, "\"%s\" in pieces of %zu: %u Received: fields, want %u",
				      escape(text).c_str(), chunk, c.hops(), r.hops);
		}
	}
}
END_TEST

// More Received: fields than hop_count_limit: a mail loop, refused at the
// end of data and nothing kept; at the limit, queued. laim's own Received:
// does not count.
START_TEST(test_data_hop_limit)
{
	std::string three = "Received: a\r\nreceived: b\r\nRECEIVED: c\r\n\tfolded\r\n";
	{
		Harness h;
		h.settings.hop_count_limit = 3;
		h.start();
		h.envelope();
		std::string body = "Subject: x\r\n\r\nReceived: in the body\r\n";
		expect_eq(send_data(h, three + body + ".\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
		ck_assert_int_eq(h.be.count("commit"), 1);
	}
	for (size_t chunk : {SIZE_MAX, size_t(1)}) {
		Harness h;
		h.settings.hop_count_limit = 3;
		h.start();
		h.envelope();
		expect_eq(send_data(h, three + "Received: d\r\n\r\nbody\r\n.\r\nNOOP\r\n", chunk),
			  "554 5.4.6 Message rejected: too many hops (4 Received: headers): mail loop?\r\n"
			  "250 2.0.0 Ok\r\n");
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
		// Back to the ready state: a new transaction works.
		expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	}
}
END_TEST

START_TEST(test_data_large_streams)
{
	// Several times the write buffer: every byte arrives once, in order.
	Harness h;
	h.settings.size_limit = 0;
	h.start();
	h.envelope();
	time_t before = time(nullptr);
	std::string body;
	for (int i = 0; body.size() < 300000; i++)
		body += "line " + std::to_string(i) + " of a long message\r\n";
	expect_eq(send_data(h, body + ".\r\n", 1000), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
	expect_spool(h, "client.example (127.0.0.1)", "ESMTP", "c@d.example", body, before);
	ck_assert_int_eq(h.be.count("commit:" + std::to_string(h.be.spool_content().size())), 1);
}
END_TEST

START_TEST(test_data_write_error)
{
	Harness h;
	h.be.readonly_spool = true;
	h.start();
	h.envelope();
	expect_eq(send_data(h, "hello\r\n.\r\n"), "451 4.3.0 Local error in processing, try again later\r\n");
	expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
	ck_assert(h.be.spool_closed_at_end);
}
END_TEST

START_TEST(test_data_backend_failures)
{
	{
		Harness h;
		h.be.data_st = BackendStatus::Unavailable;
		h.start();
		h.envelope();
		expect_eq(h.cmd("DATA\r\n"), "451 4.3.0 Local error in processing, try again later\r\n");
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
		// Back to ready: no transaction.
		expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
		expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	}
	struct {
		BackendStatus st;
		const char* reply;
	} commits[] = {
		{BackendStatus::TooBig, "552 5.3.4 Message size exceeds fixed limit\r\n"},
		{BackendStatus::Error, "451 4.3.0 Local error in processing, try again later\r\n"},
		{BackendStatus::Unavailable, "451 4.3.0 Local error in processing, try again later\r\n"},
		{BackendStatus::Full, "451 4.3.0 Local error in processing, try again later\r\n"},
	};
	for (const auto& c : commits) {
		Harness h;
		h.be.commit_st = c.st;
		h.start();
		h.envelope();
		expect_eq(send_data(h, "hi\r\n.\r\n"), c.reply);
		ck_assert_int_eq(h.be.count("commit:"), 1);
		ck_assert_int_eq(h.be.count("abort"), 0);
		expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	}
}
END_TEST

// SMTP smuggling: a message ended with anything but CRLF "." CRLF must not
// end there. Each ending is followed by a smuggled second transaction;
// the session must see one message, refuse it at the real end, and never
// start the smuggled transaction.
START_TEST(test_smuggling)
{
	struct {
		std::string ending;
		const char* reply;
	} cases[] = {
		{"\n.\n", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\n.\r\n", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r\n.\n", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r.\r\n", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r\n.\r", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r.\r", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r.\n", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\n.\r", "550 5.6.0 Message rejected: bare CR or LF in data\r\n"},
		{"\r\n\0.\r\n"s, "554 5.6.0 Message rejected: NUL in data\r\n"},
	};
	const std::string smuggled = "MAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\nsmuggled\r\n.\r\n";
	for (const auto& c : cases) {
		for (size_t chunk : {SIZE_MAX, size_t(1)}) {
			Harness h;
			h.start();
			h.envelope();
			std::string o = send_data(h, "Subject: t\r\n\r\nhello" + c.ending + smuggled, chunk);
			ck_assert_msg(o == c.reply, "ending \"%s\" chunk %zu: got \"%s\"", escape(c.ending).c_str(), chunk,
				      escape(o).c_str());
			expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
			ck_assert(h.be.spool_closed_at_end);
			// Nothing of the rejected message, smuggled part least of all,
			// stays in the spool file.
			ck_assert(h.be.spool_content().find("smuggled") == std::string::npos);
			ck_assert(!h.s->closing());
			ck_assert(!h.s->has_pending_input());
			// Ready for a real transaction again.
			expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
		}
	}
}
END_TEST

// The control case of the test above: with a real CRLF.CRLF the second
// transaction is legitimate and does happen.
START_TEST(test_smuggling_control)
{
	Harness h;
	h.start();
	h.envelope();
	std::string o = send_data(h, "hello\r\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n");
	expect_eq(o, "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		     "354 End data with <CR><LF>.<CR><LF>\r\n");
	ck_assert_int_eq(h.be.count("mail:"), 2);
}
END_TEST

START_TEST(test_no_allocation_steady_state)
{
	// After a first transaction has sized the buffers, further ones of the
	// same shape allocate nothing: not per line, not per message.
	Harness h;
	h.start();
	h.be.record = false;
	std::string body;
	for (int i = 0; i < 200; i++)
		body += "line " + std::to_string(i) + " of the message, with ..dots\r\n";
	std::string txn = "MAIL FROM:<sender@example.org> SIZE=20000\r\nRCPT TO:<first.recipient@example.org>\r\n"
			  "RCPT TO:<second.recipient@example.org>\r\nNOOP\r\nDATA\r\n";
	std::string data = body + ".\r\n";
	h.cmd("EHLO client.example\r\n");
	auto one = [&] {
		h.feed(txn);
		h.s->output_consumed(h.s->output().size());
		h.feed(data, 777);
		h.s->output_consumed(h.s->output().size());
	};
	one();
	one();
#ifdef TEST_ASAN
	ck_assert_int_ne(hooks_installed, 0);
#endif
	unsigned long before = allocations;
	for (int i = 0; i < 10; i++)
		one();
	unsigned long used = allocations - before;
	ck_assert_msg(used == 0, "%lu allocations in 10 transactions", used);
	// And the transactions did happen.
	h.be.record = true;
	one();
	expect_eq(h.be.joined(), "mail:sender@example.org;rcpt:first.recipient@example.org;"
				 "rcpt:second.recipient@example.org;data;commit:" +
				 std::to_string(h.be.spool_content().size()) + ";");
}
END_TEST

// ------------------------------------------------------------ timeout, shutdown

START_TEST(test_timeout)
{
	{
		Harness h;
		h.start();
		h.s->timeout();
		expect_eq(h.take(), "421 4.4.2 mx.example Error: timeout exceeded\r\n");
		ck_assert(h.s->closing());
		ck_assert(h.be.calls.empty());
	}
	{
		Harness h;
		h.start();
		h.envelope();
		send_data(h, "half a message\r\n");
		h.s->timeout();
		expect_eq(h.take(), "421 4.4.2 mx.example Error: timeout exceeded\r\n");
		expect_eq(h.be.joined(), "mail:a@b.example;rcpt:c@d.example;data;abort;");
		ck_assert(h.be.spool_closed_at_end);
	}
}
END_TEST

START_TEST(test_shutdown_idle)
{
	Harness h;
	h.start();
	h.cmd("EHLO x\r\n");
	h.s->shutdown();
	expect_eq(h.take(), "421 4.3.2 mx.example Service shutting down\r\n");
	ck_assert(h.s->closing());
}
END_TEST

START_TEST(test_shutdown_in_transaction)
{
	Harness h;
	h.start();
	h.envelope();
	h.s->shutdown();
	expect_eq(h.take(), "");
	ck_assert(!h.s->closing());
	// The transaction goes on to its end...
	expect_eq(h.cmd("RCPT TO:<e@d.example>\r\n"), "250 2.1.5 Ok\r\n");
	expect_eq(send_data(h, "hi\r\n.\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
	// ...and the next command is refused.
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "421 4.3.2 mx.example Service shutting down\r\n");
	ck_assert(h.s->closing());
	ck_assert_int_eq(h.be.count("mail:"), 1);
	ck_assert_int_eq(h.be.count("abort"), 0);
}
END_TEST

START_TEST(test_shutdown_while_waiting)
{
	Harness h;
	h.be.async = true;
	h.start();
	h.cmd("EHLO x\r\n");
	h.feed("MAIL FROM:<a@b.example>\r\n");
	h.s->shutdown();
	expect_eq(h.take(), "");
	h.s->mail_reply(BackendStatus::Full);
	expect_eq(h.take(), "452 4.3.1 Insufficient system storage, try again later\r\n");
	expect_eq(h.cmd("NOOP\r\n"), "421 4.3.2 mx.example Service shutting down\r\n");
	ck_assert(h.s->closing());
}
END_TEST

START_TEST(test_reply_after_close)
{
	// The client left while MAIL was with the backend (in line for queue
	// room, say): the MAIL is aborted at once, and a reservation that
	// crossed the abort is given back too.
	Harness h;
	h.be.async = true;
	h.start();
	h.cmd("EHLO x\r\n");
	h.feed("MAIL FROM:<a@b.example>\r\n");
	h.s->disconnected();
	expect_eq(h.be.joined(), "mail:a@b.example;abort;");
	h.s->mail_reply(BackendStatus::Ok);
	expect_eq(h.be.joined(), "mail:a@b.example;abort;abort;");
	expect_eq(h.take(), "");
}
END_TEST

// The client shut its side right behind a MAIL still unanswered: it has
// left, and the MAIL goes at once. With commands behind the MAIL, it
// still gets the answers to all.
START_TEST(test_eof_behind_waiting_mail)
{
	{
		Harness h;
		h.be.async = true;
		h.start();
		h.cmd("EHLO x\r\n");
		h.feed("MAIL FROM:<a@b.example>\r\n");
		h.s->input_ended();
		ck_assert(h.s->closing());
		expect_eq(h.be.joined(), "mail:a@b.example;abort;");
		expect_eq(h.take(), "");
	}
	{
		Harness h;
		h.be.async = true;
		h.start();
		h.cmd("EHLO x\r\n");
		h.feed("MAIL FROM:<a@b.example>\r\nQUIT\r\n");
		h.s->input_ended();
		ck_assert(!h.s->closing());
		expect_eq(h.be.joined(), "mail:a@b.example;");
		h.s->mail_reply(BackendStatus::Ok);
		expect_eq(h.take(), "250 2.1.0 Ok\r\n221 2.0.0 Bye\r\n");
		ck_assert(h.s->closing());
		expect_eq(h.be.joined(), "mail:a@b.example;abort;");
	}
}
END_TEST

// ------------------------------------------------------------ AUTH

namespace {

// A session on a STARTTLS listener with auth: required; under TLS unless
// told otherwise. alice's password is "secret".
struct AuthHarness : Harness {
	explicit AuthHarness(bool tls = true)
	    : Harness(ClientInfo{"192.0.2.7", std::nullopt, "", true, 1, true})
	{
		be.passwords["alice"] = "secret";
		start();
		if (tls)
			s->tls_started();
	}
};

std::string b64(std::string_view s)
{
	static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	std::string r;
	for (size_t i = 0; i < s.size(); i += 3) {
		unsigned v = (unsigned char)s[i] << 16;
		if (i + 1 < s.size())
			v |= (unsigned char)s[i + 1] << 8;
		if (i + 2 < s.size())
			v |= (unsigned char)s[i + 2];
		r += a[v >> 18 & 63];
		r += a[v >> 12 & 63];
		r += i + 1 < s.size() ? a[v >> 6 & 63] : '=';
		r += i + 2 < s.size() ? a[v & 63] : '=';
	}
	return r;
}

const std::string plain_alice = b64("\0alice\0secret"s);

}  // namespace

// Before TLS: no AUTH in EHLO, AUTH refused, MAIL asks for STARTTLS.
// Under TLS: AUTH offered, MAIL asks for AUTH.
START_TEST(test_auth_needs_tls)
{
	AuthHarness h(false);
	std::string ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.find("AUTH") == std::string::npos, "%s", escape(ehlo).c_str());
	expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), "503 5.5.1 Error: authentication not enabled\r\n");
	expect_eq(h.cmd("MAIL FROM:<alice@example.org>\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
	h.s->tls_started();
	ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.find("\r\n250-AUTH PLAIN LOGIN\r\n") != std::string::npos, "%s", escape(ehlo).c_str());
	expect_eq(h.cmd("MAIL FROM:<alice@example.org>\r\n"), "530 5.7.0 Authentication required\r\n");
	expect_eq(h.cmd("RCPT TO:<c@d.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	expect_eq(h.be.joined(), "");
}
END_TEST

// A listener without auth: required, TLS or not: no AUTH, MAIL as today.
START_TEST(test_auth_not_on_plain_listener)
{
	Harness h;
	h.start();
	h.s->tls_started();
	std::string ehlo = h.cmd("EHLO client.example\r\n");
	ck_assert_msg(ehlo.find("AUTH") == std::string::npos, "%s", escape(ehlo).c_str());
	expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), "503 5.5.1 Error: authentication not enabled\r\n");
	expect_eq(h.cmd("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
}
END_TEST

START_TEST(test_auth_plain_and_login)
{
	const char* ok = "235 2.7.0 Authentication successful\r\n";
	{  // PLAIN with an initial response
		AuthHarness h;
		h.cmd("EHLO client.example\r\n");
		expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), ok);
		expect_eq(h.s->auth_user(), "alice");
		expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), "503 5.5.1 Error: already authenticated\r\n");
		expect_eq(h.cmd("MAIL FROM:<anyone@example.org>\r\n"), "250 2.1.0 Ok\r\n");
		expect_eq(h.be.joined(), "auth:alice:secret;mail:anyone@example.org;");
		expect_eq(h.cmd("AUTH LOGIN\r\n"), "503 5.5.1 Error: already authenticated\r\n");
	}
	{  // PLAIN after 334, authzid = authcid, lower-case mechanism
		AuthHarness h;
		h.cmd("EHLO client.example\r\n");
		expect_eq(h.cmd("auth plain\r\n"), "334 \r\n");
		expect_eq(h.cmd(b64("alice\0alice\0secret"s) + "\r\n"), ok);
	}
	{  // a response ending in a bare LF ends the exchange, unread
		AuthHarness h;
		h.cmd("EHLO client.example\r\n");
		expect_eq(h.cmd("AUTH PLAIN\r\n"), "334 \r\n");
		expect_eq(h.cmd(b64("alice\0alice\0secret"s) + "\n"), "500 5.5.2 Line must end with CRLF\r\n");
		expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\n"), "500 5.5.2 Line must end with CRLF\r\n");
		ck_assert(h.s->auth_user().empty());
		expect_eq(h.cmd("NOOP\r\n"), "250 2.0.0 Ok\r\n");
		expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), ok);
	}
	{  // LOGIN in three steps, and with the user as initial response
		AuthHarness h;
		h.cmd("EHLO client.example\r\n");
		expect_eq(h.cmd("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
		expect_eq(h.cmd(b64("alice") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
		expect_eq(h.cmd(b64("secret") + "\r\n"), ok);
		AuthHarness h2;
		h2.cmd("EHLO client.example\r\n");
		expect_eq(h2.cmd("AUTH LOGIN " + b64("alice") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
		expect_eq(h2.cmd(b64("secret") + "\r\n"), ok);
		expect_eq(h2.be.joined(), "auth:alice:secret;");
	}
}
END_TEST

START_TEST(test_auth_errors)
{
	AuthHarness h;
	// Only EHLO offers AUTH: after HELO, saying HELO again would not help.
	expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), "503 5.5.1 Error: send EHLO first\r\n");
	h.cmd("HELO client.example\r\n");
	expect_eq(h.cmd("AUTH PLAIN " + plain_alice + "\r\n"), "503 5.5.1 Error: send EHLO first\r\n");
	h.cmd("EHLO client.example\r\n");
	expect_eq(h.cmd("AUTH CRAM-MD5\r\n"), "504 5.5.4 Unrecognized authentication type\r\n");
	expect_eq(h.cmd("AUTH\r\n"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
	expect_eq(h.cmd("AUTH PLAIN\r\n"), "334 \r\n");
	expect_eq(h.cmd("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
	expect_eq(h.cmd("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	expect_eq(h.cmd("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
	for (const char* bad : {"AUTH PLAIN AGFsaWNl!HNlY3JldA==", "AUTH PLAIN AGFsaWNlAHNlY3JldA", "AUTH PLAIN =AGFsaWNlAHNlY3JldA",
				"AUTH PLAIN " /* "alice" alone: no NULs */ "YWxpY2U="})
		expect_eq(h.cmd(std::string(bad) + "\r\n"), "501 5.5.2 Cannot decode response\r\n");
	// None of these asked the parent or counted as a failure.
	expect_eq(h.be.joined(), "");
	expect_eq(h.cmd("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}
END_TEST

// A wrong password waits for the delay (input meanwhile waits too), then
// 535; the third failure ends the session with 421 4.7.0.
START_TEST(test_auth_failures)
{
	AuthHarness h;
	h.be.hold_delay = true;
	h.cmd("EHLO client.example\r\n");
	expect_eq(h.cmd("AUTH PLAIN " + b64("\0alice\0wrong"s) + "\r\nNOOP\r\n"), "");
	ck_assert(h.s->waiting());
	h.s->auth_delay_over();
	expect_eq(h.take(), "535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 Ok\r\n");
	// Acting for another user is a failure too, without asking the parent.
	expect_eq(h.cmd("AUTH PLAIN " + b64("bob\0alice\0secret"s) + "\r\n"), "");
	h.s->auth_delay_over();
	expect_eq(h.take(), "535 5.7.8 Authentication credentials invalid\r\n");
	expect_eq(h.cmd("AUTH LOGIN " + b64("mallory") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
	expect_eq(h.cmd(b64("secret") + "\r\n"), "");
	ck_assert(!h.s->closing());
	h.s->auth_delay_over();
	expect_eq(h.take(), "535 5.7.8 Authentication credentials invalid\r\n421 4.7.0 mx.example Error: too many failed "
			    "authentications\r\n");
	ck_assert(h.s->closing());
	expect_eq(h.be.joined(), "auth:alice:wrong;delay;delay;auth:mallory:secret;delay;");
	expect_eq(h.s->auth_user(), "");
}
END_TEST

// The senders file's patterns bind MAIL FROM; <> is always allowed.
START_TEST(test_auth_senders)
{
	AuthHarness h;
	h.be.senders_bound = true;
	h.be.senders = {"alice@example.org", "*@lists.example.org", "alice+*@example.org"};
	h.cmd("EHLO client.example\r\n");
	h.cmd("AUTH PLAIN " + plain_alice + "\r\n");
	for (const char* ok : {"alice@example.org", "ALICE@Example.ORG", "x@lists.example.org", "alice+tag@example.org", ""}) {
		expect_eq(h.cmd("MAIL FROM:<"s + ok + ">\r\n"), "250 2.1.0 Ok\r\n");
		expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	}
	for (const char* bad : {"bob@example.org", "alice@example.org.evil", "alice@lists.example.org.evil"})
		expect_eq(h.cmd("MAIL FROM:<"s + bad + ">\r\n"),
			  "553 5.7.1 <"s + bad + ">: sender not owned by user alice\r\n");
}
END_TEST

// RFC 4954 5: where AUTH is offered, MAIL's AUTH= (xtext, or <>) is
// taken and ignored, and its line may be 500 octets longer; bad xtext
// gets 501. Elsewhere AUTH= stays 555 (test_mail_params) and MAIL's
// line 512 octets.
START_TEST(test_auth_mail_param)
{
	AuthHarness h;
	h.cmd("EHLO client.example\r\n");
	h.cmd("AUTH PLAIN " + plain_alice + "\r\n");
	for (const char* ok : {"AUTH=<>", "auth=alice@example.org", "AUTH=alice+2Bx@example.org SIZE=10",
			       "BODY=8BITMIME AUTH=a+3Db@example.org"}) {
		expect_eq(h.cmd("MAIL FROM:<alice@example.org> "s + ok + "\r\n"), "250 2.1.0 Ok\r\n");
		expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	}
	for (const char* bad : {"AUTH=", "AUTH=a=b@example.org", "AUTH=a+2b@example.org", "AUTH=a+2", "AUTH=a\x7f",
				"AUTH=\xc3\xa9@example.org"})
		expect_eq(h.cmd("MAIL FROM:<alice@example.org> "s + bad + "\r\n"), "501 5.5.4 Syntax error in parameters\r\n");
	expect_eq(h.cmd("MAIL FROM:<alice@example.org> AUTH\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
	// 1012 octets with CRLF: the limit of a MAIL line here.
	std::string mail = "MAIL FROM:<alice@example.org> AUTH=" + std::string(963, 'x') + "@example.org";
	ck_assert_uint_eq(mail.size() + 2, 1012);
	expect_eq(h.cmd(mail + "\r\n"), "250 2.1.0 Ok\r\n");
	expect_eq(h.cmd("RSET\r\n"), "250 2.0.0 Ok\r\n");
	h.feed(mail + "x\r\nNOOP " + std::string(600, 'x') + "\r\n", 1);
	expect_eq(h.take(), "500 5.5.2 Line too long\r\n500 5.5.2 Line too long\r\n");
	expect_eq(h.be.joined(), "auth:alice:secret;mail:alice@example.org;abort;mail:alice@example.org;abort;"
				 "mail:alice@example.org;abort;mail:alice@example.org;abort;mail:alice@example.org;abort;");
	// Before TLS AUTH is not offered: the MAIL line has RFC 5321's limit.
	AuthHarness clear(false);
	clear.cmd("EHLO client.example\r\n");
	expect_eq(clear.cmd("MAIL FROM:<a@b.example> AUTH=<>" + std::string(500, ' ') + "\r\n"),
		  "500 5.5.2 Line too long\r\n");
}
END_TEST

// The guard against guessing across sessions: ten failures within the
// window hold the address off, IPv6 by its /64, every loopback address
// and each of the host's own as one, and checks in flight count; the window starts again after it;
// other addresses are not touched; the table stays bounded.
START_TEST(test_auth_guard)
{
	using Admit = AuthGuard::Admit;
	AuthGuard g;
	time_t t = 1000;
	for (unsigned i = 1; i < AUTH_GUARD_FAILURES; i++)
		ck_assert(!g.failed("192.0.2.1", t + i));
	ck_assert(g.admit("192.0.2.1", t + 20) == Admit::Check);
	ck_assert(g.failed("192.0.2.1", t + 20));
	ck_assert(g.admit("192.0.2.1", t + 21) == Admit::Held);
	ck_assert(g.admit("192.0.2.2", t + 21) == Admit::Check);
	ck_assert(g.admit("192.0.2.1", t + 20 + AUTH_GUARD_HOLD) == Admit::Check);

	// Failures spread wider than the window never add up to a hold.
	for (unsigned i = 0; i < 3 * AUTH_GUARD_FAILURES; i++)
		ck_assert(!g.failed("192.0.2.3", t + i * (AUTH_GUARD_WINDOW / (AUTH_GUARD_FAILURES - 1) + 1)));
	ck_assert(g.admit("192.0.2.3", t + 3 * AUTH_GUARD_FAILURES * AUTH_GUARD_WINDOW) == Admit::Check);

	// Each address of a /64 counts for it.
	for (unsigned i = 1; i <= AUTH_GUARD_FAILURES; i++)
		ck_assert_int_eq(g.failed("2001:db8:1:2::" + std::to_string(i), t), i == AUTH_GUARD_FAILURES);
	ck_assert(g.admit("2001:db8:1:2:ffff::1", t + 1) == Admit::Held);
	ck_assert(g.admit("2001:db8:1:3::1", t + 1) == Admit::Check);

	// 127.0.0.0/8, ::1 and the host's own addresses are this host, one
	// client; another address of the host's /64 is not the host.
	g.set_host_addresses({"192.0.2.50", "2001:db8:5::1"});
	const char* this_host[] = {"127.0.0.1", "127.0.0.2", "127.1.2.3", "::1", "192.0.2.50", "2001:db8:5::1"};
	for (unsigned i = 1; i <= AUTH_GUARD_FAILURES; i++)
		ck_assert_int_eq(g.failed(this_host[i % 6], t), i == AUTH_GUARD_FAILURES);
	for (const char* a : this_host)
		ck_assert_msg(g.admit(a, t + 1) == Admit::Held, "%s is not held with the other addresses of this host", a);
	ck_assert(g.admit("127.255.255.254", t + 1) == Admit::Held);
	ck_assert(g.admit("128.0.0.1", t + 1) == Admit::Check);
	ck_assert(g.admit("192.0.2.51", t + 1) == Admit::Check);
	ck_assert(g.admit("2001:db8:5::2", t + 1) == Admit::Check);

	// Checks in flight count as failures to come: parallel sessions get
	// no more tries than one after the other (a further AUTH waits); a
	// yes gives its place back.
	AuthGuard p;
	for (unsigned i = 1; i < AUTH_GUARD_FAILURES; i++)
		ck_assert(!p.failed("192.0.2.20", t));
	p.checking("192.0.2.20");
	ck_assert_msg(p.admit("192.0.2.20", t) == Admit::Wait, "a tenth check while nine failed and one is in flight");
	ck_assert(p.admit("192.0.2.21", t) == Admit::Check);
	ck_assert(p.admit("192.0.2.20", t + AUTH_GUARD_WINDOW) == Admit::Check);  // the nine are out of the window
	p.checked("192.0.2.20");
	ck_assert(p.admit("192.0.2.20", t) == Admit::Check);
	for (unsigned i = 0; i < AUTH_GUARD_FAILURES; i++) {
		ck_assert(p.admit("192.0.2.22", t) == Admit::Check);
		p.checking("192.0.2.22");
	}
	ck_assert_msg(p.admit("192.0.2.22", t) == Admit::Wait, "an eleventh check while ten are in flight");

	// A full table forgets what expired, and tracks no more while full.
	AuthGuard full;
	for (size_t i = 0; i < AUTH_GUARD_ADDRESSES; i++)
		full.failed("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), t);
	for (unsigned i = 0; i < AUTH_GUARD_FAILURES; i++)
		ck_assert(!full.failed("192.0.2.9", t + 1));
	for (unsigned i = 1; i < AUTH_GUARD_FAILURES; i++)
		ck_assert(!full.failed("192.0.2.9", t + AUTH_GUARD_WINDOW));
	ck_assert(full.failed("192.0.2.9", t + AUTH_GUARD_WINDOW));
}
END_TEST

// Received: names the user, and the protocol is ESMTPSA.
START_TEST(test_auth_received)
{
	AuthHarness h;
	h.cmd("EHLO client.example\r\n");
	h.cmd("AUTH PLAIN " + plain_alice + "\r\n");
	h.cmd("MAIL FROM:<alice@example.org>\r\n");
	h.cmd("RCPT TO:<c@d.example>\r\n");
	expect_eq(send_data(h, "Subject: x\r\n\r\nhi\r\n.\r\n"), "250 2.0.0 Ok: queued as "s + QUEUE_ID + "\r\n");
	std::string got = h.be.spool_content();
	std::string want = "Received: from client.example (192.0.2.7)\r\n\t(authenticated as alice)\r\n\tby mx.example "
			   "(laim) with ESMTPSA id "s + QUEUE_ID + "\r\n\tfor <c@d.example>; ";
	expect_eq(got.substr(0, want.size()), want);
	ck_assert(got.ends_with("\r\nSubject: x\r\n\r\nhi\r\n"));
}
END_TEST

#ifdef LAIM_SECCOMP_TRIGGER
START_TEST(test_seccomp_trigger)
{
	Harness h;
	h.start();
	expect_eq(h.cmd("XSECCOMP\r\n"), "250 2.0.0 Ok\r\n");
	ck_assert_int_eq(h.be.seccomp_triggers, 1);
}
END_TEST
#endif

int main()
{
	Suite* s = suite_create("session");
	TCase* tc = tcase_create("smtp");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_greeting);
	tcase_add_test(tc, test_starttls);
	tcase_add_test(tc, test_starttls_not_offered);
	tcase_add_test(tc, test_starttls_unavailable);
	tcase_add_test(tc, test_pregreet);
	tcase_add_test(tc, test_ehlo);
	tcase_add_test(tc, test_ehlo_no_limit_no_utf8);
	tcase_add_test(tc, test_simple_commands);
	tcase_add_test(tc, test_bare_lf_and_trailing_space);
	tcase_add_test(tc, test_case_insensitive);
	tcase_add_test(tc, test_nul_in_command);
	tcase_add_test(tc, test_wrong_order);
	tcase_add_test(tc, test_mail_syntax);
	tcase_add_test(tc, test_mail_null_route_bare);
	tcase_add_test(tc, test_mail_params);
	tcase_add_test(tc, test_mail_params_need_ehlo);
	tcase_add_test(tc, test_mail_backend_status);
	tcase_add_test(tc, test_rcpt);
	tcase_add_test(tc, test_rcpt_limit);
	tcase_add_test(tc, test_utf8_addresses);
	tcase_add_test(tc, test_abort_points);
	tcase_add_test(tc, test_command_line_length);
	tcase_add_test(tc, test_long_line_flat_memory);
	tcase_add_test(tc, test_pipelining_sync);
	tcase_add_test(tc, test_pipelining_async);
	tcase_add_test(tc, test_pipelining_after_data);
	tcase_add_test(tc, test_output_backpressure);
	tcase_add_test(tc, test_data_received_and_unstuffing);
	tcase_add_test(tc, test_data_empty_message);
	tcase_add_test(tc, test_received_variants);
	tcase_add_test(tc, test_data_line_length);
	tcase_add_test(tc, test_data_nul);
	tcase_add_test(tc, test_data_size_limit);
	tcase_add_test(tc, test_hop_counter);
	tcase_add_test(tc, test_data_hop_limit);
	tcase_add_test(tc, test_data_large_streams);
	tcase_add_test(tc, test_data_write_error);
	tcase_add_test(tc, test_data_backend_failures);
	tcase_add_test(tc, test_smuggling);
	tcase_add_test(tc, test_smuggling_control);
	tcase_add_test(tc, test_no_allocation_steady_state);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_shutdown_idle);
	tcase_add_test(tc, test_shutdown_in_transaction);
	tcase_add_test(tc, test_shutdown_while_waiting);
	tcase_add_test(tc, test_reply_after_close);
	tcase_add_test(tc, test_eof_behind_waiting_mail);
	tcase_add_test(tc, test_auth_needs_tls);
	tcase_add_test(tc, test_auth_not_on_plain_listener);
	tcase_add_test(tc, test_auth_plain_and_login);
	tcase_add_test(tc, test_auth_errors);
	tcase_add_test(tc, test_auth_failures);
	tcase_add_test(tc, test_auth_senders);
	tcase_add_test(tc, test_auth_mail_param);
	tcase_add_test(tc, test_auth_received);
	tcase_add_test(tc, test_auth_guard);
#ifdef LAIM_SECCOMP_TRIGGER
	tcase_add_test(tc, test_seccomp_trigger);
#endif
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
