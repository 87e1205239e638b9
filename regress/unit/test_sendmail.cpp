// Unit tests of the sendmail command (sendmail/*.cpp): the command lines
// that cron, sudo, mailx, mutt, PHP, git, fail2ban... really use, the odd
// and the hostile flags, envelope addresses, the prepared message (headers
// added and removed, -t recipients, the lone-dot end, line ends), the DATA
// encoding, and the SMTP client against a scripted server on a unix socket.
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "sendmail/sendmail.h"

// Last: check.h defines a fail() macro that clashes with <ios>.
#include <check.h>

using namespace laim;
using namespace laim::sendmail;

namespace {

const std::string DOMAIN = "host.example";

Options parse(std::initializer_list<const char*> args, const char* progname = "/usr/sbin/sendmail")
{
	return parse_options(progname, std::vector<std::string>(args.begin(), args.end()));
}

// Parsing args must fail with EX_USAGE and a message containing `says`.
void expect_usage_error(std::initializer_list<const char*> args, const std::string& says)
{
	try {
		parse_options("sendmail", std::vector<std::string>(args.begin(), args.end()));
		ck_abort_msg("accepted a command line that should fail with \"%s\"", says.c_str());
	} catch (const Failure& f) {
		ck_assert_int_eq(f.code(), EX_USAGE);
		std::string what = f.what();
		ck_assert_msg(what.find(says) != std::string::npos, "\"%s\" does not say \"%s\"", what.c_str(),
			      says.c_str());
	}
}

// ck_assert_str_eq keeps pointers to its arguments: compare owned strings.
void expect_str(const std::string& got, const std::string& want)
{
	ck_assert_msg(got == want, "got \"%s\", want \"%s\"", got.c_str(), want.c_str());
}

void expect_strings(const std::vector<std::string>& got, std::initializer_list<const char*> want)
{
	std::string g, w;
	for (const std::string& s : got)
		g += "[" + s + "]";
	for (const char* s : want)
		w += std::string("[") + s + "]";
	expect_str(g, w);
}

// The envelope the command line gives: sender (or "(login)") and the
// recipient operands, as sendmail's deliver() computes them.
std::string envelope_of(const Options& o)
{
	std::string s = o.sender ? "<" + parse_sender(*o.sender, DOMAIN) + ">" : "(login)";
	std::vector<std::string> rcpts;
	for (const std::string& a : o.recipients)
		add_address_list(a, DOMAIN, "recipient", EX_USAGE, rcpts);
	for (const std::string& r : rcpts)
		s += " " + r;
	return s;
}

void expect_envelope(const Options& o, const char* want)
{
	expect_str(envelope_of(o), want);
}

// Runs the function, which must throw Failure(code) saying `says`.
template <typename F>
void expect_failure(F f, int code, const std::string& says)
{
	try {
		f();
		ck_abort_msg("no failure; expected one saying \"%s\"", says.c_str());
	} catch (const Failure& e) {
		std::string what = e.what();
		ck_assert_msg(e.code() == code, "exit code %d, expected %d (%s)", e.code(), code, what.c_str());
		ck_assert_msg(what.find(says) != std::string::npos, "\"%s\" does not say \"%s\"", what.c_str(),
			      says.c_str());
	}
}

HeaderFacts facts()
{
	HeaderFacts f;
	f.from_address = "alice@host.example";
	f.from_name = "Alice Liddell";
	f.domain = DOMAIN;
	f.now = 1717484703;  // 2024-06-04 07:05:03 UTC
	f.pid = 4242;
	f.random = "0123abcd";
	return f;
}

const std::string ADDED = "Date: Tue, 4 Jun 2024 07:05:03 +0000\r\n"
			  "From: Alice Liddell <alice@host.example>\r\n"
			  "Message-ID: <1717484703.4242.0123abcd@host.example>\r\n";

struct Prepared {
	std::string out;
	std::vector<std::string> recipients;
	bool eight_bit = false;
	bool stopped = false;  // feed() returned false
	uint64_t size = 0;
};

// Prepares input fed in chunks of `chunk` bytes (0: all at once).
Prepared prepare(const std::string& input, bool ignore_dots, bool extract, size_t chunk = 0,
		 HeaderFacts f = facts())
{
	Prepared p;
	MessagePreparer mp(ignore_dots, extract, f, [&p](std::string_view s) { p.out += s; });
	if (chunk == 0)
		chunk = input.size() + 1;
	for (size_t i = 0; i < input.size(); i += chunk)
		if (!mp.feed(std::string_view(input).substr(i, chunk))) {
			p.stopped = true;
			break;
		}
	mp.finish();
	p.recipients = mp.recipients();
	p.eight_bit = mp.eight_bit();
	p.size = mp.size();
	ck_assert_uint_eq(p.size, p.out.size());
	return p;
}

void expect_prepared(const std::string& input, bool ignore_dots, bool extract, const std::string& want)
{
	// Every chunking gives the same result.
	for (size_t chunk : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(7)}) {
		Prepared p = prepare(input, ignore_dots, extract, chunk);
		ck_assert_msg(p.out == want, "chunk %zu: got\n%s\nwant\n%s", chunk, p.out.c_str(), want.c_str());
	}
}

std::string encode_data(const std::string& in, size_t chunk)
{
	DataEncoder e;
	std::string out;
	for (size_t i = 0; i < in.size(); i += chunk)
		e.encode(std::string_view(in).substr(i, chunk), out);
	e.finish(out);
	return out;
}

}  // namespace

// ----------------------------------------------------------- the table

START_TEST(test_debian_cron)
{
	Options o = parse({"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"});
	ck_assert(o.mode == Mode::Deliver);
	ck_assert(o.full_name && *o.full_name == "CronDaemon");
	ck_assert(o.ignore_dots);
	ck_assert(!o.extract_recipients);
	ck_assert(!o.verbose);
	expect_envelope(o, "(login) root@host.example");
}
END_TEST

START_TEST(test_cronie)
{
	Options o = parse({"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"});
	ck_assert(o.full_name && *o.full_name == "CronDaemon");
	ck_assert(o.ignore_dots);
	ck_assert(o.extract_recipients);
	expect_envelope(o, "<root@host.example>");
}
END_TEST

START_TEST(test_sudo_mdadm_logwatch)
{
	Options o = parse({"-t"});
	ck_assert(o.extract_recipients);
	ck_assert(!o.ignore_dots);  // a lone dot line ends their input
	ck_assert(!o.full_name);
	expect_envelope(o, "(login)");
}
END_TEST

START_TEST(test_unattended_upgrades)
{
	Options o = parse({"-oi", "-t"});
	ck_assert(o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "(login)");
}
END_TEST

START_TEST(test_bsd_mailx)
{
	Options o = parse({"-i", "-t"});
	ck_assert(o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "(login)");
}
END_TEST

START_TEST(test_mailutils)
{
	Options o = parse({"-oi", "-f", "root", "-t"});
	ck_assert(o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "<root@host.example>");
}
END_TEST

START_TEST(test_php_mail)
{
	Options o = parse({"-t", "-i", "-fwww@localhost"});
	ck_assert(o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "<www@localhost>");
}
END_TEST

START_TEST(test_git_send_email)
{
	Options o = parse({"-f", "a@example.org", "-i", "b@example.org", "c@example.org"});
	ck_assert(!o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "<a@example.org> b@example.org c@example.org");
}
END_TEST

START_TEST(test_mutt)
{
	Options o = parse({"-oem", "-oi", "-B8BITMIME", "-f", "a@x", "--", "b@y"});
	ck_assert(!o.extract_recipients && o.ignore_dots);
	expect_envelope(o, "<a@x> b@y");
}
END_TEST

START_TEST(test_fail2ban)
{
	Options o = parse({"-f", "fail2ban <root@localhost>", "root@localhost"});
	ck_assert(!o.extract_recipients && !o.ignore_dots);
	expect_envelope(o, "<root@localhost> root@localhost");
}
END_TEST

// ------------------------------------------------------------ odd flags

START_TEST(test_ignored_flags)
{
	Options o = parse({"-B", "8BITMIME", "-oep", "-odb", "-oQ/var/spool/x", "-o", "em", "-em", "-ep",
			   "-Nnever", "-N", "success,failure", "-Rhdrs", "-R", "full", "-Vid1", "-V", "id2", "-bm",
			   "-e", "q", "-m", "-h", "17", "-h3", "-U", "-mU", "-L", "cron", "-Lcron", "-n", "-G", "-Am",
			   "-A", "c", "-X", "/dev/null", "-X/tmp/log", "-nG", "root"});
	ck_assert(o.mode == Mode::Deliver);
	ck_assert(!o.extract_recipients && !o.ignore_dots && !o.verbose);
	ck_assert(!o.sender && !o.full_name);
	expect_strings(o.recipients, {"root"});
}
END_TEST

START_TEST(test_argument_forms)
{
	Options o = parse({"-r", "bounce@x.example", "-F", "Full Name", "a"});
	ck_assert(o.sender && *o.sender == "bounce@x.example");
	ck_assert(o.full_name && *o.full_name == "Full Name");
	o = parse({"-rbounce@x.example", "-fother@x.example"});  // the last one counts
	ck_assert(*o.sender == "other@x.example");
	o = parse({"-o", "i", "a"});  // "-o i" is "-oi"
	ck_assert(o.ignore_dots);
	o = parse({"-oem", "a"});
	ck_assert(!o.ignore_dots);
	o = parse({"-oi", "-f", "-oi"});  // an option's argument is never an option
	ck_assert(*o.sender == "-oi");
}
END_TEST

START_TEST(test_grouped_and_permuted)
{
	Options o = parse({"-ti", "-vfroot"});
	ck_assert(o.extract_recipients && o.ignore_dots && o.verbose);
	ck_assert(*o.sender == "root");
	o = parse({"a@x", "-i", "b@y", "-t"});  // by flag, not by position
	ck_assert(o.extract_recipients && o.ignore_dots);
	expect_strings(o.recipients, {"a@x", "b@y"});
	o = parse({"-i", "--", "a@x"}, "sendmail");
	expect_strings(o.recipients, {"a@x"});
	expect_usage_error({"-i", "--", "-t"}, "recipient \"-t\" begins with '-'");
}
END_TEST

START_TEST(test_modes)
{
	ck_assert(parse({"-bs"}).mode == Mode::SmtpRelay);
	ck_assert(parse({"-bp"}).mode == Mode::ListQueue);
	ck_assert(parse({"-bi"}).mode == Mode::NewAliases);
	ck_assert(parse({"-I"}).mode == Mode::NewAliases);  // Postfix's
	ck_assert(parse({"-q"}).mode == Mode::Flush);
	ck_assert(parse({"-q15m"}).mode == Mode::Flush);
	ck_assert(parse({"-b", "p"}).mode == Mode::ListQueue);
	ck_assert(parse({}, "/usr/bin/mailq").mode == Mode::ListQueue);
	ck_assert(parse({}, "newaliases").mode == Mode::NewAliases);
	ck_assert(parse({}, "/usr/sbin/sendmail").mode == Mode::Deliver);
	ck_assert(parse({"-bm"}, "mailq").mode == Mode::Deliver);
	ck_assert(parse({"-v"}, "mailq").verbose);
}
END_TEST

START_TEST(test_refused_options)
{
	expect_usage_error({"-Y", "root"}, "unknown option -Y");
	expect_usage_error({"-Ax", "root"}, "unsupported option -Ax");
	expect_usage_error({"-X"}, "option -X requires an argument");
	expect_usage_error({"-t", "-C", "/etc/other.cf"}, "unknown option -C");
	expect_usage_error({"-d0.1"}, "unknown option -d");
	expect_usage_error({"-tiz"}, "unknown option -z");
	expect_usage_error({"-\x01"}, "unknown option -\\x01");
	// No long options: the whole argument is named, escaped.
	expect_usage_error({"--help"}, "unknown option --help");
	expect_usage_error({"root", "--version\x1b"}, "unknown option --version\\x1b");
	expect_usage_error({"-bd"}, "unsupported option -bd");
	expect_usage_error({"-bt"}, "unsupported option -bt");
	expect_usage_error({"-bv", "root"}, "unsupported option -bv");
	expect_usage_error({"-t", "-f"}, "option -f requires an argument");
	expect_usage_error({"-F"}, "option -F requires an argument");
	expect_usage_error({"root", "-B"}, "option -B requires an argument");
}
END_TEST

START_TEST(test_hostile_values)
{
	expect_usage_error({"--", "-oQ/tmp/x"}, "begins with '-'");
	expect_usage_error({"root", "--", "-X"}, "begins with '-'");
	expect_usage_error({"-"}, "begins with '-'");
	expect_usage_error({"root@x\r\nRCPT TO:<evil@x>"}, "CR or LF");
	expect_usage_error({"root\n"}, "CR or LF");
	expect_usage_error({"-f", "a@x>\r\nRCPT TO:<evil@x"}, "CR or LF in the sender");
	expect_usage_error({"-fa@x\n"}, "CR or LF in the sender");
	expect_usage_error({"-r", "a\r"}, "CR or LF in the sender");
	expect_usage_error({"-F", "Name\nBcc: evil@x"}, "CR or LF in the full name");

	// After splitting, inside an operand or as the -f value.
	Options o = parse({"a@x,-oQ/tmp"});
	expect_failure([&] { envelope_of(o); }, EX_USAGE, "begins with '-'");
	o = parse({"-f", "-oQ/tmp", "root"});
	expect_failure([&] { envelope_of(o); }, EX_USAGE, "begins with '-'");
	o = parse({"-f", "Evil <-oQ/tmp>", "root"});
	expect_failure([&] { envelope_of(o); }, EX_USAGE, "begins with '-'");
}
END_TEST

// ------------------------------------------------------------ addresses

START_TEST(test_recipient_lists)
{
	std::vector<std::string> r;
	add_address_list("a@x.example,b@y.example, root", DOMAIN, "recipient", EX_USAGE, r);
	add_address_list("\"Doe, John\" <john@x.example>, a@x.example", DOMAIN, "recipient", EX_USAGE, r);
	add_address_list("  ", DOMAIN, "recipient", EX_USAGE, r);
	add_address_list("root, \"Doe, J\" <john@x.example>", DOMAIN, "recipient", EX_USAGE, r);
	add_address_list("staff: c@x.example, d@x.example;, undisclosed-recipients:;", DOMAIN, "recipient",
			 EX_USAGE, r);
	add_address_list("\"john doe\"@x.example, \"a@b\", j\xc3\xb6rg@b\xc3\xbc" "cher.example", DOMAIN,
			 "recipient", EX_USAGE, r);
	expect_strings(r, {"a@x.example", "b@y.example", "root@host.example", "john@x.example", "c@x.example",
			   "d@x.example", "\"john doe\"@x.example", "\"a@b\"@host.example",
			   "j\xc3\xb6rg@b\xc3\xbc" "cher.example"});
	ck_assert(needs_smtputf8("", r));
	r.pop_back();
	ck_assert(!needs_smtputf8("a@x", r));
	ck_assert(needs_smtputf8("\xc3\xa9@x", r));

	expect_failure([&] { add_address_list("a@@x", DOMAIN, "To: header", EX_DATAERR, r); }, EX_DATAERR,
		       "To: header: ");
	expect_failure([&] { add_address_list("foo bar", DOMAIN, "recipient", EX_USAGE, r); }, EX_USAGE,
		       "cannot parse");
	// Nothing is dropped silently: a list GMime can only partly read.
	expect_failure([&] { add_address_list("alice bob, c@x", DOMAIN, "recipient", EX_USAGE, r); }, EX_USAGE,
		       "cannot parse");
	expect_failure([&] { add_address_list("a@x b@x", DOMAIN, "recipient", EX_USAGE, r); }, EX_USAGE,
		       "cannot parse");
	expect_failure([&] { add_address_list("a@x..example", DOMAIN, "recipient", EX_USAGE, r); }, EX_USAGE,
		       "cannot parse");
	expect_failure([&] { add_address_list("a@x_y.example", DOMAIN, "recipient", EX_USAGE, r); }, EX_USAGE,
		       "invalid address <a@x_y.example>");
	expect_failure([&] { add_address_list(std::string("a@x\0b", 5), DOMAIN, "recipient", EX_USAGE, r); },
		       EX_USAGE, "NUL");
	expect_failure([&] { add_address_list(std::string(70, 'l') + "@x", DOMAIN, "recipient", EX_USAGE, r); },
		       EX_USAGE, "invalid address");
}
END_TEST

START_TEST(test_senders)
{
	std::string s = parse_sender("", DOMAIN);
	expect_str(s, "");
	s = parse_sender("<>", DOMAIN);
	expect_str(s, "");
	s = parse_sender("root", DOMAIN);
	expect_str(s, "root@host.example");
	s = parse_sender("<www-data@web.example>", DOMAIN);
	expect_str(s, "www-data@web.example");
	s = parse_sender("\"Fail 2 Ban\" <root@localhost> ", DOMAIN);
	expect_str(s, "root@localhost");
	s = parse_sender("a@x.example (comment)", DOMAIN);
	expect_str(s, "a@x.example");
	expect_failure([] { parse_sender("a@x, b@y", DOMAIN); }, EX_USAGE, "bad sender");
	expect_failure([] { parse_sender("a b c", DOMAIN); }, EX_USAGE, "bad sender");
	expect_failure([] { parse_sender("a@-x.example", DOMAIN); }, EX_USAGE, "invalid address");
}
END_TEST

START_TEST(test_qualify)
{
	expect_str(qualify("root", "h.example"), "root@h.example");
	expect_str(qualify("root@other", "h.example"), "root@other");
	expect_str(qualify("\"a@b\"", "h.example"), "\"a@b\"@h.example");
	expect_str(qualify("\"a@b\"@c", "h.example"), "\"a@b\"@c");
}
END_TEST

START_TEST(test_mailname)
{
	char path[] = "/tmp/test_sendmail.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	const char text[] = "  mail.example.org \nsecond.line\n";
	ck_assert_int_eq(write(fd, text, sizeof text - 1), ssize_t(sizeof text - 1));
	close(fd);
	setenv("LAIM_MAILNAME", path, 1);
	std::string m = mailname();
	expect_str(m, "mail.example.org");
	unlink(path);
}
END_TEST

START_TEST(test_gecos)
{
	expect_str(gecos_name("John Doe,Room 1,555-1234,", "jd"), "John Doe");
	expect_str(gecos_name("& Smith", "bob"), "Bob Smith");
	expect_str(gecos_name(",,,", "root"), "");
	expect_str(gecos_name("", "root"), "");
	expect_str(gecos_name(" root ", "root"), "root");
}
END_TEST

START_TEST(test_date)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	expect_str(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
	setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
	tzset();
	expect_str(rfc5322_date(1717484703), "Tue, 4 Jun 2024 09:05:03 +0200");
	expect_str(rfc5322_date(1703980800), "Sun, 31 Dec 2023 01:00:00 +0100");
	setenv("TZ", "<-0330>3:30", 1);
	tzset();
	expect_str(rfc5322_date(1717484703), "Tue, 4 Jun 2024 03:35:03 -0330");
}
END_TEST

START_TEST(test_from_format)
{
	std::string s = mailbox_field("From", "CronDaemon", "root@h.example");
	expect_str(s, "From: CronDaemon <root@h.example>\r\n");
	s = mailbox_field("From", "", "root@h.example");
	expect_str(s, "From: root@h.example\r\n");
	s = mailbox_field("Resent-From", "Doe, John", "jd@h.example");
	expect_str(s, "Resent-From: \"Doe, John\" <jd@h.example>\r\n");
	s = mailbox_field("From", "J\xc3\xb6rg", "j@h.example");  // RFC 2047 encoded
	ck_assert_msg(s.find("From: =?") == 0 && s.find("?= <j@h.example>\r\n") != std::string::npos, "got %s",
		      s.c_str());
	for (char c : s.substr(0, s.size() - 2))
		ck_assert_msg(static_cast<unsigned char>(c) < 0x80 && c != '\n', "raw byte in %s", s.c_str());
	// A name that is not UTF-8 (a Latin-1 GECOS or -F) is read as Latin-1.
	std::string latin1 = mailbox_field("From", "J\xf6rg M\xfc" "ller", "j@h.example");
	std::string utf8 = mailbox_field("From", "J\xc3\xb6rg M\xc3\xbc" "ller", "j@h.example");
	ck_assert_msg(latin1 == utf8, "got %s, want %s", latin1.c_str(), utf8.c_str());
	// A long name, one word or many, is folded: no line of the field
	// passes RFC 5322's 998 octets, and each ends in CRLF.
	std::string words;
	for (int i = 0; i < 300; i++)
		words += "J\xc3\xb6rg ";
	for (const std::string& name : {std::string(1200, 'x'), words}) {
		s = mailbox_field("From", name, "j@h.example");
		ck_assert_msg(s.size() > 1200 && s.compare(s.size() - 15, 15, "<j@h.example>\r\n") == 0, "got %s",
			      s.c_str());
		for (size_t start = 0, end; start < s.size(); start = end + 2) {
			end = s.find("\r\n", start);
			ck_assert_msg(end - start <= 998 && s.find('\n', start) == end + 1, "a line of %zu octets in %s",
				      end - start, s.c_str());
		}
	}
}
END_TEST

// -------------------------------------------------------- the message

START_TEST(test_headers_added_when_missing)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	expect_prepared("Subject: hi\n\nbody\n", true, false, "Subject: hi\r\n" + ADDED + "\r\nbody\r\n");
	std::string all = "date: Mon, 3 Jun 2024 10:00:00 +0000\r\nFROM: x@y\r\nMessage-Id: <a@b>\r\n";
	expect_prepared(all + "\r\nbody\r\n", true, false, all + "\r\nbody\r\n");
	// Only the missing ones.
	expect_prepared("From: Me <me@x>\n\nb\n", true, false,
			"From: Me <me@x>\r\nDate: Tue, 4 Jun 2024 07:05:03 +0000\r\n"
			"Message-ID: <1717484703.4242.0123abcd@host.example>\r\n\r\nb\r\n");
	// A From: the command writes without a display name.
	HeaderFacts f = facts();
	f.from_name = "";
	Prepared p = prepare("Subject: x\n\nb\n", true, false, 0, f);
	ck_assert_msg(p.out.find("\r\nFrom: alice@host.example\r\n") != std::string::npos, "%s", p.out.c_str());
	// No From: address to add (a null sender without a login name): only
	// a message with a From: of its own goes.
	f.from_address = "";
	f.from_error = "no From: header, and no login name";
	p = prepare("From: app@x\n\nb\n", true, false, 0, f);
	ck_assert_msg(p.out.find("From: app@x\r\nDate: ") == 0, "%s", p.out.c_str());
	expect_failure([&] { prepare("Subject: x\n\nb\n", true, false, 0, f); }, EX_NOUSER, f.from_error);
	// Header names merely containing the words do not count.
	p = prepare("X-Date: 1\nX-From: 2\nIn-Reply-To-Message-ID: 3\n\nb\n", true, false);
	expect_str(p.out, "X-Date: 1\r\nX-From: 2\r\nIn-Reply-To-Message-ID: 3\r\n" + ADDED + "\r\nb\r\n");
}
END_TEST

START_TEST(test_no_header_block)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	// A body alone gets the headers and the empty line before it.
	expect_prepared("hello\nworld\n", true, false, ADDED + "\r\nhello\r\nworld\r\n");
	// Headers, then a line that is not one: the empty line is supplied.
	expect_prepared("Subject: s\nnot a header\n", true, false, "Subject: s\r\n" + ADDED + "\r\nnot a header\r\n");
	// Nothing at all; headers without a body.
	expect_prepared("", true, false, ADDED);
	expect_prepared("Subject: s\n", true, false, "Subject: s\r\n" + ADDED);
	expect_prepared("Subject: s", true, false, "Subject: s\r\n" + ADDED);
	// A Unix "From " line is dropped; "From:" and "From :" are headers.
	expect_prepared("From root Tue Jun  4 07:05:03 2024\nSubject: s\n\nb\n", true, false,
			"Subject: s\r\n" + ADDED + "\r\nb\r\n");
	expect_prepared("From : obs@x\nDate: d\nMessage-ID: <i>\n\nb\n", true, false,
			"From : obs@x\r\nDate: d\r\nMessage-ID: <i>\r\n\r\nb\r\n");
}
END_TEST

START_TEST(test_bcc_and_extract)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string in = "To: postmaster, a@x.example,\n  Team: \"Doe, J\" <j@x.example>, root;\n"
			 "Subject: s\nbcc: hidden@x.example,\n\tsecret@y.example\n"
			 "Cc: =?utf-8?q?J=C3=B6rg?= <jo@x.example>, a@x.example\n\nbody\n";
	Prepared p = prepare(in, true, true);
	std::string want = "To: postmaster, a@x.example,\r\n  Team: \"Doe, J\" <j@x.example>, root;\r\nSubject: s\r\n"
			   "Cc: =?utf-8?q?J=C3=B6rg?= <jo@x.example>, a@x.example\r\n" + ADDED + "\r\nbody\r\n";
	expect_str(p.out, want);
	expect_strings(p.recipients, {"postmaster@host.example", "a@x.example", "j@x.example", "root@host.example",
				      "hidden@x.example", "secret@y.example", "jo@x.example"});

	// Without -t the headers give no recipients, and Bcc: goes all the
	// same (mailx -b names its addresses as arguments).
	p = prepare(in, true, false);
	expect_str(p.out, want);
	ck_assert_uint_eq(p.recipients.size(), 0);

	// undisclosed-recipients and a bare Bcc:.
	p = prepare("To: undisclosed-recipients:;\nBcc:\nSubject: s\n\nb\n", true, true);
	ck_assert_uint_eq(p.recipients.size(), 0);
	ck_assert(p.out.find("Bcc") == std::string::npos);
	ck_assert(p.out.find("To: undisclosed-recipients:;\r\n") == 0);
	// Resent-Bcc goes too; X-Bcc is not Bcc.
	for (bool extract : {true, false}) {
		p = prepare("To: a@x\nResent-Bcc: c@x\nX-Bcc: b@x\n\nb\n", true, extract);
		ck_assert(p.out.find("X-Bcc: b@x\r\n") != std::string::npos);
		ck_assert(p.out.find("Resent-Bcc") == std::string::npos);
		ck_assert_uint_eq(p.recipients.size(), extract ? 1 : 0);
	}
	// Return-Path and Content-Length are the delivery's to write: a
	// false one from the input goes, in any case, folded or not.
	for (bool extract : {true, false}) {
		p = prepare("Return-Path: <ceo@bank.example>\nCONTENT-LENGTH: 3\nreturn-path:\n <x@y>\n"
			    "X-Return-Path: kept\nTo: a@x\n\nbody\n", true, extract);
		ck_assert_msg(p.out.find("X-Return-Path: kept\r\nTo: a@x\r\nDate: ") == 0,
			      "Return-Path or Content-Length from the input kept:\n%s", p.out.c_str());
	}
}
END_TEST

// A message being re-sent goes to its Resent- recipients only (Postfix,
// Exim and sendmail 8 do the same): the original ones had it already.
START_TEST(test_resent)
{
	std::string in = "Resent-From: admin@x.example\nResent-To: bob@x.example\nresent-cc: Team: c@x.example;\n"
			 "Resent-Bcc: hidden@x.example\nFrom: alice@x.example\nTo: alice@x.example\n"
			 "Cc: dave@x.example\nBcc: eve@x.example\nSubject: redirected\n\nbody\n";
	Prepared p = prepare(in, true, true);
	expect_strings(p.recipients, {"bob@x.example", "c@x.example", "hidden@x.example"});
	ck_assert(p.out.find("Bcc") == std::string::npos);
	ck_assert(p.out.find("Resent-To: bob@x.example\r\n") != std::string::npos);
	ck_assert(p.out.find("To: alice@x.example\r\nCc: dave@x.example\r\n") != std::string::npos);
	// Resent-From or Resent-Date alone names no recipient: To, Cc and Bcc
	// count, and Resent-Bcc alone is enough.
	p = prepare("Resent-From: admin@x.example\nTo: alice@x.example\n\nb\n", true, true);
	expect_strings(p.recipients, {"alice@x.example"});
	p = prepare("To: alice@x.example\nResent-Bcc: hidden@x.example\n\nb\n", true, true);
	expect_strings(p.recipients, {"hidden@x.example"});
	// A Resent-To with nobody in it still makes the message a re-sent one.
	p = prepare("To: alice@x.example\nResent-To: undisclosed-recipients:;\n\nb\n", true, true);
	ck_assert_uint_eq(p.recipients.size(), 0);
	// Only the header fields in use are parsed.
	p = prepare("To: a@@x\nResent-To: bob@x.example\n\nb\n", true, true);
	expect_strings(p.recipients, {"bob@x.example"});
	expect_failure([] { prepare("To: bob@x.example\nResent-Cc: a@@x\n\nb\n", true, true); }, EX_DATAERR,
		       "Resent-Cc: header");
	// RFC 5322 3.6.6: the Resent- block gets the Resent-Date and
	// Resent-From it lacks, before its first field, with or without -t.
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string head = "From: a@x\r\nDate: d\r\nMessage-ID: <i@x>\r\n";
	for (bool extract : {true, false}) {
		p = prepare("From: a@x\nDate: d\nMessage-ID: <i@x>\nresent-to: root\n\nb\n", true, extract);
		expect_str(p.out, head + "Resent-Date: Tue, 4 Jun 2024 07:05:03 +0000\r\n"
					 "Resent-From: Alice Liddell <alice@host.example>\r\nresent-to: root\r\n\r\nb\r\n");
	}
	p = prepare("From: a@x\nDate: d\nMessage-ID: <i@x>\nResent-Bcc: root\nResent-Date: e\n\nb\n", true, true);
	expect_str(p.out, head + "Resent-From: Alice Liddell <alice@host.example>\r\nResent-Date: e\r\n\r\nb\r\n");
	p = prepare("From: a@x\nDate: d\nMessage-ID: <i@x>\nResent-From: r@x\nResent-Date: e\n\nb\n", true, false);
	expect_str(p.out, head + "Resent-From: r@x\r\nResent-Date: e\r\n\r\nb\r\n");
}
END_TEST

START_TEST(test_extract_errors)
{
	expect_failure([] { prepare("To: a@@x\n\nb\n", true, true); }, EX_DATAERR, "To: header");
	expect_failure([] { prepare("Cc: foo bar\n\nb\n", true, true); }, EX_DATAERR, "Cc: header");
	// A bad address in a header is a data error, as sendmail(8) says.
	expect_failure([] { prepare("To: ok@x, -oQ/tmp@x\n\nb\n", true, true); }, EX_DATAERR, "begins with '-'");
	// Not an error without -t.
	Prepared p = prepare("To: a@@x\n\nb\n", true, false);
	ck_assert(p.out.find("To: a@@x\r\n") == 0);
}
END_TEST

START_TEST(test_lone_dot)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string head = "Subject: s\r\n" + ADDED + "\r\n";
	std::string in = "Subject: s\n\nline1\n.\nafter\n";
	Prepared p = prepare(in, false, false);
	ck_assert(p.stopped);
	expect_str(p.out, head + "line1\r\n");
	expect_prepared(in, false, false, head + "line1\r\n");
	// With -i the dot is text; so are "..", ". " and ".x" without it.
	expect_prepared(in, true, false, head + "line1\r\n.\r\nafter\r\n");
	expect_prepared("Subject: s\n\n..\n. \n.x\n.\r\nrest\n", false, false, head + "..\r\n. \r\n.x\r\n");
	// CRLF, a bare CR, end of input, and in the header block.
	expect_prepared("Subject: s\r\n\r\na\r\n.\r\nrest\r\n", false, false, head + "a\r\n");
	expect_prepared("Subject: s\n\na\n.", false, false, head + "a\r\n");
	expect_prepared("Subject: s\n.\nTo: x\n\nb\n", false, false, "Subject: s\r\n" + ADDED);
	expect_prepared(".\nSubject: s\n", false, false, ADDED);
	expect_prepared("Subject: s\n\na\n.", true, false, head + "a\r\n.\r\n");
}
END_TEST

START_TEST(test_line_ends)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string head = "Subject: s\r\n" + ADDED + "\r\n";
	expect_prepared("Subject: s\n\na\nb\r\nc\rd\r\r\ne", true, false, head + "a\r\nb\r\nc\r\nd\r\ne\r\n");
	// CRs before a LF make one line end (a line end converted twice),
	// also in the header block, which goes on past them.
	expect_prepared("Subject: s\r\r\nX-Tag: t\r\r\n\r\r\nb\r\r\r\nc\r\n", true, false,
			"Subject: s\r\nX-Tag: t\r\n" + ADDED + "\r\nb\r\nc\r\n");
	// Without a LF each CR is a line end: two make an empty line, which
	// in the header block ends it (the next line is body, not a field).
	expect_prepared("Subject: s\r\rpara one\r\rpara two\r", true, false,
			head + "para one\r\n\r\npara two\r\n");
	expect_prepared("Subject: s\r\rNote: moved\r", true, false, head + "Note: moved\r\n");
	expect_prepared("Subject: s\n\nc\r\r", true, false, head + "c\r\n\r\n");
	expect_prepared("Subject: s\n\na\r\r.\r\rb\n", false, false, head + "a\r\n\r\n");
	// NUL bytes, which laimd refuses, are dropped.
	expect_prepared(std::string("Subject: s\0t\n\na\0b\n\0", 19), true, false,
			"Subject: st\r\n" + ADDED + "\r\nab\r\n");
	expect_prepared("Subject: s\r\n\r\n\r\n", true, false, head + "\r\n");
	expect_prepared("Subject: s\r\n\r\nx\r", true, false, head + "x\r\n");
	// Folded headers keep their folding, with CRLF.
	expect_prepared("Subject: a\n b\n\tc\n\nx\n", true, false, "Subject: a\r\n b\r\n\tc\r\n" + ADDED + "\r\nx\r\n");
}
END_TEST

START_TEST(test_byte_for_byte)
{
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string body = "caf\xc3\xa9 \xff\xfe\t" + std::string(5000, 'x') + "\r\n" + std::string(3, '\x01') +
			   "\r\n=?utf-8?q?x?=\r\n";
	std::string hdr = "Subject: =?utf-8?q?caf=C3=A9?= \xc3\xa9\r\n" "Date: d\r\nFrom: f\r\nMessage-ID: <i>\r\n";
	Prepared p = prepare(hdr + "\r\n" + body, false, false, 4096);
	ck_assert(p.out == hdr + "\r\n" + body);
	ck_assert(p.eight_bit);
	p = prepare("Date: d\nFrom: f\nMessage-ID: <i>\n\nplain\n", false, false);
	ck_assert(!p.eight_bit);
}
END_TEST

START_TEST(test_header_limit)
{
	std::string big = "Subject: " + std::string(MessagePreparer::MAX_HEADER, 'x') + "\n\nb\n";
	expect_failure([&] { prepare(big, true, false, 65536); }, EX_DATAERR, "header block larger");
	std::string many;
	while (many.size() <= MessagePreparer::MAX_HEADER)
		many += "X-Filler: " + std::string(100, 'y') + "\n";
	expect_failure([&] { prepare(many + "\nb\n", true, false, 65536); }, EX_DATAERR, "header block larger");
	// A body without headers may have a long first line.
	setenv("TZ", "UTC0", 1);
	tzset();
	std::string line(MessagePreparer::MAX_HEADER + 10, 'z');
	Prepared p = prepare(line + "\nend\n", true, false, 65536);
	ck_assert(p.out == ADDED + "\r\n" + line + "\r\nend\r\n");
}
END_TEST

START_TEST(test_data_encoding)
{
	std::string in = "a\n.b\n..c\r\n.\r\nend";
	std::string want = "a\r\n..b\r\n...c\r\n..\r\nend\r\n.\r\n";
	for (size_t chunk : {size_t(1), size_t(2), size_t(5), in.size()}) {
		std::string out = encode_data(in, chunk);
		ck_assert_msg(out == want, "chunk %zu: %s", chunk, out.c_str());
	}
	expect_str(encode_data("", 1), ".\r\n");
	expect_str(encode_data("x\r\n", 1), "x\r\n.\r\n");
	expect_str(encode_data(".", 1), "..\r\n.\r\n");
	expect_str(encode_data("x\r\n\r\n.\n", 3), "x\r\n\r\n..\r\n.\r\n");
}
END_TEST

// ------------------------------------------------------ the -bs relay

// A -bs script in chunks of chunk octets: what goes to laimd, and where
// the relay held the input for DATA's reply.
START_TEST(test_bs_relay)
{
	std::string script = "EHLO x\nMAIL FROM:<a>\r\nRCPT TO:<b>\nData\nSubject: s\r\n\nbody\n.\nQUIT\n";
	std::string want = "EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nData\r\n";
	std::string rest = "Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n";
	for (size_t chunk : {size_t(1), size_t(2), size_t(3), script.size()}) {
		SmtpRelay r;
		std::string out;
		size_t off = 0;
		while (off < script.size() && !r.held())
			off += r.from_client(std::string_view(script).substr(off, chunk), out);
		ck_assert_msg(out == want && r.held(), "chunk %zu: %s", chunk, out.c_str());
		r.from_laimd("250-x\r\n250 OK\r\n250 2.1.0 Ok\r\n");
		ck_assert_msg(r.held(), "chunk %zu: released before DATA's reply", chunk);
		r.from_laimd("250 2.1.5 Ok\r");
		r.from_laimd("\n354 go ahead\r\n");
		ck_assert(!r.held());
		out.clear();
		off += r.from_client(std::string_view(script).substr(off), out);
		ck_assert_uint_eq(off, script.size());
		expect_str(out, rest);
		r.from_laimd("250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n");
		ck_assert_int_eq(r.last_code(), 221);
	}
	// A DATA refused: what follows goes as commands; a line too long,
	// answered before its end, is one command.
	SmtpRelay r;
	std::string out;
	ck_assert_uint_eq(r.from_client("DATA \r\nx\r\n", out), 7);
	r.from_laimd("503 5.5.1 need MAIL\r\n");
	ck_assert(!r.held());
	std::string long_line(600, 'x');
	r.from_client(long_line.substr(0, 512), out);
	r.from_laimd("500 5.5.2 Line too long\r\n");
	r.from_client(long_line.substr(512) + "\r\ndata\r\n", out);
	ck_assert(r.held());
	r.from_laimd("354 go\r\n");
	ck_assert(!r.held());
	out.clear();
	r.from_client("..\n.\n", out);
	expect_str(out, "..\r\n.\r\n");
	r.from_laimd("421 4.3.2 bye\r\n");
	ck_assert_int_eq(r.last_code(), 421);
	// A DATA line too long, answered before its end: nothing waits for
	// another reply.
	SmtpRelay l;
	std::string long_data = "DATA" + std::string(600, ' ');
	l.from_client(long_data.substr(0, 512), out);
	l.from_laimd("500 5.5.2 Line too long\r\n");
	std::string after = long_data.substr(512) + "\r\nNOOP\r\n";
	ck_assert_uint_eq(l.from_client(after, out), after.size());
	ck_assert_msg(!l.held(), "a DATA line answered before its end held the input");
	// laimd ends data at CRLF "." CRLF only: ".\r\r\n" is a data line.
	SmtpRelay e;
	e.from_client("DATA\r\n", out);
	e.from_laimd("354 go\r\n");
	e.from_client("x\r\n.\r\r\n.\r\n", out);
	e.from_laimd("550 5.6.0 bare CR\r\n");
	ck_assert_msg(!e.awaits_reply(), "a reply awaited after the end of data's");
	// DATA as laimd's session reads it: blanks at the end go, the verb
	// ends at a space. The text after it waits for the 354.
	for (const char* line : {"DATA\t\n", "data \t \r\n", "DATA\t\t\n", "DATA x\n"}) {
		SmtpRelay d;
		std::string o;
		std::string in = std::string(line) + "Subject: s\n";
		ck_assert_msg(d.from_client(in, o) == strlen(line) && d.held(), "%s not taken for DATA", line);
	}
	for (const char* line : {"DATA\tx\n", "DATAX\n", "XDATA\n"}) {
		SmtpRelay d;
		std::string o;
		ck_assert_msg(d.from_client(std::string(line) + "NOOP\n", o) == strlen(line) + 5 && !d.held(),
			      "%s taken for DATA", line);
	}
}
END_TEST

// ------------------------------------------------------ the SMTP client

namespace {

// A scripted SMTP server on a unix socket: answers each line it reads
// with the next reply of the script and records the lines.
struct FakeServer {
	std::string dir, path;
	UniqueFd listener;
	std::thread thread;
	std::vector<std::string> lines;  // what the client sent, CRLF kept
	std::string data;                // the raw DATA content

	explicit FakeServer(std::vector<std::string> script)
	{
		char tmpl[] = "/tmp/test_sendmail.XXXXXX";
		ck_assert(mkdtemp(tmpl));
		dir = tmpl;
		path = dir + "/submit.sock";
		listener.reset(socket(AF_UNIX, SOCK_STREAM, 0));
		sockaddr_un sun{};
		sun.sun_family = AF_UNIX;
		strcpy(sun.sun_path, path.c_str());
		ck_assert_int_eq(bind(listener.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
		ck_assert_int_eq(listen(listener.get(), 1), 0);
		thread = std::thread([this, script] { serve(script); });
	}

	~FakeServer()
	{
		if (thread.joinable())
			thread.join();
		unlink(path.c_str());
		rmdir(dir.c_str());
	}

	void serve(std::vector<std::string> script)
	{
		UniqueFd c(accept(listener.get(), nullptr, nullptr));
		std::string buf;
		bool in_data = false;
		size_t next = 0;
		auto say = [&](void) {
			if (next < script.size()) {
				std::string r = script[next++];
				if (r == "CLOSE")
					return false;
				(void)!write(c.get(), r.data(), r.size());
			}
			return true;
		};
		if (!say())
			return;
		char b[4096];
		for (;;) {
			size_t lf;
			while ((lf = buf.find('\n')) != std::string::npos) {
				std::string line = buf.substr(0, lf + 1);
				buf.erase(0, lf + 1);
				if (in_data) {
					data += line;
					if (line != ".\r\n")
						continue;
					in_data = false;
				} else {
					lines.push_back(line);
					in_data = line == "DATA\r\n" && next < script.size() && script[next][0] == '3';
				}
				if (!say())
					return;
			}
			ssize_t n = read(c.get(), b, sizeof b);
			if (n <= 0)
				return;
			buf.append(b, size_t(n));
		}
	}
};

// A prepared message in a temporary file, as deliver() makes it.
int message_file(const std::string& text)
{
	FILE* f = tmpfile();
	fwrite(text.data(), 1, text.size(), f);
	fflush(f);
	return dup(fileno(f));
}

Submission submission(const FakeServer& s, const std::string& message)
{
	Submission sub;
	sub.socket_path = s.path;
	sub.sender = "alice@host.example";
	sub.recipients = {"root@host.example", "bob@x.example"};
	sub.message_fd = message_file(message);
	sub.timeout = 5;
	return sub;
}

const std::string EHLO = "250-test.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 1000\r\n";

}  // namespace

START_TEST(test_smtp_dialogue)
{
	FakeServer srv({"220 test.example ESMTP\r\n", EHLO, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
			"250 ok\r\n", "354 go ahead\r\n", "250 2.0.0 queued as X\r\n", "221 bye\r\n"});
	Submission sub = submission(srv, "Subject: s\r\n\r\n.line\r\ncaf\xc3\xa9\r\n");
	sub.eight_bit = true;
	sub.recipients.push_back("j\xc3\xb6rg@x.example");
	smtp_submit(sub);
	srv.thread.join();
	expect_strings(srv.lines, {"EHLO localhost\r\n", "MAIL FROM:<alice@host.example> BODY=8BITMIME SMTPUTF8\r\n",
				   "RCPT TO:<root@host.example>\r\n", "RCPT TO:<bob@x.example>\r\n",
				   "RCPT TO:<j\xc3\xb6rg@x.example>\r\n", "DATA\r\n", "QUIT\r\n"});
	expect_str(srv.data, "Subject: s\r\n\r\n..line\r\ncaf\xc3\xa9\r\n.\r\n");
	close(sub.message_fd);
}
END_TEST

START_TEST(test_smtp_plain_params)
{
	// No 8BITMIME/SMTPUTF8 advertised or needed: no parameters.
	FakeServer srv({"220-test.example\r\n220 ESMTP\r\n", "250 test.example\r\n", "250 ok\r\n", "250 ok\r\n",
			"250 ok\r\n", "354 go\r\n", "250 ok\r\n", "CLOSE"});
	Submission sub = submission(srv, "x");
	smtp_submit(sub);  // a server gone after 250 is no failure
	srv.thread.join();
	expect_str(srv.lines[1], "MAIL FROM:<alice@host.example>\r\n");
	expect_str(srv.data, "x\r\n.\r\n");
	close(sub.message_fd);
}
END_TEST

// Runs a submission that must end in a TemporaryFailure saying `says`.
static void expect_temporary(std::vector<std::string> script, const std::string& says)
{
	FakeServer srv(std::move(script));
	Submission sub = submission(srv, "Subject: s\r\n\r\nb\r\n");
	try {
		smtp_submit(sub);
		ck_abort_msg("no temporary failure; expected \"%s\"", says.c_str());
	} catch (const TemporaryFailure& t) {
		std::string what = t.what();
		ck_assert_msg(what.find(says) != std::string::npos, "\"%s\" does not say \"%s\"", what.c_str(),
			      says.c_str());
	}
	srv.thread.join();
	close(sub.message_fd);
}

static void expect_refusal(std::vector<std::string> script, int code, const std::string& says)
{
	FakeServer srv(std::move(script));
	Submission sub = submission(srv, "Subject: s\r\n\r\nb\r\n");
	expect_failure([&] { smtp_submit(sub); }, code, says);
	srv.thread.join();
	close(sub.message_fd);
}

START_TEST(test_smtp_temporary)
{
	expect_temporary({"421 4.3.2 too many sessions\r\n"}, "421 4.3.2 too many sessions");
	expect_temporary({"220 x\r\n", EHLO, "452 4.3.1 queue full\r\n"}, "452 4.3.1 queue full");
	expect_temporary({"220 x\r\n", EHLO, "250 ok\r\n", "250 ok\r\n", "451 4.3.0 later\r\n"}, "451 4.3.0");
	expect_temporary({"220 x\r\n", EHLO, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n",
			  "451 4.3.0 spool error\r\n"},
			 "spool error");
	expect_temporary({"220 x\r\n", "CLOSE"}, "closed the connection");
	expect_temporary({"220 x\r\n", "250-a\r\n251 b\r\n"}, "malformed reply");
	expect_temporary({"hello\r\n"}, "malformed reply");

	// Nobody listening.
	try {
		Submission sub;
		sub.socket_path = "/nonexistent/laim/submit.sock";
		smtp_submit(sub);
		ck_abort_msg("connected to nothing");
	} catch (const TemporaryFailure& t) {
		ck_assert(std::string(t.what()).find("cannot connect to /nonexistent/laim/submit.sock") == 0);
	}
}
END_TEST

START_TEST(test_smtp_timeout)
{
	FakeServer srv({"220 x\r\n"});  // then silence until the client gives up
	Submission sub = submission(srv, "b\r\n");
	sub.timeout = 1;
	try {
		smtp_submit(sub);
		ck_abort_msg("no timeout");
	} catch (const TemporaryFailure& t) {
		ck_assert(std::string(t.what()).find("within 1 seconds") != std::string::npos);
	}
	srv.thread.join();
	close(sub.message_fd);
}
END_TEST

START_TEST(test_smtp_refused)
{
	expect_refusal({"554 5.3.2 no service\r\n"}, EX_UNAVAILABLE, "554 5.3.2 no service");
	expect_refusal({"220 x\r\n", EHLO, "553 5.1.7 bad sender\r\n"}, EX_DATAERR, "553 5.1.7 bad sender");
	expect_refusal({"220 x\r\n", EHLO, "250 ok\r\n", "250 ok\r\n", "550 5.1.1 no such user\r\n"}, EX_NOUSER,
		       "recipient <bob@x.example>: 550 5.1.1");
	expect_refusal({"220 x\r\n", EHLO, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n",
			"552-5.3.4 message too big\r\n552 5.3.4 really\r\n"},
		       EX_DATAERR, "552-5.3.4 message too big\n552 5.3.4 really");
}
END_TEST

static Suite* sendmail_suite()
{
	Suite* s = suite_create("sendmail");
	TCase* table = tcase_create("table");
	tcase_add_test(table, test_debian_cron);
	tcase_add_test(table, test_cronie);
	tcase_add_test(table, test_sudo_mdadm_logwatch);
	tcase_add_test(table, test_unattended_upgrades);
	tcase_add_test(table, test_bsd_mailx);
	tcase_add_test(table, test_mailutils);
	tcase_add_test(table, test_php_mail);
	tcase_add_test(table, test_git_send_email);
	tcase_add_test(table, test_mutt);
	tcase_add_test(table, test_fail2ban);
	suite_add_tcase(s, table);

	TCase* opts = tcase_create("options");
	tcase_add_test(opts, test_ignored_flags);
	tcase_add_test(opts, test_argument_forms);
	tcase_add_test(opts, test_grouped_and_permuted);
	tcase_add_test(opts, test_modes);
	tcase_add_test(opts, test_refused_options);
	tcase_add_test(opts, test_hostile_values);
	suite_add_tcase(s, opts);

	TCase* addr = tcase_create("addresses");
	tcase_add_test(addr, test_recipient_lists);
	tcase_add_test(addr, test_senders);
	tcase_add_test(addr, test_qualify);
	tcase_add_test(addr, test_mailname);
	tcase_add_test(addr, test_gecos);
	tcase_add_test(addr, test_date);
	tcase_add_test(addr, test_from_format);
	suite_add_tcase(s, addr);

	TCase* msg = tcase_create("message");
	tcase_add_test(msg, test_headers_added_when_missing);
	tcase_add_test(msg, test_no_header_block);
	tcase_add_test(msg, test_bcc_and_extract);
	tcase_add_test(msg, test_resent);
	tcase_add_test(msg, test_extract_errors);
	tcase_add_test(msg, test_lone_dot);
	tcase_add_test(msg, test_line_ends);
	tcase_add_test(msg, test_byte_for_byte);
	tcase_add_test(msg, test_header_limit);
	tcase_add_test(msg, test_data_encoding);
	tcase_add_test(msg, test_bs_relay);
	suite_add_tcase(s, msg);

	TCase* smtp = tcase_create("smtp");
	tcase_set_timeout(smtp, 20);
	tcase_add_test(smtp, test_smtp_dialogue);
	tcase_add_test(smtp, test_smtp_plain_params);
	tcase_add_test(smtp, test_smtp_temporary);
	tcase_add_test(smtp, test_smtp_timeout);
	tcase_add_test(smtp, test_smtp_refused);
	suite_add_tcase(s, smtp);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(sendmail_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
