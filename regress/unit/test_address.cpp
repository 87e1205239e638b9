// Unit tests of the RFC 5321 address parser (common/address.cpp).
#include <check.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "common/address.h"

using laim::AddressStatus;
using laim::local_part_text;
using laim::parse_path;
using laim::quote_local_part;
using laim::SmtpPath;
using laim::valid_domain;
using laim::valid_mailbox;
using laim::valid_user_name;
using laim::comment_name;

namespace {

// ck_assert_str_eq keeps a pointer to its argument: compare owned strings.
void expect_view(std::string_view got, const std::string& want)
{
	std::string g(got);
	ck_assert_str_eq(g.c_str(), want.c_str());
}

// Parses arg and checks status and, on Ok, the mailbox it yields.
void expect_path(const std::string& arg, AddressStatus want, const std::string& mailbox = "")
{
	SmtpPath p;
	AddressStatus st = parse_path(arg, p);
	ck_assert_msg(st == want, "parse_path(\"%s\") = %d, want %d", arg.c_str(), int(st), int(want));
	if (want == AddressStatus::Ok)
		expect_view(p.mailbox, mailbox);
}

void expect_ok(const std::string& addr) { expect_path("<" + addr + ">", AddressStatus::Ok, addr); }
void expect_invalid(const std::string& inner) { expect_path("<" + inner + ">", AddressStatus::Invalid); }

}  // namespace

START_TEST(test_plain)
{
	expect_ok("user@example.com");
	expect_ok("first.last+tag@sub-domain.example.com");
	expect_ok("a!#$%&'*+-/=?^_`{|}~@x.example");
	expect_ok("u@x");
	expect_ok("u@123.example");  // digits may start a label
	expect_ok("root");           // bare local part, local mail
	expect_ok("MAILER-DAEMON");
}
END_TEST

START_TEST(test_rest_and_null)
{
	SmtpPath p;
	ck_assert(parse_path("<a@b.example> SIZE=100 BODY=8BITMIME", p) == AddressStatus::Ok);
	expect_view(p.mailbox, "a@b.example");
	expect_view(p.rest, " SIZE=100 BODY=8BITMIME");
	ck_assert(!p.utf8);

	ck_assert(parse_path("<>", p) == AddressStatus::Ok);
	ck_assert(p.mailbox.empty());
	ck_assert(p.rest.empty());
	ck_assert(parse_path("<> SMTPUTF8", p) == AddressStatus::Ok);
	ck_assert(p.mailbox.empty());
	expect_view(p.rest, " SMTPUTF8");
}
END_TEST

START_TEST(test_syntax)
{
	expect_path("", AddressStatus::Syntax);
	expect_path("user@example.com", AddressStatus::Syntax);
	expect_path("<user@example.com", AddressStatus::Syntax);
	expect_path("<user@example.com>x", AddressStatus::Syntax);
	expect_path("<user@example.com>>", AddressStatus::Syntax);
	expect_path(" <user@example.com>", AddressStatus::Syntax);
	expect_path("<\"unterminated@example.com>", AddressStatus::Syntax);
}
END_TEST

START_TEST(test_quoted)
{
	expect_ok("\"john doe\"@example.com");
	expect_ok("\"a\\\"b\"@example.com");   // quoted-pair
	expect_ok("\"a\\\\b\"@example.com");
	expect_ok("\"a>b\"@example.com");      // '>' inside quotes does not end the path
	expect_ok("\"@\"@example.com");
	expect_ok("\"odd local\"");            // bare quoted local part
	expect_invalid("\"a\"b@example.com");  // text after the quotes
	expect_invalid("a\"b\"@example.com");
	expect_invalid("\"a\tb\"@example.com");
	expect_invalid("\"a\\\x01\"@example.com");  // quoted-pair of a control character
	expect_invalid("\"a\x7f\"@example.com");
}
END_TEST

START_TEST(test_dot_string)
{
	expect_invalid(".user@example.com");
	expect_invalid("user.@example.com");
	expect_invalid("us..er@example.com");
	expect_invalid("us er@example.com");
	expect_invalid("us(er)@example.com");
	expect_invalid("us,er@example.com");
	expect_invalid("user@@example.com");
	expect_invalid("@example.com");
	expect_invalid("user@");
}
END_TEST

START_TEST(test_domain)
{
	expect_invalid("user@-x.example");
	expect_invalid("user@x-.example");
	expect_invalid("user@x..example");
	expect_invalid("user@.x.example");
	expect_invalid("user@x.example.");
	expect_invalid("user@x_y.example");
	expect_invalid("user@x y.example");
	expect_ok("user@x-y.example");
	ck_assert(valid_domain(std::string(63, 'a') + ".example", false));
	ck_assert(!valid_domain(std::string(64, 'a') + ".example", false));
	// 253 octets of text is 255 on the wire, with the length octets.
	std::string d253 = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
			   std::string(61, 'd');
	ck_assert_uint_eq(d253.size(), 253);
	ck_assert(valid_domain(d253, false));
	ck_assert(!valid_domain(d253 + "d", false));  // 254, every label still at most 63
	ck_assert(!valid_domain("", false));
	// A host's name: never an IPv4 address (a numeric last label).
	ck_assert(laim::valid_host_name("mail.example"));
	ck_assert(laim::valid_host_name("10.example"));
	ck_assert(laim::valid_host_name("host1"));
	ck_assert(!laim::valid_host_name("127.0.0.1"));
	ck_assert(!laim::valid_host_name("localhost.123"));
	ck_assert(!laim::valid_host_name("-x.example"));
}
END_TEST

START_TEST(test_address_literal)
{
	expect_ok("user@[192.0.2.1]");
	expect_ok("user@[0.0.0.0]");
	expect_ok("user@[255.255.255.255]");
	expect_ok("user@[IPv6:2001:db8::1]");
	expect_ok("user@[IPv6:::1]");
	expect_ok("user@[IPv6:::ffff:192.0.2.1]");
	expect_ok("user@[ipv6:2001:db8:0:0:0:0:0:1]");
	expect_invalid("user@[256.0.0.1]");
	expect_invalid("user@[1.2.3]");
	expect_invalid("user@[1.2.3.4.]");
	expect_invalid("user@[1.2.3.4.5]");
	expect_invalid("user@[1234.2.3.4]");
	expect_invalid("user@[]");
	expect_invalid("user@[192.0.2.1");
	expect_invalid("user@[IPv6:2001:db8::g]");
	expect_invalid("user@[IPv6:fe80::1%eth0]");
	expect_invalid("user@[IPv6:192.0.2.1]");
	expect_invalid("user@[tag:content]");  // no General-address-literal is standardized
	expect_invalid("user@[192.0.2.1]x");
}
END_TEST

START_TEST(test_source_route)
{
	expect_path("<@a.example,@b.example:user@c.example>", AddressStatus::Ok, "user@c.example");
	expect_path("<@a.example:user@c.example> SIZE=1", AddressStatus::Ok, "user@c.example");
	expect_path("<@a.example:root>", AddressStatus::Ok, "root");
	expect_invalid("@a.example:");
	expect_invalid("@a.example,user@c.example");
	expect_invalid("@:user@c.example");
	expect_invalid("@a.example,:user@c.example");
	expect_invalid("@a.example,@:user@c.example");
	expect_invalid("a.example:user@c.example");
	expect_invalid("@a..example:user@c.example");
	expect_invalid("@[192.0.2.1]:user@c.example");
}
END_TEST

START_TEST(test_lengths)
{
	std::string l64(64, 'l');
	expect_ok(l64 + "@example.com");
	expect_invalid(l64 + "l@example.com");
	expect_ok("\"" + std::string(62, 'q') + "\"@example.com");   // 64 with the quotes
	expect_invalid("\"" + std::string(63, 'q') + "\"@example.com");
	expect_ok(l64);
	expect_invalid(l64 + "l");

	// Path "<" + "a@" + domain + ">" of exactly 256 octets, then 257.
	std::string dom = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
			  std::string(60, 'd');
	ck_assert_uint_eq(dom.size(), 252);
	expect_ok("a@" + dom);
	expect_invalid("ab@" + dom);
	expect_invalid("@x.example:a@" + dom);  // the source route counts too
}
END_TEST

START_TEST(test_utf8)
{
	// UTF-8 is parsed and flagged; the session accepts it only with SMTPUTF8.
	SmtpPath p;
	ck_assert(parse_path("<用户@例子.广告>", p) == AddressStatus::Ok);
	ck_assert(p.utf8);
	expect_view(p.mailbox, "用户@例子.广告");
	ck_assert(parse_path("<\"jörg müller\"@example.com>", p) == AddressStatus::Ok);
	ck_assert(p.utf8);
	ck_assert(parse_path("<@bücher.example:a@b.example>", p) == AddressStatus::Ok);
	ck_assert(p.utf8);
	ck_assert(parse_path("<a@b.example>", p) == AddressStatus::Ok);
	ck_assert(!p.utf8);

	ck_assert(valid_mailbox("用户@例子.广告", true));
	ck_assert(!valid_mailbox("用户@例子.广告", false));
	ck_assert(!valid_mailbox("user@bücher.example", false));
	ck_assert(valid_mailbox("user@bücher.example", true));
	ck_assert(!valid_domain("bücher.example", false));
	ck_assert(valid_domain("bücher.example", true));

	// Not UTF-8, or UTF-8 that hides a control character.
	expect_invalid("a\xc3\x28@example.com");          // bad continuation
	expect_invalid("a\xc0\xaf@example.com");          // overlong '/'
	expect_invalid("a\xe0\x80\xaf@example.com");      // overlong, 3 bytes
	expect_invalid("a\xed\xa0\x80@example.com");      // surrogate
	expect_invalid("a\xf4\x90\x80\x80@example.com");  // past U+10FFFF
	expect_invalid("a\xc2\x85@example.com");          // U+0085 NEL, a C1 control
	expect_invalid("a\xc3@example.com");              // truncated
	expect_invalid("a\xff@example.com");
	expect_invalid("a@ex\xe4mple.com");               // Latin-1, not UTF-8
}
END_TEST

// Code points that reorder or break the displayed text (bidi controls and
// marks, line and paragraph separators) are refused in every part of an
// address, quoted or not; their neighbours are not.
START_TEST(test_display_controls)
{
	const unsigned refused[] = {0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c,
				    0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069};
	auto utf8 = [](unsigned cp) {
		return std::string{char(0xe0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 0x3f)), char(0x80 | (cp & 0x3f))};
	};
	for (unsigned cp : refused) {
		std::string ch = utf8(cp);
		expect_invalid("us" + ch + "er@example.com");
		expect_invalid("user@exa" + ch + "mple.com");
		expect_invalid("\"us" + ch + "er\"@example.com");
		expect_invalid(ch + "user@example.com");
		ck_assert(!valid_domain("exa" + ch + "mple.com", true));
	}
	for (unsigned cp : {0x200du, 0x2027u, 0x202fu, 0x2065u, 0x206au})
		ck_assert_msg(valid_mailbox("us" + utf8(cp) + "er@example.com", true), "U+%04X refused", cp);
}
END_TEST

START_TEST(test_no_controls)
{
	// No accepted address may hold a control character, wherever it is put.
	for (int c = 0; c < 0x20; c++) {
		std::string ch(1, char(c));
		expect_invalid("us" + ch + "er@example.com");
		expect_invalid("user@exa" + ch + "mple.com");
		expect_invalid("\"us" + ch + "er\"@example.com");
		expect_invalid("\"us\\" + ch + "er\"@example.com");
		expect_invalid("user@[192.0.2.1" + ch + "]");
		expect_invalid("user" + ch);
		ck_assert(!valid_mailbox("user@example.com" + ch, true));
		ck_assert(!valid_mailbox(ch + "user@example.com", true));
	}
	expect_invalid("us\x7f" "er@example.com");
	expect_invalid("user@example.com\r\n");
	expect_path("<user@example.com\r\nRCPT TO:<x@y>>", AddressStatus::Syntax);
}
END_TEST

START_TEST(test_valid_mailbox)
{
	ck_assert(valid_mailbox("user@example.com", false));
	ck_assert(valid_mailbox("root", false, true));
	ck_assert(!valid_mailbox("root", false, false));
	ck_assert(valid_mailbox("\"a b\"@[IPv6:::1]", false, false));
	ck_assert(!valid_mailbox("<user@example.com>", false));
	ck_assert(!valid_mailbox("", false));
	ck_assert(!valid_mailbox("user@example.com ", false));
	ck_assert(!valid_mailbox("user@example.com,other@example.com", false));
}
END_TEST

// What may name mail_dir/USER (the parent's check of a mailbox request,
// and laim-mda's of its argument): a plain name, never a path or an option.
START_TEST(test_valid_user_name)
{
	for (const char* ok : {"root", "bob", "mary.ann", "svc_backup-2", "a"})
		ck_assert_msg(valid_user_name(ok), "%s refused", ok);
	for (const char* bad : {"", ".", "..", "../etc/passwd", "a/b", "/root", "-f", ".hidden", "bob\n", "a b",
				"b\xc3\xb6" "b", "x\nlaimd[1]: FORGED"})
		ck_assert_msg(!valid_user_name(bad), "%s accepted", bad);
	ck_assert(valid_user_name(std::string(64, 'u')));
	ck_assert(!valid_user_name(std::string(65, 'u')));
	ck_assert(!valid_user_name(std::string_view("bob\0x", 5)));
}
END_TEST

// A user name in a Received: comment: nothing that could end the comment
// or quote its ')' (a backslash), no space, control or 8-bit byte.
START_TEST(test_comment_name)
{
	expect_view(comment_name("alice.b-2@x"), "alice.b-2@x");
	expect_view(comment_name("rdz) (authenticated as admin"), "rdz___authenticated_as_admin");
	expect_view(comment_name("ends in\\"), "ends_in_");
	expect_view(comment_name("j\xc3\xb6rg\r\n\tx"), "j__rg___x");
	expect_view(comment_name(std::string(300, 'u')), std::string(255, 'u'));
	expect_view(comment_name(""), "");
}
END_TEST

// A local part's text and back: a Dot-string stays as it is, any other
// text becomes one Quoted-string that valid_mailbox() accepts (an SRS
// address made of "john doe"@example.net).
START_TEST(test_quote_local_part)
{
	expect_view(local_part_text("\"john doe\""), "john doe");
	expect_view(local_part_text("\"a\\\"b\\\\c\""), "a\"b\\c");
	expect_view(local_part_text("plain.user"), "plain.user");
	expect_view(quote_local_part("SRS0=ab+/=TT=example.net=john"), "SRS0=ab+/=TT=example.net=john");
	expect_view(quote_local_part("b\xc3\xb6" "b"), "b\xc3\xb6" "b");
	std::string srs = quote_local_part("SRS0=qPYb=JU=example.net=john doe");
	expect_view(srs, "\"SRS0=qPYb=JU=example.net=john doe\"");
	ck_assert(valid_mailbox(srs + "@fwd.example", false));
	for (const char* text : {"john doe", "a\"b\\c", "a..b", ".a", "a.", "", "[192.0.2.1]=x", "a@b"}) {
		std::string quoted = quote_local_part(text);
		ck_assert_msg(valid_mailbox(quoted + "@fwd.example", false), "%s: %s refused", text, quoted.c_str());
		expect_view(local_part_text(quoted), text);
	}
}
END_TEST

int main()
{
	Suite* s = suite_create("address");
	TCase* tc = tcase_create("rfc5321");
	tcase_add_test(tc, test_plain);
	tcase_add_test(tc, test_rest_and_null);
	tcase_add_test(tc, test_syntax);
	tcase_add_test(tc, test_quoted);
	tcase_add_test(tc, test_dot_string);
	tcase_add_test(tc, test_domain);
	tcase_add_test(tc, test_address_literal);
	tcase_add_test(tc, test_source_route);
	tcase_add_test(tc, test_lengths);
	tcase_add_test(tc, test_utf8);
	tcase_add_test(tc, test_display_controls);
	tcase_add_test(tc, test_no_controls);
	tcase_add_test(tc, test_valid_mailbox);
	tcase_add_test(tc, test_valid_user_name);
	tcase_add_test(tc, test_comment_name);
	tcase_add_test(tc, test_quote_local_part);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
