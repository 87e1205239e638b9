// Unit tests of route matching: pattern kinds, case rules, first match.
#include <cstdlib>
#include <string>
#include <vector>

#include "handler/api/handler.h"
#include "handler/routes.h"

#include <check.h>

using namespace laim;

namespace {

struct Case {
	const char* pattern;
	const char* rcpt;
	bool match;
};

void check_cases(const Case* cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(route_matches(cases[i].pattern, cases[i].rcpt) == cases[i].match,
			      "route_matches(\"%s\", \"%s\") should be %s", cases[i].pattern, cases[i].rcpt,
			      cases[i].match ? "true" : "false");
}

Route route(const char* match, const char* handler, int line)
{
	Route r;
	r.match = match;
	r.handlers = {handler};
	r.line = line;
	return r;
}

}  // namespace

START_TEST(test_default)
{
	const Case cases[] = {
		{"*", "root@host.lan", true},
		{"*", "root", true},
		{"*", "\"a b\"@example.org", true},
		{"*", "", true},
	};
	check_cases(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

START_TEST(test_domain)
{
	const Case cases[] = {
		{"*@example.org", "alice@example.org", true},
		{"*@example.org", "Alice@EXAMPLE.Org", true},
		{"*@Example.ORG", "bob@example.org", true},
		{"*@example.org", "alice@example.com", false},
		{"*@example.org", "alice@sub.example.org", false},
		{"*@example.org", "alice@example.org.evil", false},
		{"*@example.org", "example.org", false},
		// A recipient without a domain never matches a domain pattern.
		{"*@example.org", "alice", false},
		{"*@example.org", "\"x@example.org\"", false},
		{"*@example.org", "\"x@y\"@example.org", true},
	};
	check_cases(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

START_TEST(test_local)
{
	const Case cases[] = {
		{"alerts@*", "alerts@example.org", true},
		{"alerts@*", "alerts@OTHER.example", true},
		{"alerts@*", "alerts", true},  // no domain: still that local part
		{"alerts@*", "Alerts@example.org", false},  // local parts are case-sensitive
		{"alerts@*", "alerts2@example.org", false},
		{"alerts@*", "xalerts@example.org", false},
		{"alerts@*", "\"alerts\"@example.org", false},  // quoted compares as written
		{"\"a b\"@*", "\"a b\"@example.org", true},
		{"\"a b\"@*", "\"a b\"", true},
		{"\"a@b\"@*", "\"a@b\"@example.org", true},
		{"\"a@b\"@*", "a@b", false},
	};
	check_cases(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

START_TEST(test_exact)
{
	const Case cases[] = {
		{"root@host.lan", "root@host.lan", true},
		{"root@host.lan", "root@HOST.LAN", true},
		{"root@HOST.lan", "root@host.LAN", true},
		{"root@host.lan", "Root@host.lan", false},
		{"root@host.lan", "root@other.lan", false},
		{"root@host.lan", "root", false},
		{"root@host.lan", "roots@host.lan", false},
		// An exact pattern without '@' is a domainless address.
		{"root", "root", true},
		{"root", "root@host.lan", false},
		{"root", "ROOT", false},
		{"\"Bob Smith\"@example.org", "\"Bob Smith\"@EXAMPLE.org", true},
		{"\"Bob Smith\"@example.org", "\"bob smith\"@example.org", false},
	};
	check_cases(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

// RFC 5321 4.5.1: postmaster is recognised in any case.
START_TEST(test_postmaster)
{
	const Case cases[] = {
		{"postmaster@*", "PostMaster@example.org", true},
		{"postmaster@*", "POSTMASTER", true},
		{"Postmaster@*", "postmaster@example.org", true},
		{"postmaster@example.org", "POSTMASTER@Example.Org", true},
		{"postmaster", "Postmaster", true},
		{"postmaster@example.org", "postmaster@example.com", false},
		{"postmaster@*", "postmasters@example.org", false},
		{"postmaster", "postmaster@example.org", false},
	};
	check_cases(cases, sizeof cases / sizeof cases[0]);
}
END_TEST

START_TEST(test_find)
{
	const std::vector<Route> routes = {
		route("root@host.lan", "exact", 10),
		route("alerts@*", "alerts", 11),
		route("*@example.org", "domain", 12),
		route("*", "default", 13),
	};
	const struct {
		const char* rcpt;
		int line;
	} cases[] = {
		{"root@HOST.lan", 10},
		{"alerts@example.org", 11},  // local@* comes before *@domain
		{"alerts", 11},
		{"root@example.org", 12},
		{"nobody@elsewhere", 13},
		{"root", 13},
	};
	for (const auto& c : cases) {
		const Route* r = route_find(routes, c.rcpt);
		ck_assert_ptr_nonnull(r);
		ck_assert_msg(r->line == c.line, "%s: route line %d, want %d", c.rcpt, r->line, c.line);
		ck_assert_ptr_eq(r, &routes[c.line - 10]);
	}

	// Without the default route, what matches nothing is refused.
	const std::vector<Route> partial(routes.begin(), routes.end() - 1);
	ck_assert_ptr_null(route_find(partial, "nobody@elsewhere"));
	ck_assert_ptr_null(route_find(partial, "root"));
	ck_assert_ptr_null(route_find({}, "root@host.lan"));
	ck_assert_ptr_eq(route_find(partial, "root@host.lan"), &partial[0]);

	// The same patterns in another order: the first match still wins.
	const std::vector<Route> reversed(routes.rbegin(), routes.rend());
	ck_assert_ptr_eq(route_find(reversed, "root@host.lan"), &reversed[0]);
	ck_assert_int_eq(route_find(reversed, "root@host.lan")->line, 13);
}
END_TEST

// One copy per final recipient, but only among those the routes send to
// the same handlers: a recipient that got 250 is never dropped because
// another differs from it in case or in its local domain.
START_TEST(test_add_recipient)
{
	set_local_domains({"host.lan", "localhost"});
	const std::vector<Route> routes = {
		route("Alice@*", "upper", 10),
		route("alice@*", "lower", 11),
		route("root@localhost", "inbox", 12),
		route("*@host.lan", "domain", 13),
		route("*", "inbox", 14),
	};
	std::vector<std::string> list;
	for (const char* r : {"Alice@host.lan", "alice@host.lan", "ALICE@HOST.lan", "root@localhost", "root@host.lan",
			      "Root@host.lan", "root", "bob@host.lan", "Bob@HOST.LAN", "x@remote.example",
			      "x@REMOTE.example", "X@remote.example"})
		add_recipient(routes, list, r);
	// ALICE falls under *@host.lan; "root" under "*", as root@localhost's
	// route, with the same handler: one copy.
	const std::vector<std::string> want = {"Alice@host.lan", "alice@host.lan",   "ALICE@HOST.lan",
					       "root@localhost", "root@host.lan",    "bob@host.lan",
					       "x@remote.example", "X@remote.example"};
	ck_assert_int_eq(list.size(), want.size());
	for (size_t i = 0; i < want.size(); i++)
		ck_assert_str_eq(list[i].c_str(), want[i].c_str());
}
END_TEST

static Suite* routes_suite()
{
	Suite* s = suite_create("routes");
	TCase* tc = tcase_create("routes");
	tcase_add_test(tc, test_default);
	tcase_add_test(tc, test_domain);
	tcase_add_test(tc, test_local);
	tcase_add_test(tc, test_exact);
	tcase_add_test(tc, test_postmaster);
	tcase_add_test(tc, test_find);
	tcase_add_test(tc, test_add_recipient);
	suite_add_tcase(s, tc);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(routes_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
