// The configuration: /etc/laim/config.yml, parsed with libyaml.
//
// Every error names the file, the line and the key:
//   /etc/laim/config.yml:12: max_queue_size: expected a positive integer
// The parent parses the file as root; the handler process parses the same
// text again (passed over imsg) on SIGHUP, so parsing has no side effects.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace laim {

// A parse or validation error; what() is "FILE:LINE: key: what is wrong".
class ConfigError : public std::runtime_error {
 public:
	ConfigError(const std::string& file, int line, const std::string& key, const std::string& what);
	explicit ConfigError(const std::string& msg) : std::runtime_error(msg) {}
};

// A YAML document as a plain tree with the line of every node, so that
// handler classes can validate their own section with precise errors.
struct YamlNode {
	enum class Kind { Null, Scalar, Sequence, Mapping };
	Kind kind = Kind::Null;
	std::string value;  // Scalar
	int line = 0;       // 1-based line where the node starts
	bool quoted = false;  // Scalar was written quoted ('..' or "..")
	std::vector<YamlNode> items;  // Sequence
	std::vector<std::pair<std::string, YamlNode>> entries;  // Mapping, in file order; key lines are entries[i].second.line
	std::vector<int> key_lines;  // Mapping: line of each key, parallel to entries

	// Declared here, defaulted in config.cpp where YamlNode is complete:
	// implicit ones would make std::pair<std::string, YamlNode> ask
	// whether the still-incomplete YamlNode is default constructible,
	// which clang++ with libstdc++ rejects.
	YamlNode();
	YamlNode(const YamlNode&);
	YamlNode(YamlNode&&) noexcept;
	YamlNode& operator=(const YamlNode&);
	YamlNode& operator=(YamlNode&&) noexcept;
	~YamlNode();

	const YamlNode* find(std::string_view key) const;
};

// Parses YAML text into a tree; throws ConfigError (file:line: what).
YamlNode yaml_parse(std::string_view text, const std::string& file);

// A file a listen: entry names, with the line of its key for errors.
struct ListenFile {
	std::string path;  // empty: not given
	int line = 0;
};

// One entry of listen:. A string gives only the address; a mapping may
// add TLS and authentication, which a listener for other hosts must have
// (doc/architecture.md, "TLS" and "AUTH").
struct ListenAddress {
	enum class Tls { None, Starttls, Implicit };
	std::string host;  // numeric IPv4 or IPv6 address, no brackets
	uint16_t port = 25;
	int line = 0;
	std::string name;  // "listen[1]", as errors name the entry
	Tls tls = Tls::None;
	ListenFile cert;     // PEM certificate chain, leaf first
	ListenFile key;      // PEM private key (RSA or ECDSA); only the parent reads it
	bool auth_required = false;  // auth: required
	ListenFile users;    // user:crypt(3) hash lines
	ListenFile senders;  // optional: the envelope senders each user may use

	// 127.0.0.0/8 or ::1.
	bool loopback() const;
};

// Whether host is a numeric loopback address, 127.0.0.0/8 or ::1 (no
// brackets): what the listeners and smarthost's tls: none allow.
bool loopback_address(const std::string& host);

struct HandlerSection {
	std::string name;  // instance name: the key under handlers:
	std::string type;  // registered handler class
	int line = 0;      // line of the instance name
	YamlNode options;  // the whole mapping, "type" included
};

struct Route {
	std::string match;  // "*", "*@domain", "local@*" or an exact address
	std::vector<std::string> handlers;  // instance names, in order
	int line = 0;
};

// One entry of rate_limits: how much mail one key (a local uid, an
// envelope sender, a client address) may send in a window, judged at MAIL
// (handler/ratelimit.h has the counting).
struct RateLimit {
	enum class Key { Uid, Sender, Client, Auth };
	Key key = Key::Uid;
	uint64_t count = 0;          // messages (or recipients) per window
	uint32_t window = 0;         // seconds
	bool per_recipient = false;  // per: recipient; else per: message
	bool strict = false;         // mode: strict counts refused attempts too; else leaky
	std::string alert;           // handler instance for the alert, "" for none
	int line = 0;
};
// "uid", "sender", "client" or "auth", as the config spells them.
const char* rate_limit_key_name(RateLimit::Key key);

// The user alias commands run as: Postfix's default_privs, since laim
// takes commands only from an aliases file that root owns.
inline constexpr const char* ALIAS_COMMAND_USER = "nobody";

// The largest delivery_timeout: a day.
constexpr uint32_t DELIVERY_TIMEOUT_MAX = 86400;
// The largest max_sessions: far beyond any open file limit, and far from
// the wrap of the smtp process's 32-bit sums (the local socket's reserve
// is added to it).
constexpr uint32_t MAX_SESSIONS_MAX = 1000000;

struct Config {
	std::string file;  // the path it was read from, for messages
	std::vector<ListenAddress> listen;  // default 127.0.0.1:25 and [::1]:25
	std::string socket;  // local submission socket; default LAIM_SOCKET
	std::string control_socket;  // laimctl, mailq; default LAIM_CONTROL_SOCKET
	std::string user = "laim";  // the handler process's user; owns the spool
	std::string smtp_user = "laim-smtp";  // the smtp process's user; owns nothing
	int user_line = 0, smtp_user_line = 0;  // where the file sets them; 0: the default
	int spool_line = 0, socket_line = 0, control_socket_line = 0;  // likewise
	std::string hostname;  // empty: /etc/mailname or the FQDN, resolved once at start
	std::string ident;     // default "laim VERSION"
	uint32_t max_queue_size = 50;  // messages in flight: not those deferred
	uint32_t max_deferred = 10000;  // messages waiting for a retry
	uint32_t queue_full_wait = 10;        // seconds a MAIL waits for room, then 452
	uint64_t data_size_limit = 33554432;  // 0 = no limit
	uint32_t hop_count_limit = 50;        // more Received: fields: a mail loop, refused
	uint32_t timeout = 300;               // seconds between commands
	bool enable_smtputf8 = true;
	std::string spool;    // default LAIM_SPOOL_DIR
	std::string aliases = "/etc/aliases";
	std::string mail_dir = "/var/mail";  // users' mboxes, for the mbox handler
	int mail_dir_line = 0;               // where the file sets it; 0: the default
	bool alias_commands = false;  // deliver "|command" targets of root's aliases files
	int alias_commands_line = 0;  // where the file sets it
	bool alias_files = false;     // deliver "/file" targets of root's aliases files
	uint32_t max_sessions = 100;       // at most MAX_SESSIONS_MAX
	uint32_t greeting_delay = 0;       // milliseconds before the 220 (pregreet check)
	uint32_t retry_initial = 60;       // seconds before the first retry
	uint32_t retry_max = 3600;         // cap of the exponential back-off
	uint64_t max_queue_age = 345600;   // seconds; then the message fails (4 days)
	uint32_t delivery_timeout = 300;   // seconds one handler call may take, at most DELIVERY_TIMEOUT_MAX
	std::vector<HandlerSection> handlers;
	std::vector<Route> routes;
	std::vector<RateLimit> rate_limits;

	const HandlerSection* find_handler(std::string_view name) const;
};

// Parses and validates configuration text (core keys, handler sections'
// shape, routes naming existing instances). The type names and each
// type's options are validated by handlers_create() (handler/api/), which
// needs the registry. Throws ConfigError.
Config config_parse(std::string_view text, const std::string& file);

// Reads the file, refusing one not owned by root or writable by group or
// others (ConfigError); *world_readable is set when others may read it.
// Returns the text; parse it with config_parse.
std::string config_read(const std::string& file, bool* world_readable);

// What a file the root parent reads (the config, a secret file) must be:
// a regular file, not a symbolic link, owned by root, without the
// `forbidden` mode bits, at most max_size bytes.
struct RootFileRule {
	const char* what;       // "config": errors say "FILE: refusing config: why"
	mode_t forbidden;       // S_IWGRP | S_IWOTH, ...
	const char* mode_rule;  // those bits in words: "not writable by group or others"
	const char* fix;        // appended to the ownership refusal, or ""
	size_t max_size;
	bool follow_links = false;  // a symbolic link to such a file is fine (certbot's live/)
};
// Reads file by rule (ConfigError saying which part it breaks); *mode,
// when given, gets the file's mode.
std::string read_root_file(const std::string& file, const RootFileRule& rule, mode_t* mode = nullptr);

// How the parent reads a listener's private key, users and senders files:
// owned by root, no access for group or others.
extern const RootFileRule listen_secret_rule;

// The files of the listen: entries, as laimd -n and every (re)load check
// them: the key, users and senders files by listen_secret_rule, the
// certificate readable. Throws ConfigError naming file, line and key.
void listen_check_files(const Config& cfg);

// The user and smtp_user, as laimd -n and every (re)load check them: each
// exists, neither is root, and their uids differ (the smtp process must
// not be able to signal the handler process); no command runs as either
// of them: no pipe handler's user, and not ALIAS_COMMAND_USER while
// alias_commands is on. At a reload, call it again with user and
// smtp_user set to the running ones. Throws ConfigError naming
// file, line and key. Not part of config_parse(): the handler process,
// which parses a reloaded config too, does not read the user database.
void config_check_users(const Config& cfg);

// spool, socket and control_socket name the paths built into laim-drop,
// sendmail and laimctl, which do not read the file. Throws ConfigError
// naming file, line and key. Not part of config_parse(), so that unit
// tests of the parser may name other paths in any build.
void config_check_tool_paths(const Config& cfg);

// mail_dir, as laimd -n and every (re)load check it when an mbox handler
// delivers there: a directory owned by root, as laim-mda wants it
// (common/mail_dir.h). Throws ConfigError naming file, line and key.
void config_check_mail_dir(const Config& cfg);

}  // namespace laim
