// Unit tests of the handler API: Message parsing (GMime), the registry and
// HandlerOptions errors, the built-in maildir, file, log and discard
// handlers, checked byte for byte against what they write, and the
// commands' placeholders and exit statuses.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/config.h"
#include "common/fd.h"
#include "common/log.h"
#include "handler/api/command.h"
#include "handler/api/handler.h"
#include "handler/api/mbox_format.h"

// Last: check.h defines a deprecated fail() macro that would clash with
// HandlerOptions::fail.
#include <check.h>
#undef fail

using namespace laim;

// ck_assert_str_eq on std::string values: the operands are kept alive for
// the whole check (c_str() of a temporary would dangle inside the macro).
#define ck_assert_string_eq(a, b)                                   \
	do {                                                        \
		const std::string ck_a_ = (a), ck_b_ = (b);         \
		ck_assert_str_eq(ck_a_.c_str(), ck_b_.c_str());     \
	} while (0)

namespace {

// ---------------------------------------------------------------- helpers

std::string read_file(const std::string& path)
{
	std::ifstream in(path, std::ios::binary);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

void write_file(const std::string& path, std::string_view data)
{
	std::ofstream out(path, std::ios::binary);
	out.write(data.data(), data.size());
}

// A fresh directory under /tmp, removed with everything in it at the end.
struct TempDir {
	std::string path;
	TempDir()
	{
		char tmpl[] = "/tmp/laim-test-handlers.XXXXXX";
		ck_assert_ptr_nonnull(mkdtemp(tmpl));
		path = tmpl;
	}
	~TempDir() { std::filesystem::remove_all(path); }
};

// The names in a directory, sorted; "." and ".." left out.
std::vector<std::string> list_dir(const std::string& dir)
{
	std::vector<std::string> out;
	for (const auto& e : std::filesystem::directory_iterator(dir))
		out.push_back(e.path().filename());
	std::sort(out.begin(), out.end());
	return out;
}

mode_t mode_of(const std::string& path)
{
	struct stat st;
	ck_assert_int_eq(stat(path.c_str(), &st), 0);
	return st.st_mode & 07777;
}

// Builds the handlers of a YAML config text, as laimd does.
std::vector<laim::ConfiguredHandler> create(const std::string& yaml)
{
	Config cfg = config_parse(yaml, "test.yml");
	laim::Secrets secrets = laim::Secrets::from_files();
	return handlers_create(cfg, secrets);
}

// The result for the first recipient of a call.
Result result_of(const laim::Results& r)
{
	return r.at(0);
}

// The one handler of a config text.
std::shared_ptr<Handler> create_one(const std::string& yaml)
{
	auto hs = create(yaml);
	ck_assert_uint_eq(hs.size(), 1);
	return hs[0].handler;
}

// The ConfigError message handlers_create gives for a config text, or
// "no error".
std::string create_error(const std::string& yaml)
{
	try {
		create(yaml);
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "no error";
}

Envelope envelope(std::string sender, std::vector<std::string> rcpts)
{
	Envelope env;
	env.id = "4F3A2C1B";
	env.sender = std::move(sender);
	env.recipients = std::move(rcpts);
	env.client = "127.0.0.1";
	env.helo = "localhost";
	env.arrival = 1795341600;  // Sun Nov 22 10:00:00 2026 UTC
	return env;
}

const char plain_msg[] =
	"Received: from localhost (localhost [127.0.0.1])\r\n"
	"\tby host.example with SMTP id 4F3A2C1B; Sun, 22 Nov 2026 10:00:00 +0000\r\n"
	"From: Cron Daemon <root@host.example>\r\n"
	"To: root@host.example\r\n"
	"Subject: Cron <root@host> run-parts /etc/cron.daily\r\n"
	"\r\n"
	"Line one\r\n"
	"Line two\r\n";

// ---------------------------------------------------------------- Message

START_TEST(message_plain)
{
	Message m(plain_msg);
	ck_assert_uint_eq(m.size(), strlen(plain_msg));
	ck_assert_ptr_eq(m.raw().data(), plain_msg);
	const auto& h = m.headers();
	ck_assert_uint_eq(h.size(), 4);
	ck_assert_string_eq(h[0].name, "Received");
	ck_assert_string_eq(h[0].value,
			 "from localhost (localhost [127.0.0.1])\tby host.example with SMTP id "
			 "4F3A2C1B; Sun, 22 Nov 2026 10:00:00 +0000");
	ck_assert_string_eq(h[1].name, "From");
	ck_assert_string_eq(h[1].value, "Cron Daemon <root@host.example>");
	ck_assert_string_eq(h[2].name, "To");
	ck_assert_string_eq(h[3].name, "Subject");
	ck_assert_string_eq(m.header("subject").value(),
			 "Cron <root@host> run-parts /etc/cron.daily");
	ck_assert_string_eq(m.header("TO").value(), "root@host.example");
	ck_assert(!m.header("X-Missing").has_value());
	ck_assert(!m.header("Subj").has_value());
	ck_assert_string_eq(m.subject(), "Cron <root@host> run-parts /etc/cron.daily");
	ck_assert_string_eq(m.text(), "Line one\nLine two\n");
}
END_TEST

START_TEST(message_folded_headers)
{
	Message m("Subject: a rather long\r\n  subject line\r\n"
		  "X-Folded: one\r\n\ttwo\r\n three\r\n"
		  "X-Trailing: value   \r\n"
		  "X-Empty:\r\n"
		  "\r\nbody\r\n");
	ck_assert_uint_eq(m.headers().size(), 4);
	ck_assert_string_eq(m.header("X-Folded").value(), "one\ttwo three");
	ck_assert_string_eq(m.header("X-Trailing").value(), "value");
	ck_assert_string_eq(m.header("X-Empty").value(), "");
	ck_assert_string_eq(m.header("Subject").value(), "a rather long  subject line");
	ck_assert_string_eq(m.subject(), "a rather long  subject line");
}
END_TEST

START_TEST(message_first_header_wins)
{
	Message m("X-Dup: first\r\nX-Other: o\r\nx-dup: second\r\n\r\n");
	ck_assert_string_eq(m.header("X-DUP").value(), "first");
	ck_assert_uint_eq(m.headers().size(), 3);
	ck_assert_string_eq(m.headers()[2].name, "x-dup");
	ck_assert_string_eq(m.headers()[2].value, "second");
}
END_TEST

START_TEST(message_rfc2047_utf8)
{
	Message b("Subject: =?UTF-8?B?w6lsw6h2ZQ==?=\r\n\r\n");
	ck_assert_string_eq(b.subject(), "\xc3\xa9l\xc3\xa8ve");  // élève
	// header() is not decoded.
	ck_assert_string_eq(b.header("Subject").value(), "=?UTF-8?B?w6lsw6h2ZQ==?=");

	Message q("Subject: Re: =?utf-8?q?na=C3=AFve_plan?= for today\r\n\r\n");
	ck_assert_string_eq(q.subject(), "Re: na\xc3\xafve plan for today");

	// RFC 2047 6.2: white space between adjacent encoded-words is dropped.
	Message adj("Subject: =?UTF-8?Q?ab?= =?UTF-8?Q?cd?=\r\n\r\n");
	ck_assert_string_eq(adj.subject(), "abcd");
}
END_TEST

START_TEST(message_rfc2047_latin1)
{
	Message q("Subject: =?ISO-8859-1?Q?caf=E9_cr=E8me?=\r\n\r\n");
	ck_assert_string_eq(q.subject(), "caf\xc3\xa9 cr\xc3\xa8me");  // café crème
	Message b("Subject: =?iso-8859-1?B?ROlq4CB2dQ==?=\r\n\r\n");
	ck_assert_string_eq(b.subject(), "D\xc3\xa9j\xc3\xa0 vu");  // Déjà vu
	// Raw 8-bit Latin-1 in a header (no encoded-word) still comes out UTF-8.
	Message raw("Subject: caf\xe9\r\n\r\n");
	ck_assert_string_eq(raw.subject(), "caf\xc3\xa9");
}
END_TEST

START_TEST(message_no_subject)
{
	Message m("From: a@b\r\n\r\nhello\r\n");
	ck_assert_string_eq(m.subject(), "");
	ck_assert_string_eq(m.text(), "hello\n");
}
END_TEST

START_TEST(message_multipart_alternative_qp)
{
	Message m("From: a@b\r\n"
		  "Subject: report\r\n"
		  "MIME-Version: 1.0\r\n"
		  "Content-Type: multipart/alternative; boundary=\"=-b1\"\r\n"
		  "X-After: 1\r\n"
		  "\r\n"
		  "This is a multi-part message in MIME format.\r\n"
		  "--=-b1\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\n"
		  "Content-Transfer-Encoding: quoted-printable\r\n"
		  "\r\n"
		  "Temp=C3=A9rature: 42 =E2=84=83, a soft line =\r\n"
		  "break.\r\n"
		  "--=-b1\r\n"
		  "Content-Type: text/html; charset=utf-8\r\n"
		  "\r\n"
		  "<p>html</p>\r\n"
		  "--=-b1--\r\n");
	ck_assert_string_eq(m.text(),
			 "Temp\xc3\xa9rature: 42 \xe2\x84\x83, a soft line break.");
	// Content-Type sits in file order among the other headers.
	const auto& h = m.headers();
	ck_assert_uint_eq(h.size(), 5);
	ck_assert_string_eq(h[3].name, "Content-Type");
	ck_assert_string_eq(h[3].value, "multipart/alternative; boundary=\"=-b1\"");
	ck_assert_string_eq(h[4].name, "X-After");
}
END_TEST

START_TEST(message_base64_latin1)
{
	Message m("Subject: Gr=?ISO-8859-1?Q?=FC=DF?=e\r\n"
		  "MIME-Version: 1.0\r\n"
		  "Content-Type: text/plain; charset=ISO-8859-1\r\n"
		  "Content-Transfer-Encoding: base64\r\n"
		  "\r\n"
		  "R3L832UgYXVzIEv2bG4NClp3ZWl0ZSBaZWlsZQ0K\r\n");
	ck_assert_string_eq(m.text(), "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln\nZweite Zeile\n");
	ck_assert_string_eq(m.header("Content-Transfer-Encoding").value(), "base64");
}
END_TEST

START_TEST(message_skips_attachments)
{
	Message m("MIME-Version: 1.0\r\n"
		  "Content-Type: multipart/mixed; boundary=XX\r\n"
		  "\r\n"
		  "--XX\r\n"
		  "Content-Type: text/plain\r\n"
		  "Content-Disposition: attachment; filename=log.txt\r\n"
		  "\r\n"
		  "attached log\r\n"
		  "--XX\r\n"
		  "Content-Type: multipart/alternative; boundary=YY\r\n"
		  "\r\n"
		  "--YY\r\n"
		  "Content-Type: text/plain; charset=us-ascii\r\n"
		  "\r\n"
		  "the body\r\n"
		  "--YY--\r\n"
		  "--XX--\r\n");
	ck_assert_string_eq(m.text(), "the body"  /* RFC 2046 5.1.1: the CRLF before a boundary belongs to it */);
}
END_TEST

START_TEST(message_text_html_only_and_none)
{
	Message html("Content-Type: text/html; charset=utf-8\r\n\r\n<b>hi</b>\r\n");
	ck_assert_string_eq(html.text(), "<b>hi</b>\n");
	Message none("Content-Type: multipart/mixed; boundary=Z\r\n\r\n"
		     "--Z\r\nContent-Type: application/octet-stream\r\n"
		     "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--Z--\r\n");
	ck_assert_string_eq(none.text(), "");
	Message empty("");
	ck_assert_uint_eq(empty.headers().size(), 0);
	ck_assert_string_eq(empty.subject(), "");
	ck_assert_string_eq(empty.text(), "");
}
END_TEST

// The pieces of a message a final delivery writes: the header section's
// Return-Path and Content-Length fields (any case, folded, the obsolete
// blank before the colon) are cut, every other byte stays, and a line
// that only looks like one in the body is left alone.
START_TEST(message_delivered_parts)
{
	auto delivered = [](std::string_view raw) {
		std::string out;
		for (std::string_view part : Message(raw).delivered_parts())
			out += part;
		return out;
	};
	ck_assert_string_eq(delivered("Return-Path: <forged@x>\r\nSubject: s\r\n\r\nbody\r\n"),
			    "Subject: s\r\n\r\nbody\r\n");
	ck_assert_string_eq(delivered("Received: by x\r\n\tid 1\r\nreturn-PATH: <a@x>\r\n"
				      "Subject: s\r\nCONTENT-LENGTH: 3\r\nTo: t\r\n\r\n"
				      "Return-Path: <body@x>\r\nContent-Length: 9\r\n"),
			    "Received: by x\r\n\tid 1\r\nSubject: s\r\nTo: t\r\n\r\n"
			    "Return-Path: <body@x>\r\nContent-Length: 9\r\n");
	ck_assert_string_eq(delivered("Subject: s\r\nReturn-Path:\r\n <folded@x>\r\n\t(more)\r\n"
				      "Return-Path : <obs@x>\r\nContent-Length\t: 1\r\nX-Return-Path: kept\r\n"
				      "\r\nbody\r\n"),
			    "Subject: s\r\nX-Return-Path: kept\r\n\r\nbody\r\n");
	ck_assert_string_eq(delivered("Subject: s\nContent-Length: 1\n\nb\n"), "Subject: s\n\nb\n");
	ck_assert_string_eq(delivered("Subject: s\r\nReturn-Path: <last@x>"), "Subject: s\r\n");
	ck_assert_uint_eq(Message("Return-Path: <a>\r\nContent-Length: 1\r\n").delivered_parts().size(), 0);
	std::string plain = "Subject: s\r\n\r\nbody\r\n";
	std::vector<std::string_view> parts = Message(plain).delivered_parts();
	ck_assert_uint_eq(parts.size(), 1);
	ck_assert(parts[0].data() == plain.data() && parts[0].size() == plain.size());  // raw() itself
}
END_TEST

// The bytes written out, from memory or from the file the message lies
// in (at its offset, after the spool header), each after the prefix and
// without the message's own Return-Path and Content-Length.
START_TEST(message_write_to)
{
	std::string body = "Return-Path: <forged@x>\r\nSubject: s\r\ncontent-length: 1\r\n\r\n" +
			   std::string(300000, 'b') + "\r\n";
	char in_path[] = "/tmp/laim-msg-XXXXXX", out_path[] = "/tmp/laim-out-XXXXXX";
	UniqueFd in(mkstemp(in_path)), out(mkstemp(out_path));
	unlink(in_path);
	unlink(out_path);
	std::string file = "LAIM 1\nheader\n\n" + body;
	ck_assert(write_all(in.get(), file));
	Message from_file(body, in.get(), static_cast<off_t>(file.size() - body.size()));
	ck_assert(from_file.write_to(out.get(), "Return-Path: <>\r\n"));
	Message from_memory("Subject: m\r\nReturn-Path: <f>\r\n\r\nmemory\r\n");
	ck_assert(from_memory.write_to(out.get(), "X: y\r\n"));
	std::string got(file.size() * 2, '\0');
	ssize_t n = pread(out.get(), got.data(), got.size(), 0);
	ck_assert_int_gt(n, 0);
	got.resize(static_cast<size_t>(n));
	std::string kept = "Subject: s\r\n\r\n" + std::string(300000, 'b') + "\r\n";
	ck_assert(got == "Return-Path: <>\r\n" + kept + "X: y\r\nSubject: m\r\n\r\nmemory\r\n");
}
END_TEST

// ---------------------------------------------------------------- registry

START_TEST(registry_types)
{
	std::vector<std::string> types = handler_types();
	std::vector<std::string> want = {"discard", "file", "log", "maildir"};
	for (const std::string& t : want) {
		ck_assert_msg(std::find(types.begin(), types.end(), t) != types.end(), "%s", t.c_str());
		ck_assert(handler_factory(t) != nullptr);
	}
	ck_assert(handler_factory("nosuch") == nullptr);
	ck_assert(std::is_sorted(types.begin(), types.end()));
}
END_TEST

START_TEST(create_in_order)
{
	auto hs = create("handlers:\n"
			 "  zeta:\n"
			 "    type: discard\n"
			 "  audit:\n"
			 "    type: log\n"
			 "  box:\n"
			 "    type: maildir\n"
			 "    path: /nonexistent/Maildir\n"
			 "    per_recipient: yes\n"
			 "    create: off\n");
	ck_assert_uint_eq(hs.size(), 3);
	ck_assert_string_eq(hs[0].name, "zeta");
	ck_assert_string_eq(hs[1].name, "audit");
	ck_assert_string_eq(hs[2].name, "box");
	// Construction touched nothing on disk.
	ck_assert_int_ne(access("/nonexistent/Maildir", F_OK), 0);
}
END_TEST

// An instance without `workers:` gets its type's default: several where
// deliveries need no lock (maildir, LMTP, a relay), one where a lock
// serialises them anyway (an mbox file); the option overrides it.
START_TEST(workers_default_per_type)
{
	auto hs = create("handlers:\n"
			 "  box:\n"
			 "    type: maildir\n"
			 "    path: /nonexistent/Maildir\n"
			 "  onebox:\n"
			 "    type: maildir\n"
			 "    path: /nonexistent/Maildir\n"
			 "    workers: 1\n"
			 "  dovecot:\n"
			 "    type: lmtp\n"
			 "    socket: /run/dovecot/lmtp\n"
			 "  relay:\n"
			 "    type: smarthost\n"
			 "    host: 127.0.0.1\n"
			 "  spoolfile:\n"
			 "    type: file\n"
			 "    path: /nonexistent/all.mbox\n"
			 "  wide:\n"
			 "    type: file\n"
			 "    path: /nonexistent/all.mbox\n"
			 "    workers: 8\n");
	std::map<std::string, unsigned> workers;
	for (const ConfiguredHandler& h : hs)
		workers[h.name] = h.workers;
	ck_assert_uint_eq(workers["box"], 16);
	ck_assert_uint_eq(workers["onebox"], 1);
	ck_assert_uint_eq(workers["dovecot"], 4);
	ck_assert_uint_eq(workers["relay"], 4);
	ck_assert_uint_eq(workers["spoolfile"], 1);
	ck_assert_uint_eq(workers["wide"], 8);
}
END_TEST

START_TEST(error_unknown_type)
{
	ck_assert_string_eq(create_error("handlers:\n"
				      "  ok:\n"
				      "    type: discard\n"
				      "  x:\n"
				      "    path: /tmp/x\n"
				      "    type: nosuch\n")
				 ,
			 "test.yml:6: handlers.x.type: unknown handler type \"nosuch\" "
			 "(known: discard, file, forward, lmtp, log, maildir, mbox, pipe, smarthost, webhook)");
}
END_TEST

START_TEST(error_maildir_missing_path)
{
	ck_assert_string_eq(create_error("hostname: mx.example\n"
				      "handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    create: true\n")
				 ,
			 "test.yml:3: handlers.box.path: missing required option");
}
END_TEST

START_TEST(error_path_not_absolute)
{
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    path: run/Maildir\n")
				 ,
			 "test.yml:4: handlers.box.path: expected an absolute path, got \"run/Maildir\"");
	ck_assert_string_eq(create_error("handlers:\n"
				      "  mbox:\n"
				      "    type: file\n"
				      "\n"
				      "    path: mbox\n")
				 ,
			 "test.yml:5: handlers.mbox.path: expected an absolute path, got \"mbox\"");
}
END_TEST

START_TEST(error_unknown_key)
{
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    path: /var/mail/box\n"
				      "    colour: blue\n")
				 ,
			 "test.yml:5: handlers.box.colour: unknown key");
	ck_assert_string_eq(create_error("handlers:\n"
				      "  audit:\n"
				      "    type: log\n"
				      "    level: info\n")
				 ,
			 "test.yml:4: handlers.audit.level: unknown key");
	ck_assert_string_eq(create_error("handlers:\n"
				      "  drop:\n"
				      "    type: discard\n"
				      "    path: /dev/null\n")
				 ,
			 "test.yml:4: handlers.drop.path: unknown key");
}
END_TEST

START_TEST(error_wrong_type)
{
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    path: /var/mail/box\n"
				      "    per_recipient: maybe\n")
				 ,
			 "test.yml:5: handlers.box.per_recipient: expected a boolean "
			 "(true/false, yes/no, on/off), got \"maybe\"");
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    path: [/a, /b]\n")
				 ,
			 "test.yml:4: handlers.box.path: expected a string, got a sequence");
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: file\n"
				      "    path:\n"
				      "      nested: /x\n")
				 ,
			 "test.yml:5: handlers.box.path: expected a string, got a mapping");
	// A quoted "yes" is a string, not a boolean.
	ck_assert_string_eq(create_error("handlers:\n"
				      "  box:\n"
				      "    type: maildir\n"
				      "    path: /var/mail/box\n"
				      "    create: \"yes\"\n")
				 ,
			 "test.yml:5: handlers.box.create: expected a boolean "
			 "(true/false, yes/no, on/off), got a quoted string \"yes\"");
}
END_TEST

// The accessors a later handler will use, on a section built by hand.
START_TEST(options_accessors)
{
	YamlNode root = yaml_parse("handlers:\n"
				   "  h:\n"
				   "    type: custom\n"
				   "    port: 8025\n"
				   "    quoted: \"12\"\n"
				   "    big: 99999\n"
				   "    list: [a, \"b c\"]\n"
				   "    bad_list: [a, [b]]\n"
				   "    scalar_list: a\n"
				   "    flag: On\n"
				   "    dir: /var/lib/x\n"
				   "    rel: var/lib/x\n",
				   "t.yml");
	HandlerSection s;
	s.name = "h";
	s.type = "custom";
	s.line = 2;
	s.options = root.find("handlers")->entries[0].second;
	HandlerOptions o(s, "t.yml");
	ck_assert_string_eq(o.name(), "h");
	ck_assert_string_eq(o.file(), "t.yml");
	ck_assert(o.has("port"));
	ck_assert(!o.has("nothere"));

	ck_assert_int_eq(o.integer("port", std::nullopt, 1, 65535), 8025);
	ck_assert_int_eq(o.integer("absent", 7), 7);
	ck_assert(o.boolean("flag"));
	ck_assert(o.boolean("absent_flag", true));
	ck_assert_string_eq(o.string("absent_s", std::string("dflt")), "dflt");
	ck_assert_string_eq(o.path("dir"), "/var/lib/x");
	ck_assert_string_eq(o.path("absent_p", std::string("/run/x")), "/run/x");
	std::vector<std::string> l = o.strings("list");
	ck_assert_uint_eq(l.size(), 2);
	ck_assert_string_eq(l[1], "b c");
	ck_assert_uint_eq(o.strings("no_list").size(), 0);

	auto error_of = [](auto fn) -> std::string {
		try {
			fn();
		} catch (const ConfigError& e) {
			return e.what();
		}
		return "no error";
	};
	ck_assert_string_eq(error_of([&] { o.integer("quoted"); }),
			 "t.yml:5: handlers.h.quoted: expected a non-negative integer, got a quoted string \"12\"");
	ck_assert_string_eq(error_of([&] { o.integer("big", std::nullopt, 0, 1000); }),
			 "t.yml:6: handlers.h.big: 99999 is out of range: expected an integer from 0 to 1000");
	ck_assert_string_eq(error_of([&] { o.integer("missing"); }),
			 "t.yml:2: handlers.h.missing: missing required option");
	ck_assert_string_eq(error_of([&] { o.strings("bad_list"); }),
			 "t.yml:8: handlers.h.bad_list[1]: expected a string, got a sequence");
	ck_assert_string_eq(error_of([&] { o.strings("scalar_list"); }),
			 "t.yml:9: handlers.h.scalar_list: expected a list of strings, got a string");
	ck_assert_string_eq(error_of([&] { o.path("rel"); }),
			 "t.yml:12: handlers.h.rel: expected an absolute path, got \"var/lib/x\"");
	ck_assert_string_eq(error_of([&] { o.path("absent_p2"); }),
			 "t.yml:2: handlers.h.absent_p2: missing required option");
	ck_assert_string_eq(error_of([&] { o.fail("port", "refused"); }),
			 "t.yml:4: handlers.h.port: refused");
	// Every key was read: no unknown key (type counts as used).
	ck_assert_string_eq(error_of([&] { o.check_unused(); }), "no error");

	HandlerOptions fresh(s, "t.yml");
	fresh.integer("port");
	ck_assert_string_eq(error_of([&] { fresh.check_unused(); }),
			 "t.yml:5: handlers.h.quoted: unknown key");
}
END_TEST

// ---------------------------------------------------------------- maildir

std::string maildir_yaml(const std::string& path, const std::string& extra = "")
{
	return "handlers:\n  box:\n    type: maildir\n    path: " + path + "\n" + extra;
}

// The one file in DIR/new, after checking tmp/ is empty.
std::string only_new_file(const std::string& dir)
{
	ck_assert_uint_eq(list_dir(dir + "/tmp").size(), 0);
	std::vector<std::string> names = list_dir(dir + "/new");
	ck_assert_uint_eq(names.size(), 1);
	return read_file(dir + "/new/" + names[0]);
}

START_TEST(maildir_delivery)
{
	TempDir t;
	std::string box = t.path + "/deep/Maildir";
	auto h = create_one(maildir_yaml(box));
	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("cron@host.example", {"root@host.example"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);

	ck_assert_uint_eq(mode_of(box), 0700);
	ck_assert_uint_eq(mode_of(box + "/cur"), 0700);
	ck_assert_uint_eq(list_dir(box + "/cur").size(), 0);
	std::string want = std::string("Return-Path: <cron@host.example>\r\n"
				       "Delivered-To: root@host.example\r\n") +
			   plain_msg;
	ck_assert_string_eq(only_new_file(box), want);

	// The name: time.M<usec>P<pid>Q<counter>.<host>
	std::string name = list_dir(box + "/new")[0];
	ck_assert_uint_eq(mode_of(box + "/new/" + name), 0600);
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	std::string pid = "P" + std::to_string(getpid()) + "Q";
	ck_assert_msg(name.find(pid) != std::string::npos, "%s", name.c_str());
	ck_assert_msg(name.find(".M") != std::string::npos, "%s", name.c_str());
	ck_assert_msg(name.ends_with(std::string(".") + host), "%s", name.c_str());
	ck_assert_msg(std::strtol(name.c_str(), nullptr, 10) > 1600000000, "%s", name.c_str());
}
END_TEST

START_TEST(maildir_null_sender_exact_bytes)
{
	TempDir t;
	auto h = create_one(maildir_yaml(t.path + "/Maildir"));
	// Bytes kept as received: CRLF, an 8-bit body, no final newline.
	std::string raw = "Subject: x\r\n\r\nbin\xff\x01 data\r\n.dot\r\nFrom me\r\nno newline";
	Message msg(raw);
	Result r = result_of(h->deliver(envelope("", {"postmaster"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	std::string want = "Return-Path: <>\r\nDelivered-To: postmaster\r\n" + raw;
	std::string got = only_new_file(t.path + "/Maildir");
	ck_assert_uint_eq(got.size(), want.size());
	ck_assert(got == want);
}
END_TEST

START_TEST(maildir_two_recipients)
{
	TempDir t;
	std::string box = t.path + "/Maildir";
	auto h = create_one(maildir_yaml(box));
	h->start();
	ck_assert_uint_eq(mode_of(box + "/tmp"), 0700);
	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("a@b.example", {"one@x.example", "two@y.example"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	std::vector<std::string> names = list_dir(box + "/new");
	ck_assert_uint_eq(names.size(), 2);
	ck_assert_str_ne(names[0].c_str(), names[1].c_str());
	std::vector<std::string> got = {read_file(box + "/new/" + names[0]),
					read_file(box + "/new/" + names[1])};
	std::sort(got.begin(), got.end());
	std::string head = "Return-Path: <a@b.example>\r\nDelivered-To: ";
	ck_assert_string_eq(got[0], (head + "one@x.example\r\n" + plain_msg));
	ck_assert_string_eq(got[1], (head + "two@y.example\r\n" + plain_msg));
	ck_assert_uint_eq(list_dir(box + "/tmp").size(), 0);
}
END_TEST

START_TEST(maildir_per_recipient)
{
	TempDir t;
	auto h = create_one(maildir_yaml(t.path, "    per_recipient: true\n"));
	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("s@x", {"alice@example.org", "Bob.Smith+tag@example.org"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	ck_assert_string_eq(only_new_file(t.path + "/alice"),
			 (std::string("Return-Path: <s@x>\r\nDelivered-To: alice@example.org\r\n") +
			  plain_msg)
				 );
	ck_assert_string_eq(
		only_new_file(t.path + "/Bob.Smith+tag"),
		(std::string("Return-Path: <s@x>\r\nDelivered-To: Bob.Smith+tag@example.org\r\n") +
		 plain_msg)
			);
	ck_assert_uint_eq(mode_of(t.path + "/alice/new"), 0700);
	std::vector<std::string> top = list_dir(t.path);
	ck_assert_uint_eq(top.size(), 2);
}
END_TEST

START_TEST(maildir_per_recipient_refuses_bad_local_parts)
{
	TempDir t;
	auto h = create_one(maildir_yaml(t.path, "    per_recipient: true\n"));
	for (const char* bad : {"../etc@x", ".hidden@x", "a/b@x", "\"a b\"@x", "@x", "..@x", "x\xc3\xa9@y"})
		ck_assert_msg(h->check_recipient(bad) == RcptVerdict::Reject, "%s", bad);
	ck_assert(h->check_recipient("root") == RcptVerdict::Accept);
	ck_assert(h->check_recipient("a.b_c-d+e@x") == RcptVerdict::Accept);

	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("s@x", {"../evil@x", "good@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::PermFail);
	ck_assert_msg(r.reason.find("<../evil@x>") != std::string::npos, "%s", r.reason.c_str());
	// The good recipient got its copy; nothing was written outside.
	only_new_file(t.path + "/good");
	ck_assert_uint_eq(list_dir(t.path).size(), 1);

	// Without per_recipient every recipient is fine.
	auto flat = create_one(maildir_yaml(t.path + "/flat"));
	ck_assert(flat->check_recipient("../evil@x") == RcptVerdict::Accept);
}
END_TEST

START_TEST(maildir_errors_tempfail)
{
	TempDir t;
	Message msg(plain_msg);
	// create: false and no Maildir there.
	auto h = create_one(maildir_yaml(t.path + "/missing", "    create: false\n"));
	h->start();
	ck_assert_int_ne(access((t.path + "/missing").c_str(), F_OK), 0);
	Result r = result_of(h->deliver(envelope("s@x", {"r@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::TempFail);
	ck_assert_msg(r.reason.find(t.path + "/missing/tmp/") != std::string::npos, "%s",
		      r.reason.c_str());
	ck_assert_msg(r.reason.find(strerror(ENOENT)) != std::string::npos, "%s", r.reason.c_str());

	// tmp/ is a file: the Maildir cannot be used, and nothing is left behind.
	std::string box = t.path + "/broken";
	ck_assert_int_eq(mkdir(box.c_str(), 0700), 0);
	ck_assert_int_eq(mkdir((box + "/new").c_str(), 0700), 0);
	write_file(box + "/tmp", "not a directory");
	auto b = create_one(maildir_yaml(box));
	r = result_of(b->deliver(envelope("s@x", {"r@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::TempFail);
	ck_assert_msg(r.reason.find(box) != std::string::npos, "%s", r.reason.c_str());
	ck_assert_msg(r.reason.find(strerror(ENOTDIR)) != std::string::npos, "%s", r.reason.c_str());
	ck_assert_uint_eq(list_dir(box + "/new").size(), 0);
}
END_TEST

// A copy that cannot be moved into new/ (there, a file): the copies
// already moved leave new/ again and every tmp/ file goes, so that the
// retry delivers each recipient once.
START_TEST(maildir_failed_move_leaves_no_copy)
{
	TempDir t;
	for (const char* sub : {"/b", "/b/tmp", "/b/cur"})
		ck_assert_int_eq(mkdir((t.path + sub).c_str(), 0700), 0);
	write_file(t.path + "/b/new", "not a directory");
	auto h = create_one(maildir_yaml(t.path, "    per_recipient: true\n"));
	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("s@x", {"a@x", "b@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::TempFail);
	ck_assert_msg(r.reason.find(t.path + "/b/new/") != std::string::npos, "%s", r.reason.c_str());
	ck_assert_uint_eq(list_dir(t.path + "/a/new").size(), 0);
	ck_assert_uint_eq(list_dir(t.path + "/a/tmp").size(), 0);
	ck_assert_uint_eq(list_dir(t.path + "/b/tmp").size(), 0);
}
END_TEST

// ---------------------------------------------------------------- file (mbox)

std::string file_yaml(const std::string& path)
{
	return "handlers:\n  mbox:\n    type: file\n    path: " + path + "\n";
}

const char quoting_msg[] =
	"Subject: quoting\r\n"
	"\r\n"
	"From the start\r\n"
	">From quoted once\r\n"
	">>From quoted twice\r\n"
	"Fromage is not quoted\r\n"
	" From indented is not quoted\r\n"
	">>> not From either\r\n"
	"From\r\n"
	"last line\r\n";

START_TEST(file_mbox_bytes)
{
	setenv("TZ", "UTC", 1);
	tzset();
	TempDir t;
	std::string path = t.path + "/mbox";
	auto h = create_one(file_yaml(path));
	Message msg(quoting_msg);
	Result r = result_of(h->deliver(envelope("cron@host.example", {"root@host.example"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	ck_assert_uint_eq(mode_of(path), 0600);
	std::string first =
		"From cron@host.example Sun Nov 22 10:00:00 2026\n"
		"Return-Path: <cron@host.example>\n"
		"Delivered-To: root@host.example\n"
		"Subject: quoting\n"
		"\n"
		">From the start\n"
		">>From quoted once\n"
		">>>From quoted twice\n"
		"Fromage is not quoted\n"
		" From indented is not quoted\n"
		">>> not From either\n"
		"From\n"
		"last line\n"
		"\n";
	ck_assert_string_eq(read_file(path), first);

	// A second delivery appends; the null sender is MAILER-DAEMON; the
	// day of the month is space-padded as asctime(3) writes it.
	Envelope env = envelope("", {"a@x", "b@y"});
	env.arrival = 1793606709;  // Mon Nov  2 08:05:09 2026 UTC
	Message bounce("Subject: bounce\r\n\r\nbody without newline");
	r = result_of(h->deliver(env, bounce));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	std::string copy_tail = "Subject: bounce\n\nbody without newline\n\n";
	std::string want = first +
			   "From MAILER-DAEMON Mon Nov  2 08:05:09 2026\n"
			   "Return-Path: <>\nDelivered-To: a@x\n" + copy_tail +
			   "From MAILER-DAEMON Mon Nov  2 08:05:09 2026\n"
			   "Return-Path: <>\nDelivered-To: b@y\n" + copy_tail;
	ck_assert_string_eq(read_file(path), want);
}
END_TEST

START_TEST(file_keeps_existing_content)
{
	setenv("TZ", "UTC", 1);
	tzset();
	TempDir t;
	std::string path = t.path + "/mbox";
	write_file(path, "existing\n\n");
	ck_assert_int_eq(chmod(path.c_str(), 0640), 0);
	auto h = create_one(file_yaml(path));
	Message msg("X: y\r\n\r\nA lone\rCR stays\r\n");
	Result r = result_of(h->deliver(envelope("s@x", {"r@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	ck_assert_string_eq(read_file(path), "existing\n\n"
						  "From s@x Sun Nov 22 10:00:00 2026\n"
						  "Return-Path: <s@x>\nDelivered-To: r@x\n"
						  "X: y\n\nA lone\rCR stays\n\n");
	ck_assert_uint_eq(mode_of(path), 0640);
}
END_TEST

// The next From_ line starts after an empty line: a last line without its
// newline gets it and an empty line, a single line end an empty line.
START_TEST(file_ends_last_line)
{
	setenv("TZ", "UTC", 1);
	tzset();
	TempDir t;
	std::string path = t.path + "/mbox";
	auto h = create_one(file_yaml(path));
	Message msg("X: y\r\n\r\nbody\r\n");
	const std::string copy = "From s@x Sun Nov 22 10:00:00 2026\nReturn-Path: <s@x>\nDelivered-To: r@x\n"
				 "X: y\n\nbody\n\n";
	for (const std::string before : {"existing", "existing\n", "\n"}) {
		write_file(path, before);
		Result r = result_of(h->deliver(envelope("s@x", {"r@x"}), msg));
		ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
		ck_assert_string_eq(read_file(path), (before == "\n" ? before : "existing\n\n") + copy);
	}
}
END_TEST

// A write that fails half-way (here: the file size limit) is cut back off,
// with the line end added before it (the file ended without one).
START_TEST(file_write_error_truncates)
{
	TempDir t;
	std::string path = t.path + "/mbox";
	std::string before(100, 'x');
	write_file(path, before);
	auto h = create_one(file_yaml(path));
	std::string raw = "Subject: big\r\n\r\n" + std::string(5000, 'b') + "\r\n";
	Message msg(raw);

	signal(SIGXFSZ, SIG_IGN);
	struct rlimit old, lim;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1000;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	Result r = result_of(h->deliver(envelope("s@x", {"r@x"}), msg));
	setrlimit(RLIMIT_FSIZE, &old);

	ck_assert_int_eq((int)r.status, (int)Result::Status::TempFail);
	ck_assert_msg(r.reason.find(path) != std::string::npos, "%s", r.reason.c_str());
	ck_assert_msg(r.reason.find(strerror(EFBIG)) != std::string::npos, "%s", r.reason.c_str());
	ck_assert_string_eq(read_file(path), before);
}
END_TEST

START_TEST(file_open_error_tempfail)
{
	TempDir t;
	std::string path = t.path + "/no/such/dir/mbox";
	auto h = create_one(file_yaml(path));
	Message msg(plain_msg);
	Result r = result_of(h->deliver(envelope("s@x", {"r@x"}), msg));
	ck_assert_int_eq((int)r.status, (int)Result::Status::TempFail);
	ck_assert_msg(r.reason.find(path) != std::string::npos, "%s", r.reason.c_str());
	ck_assert_msg(r.reason.find(strerror(ENOENT)) != std::string::npos, "%s", r.reason.c_str());
}
END_TEST

// ---------------------------------------------------------------- loops

// Postfix's loop test: a Delivered-To: of the header section that names
// the recipient (unfolded, with or without angle brackets, compared as
// same_recipient() compares), and nothing else.
START_TEST(delivered_to_loop_scan)
{
	set_local_domains({"host.example"});
	Message hit("Subject: x\r\nDelivered-To: alice@host.example\r\n\r\nbody\r\n");
	std::optional<Result> r = delivered_to_loop(hit, "alice@host.example");
	ck_assert(r.has_value());
	ck_assert_int_eq((int)r->status, (int)Result::Status::PermFail);
	ck_assert_string_eq(r->code, "5.4.6");
	ck_assert_string_eq(r->reason, "mail forwarding loop for alice@host.example");

	const struct {
		const char *raw, *rcpt;
		bool loop;
	} cases[] = {
	    {"Delivered-To: bob@host.example\r\n\r\n", "alice@host.example", false},
	    {"Subject: x\r\n\r\nDelivered-To: alice@host.example\r\n", "alice@host.example", false},
	    {"X-Delivered-To: alice@host.example\r\nDelivered-To-X: alice@host.example\r\n\r\n", "alice@host.example", false},
	    {"Delivered-To:\r\n alice@host.example\r\n\r\n", "alice@host.example", true},
	    {"DELIVERED-TO: <Alice@HOST.Example> \r\n\r\n", "alice@host.example", true},
	    {"delivered-to: alice\r\n\r\n", "ALICE@host.example", true},
	    {"Delivered-To: bob@Other.Example\r\n\r\n", "bob@other.example", true},
	    {"Delivered-To: Bob@other.example\r\n\r\n", "bob@other.example", false},
	    {"Delivered-To: bob@host.example\r\nReceived: x\r\nDelivered-To: alice@host.example\r\n\r\n", "alice@host.example", true},
	    {"Delivered-To: alice@host.example\r\n", "alice@host.example", true},  // no body
	    {"Delivered-To: alice@host.example\n\n", "alice@host.example", true},  // LF line ends
	    {"Delivered-To:\r\n\r\n", "alice@host.example", false},
	};
	for (const auto& c : cases) {
		Message m(c.raw);
		ck_assert_msg(delivered_to_loop(m, c.rcpt).has_value() == c.loop, "%s for %s: expected %s", c.raw, c.rcpt,
			      c.loop ? "a loop" : "none");
	}
}
END_TEST

// A recipient the message was delivered to already fails, with no copy;
// another recipient of the same call gets its copy.
START_TEST(maildir_refuses_delivered_to_loop)
{
	TempDir t;
	std::string box = t.path + "/Maildir";
	auto h = create_one(maildir_yaml(box));
	h->start();
	std::string raw = std::string("Delivered-To: one@x.example\r\n") + plain_msg;
	Message msg(raw);
	Results rs = h->deliver(envelope("a@b.example", {"one@x.example", "two@y.example"}), msg);
	ck_assert_int_eq((int)rs.at(0).status, (int)Result::Status::PermFail);
	ck_assert_string_eq(rs.at(0).code, "5.4.6");
	ck_assert_string_eq(rs.at(0).reason, "mail forwarding loop for one@x.example");
	ck_assert_int_eq((int)rs.at(1).status, (int)Result::Status::Delivered);
	ck_assert_string_eq(only_new_file(box), "Return-Path: <a@b.example>\r\nDelivered-To: two@y.example\r\n" + raw);
}
END_TEST

START_TEST(file_refuses_delivered_to_loop)
{
	setenv("TZ", "UTC", 1);
	tzset();
	TempDir t;
	std::string path = t.path + "/mbox";
	auto h = create_one(file_yaml(path));
	Message msg("Delivered-To: b@y\r\n\r\nbody\r\n");
	Results rs = h->deliver(envelope("s@x", {"a@x", "b@y"}), msg);
	ck_assert_int_eq((int)rs.at(0).status, (int)Result::Status::Delivered);
	ck_assert_int_eq((int)rs.at(1).status, (int)Result::Status::PermFail);
	ck_assert_string_eq(rs.at(1).reason, "mail forwarding loop for b@y");
	const std::string one_copy = "From s@x Sun Nov 22 10:00:00 2026\nReturn-Path: <s@x>\n"
				     "Delivered-To: a@x\nDelivered-To: b@y\n\nbody\n\n";
	ck_assert_string_eq(read_file(path), one_copy);
	// Every recipient a loop: no append at all.
	rs = h->deliver(envelope("s@x", {"b@y"}), msg);
	ck_assert_int_eq((int)rs.at(0).status, (int)Result::Status::PermFail);
	ck_assert_string_eq(read_file(path), one_copy);
}
END_TEST

// The mbox handler and the pipe handler with stdin: mbox fail a looping
// recipient before they ask the parent for laim-mda or the command; with
// no parent here, any request would fail temporarily instead. A pipe
// without Delivered-To in its copy (stdin: raw, or a command for two
// recipients) makes no such check, as Postfix's pipe(8) without flag D.
START_TEST(commands_refuse_delivered_to_loop)
{
	set_local_domains({"host.example"});
	Message msg("Delivered-To: root@host.example\r\n\r\nbody\r\n");
	const std::string pipe = "handlers:\n  p:\n    type: pipe\n    command: [/bin/cat]\n    user: nobody\n";
	const struct {
		const char* what;
		std::string yaml;
		std::vector<std::string> rcpts;
		Result::Status status;
	} cases[] = {
	    {"mbox", "handlers:\n  local:\n    type: mbox\n", {"root@host.example"}, Result::Status::PermFail},
	    {"pipe, stdin: mbox", pipe + "    stdin: mbox\n", {"root@host.example"}, Result::Status::PermFail},
	    {"pipe, stdin: mbox, two recipients", pipe + "    stdin: mbox\n    per_recipient: false\n",
	     {"root@host.example", "x@host.example"}, Result::Status::TempFail},
	    {"pipe, stdin: raw", pipe, {"root@host.example"}, Result::Status::TempFail},
	};
	for (const auto& c : cases) {
		Result r = result_of(create_one(c.yaml)->deliver(envelope("s@x", c.rcpts), msg));
		ck_assert_msg(r.status == c.status, "%s: got status %d (%s), expected %d", c.what, (int)r.status,
			      r.reason.c_str(), (int)c.status);
		if (c.status == Result::Status::PermFail)
			ck_assert_string_eq(r.reason, "mail forwarding loop for root@host.example");
	}
}
END_TEST

// ---------------------------------------------------------------- log, discard

// Runs FN with fd 2 pointed at a temporary file and returns what was written.
template <typename Fn>
std::string capture_stderr(Fn fn)
{
	char tmpl[] = "/tmp/laim-test-log.XXXXXX";
	int fd = mkstemp(tmpl);
	ck_assert_int_ge(fd, 0);
	unlink(tmpl);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	std::string out;
	char buf[4096];
	ssize_t n;
	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf, sizeof buf)) > 0)
		out.append(buf, n);
	close(fd);
	return out;
}

START_TEST(log_line)
{
	log_init(true, 0);
	auto h = create_one("handlers:\n  audit:\n    type: log\n");
	std::string raw = "Subject: =?UTF-8?Q?caf=C3=A9_=07bell=1B[31m_tab=09end?=\r\n\r\nbody\r\n";
	Message msg(raw);
	Result r;
	std::string out = capture_stderr(
		[&] { r = result_of(h->deliver(envelope("a@b.example", {"r1@x", "r2@y"}), msg)); });
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	std::string want = "laimd[" + std::to_string(getpid()) +
			   "]: 4F3A2C1B: handler=audit, from=<a@b.example>, to=<r1@x>,<r2@y>, size=" +
			   std::to_string(raw.size()) + ", subject=caf\xc3\xa9 ?bell?[31m tab?end\n";
	ck_assert_string_eq(out, want);

	Message nosubj("From: x\r\n\r\n");
	out = capture_stderr([&] { result_of(h->deliver(envelope("", {"root"}), nosubj)); });
	want = "laimd[" + std::to_string(getpid()) +
	       "]: 4F3A2C1B: handler=audit, from=<>, to=<root>, size=11, subject=\n";
	ck_assert_string_eq(out, want);
}
END_TEST

START_TEST(discard_accepts)
{
	TempDir t;
	auto h = create_one("handlers:\n  drop:\n    type: discard\n");
	Message msg(plain_msg);
	ck_assert(h->check_recipient("anyone@anywhere") == RcptVerdict::Accept);
	std::string out;
	Result r;
	out = capture_stderr([&] { r = result_of(h->deliver(envelope("a@b", {"c@d"}), msg)); });
	ck_assert_int_eq((int)r.status, (int)Result::Status::Delivered);
	ck_assert_string_eq(out, "");
}
END_TEST

// ---------------------------------------------------------------- commands

// Placeholders fill words, never split or add them; a per-recipient word
// repeats; a value is not scanned again; one that would start a word with
// '-' is refused.
START_TEST(command_placeholders)
{
	CommandVars v{"0123456789", "", {"alice+lists+x@example.org", "bob@example.org"}};
	std::vector<std::string> got = command_argv(
		{"/bin/deliver", "-f", "{sender}", "--to={recipient}", "{user}", "<{extension}>", "{queue_id}", "{}", "{Sender}"},
		v);
	std::vector<std::string> want = {"/bin/deliver", "-f", "", "--to=alice+lists+x@example.org",
					 "--to=bob@example.org", "alice", "bob", "<lists+x>", "<>", "0123456789", "{}",
					 "{Sender}"};
	ck_assert(got == want);
	v = {"0123456789", "{user} $(id) ;", {"-oQ/tmp@example.org"}};
	ck_assert(command_argv({"/bin/x", "{sender}"}, v)[1] == "{user} $(id) ;");
	ck_assert(command_argv({"/bin/x", "-r{recipient}"}, v)[1] == "-r-oQ/tmp@example.org");
	ck_assert_int_eq(command_argv({"/bin/x", "{recipient}"}, {"0123456789", "a@b", {}}).size(), 1);
	for (const char* word : {"{recipient}", "{user}"}) {
		bool refused = false;
		try {
			command_argv({"/bin/x", word}, v);
		} catch (const std::invalid_argument& e) {
			refused = std::string(e.what()).find("would be an option to the command") != std::string::npos;
		}
		ck_assert_msg(refused, "%s with a recipient that begins with '-'", word);
	}
}
END_TEST

// A command's end, read as Postfix's pipe(8) reads it; exit 0 with input
// left unread is a temporary failure only where the whole input counts.
START_TEST(command_endings)
{
	auto end = [](int status, std::string output = "", uint64_t unread = 0) {
		CommandEnd e;
		e.user = "vmail";
		e.status = status;
		e.output = std::move(output);
		e.unread = unread;
		return e;
	};
	const auto D = Result::Status::Delivered, T = Result::Status::TempFail, P = Result::Status::PermFail;
	const struct {
		CommandEnd end;
		bool whole;
		Result::Status status;
		const char *code, *reason;
	} cases[] = {
	    {end(0), true, D, "", "command as vmail exited with status 0"},
	    {end(0, "saved\nmore"), true, D, "", "command as vmail exited with status 0: saved"},
	    {end(0, "5.1.1 no such user"), true, D, "", "command as vmail exited with status 0: 5.1.1 no such user"},
	    {end(0, "", 42), true, T, "", "command as vmail exited before reading all of its input (42 bytes left)"},
	    {end(0, "", 42), false, D, "", "command as vmail exited with status 0"},
	    {end(75 << 8, "busy"), true, T, "4.3.0", "command as vmail exited with status 75 (temporary failure): busy"},
	    {end(71 << 8), true, T, "4.3.0", "command as vmail exited with status 71 (system resource problem)"},
	    {end(74 << 8), true, T, "4.3.0", "command as vmail exited with status 74 (input/output error)"},
	    {end(67 << 8), true, P, "5.1.1", "command as vmail exited with status 67 (user unknown)"},
	    {end(64 << 8), true, P, "5.3.0", "command as vmail exited with status 64 (command line usage error)"},
	    {end(65 << 8), true, P, "5.6.0", "command as vmail exited with status 65 (data format error)"},
	    {end(68 << 8), true, P, "5.1.2", "command as vmail exited with status 68 (host name unknown)"},
	    {end(73 << 8), true, P, "5.3.0", "command as vmail exited with status 73 (can't create output file)"},
	    {end(76 << 8), true, P, "5.3.0", "command as vmail exited with status 76 (remote protocol error)"},
	    {end(77 << 8), true, P, "5.7.0", "command as vmail exited with status 77 (permission denied)"},
	    {end(78 << 8), true, P, "5.3.5", "command as vmail exited with status 78 (configuration error)"},
	    {end(1 << 8, "5.1.1 no such user\n"), true, P, "5.1.1", "command as vmail exited with status 1: no such user"},
	    {end(75 << 8, "5.2.2 over quota"), true, P, "5.2.2", "command as vmail exited with status 75: over quota"},
	    {end(67 << 8, "4.2.0 mailbox locked"), true, T, "4.2.0", "command as vmail exited with status 67: mailbox locked"},
	    {end(1 << 8, "5.1.1"), true, P, "5.1.1", "command as vmail exited with status 1"},
	    {end(1 << 8, "Failed to connect"), true, T, "", "command as vmail exited with status 1: Failed to connect"},
	    {end(1 << 8, "2.0.0 ok"), true, T, "", "command as vmail exited with status 1: 2.0.0 ok"},
	    {end(1 << 8, "5.1.1x no"), true, T, "", "command as vmail exited with status 1: 5.1.1x no"},
	    {end(1 << 8, "5.1234.1 no"), true, T, "", "command as vmail exited with status 1: 5.1234.1 no"},
	    {end(100 << 8, "a\tb\x1b[31m\r\n"), true, T, "", "command as vmail exited with status 100: a?b?[31m"},
	    {end(SIGKILL), true, T, "", "command as vmail killed by signal 9 (SIGKILL)"},
	    {end(SIGSEGV | 0x80, "oops"), true, T, "", "command as vmail killed by signal 11 (SIGSEGV): oops"},
	};
	for (const auto& c : cases) {
		Result r = command_result(c.end, c.whole);
		ck_assert_msg(r.status == c.status && r.code == c.code && r.reason == c.reason,
			      "status %d: got %d %s (%s), expected %d %s (%s)", c.end.status, (int)r.status,
			      r.code.c_str(), r.reason.c_str(), (int)c.status, c.code, c.reason);
	}
	CommandEnd slow = end(SIGKILL);
	slow.timed_out = true;
	slow.timeout = 120;
	Result r = command_result(slow, true);
	ck_assert(r.status == T);
	ck_assert_string_eq(r.reason, "command as vmail still running after 120s: killed");
}
END_TEST

Suite* handlers_suite()
{
	Suite* s = suite_create("handlers");
	TCase* tc = tcase_create("message");
	tcase_add_test(tc, message_plain);
	tcase_add_test(tc, message_delivered_parts);
	tcase_add_test(tc, message_write_to);
	tcase_add_test(tc, message_folded_headers);
	tcase_add_test(tc, message_first_header_wins);
	tcase_add_test(tc, message_rfc2047_utf8);
	tcase_add_test(tc, message_rfc2047_latin1);
	tcase_add_test(tc, message_no_subject);
	tcase_add_test(tc, message_multipart_alternative_qp);
	tcase_add_test(tc, message_base64_latin1);
	tcase_add_test(tc, message_skips_attachments);
	tcase_add_test(tc, message_text_html_only_and_none);
	suite_add_tcase(s, tc);

	tc = tcase_create("options");
	tcase_add_test(tc, registry_types);
	tcase_add_test(tc, create_in_order);
	tcase_add_test(tc, workers_default_per_type);
	tcase_add_test(tc, error_unknown_type);
	tcase_add_test(tc, error_maildir_missing_path);
	tcase_add_test(tc, error_path_not_absolute);
	tcase_add_test(tc, error_unknown_key);
	tcase_add_test(tc, error_wrong_type);
	tcase_add_test(tc, options_accessors);
	suite_add_tcase(s, tc);

	tc = tcase_create("maildir");
	tcase_add_test(tc, maildir_delivery);
	tcase_add_test(tc, maildir_null_sender_exact_bytes);
	tcase_add_test(tc, maildir_two_recipients);
	tcase_add_test(tc, maildir_per_recipient);
	tcase_add_test(tc, maildir_per_recipient_refuses_bad_local_parts);
	tcase_add_test(tc, maildir_errors_tempfail);
	tcase_add_test(tc, maildir_failed_move_leaves_no_copy);
	suite_add_tcase(s, tc);

	tc = tcase_create("file");
	tcase_add_test(tc, file_mbox_bytes);
	tcase_add_test(tc, file_keeps_existing_content);
	tcase_add_test(tc, file_ends_last_line);
	tcase_add_test(tc, file_write_error_truncates);
	tcase_add_test(tc, file_open_error_tempfail);
	suite_add_tcase(s, tc);

	tc = tcase_create("loops");
	tcase_add_test(tc, delivered_to_loop_scan);
	tcase_add_test(tc, maildir_refuses_delivered_to_loop);
	tcase_add_test(tc, file_refuses_delivered_to_loop);
	tcase_add_test(tc, commands_refuse_delivered_to_loop);
	suite_add_tcase(s, tc);

	tc = tcase_create("command");
	tcase_add_test(tc, command_placeholders);
	tcase_add_test(tc, command_endings);
	suite_add_tcase(s, tc);

	tc = tcase_create("log");
	tcase_add_test(tc, log_line);
	tcase_add_test(tc, discard_accepts);
	suite_add_tcase(s, tc);
	return s;
}

}  // namespace

int main()
{
	SRunner* sr = srunner_create(handlers_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
