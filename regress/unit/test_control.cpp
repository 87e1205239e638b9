// Unit tests of the control protocol: the daemon's answers (parsing,
// authorization, filtering, field sanitizing) with a fake target, the
// client against a real unix socket server thread, and the mailq layout
// byte for byte.
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/ctl.h"
#include "common/fd.h"
#include "handler/control.h"

#include <check.h>

using namespace laim;

// ck_assert_str_eq keeps a pointer past the end of the statement that made
// it; this copies both sides first, so temporaries can be compared.
#define check_str(X, Y)                                  \
	do {                                             \
		const std::string check_x_ = (X);        \
		const std::string check_y_ = (Y);        \
		ck_assert_str_eq(check_x_.c_str(), check_y_.c_str()); \
	} while (0)

namespace {

// A ControlTarget that records what the protocol asked of it.
class FakeTarget : public ControlTarget {
 public:
	std::vector<QueueItem> items;
	std::vector<FailedItem> failed_items;
	std::vector<std::pair<std::string, uint64_t>> counters;
	std::vector<std::string> present;  // ids remove() finds
	std::vector<std::string> removed;
	std::string alias_error;
	bool throw_on_queue = false;
	int queue_calls = 0, failed_calls = 0, stats_calls = 0, flush_calls = 0, reload_calls = 0;
	std::vector<std::optional<uid_t>> flush_owners;

	std::vector<QueueItem> queue() override
	{
		queue_calls++;
		if (throw_on_queue)
			throw std::runtime_error("cannot read queue/ABC: I/O error");
		return items;
	}
	std::map<uid_t, size_t> offline_files;  // by owner
	std::vector<std::optional<uid_t>> offline_asked;
	size_t offline(std::optional<uid_t> owner) override
	{
		offline_asked.push_back(owner);
		size_t n = 0;
		for (auto [uid, count] : offline_files)
			n += !owner || uid == *owner ? count : 0;
		return n;
	}
	std::string failed_error;  // what failed() reports instead of failed_items
	void failed(std::function<void(std::vector<FailedItem>, std::string)> done) override
	{
		failed_calls++;
		done(failed_error.empty() ? failed_items : std::vector<FailedItem>{}, failed_error);
	}
	std::vector<std::pair<std::string, uint64_t>> stats() override
	{
		stats_calls++;
		return counters;
	}
	void flush(std::optional<uid_t> owner) override
	{
		flush_calls++;
		flush_owners.push_back(owner);
	}
	std::string remove(const std::string& id) override
	{
		removed.push_back(id);
		return std::find(present.begin(), present.end(), id) != present.end() ? "" : "no such message";
	}
	std::string reload_aliases(std::string* loaded) override
	{
		reload_calls++;
		*loaded = "/srv/laim/aliases: 12 aliases";
		return alias_error;
	}
	std::vector<LimitItem> limit_items;
	std::vector<std::string> reset_keys;  // what reset_limit() was asked
	std::vector<LimitItem> limits() override { return limit_items; }
	bool reset_limit(const std::string& key) override
	{
		reset_keys.push_back(key);
		return key == "uid:1000";
	}
	// "inbox" exists; its verdict is given later, by finish_test().
	std::function<void(bool, std::string)> pending_test;
	bool test(const std::string& instance, std::function<void(bool, std::string)> done) override
	{
		if (instance != "inbox")
			return false;
		pending_test = std::move(done);
		return true;
	}
};

QueueItem item(std::string id, std::optional<uid_t> uid, std::string sender, std::vector<std::string> rcpts,
               unsigned attempts = 0, std::string last_error = "")
{
	QueueItem q;
	q.id = std::move(id);
	q.arrival = 1606011866;
	q.size = 1234;
	q.uid = uid;
	q.sender = std::move(sender);
	q.recipients = std::move(rcpts);
	q.attempts = attempts;
	q.last_error = std::move(last_error);
	return q;
}

FakeTarget sample_target()
{
	FakeTarget t;
	t.items.push_back(item("4F3A2C1B09", 0, "root@host.example", {"root"}));
	t.items.push_back(item("00000000A1", 1000, "alice@host.example", {"bob@example.org", "carol@example.org"},
	                       2, "connect to mx.example.org: Connection refused"));
	t.items.push_back(item("00000000B2", std::nullopt, "", {"root@host.example"}));
	t.items.push_back(item("00000000C3", 1001, "dave@host.example", {"root"}));
	return t;
}

size_t count(const std::string& s, char c) { return (size_t)std::count(s.begin(), s.end(), c); }

}  // namespace

// ------------------------------------------------------------ server side

START_TEST(test_show_queue_root)
{
	FakeTarget t = sample_target();
	check_str(control_answer("show queue\n", 0, t).c_str(),
	                 "OK\n"
	                 "4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t0\t\n"
	                 "00000000A1\t1606011866\t1234\t1000\talice@host.example\tbob@example.org,carol@example.org\t2\t"
	                 "connect to mx.example.org: Connection refused\n"
	                 "00000000B2\t1606011866\t1234\t-\t\troot@host.example\t0\t\n"
	                 "00000000C3\t1606011866\t1234\t1001\tdave@host.example\troot\t0\t\n");
	// The final "\n" is optional.
	check_str(control_answer("show queue", 0, t).c_str(), control_answer("show queue\n", 0, t).c_str());
}
END_TEST

START_TEST(test_show_queue_user_sees_own)
{
	FakeTarget t = sample_target();
	check_str(control_answer("show queue\n", 1000, t).c_str(),
	                 "OK\n"
	                 "00000000A1\t1606011866\t1234\t1000\talice@host.example\tbob@example.org,carol@example.org\t2\t"
	                 "connect to mx.example.org: Connection refused\n");
	check_str(control_answer("show queue\n", 1001, t).c_str(),
	                 "OK\n00000000C3\t1606011866\t1234\t1001\tdave@host.example\troot\t0\t\n");
	// Neither root's messages nor those without a uid (network) show.
	check_str(control_answer("show queue\n", 4242, t).c_str(), "OK\n");
}
END_TEST

START_TEST(test_show_queue_empty)
{
	FakeTarget t;
	check_str(control_answer("show queue\n", 0, t).c_str(), "OK\n");
	ck_assert_int_eq(t.queue_calls, 1);
}
END_TEST

// The files waiting in offline/: root counts all, a user their own.
START_TEST(test_show_offline)
{
	FakeTarget t;
	t.offline_files = {{0, 1}, {1000, 2}};
	check_str(control_answer("show offline\n", 0, t), "OK\n3\n");
	check_str(control_answer("show offline", 1000, t), "OK\n2\n");
	check_str(control_answer("show offline", 4242, t), "OK\n0\n");
	ck_assert(t.offline_asked == (std::vector<std::optional<uid_t>>{std::nullopt, 1000, 4242}));
}
END_TEST

START_TEST(test_show_failed)
{
	FakeTarget t;
	FailedItem f;
	f.id = "0123456789";
	f.arrival = 1604307907;
	f.size = 99;
	f.sender = "";
	f.recipients = {"x@example.org", "y@example.org"};
	f.reason = "handler mbox: /var/mail/x: Permission denied\nsecond line\n";
	t.failed_items.push_back(f);
	// The list comes later, through the reply (failed/ is read off the
	// main loop).
	std::string later;
	auto reply = [&later](std::string r) { later = std::move(r); };
	check_str(control_answer("show failed\n", 0, t, reply).c_str(), "");
	check_str(later.c_str(), "OK\n0123456789\t1604307907\t99\t\tx@example.org,y@example.org\t"
				 "handler mbox: /var/mail/x: Permission denied\n");
	f.reason = "550 5.1.1 no such user\r\n";
	t.failed_items = {f};
	check_str(control_answer("show failed", 0, t, reply).c_str(), "");
	check_str(later.c_str(), "OK\n0123456789\t1604307907\t99\t\tx@example.org,y@example.org\t550 5.1.1 no such user\n");
	t.failed_error = "opendir /var/spool/laim/failed: Permission denied";
	check_str(control_answer("show failed", 0, t, reply).c_str(), "");
	check_str(later.c_str(), "ERR opendir /var/spool/laim/failed: Permission denied\n");
}
END_TEST

START_TEST(test_show_stats)
{
	FakeTarget t;
	t.counters = {{"received", 12}, {"delivered", 10}, {"deferred", 1}, {"failed", 1}, {"queue_length", 2},
	              {"handler.local mbox.delivered", 7}, {"handler.log\tx.failed", 18446744073709551615ull}};
	check_str(control_answer("show stats\n", 0, t).c_str(),
	                 "OK\nreceived 12\ndelivered 10\ndeferred 1\nfailed 1\nqueue_length 2\n"
	                 "handler.local_mbox.delivered 7\nhandler.log\\tx.failed 18446744073709551615\n");
}
END_TEST

START_TEST(test_flush)
{
	FakeTarget t;
	check_str(control_answer("flush\n", 0, t).c_str(), "OK\n");
	check_str(control_answer("flush", 1000, t).c_str(), "OK\n");
	ck_assert_int_eq(t.flush_calls, 2);
	// root's flush is everyone's; a user's only their own messages'
	ck_assert(t.flush_owners == (std::vector<std::optional<uid_t>>{std::nullopt, 1000}));
}
END_TEST

START_TEST(test_reload_aliases)
{
	FakeTarget t;
	// The file laimd read (aliases: of laim.yml), and what it holds.
	check_str(control_answer("reload aliases\n", 0, t).c_str(), "OK\n/srv/laim/aliases: 12 aliases\n");
	// Root only: an error would show other users lines of files they may
	// not read, and each reload costs the handler a full parse.
	check_str(control_answer("reload aliases\n", 1000, t).c_str(), "ERR permission denied\n");
	t.alias_error = "/etc/aliases:3: missing ':'";
	check_str(control_answer("reload aliases\n", 0, t).c_str(), "ERR /etc/aliases:3: missing ':'\n");
	// An error text cannot add a line to the answer.
	t.alias_error = "/etc/aliases:7: bad\nOK\tforged";
	check_str(control_answer("reload aliases\n", 0, t).c_str(), "ERR /etc/aliases:7: bad\\nOK\\tforged\n");
	ck_assert_int_eq(t.reload_calls, 3);
}
END_TEST

// test INSTANCE answers later, through the reply the server passed;
// only root may ask, and a verdict's text cannot add a line.
START_TEST(test_test_instance)
{
	FakeTarget t;
	std::string later = "none";
	auto reply = [&later](std::string r) { later = std::move(r); };
	auto ask = [&](const char* line, uid_t uid) { return control_answer(line, uid, t, reply); };
	ck_assert(ask("test inbox\n", 0) == "");
	ck_assert_str_eq(later.c_str(), "none");
	t.pending_test(true, "maildir: /srv/Maildir/tmp is writable");
	ck_assert_str_eq(later.c_str(), "OK\ninbox: ready: maildir: /srv/Maildir/tmp is writable\n");
	control_answer("test inbox", 0, t, reply);
	t.pending_test(false, "maildir: /srv/Maildir/tmp: Permission denied\nforged line");
	ck_assert_str_eq(later.c_str(),
			 "ERR inbox: not ready: maildir: /srv/Maildir/tmp: Permission denied\\nforged line\n");
	// Nor drive the terminal: a peer's greeting with C1 controls (UTF-8
	// CSI and OSC) and a bidi override is escaped as in the log.
	control_answer("test inbox", 0, t, reply);
	t.pending_test(true, "smarthost: 220 evil.test \xc2\x9b" "2J\xc2\x9d" "0;x\xc2\x9c \xe2\x80\xae" "ydaer");
	ck_assert_str_eq(later.c_str(), "OK\ninbox: ready: smarthost: 220 evil.test \\xc2\\x9b2J\\xc2\\x9d0;x\\xc2\\x9c "
			 "\\xe2\\x80\\xaeydaer\n");
	ck_assert(ask("test nosuch", 0) == "ERR no handler instance nosuch\n");
	ck_assert(ask("test inbox", 1000) == "ERR permission denied\n");
	ck_assert(ask("test", 0) == "ERR usage: test INSTANCE\n");
	ck_assert(ask("test a b", 0) == "ERR usage: test INSTANCE\n");
}
END_TEST

// show limits and reset-limit KEY: root only (keys name other users and
// their senders); a key's text cannot add a field or a line.
START_TEST(test_limits)
{
	FakeTarget t;
	t.limit_items.push_back({"uid:1000", "uid 1000 (alice)", 3, 3, 5, false, 4, 2, true, "sent"});
	t.limit_items.push_back({"sender:a\tb@x", "<a\tb@x>", 9, 10, 300, true, 120, 0, false, "none"});
	check_str(control_answer("show limits\n", 0, t),
		  "OK\nuid:1000\tuid 1000 (alice)\t3\t3\t5\tmessage\t4\t2\tyes\tsent\n"
		  "sender:a\\tb@x\t<a\\tb@x>\t9\t10\t300\trecipient\t120\t0\tno\tnone\n");
	check_str(control_answer("show limits\n", 1000, t), "ERR permission denied\n");
	check_str(control_answer("reset-limit uid:1000\n", 1000, t), "ERR permission denied\n");
	ck_assert(t.reset_keys.empty());
	check_str(control_answer("reset-limit uid:1000\n", 0, t), "OK\n");
	check_str(control_answer("reset-limit uid:1001", 0, t), "ERR no rate limit window for uid:1001\n");
	check_str(control_answer("reset-limit", 0, t), "ERR usage: reset-limit KEY\n");
	check_str(control_answer("reset-limit ", 0, t), "ERR usage: reset-limit KEY\n");
	// A sender key's quoted local part may hold spaces: the key is the
	// rest of the line.
	check_str(control_answer("reset-limit sender:\"john doe\"@x.example\n", 0, t),
		  "ERR no rate limit window for sender:\"john doe\"@x.example\n");
	ck_assert_int_eq(t.reset_keys.size(), 3);
	check_str(t.reset_keys[2], "sender:\"john doe\"@x.example");
}
END_TEST

START_TEST(test_remove)
{
	FakeTarget t;
	t.present = {"4F3A2C1B09"};
	check_str(control_answer("remove 4F3A2C1B09\n", 0, t).c_str(), "OK\n");
	check_str(control_answer("remove 0123456789\n", 0, t).c_str(), "ERR no such message\n");
	ck_assert_int_eq(t.removed.size(), 2);
	check_str(t.removed[0].c_str(), "4F3A2C1B09");
	check_str(t.removed[1].c_str(), "0123456789");
}
END_TEST

START_TEST(test_remove_bad_arguments)
{
	FakeTarget t;
	t.present = {"4F3A2C1B09"};
	check_str(control_answer("remove\n", 0, t).c_str(), "ERR usage: remove ID\n");
	check_str(control_answer("remove \n", 0, t).c_str(), "ERR usage: remove ID\n");
	check_str(control_answer("remove  4F3A2C1B09\n", 0, t).c_str(), "ERR usage: remove ID\n");
	check_str(control_answer("remove 4F3A2C1B09 \n", 0, t).c_str(), "ERR usage: remove ID\n");
	check_str(control_answer("remove 4F3A2C1B09 0123456789\n", 0, t).c_str(), "ERR usage: remove ID\n");
	check_str(control_answer("remove 4f3a2c1b09\n", 0, t).c_str(), "ERR invalid queue id: 4f3a2c1b09\n");
	check_str(control_answer("remove 4F3A2C1B0\n", 0, t).c_str(), "ERR invalid queue id: 4F3A2C1B0\n");
	check_str(control_answer("remove 4F3A2C1B099\n", 0, t).c_str(), "ERR invalid queue id: 4F3A2C1B099\n");
	check_str(control_answer("remove ../../etc\n", 0, t).c_str(), "ERR invalid queue id: ../../etc\n");
	check_str(control_answer("remove 4F3A2C1G09\n", 0, t).c_str(), "ERR invalid queue id: 4F3A2C1G09\n");
	check_str(control_answer("removeX\n", 0, t).c_str(), "ERR unknown command: removeX\n");
	ck_assert_int_eq(t.removed.size(), 0);
}
END_TEST

START_TEST(test_non_root_denied)
{
	FakeTarget t = sample_target();
	t.present = {"4F3A2C1B09"};
	const char* denied[] = {"show stats\n", "show failed\n", "remove 4F3A2C1B09\n", "remove\n", "remove garbage\n"};
	for (const char* req : denied)
		check_str(control_answer(req, 1000, t).c_str(), "ERR permission denied\n");
	ck_assert_int_eq(t.stats_calls, 0);
	ck_assert_int_eq(t.failed_calls, 0);
	ck_assert_int_eq(t.removed.size(), 0);
	// Unknown stays unknown, whoever asks.
	check_str(control_answer("shutdown\n", 1000, t).c_str(), "ERR unknown command: shutdown\n");
}
END_TEST

START_TEST(test_malformed_lines)
{
	FakeTarget t = sample_target();
	struct {
		std::string req;
		const char* answer;
	} cases[] = {
		{"", "ERR empty request\n"},
		{"\n", "ERR empty request\n"},
		{"flush\n\n", "ERR malformed request\n"},
		{"flush\r\n", "ERR malformed request\n"},
		{"flush\nshow failed\n", "ERR malformed request\n"},
		{std::string("flush\0x", 7), "ERR malformed request\n"},
		{"show\tqueue\n", "ERR malformed request\n"},
		{"show queue\x7f\n", "ERR malformed request\n"},
		{"show\n", "ERR unknown command: show\n"},
		{"show queues\n", "ERR unknown command: show queues\n"},
		{"SHOW QUEUE\n", "ERR unknown command: SHOW QUEUE\n"},
		{"show  queue\n", "ERR unknown command: show  queue\n"},
		{" flush\n", "ERR unknown command:  flush\n"},
		{"flush \n", "ERR unknown command: flush \n"},
		{"flush now\n", "ERR unknown command: flush now\n"},
		{"reload\n", "ERR unknown command: reload\n"},
		{std::string(CONTROL_MAX_LINE, 'a'), "ERR request too long\n"},
	};
	for (const auto& c : cases) {
		check_str(control_answer(c.req, 0, t).c_str(), c.answer);
		check_str(control_answer(c.req, 1000, t).c_str(), c.answer);
	}
	ck_assert_int_eq(t.flush_calls, 0);
	ck_assert_int_eq(t.queue_calls, 0);
	ck_assert_int_eq(t.failed_calls, 0);
}
END_TEST

START_TEST(test_fields_sanitized)
{
	FakeTarget t;
	t.items.push_back(item("00000000D4", 0, "evil\t@host", {"a\n@x", "b\r@y"}, 3,
	                       "451 4.3.0 temporary\r\n00000000E5\t0\t0\t0\tforged\tforged\t0\t"));
	// A peer's reply with C1 controls (UTF-8 CSI, OSC and ST), a raw 8-bit
	// CSI byte and a bidi override, as a smarthost may answer RCPT.
	t.items.push_back(item("00000000D5", 0, "s@x", {"r@y"}, 1,
	                       "451 4.3.0 \xc2\x9b" "2J\xc2\x9d" "0;pwned\xc2\x9c raw\x9b" "7m \xe2\x80\xae" "desrever"));
	// Plain UTF-8 stays as it is.
	t.items.push_back(item("00000000D6", 0, "s@x", {"r@y"}, 1, "451 4.2.2 mailbox of J\xc3\xb6rg full"));
	FailedItem f;
	f.id = "00000000F6";
	f.sender = "s\x01@x";
	f.recipients = {"r\t@x"};
	f.reason = "bad\tthing\x1b[31m \xc2\x9b" "31m";
	t.failed_items.push_back(f);

	std::string q = control_answer("show queue\n", 0, t);
	check_str(q.c_str(),
	                 "OK\n00000000D4\t1606011866\t1234\t0\tevil\\t@host\ta\\n@x,b\\r@y\t3\t"
	                 "451 4.3.0 temporary\\r\\n00000000E5\\t0\\t0\\t0\\tforged\\tforged\\t0\\t\n"
	                 "00000000D5\t1606011866\t1234\t0\ts@x\tr@y\t1\t"
	                 "451 4.3.0 \\xc2\\x9b2J\\xc2\\x9d0;pwned\\xc2\\x9c raw\\x9b7m \\xe2\\x80\\xaedesrever\n"
	                 "00000000D6\t1606011866\t1234\t0\ts@x\tr@y\t1\t451 4.2.2 mailbox of J\xc3\xb6rg full\n");
	ck_assert_int_eq(count(q, '\n'), 4);
	ck_assert_int_eq(count(q, '\t'), 21);

	std::string fl;
	check_str(control_answer("show failed\n", 0, t, [&fl](std::string r) { fl = std::move(r); }).c_str(), "");
	check_str(fl.c_str(), "OK\n00000000F6\t0\t0\ts\\x01@x\tr\\t@x\tbad\\tthing\\x1b[31m \\xc2\\x9b31m\n");
	ck_assert_int_eq(count(fl, '\t'), 5);
}
END_TEST

START_TEST(test_target_exception)
{
	FakeTarget t;
	t.throw_on_queue = true;
	check_str(control_answer("show queue\n", 0, t).c_str(),
	                 "ERR internal error: cannot read queue/ABC: I/O error\n");
}
END_TEST

// ------------------------------------------------------------ client side

namespace {

std::string g_tmp;

void setup()
{
	const char* base = getenv("TMPDIR");
	std::string templ = std::string(base && *base ? base : "/tmp") + "/laim-ctl-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(templ.data()));
	g_tmp = templ;
}

void teardown()
{
	std::error_code ec;
	std::filesystem::remove_all(g_tmp, ec);
}

UniqueFd bind_unix(const std::string& path)
{
	UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	ck_assert(fd);
	sockaddr_un sun{};
	sun.sun_family = AF_UNIX;
	ck_assert_uint_lt(path.size(), sizeof(sun.sun_path));
	memcpy(sun.sun_path, path.c_str(), path.size());
	ck_assert_int_eq(bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)), 0);
	return fd;
}

// A one-connection server on a real unix socket: it reads the request
// line (unless told to hang up at once), writes a canned answer, closes.
// Unread waits for the request but does not read it, as laimd does past
// CONTROL_MAX_LINE: its close then resets the connection.
class CannedServer {
 public:
	enum Mode { Answer, HangUp, Unread };

	CannedServer(std::string answer, Mode mode = Answer) : path_(g_tmp + "/control.sock")
	{
		unlink(path_.c_str());  // a previous server's socket file
		listener_ = bind_unix(path_);
		ck_assert_int_eq(listen(listener_.get(), 1), 0);
		thread_ = std::thread([this, answer = std::move(answer), mode] { serve(answer, mode); });
	}
	~CannedServer()
	{
		if (thread_.joinable())
			thread_.join();
	}
	const std::string& path() const { return path_; }
	// The request as received; valid once the client has its answer.
	std::string request()
	{
		thread_.join();
		return request_;
	}

 private:
	void serve(const std::string& answer, Mode mode)
	{
		UniqueFd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
		if (!conn || mode == HangUp)
			return;
		pollfd p{conn.get(), POLLIN, 0};
		if (mode == Unread && poll(&p, 1, 10000) != 1)
			return;
		char c;
		while (mode == Answer && read(conn.get(), &c, 1) == 1) {
			request_ += c;
			if (c == '\n')
				break;
		}
		size_t off = 0;
		while (off < answer.size()) {
			ssize_t n = write(conn.get(), answer.data() + off, answer.size() - off);
			if (n <= 0)
				return;
			off += (size_t)n;
		}
	}

	std::string path_;
	UniqueFd listener_;
	std::string request_;
	std::thread thread_;
};

// Runs ctl_request and returns what() of the runtime_error it must throw;
// fails when it returns or throws a system_error (that means "not running").
std::string request_error(const std::string& path, const std::string& cmd)
{
	try {
		ctl_request(path, cmd);
	} catch (const std::system_error& e) {
		ck_abort_msg("unexpected system_error: %s", e.what());
	} catch (const std::runtime_error& e) {
		return e.what();
	}
	ck_abort_msg("ctl_request(%s) did not throw", cmd.c_str());
	return "";
}

int connect_errno(const std::string& path, const std::string& cmd = "show queue")
{
	try {
		ctl_request(path, cmd);
	} catch (const std::system_error& e) {
		std::string expect = "cannot connect to " + path + ": ";
		ck_assert_msg(std::string(e.what()).starts_with(expect), "what() = %s", e.what());
		return e.code().value();
	}
	ck_abort_msg("ctl_request did not throw a system_error");
	return 0;
}

}  // namespace

START_TEST(test_request_ok_lines)
{
	CannedServer srv("OK\nline one\tA\tB\n\nlast\n");
	auto lines = ctl_request(srv.path(), "show queue");
	ck_assert_int_eq(lines.size(), 3);
	check_str(lines[0].c_str(), "line one\tA\tB");
	check_str(lines[1].c_str(), "");
	check_str(lines[2].c_str(), "last");
	check_str(srv.request().c_str(), "show queue\n");
}
END_TEST

START_TEST(test_request_ok_empty)
{
	CannedServer srv("OK\n");
	ck_assert_int_eq(ctl_request(srv.path(), "flush").size(), 0);
	check_str(srv.request().c_str(), "flush\n");
}
END_TEST

START_TEST(test_request_err)
{
	CannedServer srv("ERR permission denied\n");
	check_str(request_error(srv.path(), "show stats").c_str(), "permission denied");
	check_str(srv.request().c_str(), "show stats\n");
}
END_TEST

START_TEST(test_request_hangup)
{
	CannedServer srv("", CannedServer::HangUp);
	check_str(request_error(srv.path(), "show queue").c_str(),
	                 "laimd closed the connection without an answer");
}
END_TEST

START_TEST(test_request_truncated)
{
	{
		CannedServer srv("OK\n4F3A2C1B09\t160");
		check_str(request_error(srv.path(), "show queue").c_str(), "truncated answer from laimd");
	}
	{
		CannedServer srv("HELLO\n");
		check_str(request_error(srv.path(), "show queue").c_str(), "unexpected answer from laimd: HELLO");
	}
}
END_TEST

START_TEST(test_request_cannot_connect)
{
	ck_assert_int_eq(connect_errno(g_tmp + "/missing.sock"), ENOENT);
	// A socket file left behind by a dead laimd: nobody listens.
	std::string stale = g_tmp + "/stale.sock";
	bind_unix(stale);  // closed again at once
	ck_assert_int_eq(connect_errno(stale), ECONNREFUSED);
	ck_assert_int_eq(connect_errno("/" + std::string(200, 'x')), ENAMETOOLONG);
}
END_TEST

START_TEST(test_request_refuses_control_chars)
{
	CannedServer srv("OK\n");
	ck_assert_int_eq(ctl_request(srv.path(), "flush").size(), 0);  // the server is real
	for (const char* cmd : {"flush\nremove 4F3A2C1B09", "flush\r", "flush\t"}) {
		try {
			ctl_request(g_tmp + "/none.sock", cmd);
			ck_abort_msg("command with a control character was sent");
		} catch (const std::invalid_argument&) {
		}
	}
}
END_TEST

// laimd closing with the request unread resets the connection: the answer
// before the reset is read all the same (an "ERR" or an "OK"); a reset
// before any answer is a hang-up.
START_TEST(test_request_answer_then_reset)
{
	{
		CannedServer srv("ERR request too long\n", CannedServer::Unread);
		check_str(request_error(srv.path(), "show queue"), "request too long");
	}
	{
		CannedServer srv("OK\nline\n", CannedServer::Unread);
		auto lines = ctl_request(srv.path(), "show queue");
		ck_assert_int_eq(lines.size(), 1);
		check_str(lines[0], "line");
	}
	{
		CannedServer srv("", CannedServer::Unread);
		check_str(request_error(srv.path(), "show queue"), "laimd closed the connection without an answer");
	}
	{
		CannedServer srv("OK\n4F3A2C1B09\t160", CannedServer::Unread);
		ck_assert(request_error(srv.path(), "show queue").starts_with("connection to laimd broke"));
	}
}
END_TEST

// A request laimd would refuse as too long is not sent.
START_TEST(test_request_refuses_too_long)
{
	std::string longest = "test " + std::string(CONTROL_MAX_LINE - 2 - 4, 'x');
	ck_assert_uint_eq(longest.size() + 1, CONTROL_MAX_LINE);
	ck_assert_int_eq(connect_errno(g_tmp + "/none.sock", longest), ENOENT);  // it would go
	try {
		ctl_request(g_tmp + "/none.sock", longest + "x");
		ck_abort_msg("a request of %zu bytes was sent", longest.size() + 2);
	} catch (const std::system_error&) {
		ck_abort_msg("a request of %zu bytes was sent", longest.size() + 2);
	} catch (const std::invalid_argument& e) {
		check_str(e.what(), "control command longer than " + std::to_string(CONTROL_MAX_LINE - 1) + " bytes");
	}
}
END_TEST

// The two halves together: the daemon's answer read back by the client.
START_TEST(test_round_trip)
{
	FakeTarget t = sample_target();
	CannedServer srv(control_answer("show queue\n", 1000, t));
	auto lines = ctl_request(srv.path(), "show queue");
	ck_assert_int_eq(lines.size(), 1);
	CtlQueueEntry e = ctl_parse_queue_line(lines[0]);
	check_str(e.id.c_str(), "00000000A1");
	ck_assert_int_eq(e.arrival, 1606011866);
	ck_assert_uint_eq(e.size, 1234);
	check_str(e.uid.c_str(), "1000");
	check_str(e.sender.c_str(), "alice@host.example");
	ck_assert_int_eq(e.recipients.size(), 2);
	check_str(e.recipients[1].c_str(), "carol@example.org");
	ck_assert_uint_eq(e.attempts, 2);
	check_str(e.last_error.c_str(), "connect to mx.example.org: Connection refused");
}
END_TEST

START_TEST(test_socket_path)
{
	setenv("LAIM_CONTROL", "/tmp/x/control.sock", 1);
	check_str(ctl_socket_path().c_str(), "/tmp/x/control.sock");
	setenv("LAIM_CONTROL", "", 1);
	check_str(ctl_socket_path().c_str(), LAIM_CONTROL_SOCKET);
	unsetenv("LAIM_CONTROL");
	check_str(ctl_socket_path().c_str(), LAIM_CONTROL_SOCKET);
}
END_TEST

// ------------------------------------------------------------ mailq layout

namespace {

void utc()
{
	setenv("TZ", "UTC", 1);
	tzset();
}

const char* HEADING = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
const std::string RCPT_INDENT(42, ' ');

}  // namespace

START_TEST(test_mailq_empty)
{
	check_str(format_mailq({}).c_str(), "Mail queue is empty\n");
	// Not empty for the caller while messages wait in offline/.
	check_str(format_mailq({}, 1), "-- 1 message waits in offline/ to be taken into the queue\n");
	check_str(format_mailq({}, 2), "-- 2 messages wait in offline/ to be taken into the queue\n");
}
END_TEST

START_TEST(test_mailq_one)
{
	utc();
	std::string expect = std::string(HEADING) +
	                     "4F3A2C1B09      1234 Sun Nov 22 02:24:26  root@host.example\n" +
	                     RCPT_INDENT + "root\n"
	                     "\n"
	                     "-- 1 Kbytes in 1 Request.\n";
	check_str(format_mailq({"4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t0\t"}).c_str(),
	                 expect.c_str());
	check_str(format_mailq({"4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t0\t"}, 3),
	          expect + "-- 3 messages wait in offline/ to be taken into the queue\n");
}
END_TEST

START_TEST(test_mailq_several_deferred)
{
	utc();
	std::vector<std::string> lines = {
		"00000000A1\t1604307907\t523\t1000\talice@host.example\tbob@example.org,\"c,d\"@example.org\t2\t"
		"connect to mx.example.org[192.0.2.1]:25: Connection refused",
		"00000000B2\t1606011866\t123456789\t-\tbounce@example.net\troot@host.example\t1\t"
		"handler mbox: 451 a reason far too long to be right-aligned within the seventy-eight columns",
		"00000000C3\t1606011866\t1000\t0\troot@host.example\troot\t0\t",
	};
	std::string expect = std::string(HEADING) +
	                     "00000000A1       523 Mon Nov  2 09:05:07  alice@host.example\n"
	                     "                 (connect to mx.example.org[192.0.2.1]:25: Connection refused)\n" +
	                     RCPT_INDENT + "bob@example.org\n" +
	                     RCPT_INDENT + "\"c,d\"@example.org\n"
	                     "\n"
	                     "00000000B2  123456789 Sun Nov 22 02:24:26  bounce@example.net\n"
	                     "(handler mbox: 451 a reason far too long to be right-aligned within the seventy-eight columns)\n" +
	                     RCPT_INDENT + "root@host.example\n"
	                     "\n"
	                     "00000000C3      1000 Sun Nov 22 02:24:26  root@host.example\n" +
	                     RCPT_INDENT + "root\n"
	                     "\n"
	                     "-- 120564 Kbytes in 3 Requests.\n";
	check_str(format_mailq(lines).c_str(), expect.c_str());
}
END_TEST

START_TEST(test_mailq_null_sender)
{
	utc();
	std::string expect = std::string(HEADING) +
	                     "00000000B2       900 Sun Nov 22 02:24:26  MAILER-DAEMON\n" +
	                     RCPT_INDENT + "root@host.example\n"
	                     "\n"
	                     "-- 0 Kbytes in 1 Request.\n";
	check_str(format_mailq({"00000000B2\t1606011866\t900\t-\t\troot@host.example\t0\t"}).c_str(),
	                 expect.c_str());
}
END_TEST

START_TEST(test_mailq_malformed)
{
	const char* bad[] = {
		"4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t0",  // 7 fields
		"4F3A2C1B09\tyesterday\t1234\t0\troot@host.example\troot\t0\t",
		"4F3A2C1B09\t1606011866\t12k\t0\troot@host.example\troot\t0\t",
		"4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t\t",
	};
	for (const char* line : bad) {
		try {
			format_mailq({line});
			ck_abort_msg("accepted: %s", line);
		} catch (const std::runtime_error&) {
		}
	}
	// A newer laimd may add fields: they are ignored.
	utc();
	std::string out = format_mailq({"4F3A2C1B09\t1606011866\t1234\t0\troot@host.example\troot\t0\t\tnew"});
	ck_assert(out.find("4F3A2C1B09      1234 Sun Nov 22 02:24:26  root@host.example\n") != std::string::npos);
}
END_TEST

START_TEST(test_split_recipients)
{
	auto r = ctl_split_recipients("a@x,\"b,c\"@y,\"q\\\",z\"@w,u@[IPv6:2001:db8::1],v@[tag:p,q],last");
	ck_assert_int_eq(r.size(), 6);
	check_str(r[0].c_str(), "a@x");
	check_str(r[1].c_str(), "\"b,c\"@y");
	check_str(r[2].c_str(), "\"q\\\",z\"@w");
	check_str(r[3].c_str(), "u@[IPv6:2001:db8::1]");
	check_str(r[4].c_str(), "v@[tag:p,q]");
	check_str(r[5].c_str(), "last");
	ck_assert_int_eq(ctl_split_recipients("").size(), 0);
}
END_TEST

static Suite* control_suite()
{
	Suite* s = suite_create("control");

	TCase* server = tcase_create("server");
	tcase_add_test(server, test_show_queue_root);
	tcase_add_test(server, test_show_queue_user_sees_own);
	tcase_add_test(server, test_show_queue_empty);
	tcase_add_test(server, test_show_offline);
	tcase_add_test(server, test_show_failed);
	tcase_add_test(server, test_show_stats);
	tcase_add_test(server, test_flush);
	tcase_add_test(server, test_reload_aliases);
	tcase_add_test(server, test_remove);
	tcase_add_test(server, test_limits);
	tcase_add_test(server, test_remove_bad_arguments);
	tcase_add_test(server, test_non_root_denied);
	tcase_add_test(server, test_malformed_lines);
	tcase_add_test(server, test_fields_sanitized);
	tcase_add_test(server, test_target_exception);
	tcase_add_test(server, test_test_instance);
	suite_add_tcase(s, server);

	TCase* client = tcase_create("client");
	tcase_add_checked_fixture(client, setup, teardown);
	tcase_add_test(client, test_request_ok_lines);
	tcase_add_test(client, test_request_ok_empty);
	tcase_add_test(client, test_request_err);
	tcase_add_test(client, test_request_hangup);
	tcase_add_test(client, test_request_truncated);
	tcase_add_test(client, test_request_cannot_connect);
	tcase_add_test(client, test_request_refuses_control_chars);
	tcase_add_test(client, test_request_answer_then_reset);
	tcase_add_test(client, test_request_refuses_too_long);
	tcase_add_test(client, test_round_trip);
	tcase_add_test(client, test_socket_path);
	suite_add_tcase(s, client);

	TCase* mailq = tcase_create("mailq");
	tcase_add_test(mailq, test_mailq_empty);
	tcase_add_test(mailq, test_mailq_one);
	tcase_add_test(mailq, test_mailq_several_deferred);
	tcase_add_test(mailq, test_mailq_null_sender);
	tcase_add_test(mailq, test_mailq_malformed);
	tcase_add_test(mailq, test_split_recipients);
	suite_add_tcase(s, mailq);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(control_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
