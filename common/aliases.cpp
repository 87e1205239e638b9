// The aliases table: parsing /etc/aliases and its :include: files, and
// the recursive expansion of a local part; see aliases.h.
#include "common/aliases.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "common/address.h"
#include "common/fd.h"
#include "common/text.h"

namespace laim {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s)
{
	while (!s.empty() && is_blank(s.front()))
		s.remove_prefix(1);
	while (!s.empty() && is_blank(s.back()))
		s.remove_suffix(1);
	return s;
}

// ASCII lower case; UTF-8 bytes are left alone.
std::string lower(std::string_view s)
{
	std::string r(s);
	for (char& c : r)
		if (c >= 'A' && c <= 'Z')
			c = char(c - 'A' + 'a');
	return r;
}

// Text from the file for an error message: at most 80 bytes, control
// characters shown as '?', so that a message stays one short line.
std::string shown(std::string_view s)
{
	constexpr size_t max = 80;
	std::string r(s.substr(0, max));
	for (char& c : r)
		if ((unsigned char)c < 32 || c == 127)
			c = '?';
	if (s.size() > max)
		r += "...";
	return "'" + r + "'";
}

// The index of the '"' closing the quoted string that starts at s[0], or
// npos. A backslash quotes the next character (RFC 5321 quoted-pairSMTP).
size_t closing_quote(std::string_view s)
{
	for (size_t i = 1; i < s.size(); i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i;
	}
	return std::string_view::npos;
}

// True when s is one quoted string, nothing before or after it.
bool is_quoted(std::string_view s)
{
	return s.size() >= 2 && s.front() == '"' && closing_quote(s) == s.size() - 1;
}

// The lookup key of a local part: unquoted, lower case, so that "Root",
// root and "root" are the same alias.
std::string name_key(std::string_view local)
{
	return lower(is_quoted(local) ? std::string_view(local_part_text(local)) : local);
}

// The key that deduplicates an address: the domain is case-insensitive
// (RFC 5321 2.4), the local part is kept as written.
std::string address_key(std::string_view addr)
{
	size_t at = addr.rfind('@');
	return std::string(addr.substr(0, at + 1)) + lower(addr.substr(at + 1));
}

// A bare local part (no domain), quoted or not, as RFC 5321 4.1.2 has it.
bool valid_local(std::string_view s)
{
	if (s.empty())
		return false;
	if (s.front() == '"')
		return is_quoted(s) && valid_mailbox(s, true, true);
	return s.find('@') == std::string_view::npos && valid_mailbox(s, true, true);
}

// Splits a target list at the commas outside quoted strings; false when a
// quoted string does not end.
bool split_targets(std::string_view s, std::vector<std::string_view>& out)
{
	size_t start = 0;
	bool quoted = false;
	for (size_t i = 0; i < s.size(); i++) {
		if (quoted && s[i] == '\\')
			i++;
		else if (s[i] == '"')
			quoted = !quoted;
		else if (s[i] == ',' && !quoted) {
			out.push_back(trim(s.substr(start, i - start)));
			start = i + 1;
		}
	}
	if (quoted)
		return false;
	out.push_back(trim(s.substr(start)));
	return true;
}

// The physical lines of a file, numbered from 1, without the line end
// (LF or CRLF).
class LineReader {
 public:
	explicit LineReader(std::string_view text) : rest_(text) {}

	bool next(std::string_view& line)
	{
		if (rest_.empty())
			return false;
		size_t nl = rest_.find('\n');
		line = rest_.substr(0, nl);
		rest_.remove_prefix(nl == std::string_view::npos ? rest_.size() : nl + 1);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		number_++;
		return true;
	}
	uint32_t number() const { return number_; }

 private:
	std::string_view rest_;
	uint32_t number_ = 0;
};

}  // namespace

// Reads the files of one load and fills the table; collects the errors.
class Aliases::Loader {
 public:
	Loader(Aliases& a, std::vector<std::string>* errors) : a_(a), errors_(errors) {}
	void load_main(const std::string& path);

 private:
	enum class Read { Ok, Missing, Failed };

	// The entry being read: the name line and its continuation lines.
	struct Pending {
		enum class State { None, Active, Bad } state = State::None;
		std::string key;
		Entry entry;
		uint32_t line = 0;
		size_t written = 0;  // targets written, valid or not
		size_t errors_at_start = 0;
	};

	Read read_file(const std::string& path, std::string& text, std::string& why, bool* root_owned = nullptr);
	uint32_t add_file(const std::string& path);
	void error(uint32_t file, uint32_t line, const std::string& what);
	void name_line(std::string_view line, uint32_t n);
	void finish();
	void add_targets(std::string_view list, uint32_t file, uint32_t line, int depth);
	void add_target(std::string_view t, uint32_t file, uint32_t line, int depth);
	void include(std::string_view path, uint32_t file, uint32_t line, int depth);

	Aliases& a_;
	std::vector<std::string>* errors_;
	size_t nerrors_ = 0;
	size_t total_ = 0;  // bytes read by this load, all files
	Pending p_;
	std::unordered_map<std::string, uint32_t> first_line_;  // every name seen, valid or not
	std::unordered_map<std::string, uint32_t> file_index_;
	std::vector<std::string> include_stack_;
};

uint32_t Aliases::Loader::add_file(const std::string& path)
{
	auto [it, added] = file_index_.emplace(path, uint32_t(a_.files_.size()));
	if (added)
		a_.files_.push_back(path);
	return it->second;
}

void Aliases::Loader::error(uint32_t file, uint32_t line, const std::string& what)
{
	nerrors_++;
	if (errors_ != nullptr)
		errors_->push_back(a_.files_[file] + ":" + std::to_string(line) + ": " + what);
}

// Reads a whole regular file, within ALIASES_MAX_FILE and what is left of
// ALIASES_MAX_TOTAL. O_NONBLOCK so that a FIFO put in place of the file
// cannot stall the handler process; it is then refused by the type check.
// *root_owned, when given, tells whether root owns the file and nobody
// else may write it.
Aliases::Loader::Read Aliases::Loader::read_file(const std::string& path, std::string& text, std::string& why,
						  bool* root_owned)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
	if (!fd) {
		why = std::strerror(errno);
		return errno == ENOENT ? Read::Missing : Read::Failed;
	}
	struct stat st;
	if (fstat(fd.get(), &st) == -1) {
		why = std::strerror(errno);
		return Read::Failed;
	}
	if (!S_ISREG(st.st_mode)) {
		why = "not a regular file";
		return Read::Failed;
	}
	if (root_owned != nullptr)
		*root_owned = st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
	size_t limit = std::min(ALIASES_MAX_FILE, ALIASES_MAX_TOTAL - total_);
	text.clear();
	char buf[65536];
	for (;;) {
		ssize_t n = ::read(fd.get(), buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			why = std::strerror(errno);
			return Read::Failed;
		}
		if (n == 0)
			break;
		if (text.size() + size_t(n) > limit) {
			why = limit == ALIASES_MAX_FILE ? "larger than 16 MiB"
							: "the aliases files are larger than 64 MiB in total";
			return Read::Failed;
		}
		text.append(buf, size_t(n));
	}
	total_ += text.size();
	return Read::Ok;
}

// Reads the main file line by line: name lines start an entry, lines
// starting with whitespace continue it (aliases(5)).
void Aliases::Loader::load_main(const std::string& path)
{
	uint32_t file = add_file(path);
	std::string text, why;
	Read r = read_file(path, text, why, &a_.main_root_owned_);
	if (r == Read::Missing && a_.syntax_ == AliasesSyntax::Aliases)
		return;
	if (r != Read::Ok) {
		a_.unreadable_ = r == Read::Failed;
		nerrors_++;
		if (errors_ != nullptr)
			errors_->push_back(path + ": " + why);
		return;
	}
	LineReader lines(text);
	std::string_view line;
	while (lines.next(line)) {
		uint32_t n = lines.number();
		bool continuation = !line.empty() && is_blank(line.front());
		std::string_view body = trim(line);
		if (body.empty() || body.front() == '#')
			continue;
		if (line.find('\0') != std::string_view::npos) {
			error(file, n, "NUL character");
			if (!continuation) {
				finish();
				p_.state = Pending::State::Bad;
			}
			continue;
		}
		if (!continuation) {
			finish();
			name_line(body, n);
			continue;
		}
		if (p_.state == Pending::State::None)
			error(file, n, "continuation line without an alias before it");
		else if (p_.state == Pending::State::Active)
			add_targets(body, file, n, 0);
		// Bad: the entry was reported already; its lines are skipped.
	}
	finish();
}

// "name: targets": starts a new entry. The name is a local part, quoted or
// not; the same name twice is an error (Postfix warns and keeps the first).
void Aliases::Loader::name_line(std::string_view line, uint32_t n)
{
	p_ = Pending();
	p_.state = Pending::State::Bad;
	p_.errors_at_start = nerrors_;
	size_t colon;
	if (line.front() == '"') {
		size_t q = closing_quote(line);
		colon = q == std::string_view::npos ? q : line.find_first_not_of(" \t", q + 1);
		if (colon != std::string_view::npos && line[colon] != ':')
			colon = std::string_view::npos;
	} else {
		colon = line.find(':');
	}
	if (colon == std::string_view::npos) {
		error(0, n, "expected 'name: targets'");
		return;
	}
	std::string_view name = trim(line.substr(0, colon));
	if (name.empty()) {
		error(0, n, "expected 'name: targets'");
		return;
	}
	if (!valid_local(name)) {
		error(0, n, "invalid alias name " + shown(name));
		return;
	}
	std::string written = is_quoted(name) ? local_part_text(name) : std::string(name);
	p_.key = lower(written);
	auto [it, added] = first_line_.emplace(p_.key, n);
	if (!added) {
		error(0, n, "duplicate alias " + written + " (first at line " + std::to_string(it->second) + ")");
		return;
	}
	p_.state = Pending::State::Active;
	p_.entry.name = written;
	p_.line = n;
	add_targets(line.substr(colon + 1), 0, n, 0);
}

// Ends the pending entry: an entry must list at least one target (but
// in a forward map, where "name:" drops its mail). One whose targets were
// all wrong is left out (the errors say why); one whose :include: files
// are empty expands to nothing.
void Aliases::Loader::finish()
{
	if (p_.state != Pending::State::Active) {
		p_.state = Pending::State::None;
		return;
	}
	p_.state = Pending::State::None;
	if (p_.written == 0 && a_.syntax_ != AliasesSyntax::ForwardMap) {
		error(0, p_.line, "alias " + p_.entry.name + " has no targets");
		return;
	}
	if (!p_.entry.targets.empty() || nerrors_ == p_.errors_at_start)
		a_.table_.emplace(std::move(p_.key), std::move(p_.entry));
}

// Adds the comma-separated targets of one physical line to the pending
// entry; empty items (trailing commas before a continuation) are skipped.
void Aliases::Loader::add_targets(std::string_view list, uint32_t file, uint32_t line, int depth)
{
	std::vector<std::string_view> items;
	if (!split_targets(list, items)) {
		p_.written++;  // reported here, not again as "no targets"
		error(file, line, "unterminated quoted string");
		return;
	}
	for (std::string_view t : items) {
		if (t.empty())
			continue;
		p_.written++;
		add_target(t, file, line, depth);
	}
}

// Classifies one target. A quoted target may hold a command, a file or an
// include ("\"|cmd arg\""); otherwise it is a quoted local part.
void Aliases::Loader::add_target(std::string_view t, uint32_t file, uint32_t line, int depth)
{
	// A forward map's targets are addresses: nothing else starts so.
	bool address = t.find('@') != std::string_view::npos && std::string_view("\"|/\\:").find(t.front()) == t.npos;
	if (a_.syntax_ == AliasesSyntax::ForwardMap && !address) {
		error(file, line, "expected an address (user@domain), got " + shown(t));
		return;
	}
	std::string inner = is_quoted(t) ? local_part_text(t) : std::string(t);
	Target target;
	target.text = t;
	target.file = file;
	target.line = line;
	target.included = depth > 0;
	if (inner.starts_with('|')) {
		target.kind = Target::Kind::Command;
		target.text = inner;
	} else if (inner.starts_with('/')) {
		target.kind = Target::Kind::File;
		target.text = inner;
	} else if (istarts(inner, ":include:")) {
		include(trim(std::string_view(inner).substr(9)), file, line, depth);
		return;
	} else if (t.front() == '\\') {
		// sendmail's "\user": deliver to the user, do not look it up again.
		std::string_view user = t.substr(1);
		if (user.empty() || !valid_local(user) || alias_delivery(user)) {
			error(file, line, "invalid target " + shown(t));
			return;
		}
		target.kind = Target::Kind::Local;
		target.text = user;
	} else if (!is_quoted(t) && t.find('@') != std::string_view::npos) {
		if (!valid_mailbox(t, true, false)) {
			error(file, line, "invalid address " + shown(t));
			return;
		}
		target.kind = Target::Kind::Address;
	} else {
		if (!valid_local(t)) {
			error(file, line, "invalid target " + shown(t));
			return;
		}
		target.kind = Target::Kind::Name;
		target.key = name_key(t);
	}
	p_.entry.targets.push_back(std::move(target));
}

// ":include:/path": the targets listed in that file, one or more per line,
// with '#' comments, read now. Errors about the file itself name the line
// that includes it; errors inside it name its own lines.
void Aliases::Loader::include(std::string_view path_sv, uint32_t file, uint32_t line, int depth)
{
	std::string path(path_sv);
	if (path.empty() || path.front() != '/') {
		error(file, line, ":include: path must be absolute: " + shown(path));
		return;
	}
	if (depth >= ALIASES_MAX_INCLUDE_DEPTH) {
		error(file, line, ":include: files nested too deeply (more than " +
					  std::to_string(ALIASES_MAX_INCLUDE_DEPTH) + " levels): " + path);
		return;
	}
	for (const std::string& open : include_stack_) {
		if (open == path) {
			error(file, line, ":include: loop: " + path);
			return;
		}
	}
	std::string text, why;
	if (read_file(path, text, why) != Read::Ok) {
		// Kept as a target, so that the alias is deferred, not taken
		// for a name without an alias.
		Target t;
		t.kind = Target::Kind::Unreadable;
		t.text = "cannot read :include: file " + path + ": " + why;
		t.file = file;
		t.line = line;
		p_.entry.targets.push_back(t);
		error(file, line, t.text);
		return;
	}
	uint32_t inc = add_file(path);
	include_stack_.push_back(path);
	LineReader lines(text);
	std::string_view l;
	while (lines.next(l)) {
		std::string_view body = trim(l);
		if (body.empty() || body.front() == '#')
			continue;
		if (body.find('\0') != std::string_view::npos) {
			error(inc, lines.number(), "NUL character");
			continue;
		}
		add_targets(body, inc, lines.number(), depth + 1);
	}
	include_stack_.pop_back();
}

Aliases Aliases::load(const std::string& path, std::vector<std::string>* errors, AliasesSyntax syntax)
{
	Aliases a;
	a.syntax_ = syntax;
	Loader(a, errors).load_main(path);
	return a;
}

size_t Aliases::size() const
{
	return table_.size();
}

bool Aliases::defines(std::string_view local) const
{
	return find(name_key(local)) != nullptr;
}

// The entry for key: the file's, else Debian's built-in default (the names
// RFC 2142 and RFC 5321 4.5.1 want to reach somebody).
const Aliases::Entry* Aliases::find(const std::string& key) const
{
	auto it = table_.find(key);
	if (it != table_.end() || syntax_ == AliasesSyntax::ForwardMap)
		return it == table_.end() ? nullptr : &it->second;
	static const std::unordered_map<std::string, Entry> defaults = [] {
		auto to = [](const char* name, const char* target) {
			Target t;
			t.kind = Target::Kind::Name;
			t.text = target;
			t.key = target;
			return Entry{name, {t}};
		};
		std::unordered_map<std::string, Entry> d;
		d.emplace("mailer-daemon", to("mailer-daemon", "postmaster"));
		for (const char* n : {"postmaster", "nobody", "hostmaster", "usenet", "news", "webmaster", "www", "ftp",
				      "abuse", "noc", "security"})
			d.emplace(n, to(n, "root"));
		return d;
	}();
	auto d = defaults.find(key);
	return d == defaults.end() ? nullptr : &d->second;
}

// The state of one expansion: the result, what is already in it, and the
// names on the current path (a loop) or expanded already (nothing new).
struct Aliases::Walk {
	AliasPermit permit;
	Expansion out;
	std::unordered_set<std::string> addresses;
	std::unordered_set<std::string> refused;
	std::unordered_set<std::string> expanded;
	std::vector<std::string> path;
	bool full = false;

	void add(const std::string& text, std::string key)
	{
		if (full || !addresses.insert(std::move(key)).second)
			return;
		if (out.addresses.size() >= ALIASES_MAX_ADDRESSES) {
			full = true;
			out.stopped = "expansion stopped at " + std::to_string(ALIASES_MAX_ADDRESSES) + " addresses";
			return;
		}
		out.addresses.push_back(text);
	}
	bool on_path(const std::string& key) const
	{
		for (const std::string& k : path)
			if (k == key)
				return true;
		return false;
	}
};

// A command or file target: a recipient when permitted and listed by the
// aliases file itself, which only root can change (the command runs as
// nobody, the file is written as the laim user); else refused with where
// and why.
void Aliases::deliver_to(const Entry& e, const Target& t, Walk& w) const
{
	bool command = t.kind == Target::Kind::Command;
	const char* why = nullptr;
	if (!(command ? w.permit.commands : w.permit.files))
		why = command ? "delivery to a command is not enabled (alias_commands)"
			      : "delivery to a file is not enabled (alias_files)";
	else if (t.included)
		why = "only the aliases file itself may name commands and files, not an :include: file";
	else if (!main_root_owned_)
		why = "the aliases file is not root's, or others may write it";
	if (why == nullptr) {
		w.add(t.text, t.text);
		return;
	}
	std::string where = t.text + " (alias " + e.name + ", " + files_[t.file] + ":" + std::to_string(t.line) +
			    "): " + why;
	if (w.refused.insert(where).second)
		w.out.refused.push_back(std::move(where));
}

// Depth-first expansion of entry e (lookup key `key`, on w.path). A name
// met twice off the path is not expanded again: its addresses are in.
void Aliases::walk(const Entry& e, const std::string& key, Walk& w) const
{
	for (const Target& t : e.targets) {
		if (w.full)
			return;
		switch (t.kind) {
		case Target::Kind::Command:
		case Target::Kind::File:
			deliver_to(e, t, w);
			break;
		case Target::Kind::Address:
			w.add(t.text, address_key(t.text));
			break;
		case Target::Kind::Local:
			w.add(t.text, name_key(t.text));
			break;
		case Target::Kind::Unreadable:
			if (w.out.unreadable.empty())
				w.out.unreadable = t.text + " (" + files_[t.file] + ":" + std::to_string(t.line) + ")";
			break;
		case Target::Kind::Name: {
			if (t.key == key) {
				w.add(t.text, t.key);  // "root: root": the user itself
				break;
			}
			if (w.on_path(t.key)) {
				w.out.loop = true;
				break;
			}
			if (w.expanded.count(t.key) != 0)
				break;
			const Entry* sub = find(t.key);
			if (sub == nullptr) {
				w.add(t.text, t.key);
				break;
			}
			if (w.path.size() >= ALIASES_MAX_DEPTH) {
				w.out.stopped = "expansion stopped at " + std::to_string(ALIASES_MAX_DEPTH) + " levels";
				break;
			}
			w.expanded.insert(t.key);
			w.path.push_back(t.key);
			walk(*sub, t.key, w);
			w.path.pop_back();
			break;
		}
		}
	}
}

bool Aliases::lists(std::string_view target) const
{
	if (!main_root_owned_)
		return false;
	for (const auto& [key, e] : table_)
		for (const Target& t : e.targets)
			if ((t.kind == Target::Kind::Command || t.kind == Target::Kind::File) && !t.included &&
			    t.text == target)
				return true;
	return false;
}

Aliases::Expansion Aliases::expand(std::string_view local, AliasPermit permit) const
{
	std::string key = name_key(local);
	const Entry* e = find(key);
	if (e == nullptr) {
		Expansion x;
		x.addresses.emplace_back(local);
		return x;
	}
	Walk w;
	w.permit = permit;
	w.expanded.insert(key);
	w.path.push_back(key);
	walk(*e, key, w);
	return std::move(w.out);
}

}  // namespace laim
