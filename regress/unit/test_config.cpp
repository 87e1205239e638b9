// Unit tests of the configuration loader (common/config.cpp): the YAML
// tree, every core key and its default, every error path with its exact
// "FILE:LINE: key" prefix, and the ownership checks of config_read().
// Run as root: config_read() is tested with files owned by root and by
// another uid.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <config.h>

#include "common/config.h"
#include "handler/api/handler.h"

// Last: check.h defines a "fail" macro that clashes with C++ headers.
#include <check.h>

using laim::Config;
using laim::ConfigError;
using laim::YamlNode;

namespace {

const std::string test_file = "t.yml";

// ck_assert_str_eq on std::string values, temporaries included (the check
// macro keeps only the char pointers, which would outlive a temporary).
#define ck_assert_string_eq(a, b)                                   \
	do {                                                         \
		const std::string a_ = (a), b_ = (b);                \
		ck_assert_str_eq(a_.c_str(), b_.c_str());           \
	} while (0)

// The message config_parse() throws for text, or "(no error)".
std::string parse_error(const std::string& text)
{
	try {
		laim::config_parse(text, test_file);
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

bool starts_with(const std::string& s, const std::string& prefix)
{
	return s.compare(0, prefix.size(), prefix) == 0;
}

// The error for text begins with prefix (e.g. "t.yml:3: timeout: ") and
// contains what.
void check_error(const std::string& text, const std::string& prefix, const std::string& what)
{
	std::string msg = parse_error(text);
	ck_assert_msg(starts_with(msg, prefix) && msg.find(what) != std::string::npos,
		      "config:\n%s\ngot: %s\nexpected: %s...%s", text.c_str(), msg.c_str(),
		      prefix.c_str(), what.c_str());
}

Config parse_ok(const std::string& text)
{
	try {
		return laim::config_parse(text, test_file);
	} catch (const ConfigError& e) {
		ck_abort_msg("config:\n%s\nunexpected error: %s", text.c_str(), e.what());
	}
	return {};
}

}  // namespace

// ---------------------------------------------------------------- defaults

static void check_defaults(const Config& c)
{
	ck_assert_str_eq(c.file.c_str(), "t.yml");
	ck_assert_uint_eq(c.listen.size(), 2);
	ck_assert_str_eq(c.listen[0].host.c_str(), "127.0.0.1");
	ck_assert_uint_eq(c.listen[0].port, 25);
	ck_assert_str_eq(c.listen[1].host.c_str(), "::1");
	ck_assert_uint_eq(c.listen[1].port, 25);
	ck_assert_str_eq(c.socket.c_str(), LAIM_SOCKET);
	ck_assert_str_eq(c.user.c_str(), "laim");
	ck_assert_str_eq(c.smtp_user.c_str(), "laim-smtp");
	ck_assert_str_eq(c.hostname.c_str(), "");
	ck_assert_str_eq(c.ident.c_str(), "laim " PACKAGE_VERSION);
	ck_assert_uint_eq(c.max_queue_size, 50);
	ck_assert_uint_eq(c.max_deferred, 10000);
	ck_assert_uint_eq(c.queue_full_wait, 10);
	ck_assert_uint_eq(c.data_size_limit, 33554432);
	ck_assert_uint_eq(c.hop_count_limit, 50);
	ck_assert_uint_eq(c.timeout, 300);
	ck_assert(c.enable_smtputf8);
	ck_assert_str_eq(c.spool.c_str(), LAIM_SPOOL_DIR);
	ck_assert_str_eq(c.aliases.c_str(), "/etc/aliases");
	ck_assert(!c.alias_commands);
	ck_assert(!c.alias_files);
	ck_assert_uint_eq(c.max_sessions, 100);
	ck_assert_uint_eq(c.greeting_delay, 0);
	ck_assert_uint_eq(c.retry_initial, 60);
	ck_assert_uint_eq(c.retry_max, 3600);
	ck_assert_uint_eq(c.max_queue_age, 345600);
	ck_assert_uint_eq(c.delivery_timeout, 300);
	ck_assert(c.handlers.empty());
	ck_assert(c.routes.empty());
}

START_TEST(defaults_empty_file)
{
	check_defaults(parse_ok(""));
	check_defaults(parse_ok("# nothing but a comment\n\n"));
	check_defaults(parse_ok("---\n"));
	check_defaults(parse_ok("---\n...\n"));
}
END_TEST

START_TEST(defaults_unrelated_key)
{
	Config c = parse_ok("user: laim\n");
	check_defaults(c);
}
END_TEST

// ---------------------------------------------------------------- every key

static const char full_config[] =
    "# every key\n"                          // 1
    "listen:\n"                              // 2
    "  - 127.0.0.1:2525\n"                   // 3
    "  - \"[::1]:2526\"\n"                   // 4
    "  - {addr: 0.0.0.0:25, tls: starttls, cert: /c, key: /k, auth: required, users: /u}\n"  // 5
    "socket: /run/test/submit.sock\n"        // 6
    "user: nobody\n"                         // 7
    "hostname: mx.example.org\n"             // 8
    "ident: 'test agent 1.0'\n"              // 9
    "max_queue_size: 7\n"                    // 10
    "data_size_limit: 0\n"                   // 11
    "timeout: 42\n"                          // 12
    "enable_smtputf8: false\n"               // 13
    "spool: /var/tmp/spool\n"                // 14
    "aliases: /etc/mail/aliases\n"           // 15
    "max_sessions: 3\n"                      // 16
    "greeting_delay: 10000\n"                // 17
    "retry_initial: 5\n"                     // 18
    "retry_max: 5\n"                         // 19
    "max_queue_age: 18446744073709551615\n"  // 20
    "delivery_timeout: 9\n"                  // 21
    "routes:\n"                              // 22
    "  - match: \"alerts@*\"\n"              // 23
    "    handlers: [audit, inbox]\n"         // 24
    "  - handlers: inbox\n"                  // 25
    "    match: '*@example.org'\n"           // 26
    "  - match: root@host.lan\n"             // 27
    "    handlers:\n"                        // 28
    "      - inbox\n"                        // 29
    "  - match: \"*\"\n"                     // 30
    "    handlers: [audit]\n"                // 31
    "handlers:\n"                            // 32
    "  inbox:\n"                             // 33
    "    type: maildir\n"                    // 34
    "    path: /var/lib/laim/Maildir\n"      // 35
    "    subdirs: [a, b]\n"                  // 36
    "  audit:\n"                             // 37
    "    type: log\n";                       // 38

START_TEST(every_key)
{
	Config c = parse_ok(full_config);
	ck_assert_uint_eq(c.listen.size(), 3);
	ck_assert_str_eq(c.listen[0].host.c_str(), "127.0.0.1");
	ck_assert_uint_eq(c.listen[0].port, 2525);
	ck_assert_int_eq(c.listen[0].line, 3);
	ck_assert_str_eq(c.listen[1].host.c_str(), "::1");
	ck_assert_uint_eq(c.listen[1].port, 2526);
	ck_assert_int_eq(c.listen[1].line, 4);
	ck_assert_str_eq(c.listen[2].host.c_str(), "0.0.0.0");
	ck_assert_uint_eq(c.listen[2].port, 25);
	ck_assert(c.listen[2].tls == laim::ListenAddress::Tls::Starttls);
	ck_assert(c.listen[2].auth_required);
	ck_assert_str_eq(c.socket.c_str(), "/run/test/submit.sock");
	ck_assert_str_eq(c.user.c_str(), "nobody");
	ck_assert_str_eq(c.hostname.c_str(), "mx.example.org");
	ck_assert_str_eq(c.ident.c_str(), "test agent 1.0");
	ck_assert_uint_eq(c.max_queue_size, 7);
	ck_assert_uint_eq(c.data_size_limit, 0);
	ck_assert_uint_eq(c.timeout, 42);
	ck_assert(!c.enable_smtputf8);
	ck_assert_str_eq(c.spool.c_str(), "/var/tmp/spool");
	ck_assert_str_eq(c.aliases.c_str(), "/etc/mail/aliases");
	ck_assert_uint_eq(c.max_sessions, 3);
	ck_assert_uint_eq(c.greeting_delay, 10000);
	ck_assert_uint_eq(c.retry_initial, 5);
	ck_assert_uint_eq(c.retry_max, 5);
	ck_assert(c.max_queue_age == UINT64_MAX);
	ck_assert_uint_eq(c.delivery_timeout, 9);

	ck_assert_uint_eq(c.handlers.size(), 2);
	ck_assert_str_eq(c.handlers[0].name.c_str(), "inbox");
	ck_assert_str_eq(c.handlers[0].type.c_str(), "maildir");
	ck_assert_int_eq(c.handlers[0].line, 33);
	const YamlNode* path = c.handlers[0].options.find("path");
	ck_assert_ptr_nonnull(path);
	ck_assert_str_eq(path->value.c_str(), "/var/lib/laim/Maildir");
	ck_assert_int_eq(path->line, 35);
	ck_assert_ptr_nonnull(c.handlers[0].options.find("type"));
	const YamlNode* subdirs = c.handlers[0].options.find("subdirs");
	ck_assert_ptr_nonnull(subdirs);
	ck_assert(subdirs->kind == YamlNode::Kind::Sequence);
	ck_assert_uint_eq(subdirs->items.size(), 2);
	ck_assert_str_eq(c.handlers[1].name.c_str(), "audit");
	ck_assert_str_eq(c.handlers[1].type.c_str(), "log");
	ck_assert_int_eq(c.handlers[1].line, 37);

	ck_assert_ptr_eq(c.find_handler("audit"), &c.handlers[1]);
	ck_assert_ptr_eq(c.find_handler("inbox"), &c.handlers[0]);
	ck_assert_ptr_null(c.find_handler("nosuch"));
	ck_assert_ptr_null(c.find_handler(""));

	ck_assert_uint_eq(c.routes.size(), 4);
	ck_assert_str_eq(c.routes[0].match.c_str(), "alerts@*");
	ck_assert_uint_eq(c.routes[0].handlers.size(), 2);
	ck_assert_str_eq(c.routes[0].handlers[0].c_str(), "audit");
	ck_assert_str_eq(c.routes[0].handlers[1].c_str(), "inbox");
	ck_assert_int_eq(c.routes[0].line, 23);
	ck_assert_str_eq(c.routes[1].match.c_str(), "*@example.org");
	ck_assert_uint_eq(c.routes[1].handlers.size(), 1);
	ck_assert_str_eq(c.routes[1].handlers[0].c_str(), "inbox");
	ck_assert_int_eq(c.routes[1].line, 25);
	ck_assert_str_eq(c.routes[2].match.c_str(), "root@host.lan");
	ck_assert_uint_eq(c.routes[2].handlers.size(), 1);
	ck_assert_str_eq(c.routes[3].match.c_str(), "*");
	ck_assert_str_eq(c.routes[3].handlers[0].c_str(), "audit");
}
END_TEST

START_TEST(listen_forms)
{
	Config c = parse_ok("listen: 127.0.0.1:2525\n");
	ck_assert_uint_eq(c.listen.size(), 1);
	ck_assert_str_eq(c.listen[0].host.c_str(), "127.0.0.1");
	ck_assert_uint_eq(c.listen[0].port, 2525);
	ck_assert_int_eq(c.listen[0].line, 1);

	c = parse_ok("listen: \"[::1]:65535\"\n");
	ck_assert_uint_eq(c.listen.size(), 1);
	ck_assert_str_eq(c.listen[0].host.c_str(), "::1");
	ck_assert_uint_eq(c.listen[0].port, 65535);

	c = parse_ok("listen: ['[::1]:1', 127.0.0.10:587]\n");
	ck_assert_uint_eq(c.listen.size(), 2);
	ck_assert_str_eq(c.listen[0].host.c_str(), "::1");
	ck_assert_uint_eq(c.listen[0].port, 1);
	ck_assert_str_eq(c.listen[1].host.c_str(), "127.0.0.10");
	ck_assert_uint_eq(c.listen[1].port, 587);

	// An empty list: no TCP listener at all.
	c = parse_ok("listen: []\n");
	ck_assert(c.listen.empty());
}
END_TEST

START_TEST(booleans)
{
	static const struct {
		const char* text;
		bool value;
	} cases[] = {
	    {"true", true}, {"True", true}, {"TRUE", true}, {"yes", true}, {"Yes", true},
	    {"on", true},   {"ON", true},   {"false", false}, {"False", false}, {"no", false},
	    {"NO", false},  {"off", false}, {"Off", false},
	};
	for (const auto& t : cases) {
		Config c = parse_ok(std::string("enable_smtputf8: ") + t.text + "\n");
		ck_assert_msg(c.enable_smtputf8 == t.value, "enable_smtputf8: %s", t.text);
	}
	// The spelling Laim used.
	ck_assert(!parse_ok("enable_SMTPUTF8: no\n").enable_smtputf8);
	ck_assert(parse_ok("enable_SMTPUTF8: yes\n").enable_smtputf8);
	Config both = parse_ok("alias_commands: yes\nalias_files: true\n");
	ck_assert(both.alias_commands && both.alias_files);
	ck_assert(!parse_ok("alias_commands: off\n").alias_commands);
}
END_TEST

START_TEST(integer_bounds_accepted)
{
	ck_assert_uint_eq(parse_ok("queue_full_wait: 0\n").queue_full_wait, 0);
	ck_assert_uint_eq(parse_ok("queue_full_wait: 300\n").queue_full_wait, 300);
	ck_assert_uint_eq(parse_ok("hop_count_limit: 1\n").hop_count_limit, 1);
	ck_assert_uint_eq(parse_ok("max_deferred: 1\n").max_deferred, 1);
	ck_assert_uint_eq(parse_ok("max_sessions: 1000000\n").max_sessions, 1000000);
	Config c = parse_ok("max_queue_size: 4294967295\ndata_size_limit: 18446744073709551615\n"
			    "greeting_delay: 0\ntimeout: 1\n");
	ck_assert_uint_eq(c.max_queue_size, 4294967295u);
	ck_assert(c.data_size_limit == UINT64_MAX);
	ck_assert_uint_eq(c.greeting_delay, 0);
	ck_assert_uint_eq(c.timeout, 1);
}
END_TEST

START_TEST(hostname_forms)
{
	ck_assert_string_eq(parse_ok("hostname: localhost\n").hostname, "localhost");
	ck_assert_string_eq(parse_ok("hostname: a-1.b2.example\n").hostname, "a-1.b2.example");
	ck_assert_string_eq(parse_ok("hostname: ''\n").hostname, "");
	std::string label63(63, 'a');
	ck_assert_string_eq(parse_ok("hostname: " + label63 + ".org\n").hostname, label63 + ".org");
	std::string name253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'd');
	ck_assert_string_eq(parse_ok("hostname: " + name253 + "\n").hostname, name253);
}
END_TEST

START_TEST(route_match_forms)
{
	static const char* ok[] = {"*", "*@example.org", "postmaster@*", "root@host.lan",
				   "a.b+tag@sub.example.org", "*@bücher.example"};
	for (const char* m : ok) {
		Config c = parse_ok(std::string("handlers: {x: {type: discard}}\n"
						"routes: [{match: '") + m + "', handlers: x}]\n");
		ck_assert_str_eq(c.routes[0].match.c_str(), m);
	}
}
END_TEST

START_TEST(routes_absent_with_handlers)
{
	Config c = parse_ok("handlers:\n  x:\n    type: discard\n");
	ck_assert_uint_eq(c.handlers.size(), 1);
	ck_assert(c.routes.empty());
}
END_TEST

// ---------------------------------------------------------------- YAML tree

START_TEST(yaml_tree_lines)
{
	YamlNode root = laim::yaml_parse("a: 1\n"
					 "b:\n"
					 "  - x\n"
					 "  - 'y'\n"
					 "c:\n"
					 "\n"
					 "  d: \"q\"\n"
					 "  e:\n"
					 "f: ~\n",
					 "y.yml");
	ck_assert(root.kind == YamlNode::Kind::Mapping);
	ck_assert_int_eq(root.line, 1);
	ck_assert_uint_eq(root.entries.size(), 4);
	ck_assert_uint_eq(root.key_lines.size(), 4);
	ck_assert_int_eq(root.key_lines[0], 1);
	ck_assert_int_eq(root.key_lines[1], 2);
	ck_assert_int_eq(root.key_lines[2], 5);
	ck_assert_int_eq(root.key_lines[3], 9);

	const YamlNode* a = root.find("a");
	ck_assert_ptr_nonnull(a);
	ck_assert(a->kind == YamlNode::Kind::Scalar);
	ck_assert_str_eq(a->value.c_str(), "1");
	ck_assert(!a->quoted);
	ck_assert_int_eq(a->line, 1);

	const YamlNode* b = root.find("b");
	ck_assert(b->kind == YamlNode::Kind::Sequence);
	ck_assert_int_eq(b->line, 3);
	ck_assert_uint_eq(b->items.size(), 2);
	ck_assert_int_eq(b->items[0].line, 3);
	ck_assert_int_eq(b->items[1].line, 4);
	ck_assert(!b->items[0].quoted);
	ck_assert(b->items[1].quoted);
	ck_assert_str_eq(b->items[1].value.c_str(), "y");

	const YamlNode* c = root.find("c");
	ck_assert(c->kind == YamlNode::Kind::Mapping);
	ck_assert_int_eq(c->line, 7);
	ck_assert_int_eq(c->key_lines[0], 7);
	ck_assert_int_eq(c->key_lines[1], 8);
	ck_assert(c->find("d")->quoted);
	ck_assert(c->find("e")->kind == YamlNode::Kind::Null);
	ck_assert_int_eq(c->find("e")->line, 8);
	ck_assert(root.find("f")->kind == YamlNode::Kind::Null);

	ck_assert_ptr_null(root.find("nosuch"));
	ck_assert_ptr_null(a->find("a"));  // find on a scalar
	ck_assert_ptr_null(b->find("x"));  // find on a sequence

	// Quoted null words and empty quotes stay strings.
	YamlNode q = laim::yaml_parse("a: 'null'\nb: \"\"\nc: null\n", "y.yml");
	ck_assert(q.find("a")->kind == YamlNode::Kind::Scalar);
	ck_assert(q.find("b")->kind == YamlNode::Kind::Scalar);
	ck_assert(q.find("b")->quoted);
	ck_assert(q.find("c")->kind == YamlNode::Kind::Null);

	// An empty stream is a Null root.
	ck_assert(laim::yaml_parse("", "y.yml").kind == YamlNode::Kind::Null);
	// Embedded NUL through an escape is kept, not truncated.
	YamlNode n = laim::yaml_parse("a: \"x\\0y\"\n", "y.yml");
	ck_assert_uint_eq(n.find("a")->value.size(), 3);
}
END_TEST

// ---------------------------------------------------------------- YAML errors

START_TEST(error_syntax)
{
	check_error("a: 1\nb: [1, 2\nc: 3\n", "t.yml:3: syntax error: ", "did not find expected ',' or ']'");
	check_error("a: 1\nb: 2\n  c: 3\n", "t.yml:3: syntax error: ", "mapping values are not allowed");
	check_error("a: 1\nb:\n\t- x\n", "t.yml:3: syntax error: ",
		    "cannot start any token (while scanning for the next token started at line 3) "
		    "(a tab: YAML indents with spaces only)");
	// libyaml counts characters: UTF-8 before the error moves no hint.
	check_error("# caf\xc3\xa9 \xc3\xa9\xc3\xa9\xc3\xa9\na: 1\nb:\n\t- x\n", "t.yml:4: syntax error: ",
		    "(a tab: YAML indents with spaces only)");
	check_error("\xEF\xBB\xBF# \xc3\xa9\na: 1\nb:\n\t- x\n", "t.yml:4: syntax error: ",
		    "(a tab: YAML indents with spaces only)");
	for (const char* text : {"# \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\na: \"x\ty\" @\n", "a: \"\xf0\x9f\x98\x80\t\" @\n"}) {
		std::string msg = parse_error(text);
		ck_assert_msg(msg.find("syntax error") != std::string::npos && msg.find("a tab") == std::string::npos,
			      "config:\n%s\ngot: %s", text, msg.c_str());
	}
	check_error("a: 1\nb: \"open\n", "t.yml:3: syntax error: ", "quoted scalar");
	check_error("a: 1\n- b\n", "t.yml:2: syntax error: ", "did not find expected key");
	// Invalid UTF-8: libyaml's reader gives only an offset; the line is counted.
	check_error("a: 1\nb: 2\nident: \xff\xfe\n", "t.yml:3: syntax error: ", "UTF-8");
	// A raw control character.
	check_error("a: 1\nident: a\x01z\n", "t.yml:2: syntax error: ", "control characters");
}
END_TEST

START_TEST(error_duplicate_key)
{
	check_error("user: a\ntimeout: 5\nuser: b\n", "t.yml:3: user: ", "duplicate key");
	check_error("handlers:\n  inbox:\n    type: maildir\n    path: /a\n    path: /b\n",
		    "t.yml:5: handlers.inbox.path: ", "duplicate key");
	check_error("handlers:\n  a: {type: log}\n  a: {type: log}\n", "t.yml:3: handlers.a: ", "duplicate key");
	check_error("routes:\n  - match: '*'\n    match: x@y\n", "t.yml:3: routes[0].match: ", "duplicate key");
}
END_TEST

START_TEST(error_alias_anchor_tag)
{
	check_error("user: &u laim\nident: *u\n", "t.yml:1: user: ", "anchors (&u) are not allowed");
	check_error("handlers:\n  a: &base\n    type: log\n", "t.yml:2: handlers.a: ", "anchors");
	check_error("listen: &l [127.0.0.1:25]\n", "t.yml:1: listen: ", "anchors");
	check_error("&k user: laim\n", "t.yml:1: ", "anchors (&k)");
	// An alias whose anchor libyaml accepted: refused at the alias.
	std::string msg = parse_error("routes:\n  - handlers: *x\n");
	ck_assert_msg(starts_with(msg, "t.yml:2: "), "%s", msg.c_str());
	check_error("user: !!str laim\n", "t.yml:1: user: ", "tags (tag:yaml.org,2002:str) are not allowed");
	check_error("listen: !!seq []\n", "t.yml:1: listen: ", "tags");
	check_error("handlers: !!map {}\n", "t.yml:1: handlers: ", "tags");
	check_error("!!str user: laim\n", "t.yml:1: ", "tags");
	check_error("a: 1\n*b : 2\n", "t.yml:2: ", "aliases");
}
END_TEST

START_TEST(error_non_scalar_key)
{
	check_error("? [a, b]\n: 1\n", "t.yml:1: ", "mapping keys must be scalars");
	check_error("handlers:\n  ? {a: 1}\n  : x\n", "t.yml:2: handlers: ", "mapping keys must be scalars");
	check_error("'': 1\n", "t.yml:1: ", "empty mapping key");
	check_error("a: 1\n\"x\\0y\": 2\n", "t.yml:2: ", "NUL");
}
END_TEST

START_TEST(error_multiple_documents)
{
	check_error("user: a\n---\nuser: b\n", "t.yml:2: ", "more than one YAML document");
	check_error("---\nuser: a\n...\n---\n", "t.yml:4: ", "more than one YAML document");
}
END_TEST

START_TEST(error_too_deep)
{
	std::string deep(200, '[');
	deep += std::string(200, ']');
	check_error("handlers:\n  a:\n    type: x\n    o: " + deep + "\n", "t.yml:4: handlers.a.o", "nested more than 64");
	// Just within the limit is fine for the YAML layer.
	std::string ok = std::string(63, '[') + std::string(63, ']');
	YamlNode n = laim::yaml_parse(ok, "y.yml");
	ck_assert(n.kind == YamlNode::Kind::Sequence);
}
END_TEST

// ---------------------------------------------------------------- config errors

START_TEST(error_top_level_not_mapping)
{
	check_error("just a string\n", "t.yml:1: ", "expected a mapping at the top level, got \"just a string\"");
	check_error("\n- user: laim\n", "t.yml:2: ", "expected a mapping at the top level, got a sequence");
	check_error("'quoted'\n", "t.yml:1: ", "got a quoted string \"quoted\"");
}
END_TEST

START_TEST(error_unknown_key)
{
	check_error("user: laim\nmax_queue: 5\n", "t.yml:2: max_queue: ", "unknown key");
	check_error("User: laim\n", "t.yml:1: User: ", "unknown key");
	check_error("routes:\n  - match: '*'\n    handlers: []\n    priority: 1\n",
		    "t.yml:4: routes[0].priority: ", "unknown key");
}
END_TEST

// Each scalar-valued core key, given a mapping, a sequence or nothing.
START_TEST(error_wrong_types)
{
	static const struct {
		const char* key;
		const char* expected;
	} keys[] = {
	    {"socket", "expected a string"},
	    {"user", "expected a string"},
	    {"smtp_user", "expected a string"},
	    {"hostname", "expected a string"},
	    {"ident", "expected a string"},
	    {"spool", "expected a string"},
	    {"aliases", "expected a string"},
	    {"mail_dir", "expected a string"},
	    {"max_queue_size", "expected a positive integer"},
	    {"max_deferred", "expected a positive integer"},
	    {"data_size_limit", "expected a non-negative integer"},
	    {"hop_count_limit", "expected a positive integer"},
	    {"timeout", "expected a positive integer"},
	    {"enable_smtputf8", "expected a boolean (true/false, yes/no, on/off)"},
	    {"enable_SMTPUTF8", "expected a boolean (true/false, yes/no, on/off)"},
	    {"alias_commands", "expected a boolean (true/false, yes/no, on/off)"},
	    {"alias_files", "expected a boolean (true/false, yes/no, on/off)"},
	    {"max_sessions", "expected an integer from 1 to 1000000"},
	    {"greeting_delay", "expected an integer from 0 to 10000"},
	    {"queue_full_wait", "expected an integer from 0 to 300"},
	    {"retry_initial", "expected a positive integer"},
	    {"retry_max", "expected a positive integer"},
	    {"max_queue_age", "expected a positive integer"},
	    {"delivery_timeout", "expected an integer from 1 to 86400"},
	    {"listen", "expected a HOST:PORT string, a mapping with addr:, or a sequence of them"},
	    {"handlers", "expected a mapping of handler instances"},
	    {"routes", "expected a sequence of routes"},
	};
	for (const auto& k : keys) {
		std::string prefix = std::string("t.yml:2: ") + k.key + ": ";
		std::string key = k.key;
		if (key != "handlers" && key != "listen")
			check_error("# " + key + "\n" + key + ":\n  a: 1\n", "t.yml:3: " + key + ": ",
				    std::string(k.expected) + ", got a mapping");
		if (key != "listen" && key != "routes")
			check_error("# " + key + "\n" + key + ": [1]\n", prefix,
				    std::string(k.expected) + ", got a sequence");
		check_error("# " + key + "\n" + key + ":\n", prefix,
			    std::string(k.expected) + ", got an empty value");
	}
	// Quoted numbers and booleans are strings, not the type asked for.
	check_error("timeout: '30'\n", "t.yml:1: timeout: ", "expected a positive integer, got a quoted string");
	check_error("enable_smtputf8: \"true\"\n", "t.yml:1: enable_smtputf8: ",
		    "expected a boolean (true/false, yes/no, on/off), got a quoted string");
	// A list element of the wrong type.
	check_error("listen:\n  - 127.0.0.1:25\n  - {a: 1}\n", "t.yml:3: listen[1]: ",
		    "missing required key \"addr\"");
	check_error("listen:\n  a: 1\n", "t.yml:2: listen: ", "missing required key \"addr\"");
}
END_TEST

START_TEST(error_bad_integers)
{
	static const struct {
		const char* text;
		const char* prefix;
		const char* what;
	} cases[] = {
	    {"max_queue_size: 0\n", "t.yml:1: max_queue_size: ", "0 is out of range: expected a positive integer"},
	    {"max_deferred: 0\n", "t.yml:1: max_deferred: ", "0 is out of range: expected a positive integer"},
	    {"max_queue_size: -1\n", "t.yml:1: max_queue_size: ", "expected a positive integer, got \"-1\""},
	    {"max_queue_size: +5\n", "t.yml:1: max_queue_size: ", "got \"+5\""},
	    {"max_queue_size: 1.5\n", "t.yml:1: max_queue_size: ", "got \"1.5\""},
	    {"max_queue_size: 0x10\n", "t.yml:1: max_queue_size: ", "got \"0x10\""},
	    {"max_queue_size: 010\n", "t.yml:1: max_queue_size: ", "got \"010\""},
	    {"max_queue_size: 1_000\n", "t.yml:1: max_queue_size: ", "got \"1_000\""},
	    {"max_queue_size: ' 5'\n", "t.yml:1: max_queue_size: ", "got a quoted string"},
	    {"max_queue_size: 5 k\n", "t.yml:1: max_queue_size: ", "got \"5 k\""},
	    {"max_queue_size: 4294967296\n", "t.yml:1: max_queue_size: ", "4294967296 is out of range"},
	    {"data_size_limit: 18446744073709551616\n", "t.yml:1: data_size_limit: ",
	     "18446744073709551616 is out of range: expected a non-negative integer"},
	    {"data_size_limit: 99999999999999999999999\n", "t.yml:1: data_size_limit: ", "is out of range"},
	    {"data_size_limit: -0\n", "t.yml:1: data_size_limit: ", "got \"-0\""},
	    {"timeout: 0\n", "t.yml:1: timeout: ", "0 is out of range"},
	    {"hop_count_limit: 0\n", "t.yml:1: hop_count_limit: ", "0 is out of range"},
	    {"max_sessions: 0\n", "t.yml:1: max_sessions: ", "0 is out of range"},
	    // With the local socket's reserve added, once wrapped to 7 sessions.
	    {"max_sessions: 4294967295\n", "t.yml:1: max_sessions: ",
	     "4294967295 is out of range: expected an integer from 1 to 1000000"},
	    {"greeting_delay: 10001\n", "t.yml:1: greeting_delay: ",
	     "10001 is out of range: expected an integer from 0 to 10000"},
	    {"queue_full_wait: 301\n", "t.yml:1: queue_full_wait: ",
	     "301 is out of range: expected an integer from 0 to 300"},
	    {"retry_initial: 0\n", "t.yml:1: retry_initial: ", "0 is out of range"},
	    {"retry_max: 0\n", "t.yml:1: retry_max: ", "0 is out of range"},
	    {"max_queue_age: 0\n", "t.yml:1: max_queue_age: ", "0 is out of range"},
	    {"delivery_timeout: 0\n", "t.yml:1: delivery_timeout: ", "0 is out of range"},
	    {"delivery_timeout: ten\n", "t.yml:1: delivery_timeout: ", "got \"ten\""},
	    // laim-mda's SECONDS, four fifths of it, once wrapped to 1 s.
	    {"delivery_timeout: 86401\n", "t.yml:1: delivery_timeout: ",
	     "86401 is out of range: expected an integer from 1 to 86400"},
	    {"delivery_timeout: 4294967295\n", "t.yml:1: delivery_timeout: ", "is out of range"},
	};
	for (const auto& t : cases)
		check_error(t.text, t.prefix, t.what);
}
END_TEST

START_TEST(error_retry_order)
{
	check_error("retry_max: 30\nretry_initial: 60\n", "t.yml:1: retry_max: ",
		    "retry_max (30) must not be less than retry_initial (60)");
	// retry_max left at its default of 3600: the error is at retry_initial.
	check_error("timeout: 5\nretry_initial: 7200\n", "t.yml:2: retry_initial: ",
		    "retry_max (3600) must not be less than retry_initial (7200)");
}
END_TEST

// The smtp process and the handler process never share a user: the
// error names the key that made them equal.
START_TEST(error_same_users)
{
	const char* what = "the smtp process and the handler process must run as different users (both are \"laim\")";
	check_error("timeout: 5\nsmtp_user: laim\n", "t.yml:2: smtp_user: ", what);
	check_error("smtp_user: laim\nuser: laim\n", "t.yml:1: smtp_user: ", what);
	check_error("timeout: 5\nuser: laim-smtp\n", "t.yml:2: user: ",
		    "must run as different users (both are \"laim-smtp\")");
	Config c = parse_ok("user: mail\nsmtp_user: nobody\n");
	ck_assert_str_eq(c.user.c_str(), "mail");
	ck_assert_str_eq(c.smtp_user.c_str(), "nobody");
	laim::config_check_users(c);
}
END_TEST

// What laimd -n says of users that laimd could not start with: the file,
// the key's line (none for a default) and the key.
START_TEST(error_users_unusable)
{
	auto users_error = [](const std::string& text) -> std::string {
		Config c = parse_ok(text);
		try {
			laim::config_check_users(c);
		} catch (const ConfigError& e) {
			return e.what();
		}
		return "";
	};
	auto expect_error = [](const std::string& got, const std::string& want) {
		ck_assert_msg(got.starts_with(want), "got \"%s\", want \"%s...\"", got.c_str(), want.c_str());
	};
	expect_error(users_error("timeout: 5\nuser: root\nsmtp_user: nobody\n"),
		     "t.yml:2: user: user \"root\" has uid 0: laim's children must run unprivileged");
	expect_error(users_error("user: mail\nsmtp_user: root\n"),
		     "t.yml:2: smtp_user: user \"root\" has uid 0");
	expect_error(users_error("user: nosuchuser-laim\nsmtp_user: nobody\n"),
		     "t.yml:1: user: user \"nosuchuser-laim\" does not exist (create it: adduser --system --group "
		     "nosuchuser-laim)");
}
END_TEST

// mail_dir left at its default names the mbox handler's line, there being
// no line of its own; with no mbox handler it is not looked at.
START_TEST(error_mail_dir_default)
{
	Config c = parse_ok("timeout: 5\nhandlers:\n  local:\n    type: mbox\n");
	c.mail_dir = "/nonexistent-laim-mail";  // as if the default were missing
	std::string got;
	try {
		laim::config_check_mail_dir(c);
	} catch (const ConfigError& e) {
		got = e.what();
	}
	ck_assert_str_eq(got.c_str(), "t.yml:3: handlers.local: mail_dir /nonexistent-laim-mail (the default): No "
				      "such file or directory: the mbox handler delivers there, and laim-mda wants a "
				      "directory owned by root");
	c = parse_ok("handlers:\n  inbox:\n    type: log\n");
	c.mail_dir = "/nonexistent-laim-mail";
	laim::config_check_mail_dir(c);
}
END_TEST

START_TEST(error_bad_boolean)
{
	check_error("enable_smtputf8: maybe\n", "t.yml:1: enable_smtputf8: ",
		    "expected a boolean (true/false, yes/no, on/off), got \"maybe\"");
	check_error("enable_SMTPUTF8: 1\n", "t.yml:1: enable_SMTPUTF8: ", "got \"1\"");
	check_error("enable_smtputf8: yes\nenable_SMTPUTF8: no\n", "t.yml:2: enable_SMTPUTF8: ", "given twice");
}
END_TEST

// A path written with a trailing '/', "//" or "." is taken in its one
// spelling: the spool's parent is what comes before its last '/'.
START_TEST(path_spelling)
{
	Config c = parse_ok("spool: /var/spool//laim/./\nsocket: /run/laim/s.sock/\nmail_dir: /\n");
	ck_assert_str_eq(c.spool.c_str(), "/var/spool/laim");
	ck_assert_str_eq(c.socket.c_str(), "/run/laim/s.sock");
	ck_assert_str_eq(c.mail_dir.c_str(), "/");
}
END_TEST

START_TEST(error_bad_strings)
{
	static const struct {
		const char* text;
		const char* prefix;
		const char* what;
	} cases[] = {
	    {"socket: run/laim.sock\n", "t.yml:1: socket: ", "expected an absolute path, got \"run/laim.sock\""},
	    {"socket: ''\n", "t.yml:1: socket: ", "expected an absolute path"},
	    {"spool: var/spool\n", "t.yml:1: spool: ", "expected an absolute path"},
	    {"aliases: aliases\n", "t.yml:1: aliases: ", "expected an absolute path"},
	    {"mail_dir: var/mail\n", "t.yml:1: mail_dir: ", "expected an absolute path"},
	    // One spelling per path: the spool's parent is what comes before its last '/'.
	    {"spool: /var/spool/../laim\n", "t.yml:1: spool: ", "\"/var/spool/../laim\": write the path without '..'"},
	    {"spool: /\n", "t.yml:1: spool: ", "must be a directory below /"},
	    {"aliases: \"/etc/al\\0iases\"\n", "t.yml:1: aliases: ", "contains a NUL character"},
	    {"user: ''\n", "t.yml:1: user: ", "expected a user name, got \"\""},
	    {"user: \"la\\tim\"\n", "t.yml:1: user: ", "expected a user name"},
	    {"smtp_user: ''\n", "t.yml:1: smtp_user: ", "expected a user name, got \"\""},
	    {"smtp_user: \"laim\\nroot\"\n", "t.yml:1: smtp_user: ", "expected a user name"},
	    {"hostname: -bad.example\n", "t.yml:1: hostname: ", "\"-bad.example\" is not a valid domain name"},
	    {"hostname: bad-.example\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"hostname: a..b\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"hostname: host.\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"hostname: under_score.example\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"hostname: 127.0.0.1\n", "t.yml:1: hostname: ",
	     "\"127.0.0.1\" is an address, not a name: give this host's name (as in /etc/mailname), or leave "
	     "hostname: out"},
	    {"hostname: 10.0.0.256\n", "t.yml:1: hostname: ", "is an address, not a name"},
	    {"hostname: 'mx example'\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"hostname: bücher.example\n", "t.yml:1: hostname: ", "is not a valid domain name"},
	    {"ident: \"laim\\r\\n250 injected\"\n", "t.yml:1: ident: ", "must be printable ASCII"},
	    {"ident: \"a\\x7fb\"\n", "t.yml:1: ident: ", "must be printable ASCII (no control characters, no UTF-8)"},
	    {"ident: \"a\\u0085b\"\n", "t.yml:1: ident: ", "must be printable ASCII"},
	    {"ident: \"laim \\u202eevil\"\n", "t.yml:1: ident: ", "must be printable ASCII"},
	    {"ident: caf\u00e9\n", "t.yml:1: ident: ", "must be printable ASCII"},
	    {"ident: \"a\\0b\"\n", "t.yml:1: ident: ", "contains a NUL character"},
	};
	for (const auto& t : cases)
		check_error(t.text, t.prefix, t.what);

	std::string long_label(64, 'a');
	check_error("hostname: " + long_label + ".org\n", "t.yml:1: hostname: ", "is not a valid domain name");
	std::string long_name;
	for (int i = 0; i < 64; i++)
		long_name += "abc.";
	long_name += "org";  // 259 octets
	check_error("hostname: " + long_name + "\n", "t.yml:1: hostname: ", "is not a valid domain name");
	std::string name254 = long_label.substr(1) + "." + long_label.substr(1) + "." + long_label.substr(1) + "." +
			      std::string(62, 'd');
	check_error("hostname: " + name254 + "\n", "t.yml:1: hostname: ", "is not a valid domain name");
	// "220 " + a 253-octet host + " ESMTP " + ident + CRLF: 512 octets at most.
	check_error("ident: " + std::string(247, 'x') + "\n", "t.yml:1: ident: ",
		    "longer than 246 characters: the greeting line must stay within 512 octets");
	ck_assert_string_eq(parse_ok("ident: " + std::string(246, 'x') + "\n").ident, std::string(246, 'x'));
	std::string long_socket = "/" + std::string(107, 's');
	check_error("socket: " + long_socket + "\n", "t.yml:1: socket: ", "too long for a unix socket path (at most 107 bytes)");
	// 107 bytes fits sun_path with its NUL.
	ck_assert_string_eq(parse_ok("socket: /" + std::string(106, 's') + "\n").socket, "/" + std::string(106, 's'));
	// One path for both sockets: sendmail would reach the control socket.
	check_error("control_socket: /run/laim/submit.sock\n", "t.yml:1: control_socket: ",
		    "the same path as socket (/run/laim/submit.sock): each needs its own");
	check_error("socket: /run/laim/control.sock\n", "t.yml:1: socket: ",
		    "the same path as control_socket (/run/laim/control.sock): each needs its own");
	check_error("socket: /run/s\ncontrol_socket: /run/s\n", "t.yml:2: control_socket: ", "the same path as socket");
}
END_TEST

START_TEST(error_bad_listen)
{
	static const struct {
		const char* value;
		const char* what;
	} cases[] = {
	    {"localhost:25", "the host must be a numeric IPv4 address"},
	    {"mail.example.org:25", "laim does no DNS"},
	    {"127.0.0.1", "expected HOST:PORT"},
	    {"127.0.0.1:", "the port must be a number from 1 to 65535"},
	    {"127.0.0.1:0", "the port must be a number from 1 to 65535"},
	    {"127.0.0.1:65536", "the port must be a number from 1 to 65535"},
	    {"127.0.0.1:99999999999999999999999", "the port must be a number"},
	    {"127.0.0.1:smtp", "the port must be a number"},
	    {"127.0.0.1:025", "the port must be a number"},
	    {"127.0.0.1:-25", "the port must be a number"},
	    {"127.1:25", "numeric IPv4"},
	    {"1.2.3.256:25", "numeric IPv4"},
	    {":25", "numeric IPv4"},
	    {"::1:25", "numeric IPv4"},
	    {"[::1]", "expected HOST:PORT"},
	    {"[::1]25", "expected HOST:PORT"},
	    {"[::1:25", "expected HOST:PORT"},
	    {"[::1]:", "the port must be a number"},
	    {"[127.0.0.1]:25", "not a numeric IPv6 address"},
	    {"[fe80::1%eth0]:25", "not a numeric IPv6 address"},
	    {"[localhost]:25", "not a numeric IPv6 address"},
	    {"", "expected HOST:PORT"},
	};
	for (const auto& t : cases) {
		check_error(std::string("listen: '") + t.value + "'\n", "t.yml:1: listen: ", t.what);
		check_error(std::string("listen:\n  - 127.0.0.1:25\n  - '") + t.value + "'\n",
			    "t.yml:3: listen[1]: ", t.what);
	}
	check_error("listen:\n  - 127.0.0.1:25\n  - '[::1]:25'\n  - 127.0.0.1:25\n", "t.yml:4: listen[2]: ",
		    "duplicate listen address \"127.0.0.1:25\" (the same as listen[0])");
	// The same address however written: bind() would refuse the second.
	check_error("listen:\n  - '[::1]:25'\n  - '[0:0::1]:25'\n", "t.yml:3: listen[1]: ",
		    "duplicate listen address \"[0:0::1]:25\" (the same as listen[0])");
	check_error("listen:\n  - '[::1]:25'\n  - '[0000:0000:0000:0000:0000:0000:0000:0001]:25'\n",
		    "t.yml:3: listen[1]: ", "duplicate listen address");
	parse_ok("listen:\n  - '[::1]:25'\n  - '[::1]:26'\n  - 127.0.0.1:25\n");
	check_error("listen: [[127.0.0.1:25]]\n", "t.yml:1: listen[0]: ", "expected a HOST:PORT string, got a sequence");
	check_error("listen:\n  -\n", "t.yml:2: listen[0]: ", "got an empty value");
}
END_TEST

START_TEST(listen_mappings)
{
	Config c = parse_ok("listen:\n"
			    "  - 127.0.0.1:25\n"
			    "  - addr: \"0.0.0.0:587\"\n"
			    "    tls: starttls\n"
			    "    cert: /etc/laim/tls/fullchain.pem\n"
			    "    key: /etc/laim/tls/privkey.pem\n"
			    "    auth: required\n"
			    "    users: /etc/laim/submit.passwd\n"
			    "    senders: /etc/laim/senders\n"
			    "  - {addr: '[::1]:465', tls: implicit, cert: /c.pem, key: /k.pem}\n"
			    "  - {addr: 127.0.0.2:26, tls: none, auth: none}\n");
	ck_assert_uint_eq(c.listen.size(), 4);
	const laim::ListenAddress& s = c.listen[1];
	ck_assert_string_eq(s.host, "0.0.0.0");
	ck_assert_uint_eq(s.port, 587);
	ck_assert_int_eq(s.line, 3);
	ck_assert_string_eq(s.name, "listen[1]");
	ck_assert(s.tls == laim::ListenAddress::Tls::Starttls);
	ck_assert_string_eq(s.cert.path, "/etc/laim/tls/fullchain.pem");
	ck_assert_int_eq(s.cert.line, 5);
	ck_assert_string_eq(s.key.path, "/etc/laim/tls/privkey.pem");
	ck_assert_int_eq(s.key.line, 6);
	ck_assert(s.auth_required);
	ck_assert_string_eq(s.users.path, "/etc/laim/submit.passwd");
	ck_assert_int_eq(s.users.line, 8);
	ck_assert_string_eq(s.senders.path, "/etc/laim/senders");
	ck_assert(!s.loopback());
	const laim::ListenAddress& i = c.listen[2];
	ck_assert_string_eq(i.host, "::1");
	ck_assert(i.tls == laim::ListenAddress::Tls::Implicit);
	ck_assert(!i.auth_required);
	ck_assert(i.users.path.empty());
	ck_assert(i.loopback());
	ck_assert(c.listen[3].tls == laim::ListenAddress::Tls::None);
	ck_assert(c.listen[3].loopback());
	ck_assert(c.listen[0].tls == laim::ListenAddress::Tls::None);
	ck_assert(!c.listen[0].auth_required);

	// One mapping on its own.
	c = parse_ok("listen: {addr: 127.0.0.1:2525}\n");
	ck_assert_uint_eq(c.listen.size(), 1);
	ck_assert_string_eq(c.listen[0].name, "listen");
}
END_TEST

// Every rule of a listen: mapping, with the line and key it names.
START_TEST(error_bad_listen_mapping)
{
	const std::string tls = "tls: starttls, cert: /c, key: /k";
	const std::string submit = tls + ", auth: required, users: /u";
	static const struct {
		std::string entry;
		const char* prefix;
		const char* what;
	} cases[] = {
	    {"{tls: starttls}", "t.yml:2: listen[0]: ", "missing required key \"addr\""},
	    {"{addr: 127.0.0.1:25, port: 25}", "t.yml:2: listen[0].port: ", "unknown key"},
	    {"{addr: localhost:25}", "t.yml:2: listen[0].addr: ", "laim does no DNS"},
	    {"{addr: 127.0.0.1:25, tls: yes}", "t.yml:2: listen[0].tls: ", "expected one of starttls, implicit, none"},
	    {"{addr: 127.0.0.1:25, tls: STARTTLS}", "t.yml:2: listen[0].tls: ", "expected one of"},
	    {"{addr: 127.0.0.1:25, auth: optional}", "t.yml:2: listen[0].auth: ", "expected one of required, none"},
	    {"{addr: 127.0.0.1:25, tls: starttls, cert: c, key: /k}", "t.yml:2: listen[0].cert: ",
	     "expected an absolute path"},
	    {"{addr: 127.0.0.1:25, tls: starttls}", "t.yml:2: listen[0]: ", "tls needs cert"},
	    {"{addr: 127.0.0.1:25, tls: implicit, cert: /c}", "t.yml:2: listen[0]: ", "tls needs key"},
	    {"{addr: 127.0.0.1:25, tls: implicit, key: /k}", "t.yml:2: listen[0]: ", "tls needs cert"},
	    {"{addr: 127.0.0.1:25, cert: /c, key: /k}", "t.yml:2: listen[0].cert: ", "needs tls: starttls or tls: implicit"},
	    {"{addr: 127.0.0.1:25, tls: none, key: /k}", "t.yml:2: listen[0].key: ", "needs tls"},
	    {"{addr: 127.0.0.1:25, " + tls + ", auth: required}", "t.yml:2: listen[0]: ", "auth: required needs users"},
	    {"{addr: 127.0.0.1:25, auth: required, users: /u}", "t.yml:2: listen[0]: ",
	     "auth: required needs tls: starttls or tls: implicit (AUTH is only offered under TLS)"},
	    {"{addr: 127.0.0.1:25, " + tls + ", users: /u}", "t.yml:2: listen[0].users: ", "needs auth: required"},
	    {"{addr: 127.0.0.1:25, " + tls + ", senders: /s}", "t.yml:2: listen[0].senders: ", "needs auth: required"},
	    {"0.0.0.0:25", "t.yml:2: listen[0]: ", "\"0.0.0.0\" is not a loopback address: a listener for other hosts needs"},
	    {"'[::]:25'", "t.yml:2: listen[0]: ", "is not a loopback address"},
	    {"{addr: 192.0.2.1:587}", "t.yml:2: listen[0]: ", "is not a loopback address"},
	    {"{addr: 192.0.2.1:587, " + tls + "}", "t.yml:2: listen[0]: ", "and auth: required"},
	    {"{addr: '[::ffff:127.0.0.1]:25'}", "t.yml:2: listen[0]: ", "is not a loopback address"},
	};
	for (const auto& t : cases)
		check_error("listen:\n  - " + t.entry + "\n", t.prefix, t.what);
	parse_ok("listen:\n  - {addr: 192.0.2.1:587, " + submit + "}\n");
	parse_ok("listen:\n  - {addr: 127.255.0.1:25}\n");
	check_error("listen:\n  - 127.0.0.1:25\n  - {addr: 127.0.0.1:25, " + tls + "}\n", "t.yml:3: listen[1]: ",
		    "duplicate listen address \"127.0.0.1:25\"");
}
END_TEST

START_TEST(error_bad_handlers)
{
	check_error("handlers:\n  inbox:\n    path: /tmp/x\n", "t.yml:2: handlers.inbox: ",
		    "missing required key \"type\"");
	check_error("handlers:\n  inbox: {}\n", "t.yml:2: handlers.inbox: ", "missing required key \"type\"");
	check_error("handlers:\n  inbox: maildir\n", "t.yml:2: handlers.inbox: ",
		    "expected a mapping with a \"type\" key, got \"maildir\"");
	check_error("handlers:\n  inbox:\n", "t.yml:2: handlers.inbox: ", "got an empty value");
	check_error("handlers:\n  inbox:\n    - type: maildir\n", "t.yml:3: handlers.inbox: ", "got a sequence");
	check_error("handlers:\n  inbox:\n    type: [maildir]\n", "t.yml:3: handlers.inbox.type: ",
		    "expected a string, got a sequence");
	check_error("handlers:\n  inbox:\n    type:\n", "t.yml:3: handlers.inbox.type: ",
		    "expected a string, got an empty value");
	check_error("handlers:\n  inbox:\n    type: mail dir\n", "t.yml:3: handlers.inbox.type: ",
		    "invalid handler type \"mail dir\"");
	check_error("handlers:\n  inbox:\n    type: ''\n", "t.yml:3: handlers.inbox.type: ", "invalid handler type");
	check_error("handlers:\n  in.box:\n    type: log\n", "t.yml:2: handlers.in.box: ", "invalid instance name");
	check_error("handlers:\n  'in box':\n    type: log\n", "t.yml:2: handlers.in box: ", "invalid instance name");
	check_error("handlers:\n  - inbox\n", "t.yml:2: handlers: ", "expected a mapping of handler instances, got a sequence");
	check_error("handlers: inbox\n", "t.yml:1: handlers: ", "got \"inbox\"");
}
END_TEST

static const char handlers_ab[] = "handlers:\n  a: {type: log}\n  b: {type: discard}\n";  // lines 1-3

START_TEST(error_bad_routes)
{
	static const struct {
		const char* routes;  // starting at line 4
		const char* prefix;
		const char* what;
	} cases[] = {
	    {"routes:\n  - match: '*'\n    handlers: [a, nosuch]\n", "t.yml:6: routes[0].handlers[1]: ",
	     "unknown handler instance \"nosuch\""},
	    {"routes:\n  - match: '*'\n    handlers: nosuch\n", "t.yml:6: routes[0].handlers: ",
	     "unknown handler instance \"nosuch\""},
	    {"routes:\n  - match: '*'\n    handlers:\n      - b\n      - A\n", "t.yml:8: routes[0].handlers[1]: ",
	     "unknown handler instance \"A\""},
	    {"routes:\n  - match: '*'\n    handlers: [a, b, a]\n", "t.yml:6: routes[0].handlers[2]: ",
	     "handler instance \"a\" named twice"},
	    {"routes:\n  - match: '*'\n    handlers: []\n", "t.yml:6: routes[0].handlers: ", "names no handler instance"},
	    {"routes:\n  - match: '*'\n    handlers:\n", "t.yml:6: routes[0].handlers: ",
	     "expected a handler instance name or a sequence of them, got an empty value"},
	    {"routes:\n  - match: '*'\n    handlers: {a: 1}\n", "t.yml:6: routes[0].handlers: ", "got a mapping"},
	    {"routes:\n  - match: '*'\n    handlers: [[a]]\n", "t.yml:6: routes[0].handlers[0]: ",
	     "expected a string, got a sequence"},
	    {"routes:\n  - match: '*'\n    handlers: a\n  - handlers: [b]\n", "t.yml:7: routes[1]: ",
	     "missing required key \"match\""},
	    {"routes:\n  - match: '*'\n", "t.yml:5: routes[0]: ", "missing required key \"handlers\""},
	    {"routes:\n  - match: '*'\n    handler: a\n", "t.yml:6: routes[0].handler: ", "unknown key"},
	    {"routes:\n  - '*'\n", "t.yml:5: routes[0]: ",
	     "expected a mapping with \"match\" and \"handlers\", got a quoted string"},
	    {"routes:\n  - [a]\n", "t.yml:5: routes[0]: ", "got a sequence"},
	    {"routes:\n  match: '*'\n", "t.yml:5: routes: ", "expected a sequence of routes, got a mapping"},
	    {"routes:\n  - match: [x]\n    handlers: a\n", "t.yml:5: routes[0].match: ", "expected a string, got a sequence"},
	    {"routes:\n  - match:\n    handlers: a\n", "t.yml:5: routes[0].match: ", "got an empty value"},
	};
	for (const auto& t : cases)
		check_error(std::string(handlers_ab) + t.routes, t.prefix, t.what);

	static const char* bad_match[] = {
	    "nobody", "", "**", "*@*", "@example.org", "root@", "a b@example.org", "*@bad_domain",
	    "*@-x.org", "x@y@*", "root@host.", "*@", "@*", "x\\ty@*",
	    "*@a\\x80b.example",  // U+0080, a C1 control: not a letter of a UTF-8 domain
	};
	for (const char* m : bad_match)
		check_error(std::string(handlers_ab) + "routes:\n  - match: \"" + m + "\"\n    handlers: a\n",
			    "t.yml:5: routes[0].match: ", "expected \"*\", \"*@domain\", \"local@*\" or an address");
	std::string long_local(65, 'l');
	check_error(std::string(handlers_ab) + "routes:\n  - match: " + long_local + "@*\n    handlers: a\n",
		    "t.yml:5: routes[0].match: ", "or an address");
	// Routes may come before handlers in the file.
	Config c = parse_ok("routes:\n  - match: '*'\n    handlers: b\n" + std::string(handlers_ab));
	ck_assert_str_eq(c.routes[0].handlers[0].c_str(), "b");
	// No handlers at all: any named instance is unknown.
	check_error("routes:\n  - match: '*'\n    handlers: a\n", "t.yml:3: routes[0].handlers: ",
		    "unknown handler instance \"a\"");
}
END_TEST

// ---------------------------------------------------------------- rate_limits

START_TEST(rate_limits_forms)
{
	Config c = parse_ok(std::string(handlers_ab) +
			    "rate_limits:\n"                 // 4
			    "  - key: uid\n"                 // 5
			    "    count: 20\n"
			    "    window: 300\n"
			    "    per: recipient\n"
			    "    mode: strict\n"
			    "    alert: b\n"
			    "  - {key: sender, count: 1, window: 2592000}\n"  // 11
			    "  - {key: client, count: 1000000000, window: 1, per: message, mode: leaky}\n");
	ck_assert_uint_eq(c.rate_limits.size(), 3);
	const laim::RateLimit& u = c.rate_limits[0];
	ck_assert(u.key == laim::RateLimit::Key::Uid);
	ck_assert_uint_eq(u.count, 20);
	ck_assert_uint_eq(u.window, 300);
	ck_assert(u.per_recipient && u.strict);
	ck_assert_string_eq(u.alert, "b");
	ck_assert_int_eq(u.line, 5);
	const laim::RateLimit& s = c.rate_limits[1];
	ck_assert(s.key == laim::RateLimit::Key::Sender && !s.per_recipient && !s.strict && s.alert.empty());
	ck_assert_uint_eq(s.window, 2592000);
	ck_assert_int_eq(s.line, 11);
	ck_assert(c.rate_limits[2].key == laim::RateLimit::Key::Client);
	ck_assert_uint_eq(c.rate_limits[2].count, 1000000000);
	ck_assert_string_eq(laim::rate_limit_key_name(laim::RateLimit::Key::Client), "client");
	// The same key with another window (a burst and a daily limit) is fine,
	// and so is rate_limits before handlers in the file.
	c = parse_ok("rate_limits:\n  - {key: uid, count: 5, window: 60, alert: a}\n"
		     "  - {key: uid, count: 100, window: 86400}\n" + std::string(handlers_ab));
	ck_assert_uint_eq(c.rate_limits.size(), 2);
	ck_assert(parse_ok("rate_limits: []\n").rate_limits.empty());
}
END_TEST

START_TEST(error_bad_rate_limits)
{
	static const struct {
		const char* limits;  // starting at line 4, after handlers_ab
		const char* prefix;
		const char* what;
	} cases[] = {
	    {"rate_limits: {key: uid}\n", "t.yml:4: rate_limits: ", "expected a sequence of rate limits, got a mapping"},
	    {"rate_limits: uid\n", "t.yml:4: rate_limits: ", "expected a sequence of rate limits, got \"uid\""},
	    {"rate_limits:\n  - uid\n", "t.yml:5: rate_limits[0]: ",
	     "expected a mapping with \"key\", \"count\" and \"window\", got \"uid\""},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5, windows: 6}\n", "t.yml:5: rate_limits[0].windows: ",
	     "unknown key"},
	    {"rate_limits:\n  - {count: 3, window: 5}\n", "t.yml:5: rate_limits[0]: ", "missing required key \"key\""},
	    {"rate_limits:\n  - {key: uid, window: 5}\n", "t.yml:5: rate_limits[0]: ",
	     "missing required key \"count\""},
	    {"rate_limits:\n  - key: uid\n    count: 3\n", "t.yml:5: rate_limits[0]: ",
	     "missing required key \"window\""},
	    {"rate_limits:\n  - key: auth\n    count: 3\n    window: 5\n", "t.yml:5: rate_limits[0].key: ",
	     "\"auth\" counts authenticated users, and no listen: entry has auth: required"},
	    {"rate_limits:\n  - {key: user, count: 3, window: 5}\n", "t.yml:5: rate_limits[0].key: ",
	     "\"user\": expected one of uid, sender, client, auth"},
	    {"rate_limits:\n  - {key: [uid], count: 3, window: 5}\n", "t.yml:5: rate_limits[0].key: ",
	     "expected a string, got a sequence"},
	    {"rate_limits:\n  - {key: uid, count: 0, window: 5}\n", "t.yml:5: rate_limits[0].count: ",
	     "0 is out of range: expected an integer from 1 to 1000000000"},
	    {"rate_limits:\n  - {key: uid, count: '3', window: 5}\n", "t.yml:5: rate_limits[0].count: ",
	     "a quoted string"},
	    {"rate_limits:\n  - {key: uid, count: 1000000001, window: 5}\n", "t.yml:5: rate_limits[0].count: ",
	     "1000000001"},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5m}\n", "t.yml:5: rate_limits[0].window: ", "\"5m\""},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 2592001}\n", "t.yml:5: rate_limits[0].window: ",
	     "2592001"},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5, per: rcpt}\n", "t.yml:5: rate_limits[0].per: ",
	     "\"rcpt\": expected one of message, recipient"},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5, mode: lenient}\n", "t.yml:5: rate_limits[0].mode: ",
	     "\"lenient\": expected one of leaky, strict"},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5, alert: nosuch}\n", "t.yml:5: rate_limits[0].alert: ",
	     "unknown handler instance \"nosuch\""},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5, alert: ''}\n", "t.yml:5: rate_limits[0].alert: ",
	     "unknown handler instance \"\""},
	    {"rate_limits:\n  - {key: uid, count: 3, window: 5}\n  - {key: uid, count: 9, window: 5, mode: strict}\n",
	     "t.yml:6: rate_limits[1]: ", "the same key, window and per as rate_limits[0]"},
	};
	for (const auto& t : cases)
		check_error(std::string(handlers_ab) + t.limits, t.prefix, t.what);
	// Without handlers, alert names nothing.
	check_error("rate_limits:\n  - {key: uid, count: 3, window: 5, alert: a}\n", "t.yml:2: rate_limits[0].alert: ",
		    "unknown handler instance \"a\"");
}
END_TEST

START_TEST(config_error_format)
{
	ck_assert_string_eq(ConfigError("f.yml", 12, "max_queue_size", "expected a positive integer").what(),
			 "f.yml:12: max_queue_size: expected a positive integer");
	ck_assert_string_eq(ConfigError("f.yml", 3, "", "syntax error: x").what(), "f.yml:3: syntax error: x");
	ck_assert_string_eq(ConfigError("f.yml", 0, "user", "bad").what(), "f.yml: user: bad");
	ck_assert_string_eq(ConfigError("plain message").what(), "plain message");
	// The file name given to config_parse is the one in messages.
	try {
		laim::config_parse("\n\nuser: ''\n", "/etc/laim/config.yml");
		ck_abort_msg("no error");
	} catch (const ConfigError& e) {
		ck_assert_str_eq(e.what(), "/etc/laim/config.yml:3: user: expected a user name, got \"\"");
	}
}
END_TEST

// ---------------------------------------------------------------- one rule

// A core key and a handler option read a value by the same rule: the
// same bad value gives the same text after "KEY: " on either side.

// The text after "key: " in an error message, or the message whole.
static std::string after_key(const std::string& msg, const std::string& key)
{
	size_t at = msg.find(" " + key + ": ");
	return at == std::string::npos ? msg : msg.substr(at + key.size() + 3);
}

// What the core key says of value.
static std::string core_error(const std::string& key, const std::string& value)
{
	return after_key(parse_error(key + ": " + value + "\n"), key);
}

// What a handler option "opt" says of value, read by read.
static std::string option_error(const std::string& value, void (*read)(laim::HandlerOptions&))
{
	YamlNode root = laim::yaml_parse("h:\n  type: custom\n  opt: " + value + "\n", test_file);
	laim::HandlerSection section;
	section.name = "h";
	section.type = "custom";
	section.line = 1;
	section.options = *root.find("h");
	laim::HandlerOptions o(section, test_file);
	try {
		read(o);
	} catch (const ConfigError& e) {
		return after_key(e.what(), "handlers.h.opt");
	}
	return "(no error)";
}

START_TEST(one_rule_core_and_handler)
{
	// Each handler reader is given the bounds of its core key.
	auto integer = [](laim::HandlerOptions& o) { o.integer("opt", std::nullopt, 1, 4294967295); };
	auto boolean = [](laim::HandlerOptions& o) { o.boolean("opt"); };
	auto string = [](laim::HandlerOptions& o) { o.string("opt"); };
	auto path = [](laim::HandlerOptions& o) { o.path("opt"); };
	static const char positive[] = "expected a positive integer, got ";
	static const char boolean_words[] = "expected a boolean (true/false, yes/no, on/off), got ";
	const struct {
		const char* core_key;
		void (*read)(laim::HandlerOptions&);
		const char* value;
		std::string what;
	} cases[] = {
	    {"timeout", integer, "050",
	     positive + std::string("\"050\" (YAML 1.1 reads a leading 0 as octal: write the number without it)")},
	    {"timeout", integer, "-1", positive + std::string("\"-1\"")},
	    {"timeout", integer, "'12'", positive + std::string("a quoted string \"12\"")},
	    {"timeout", integer, "1e3", positive + std::string("\"1e3\"")},
	    {"timeout", integer, "0x10", positive + std::string("\"0x10\"")},
	    {"timeout", integer, "yes", positive + std::string("\"yes\"")},
	    {"timeout", integer, "", positive + std::string("an empty value")},
	    {"timeout", integer, "0", "0 is out of range: expected a positive integer"},
	    {"timeout", integer, "4294967296", "4294967296 is out of range: expected a positive integer"},
	    {"alias_files", boolean, "1", boolean_words + std::string("\"1\"")},
	    {"alias_files", boolean, "'yes'", boolean_words + std::string("a quoted string \"yes\"")},
	    {"alias_files", boolean, "", boolean_words + std::string("an empty value")},
	    {"ident", string, "[a]", "expected a string, got a sequence"},
	    {"ident", string, "{a: 1}", "expected a string, got a mapping"},
	    {"ident", string, "", "expected a string, got an empty value"},
	    {"ident", string, "\"a\\0b\"", "contains a NUL character"},
	    {"spool", path, "var/spool", "expected an absolute path, got \"var/spool\""},
	    {"spool", path, "/var/./spool/..", "\"/var/./spool/..\": write the path without '..'"},
	};
	std::string wrong;  // every case that differs, not only the first
	for (const auto& t : cases) {
		std::string core = core_error(t.core_key, t.value), option = option_error(t.value, t.read);
		if (core != t.what || option != t.what)
			wrong += std::string("\n") + t.core_key + ": " + t.value + "\n  core key: " + core +
				 "\n  option:   " + option + "\n  expected: " + t.what;
	}
	ck_assert_msg(wrong.empty(), "%s", wrong.c_str());
}
END_TEST

// ---------------------------------------------------------------- config_read

// A directory for the test case, made and removed by the parent process so
// that it goes away even when a test fails.
static std::string read_dir;

static std::string write_file(const char* name, const std::string& text, mode_t mode, uid_t uid)
{
	std::string path = read_dir + "/" + name;
	FILE* f = fopen(path.c_str(), "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text.data(), 1, text.size(), f), text.size());
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chown(path.c_str(), uid, 0), 0);
	ck_assert_int_eq(chmod(path.c_str(), mode), 0);
	return path;
}

static std::string read_error(const std::string& path)
{
	bool wr = false;
	try {
		laim::config_read(path, &wr);
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

static void read_setup()
{
	char tmpl[] = "/tmp/laim-test-config.XXXXXX";
	if (mkdtemp(tmpl))
		read_dir = tmpl;
}

// Each config_read test starts with this: it needs root to make files
// owned by root and by another uid.
static void read_require()
{
	ck_assert_msg(geteuid() == 0, "the config_read tests run as root");
	ck_assert_msg(!read_dir.empty(), "mkdtemp failed");
}

static void read_teardown()
{
	std::error_code ec;
	if (!read_dir.empty())
		std::filesystem::remove_all(read_dir, ec);
}

START_TEST(read_root_owned)
{
	read_require();
	std::string text = "user: laim\nlisten: 127.0.0.1:2525\n";
	std::string path = write_file("ok.yml", text, 0600, 0);
	bool wr = true;
	ck_assert_string_eq(laim::config_read(path, &wr), text);
	ck_assert(!wr);

	path = write_file("readable.yml", text, 0644, 0);
	wr = false;
	ck_assert_string_eq(laim::config_read(path, &wr), text);
	ck_assert(wr);

	path = write_file("group.yml", text, 0640, 0);
	wr = true;
	laim::config_read(path, &wr);
	ck_assert(!wr);

	// Empty, and exactly 1 MiB, are fine.
	path = write_file("empty.yml", "", 0600, 0);
	ck_assert_string_eq(laim::config_read(path, &wr), "");
	std::string big(1 << 20, '#');
	path = write_file("big.yml", big, 0600, 0);
	ck_assert_uint_eq(laim::config_read(path, &wr).size(), 1 << 20);
}
END_TEST

START_TEST(read_refused)
{
	read_require();
	std::string text = "user: laim\n";
	std::string path = write_file("nobody.yml", text, 0600, 65534);
	std::string msg = read_error(path);
	ck_assert_msg(starts_with(msg, path + ": refusing config: must be owned by root and not writable by group or others"),
		      "%s", msg.c_str());
	ck_assert_msg(msg.find("uid 65534") != std::string::npos, "%s", msg.c_str());

	path = write_file("groupw.yml", text, 0620, 0);
	msg = read_error(path);
	ck_assert_msg(starts_with(msg, path + ": refusing config: must be owned by root"), "%s", msg.c_str());
	ck_assert_msg(msg.find("mode 0620") != std::string::npos, "%s", msg.c_str());

	path = write_file("otherw.yml", text, 0602, 0);
	msg = read_error(path);
	ck_assert_msg(starts_with(msg, path + ": refusing config: must be owned by root"), "%s", msg.c_str());

	std::string big((1 << 20) + 1, '#');
	path = write_file("huge.yml", big, 0600, 0);
	msg = read_error(path);
	ck_assert_string_eq(msg, path + ": refusing config: larger than 1 MiB");

	std::string missing = read_dir + "/missing.yml";
	msg = read_error(missing);
	ck_assert_string_eq(msg, missing + ": " + strerror(ENOENT));

	msg = read_error(read_dir);
	ck_assert_string_eq(msg, read_dir + ": refusing config: not a regular file");

	// A FIFO is refused without blocking on open.
	std::string fifo = read_dir + "/fifo.yml";
	ck_assert_int_eq(mkfifo(fifo.c_str(), 0600), 0);
	msg = read_error(fifo);
	ck_assert_string_eq(msg, fifo + ": refusing config: not a regular file");

	// A symbolic link, even to a good file, is refused (O_NOFOLLOW).
	std::string good = write_file("good.yml", text, 0600, 0);
	std::string link = read_dir + "/link.yml";
	ck_assert_int_eq(symlink(good.c_str(), link.c_str()), 0);
	msg = read_error(link);
	ck_assert_string_eq(msg, link + ": refusing config: it is a symbolic link");
}
END_TEST

// ---------------------------------------------------------------- handler types

// The type name is checked against the registry when the handlers are
// built, with the file, the line of the type and the key.
START_TEST(handlers_create_unknown_type)
{
	Config c = parse_ok("user: laim\n"
			    "handlers:\n"
			    "  inbox:\n"
			    "    type: nosuchtype\n");
	try {
		laim::Secrets secrets;
		laim::handlers_create(c, secrets);
		ck_abort_msg("an unknown handler type was accepted");
	} catch (const ConfigError& e) {
		std::string msg = e.what();
		ck_assert_msg(starts_with(msg, "t.yml:4: ") || starts_with(msg, "t.yml:3: "), "%s", msg.c_str());
		ck_assert_msg(msg.find("type") != std::string::npos, "%s", msg.c_str());
		ck_assert_msg(msg.find("nosuchtype") != std::string::npos, "%s", msg.c_str());
	}
}
END_TEST

// What handlers_create() says of one handler section (head: its first
// three lines, "handlers:", the name and its type) followed by these
// option lines, or "(no error)".
static std::string handler_error(const std::string& head, const std::string& options,
				 laim::Secrets secrets = laim::Secrets())
{
	Config c = parse_ok(head + options);
	try {
		laim::handlers_create(c, secrets);
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

// An lmtp section "lm" whose options start at line 4.
static std::string lmtp_error(const std::string& options)
{
	return handler_error("handlers:\n  lm:\n    type: lmtp\n", options);
}

// lmtp: one of socket and host, host as HOST:PORT with the port written,
// rcpt_to user or address, an LHLO name that fits on the command line.
START_TEST(handler_lmtp_options)
{
	static const char form[] =
	    "expected HOST:PORT, e.g. 127.0.0.1:24 or [::1]:24 (LMTP has no default port)";
	static const char port[] = "the port must be a number from 1 to 65535";
	const struct {
		const char* options;
		std::string error;
	} cases[] = {
	    {"", "t.yml:2: handlers.lm.socket: missing required option: socket (a unix socket path) or host (HOST:PORT)"},
	    {"    socket: /run/dovecot/lmtp\n    host: 127.0.0.1:24\n",
	     "t.yml:5: handlers.lm.host: socket and host exclude each other: give one"},
	    {"    socket: run/lmtp\n", "t.yml:4: handlers.lm.socket: expected an absolute path, got \"run/lmtp\""},
	    {"    host: 127.0.0.1\n", "t.yml:4: handlers.lm.host: \"127.0.0.1\": " + std::string(form)},
	    {"    host: ':24'\n", "t.yml:4: handlers.lm.host: \":24\": " + std::string(form)},
	    {"    host: '::1:24'\n", "t.yml:4: handlers.lm.host: \"::1:24\": " + std::string(form)},
	    {"    host: '[::1]24'\n", "t.yml:4: handlers.lm.host: \"[::1]24\": " + std::string(form)},
	    {"    host: 'a b:24'\n", "t.yml:4: handlers.lm.host: \"a b:24\": " + std::string(form)},
	    {"    host: '127.0.0.1:'\n", "t.yml:4: handlers.lm.host: \"127.0.0.1:\": " + std::string(port)},
	    {"    host: 127.0.0.1:0\n", "t.yml:4: handlers.lm.host: \"127.0.0.1:0\": " + std::string(port)},
	    {"    host: 127.0.0.1:024\n", "t.yml:4: handlers.lm.host: \"127.0.0.1:024\": " + std::string(port)},
	    {"    host: '[::1]:65536'\n", "t.yml:4: handlers.lm.host: \"[::1]:65536\": " + std::string(port)},
	    {"    host: [127.0.0.1, 24]\n", "t.yml:4: handlers.lm.host: expected a string, got a sequence"},
	    {"    socket: /run/dovecot/lmtp\n    rcpt_to: local\n",
	     "t.yml:5: handlers.lm.rcpt_to: expected user or address, got \"local\""},
	    {"    socket: /run/dovecot/lmtp\n    lhlo: 'mail example'\n",
	     "t.yml:5: handlers.lm.lhlo: \"mail example\": expected a host name (printable, no spaces)"},
	    {"    socket: /run/dovecot/lmtp\n    timeout: 0\n",
	     "t.yml:5: handlers.lm.timeout: 0 is out of range: expected an integer from 1 to 3600"},
	    {"    socket: /run/dovecot/lmtp\n    verify_recipients: maybe\n",
	     "t.yml:5: handlers.lm.verify_recipients: expected a boolean (true/false, yes/no, on/off), got \"maybe\""},
	    {"    socket: /run/dovecot/lmtp\n    port: 24\n", "t.yml:5: handlers.lm.port: unknown key"},
	    // Accepted: every option, and each form of host.
	    {"    socket: /run/dovecot/lmtp\n    rcpt_to: address\n    lhlo: mail.example.org\n"
	     "    timeout: 10\n    verify_recipients: true\n    workers: 2\n",
	     "(no error)"},
	    {"    host: 127.0.0.1:24\n", "(no error)"},
	    {"    host: '[::1]:24'\n", "(no error)"},
	    {"    host: dovecot.example.org:2424\n    rcpt_to: user\n", "(no error)"},
	};
	std::string wrong;
	for (const auto& t : cases) {
		std::string got = lmtp_error(t.options);
		if (got != t.error)
			wrong += std::string("\n") + t.options + "  got:      " + got + "\n  expected: " + t.error;
	}
	ck_assert_msg(wrong.empty(), "%s", wrong.c_str());
}
END_TEST

// ---------------------------------------------------------------- webhook options

// What handlers_create() says of a webhook instance "hook" whose options
// (after its type, from line 4 on) are these lines, or "(no error)".
static std::string webhook_error(const std::string& options)
{
	return handler_error("handlers:\n  hook:\n    type: webhook\n", options, laim::Secrets::from_files());
}

START_TEST(webhook_option_errors)
{
	const std::string url = "    url: https://hooks.example/x\n";
	const std::string slack = url + "    format: slack\n";
	const char* h = "t.yml:2: handlers.hook.";
	const char* l4 = "t.yml:4: handlers.hook.";
	const char* l5 = "t.yml:5: handlers.hook.";
	const char* l6 = "t.yml:6: handlers.hook.";
	const struct {
		std::string options, error;
	} cases[] = {
	    {"", h + std::string("url: missing required option")},
	    {"    url: ftp://hooks.example/x\n", l4 + std::string("url: expected an https:// URL, got scheme \"ftp\"")},
	    {"    url: http://hooks.example/x\n",
	     l4 + std::string("url: http:// sends the message in clear: use https://, or set allow_http: true")},
	    {"    url: hooks.example/x\n", l4 + std::string("url: not a valid URL (expected https://HOST/PATH)")},
	    {"    url: [https://a/]\n", l4 + std::string("url: expected a string, got a sequence")},
	    {url + "    allow_http: maybe\n",
	     l5 + std::string("allow_http: expected a boolean (true/false, yes/no, on/off), got \"maybe\"")},
	    {url + "    format: xml\n", l5 + std::string("format: expected slack, json or rfc822, got \"xml\"")},
	    {slack + "    token: t\n", h + std::string("channel: missing required option")},
	    {slack + "    channel: \"#a\"\n",
	     l5 + std::string("format: format slack needs token or token_file (Slack's bot token)")},
	    {url + "    channel: \"#a\"\n", l5 + std::string("channel: only format slack has a channel")},
	    {url + "    format: rfc822\n    channel: \"#a\"\n", l6 + std::string("channel: only format slack has a channel")},
	    {url + "    token: t\n    token_file: /etc/laim/t\n",
	     l6 + std::string("token_file: give token or token_file, not both")},
	    {url + "    token: \"a\\tb\"\n", l5 + std::string("token: the token holds a control character or a line break")},
	    {url + "    token_file: etc/t\n", l5 + std::string("token_file: expected an absolute path, got \"etc/t\"")},
	    {url + "    headers: [\"X Team: ops\"]\n",
	     l5 + std::string("headers: entry 1 is not \"Name: value\" with a token as name")},
	    {url + "    headers: [\"X-Team: ops\", \"s3cret\"]\n",
	     l5 + std::string("headers: entry 2 is not \"Name: value\" with a token as name")},
	    {url + "    headers: [\"X-Team: a\\r\\nHost: b\"]\n", l5 + std::string("headers: header X-Team holds a control character")},
	    {url + "    headers: [\"content-type: text/plain\"]\n",
	     l5 + std::string("headers: header content-type is set by the handler")},
	    {url + "    token: t\n    headers: [\"Authorization: Basic eA==\"]\n",
	     l6 + std::string("headers: header Authorization is set by token or token_file")},
	    {url + "    headers: X-Team\n", l5 + std::string("headers: expected a list of strings, got a string")},
	    {url + "    headers: \"X-Api-Key: s3cret\"\n", l5 + std::string("headers: expected a list of strings, got a string")},
	    {url + "    ca_file: ca.pem\n", l5 + std::string("ca_file: expected an absolute path, got \"ca.pem\"")},
	    {url + "    timeout: 0\n", l5 + std::string("timeout: 0 is out of range: expected an integer from 1 to 3600")},
	    {url + "    timeout: 3601\n", l5 + std::string("timeout: 3601 is out of range: expected an integer from 1 to 3600")},
	    {url + "    max_text: 0\n", l5 + std::string("max_text: 0 is out of range: expected an integer from 1 to 1048576")},
	    {url + "    workers: 65\n", l5 + std::string("workers: 65 is out of range: expected an integer from 1 to 64")},
	    {url + "    proxy: http://p/\n", l5 + std::string("proxy: unknown key")},
	    // Accepted: http with allow_http, Authorization without a token.
	    {"    url: http://127.0.0.1:8080/hook\n    allow_http: true\n", "(no error)"},
	    {url + "    headers: [\"Authorization: Basic eA==\", \"X-Team: ops\"]\n", "(no error)"},
	    {url + "    format: rfc822\n    timeout: 5\n    max_text: 100\n    ca_file: /etc/laim/ca.pem\n", "(no error)"},
	};
	std::string wrong;  // every case that differs, not only the first
	for (const auto& t : cases) {
		std::string got = webhook_error(t.options);
		if (got != t.error)
			wrong += "\n" + t.options + "  got:      " + got + "\n  expected: " + t.error;
	}
	ck_assert_msg(wrong.empty(), "%s", wrong.c_str());
}
END_TEST

// token_file: is a secret file: one that others may read is refused with
// the file, line and key, and never its bytes; a root 0600 one is taken.
START_TEST(webhook_token_file)
{
	ck_assert_msg(geteuid() == 0, "the token_file test runs as root");
	char path[] = "/tmp/laim-test-token.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "s3cret-token\n", 13), 13);
	close(fd);
	std::string options = "    url: https://slack.example/api/chat.postMessage\n    format: slack\n"
			      "    channel: \"#ops\"\n    token_file: " + std::string(path) + "\n";
	ck_assert_int_eq(chmod(path, 0644), 0);
	std::string msg = webhook_error(options);
	ck_assert_msg(starts_with(msg, "t.yml:7: handlers.hook.token_file: " + std::string(path) + ": ") &&
			      msg.find("mode 0644") != std::string::npos && msg.find("s3cret") == std::string::npos,
		      "%s", msg.c_str());
	ck_assert_int_eq(chmod(path, 0600), 0);
	ck_assert_string_eq(webhook_error(options), "(no error)");
	unlink(path);
}
END_TEST

// Checks that each case's options give an error that starts with the
// case's error; every case that differs is reported, not only the first.
template <typename Cases>
static void expect_error_prefixes(std::string (*error_of)(const std::string&), const Cases& cases)
{
	std::string wrong;
	for (const auto& t : cases) {
		std::string msg = error_of(t.options);
		if (!starts_with(msg, t.error))
			wrong += "\n" + t.options + "  got:      " + msg + "\n  expected: " + std::string(t.error) + "...";
	}
	ck_assert_msg(wrong.empty(), "%s", wrong.c_str());
}

// ---------------------------------------------------------------- smarthost options

// What handlers_create() says of a smarthost section whose option lines
// (indented by four) follow "handlers:\n  relay:\n    type: smarthost\n"
// (lines 1-3), or "(no error)".
static std::string smarthost_error(const std::string& options, laim::Secrets secrets = laim::Secrets())
{
	return handler_error("handlers:\n  relay:\n    type: smarthost\n", options, std::move(secrets));
}

START_TEST(smarthost_option_errors)
{
	static const char host[] = "    host: smtp.example.org\n";  // line 4
	static const char local[] = "    host: 127.0.0.1\n";          // a relay on this host, for tls: none
	static const struct {
		std::string options;  // from line 4
		const char* error;
	} cases[] = {
	    {"    port: 25\n", "t.yml:2: handlers.relay.host: missing required option"},
	    {"    host: 'smtp example.org'\n", "t.yml:4: handlers.relay.host: expected a host name or address, got "
					    "\"smtp example.org\""},
	    {"    host: smtp.example.org:25\n", "t.yml:4: handlers.relay.host: \"smtp.example.org:25\": expected a host "
					     "name or address without a port: give the port in port:"},
	    {"    host: 127.0.0.1:2525\n", "t.yml:4: handlers.relay.host: \"127.0.0.1:2525\": expected a host name or "
					   "address without a port"},
	    {"    host: '::1:x'\n", "t.yml:4: handlers.relay.host: \"::1:x\": expected a host name or address without a "
				      "port"},
	    {"    host: '[::1]'\n", "t.yml:4: handlers.relay.host: \"[::1]\": expected no brackets: an IPv6 address "
				      "alone (::1), the port in port:"},
	    {"    host: '[::1]:25'\n", "t.yml:4: handlers.relay.host: \"[::1]:25\": expected no brackets"},
	    {host + std::string("    port: 0\n"), "t.yml:5: handlers.relay.port: 0 is out of range"},
	    {host + std::string("    port: 65536\n"), "t.yml:5: handlers.relay.port: 65536 is out of range"},
	    {host + std::string("    port: '587'\n"), "t.yml:5: handlers.relay.port: expected an integer from 1 to "
					      "65535, got a quoted string \"587\""},
	    {host + std::string("    tls: ssl\n"), "t.yml:5: handlers.relay.tls: expected one of starttls, implicit, "
					       "none, got \"ssl\""},
	    {host + std::string("    auth: cram-md5\n"), "t.yml:5: handlers.relay.auth: expected one of auto, plain, "
						     "login, none, got \"cram-md5\""},
	    {host + std::string("    auth: plain\n"), "t.yml:5: handlers.relay.auth: needs credentials"},
	    {host + std::string("    tls: none\n"), "t.yml:5: handlers.relay.tls: none sends the message in clear: only "
					     "to a relay on this host (localhost, 127.0.0.0/8 or ::1), not to "
					     "\"smtp.example.org\""},
	    {"    host: 10.0.0.1\n    tls: none\n", "t.yml:5: handlers.relay.tls: none sends the message in clear"},
	    {"    host: '::2'\n    tls: none\n", "t.yml:5: handlers.relay.tls: none sends the message in clear"},
	    {"    host: localhost.example.org\n    tls: none\n",
	     "t.yml:5: handlers.relay.tls: none sends the message in clear"},
	    {local + std::string("    tls: none\n    credentials: /etc/laim/relay.secret\n"),
	     "t.yml:6: handlers.relay.credentials: AUTH never goes in clear: credentials need tls: starttls or "
	     "implicit"},
	    {host + std::string("    auth: none\n    credentials: /etc/laim/relay.secret\n"),
	     "t.yml:6: handlers.relay.credentials: has no use with auth: none"},
	    {host + std::string("    tls_fingerprint: AB:CD\n"),
	     "t.yml:5: handlers.relay.tls_fingerprint: expected a SHA-256 fingerprint, 64 hex digits (colons "
	     "optional)"},
	    {host + std::string("    tls_fingerprint: ") + std::string(63, 'a') + "g\n",
	     "t.yml:5: handlers.relay.tls_fingerprint: expected a SHA-256 fingerprint"},
	    {local + std::string("    tls: none\n    ca_file: /etc/ssl/ca.pem\n"),
	     "t.yml:6: handlers.relay.ca_file: has no use with tls: none"},
	    {host + std::string("    ca_file: ca.pem\n"), "t.yml:5: handlers.relay.ca_file: expected an absolute path"},
	    {host + std::string("    mail_from: '@example.org'\n"),
	     "t.yml:5: handlers.relay.mail_from: expected user@domain or user@, got \"@example.org\""},
	    {host + std::string("    mail_from: alerts\n"), "t.yml:5: handlers.relay.mail_from: expected user@domain"},
	    {host + std::string("    mail_from: 'a@b>'\n"), "t.yml:5: handlers.relay.mail_from: expected user@domain"},
	    {host + std::string("    helo: \"a\\r\\nRSET\"\n"), "t.yml:5: handlers.relay.helo: expected a host name"},
	    {host + std::string("    rewrite_from: yes\n"), "t.yml:5: handlers.relay.rewrite_from: expected one of "
							"off, missing, always, got \"yes\""},
	    {host + std::string("    rewrite_from: always\n"),
	     "t.yml:5: handlers.relay.rewrite_from: needs mail_from, or credentials whose user is an address"},
	    {host + std::string("    command_timeout: 0\n"), "t.yml:5: handlers.relay.command_timeout: 0 is out of "
							 "range"},
	    {host + std::string("    password: secret\n"), "t.yml:5: handlers.relay.password: unknown key"},
	};
	expect_error_prefixes([](const std::string& o) { return smarthost_error(o); }, cases);
	ck_assert_string_eq(smarthost_error(host + std::string("    port: 465\n    mail_from: alerts@\n"
							      "    rewrite_from: missing\n")), "(no error)");
	// An IPv6 address is written alone, with its scope if it has one.
	for (const char* ipv6 : {"::1", "2001:db8::25", "fe80::1%eth0"})
		ck_assert_string_eq(smarthost_error("    host: '" + std::string(ipv6) + "'\n"), "(no error)");
	// tls: none to a relay on this host.
	for (const char* loopback : {"localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "::1"})
		ck_assert_string_eq(smarthost_error("    host: '" + std::string(loopback) + "'\n    tls: none\n"),
				    "(no error)");
}
END_TEST

// The credentials file: read by the parent as root, "user:password" on one
// line; the error names the file, never its bytes.
START_TEST(smarthost_credentials_file)
{
	read_require();
	auto with = [](const std::string& path) {
		return smarthost_error("    host: smtp.example.org\n    credentials: " + path + "\n",
				       laim::Secrets::from_files());
	};
	std::string ok = write_file("ok.secret", "alice@example.org:pass:word\n", 0600, 0);
	ck_assert_string_eq(with(ok), "(no error)");
	std::string open = write_file("open.secret", "alice@example.org:s3cret\n", 0644, 0);
	std::string msg = with(open);
	ck_assert_msg(starts_with(msg, "t.yml:5: handlers.relay.credentials: " + open + ": ") &&
			      msg.find("mode 0644") != std::string::npos && msg.find("s3cret") == std::string::npos,
		      "%s", msg.c_str());
	for (const char* text : {"s3cret\n", ":s3cret\n", "alice:s3cret\nbob:other\n"}) {
		std::string path = write_file("bad.secret", text, 0600, 0);
		ck_assert_string_eq(with(path), "t.yml:5: handlers.relay.credentials: " + path +
							": expected one line \"user:password\"");
	}
}
END_TEST

// What listen_check_files() says of a submission listener with these
// files (line 3 cert, 4 key, 5 users, 6 senders), or "(no error)".
static std::string listen_files_error(const std::string& cert, const std::string& key, const std::string& users,
				      const std::string& senders)
{
	try {
		Config c = parse_ok("listen:\n  - addr: 192.0.2.1:587\n    cert: " + cert + "\n    key: " + key +
				    "\n    users: " + users + "\n    senders: " + senders +
				    "\n    tls: starttls\n    auth: required\n");
		laim::listen_check_files(c);
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

// The key, users and senders files: root's, no access for group or
// others, a link to such a file fine (certbot's live/); the certificate
// readable.
START_TEST(listen_files)
{
	read_require();
	std::string cert = write_file("fullchain.pem", "-----BEGIN CERTIFICATE-----\n", 0644, 0);
	std::string key = write_file("privkey.pem", "-----BEGIN PRIVATE KEY-----\n", 0600, 0);
	std::string users = write_file("users", "alice:$6$x$y\n", 0600, 0);
	std::string senders = write_file("senders", "alice: alice@example.org\n", 0400, 0);
	ck_assert_string_eq(listen_files_error(cert, key, users, senders), "(no error)");
	std::string link = read_dir + "/live-privkey.pem";
	ck_assert_int_eq(symlink(key.c_str(), link.c_str()), 0);
	ck_assert_string_eq(listen_files_error(cert, link, users, senders), "(no error)");

	auto refused = [&](const std::string& msg, const std::string& prefix, const std::string& what) {
		ck_assert_msg(starts_with(msg, prefix) && msg.find(what) != std::string::npos, "got: %s\nexpected: %s...%s",
			      msg.c_str(), prefix.c_str(), what.c_str());
	};
	const std::string rule = "must be owned by root and without access for group or others";
	for (mode_t mode : {0640, 0620, 0604, 0602, 0610}) {
		std::string bad = write_file("bad", "x\n", mode, 0);
		refused(listen_files_error(cert, bad, users, senders), "t.yml:4: listen[0].key: " + bad + ": refusing TLS key: ",
			rule);
		refused(listen_files_error(cert, key, bad, senders),
			"t.yml:5: listen[0].users: " + bad + ": refusing users file: ", rule);
		refused(listen_files_error(cert, key, users, bad),
			"t.yml:6: listen[0].senders: " + bad + ": refusing senders file: ", rule);
	}
	std::string theirs = write_file("theirs", "x\n", 0600, 65534);
	refused(listen_files_error(cert, theirs, users, senders), "t.yml:4: listen[0].key: ", "uid 65534");
	refused(listen_files_error(cert, key, theirs, senders), "t.yml:5: listen[0].users: ", "uid 65534");
	std::string missing = read_dir + "/missing.pem";
	refused(listen_files_error(missing, key, users, senders), "t.yml:3: listen[0].cert: " + missing + ": ",
		strerror(ENOENT));
	refused(listen_files_error(read_dir, key, users, senders), "t.yml:3: listen[0].cert: " + read_dir + ": ",
		strerror(EISDIR));
	refused(listen_files_error(cert, missing, users, senders), "t.yml:4: listen[0].key: " + missing + ": ",
		strerror(ENOENT));
}
END_TEST

// ---------------------------------------------------------------- pipe options

// What handlers_create() says of a pipe section "p" whose option lines
// start at line 4, or "(no error)".
static std::string pipe_error(const std::string& options)
{
	return handler_error("handlers:\n  p:\n    type: pipe\n", options);
}

// pipe: an argv whose program is an absolute path and whose placeholders
// are known, a user that exists and is not root, stdin raw or mbox, env
// entries that set no variable of laim's own.
START_TEST(pipe_option_errors)
{
	static const char cmd[] = "    command: [/usr/bin/procmail, -f, '{sender}']\n";  // line 4
	const char* h = "t.yml:2: handlers.p.";
	const char* l4 = "t.yml:4: handlers.p.";
	const char* l5 = "t.yml:5: handlers.p.";
	const char* l6 = "t.yml:6: handlers.p.";
	const std::string ok = cmd + std::string("    user: nobody\n");
	const struct {
		std::string options, error;
	} cases[] = {
	    {"    user: nobody\n", h + std::string("command: missing required option")},
	    {"    command: []\n", l4 + std::string("command: expected the program and its arguments, got an empty list")},
	    {"    command: /bin/true\n", l4 + std::string("command: expected a list of strings, got a string")},
	    {"    command: [bin/true]\n", l4 + std::string("command: the program must be an absolute path, got \"bin/true\"")},
	    {"    command: ['/bin/{user}']\n", l4 + std::string("command: the program cannot hold a placeholder: \"/bin/{user}\"")},
	    {"    command: [/bin/true, '-d{recipeint}']\n",
	     l4 + std::string("command: unknown placeholder {recipeint} (known: {sender}, {recipient}, {user}, "
			      "{extension}, {queue_id})")},
	    {cmd, h + std::string("user: missing required option")},
	    {cmd + std::string("    user: root\n"), l5 + std::string("user: \"root\" is root: a command never runs as root")},
	    {cmd + std::string("    user: no-such-laim-user\n"), l5 + std::string("user: no such user \"no-such-laim-user\"")},
	    {ok + "    stdin: text\n", l6 + std::string("stdin: expected raw or mbox, got \"text\"")},
	    {ok + "    env: [PATH=/opt/bin]\n", l6 + std::string("env: PATH is set by laim itself")},
	    {ok + "    env: [RECIPIENT=x]\n", l6 + std::string("env: RECIPIENT is set by laim itself")},
	    {ok + "    env: [LANG]\n", l6 + std::string("env: entry 1 is not NAME=value (not quoted: it may hold a secret)")},
	    {ok + "    env: [A=1, '1X=y']\n", l6 + std::string("env: entry 2 is not NAME=value (not quoted: it may hold a secret)")},
	    {ok + "    env: ['API-KEY=s3cret']\n", l6 + std::string("env: entry 1 is not NAME=value (not quoted: it may hold a secret)")},
	    {ok + "    timeout: 0\n", l6 + std::string("timeout: 0 is out of range: expected an integer from 1 to 86400")},
	    {ok + "    per_recipient: maybe\n",
	     l6 + std::string("per_recipient: expected a boolean (true/false, yes/no, on/off), got \"maybe\"")},
	    {ok + "    shell: /bin/sh\n", l6 + std::string("shell: unknown key")},
	    // Accepted: every option; braces that are no placeholder pass as they are.
	    {"    command: [/usr/bin/logger, '{}', '{Sender}', 'x={recipient}{extension}', '{queue_id}']\n"
	     "    user: nobody\n    per_recipient: false\n    stdin: mbox\n    env: [LANG=C.UTF-8, X=]\n"
	     "    timeout: 60\n    workers: 2\n",
	     "(no error)"},
	};
	expect_error_prefixes(pipe_error, cases);
}
END_TEST

// ---------------------------------------------------------------- forward options

// The smarthost instance that forward sections name as their relay.
static const char relay_section[] = "  relay:\n    type: smarthost\n    host: smtp.example.org\n";

// What handlers_create() says of a forward section whose option lines
// follow "handlers:\n  fwd:\n    type: forward\n" (lines 1-3), with the
// relay section after them, or "(no error)".
static std::string forward_error(const std::string& options, laim::Secrets secrets = laim::Secrets())
{
	return handler_error("handlers:\n  fwd:\n    type: forward\n", options + relay_section, std::move(secrets));
}

// map, relay (an instance of type smarthost, before or after), mail_from,
// the SRS options, from_rewrite, subject_prefix, loop_limit.
START_TEST(forward_option_errors)
{
	const std::string map = "    map: /etc/laim/forward.map\n";  // line 4
	const std::string base = map + "    relay: relay\n";         // lines 4-5
	const char* l5 = "t.yml:5: handlers.fwd.";
	const char* l6 = "t.yml:6: handlers.fwd.";
	const struct {
		std::string options, error;
	} cases[] = {
	    {"", "t.yml:2: handlers.fwd.map: missing required option"},
	    {"    map: forward.map\n", "t.yml:4: handlers.fwd.map: expected an absolute path, got \"forward.map\""},
	    {map, "t.yml:2: handlers.fwd.relay: missing required option"},
	    {map + "    relay: nosuch\n", l5 + std::string("relay: no handler instance named \"nosuch\"")},
	    {map + "    relay: fwd\n",
	     l5 + std::string("relay: instance \"fwd\" is of type forward, expected one of type smarthost")},
	    {base + "    from_rewrite: yes\n", l6 + std::string("from_rewrite: expected off or dmarc, got \"yes\"")},
	    {base + "    from_rewrite: dmarc\n", l6 + std::string("from_rewrite: dmarc needs mail_from")},
	    {base + "    mail_from: alerts\n",
	     l6 + std::string("mail_from: expected an address (user@domain) or srs, got \"alerts\"")},
	    {base + "    mail_from: '<a@b>'\n", l6 + std::string("mail_from: expected an address")},
	    {base + "    mail_from: srs\n", "t.yml:2: handlers.fwd.srs_secret: missing required option"},
	    {base + "    srs_domain: fwd.example\n", l6 + std::string("srs_domain: has no use without mail_from: srs")},
	    {base + "    srs_secret: /etc/laim/srs.secret\n",
	     l6 + std::string("srs_secret: has no use without mail_from: srs")},
	    {base + "    subject_prefix: ''\n", l6 + std::string("subject_prefix: expected one line of text")},
	    {base + "    loop_limit: 0\n", l6 + std::string("loop_limit: 0 is out of range")},
	    {base + "    relay_host: x\n", l6 + std::string("relay_host: unknown key")},
	};
	expect_error_prefixes([](const std::string& o) { return forward_error(o); }, cases);
	ck_assert_string_eq(forward_error(base + "    mail_from: fwd@example.org\n    from_rewrite: dmarc\n"
						 "    subject_prefix: \"[ops]\"\n    loop_limit: 3\n"),
			    "(no error)");
	// The relay may come first.
	ck_assert_string_eq(handler_error(std::string("handlers:\n") + relay_section, "  fwd:\n    type: forward\n" + base),
			    "(no error)");
}
END_TEST

// srs_secret: a root-only file of at least 16 bytes; errors name the
// file, never its bytes.
START_TEST(forward_srs_secret)
{
	read_require();
	auto with = [](const std::string& path, const std::string& domain = "fwd.example.org") {
		return forward_error("    map: /etc/laim/forward.map\n    relay: relay\n    mail_from: srs\n"
				     "    srs_secret: " + path + "\n    srs_domain: " + domain + "\n",
				     laim::Secrets::from_files());
	};
	std::string ok = write_file("srs.secret", "0123456789abcdef\n", 0600, 0);
	ck_assert_string_eq(with(ok), "(no error)");
	ck_assert_string_eq(with(ok, "'fwd example'"), "t.yml:8: handlers.fwd.srs_domain: expected a domain, got \"fwd example\"");
	std::string path = write_file("short.secret", "s3cret\n", 0600, 0);
	ck_assert_string_eq(with(path), "t.yml:7: handlers.fwd.srs_secret: " + path +
					    ": expected a secret of 16 bytes or more");
	path = write_file("open.secret", "0123456789abcdef\n", 0644, 0);
	std::string msg = with(path);
	ck_assert_msg(starts_with(msg, "t.yml:7: handlers.fwd.srs_secret: " + path + ": ") &&
			      msg.find("mode 0644") != std::string::npos && msg.find("0123456789") == std::string::npos,
		      "%s", msg.c_str());
}
END_TEST

static Suite* config_suite()
{
	Suite* s = suite_create("config");
	TCase* tc = tcase_create("parse");
	tcase_add_test(tc, defaults_empty_file);
	tcase_add_test(tc, defaults_unrelated_key);
	tcase_add_test(tc, every_key);
	tcase_add_test(tc, listen_forms);
	tcase_add_test(tc, booleans);
	tcase_add_test(tc, integer_bounds_accepted);
	tcase_add_test(tc, hostname_forms);
	tcase_add_test(tc, route_match_forms);
	tcase_add_test(tc, routes_absent_with_handlers);
	tcase_add_test(tc, yaml_tree_lines);
	tcase_add_test(tc, config_error_format);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, error_syntax);
	tcase_add_test(tc, error_duplicate_key);
	tcase_add_test(tc, error_alias_anchor_tag);
	tcase_add_test(tc, error_non_scalar_key);
	tcase_add_test(tc, error_multiple_documents);
	tcase_add_test(tc, error_too_deep);
	tcase_add_test(tc, error_top_level_not_mapping);
	tcase_add_test(tc, error_unknown_key);
	tcase_add_test(tc, error_wrong_types);
	tcase_add_test(tc, error_bad_integers);
	tcase_add_test(tc, error_retry_order);
	tcase_add_test(tc, error_same_users);
	tcase_add_test(tc, error_users_unusable);
	tcase_add_test(tc, error_mail_dir_default);
	tcase_add_test(tc, error_bad_boolean);
	tcase_add_test(tc, path_spelling);
	tcase_add_test(tc, error_bad_strings);
	tcase_add_test(tc, error_bad_listen);
	tcase_add_test(tc, listen_mappings);
	tcase_add_test(tc, error_bad_listen_mapping);
	tcase_add_test(tc, error_bad_handlers);
	tcase_add_test(tc, error_bad_routes);
	tcase_add_test(tc, rate_limits_forms);
	tcase_add_test(tc, error_bad_rate_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("read");
	tcase_add_unchecked_fixture(tc, read_setup, read_teardown);
	tcase_add_test(tc, read_root_owned);
	tcase_add_test(tc, read_refused);
	tcase_add_test(tc, smarthost_credentials_file);
	tcase_add_test(tc, listen_files);
	tcase_add_test(tc, forward_srs_secret);
	suite_add_tcase(s, tc);

	tc = tcase_create("handlers");
	tcase_add_test(tc, handlers_create_unknown_type);
	tcase_add_test(tc, one_rule_core_and_handler);
	tcase_add_test(tc, handler_lmtp_options);
	tcase_add_test(tc, smarthost_option_errors);
	tcase_add_test(tc, pipe_option_errors);
	tcase_add_test(tc, forward_option_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("webhook");
	tcase_add_test(tc, webhook_option_errors);
	tcase_add_test(tc, webhook_token_file);
	suite_add_tcase(s, tc);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(config_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
