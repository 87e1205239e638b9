// Unit tests of the rate limit windows (handler/ratelimit.cpp), on a clock
// the test sets: what a window carries into the next, leaky and strict,
// and a state file saved by an earlier version.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "handler/ratelimit.h"

#include <check.h>
#undef fail

using namespace laim;

namespace {

std::string tmpdir;

RateLimit limit(uint64_t count, uint32_t window, bool strict, bool per_recipient = false)
{
	RateLimit r;
	r.key = RateLimit::Key::Client;
	r.count = count;
	r.window = window;
	r.strict = strict;
	r.per_recipient = per_recipient;
	return r;
}

// A limiter with the one limit r and its own state file.
struct Limiter {
	std::string file;
	RateLimiter rl;
	Limiter(const RateLimit& r, const std::string& name)
		: file(tmpdir + "/" + name), rl(file, "test.example", [](const std::string&, const std::string&) { return ""; })
	{
		unlink(file.c_str());
		rl.configure({r});
	}
	~Limiter() { unlink(file.c_str()); }
};

Envelope client(const std::string& addr)
{
	Envelope e;
	e.client = addr;
	return e;
}

// A MAIL from who at now: true when admitted, and then committed.
bool mail(RateLimiter& rl, const Envelope& who, time_t now)
{
	RateLimiter::Ticket t;
	if (!rl.admit(who, t, now).empty())
		return false;
	rl.count(t, who, "subject");
	return true;
}

// What the key's current window counts, as laimctl show limits gives it;
// 0 when it is not listed (no window, or one far from its limit).
uint64_t used(RateLimiter& rl, const std::string& key, time_t now)
{
	for (const LimitItem& i : rl.near_limits(now))
		if (i.key == key)
			return i.count;
	return 0;
}

// n MAILs at now that must all be refused.
void refused(RateLimiter& rl, const Envelope& who, int n, time_t now)
{
	for (int i = 0; i < n; i++)
		ck_assert_msg(!mail(rl, who, now), "MAIL %d of %d at %ld admitted over the limit", i + 1, n, (long)now);
}

}  // namespace

// Strict: 5 accepted and 60 refused in a window of 4 s, then quiet. The
// window after holds the limit's 5 (not 60), the one after that admits.
START_TEST(strict_burst_held_one_window)
{
	Limiter l(limit(5, 4, true), "burst.json");
	Envelope who = client("local");
	for (int i = 0; i < 5; i++)
		ck_assert_msg(mail(l.rl, who, 1000), "message %d refused under the limit", i + 1);
	refused(l.rl, who, 60, 1000);
	l.rl.tick(1004);
	ck_assert_uint_eq(used(l.rl, "client:local", 1004), 5);
	ck_assert_msg(mail(l.rl, who, 1008), "refused two windows after a burst of refused attempts");
}
END_TEST

// Strict: quiet for more than a window with no tick in between (laimd was
// stopped): the burst is gone at once, no window is carried.
START_TEST(strict_burst_after_long_quiet)
{
	Limiter l(limit(5, 4, true), "quiet.json");
	Envelope who = client("127.0.0.1");
	for (int i = 0; i < 5; i++)
		mail(l.rl, who, 1000);
	refused(l.rl, who, 60, 1000);
	ck_assert_msg(mail(l.rl, who, 1009), "refused after two quiet windows");
}
END_TEST

// Strict: a key that keeps trying stays refused, window after window.
START_TEST(strict_trying_stays_refused)
{
	Limiter l(limit(2, 10, true), "trying.json");
	Envelope who = client("127.0.0.1");
	mail(l.rl, who, 1000);
	mail(l.rl, who, 1000);
	refused(l.rl, who, 2, 1000);
	for (time_t t = 1010; t <= 1050; t += 10)
		refused(l.rl, who, 2, t + 1);
	ck_assert_uint_eq(used(l.rl, "client:127.0.0.1", 1060), 2);
	ck_assert_msg(mail(l.rl, who, 1070), "refused after a quiet window");
}
END_TEST

// Per recipient: what accepted mail counted beyond the limit is carried
// whole in both modes (7 recipients against 2: 5 over); strict adds at
// most the limit for its refused attempts.
START_TEST(recipients_carried_whole)
{
	for (bool strict : {false, true}) {
		Limiter l(limit(2, 10, strict, true), strict ? "rcpt-strict.json" : "rcpt-leaky.json");
		Envelope who = client("127.0.0.1");
		RateLimiter::Ticket t;
		ck_assert(l.rl.admit(who, t, 1000).empty());
		Envelope env = who;
		env.recipients.assign(7, "r@test.example");
		l.rl.count(t, env, "many");
		refused(l.rl, who, 20, 1000);
		ck_assert_uint_eq(used(l.rl, "client:127.0.0.1", 1010), strict ? 7u : 5u);
		ck_assert_uint_eq(used(l.rl, "client:127.0.0.1", 1020), strict ? 5u : 3u);
	}
}
END_TEST

// A state file as saved before strict's carry was capped (the window of a
// burst, with its refusals counted) loads, and its carry is capped.
START_TEST(older_state_file)
{
	RateLimit r = limit(5, 4, true);
	Limiter l(r, "older.json");
	std::ofstream(l.file) << R"({"version": 1, "windows": [{"rule": "client/4/message", "key": "client:local",
		"start": 1000, "count": 65, "refused": 60, "held": false, "alerted": true, "continued": false,
		"limited_until": 0, "first_id": "0123456789", "last_id": "0123456789", "subjects": {"x": 5}}]})";
	l.rl.load(1001);
	ck_assert_uint_eq(used(l.rl, "client:local", 1001), 65);
	l.rl.tick(1004);
	ck_assert_uint_eq(used(l.rl, "client:local", 1004), 5);
	ck_assert_msg(mail(l.rl, client("local"), 1008), "refused two windows after a loaded burst");
}
END_TEST

int main()
{
	char tmpl[] = "/tmp/test_ratelimit.XXXXXX";
	if (mkdtemp(tmpl) == nullptr)
		return EXIT_FAILURE;
	tmpdir = tmpl;

	Suite* s = suite_create("ratelimit");
	TCase* tc = tcase_create("carry");
	tcase_add_test(tc, strict_burst_held_one_window);
	tcase_add_test(tc, strict_burst_after_long_quiet);
	tcase_add_test(tc, strict_trying_stays_refused);
	tcase_add_test(tc, recipients_carried_whole);
	tcase_add_test(tc, older_state_file);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	rmdir(tmpl);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
