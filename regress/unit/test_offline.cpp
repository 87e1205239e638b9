// Unit tests of the offline spool file format (common/offline.cpp).
#include <check.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/offline.h"

using laim::offline_decode;
using laim::offline_encode;
using laim::OfflineEnvelope;

namespace {

// Decoding data must fail with a message that contains `why`.
void expect_malformed(const std::string& data, const std::string& why)
{
	OfflineEnvelope env;
	env.sender = "untouched";
	try {
		size_t n = offline_decode(data, env);
		ck_abort_msg("decoded %zu bytes of a malformed header: %s", n, data.c_str());
	} catch (const std::runtime_error& e) {
		std::string what = e.what();
		ck_assert_msg(what.find(why) != std::string::npos, "error \"%s\" does not say \"%s\" for %s",
			      what.c_str(), why.c_str(), data.c_str());
	}
	ck_assert_str_eq(env.sender.c_str(), "untouched");
}

void expect_encode_refused(const OfflineEnvelope& env)
{
	try {
		std::string h = offline_encode(env);
		ck_abort_msg("encoded an envelope over the limits: %s", h.c_str());
	} catch (const std::invalid_argument&) {
	}
}

std::string header_with(const std::string& rest) { return "LAIMDROP 1\n" + rest; }

}  // namespace

START_TEST(test_encode_format)
{
	OfflineEnvelope env{"root@host.lan", {"a@x.example", "b@y.example"}};
	// ck_assert_str_eq keeps a pointer to its argument: compare owned strings.
	std::string h = offline_encode(env);
	ck_assert_str_eq(h.c_str(), "LAIMDROP 1\n13:root@host.lan,1:2,11:a@x.example,11:b@y.example,\n");
	OfflineEnvelope null_sender{"", {"root@h"}};
	h = offline_encode(null_sender);
	ck_assert_str_eq(h.c_str(), "LAIMDROP 1\n0:,1:1,6:root@h,\n");
}
END_TEST

START_TEST(test_roundtrip)
{
	OfflineEnvelope env;
	env.sender = "j\xc3\xb6rg@b\xc3\xbc" "cher.example";  // UTF-8 passes through
	for (int i = 0; i < 1000; i++)
		env.recipients.push_back("user" + std::to_string(i) + "@" + std::string(300, 'd'));
	// Bytes that look like structure, inside a value and in the message.
	env.recipients[5] = "\"a,1:b\n\"@x";
	env.recipients[5].erase(env.recipients[5].find('\n'), 1);
	std::string header = offline_encode(env);
	std::string message = "Subject: 3:abc,\r\n\r\nLAIMDROP 1\n0:,\n";
	std::string file = header + message;

	OfflineEnvelope got;
	size_t n = offline_decode(file, got);
	ck_assert_uint_eq(n, header.size());
	ck_assert(file.substr(n) == message);
	ck_assert(got.sender == env.sender);
	ck_assert(got.recipients == env.recipients);
}
END_TEST

START_TEST(test_decode_message_follows)
{
	OfflineEnvelope got;
	std::string file = "LAIMDROP 1\n0:,1:1,6:root@h,\nbody";
	size_t n = offline_decode(file, got);
	ck_assert_uint_eq(n, file.size() - 4);
	ck_assert_str_eq(got.sender.c_str(), "");
	ck_assert_uint_eq(got.recipients.size(), 1);
	ck_assert_str_eq(got.recipients[0].c_str(), "root@h");
	// An empty message is the decoder's to accept; import judges it.
	ck_assert_uint_eq(offline_decode("LAIMDROP 1\n0:,1:1,6:root@h,\n", got), file.size() - 4);
}
END_TEST

START_TEST(test_bad_magic)
{
	expect_malformed("", "magic");
	expect_malformed("LAIMDROP 2\n0:,1:1,1:a,\n", "magic");
	expect_malformed("laimdrop 1\n0:,1:1,1:a,\n", "magic");
	expect_malformed("LAIMDROP 1\r\n0:,1:1,1:a,\n", "magic");
	expect_malformed("LAIMDROP 1", "magic");
	expect_malformed(" LAIMDROP 1\n0:,1:1,1:a,\n", "magic");
}
END_TEST

START_TEST(test_bad_lengths)
{
	expect_malformed(header_with(":,1:1,1:a,\n"), "no length");
	expect_malformed(header_with("x:,1:1,1:a,\n"), "no length");
	expect_malformed(header_with("-1:,1:1,1:a,\n"), "no length");
	expect_malformed(header_with("1a:,1:1,1:a,\n"), "not followed by ':'");
	expect_malformed(header_with("3;abc,1:1,1:a,\n"), "not followed by ':'");
	expect_malformed(header_with("321:" + std::string(321, 'a') + ",1:1,1:a,\n"), "longer than 320");
	expect_malformed(header_with("99999999999999999999999:a,\n"), "longer than 320");
	// A length that overstates or understates the value.
	expect_malformed(header_with("5:abc,1:1,1:a,\n"), "does not end with ','");
	expect_malformed(header_with("2:abc,1:1,1:a,\n"), "does not end with ','");
}
END_TEST

START_TEST(test_leading_zeros)
{
	expect_malformed(header_with("00:,1:1,1:a,\n"), "leading zero");
	expect_malformed(header_with("01:a,1:1,1:a,\n"), "leading zero");
	expect_malformed(header_with("0:,01:1,1:a,\n"), "leading zero");
	expect_malformed(header_with("0:,1:1,01:a,\n"), "leading zero");
	// The count value itself.
	expect_malformed(header_with("0:,2:01,1:a,\n"), "bad recipient count");
}
END_TEST

START_TEST(test_missing_comma)
{
	expect_malformed(header_with("1:a1:1,1:b,\n"), "does not end with ','");
	expect_malformed(header_with("1:a,1:1;1:b,\n"), "does not end with ','");
	expect_malformed(header_with("1:a,1:1,1:b\n"), "does not end with ','");
}
END_TEST

START_TEST(test_count)
{
	expect_malformed(header_with("0:,1:0,\n"), "bad recipient count");
	expect_malformed(header_with("0:,0:,\n"), "bad recipient count");
	expect_malformed(header_with("0:,1:x,1:a,\n"), "bad recipient count");
	expect_malformed(header_with("0:,2:-1,1:a,\n"), "bad recipient count");
	expect_malformed(header_with("0:,2: 1,1:a,\n"), "bad recipient count");
	// Count and recipients disagree, both ways.
	expect_malformed(header_with("0:,1:2,1:a,\n"), "no length");
	expect_malformed(header_with("0:,1:1,1:a,1:b,\n"), "garbage after the recipients");
	expect_malformed(header_with("0:,1:1,0:,\n"), "empty recipient");
}
END_TEST

START_TEST(test_too_many_recipients)
{
	std::string h = "0:,4:1001,";
	for (int i = 0; i < 1001; i++)
		h += "1:a,";
	expect_malformed(header_with(h + "\n"), "too many recipients");
	expect_malformed(header_with("0:,5:99999,1:a,\n"), "too many recipients");
	expect_malformed(header_with("0:,5:10000,1:a,\n"), "too many recipients");

	OfflineEnvelope env{"", std::vector<std::string>(1001, "a@b")};
	expect_encode_refused(env);
	env.recipients.resize(1000);
	OfflineEnvelope got;
	ck_assert_uint_eq(offline_decode(offline_encode(env), got), offline_encode(env).size());
	ck_assert_uint_eq(got.recipients.size(), 1000);
}
END_TEST

START_TEST(test_control_characters)
{
	expect_malformed(header_with("3:a\rb,1:1,1:a,\n"), "CR, LF or NUL");
	expect_malformed(header_with("3:a\nb,1:1,1:a,\n"), "CR, LF or NUL");
	expect_malformed(header_with(std::string("3:a\0b,1:1,1:a,\n", 15)), "CR, LF or NUL");
	expect_malformed(header_with("0:,1:1,3:a\rb,\n"), "CR, LF or NUL");
	expect_malformed(header_with("0:,1:1,3:a\nb,\n"), "CR, LF or NUL");
	expect_malformed(header_with(std::string("0:,1:1,3:a\0b,\n", 14)), "CR, LF or NUL");

	expect_encode_refused({"a\nb@x", {"r@x"}});
	expect_encode_refused({"a@x", {"r@x", "s\r@x"}});
	expect_encode_refused({"a@x", {std::string("r\0@x", 4)}});
	expect_encode_refused({std::string(321, 'a'), {"r@x"}});
	expect_encode_refused({"a@x", {"r@x", ""}});
	expect_encode_refused({"a@x", {}});
}
END_TEST

// The message's line ends and NUL, by the smtp process's rules for the
// local socket: the first fault is named with its offset.
START_TEST(test_body_fault)
{
	// ck_assert_str_eq keeps a pointer to its argument: compare owned strings.
	auto expect = [](const std::string& message, const char* want) {
		std::string got = laim::offline_body_fault(message);
		ck_assert_str_eq(got.c_str(), want);
	};
	expect("", "");
	expect("Subject: a\r\n\r\nbody\r\n.\r\n", "");
	expect("no line end at all", "");
	expect("a\r\n" + std::string(5000, 'L') + "\r\n", "");
	expect("a\r\nb\rc\r\n", "bare CR or LF in the message at octet 4");
	expect("a\r.\r\n", "bare CR or LF in the message at octet 1");
	expect("a\r\nb\n", "bare CR or LF in the message at octet 4");
	expect("\n", "bare CR or LF in the message at octet 0");
	expect("a\r\r\n", "bare CR or LF in the message at octet 1");
	expect("a\r", "bare CR or LF in the message at octet 1");
	expect(std::string("ab\0\r\n", 5), "NUL in the message at octet 2");
}
END_TEST

START_TEST(test_trailing_garbage)
{
	expect_malformed(header_with("0:,1:1,1:a,x\n"), "garbage");
	expect_malformed(header_with("0:,1:1,1:a, \n"), "garbage");
	expect_malformed(header_with("0:,1:1,1:a,\r\n"), "garbage");
	expect_malformed(header_with("0:,1:1,1:a,,\n"), "garbage");
}
END_TEST

START_TEST(test_truncated)
{
	std::string full = offline_encode({"root@host.lan", {"a@x.example", "b@y.example"}});
	// Every proper prefix of a header is refused, whatever its cut.
	for (size_t n = 0; n < full.size(); n++) {
		OfflineEnvelope env;
		try {
			offline_decode(full.substr(0, n), env);
			ck_abort_msg("decoded a header cut at %zu of %zu", n, full.size());
		} catch (const std::runtime_error&) {
		}
	}
	expect_malformed(full.substr(0, full.size() - 1), "before its final newline");
	expect_malformed(header_with("13:root@host"), "truncated in the sender");
	expect_malformed(header_with("0:,1:1,11:a@x"), "truncated in the recipient");
	expect_malformed(header_with("0:,1:1,11"), "truncated in the recipient");
}
END_TEST

static Suite* offline_suite()
{
	Suite* s = suite_create("offline");
	TCase* tc = tcase_create("offline");
	tcase_add_test(tc, test_encode_format);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_decode_message_follows);
	tcase_add_test(tc, test_bad_magic);
	tcase_add_test(tc, test_bad_lengths);
	tcase_add_test(tc, test_leading_zeros);
	tcase_add_test(tc, test_missing_comma);
	tcase_add_test(tc, test_count);
	tcase_add_test(tc, test_too_many_recipients);
	tcase_add_test(tc, test_control_characters);
	tcase_add_test(tc, test_body_fault);
	tcase_add_test(tc, test_trailing_garbage);
	tcase_add_test(tc, test_truncated);
	suite_add_tcase(s, tc);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(offline_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
