// Unit tests of the delivery queue with handler API v2: each recipient's
// result settled on its own, retry hints, a forgotten result (or an
// exception) read as a failure, and an instance's bounded pool of reused
// worker threads. The handlers below are real handler classes registered
// as laimd's are; the queue, the spool and the worker threads under them
// are the real ones.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/clock.h"
#include "handler/queue.h"
#include "handler/spool.h"

#include <check.h>
#undef fail

using namespace laim;

namespace {

std::mutex calls_mutex;
std::map<std::string, int> calls;  // recipient -> deliver() calls that named it
bool bob_recovers = false;         // "bob" is delivered from now on

int calls_for(const std::string& rcpt)
{
	std::lock_guard<std::mutex> lock(calls_mutex);
	return calls[rcpt];
}

// Answers as Dovecot's LMTP did in one transaction: alice saved, bob 451
// (until bob_recovers), carol 552 over quota.
class MixedHandler : public Handler {
 public:
	explicit MixedHandler(HandlerOptions&) {}
	Results deliver(const Envelope& env, const Message&) override
	{
		std::vector<Result> each;
		for (const std::string& r : env.recipients) {
			{
				std::lock_guard<std::mutex> lock(calls_mutex);
				calls[r]++;
			}
			if (r == "alice")
				each.push_back(Result::delivered("250 2.0.0 <alice> Saved"));
			else if (r == "bob" && !bob_recovers)
				each.push_back(Result::tempfail("451 4.2.0 <bob> Temporary internal error").with_code("4.2.0"));
			else if (r == "bob")
				each.push_back(Result::delivered());
			else
				each.push_back(Result::permfail("552 <carol> Quota exceeded").with_code("5.2.2"));
		}
		return each;
	}
};
LAIM_HANDLER("test_mixed", MixedHandler);

// A webhook answered HTTP 429 with Retry-After: 120.
class ThrottledHandler : public Handler {
 public:
	explicit ThrottledHandler(HandlerOptions& o) : after_(o.integer("retry_after")) {}
	Results deliver(const Envelope&, const Message&) override
	{
		return Result::tempfail("HTTP 429 Too Many Requests", after_);
	}

 private:
	unsigned after_;
};
LAIM_HANDLER("test_throttled", ThrottledHandler);

// Forgets to fill in its result, or returns one result for two recipients.
class ForgetfulHandler : public Handler {
 public:
	explicit ForgetfulHandler(HandlerOptions&) {}
	Results deliver(const Envelope& env, const Message&) override
	{
		if (env.recipients.size() == 1)
			return Result();
		return std::vector<Result>{Result::delivered()};
	}
};
LAIM_HANDLER("test_forgetful", ForgetfulHandler);

// Throws from deliver(), as a handler's library may.
class ThrowingHandler : public Handler {
 public:
	explicit ThrowingHandler(HandlerOptions&) {}
	Results deliver(const Envelope&, const Message&) override
	{
		throw std::runtime_error("lmtp: connection reset");
	}
};
LAIM_HANDLER("test_throwing", ThrowingHandler);

// Takes 100 ms per call and records how many calls overlap and on which
// threads: by kernel thread id, which a new thread never shares with one
// that exited a moment ago (a std::thread::id may be reused).
std::atomic<int> in_flight{0}, most_in_flight{0};
std::mutex threads_mutex;
std::set<pid_t> threads_seen;
class SlowHandler : public Handler {
 public:
	explicit SlowHandler(HandlerOptions&) {}
	Results deliver(const Envelope&, const Message&) override
	{
		int now = ++in_flight;
		int seen = most_in_flight.load();
		while (now > seen && !most_in_flight.compare_exchange_weak(seen, now)) {
		}
		{
			std::lock_guard<std::mutex> lock(threads_mutex);
			threads_seen.insert(gettid());
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
		--in_flight;
		return Result::delivered();
	}
	unsigned default_workers() const override { return 3; }
};
LAIM_HANDLER("test_slow", SlowHandler);

// Records, per queue id, whether the body it was given is the one the
// test passed to Queue::add ("memo") or the file's ("disk"); 20 ms a call.
std::map<std::string, std::string> seen_body;
class MarkerHandler : public Handler {
 public:
	explicit MarkerHandler(HandlerOptions&) {}
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::string_view raw = msg.raw();
		{
			std::lock_guard<std::mutex> lock(calls_mutex);
			seen_body[env.id] = std::string(raw.substr(raw.size() - 6, 4));
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
		return Result::delivered();
	}
};
LAIM_HANDLER("test_marker", MarkerHandler);

std::string g_tmp;

void setup()
{
	std::string templ = "/tmp/laim-queue-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(templ.data()));
	g_tmp = templ;
	for (const char* sub : {"/spool", "/spool/incoming", "/spool/queue", "/spool/failed", "/spool/free", "/spool/offline"})
		ck_assert_int_eq(mkdir((g_tmp + sub).c_str(), 0700), 0);
	calls.clear();
	bob_recovers = false;
	in_flight = most_in_flight = 0;
	threads_seen.clear();
}

void teardown()
{
	std::error_code ec;
	std::filesystem::remove_all(g_tmp, ec);
}

// A queue over a fresh spool, configured from a YAML text as laimd does.
struct Fixture {
	explicit Fixture(const std::string& yaml) : spool(g_tmp + "/spool"), queue(spool)
	{
		Config cfg = config_parse(yaml, "test.yml");
		Secrets secrets;
		Instances instances;
		for (ConfiguredHandler& h : handlers_create(cfg, secrets))
			instances[h.name] = std::make_shared<Instance>(h.name, std::move(h.handler), h.workers);
		queue.configure(cfg, std::move(instances));
	}

	// Commits a message to these recipients, as the intake does (a notice
	// for one instance when instance is set).
	std::string commit(std::vector<std::string> rcpts, std::string instance = "")
	{
		Envelope env;
		env.instance = std::move(instance);
		env.id = spool.new_id();
		env.sender = "cron@host.example";
		env.recipients = std::move(rcpts);
		env.client = "local";
		env.arrival = time(nullptr);
		UniqueFd fd = spool.create(env);
		ck_assert(write_all(fd.get(), "Subject: t\r\n\r\nbody\r\n"));
		spool.sync_file(fd.get());
		queue.add(env, 21, static_cast<double>(env.arrival));
		return env.id;
	}

	// Runs the queue as the handler process's loop does, until it is
	// idle (nothing running, nothing due) or 10 s have passed.
	void drain()
	{
		for (int i = 0; i < 1000; i++) {
			queue.run();
			most_running = std::max(most_running, queue.running());
			if (queue.running() == 0 && queue.next_wakeup_ms() > 0 && !due())
				return;
			struct pollfd p = {queue.notify_fd(), POLLIN, 0};
			if (poll(&p, 1, 10) > 0)
				queue.collect();
		}
		ck_abort_msg("the queue did not settle in 10 s");
	}

	bool due() const
	{
		time_t now = seconds_since_boot();
		for (const Queue::Item& it : queue.items())
			if (it.next_try <= now)
				return true;
		return false;
	}

	Spool spool;
	Queue queue;
	size_t most_running = 0;  // calls in flight at once, as the queue counts them
};

std::string slurp(const std::string& path)
{
	std::ifstream in(path);
	std::ostringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

const char* MIXED = "retry_initial: 60\n"
		    "handlers:\n"
		    "  lmtp:\n"
		    "    type: test_mixed\n"
		    "routes:\n"
		    "  - match: \"*\"\n"
		    "    handlers: [lmtp]\n";

}  // namespace

// One call, three answers: alice is delivered once and never again, bob is
// retried, carol fails for good with the peer's code and text; once bob
// gets through, the message goes to failed/ for carol alone.
START_TEST(mixed_results_settle_each_recipient)
{
	Fixture f(MIXED);
	std::string id = f.commit({"alice", "bob", "carol"});
	f.drain();
	ck_assert_int_eq(calls_for("alice"), 1);
	ck_assert_int_eq(calls_for("bob"), 1);
	ck_assert_int_eq(calls_for("carol"), 1);
	std::vector<Queue::Item> items = f.queue.items();
	ck_assert_uint_eq(items.size(), 1);
	ck_assert_uint_eq(items[0].attempts, 1);
	ck_assert_str_eq(items[0].last_error.c_str(), "451 4.2.0 <bob> Temporary internal error");

	f.queue.flush();  // the retry: bob alone is tried again
	f.drain();
	ck_assert_int_eq(calls_for("alice"), 1);
	ck_assert_int_eq(calls_for("bob"), 2);
	ck_assert_int_eq(calls_for("carol"), 1);
	ck_assert_uint_eq(f.queue.size(), 1);

	bob_recovers = true;
	f.queue.flush();
	f.drain();
	ck_assert_int_eq(calls_for("alice"), 1);
	ck_assert_int_eq(calls_for("bob"), 3);
	ck_assert_int_eq(calls_for("carol"), 1);
	ck_assert_uint_eq(f.queue.size(), 0);
	std::string reason = slurp(g_tmp + "/spool/failed/" + id + ".reason");
	ck_assert_str_eq(reason.c_str(), "<carol> handler lmtp: 5.2.2 552 <carol> Quota exceeded\n");
	ck_assert_uint_eq(f.queue.stats().at("handler.lmtp.delivered"), 2);
	ck_assert_uint_eq(f.queue.stats().at("handler.lmtp.failed"), 1);
	ck_assert_uint_eq(f.queue.stats().at("handler.lmtp.deferred"), 2);
}
END_TEST

// A message given up waits in queue/ while given_up() cannot take its
// notice, and is asked again at a later run(); it moves to failed/ once
// taken, and given_up() hears of it no more.
START_TEST(given_up_asked_again_when_refused)
{
	Fixture f(MIXED);
	int asked = 0;
	std::vector<std::string> failures;
	f.queue.given_up = [&](const Envelope& env, const std::vector<std::string>& why) {
		ck_assert(access((g_tmp + "/spool/queue/" + env.id).c_str(), F_OK) == 0);
		failures = why;
		return ++asked > 2;
	};
	std::string id = f.commit({"alice", "carol"});
	f.drain();
	ck_assert_int_eq(asked, 3);
	ck_assert_uint_eq(failures.size(), 1);
	ck_assert_str_eq(failures[0].c_str(), "<carol> handler lmtp: 5.2.2 552 <carol> Quota exceeded");
	ck_assert_uint_eq(f.queue.size(), 0);
	ck_assert(access((g_tmp + "/spool/failed/" + id).c_str(), F_OK) == 0);
	ck_assert_int_eq(calls_for("alice"), 1);
	ck_assert_int_eq(calls_for("carol"), 1);
}
END_TEST

// Retry-After later than the back-off wins; earlier, the back-off does.
START_TEST(retry_after_later_than_backoff)
{
	Fixture f("retry_initial: 5\n"
		  "handlers:\n"
		  "  slow_hook:\n"
		  "    type: test_throttled\n"
		  "    retry_after: 120\n"
		  "  quick_hook:\n"
		  "    type: test_throttled\n"
		  "    retry_after: 1\n"
		  "routes:\n"
		  "  - match: \"slow@*\"\n"
		  "    handlers: [slow_hook]\n"
		  "  - match: \"*\"\n"
		  "    handlers: [quick_hook]\n");
	f.commit({"slow@example.org"});
	f.commit({"quick"});
	time_t before = seconds_since_boot();
	f.drain();
	std::vector<Queue::Item> items = f.queue.items();
	ck_assert_uint_eq(items.size(), 2);
	for (const Queue::Item& it : items) {
		ck_assert_uint_eq(it.attempts, 1);
		long wait = static_cast<long>(it.next_try - before);
		if (it.env.recipients[0] == "slow@example.org")
			ck_assert_msg(wait >= 120 && wait <= 122, "Retry-After 120 ignored: next try in %ld s", wait);
		else
			ck_assert_msg(wait >= 5 && wait <= 7, "back-off 5 s not kept: next try in %ld s", wait);
	}
}
END_TEST

// A result never set, or a recipient left without one, is a temporary
// failure: nothing counts as delivered by accident.
START_TEST(forgotten_result_is_tempfail)
{
	Fixture f("handlers:\n"
		  "  h:\n"
		  "    type: test_forgetful\n"
		  "routes:\n"
		  "  - match: \"*\"\n"
		  "    handlers: [h]\n");
	f.commit({"one"});
	f.commit({"first", "second"});
	f.drain();
	ck_assert_uint_eq(f.queue.size(), 2);
	ck_assert_uint_eq(f.queue.stats().at("handler.h.delivered"), 1);  // "first" only
	ck_assert_uint_eq(f.queue.stats().at("handler.h.deferred"), 2);
	for (const Queue::Item& it : f.queue.items())
		ck_assert_msg(it.last_error.find("result") != std::string::npos, "%s", it.last_error.c_str());
	ck_assert(Result().status == Result::Status::TempFail);
}
END_TEST

// An exception from deliver() is a temporary failure of the whole call,
// with its message as the reason.
START_TEST(exception_is_tempfail)
{
	Fixture f("handlers:\n"
		  "  h:\n"
		  "    type: test_throwing\n"
		  "routes:\n"
		  "  - match: \"*\"\n"
		  "    handlers: [h]\n");
	f.commit({"one", "two"});
	f.drain();
	ck_assert_uint_eq(f.queue.size(), 1);
	ck_assert(!f.queue.stats().count("handler.h.delivered"));
	ck_assert_uint_eq(f.queue.stats().at("handler.h.deferred"), 2);
	std::vector<Queue::Item> items = f.queue.items();
	ck_assert_str_eq(items[0].last_error.c_str(), "lmtp: connection reset");
}
END_TEST

// The one-result form: a single Result settles every recipient of the call.
START_TEST(one_result_for_all)
{
	Fixture f("retry_initial: 60\n"
		  "handlers:\n"
		  "  box:\n"
		  "    type: test_slow\n"
		  "  hook:\n"
		  "    type: test_throttled\n"
		  "    retry_after: 5\n"
		  "routes:\n"
		  "  - match: \"*@hook.example\"\n"
		  "    handlers: [hook]\n"
		  "  - match: \"*\"\n"
		  "    handlers: [box]\n");
	f.commit({"a", "b", "c"});
	f.commit({"x@hook.example", "y@hook.example"});
	f.drain();
	ck_assert_uint_eq(f.queue.stats().at("handler.box.delivered"), 3);
	ck_assert_uint_eq(f.queue.stats().at("handler.hook.deferred"), 2);
	std::vector<Queue::Item> items = f.queue.items();
	ck_assert_uint_eq(items.size(), 1);
	ck_assert_str_eq(items[0].last_error.c_str(), "HTTP 429 Too Many Requests");
}
END_TEST

// laim's own notice (a rate limit's alert) goes to the instance its
// envelope names, whatever the routes say; other mail follows the routes.
START_TEST(notice_bypasses_routes)
{
	Fixture f("retry_initial: 60\n"
		  "handlers:\n"
		  "  lmtp:\n"
		  "    type: test_mixed\n"
		  "  admin:\n"
		  "    type: test_throttled\n"
		  "    retry_after: 5\n"
		  "routes:\n"
		  "  - match: \"*\"\n"
		  "    handlers: [lmtp]\n");
	f.commit({"alice"}, "admin");
	f.drain();
	ck_assert_int_eq(calls_for("alice"), 0);
	ck_assert_uint_eq(f.queue.stats().at("handler.admin.deferred"), 1);
	ck_assert(!f.queue.stats().count("handler.lmtp.delivered"));
	f.commit({"alice"});
	f.drain();
	ck_assert_int_eq(calls_for("alice"), 1);
	ck_assert_uint_eq(f.queue.stats().at("handler.admin.deferred"), 1);
}
END_TEST

// Delivers n messages through a test_slow instance with the given
// `workers:` line ("" for the type's default of 3) and checks that no more
// than `expect` calls ran at once, on no more than `expect` threads: the
// others waited in the queue, not on a worker, and threads were reused.
static void slow_instance(const std::string& workers_line, int n, unsigned expect)
{
	Fixture f("handlers:\n"
		  "  slow:\n"
		  "    type: test_slow\n" + workers_line +
		  "routes:\n"
		  "  - match: \"*\"\n"
		  "    handlers: [slow]\n");
	for (int i = 0; i < n; i++)
		f.commit({"r" + std::to_string(i)});
	f.drain();
	ck_assert_uint_eq(f.queue.size(), 0);
	ck_assert_int_eq(most_in_flight.load(), expect);
	ck_assert_uint_eq(f.most_running, expect);
	ck_assert_uint_eq(threads_seen.size(), expect);
}

// Messages keep the bytes their commit read until their first round's
// jobs start, also while they wait for the instance's one worker, up to
// Queue::HELD_BYTES_MAX in all; the others read their file.
START_TEST(held_bytes_bounded)
{
	Fixture f("handlers:\n  m:\n    type: test_marker\n    workers: 1\n"
		  "routes:\n  - match: \"*\"\n    handlers: [m]\n");
	std::string body = "Subject: t\r\n\r\n" + std::string(100 * 1024, 'x') + "\r\ndisk\r\n";
	std::vector<std::string> ids;
	size_t file_size = 0;
	for (int i = 0; i < 12; i++) {
		Envelope env;
		env.id = f.spool.new_id();
		env.sender = "cron@host.example";
		env.recipients = {"root"};
		env.client = "local";
		env.arrival = time(nullptr);
		UniqueFd fd = f.spool.create(env);
		ck_assert(write_all(fd.get(), body));
		std::string file = slurp(g_tmp + "/spool/queue/" + env.id);
		file.replace(file.size() - 6, 4, "memo");
		file_size = file.size();
		f.queue.add(env, body.size(), static_cast<double>(env.arrival), std::make_shared<const std::string>(file));
		ids.push_back(env.id);
	}
	size_t keep = Queue::HELD_BYTES_MAX / file_size;
	ck_assert_uint_lt(keep, ids.size());
	ck_assert_uint_eq(f.queue.held_bytes(), keep * file_size);
	ck_assert(f.queue.remove(ids[1]).empty());  // laimctl remove: its bytes go too
	ck_assert_uint_eq(f.queue.held_bytes(), (keep - 1) * file_size);
	f.drain();
	ck_assert_uint_eq(f.queue.held_bytes(), 0);
	ck_assert(!seen_body.count(ids[1]));
	for (size_t i = 0; i < ids.size(); i++)
		if (i != 1)
			ck_assert_str_eq(seen_body[ids[i]].c_str(), i < keep ? "memo" : "disk");
}
END_TEST

START_TEST(workers_bound_and_reused)
{
	slow_instance("", 12, 3);
}
END_TEST

// workers: 1 makes the calls one at a time.
START_TEST(one_worker_serialises)
{
	slow_instance("    workers: 1\n", 4, 1);
}
END_TEST

int main()
{
	Suite* s = suite_create("queue");
	TCase* tc = tcase_create("queue");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, mixed_results_settle_each_recipient);
	tcase_add_test(tc, given_up_asked_again_when_refused);
	tcase_add_test(tc, retry_after_later_than_backoff);
	tcase_add_test(tc, forgotten_result_is_tempfail);
	tcase_add_test(tc, exception_is_tempfail);
	tcase_add_test(tc, one_result_for_all);
	tcase_add_test(tc, notice_bypasses_routes);
	tcase_add_test(tc, held_bytes_bounded);
	tcase_add_test(tc, workers_bound_and_reused);
	tcase_add_test(tc, one_worker_serialises);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
