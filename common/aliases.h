// The aliases table: /etc/aliases in the format of aliases(5) as Debian's
// sendmail and Postfix read it.
//
//   # comment
//   postmaster: root
//   root: admin@example.org, "john doe",
//       \alice, :include:/etc/mail/staff
//
// A logical line is "name: target, target"; a line that starts with
// whitespace continues it; blank lines and lines whose first non-blank
// character is '#' are skipped. Names are local parts (quoted or not),
// compared case-insensitively. Targets are:
//   name, "quoted local"    another alias, or a local user when none
//   \name                   a local user, never expanded again
//   local@domain            an address, kept as written
//   :include:/abs/path      the targets listed in that file (one or more
//                           per line, '#' comments), read when loading;
//                           one that cannot be read defers the alias
//   |command, "|command"    delivery to a command
//   /path/file              delivery to a file
// A command or file is delivered only when the caller permits it (the
// alias_commands and alias_files keys) and the aliases file itself lists
// it, that file being owned by root and writable by nobody else (as with
// Postfix's default allow_mail_to_commands, :include: files never name
// one: they may be users' lists, and a path can lead anywhere, /proc
// included). expand() then returns it as the recipient "|command" or
// "/path/file" (which no address accepted from a client may look like:
// see alias_delivery()). Otherwise it is in Expansion::refused with the
// reason, and the caller logs it.
//
// Used by the handler process (expansion at RCPT time, reloaded on
// "reload aliases"), by newaliases (check and count), by the parent
// (root's mailbox, alias commands), and for the map of the forward
// handler, whose syntax is stricter (AliasesSyntax::ForwardMap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace laim {

// Limits: a single file, all files of one load together, include nesting,
// and what one expansion may produce.
constexpr size_t ALIASES_MAX_FILE = 16 * 1024 * 1024;
constexpr size_t ALIASES_MAX_TOTAL = 64 * 1024 * 1024;
constexpr int ALIASES_MAX_INCLUDE_DEPTH = 8;
constexpr size_t ALIASES_MAX_ADDRESSES = 1000;
constexpr size_t ALIASES_MAX_DEPTH = 20;

// What expansion may produce besides addresses.
struct AliasPermit {
	bool commands = false;
	bool files = false;
};

// The recipient is an alias delivery ("|command" or "/file"), which only
// expansion may produce: a client's recipient that looks like one is refused.
inline bool alias_delivery(std::string_view rcpt)
{
	return !rcpt.empty() && (rcpt.front() == '|' || rcpt.front() == '/');
}

// What a file in aliases syntax may hold.
enum class AliasesSyntax {
	Aliases,     // /etc/aliases: all of the above, Debian's default aliases
		     // for the names it leaves out, a missing file is empty
	ForwardMap,  // a forward map: "name: user@domain, ..." (addresses only,
		     // no :include:, command or file), "name:" with no target
		     // (its mail is dropped), no defaults, a missing file is an error
};

class Aliases {
 public:
	// Parses path (and its :include: files, read when loading); errors
	// are "FILE:LINE: what" ("FILE: what" for the file as a whole) and
	// are appended to *errors when errors is not null. A missing main file
	// is an empty table (the built-in defaults only), not an error; one
	// that exists but cannot be read is an error and unreadable() is then
	// true. The entries that parsed are kept even when there are errors.
	static Aliases load(const std::string& path, std::vector<std::string>* errors,
			    AliasesSyntax syntax = AliasesSyntax::Aliases);

	struct Expansion {
		std::vector<std::string> addresses;  // final recipients, deduplicated, in order
		std::vector<std::string> refused;    // "|cmd" or "/file" targets, with why
		bool loop = false;                   // a name on its own path was cut (logged by the caller)
		// When not empty, addresses are incomplete and must not be used:
		std::string stopped;     // "expansion stopped at N addresses" (or levels)
		std::string unreadable;  // an :include: file could not be read: which, why, where
	};

	// Expands a local part recursively; a name without an alias expands
	// to itself. Lookup is case-insensitive; a quoted local part
	// ("\"john doe\"") is looked up unquoted. A target equal to the name
	// being expanded ("root: root, admin@x") is delivered as it is; a name
	// already on the current expansion path is cut (loop). Expansion stops
	// at ALIASES_MAX_DEPTH levels and ALIASES_MAX_ADDRESSES addresses
	// (stopped says so), and an :include: file that could not be read
	// makes it incomplete too (unreadable).
	Expansion expand(std::string_view local, AliasPermit permit = {}) const;

	// The number of aliases defined by the file (defaults not counted).
	size_t size() const;
	// True when the main file exists but could not be read: the table
	// holds the built-in defaults only, and is no replacement for one
	// read before.
	bool unreadable() const { return unreadable_; }
	// True when the file, or Debian's defaults for /etc/aliases, define
	// the local part (looked up as expand() does).
	bool defines(std::string_view local) const;

	// True when target ("|command" or "/file") is one that expand() may
	// return: named by the aliases file itself, root's and writable by
	// nobody else. The root parent asks before it runs an alias command
	// the handler process names.
	bool lists(std::string_view target) const;

 private:
	struct Target {
		enum class Kind { Name, Local, Address, Command, File, Unreadable };
		Kind kind = Kind::Name;
		std::string text;  // as written (Local: without the backslash; Command, File: unquoted;
				   // Unreadable: the :include: file and why)
		std::string key;   // Name: the lookup key
		uint32_t file = 0;  // index in files_, for messages
		uint32_t line = 0;
		bool included = false;  // read from an :include: file
	};
	struct Entry {
		std::string name;  // as written, unquoted
		std::vector<Target> targets;
	};
	class Loader;
	struct Walk;

	const Entry* find(const std::string& key) const;
	void walk(const Entry& e, const std::string& key, Walk& w) const;
	void deliver_to(const Entry& e, const Target& t, Walk& w) const;

	std::unordered_map<std::string, Entry> table_;  // by lookup key
	std::vector<std::string> files_;                 // paths read, for messages
	bool main_root_owned_ = false;  // the aliases file: root's, not writable by others
	bool unreadable_ = false;       // the aliases file exists but could not be read
	AliasesSyntax syntax_ = AliasesSyntax::Aliases;
};

}  // namespace laim
