// Unit tests of the non-delivery notice: who gets one, and what its
// delivery-status and header parts say for each kind of failure line.
#include <cstdlib>
#include <string>
#include <vector>

#include "handler/api/handler.h"
#include "handler/bounce.h"

#include <check.h>

using namespace laim;

namespace {

Envelope envelope(const char* sender)
{
	Envelope env;
	env.id = "0123456789";
	env.sender = sender;
	env.arrival = 1700000000;
	return env;
}

std::string notice(const std::vector<std::string>& failures, const std::string& message)
{
	return bounce_message(envelope("alice"), failures, message, "host.example", 1700000100);
}

bool has(const std::string& text, const std::string& part)
{
	return text.find(part) != std::string::npos;
}

}  // namespace

START_TEST(test_who_gets_one)
{
	set_local_domains({"host.example"});
	ck_assert(wants_bounce(envelope("alice")));
	ck_assert(wants_bounce(envelope("alice@HOST.example")));
	ck_assert(!wants_bounce(envelope("")));
	ck_assert(!wants_bounce(envelope("alice@client.example")));
	Envelope own = envelope("alice");
	own.instance = "alerts";
	ck_assert(!wants_bounce(own));
}
END_TEST

START_TEST(test_status_per_failure)
{
	std::string n = notice({"<a@x> handler smart: 5.1.1 550 mailbox unknown",
				"<b@x> handler smart: expired after 3 attempts: connection refused",
				"<c@x> handler box: disk quota\r\nInjected: yes", "<d@x>: no route",
				"<e@x>: 5.3.4 refused from offline/: too big", "an odd line"},
			       "Subject: hi\r\n\r\nbody\r\n");
	ck_assert(has(n, "Final-Recipient: rfc822; a@x\r\nAction: failed\r\nStatus: 5.1.1\r\n"
			 "Diagnostic-Code: smtp; 550 mailbox unknown\r\n"));
	ck_assert(has(n, "Final-Recipient: rfc822; d@x\r\nAction: failed\r\nStatus: 5.0.0\r\n"
			 "Diagnostic-Code: X-laim; no route\r\n"));
	ck_assert(has(n, "\r\n<d@x>: no route\r\n"));
	ck_assert(has(n, "\r\n<a@x>: 550 mailbox unknown (handler smart)\r\n"));
	ck_assert(has(n, "Final-Recipient: rfc822; b@x\r\nAction: failed\r\nStatus: 4.4.7\r\n"));
	ck_assert(has(n, "Final-Recipient: rfc822; c@x\r\nAction: failed\r\nStatus: 5.0.0\r\n"
			 "Diagnostic-Code: X-laim; disk quota  Injected: yes\r\n"));
	ck_assert(has(n, "Final-Recipient: rfc822; e@x\r\nAction: failed\r\nStatus: 5.3.4\r\n"
			 "Diagnostic-Code: X-laim; refused from offline/: too big\r\n"));
	ck_assert(!has(n, "\r\nInjected: yes"));
	ck_assert(has(n, "\r\nan odd line\r\n"));  // in the text part alone
	ck_assert(!has(n, "Final-Recipient: rfc822; \r\n"));
	ck_assert(has(n, "\r\nTo: <alice@host.example>\r\n"));
	ck_assert(has(n, "\r\nSubject: hi\r\n\r\n--"));
	ck_assert(!has(n, "body"));
}
END_TEST

START_TEST(test_headers_cut_at_a_line)
{
	std::string line = "X-Long: " + std::string(1000, 'a') + "\n";
	std::string headers;
	while (headers.size() < 2 * BOUNCE_HEADERS_MAX)
		headers += line;
	std::string n = notice({"<a@x> handler box: full"}, headers + "\nbody\n");
	size_t start = n.find("Content-Type: text/rfc822-headers\r\n\r\n");
	ck_assert(start != std::string::npos);
	start += 37;
	size_t end = n.find("\r\n--", start);
	std::string part = n.substr(start, end - start);  // the header lines, each with its CRLF
	ck_assert_uint_le(part.size(), BOUNCE_HEADERS_MAX);
	ck_assert_uint_gt(part.size(), BOUNCE_HEADERS_MAX - line.size() - 2);
	ck_assert_uint_eq(part.size() % (line.size() + 1), 0);  // whole lines, CRLF
}
END_TEST

static Suite* bounce_suite()
{
	Suite* s = suite_create("bounce");
	TCase* tc = tcase_create("bounce");
	tcase_add_test(tc, test_who_gets_one);
	tcase_add_test(tc, test_status_per_failure);
	tcase_add_test(tc, test_headers_cut_at_a_line);
	suite_add_tcase(s, tc);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(bounce_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
