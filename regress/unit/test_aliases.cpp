// Unit tests of the aliases table (common/aliases.cpp): the aliases(5)
// format, :include: files, every error message, and the expansion.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <check.h>  // after <fstream>: check.h defines a "fail" macro

#include "common/aliases.h"

using laim::Aliases;

namespace {

std::string tmpdir;

// Writes a file under the test's temporary directory; returns its path.
std::string put(const std::string& name, const std::string& text)
{
	std::string path = tmpdir + "/" + name;
	std::ofstream f(path, std::ios::binary | std::ios::trunc);
	f << text;
	ck_assert_msg(f.good(), "cannot write %s", path.c_str());
	return path;
}

// ck_assert_str_eq keeps pointers past the statement: compare owned strings.
void expect_str(const std::string& got, const std::string& want)
{
	ck_assert_msg(got == want, "got \"%s\", want \"%s\"", got.c_str(), want.c_str());
}

// Loads text as an aliases file "aliases" and expects no error.
Aliases load_ok(const std::string& text)
{
	std::string path = put("aliases", text);
	std::vector<std::string> errors;
	Aliases a = Aliases::load(path, &errors);
	ck_assert_msg(errors.empty(), "unexpected error: %s", errors.empty() ? "" : errors[0].c_str());
	return a;
}

// Loads text and expects exactly the given errors, in order; "@" in a
// wanted error stands for the path of the aliases file.
Aliases load_errors(const std::string& text, const std::vector<std::string>& want)
{
	std::string path = put("aliases", text);
	std::vector<std::string> errors;
	Aliases a = Aliases::load(path, &errors);
	ck_assert_msg(errors.size() == want.size(), "got %zu errors, want %zu; first: %s", errors.size(),
		      want.size(), errors.empty() ? "(none)" : errors[0].c_str());
	for (size_t i = 0; i < want.size(); i++) {
		std::string w = want[i];
		if (w.starts_with("@"))
			w = path + w.substr(1);
		expect_str(errors[i], w);
	}
	return a;
}

// "a,b,c" of a list, to compare expansions in one assertion.
std::string join(const std::vector<std::string>& v)
{
	std::string r;
	for (const std::string& s : v)
		r += (r.empty() ? "" : ",") + s;
	return r;
}

void expect_expand(const Aliases& a, const std::string& local, const std::string& want, bool loop = false)
{
	Aliases::Expansion x = a.expand(local);
	std::string got = join(x.addresses);
	ck_assert_msg(got == want, "expand(%s) = [%s], want [%s]", local.c_str(), got.c_str(), want.c_str());
	ck_assert_msg(x.loop == loop, "expand(%s): loop = %d, want %d", local.c_str(), x.loop, loop);
}

}  // namespace

START_TEST(parse_basic)
{
	Aliases a = load_ok(
	    "# /etc/aliases\n"
	    "\n"
	    "alice: alice@example.org\n"
	    "bob:bob@example.org,carol@example.org\n"
	    "   \t\n"
	    "  # an indented comment\n"
	    "team : alice , bob\n");
	ck_assert_uint_eq(a.size(), 3);
	expect_expand(a, "alice", "alice@example.org");
	expect_expand(a, "bob", "bob@example.org,carol@example.org");
	expect_expand(a, "team", "alice@example.org,bob@example.org,carol@example.org");
}
END_TEST

START_TEST(parse_continuation)
{
	Aliases a = load_ok(
	    "staff: a@example.org,\n"
	    "\tb@example.org\n"
	    "# a comment between continuation lines\n"
	    "    c@example.org, d@example.org\r\n"
	    "empty-first:\n"
	    " e@example.org\n"
	    "nocomma: f@example.org\n"
	    "  g@example.org");  // no final newline
	ck_assert_uint_eq(a.size(), 3);
	expect_expand(a, "staff", "a@example.org,b@example.org,c@example.org,d@example.org");
	expect_expand(a, "empty-first", "e@example.org");
	expect_expand(a, "nocomma", "f@example.org,g@example.org");
}
END_TEST

START_TEST(parse_quoted)
{
	Aliases a = load_ok(
	    "\"john doe\": jd@example.org\n"
	    "\"Weird:Name\" : weird@example.org\n"
	    "\"plain\": p@example.org\n"
	    "list: \"john doe\", \"x, y\"@example.org, \"Jane Roe\"\n");
	ck_assert_uint_eq(a.size(), 4);
	expect_expand(a, "\"john doe\"", "jd@example.org");
	expect_expand(a, "john doe", "jd@example.org");
	expect_expand(a, "\"JOHN DOE\"", "jd@example.org");
	expect_expand(a, "\"weird:name\"", "weird@example.org");
	expect_expand(a, "PLAIN", "p@example.org");
	// A quoted target without an alias stays a (quoted) local part.
	expect_expand(a, "list", "jd@example.org,\"x, y\"@example.org,\"Jane Roe\"");
}
END_TEST

START_TEST(parse_long_line)
{
	std::string dom = std::string(60, 'd') + "." + std::string(60, 'e') + "." + std::string(60, 'f') + ".example";
	std::string line = "big:";
	for (int i = 0; i < 900; i++)
		line += " user" + std::to_string(i) + "@" + dom + ",";
	ck_assert_uint_gt(line.size(), 150000);
	Aliases a = load_ok(line + "\n");
	Aliases::Expansion x = a.expand("big");
	ck_assert_uint_eq(x.addresses.size(), 900);
	expect_str(x.addresses[899], "user899@" + dom);
	ck_assert(!x.loop);
}
END_TEST

START_TEST(include_basic)
{
	std::string inc2 = put("inc2", "deep@example.org\n");
	std::string inc1 = put("inc1",
			       "# list members\n"
			       "m1@example.org\n"
			       "\n"
			       "  m2@example.org, m3@example.org  \n"
			       ":include:" + inc2 + "\n"
			       "\"|/usr/bin/archive\"\n");
	Aliases a = load_ok("list: first@example.org, :include:" + inc1 + ", last@example.org\n"
			    "quoted: \":include:" + inc2 + "\"\n");
	Aliases::Expansion x = a.expand("list");
	expect_str(join(x.addresses),
			 "first@example.org,m1@example.org,m2@example.org,m3@example.org,deep@example.org,"
			 "last@example.org");
	// A command from an include names the include's line.
	ck_assert_uint_eq(x.refused.size(), 1);
	std::string why = "|/usr/bin/archive (alias list, " + inc1 + ":6): delivery to a command is not enabled (alias_commands)";
	expect_str(x.refused[0], why);
	expect_expand(a, "quoted", "deep@example.org");
}
END_TEST

START_TEST(include_empty)
{
	std::string inc = put("empty.inc", "# nobody yet\n\n");
	Aliases a = load_ok("list: :include:" + inc + "\n");
	ck_assert_uint_eq(a.size(), 1);
	Aliases::Expansion x = a.expand("list");
	ck_assert(x.addresses.empty());  // not "list" itself: the alias exists
	ck_assert(!x.loop);
}
END_TEST

START_TEST(include_nesting)
{
	// inc1 .. inc8 nest eight deep below the main file: allowed.
	for (int i = 8; i >= 1; i--) {
		std::string body = i == 8 ? "bottom@example.org\n" : ":include:" + tmpdir + "/inc" + std::to_string(i + 1) + "\n";
		put("inc" + std::to_string(i), body);
	}
	Aliases a = load_ok("deep: :include:" + tmpdir + "/inc1\n");
	expect_expand(a, "deep", "bottom@example.org");

	// A ninth level is refused at the line that asks for it.
	put("inc8", ":include:" + tmpdir + "/inc9\n");
	put("inc9", "tooDeep@example.org\n");
	load_errors("deep: :include:" + tmpdir + "/inc1\n",
		    {tmpdir + "/inc8:1: :include: files nested too deeply (more than 8 levels): " + tmpdir + "/inc9"});
}
END_TEST

START_TEST(include_errors)
{
	std::string missing = tmpdir + "/no-such-include";
	load_errors("ok: a@example.org\n"
		    "list: a@example.org,\n"
		    "  :include:" + missing + "\n",
		    {"@:3: cannot read :include: file " + missing + ": No such file or directory"});
	load_errors("list: :include:etc/relative\n", {"@:1: :include: path must be absolute: 'etc/relative'"});
	load_errors("list: :include:\n", {"@:1: :include: path must be absolute: ''"});
	Aliases a = load_errors("list: :include:" + tmpdir + "\n",
				{"@:1: cannot read :include: file " + tmpdir + ": not a regular file"});
	// The alias is there, and its expansion says that it is incomplete:
	// not a name without an alias, whose mail would go to "list" itself.
	ck_assert(a.defines("list"));
	Aliases::Expansion x = a.expand("list");
	expect_str(x.unreadable, "cannot read :include: file " + tmpdir + ": not a regular file (" + tmpdir +
					 "/aliases:1)");
	a = load_errors("ok: a@example.org\nlist: b@example.org, :include:" + missing + "\n",
			{"@:2: cannot read :include: file " + missing + ": No such file or directory"});
	ck_assert(!a.expand("list").unreadable.empty());
	ck_assert(a.expand("ok").unreadable.empty());

	// An include that includes itself, directly or through another.
	std::string self = put("self.inc", "s@example.org\n:include:" + tmpdir + "/self.inc\n");
	a = load_errors("list: :include:" + self + "\n", {self + ":2: :include: loop: " + self});
	expect_expand(a, "list", "s@example.org");
	std::string la = tmpdir + "/loop-a.inc", lb = tmpdir + "/loop-b.inc";
	put("loop-a.inc", ":include:" + lb + "\n");
	put("loop-b.inc", ":include:" + la + "\n");
	load_errors("list: :include:" + la + "\n", {lb + ":1: :include: loop: " + la});

	// Errors inside an include name the include file and its line.
	std::string bad = put("bad.inc", "good@example.org\n\nbad@@example.org\n");
	a = load_errors("list: :include:" + bad + "\n", {bad + ":3: invalid address 'bad@@example.org'"});
	expect_expand(a, "list", "good@example.org");
}
END_TEST

START_TEST(error_messages)
{
	load_errors("just some words\n", {"@:1: expected 'name: targets'"});
	load_errors("ok: a@example.org\n: nameless@example.org\n", {"@:2: expected 'name: targets'"});
	load_errors("\"unterminated: x@example.org\n", {"@:1: expected 'name: targets'"});
	load_errors("\"quoted\" junk: x@example.org\n", {"@:1: expected 'name: targets'"});
	load_errors("a: x@example.org\nempty:\n\nb: y@example.org\n", {"@:2: alias empty has no targets"});
	load_errors("commas: , ,\n", {"@:1: alias commas has no targets"});
	load_errors("Root: a@example.org\n"
		    "other: b@example.org\n"
		    "root: c@example.org\n"
		    "  d@example.org\n"
		    "\"ROOT\": e@example.org\n",
		    {"@:3: duplicate alias root (first at line 1)", "@:5: duplicate alias ROOT (first at line 1)"});
	load_errors("two words: x@example.org\n", {"@:1: invalid alias name 'two words'"});
	load_errors("user@host: x@example.org\n", {"@:1: invalid alias name 'user@host'"});
	load_errors("a: bad address@example.org\n", {"@:1: invalid address 'bad address@example.org'"});
	load_errors("a: x@example.org\n  two words\n", {"@:2: invalid target 'two words'"});
	load_errors("a: \\\n", {"@:1: invalid target '\\'"});
	load_errors("a: \"open, x@example.org\n", {"@:1: unterminated quoted string"});
	// Text quoted in a message is cut at 80 bytes, control characters hidden.
	load_errors("a: " + std::string(100, 'x') + " y\n", {"@:1: invalid target '" + std::string(80, 'x') + "...'"});
	load_errors("a: x\x1b[2Jy z\n", {"@:1: invalid target 'x?[2Jy z'"});
	load_errors(" indented: x@example.org\n", {"@:1: continuation line without an alias before it"});
	const char nul[] = "a: x@example.org\nb: y\0z\nc: z@example.org\n";
	load_errors(std::string(nul, sizeof nul - 1), {"@:2: NUL character"});

	// The errors of a whole file come together, each with its line; the
	// entries that parsed are kept.
	Aliases a = load_errors("good: g@example.org\n"
				"nocolon\n"
				"  continuation of the bad line, skipped\n"
				"bad: ok@example.org, x y\n"
				"empty:\n"
				"good: again@example.org\n",
				{"@:2: expected 'name: targets'", "@:4: invalid target 'x y'",
				 "@:5: alias empty has no targets", "@:6: duplicate alias good (first at line 1)"});
	ck_assert_uint_eq(a.size(), 2);
	expect_expand(a, "good", "g@example.org");
	expect_expand(a, "bad", "ok@example.org");
}
END_TEST

START_TEST(main_file)
{
	// A missing file is an empty table with the defaults.
	std::vector<std::string> errors;
	Aliases a = Aliases::load(tmpdir + "/does-not-exist", &errors);
	ck_assert(errors.empty());
	ck_assert_uint_eq(a.size(), 0);
	expect_expand(a, "postmaster", "root");
	expect_expand(a, "alice", "alice");

	ck_assert(!a.unreadable());

	// A file that cannot be read is an error, and says so: its table is
	// no replacement for one read before.
	a = Aliases::load(tmpdir, &errors);
	ck_assert_uint_eq(errors.size(), 1);
	expect_str(errors[0], tmpdir + ": not a regular file");
	ck_assert_uint_eq(a.size(), 0);
	ck_assert(a.unreadable());

	// Errors without a list to put them in are dropped.
	a = Aliases::load(put("aliases", "bad\nok: o@example.org\n"), nullptr);
	ck_assert_uint_eq(a.size(), 1);
}
END_TEST

START_TEST(main_file_too_large)
{
	std::string path = tmpdir + "/huge";
	{
		std::ofstream f(path, std::ios::binary | std::ios::trunc);
		std::string chunk = "# " + std::string(1021, 'x') + "\n";  // 1 KiB
		for (int i = 0; i < 16 * 1024; i++)
			f << chunk;
		f << "#\n";
	}
	std::vector<std::string> errors;
	Aliases a = Aliases::load(path, &errors);
	ck_assert_uint_eq(errors.size(), 1);
	expect_str(errors[0], path + ": larger than 16 MiB");
	// Exactly 16 MiB is accepted.
	ck_assert_int_eq(truncate(path.c_str(), 16 * 1024 * 1024), 0);
	errors.clear();
	a = Aliases::load(path, &errors);
	ck_assert_msg(errors.empty(), "%s", errors.empty() ? "" : errors[0].c_str());
	unlink(path.c_str());
}
END_TEST

START_TEST(expand_chains)
{
	Aliases a = load_ok("a: b\n"
			    "b: c, x@example.org\n"
			    "c: carol\n"
			    "fan: a, b, c, carol, X@EXAMPLE.ORG, x@Example.Org, Carol\n");
	expect_expand(a, "a", "carol,x@example.org");
	expect_expand(a, "A", "carol,x@example.org");
	// Deduplicated in order; domains compare without case, names too.
	expect_expand(a, "fan", "carol,x@example.org,X@EXAMPLE.ORG");
	// A name without an alias is itself, as given.
	expect_expand(a, "Nobody-Here", "Nobody-Here");
	expect_expand(a, "carol", "carol");
}
END_TEST

START_TEST(expand_self)
{
	Aliases a = load_ok("root: root, admin@example.org\n"
			    "alice: \\alice, alice@example.org\n"
			    "bob: \\alice\n");
	expect_expand(a, "root", "root,admin@example.org");
	expect_expand(a, "ROOT", "root,admin@example.org");
	expect_expand(a, "alice", "alice,alice@example.org");
	// "\alice" is the user, never the alias.
	expect_expand(a, "bob", "alice");
}
END_TEST

START_TEST(expand_loops)
{
	Aliases a = load_ok("a: b\n"
			    "b: a, b@example.org\n"
			    "x: y\n"
			    "y: z\n"
			    "z: x, z@example.org\n"
			    "p: q, r\n"
			    "q: s\n"
			    "r: s\n"
			    "s: s@example.org\n");
	expect_expand(a, "a", "b@example.org", true);
	expect_expand(a, "b", "b@example.org", true);
	expect_expand(a, "x", "z@example.org", true);
	expect_expand(a, "z", "z@example.org", true);
	// Two paths to the same name are no loop.
	expect_expand(a, "p", "s@example.org");
}
END_TEST

START_TEST(expand_defaults)
{
	Aliases a = load_ok("root: admin@example.org\n");
	const char* to_root[] = {"postmaster", "nobody", "hostmaster", "usenet", "news", "webmaster",
				 "www", "ftp", "abuse", "noc", "security", "Postmaster", "ABUSE"};
	for (const char* n : to_root)
		expect_expand(a, n, "admin@example.org");
	expect_expand(a, "mailer-daemon", "admin@example.org");
	expect_expand(a, "MAILER-DAEMON", "admin@example.org");
	ck_assert_uint_eq(a.size(), 1);  // defaults are not counted

	// The file overrides a default; mailer-daemon follows postmaster.
	a = load_ok("postmaster: pm@example.org\nabuse: abuse@example.org\n");
	expect_expand(a, "postmaster", "pm@example.org");
	expect_expand(a, "mailer-daemon", "pm@example.org");
	expect_expand(a, "abuse", "abuse@example.org");
	expect_expand(a, "security", "root");
	expect_expand(a, "root", "root");
}
END_TEST

START_TEST(expand_refused)
{
	Aliases a = load_ok("archive: \"|/usr/bin/archive --all\", |/bin/true, /var/mail/archive, a@example.org\n"
			    "\"/x\": \"/var/log/quoted file\"\n"
			    "outer: archive, archive2\n"
			    "archive2: archive\n");
	std::string f = tmpdir + "/aliases";
	Aliases::Expansion x = a.expand("archive");
	expect_str(join(x.addresses), "a@example.org");
	ck_assert_uint_eq(x.refused.size(), 3);
	expect_str(x.refused[0],
			 ("|/usr/bin/archive --all (alias archive, " + f + ":1): delivery to a command is not enabled (alias_commands)"));
	expect_str(x.refused[1],
			 ("|/bin/true (alias archive, " + f + ":1): delivery to a command is not enabled (alias_commands)"));
	expect_str(x.refused[2],
			 ("/var/mail/archive (alias archive, " + f + ":1): delivery to a file is not enabled (alias_files)"));
	ck_assert(!x.loop);

	x = a.expand("/x");
	ck_assert(x.addresses.empty());
	ck_assert_uint_eq(x.refused.size(), 1);
	expect_str(x.refused[0],
			 ("/var/log/quoted file (alias /x, " + f + ":2): delivery to a file is not enabled (alias_files)"));

	// Reached twice, refused once.
	x = a.expand("outer");
	expect_str(join(x.addresses), "a@example.org");
	ck_assert_uint_eq(x.refused.size(), 3);
}
END_TEST

// With alias_commands and alias_files, commands and files become
// recipients, but only when the aliases file itself names them and it is
// root's and nobody else may write it (the suite runs as root, so the
// files it writes are root's); an :include: file never names one.
START_TEST(expand_permitted)
{
	std::string inc = put("inc", "\"|/usr/bin/from-include\", /var/log/from-include\n");
	Aliases a = load_ok("archive: \"|/usr/bin/archive --all\", /var/mail/archive, :include:" + inc +
			    ", a@example.org\n");
	laim::AliasPermit both{true, true};
	Aliases::Expansion x = a.expand("archive", both);
	expect_str(join(x.addresses), "|/usr/bin/archive --all,/var/mail/archive,a@example.org");
	ck_assert_uint_eq(x.refused.size(), 2);
	expect_str(x.refused[0], "|/usr/bin/from-include (alias archive, " + inc +
					 ":1): only the aliases file itself may name commands and files, not an "
					 ":include: file");

	// One permitted, the other not.
	x = a.expand("archive", {false, true});
	expect_str(join(x.addresses), "/var/mail/archive,a@example.org");
	ck_assert_uint_eq(x.refused.size(), 3);

	// An aliases file others may write, or another user's, names none.
	std::string f = put("aliases", "archive: \"|/usr/bin/archive\", b@example.org\n");
	ck_assert_int_eq(chmod(f.c_str(), 0664), 0);
	x = Aliases::load(f, nullptr).expand("archive", both);
	expect_str(join(x.addresses), "b@example.org");
	ck_assert_uint_eq(x.refused.size(), 1);
	expect_str(x.refused[0], "|/usr/bin/archive (alias archive, " + f +
					 ":1): the aliases file is not root's, or others may write it");
	ck_assert_int_eq(chmod(f.c_str(), 0644), 0);
	ck_assert_int_eq(chown(f.c_str(), 65534, 65534), 0);
	x = Aliases::load(f, nullptr).expand("archive", both);
	expect_str(join(x.addresses), "b@example.org");
	ck_assert_uint_eq(x.refused.size(), 1);
	ck_assert_int_eq(chown(f.c_str(), 0, 0), 0);

	// "\|cmd" is not a way around it.
	load_errors("x: \\|/bin/true\n", {"@:1: invalid target '\\|/bin/true'"});
}
END_TEST

START_TEST(expand_address_cap)
{
	std::string members;
	for (int i = 0; i < 1500; i++)
		members += "m" + std::to_string(i) + "@example.org\n";
	std::string inc = put("members.inc", members);
	Aliases a = load_ok("big: first, :include:" + inc + "\n");
	Aliases::Expansion x = a.expand("big");
	ck_assert_uint_eq(x.addresses.size(), laim::ALIASES_MAX_ADDRESSES);
	expect_str(x.addresses[0], "first");
	expect_str(x.addresses[999], "m998@example.org");
	ck_assert(!x.loop);
	expect_str(x.stopped, "expansion stopped at 1000 addresses");

	// 1000 exactly is within the cap.
	members.clear();
	for (int i = 0; i < 1000; i++)
		members += "m" + std::to_string(i) + "@example.org\n";
	put("members.inc", members);
	a = load_ok("big: :include:" + inc + "\n");
	x = a.expand("big");
	ck_assert_uint_eq(x.addresses.size(), 1000);
	ck_assert(!x.loop);
	ck_assert(x.stopped.empty());
}
END_TEST

START_TEST(expand_depth_cap)
{
	// n0 -> n1 -> ... : twenty aliases deep expand, twenty-one are cut.
	auto chain = [](int n) {
		std::string text;
		for (int i = 0; i < n; i++)
			text += "n" + std::to_string(i) + ": n" + std::to_string(i + 1) + "\n";
		text += "n" + std::to_string(n) + ": end@example.org\n";
		return text;
	};
	Aliases a = load_ok(chain(19));  // n0..n19: 20 aliases
	expect_expand(a, "n0", "end@example.org");
	ck_assert(a.expand("n0").stopped.empty());
	a = load_ok(chain(20));  // n0..n20: 21 aliases
	expect_expand(a, "n0", "");
	expect_str(a.expand("n0").stopped, "expansion stopped at 20 levels");
	expect_expand(a, "n1", "end@example.org");
}
END_TEST

// A forward map (AliasesSyntax::ForwardMap): addresses only, "name:" with
// no target defines a name that expands to nothing, no Debian defaults,
// and a missing file is an error.
START_TEST(forward_map)
{
	std::string path = put("forward.map", "admin: a@x.example\nall: a@x.example,\n  B@Y.example\ndrop:\n");
	std::vector<std::string> errors;
	Aliases m = Aliases::load(path, &errors, laim::AliasesSyntax::ForwardMap);
	ck_assert_msg(errors.empty(), "unexpected error: %s", errors.empty() ? "" : errors[0].c_str());
	ck_assert(m.defines("Admin") && m.defines("drop") && !m.defines("postmaster") && !m.defines("nobody"));
	expect_expand(m, "ALL", "a@x.example,B@Y.example");
	expect_expand(m, "drop", "");
	ck_assert_uint_eq(m.size(), 3);

	path = put("forward.map", "a: user\nb: \\user\nc: |/bin/true\nd: /var/mail/x\ne: :include:/etc/x\n"
				  "f: \"|cmd@x\"\ng: ok@x.example, \"q r\"@x.example\n");
	errors.clear();
	Aliases::load(path, &errors, laim::AliasesSyntax::ForwardMap);
	std::vector<std::string> want = {
	    ":1: expected an address (user@domain), got 'user'", ":2: expected an address (user@domain), got '\\user'",
	    ":3: expected an address (user@domain), got '|/bin/true'",
	    ":4: expected an address (user@domain), got '/var/mail/x'",
	    ":5: expected an address (user@domain), got ':include:/etc/x'",
	    ":6: expected an address (user@domain), got '\"|cmd@x\"'",
	    ":7: expected an address (user@domain), got '\"q r\"@x.example'"};
	ck_assert_uint_eq(errors.size(), want.size());
	for (size_t i = 0; i < want.size(); i++)
		expect_str(errors[i], path + want[i]);

	errors.clear();
	Aliases::load(tmpdir + "/no-such.map", &errors, laim::AliasesSyntax::ForwardMap);
	ck_assert_uint_eq(errors.size(), 1);
	expect_str(errors[0], tmpdir + "/no-such.map: No such file or directory");
	// /etc/aliases: the same lines are an error, the defaults are there.
	Aliases a = load_errors("drop:\n", {"@:1: alias drop has no targets"});
	ck_assert(a.defines("postmaster") && !a.defines("drop"));
}
END_TEST

int main()
{
	char tmpl[] = "/tmp/test_aliases.XXXXXX";
	if (mkdtemp(tmpl) == nullptr)
		return EXIT_FAILURE;
	tmpdir = tmpl;

	Suite* s = suite_create("aliases");
	TCase* parse = tcase_create("parse");
	tcase_set_timeout(parse, 30);
	tcase_add_test(parse, parse_basic);
	tcase_add_test(parse, parse_continuation);
	tcase_add_test(parse, parse_quoted);
	tcase_add_test(parse, parse_long_line);
	tcase_add_test(parse, include_basic);
	tcase_add_test(parse, include_empty);
	tcase_add_test(parse, include_nesting);
	tcase_add_test(parse, include_errors);
	tcase_add_test(parse, error_messages);
	tcase_add_test(parse, main_file);
	tcase_add_test(parse, main_file_too_large);
	tcase_add_test(parse, forward_map);
	suite_add_tcase(s, parse);
	TCase* expand = tcase_create("expand");
	tcase_add_test(expand, expand_chains);
	tcase_add_test(expand, expand_self);
	tcase_add_test(expand, expand_loops);
	tcase_add_test(expand, expand_defaults);
	tcase_add_test(expand, expand_refused);
	tcase_add_test(expand, expand_permitted);
	tcase_add_test(expand, expand_address_cap);
	tcase_add_test(expand, expand_depth_cap);
	suite_add_tcase(s, expand);

	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	std::string rm = "rm -rf '" + tmpdir + "'";
	if (system(rm.c_str()) != 0)
		failed++;
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
