// The configuration loader: libyaml events to a YamlNode tree, then the
// tree to a validated Config. Nothing here has side effects besides
// config_read(), so the handler process can parse the same text again.
#include "common/config.h"

#include <config.h>  // PACKAGE_VERSION, from the build directory

#include <arpa/inet.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <unordered_set>

#include "common/address.h"
#include "common/fd.h"
#include "common/mail_dir.h"
#include "common/yaml_value.h"

#ifndef LAIM_SOCKET
#define LAIM_SOCKET "/run/laim/submit.sock"
#endif
#ifndef LAIM_CONTROL_SOCKET
#define LAIM_CONTROL_SOCKET "/run/laim/control.sock"
#endif
#ifndef LAIM_SPOOL_DIR
#define LAIM_SPOOL_DIR "/var/spool/laim"
#endif

namespace laim {

namespace {

// "FILE:LINE: key: what", leaving out the parts that are unknown.
std::string config_message(const std::string& file, int line, const std::string& key,
			   const std::string& what)
{
	std::string msg = file;
	if (line > 0)
		msg += ":" + std::to_string(line);
	msg += ": ";
	if (!key.empty())
		msg += key + ": ";
	return msg + what;
}

}  // namespace

ConfigError::ConfigError(const std::string& file, int line, const std::string& key,
			 const std::string& what)
    : std::runtime_error(config_message(file, line, key, what))
{
}

YamlNode::YamlNode() = default;
YamlNode::YamlNode(const YamlNode&) = default;
YamlNode::YamlNode(YamlNode&&) noexcept = default;
YamlNode& YamlNode::operator=(const YamlNode&) = default;
YamlNode& YamlNode::operator=(YamlNode&&) noexcept = default;
YamlNode::~YamlNode() = default;

const YamlNode* YamlNode::find(std::string_view key) const
{
	if (kind != Kind::Mapping)
		return nullptr;
	for (const auto& [k, v] : entries)
		if (k == key)
			return &v;
	return nullptr;
}

const HandlerSection* Config::find_handler(std::string_view name) const
{
	for (const auto& h : handlers)
		if (h.name == name)
			return &h;
	return nullptr;
}

// ---------------------------------------------------------------- YAML

namespace {

// Deeper nesting than this is refused: no config needs it, and it bounds
// the recursion of the tree builder and of YamlNode's destructor.
constexpr int yaml_max_depth = 64;

// The byte offset in UTF-8 text of libyaml's mark index, which counts
// characters (a byte order mark left out).
size_t yaml_mark_offset(std::string_view text, size_t index)
{
	size_t i = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
	for (; i < text.size(); i++)
		if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80 && index-- == 0)
			break;
	return i;
}

// Pulls libyaml events one at a time; owns the parser and the current event.
class YamlEvents {
 public:
	YamlEvents(std::string_view text, const std::string& file) : text_(text), file_(file)
	{
		if (!yaml_parser_initialize(&parser_))
			throw ConfigError(file, 0, "", "cannot initialize the YAML parser");
		yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
					     text.size());
	}
	~YamlEvents()
	{
		release();
		yaml_parser_delete(&parser_);
	}
	YamlEvents(const YamlEvents&) = delete;
	YamlEvents& operator=(const YamlEvents&) = delete;

	// Parses the next event; the previous one is released. A syntax error
	// throws with libyaml's description and line.
	const yaml_event_t& next()
	{
		release();
		if (!yaml_parser_parse(&parser_, &event_))
			syntax_error();
		have_event_ = true;
		return event_;
	}
	const yaml_event_t& current() const { return event_; }

 private:
	void release()
	{
		if (have_event_)
			yaml_event_delete(&event_);
		have_event_ = false;
	}

	[[noreturn]] void syntax_error() const
	{
		int line = (int)parser_.problem_mark.line + 1;
		// The reader (bad encoding, control characters) gives only an offset.
		if (parser_.error == YAML_READER_ERROR) {
			size_t off = std::min(parser_.problem_offset, text_.size());
			line = 1 + (int)std::count(text_.begin(), text_.begin() + off, '\n');
		}
		std::string what = "syntax error: ";
		what += parser_.problem ? parser_.problem : "invalid YAML";
		if (parser_.context)
			what += std::string(" (") + parser_.context + " started at line " +
				std::to_string(parser_.context_mark.line + 1) + ")";
		// libyaml names no tab: "found character that cannot start any token".
		size_t at = yaml_mark_offset(text_, parser_.problem_mark.index);
		if (parser_.error == YAML_SCANNER_ERROR && at < text_.size() && text_[at] == '\t')
			what += " (a tab: YAML indents with spaces only)";
		throw ConfigError(file_, line, "", what);
	}

	yaml_parser_t parser_;
	yaml_event_t event_;
	bool have_event_ = false;
	std::string_view text_;
	const std::string& file_;
};

int event_line(const yaml_event_t& ev)
{
	return (int)ev.start_mark.line + 1;
}

// A plain (unquoted) scalar that YAML reads as null.
bool is_null_scalar(const yaml_event_t& ev)
{
	if (ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	std::string_view v(reinterpret_cast<const char*>(ev.data.scalar.value), ev.data.scalar.length);
	return v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL";
}

// Builds the tree from the event stream. Anchors, aliases and tags are
// refused: a config means what it literally says.
class TreeBuilder {
 public:
	TreeBuilder(YamlEvents& events, const std::string& file) : ev_(events), file_(file) {}

	// The node whose first event is current.
	YamlNode node(const std::string& path, int depth)
	{
		const yaml_event_t& ev = ev_.current();
		int line = event_line(ev);
		switch (ev.type) {
		case YAML_ALIAS_EVENT:
			fail(line, path, "aliases (*" + anchor_name(ev.data.alias.anchor) + ") are not allowed");
		case YAML_SCALAR_EVENT:
			refuse_anchor_tag(ev.data.scalar.anchor, ev.data.scalar.tag, line, path);
			return scalar(ev);
		case YAML_SEQUENCE_START_EVENT:
			refuse_anchor_tag(ev.data.sequence_start.anchor, ev.data.sequence_start.tag, line, path);
			check_depth(depth, line, path);
			return sequence(line, path, depth);
		case YAML_MAPPING_START_EVENT:
			refuse_anchor_tag(ev.data.mapping_start.anchor, ev.data.mapping_start.tag, line, path);
			check_depth(depth, line, path);
			return mapping(line, path, depth);
		default:
			fail(line, path, "unexpected YAML event");
		}
	}

 private:
	static std::string anchor_name(const yaml_char_t* a)
	{
		return a ? reinterpret_cast<const char*>(a) : "";
	}

	[[noreturn]] void fail(int line, const std::string& path, const std::string& what) const
	{
		throw ConfigError(file_, line, path, what);
	}

	void refuse_anchor_tag(const yaml_char_t* anchor, const yaml_char_t* tag, int line,
			       const std::string& path) const
	{
		if (anchor)
			fail(line, path, "anchors (&" + anchor_name(anchor) + ") are not allowed");
		if (tag)
			fail(line, path, "tags (" + anchor_name(tag) + ") are not allowed");
	}

	void check_depth(int depth, int line, const std::string& path) const
	{
		if (depth >= yaml_max_depth)
			fail(line, path, "nested more than " + std::to_string(yaml_max_depth) + " levels deep");
	}

	static YamlNode scalar(const yaml_event_t& ev)
	{
		YamlNode n;
		n.line = event_line(ev);
		if (is_null_scalar(ev))
			return n;
		n.kind = YamlNode::Kind::Scalar;
		n.value.assign(reinterpret_cast<const char*>(ev.data.scalar.value), ev.data.scalar.length);
		n.quoted = ev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
			   ev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
		return n;
	}

	YamlNode sequence(int line, const std::string& path, int depth)
	{
		YamlNode n;
		n.kind = YamlNode::Kind::Sequence;
		n.line = line;
		while (ev_.next().type != YAML_SEQUENCE_END_EVENT)
			n.items.push_back(node(path + "[" + std::to_string(n.items.size()) + "]", depth + 1));
		return n;
	}

	YamlNode mapping(int line, const std::string& path, int depth)
	{
		YamlNode n;
		n.kind = YamlNode::Kind::Mapping;
		n.line = line;
		std::unordered_set<std::string> seen;
		while (ev_.next().type != YAML_MAPPING_END_EVENT) {
			auto [key, key_line] = mapping_key(path);
			std::string key_path = path.empty() ? key : path + "." + key;
			if (!seen.insert(key).second)
				fail(key_line, key_path, "duplicate key");
			ev_.next();
			YamlNode value = node(key_path, depth + 1);
			n.entries.emplace_back(std::move(key), std::move(value));
			n.key_lines.push_back(key_line);
		}
		return n;
	}

	// A mapping key must be a non-empty scalar.
	std::pair<std::string, int> mapping_key(const std::string& path)
	{
		const yaml_event_t& ev = ev_.current();
		int line = event_line(ev);
		if (ev.type == YAML_ALIAS_EVENT)
			fail(line, path, "aliases (*" + anchor_name(ev.data.alias.anchor) + ") are not allowed");
		if (ev.type != YAML_SCALAR_EVENT)
			fail(line, path, "mapping keys must be scalars");
		refuse_anchor_tag(ev.data.scalar.anchor, ev.data.scalar.tag, line, path);
		std::string key(reinterpret_cast<const char*>(ev.data.scalar.value), ev.data.scalar.length);
		if (key.empty())
			fail(line, path, "empty mapping key");
		if (key.find('\0') != std::string::npos)
			fail(line, path, "mapping key contains a NUL character");
		return {std::move(key), line};
	}

	YamlEvents& ev_;
	const std::string& file_;
};

}  // namespace

YamlNode yaml_parse(std::string_view text, const std::string& file)
{
	YamlEvents events(text, file);
	TreeBuilder builder(events, file);

	events.next();  // STREAM-START
	const yaml_event_t* ev = &events.next();
	if (ev->type == YAML_STREAM_END_EVENT)
		return YamlNode{};  // an empty file: an empty config
	// DOCUMENT-START, the root node, DOCUMENT-END, then nothing else.
	events.next();
	YamlNode root = builder.node("", 0);
	events.next();
	ev = &events.next();
	if (ev->type != YAML_STREAM_END_EVENT)
		throw ConfigError(file, event_line(*ev), "", "more than one YAML document");
	return root;
}

// ---------------------------------------------------------------- Config

namespace {

bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

// Instance and type names: [A-Za-z0-9_-]+.
bool valid_name(std::string_view s)
{
	return !s.empty() && std::all_of(s.begin(), s.end(), is_name_char);
}

bool has_control_char(std::string_view s)
{
	return std::any_of(s.begin(), s.end(),
			   [](char c) { return (unsigned char)c < 0x20 || c == 0x7f; });
}

// The longest ident: "220 " HOST " ESMTP " IDENT CRLF stays within RFC
// 5321's 512 octets (4.5.3.1.5) with a host name of 253.
constexpr size_t IDENT_MAX = 512 - 4 - 253 - 7 - 2;

// A local part in a route pattern: at most 64 octets (RFC 5321 4.5.3.1.1),
// no '@', space or control character.
bool valid_local_part(std::string_view s)
{
	return !s.empty() && s.size() <= 64 && !has_control_char(s) &&
	       s.find_first_of("@ ") == std::string_view::npos;
}

// Validates a YamlNode tree into a Config, remembering the file for errors.
class ConfigParser {
 public:
	explicit ConfigParser(const std::string& file) : file_(file) {}

	Config parse(const YamlNode& root);

 private:
	[[noreturn]] void fail(int line, const std::string& key, const std::string& what) const
	{
		throw ConfigError(file_, line, key, what);
	}
	// The value n of key, to read or refuse with the one rule of
	// common/yaml_value.h.
	YamlValue value(const YamlNode& n, const std::string& key) const { return YamlValue(n, file_, key); }
	template <typename T>
	void set_integer(T* out, const YamlNode& n, const std::string& key, uint64_t min,
			 uint64_t max = std::numeric_limits<T>::max()) const
	{
		*out = (T)value(n, key).integer(min, max);
	}

	void key(const std::string& name, int key_line, const YamlNode& n);
	void listen(const YamlNode& n);
	ListenAddress listen_entry(const YamlNode& n, const std::string& key) const;
	ListenAddress listen_address(const YamlNode& n, const std::string& key) const;
	void listen_options(const YamlNode& n, const std::string& key, ListenAddress* a) const;
	void listen_rules(const ListenAddress& a) const;
	void handlers(const YamlNode& n);
	void routes(const YamlNode& n);
	Route route(const YamlNode& n, const std::string& key) const;
	void route_match(const YamlNode& n, const std::string& key, Route* r) const;
	void route_handlers(const YamlNode& n, const std::string& key, Route* r) const;
	void rate_limits(const YamlNode& n);
	RateLimit rate_limit(const YamlNode& n, const std::string& key) const;
	std::string word(const YamlNode& n, const std::string& key, std::initializer_list<const char*> words) const;

	const std::string& file_;
	Config cfg_;
	int smtputf8_line_ = 0;  // set once enable_smtputf8 (either spelling) is seen
	int retry_initial_line_ = 0;
	int retry_max_line_ = 0;
};

// "HOST:PORT" with a numeric IPv4 host or a bracketed IPv6 host. laim does
// no DNS, so a name is an error rather than a lookup.
ListenAddress ConfigParser::listen_address(const YamlNode& n, const std::string& key) const
{
	static const char form[] =
	    "expected HOST:PORT with a numeric IPv4 address or a bracketed IPv6 address, "
	    "e.g. 127.0.0.1:25 or [::1]:25";
	if (n.kind != YamlNode::Kind::Scalar)
		value(n, key).fail_expected("a HOST:PORT string");
	std::string_view s = n.value;
	std::string_view host, port;
	int family;
	if (!s.empty() && s[0] == '[') {
		size_t close = s.find(']');
		if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
			fail(n.line, key, "\"" + n.value + "\": " + form);
		host = s.substr(1, close - 1);
		port = s.substr(close + 2);
		family = AF_INET6;
	} else {
		size_t colon = s.rfind(':');
		if (colon == std::string_view::npos)
			fail(n.line, key, "\"" + n.value + "\": " + form);
		host = s.substr(0, colon);
		port = s.substr(colon + 1);
		family = AF_INET;
	}
	ListenAddress a;
	a.host = std::string(host);
	a.line = n.line;
	unsigned char buf[sizeof(struct in6_addr)];
	if (a.host.find('\0') != std::string::npos || inet_pton(family, a.host.c_str(), buf) != 1)
		fail(n.line, key, "\"" + n.value + "\": " +
			       (family == AF_INET6 ? "not a numeric IPv6 address inside the brackets"
						   : "the host must be a numeric IPv4 address or a bracketed IPv6 address (laim does no DNS)"));
	uint64_t p;
	if (!parse_decimal(port, &p) || p < 1 || p > 65535)
		fail(n.line, key, "\"" + n.value + "\": the port must be a number from 1 to 65535");
	a.port = (uint16_t)p;
	return a;
}

// True when two numeric hosts of listen: entries are the same address,
// however written ("::1" and "0:0::1"): bind() would refuse the second.
bool same_host(const std::string& a, const std::string& b)
{
	int family = a.find(':') != std::string::npos ? AF_INET6 : AF_INET;
	if ((b.find(':') != std::string::npos ? AF_INET6 : AF_INET) != family)
		return false;
	unsigned char x[sizeof(struct in6_addr)] = {}, y[sizeof(struct in6_addr)] = {};
	return inet_pton(family, a.c_str(), x) == 1 && inet_pton(family, b.c_str(), y) == 1 &&
	       memcmp(x, y, sizeof x) == 0;
}

// One listen: entry: "HOST:PORT", or a mapping with addr: and the
// listener's TLS and authentication keys.
ListenAddress ConfigParser::listen_entry(const YamlNode& n, const std::string& key) const
{
	if (n.kind != YamlNode::Kind::Mapping) {
		ListenAddress a = listen_address(n, key);
		a.name = key;
		listen_rules(a);
		return a;
	}
	const YamlNode* addr = n.find("addr");
	if (!addr)
		fail(n.line, key, "missing required key \"addr\"");
	ListenAddress a = listen_address(*addr, key + ".addr");
	a.line = n.line;
	a.name = key;
	listen_options(n, key, &a);
	listen_rules(a);
	return a;
}

// The keys of a listen: mapping besides addr.
void ConfigParser::listen_options(const YamlNode& n, const std::string& key, ListenAddress* a) const
{
	static const char* known[] = {"addr", "tls", "cert", "key", "auth", "users", "senders"};
	for (size_t i = 0; i < n.entries.size(); i++)
		if (std::find(std::begin(known), std::end(known), n.entries[i].first) == std::end(known))
			fail(n.key_lines[i], key + "." + n.entries[i].first, "unknown key");
	if (const YamlNode* tls = n.find("tls")) {
		std::string w = word(*tls, key + ".tls", {"starttls", "implicit", "none"});
		a->tls = w == "starttls" ? ListenAddress::Tls::Starttls
			 : w == "implicit" ? ListenAddress::Tls::Implicit : ListenAddress::Tls::None;
	}
	if (const YamlNode* auth = n.find("auth"))
		a->auth_required = word(*auth, key + ".auth", {"required", "none"}) == "required";
	for (auto [name, file] : {std::pair{"cert", &a->cert}, {"key", &a->key}, {"users", &a->users},
				  {"senders", &a->senders}})
		if (const YamlNode* v = n.find(name)) {
			file->path = value(*v, key + "." + name).path();
			file->line = v->line;
		}
}

// What a listener must have: TLS with a certificate and its key, AUTH only
// under TLS and with a users file, and both for any address other than
// loopback (laim is no open relay).
void ConfigParser::listen_rules(const ListenAddress& a) const
{
	const std::string& key = a.name;
	bool tls = a.tls != ListenAddress::Tls::None;
	if (tls && a.cert.path.empty())
		fail(a.line, key, "tls needs cert: the certificate chain (PEM)");
	if (tls && a.key.path.empty())
		fail(a.line, key, "tls needs key: the certificate's private key (PEM)");
	if (!tls && !a.cert.path.empty())
		fail(a.cert.line, key + ".cert", "needs tls: starttls or tls: implicit");
	if (!tls && !a.key.path.empty())
		fail(a.key.line, key + ".key", "needs tls: starttls or tls: implicit");
	if (a.auth_required && a.users.path.empty())
		fail(a.line, key, "auth: required needs users: the file of user names and password hashes");
	if (a.auth_required && !tls)
		fail(a.line, key, "auth: required needs tls: starttls or tls: implicit (AUTH is only offered under TLS)");
	if (!a.auth_required && !a.users.path.empty())
		fail(a.users.line, key + ".users", "needs auth: required");
	if (!a.auth_required && !a.senders.path.empty())
		fail(a.senders.line, key + ".senders", "needs auth: required");
	if (!a.loopback() && !(tls && a.auth_required))
		fail(a.line, key, "\"" + a.host + "\" is not a loopback address: a listener for other hosts needs "
				  "tls: starttls or tls: implicit, and auth: required");
}

// listen: one entry or a sequence of them; an empty sequence means no TCP
// listener (only the local submission socket).
void ConfigParser::listen(const YamlNode& n)
{
	cfg_.listen.clear();
	if (n.kind == YamlNode::Kind::Scalar || n.kind == YamlNode::Kind::Mapping) {
		cfg_.listen.push_back(listen_entry(n, "listen"));
		return;
	}
	if (n.kind != YamlNode::Kind::Sequence)
		value(n, "listen").fail_expected("a HOST:PORT string, a mapping with addr:, or a sequence of them");
	for (size_t i = 0; i < n.items.size(); i++) {
		std::string key = "listen[" + std::to_string(i) + "]";
		ListenAddress a = listen_entry(n.items[i], key);
		for (const auto& b : cfg_.listen)
			if (same_host(b.host, a.host) && b.port == a.port)
				fail(a.line, key, "duplicate listen address \"" +
							  (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) +
							  ":" + std::to_string(a.port) + "\" (the same as " + b.name + ")");
		cfg_.listen.push_back(std::move(a));
	}
}

// handlers: instance name -> mapping with at least "type: NAME". The other
// options are left for the handler class to validate.
void ConfigParser::handlers(const YamlNode& n)
{
	if (n.kind != YamlNode::Kind::Mapping)
		value(n, "handlers").fail_expected("a mapping of handler instances");
	for (size_t i = 0; i < n.entries.size(); i++) {
		const auto& [name, section] = n.entries[i];
		std::string key = "handlers." + name;
		int line = n.key_lines[i];
		if (!valid_name(name))
			fail(line, key, "invalid instance name (use letters, digits, '_' and '-')");
		if (section.kind != YamlNode::Kind::Mapping)
			value(section, key).fail_expected("a mapping with a \"type\" key");
		const YamlNode* type = section.find("type");
		if (!type)
			fail(line, key, "missing required key \"type\"");
		HandlerSection h;
		h.name = name;
		h.type = value(*type, key + ".type").string();
		if (!valid_name(h.type))
			fail(type->line, key + ".type", "invalid handler type \"" + h.type + "\"");
		h.line = line;
		h.options = section;
		cfg_.handlers.push_back(std::move(h));
	}
}

// match: "*", "*@domain", "local@*" or a full address (see handler/routes.h).
void ConfigParser::route_match(const YamlNode& n, const std::string& key, Route* r) const
{
	r->match = value(n, key).string();
	if (r->match == "*")
		return;
	std::string_view m = r->match;
	size_t at = m.rfind('@');
	bool ok = false;
	if (at != std::string_view::npos) {
		std::string_view local = m.substr(0, at), domain = m.substr(at + 1);
		if (local == "*")
			ok = valid_domain(domain, true);
		else if (domain == "*")
			ok = valid_local_part(local);
		else
			ok = valid_local_part(local) && valid_domain(domain, true);
	}
	if (!ok)
		fail(n.line, key, "\"" + r->match + "\": expected \"*\", \"*@domain\", \"local@*\" or an address");
}

// handlers: one instance name or a sequence of them, each defined under
// handlers: and named once.
void ConfigParser::route_handlers(const YamlNode& n, const std::string& key, Route* r) const
{
	std::vector<const YamlNode*> names;
	if (n.kind == YamlNode::Kind::Scalar)
		names.push_back(&n);
	else if (n.kind == YamlNode::Kind::Sequence)
		for (const auto& item : n.items)
			names.push_back(&item);
	else
		value(n, key).fail_expected("a handler instance name or a sequence of them");
	if (names.empty())
		fail(n.line, key, "names no handler instance");
	for (size_t i = 0; i < names.size(); i++) {
		const YamlNode& item = *names[i];
		std::string item_key = n.kind == YamlNode::Kind::Sequence ? key + "[" + std::to_string(i) + "]" : key;
		std::string name = value(item, item_key).string();
		if (!cfg_.find_handler(name))
			fail(item.line, item_key, "unknown handler instance \"" + name + "\"");
		if (std::find(r->handlers.begin(), r->handlers.end(), name) != r->handlers.end())
			fail(item.line, item_key, "handler instance \"" + name + "\" named twice");
		r->handlers.push_back(std::move(name));
	}
}

Route ConfigParser::route(const YamlNode& n, const std::string& key) const
{
	if (n.kind != YamlNode::Kind::Mapping)
		value(n, key).fail_expected("a mapping with \"match\" and \"handlers\"");
	Route r;
	r.line = n.line;
	for (size_t i = 0; i < n.entries.size(); i++) {
		const auto& [k, v] = n.entries[i];
		if (k != "match" && k != "handlers")
			fail(n.key_lines[i], key + "." + k, "unknown key");
	}
	const YamlNode* match = n.find("match");
	if (!match)
		fail(n.line, key, "missing required key \"match\"");
	route_match(*match, key + ".match", &r);
	const YamlNode* names = n.find("handlers");
	if (!names)
		fail(n.line, key, "missing required key \"handlers\"");
	route_handlers(*names, key + ".handlers", &r);
	return r;
}

// routes: a sequence of {match, handlers}, first match wins. Parsed after
// handlers: so the instance names can be checked whatever the key order.
void ConfigParser::routes(const YamlNode& n)
{
	if (n.kind != YamlNode::Kind::Sequence)
		value(n, "routes").fail_expected("a sequence of routes");
	for (size_t i = 0; i < n.items.size(); i++)
		cfg_.routes.push_back(route(n.items[i], "routes[" + std::to_string(i) + "]"));
}

// One of a few fixed words, or an error that lists them.
std::string ConfigParser::word(const YamlNode& n, const std::string& key, std::initializer_list<const char*> words) const
{
	std::string v = value(n, key).string(), list;
	for (const char* w : words) {
		if (v == w)
			return v;
		list += std::string(list.empty() ? "" : ", ") + w;
	}
	fail(n.line, key, "\"" + v + "\": expected one of " + list);
}

// One rate limit: key, count and window are required; per, mode and
// alert have defaults.
RateLimit ConfigParser::rate_limit(const YamlNode& n, const std::string& key) const
{
	if (n.kind != YamlNode::Kind::Mapping)
		value(n, key).fail_expected("a mapping with \"key\", \"count\" and \"window\"");
	static const char* known[] = {"key", "count", "window", "per", "mode", "alert"};
	for (size_t i = 0; i < n.entries.size(); i++)
		if (std::find(std::begin(known), std::end(known), n.entries[i].first) == std::end(known))
			fail(n.key_lines[i], key + "." + n.entries[i].first, "unknown key");
	for (const char* required : {"key", "count", "window"})
		if (!n.find(required))
			fail(n.line, key, std::string("missing required key \"") + required + "\"");
	RateLimit r;
	r.line = n.line;
	const YamlNode& k = *n.find("key");
	std::string kind = word(k, key + ".key", {"uid", "sender", "client", "auth"});
	bool auth_listener = std::any_of(cfg_.listen.begin(), cfg_.listen.end(),
					 [](const ListenAddress& a) { return a.auth_required; });
	if (kind == "auth" && !auth_listener)
		fail(k.line, key + ".key", "\"auth\" counts authenticated users, and no listen: entry has "
					   "auth: required");
	r.key = kind == "uid"	   ? RateLimit::Key::Uid
		: kind == "sender" ? RateLimit::Key::Sender
		: kind == "client" ? RateLimit::Key::Client
				   : RateLimit::Key::Auth;
	r.count = value(*n.find("count"), key + ".count").integer(1, 1000000000);
	r.window = (uint32_t)value(*n.find("window"), key + ".window").integer(1, 2592000);
	if (const YamlNode* per = n.find("per"))
		r.per_recipient = word(*per, key + ".per", {"message", "recipient"}) == "recipient";
	if (const YamlNode* mode = n.find("mode"))
		r.strict = word(*mode, key + ".mode", {"leaky", "strict"}) == "strict";
	if (const YamlNode* alert = n.find("alert")) {
		r.alert = value(*alert, key + ".alert").string();
		if (!cfg_.find_handler(r.alert))
			fail(alert->line, key + ".alert", "unknown handler instance \"" + r.alert + "\"");
	}
	return r;
}

// rate_limits: a sequence of limits, each checked at MAIL. Two limits
// that count the same thing over the same window would be one limit
// twice: refused. Parsed after handlers: (alert names an instance).
void ConfigParser::rate_limits(const YamlNode& n)
{
	if (n.kind != YamlNode::Kind::Sequence)
		value(n, "rate_limits").fail_expected("a sequence of rate limits");
	for (size_t i = 0; i < n.items.size(); i++) {
		std::string key = "rate_limits[" + std::to_string(i) + "]";
		RateLimit r = rate_limit(n.items[i], key);
		for (size_t j = 0; j < cfg_.rate_limits.size(); j++) {
			const RateLimit& o = cfg_.rate_limits[j];
			if (o.key == r.key && o.window == r.window && o.per_recipient == r.per_recipient)
				fail(r.line, key, "the same key, window and per as rate_limits[" + std::to_string(j) + "]");
		}
		cfg_.rate_limits.push_back(std::move(r));
	}
}

// One core key. handlers, routes and rate_limits are dealt with by parse().
void ConfigParser::key(const std::string& name, int key_line, const YamlNode& n)
{
	if (name == "listen") {
		listen(n);
	} else if (name == "socket" || name == "control_socket") {
		std::string& p = name == "socket" ? cfg_.socket : cfg_.control_socket;
		p = value(n, name).path();
		(name == "socket" ? cfg_.socket_line : cfg_.control_socket_line) = n.line;
		if (p.size() >= sizeof(sockaddr_un::sun_path))
			fail(n.line, name, "too long for a unix socket path (at most " +
					       std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)");
	} else if (name == "user" || name == "smtp_user") {
		std::string& u = name == "user" ? cfg_.user : cfg_.smtp_user;
		u = value(n, name).string();
		if (u.empty() || has_control_char(u))
			fail(n.line, name, "expected a user name, got \"" + u + "\"");
		(name == "user" ? cfg_.user_line : cfg_.smtp_user_line) = key_line;
	} else if (name == "hostname") {
		cfg_.hostname = value(n, name).string();
		if (!cfg_.hostname.empty() && !valid_domain(cfg_.hostname, false))
			fail(n.line, name, "\"" + cfg_.hostname + "\" is not a valid domain name");
		if (!cfg_.hostname.empty() && !valid_host_name(cfg_.hostname))
			fail(n.line, name, "\"" + cfg_.hostname + "\" is an address, not a name: give this host's "
				"name (as in /etc/mailname), or leave hostname: out");
	} else if (name == "ident") {
		// It goes into the 220 greeting line, as it is.
		cfg_.ident = value(n, name).string();
		if (!std::all_of(cfg_.ident.begin(), cfg_.ident.end(), [](char c) { return c >= 0x20 && c < 0x7f; }))
			fail(n.line, name, "must be printable ASCII (no control characters, no UTF-8)");
		if (cfg_.ident.size() > IDENT_MAX)
			fail(n.line, name, "longer than " + std::to_string(IDENT_MAX) +
						   " characters: the greeting line must stay within 512 octets");
	} else if (name == "max_queue_size") {
		set_integer(&cfg_.max_queue_size, n, name, 1);
	} else if (name == "max_deferred") {
		set_integer(&cfg_.max_deferred, n, name, 1);
	} else if (name == "queue_full_wait") {
		set_integer(&cfg_.queue_full_wait, n, name, 0, 300);
	} else if (name == "data_size_limit") {
		set_integer(&cfg_.data_size_limit, n, name, 0);
	} else if (name == "hop_count_limit") {
		set_integer(&cfg_.hop_count_limit, n, name, 1);
	} else if (name == "timeout") {
		set_integer(&cfg_.timeout, n, name, 1);
	} else if (name == "enable_smtputf8" || name == "enable_SMTPUTF8") {
		if (smtputf8_line_)
			fail(key_line, name, "given twice (as enable_smtputf8 and enable_SMTPUTF8)");
		smtputf8_line_ = key_line;
		cfg_.enable_smtputf8 = value(n, name).boolean();
	} else if (name == "spool") {
		cfg_.spool = value(n, name).path();
		if (cfg_.spool == "/")
			fail(n.line, name, "must be a directory below / (laimd makes it the laim user's)");
		cfg_.spool_line = n.line;
	} else if (name == "aliases") {
		cfg_.aliases = value(n, name).path();
	} else if (name == "mail_dir") {
		cfg_.mail_dir = value(n, name).path();
		cfg_.mail_dir_line = n.line;
	} else if (name == "alias_commands") {
		cfg_.alias_commands = value(n, name).boolean();
		cfg_.alias_commands_line = key_line;
	} else if (name == "alias_files") {
		cfg_.alias_files = value(n, name).boolean();
	} else if (name == "max_sessions") {
		set_integer(&cfg_.max_sessions, n, name, 1, MAX_SESSIONS_MAX);
	} else if (name == "greeting_delay") {
		set_integer(&cfg_.greeting_delay, n, name, 0, 10000);
	} else if (name == "retry_initial") {
		set_integer(&cfg_.retry_initial, n, name, 1);
		retry_initial_line_ = n.line;
	} else if (name == "retry_max") {
		set_integer(&cfg_.retry_max, n, name, 1);
		retry_max_line_ = n.line;
	} else if (name == "max_queue_age") {
		set_integer(&cfg_.max_queue_age, n, name, 1);
	} else if (name == "delivery_timeout") {
		// At most a day: the parent's time limits for commands and
		// laim-mda's SECONDS are derived from it in unsigned arithmetic.
		set_integer(&cfg_.delivery_timeout, n, name, 1, DELIVERY_TIMEOUT_MAX);
	} else {
		fail(key_line, name, "unknown key");
	}
}

Config ConfigParser::parse(const YamlNode& root)
{
	cfg_.file = file_;
	cfg_.listen = {{"127.0.0.1", 25, 0, "listen"}, {"::1", 25, 0, "listen"}};
	cfg_.socket = LAIM_SOCKET;
	cfg_.control_socket = LAIM_CONTROL_SOCKET;
	cfg_.ident = "laim " PACKAGE_VERSION;
	cfg_.spool = LAIM_SPOOL_DIR;
	if (root.kind == YamlNode::Kind::Null)
		return std::move(cfg_);
	if (root.kind != YamlNode::Kind::Mapping)
		value(root, "").fail_expected("a mapping at the top level");

	const YamlNode* handlers_node = nullptr;
	const YamlNode* routes_node = nullptr;
	const YamlNode* limits_node = nullptr;
	for (size_t i = 0; i < root.entries.size(); i++) {
		const auto& [name, value] = root.entries[i];
		if (name == "handlers")
			handlers_node = &value;
		else if (name == "routes")
			routes_node = &value;
		else if (name == "rate_limits")
			limits_node = &value;
		else
			key(name, root.key_lines[i], value);
	}
	if (cfg_.retry_max < cfg_.retry_initial) {
		int line = retry_max_line_ ? retry_max_line_ : retry_initial_line_;
		fail(line, retry_max_line_ ? "retry_max" : "retry_initial",
		     "retry_max (" + std::to_string(cfg_.retry_max) + ") must not be less than retry_initial (" +
			 std::to_string(cfg_.retry_initial) + ")");
	}
	// One path for both: the second bind would take the first one's name,
	// and sendmail would hand its mail to the control socket.
	if (cfg_.socket == cfg_.control_socket) {
		bool control = cfg_.control_socket_line != 0;
		fail(control ? cfg_.control_socket_line : cfg_.socket_line, control ? "control_socket" : "socket",
		     std::string("the same path as ") + (control ? "socket" : "control_socket") + " (" + cfg_.socket +
			     "): each needs its own");
	}
	// A compromised smtp process must not be able to signal the handler
	// process or touch what it owns (doc/architecture.md, "Processes").
	if (cfg_.smtp_user == cfg_.user)
		fail(cfg_.smtp_user_line ? cfg_.smtp_user_line : cfg_.user_line, cfg_.smtp_user_line ? "smtp_user" : "user",
		     "the smtp process and the handler process must run as different users (both are \"" +
			     cfg_.user + "\")");
	if (handlers_node)
		handlers(*handlers_node);
	if (routes_node)
		routes(*routes_node);
	if (limits_node)
		rate_limits(*limits_node);
	return std::move(cfg_);
}

}  // namespace

const char* rate_limit_key_name(RateLimit::Key key)
{
	switch (key) {
	case RateLimit::Key::Uid: return "uid";
	case RateLimit::Key::Sender: return "sender";
	case RateLimit::Key::Client: return "client";
	case RateLimit::Key::Auth: return "auth";
	}
	return "?";
}

Config config_parse(std::string_view text, const std::string& file)
{
	YamlNode root = yaml_parse(text, file);
	return ConfigParser(file).parse(root);
}

// ---------------------------------------------------------------- file

namespace {

constexpr size_t config_max_size = 1 << 20;

std::string octal_mode(mode_t mode)
{
	char m[8];
	snprintf(m, sizeof m, "%04o", (unsigned)(mode & 07777));
	return m;
}

}  // namespace

// The checks are made on the open file, so it cannot be swapped in
// between; O_NONBLOCK so that a FIFO put in its place cannot stall the open.
std::string read_root_file(const std::string& file, const RootFileRule& rule, mode_t* mode)
{
	std::string refusing = file + ": refusing " + rule.what + ": ";
	UniqueFd fd(open(file.c_str(), O_RDONLY | (rule.follow_links ? 0 : O_NOFOLLOW) | O_CLOEXEC | O_NONBLOCK));
	if (!fd) {
		if (errno == ELOOP)
			throw ConfigError(refusing + "it is a symbolic link");
		throw ConfigError(file + ": " + strerror(errno));
	}
	struct stat st;
	if (fstat(fd.get(), &st) == -1)
		throw ConfigError(file + ": fstat: " + strerror(errno));
	if (!S_ISREG(st.st_mode))
		throw ConfigError(refusing + "not a regular file");
	if (st.st_uid != 0 || (st.st_mode & rule.forbidden))
		throw ConfigError(refusing + "must be owned by root and " + rule.mode_rule + " (uid " +
				  std::to_string(st.st_uid) + ", mode " + octal_mode(st.st_mode) + ")" + rule.fix);
	bool mib = rule.max_size % (1 << 20) == 0;
	std::string too_large = refusing + "larger than " + std::to_string(rule.max_size >> (mib ? 20 : 10)) +
				(mib ? " MiB" : " KiB");
	if ((uint64_t)st.st_size > rule.max_size)
		throw ConfigError(too_large);
	if (mode)
		*mode = st.st_mode;

	std::string text;
	text.reserve(st.st_size + 1);  // no copy left behind by growing: the file may be a key
	char buf[16384];
	for (;;) {
		ssize_t n = read(fd.get(), buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			throw ConfigError(file + ": read: " + strerror(errno));
		if (n == 0)
			break;
		text.append(buf, n);
		if (text.size() > rule.max_size) {  // it grew while being read
			explicit_bzero(buf, sizeof buf);
			throw ConfigError(too_large);
		}
	}
	explicit_bzero(buf, sizeof buf);
	return text;
}

// The parent reads the config as root, so it must not be a file that
// someone other than root could have written: it names the programs and
// paths laim uses and holds handler secrets.
std::string config_read(const std::string& file, bool* world_readable)
{
	mode_t mode = 0;
	std::string text =
		read_root_file(file, {"config", S_IWGRP | S_IWOTH, "not writable by group or others", "", config_max_size},
			       &mode);
	if (world_readable)
		*world_readable = (mode & S_IROTH) != 0;
	return text;
}

bool loopback_address(const std::string& host)
{
	unsigned char a[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, host.c_str(), a) == 1)
		return a[0] == 127;
	return inet_pton(AF_INET6, host.c_str(), a) == 1 && IN6_IS_ADDR_LOOPBACK(reinterpret_cast<in6_addr*>(a));
}

bool ListenAddress::loopback() const
{
	return loopback_address(host);
}

const RootFileRule listen_secret_rule = {"listen secret", S_IRWXG | S_IRWXO, "without access for group or others",
					 "; chmod 0600 it", 1 << 20, true};

// The files of each listener, read (and forgotten) to check them; the
// parent reads the key again where it keeps it (parent/keyserver.cpp).
void listen_check_files(const Config& cfg)
{
	for (const ListenAddress& a : cfg.listen) {
		for (auto [name, what, f] : {std::tuple{"key", "TLS key", &a.key}, {"users", "users file", &a.users},
					     {"senders", "senders file", &a.senders}}) {
			if (f->path.empty())
				continue;
			RootFileRule rule = listen_secret_rule;
			rule.what = what;
			std::string text;
			try {
				text = read_root_file(f->path, rule);
			} catch (const ConfigError& e) {
				throw ConfigError(cfg.file, f->line, a.name + "." + name, e.what());
			}
			explicit_bzero(text.data(), text.size());
		}
		if (a.cert.path.empty())
			continue;
		UniqueFd fd(open(a.cert.path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
		char c;
		if (!fd || read(fd.get(), &c, 1) < 0)
			throw ConfigError(cfg.file, a.cert.line, a.name + ".cert", a.cert.path + ": " + strerror(errno));
	}
}

namespace {

// spool:, socket: and control_socket: may only name the path built into
// the programs that use them besides laimd (users): those cannot read
// this file (root's, 0600), and laim-drop, setgid, must not take a path
// from anything a user controls. Another path would have laim-drop store
// mail where laimd never imports it, and sendmail and laimctl find no
// laimd. In a test build the path is the one the case gives those
// programs in its environment (test_variable, see regress/e2e
// harness.py, local_env), and there is none to match without it.
void tools_path_only(const Config& cfg, int line, const std::string& key, const std::string& path,
		     const char* builtin, const char* test_variable, const char* users)
{
	if (line == 0)
		return;  // not in the file: the default, the built-in path
#ifdef LAIM_TEST_SEAMS
	const char* variable = getenv(test_variable);
	std::string tools = variable ? variable : "";
	(void)builtin;
#else
	std::string tools = builtin;
	(void)test_variable;
#endif
	if (!tools.empty() && path != tools)
		throw ConfigError(cfg.file, line, key,
				  "must be " + tools + ", the path built into " + users + " (they do not read this file)");
}

}  // namespace

void config_check_tool_paths(const Config& cfg)
{
	tools_path_only(cfg, cfg.spool_line, "spool", cfg.spool, LAIM_SPOOL_DIR, "LAIM_TEST_SPOOL_DIR", "laim-drop");
	tools_path_only(cfg, cfg.socket_line, "socket", cfg.socket, LAIM_SOCKET, "LAIM_SOCKET", "sendmail");
	tools_path_only(cfg, cfg.control_socket_line, "control_socket", cfg.control_socket, LAIM_CONTROL_SOCKET,
			"LAIM_CONTROL", "laimctl, mailq and newaliases");
}

void config_check_mail_dir(const Config& cfg)
{
	auto mbox = std::find_if(cfg.handlers.begin(), cfg.handlers.end(),
				 [](const HandlerSection& h) { return h.type == "mbox"; });
	if (mbox == cfg.handlers.end())
		return;  // nothing delivers there
	UniqueFd dir;
	std::string unusable = mail_dir_open(cfg.mail_dir, &dir);
	if (unusable.empty())
		return;
	std::string why = ": " + unusable + ": the mbox handler delivers there, and laim-mda wants a directory "
				      "owned by root";
	if (cfg.mail_dir_line)
		throw ConfigError(cfg.file, cfg.mail_dir_line, "mail_dir", cfg.mail_dir + why);
	throw ConfigError(cfg.file, mbox->line, "handlers." + mbox->name,
			  "mail_dir " + cfg.mail_dir + " (the default)" + why);
}

void config_check_users(const Config& cfg)
{
	struct Who {
		const char* key;
		const std::string& name;
		int line;
		uid_t uid = 0;
	} who[] = {{"user", cfg.user, cfg.user_line}, {"smtp_user", cfg.smtp_user, cfg.smtp_user_line}};
	for (Who& w : who) {
		const struct passwd* pw = getpwnam(w.name.c_str());
		if (!pw)
			throw ConfigError(cfg.file, w.line, w.key, "user \"" + w.name + "\" does not exist (create it: "
					  "adduser --system --group " + w.name + ")");
		if (pw->pw_uid == 0)
			throw ConfigError(cfg.file, w.line, w.key, "user \"" + w.name + "\" has uid 0: laim's children "
					  "must run unprivileged");
		w.uid = pw->pw_uid;
	}
	if (who[0].uid == who[1].uid)
		throw ConfigError(cfg.file, cfg.smtp_user_line ? cfg.smtp_user_line : cfg.user_line,
				  cfg.smtp_user_line ? "smtp_user" : "user",
				  "\"" + cfg.smtp_user + "\" and \"" + cfg.user + "\" have the same uid " +
					  std::to_string(who[0].uid) + ": the smtp process must not be able to "
					  "signal the handler process");
	// A command is fed by mail: as either child's user it could read the
	// spool or signal the child.
	const struct passwd* nobody = cfg.alias_commands ? getpwnam(ALIAS_COMMAND_USER) : nullptr;
	for (const Who& w : who)
		if (nobody && nobody->pw_uid == w.uid)
			throw ConfigError(cfg.file, cfg.alias_commands_line, "alias_commands",
					  std::string("alias commands run as ") + ALIAS_COMMAND_USER + ", and laimd's " +
						  w.key + " \"" + w.name + "\" has its uid " + std::to_string(w.uid) +
						  ": a command never runs as laim's own processes do");
	for (const HandlerSection& h : cfg.handlers) {
		const YamlNode* user = h.type == "pipe" ? h.options.find("user") : nullptr;
		const struct passwd* pw = user ? getpwnam(user->value.c_str()) : nullptr;
		for (const Who& w : who)
			if (pw && pw->pw_uid == w.uid)
				throw ConfigError(cfg.file, user->line, "handlers." + h.name + ".user",
						  "\"" + user->value + "\" is laimd's " + w.key + " (uid " +
							  std::to_string(w.uid) + "): a command never runs as laim's own "
							  "processes do");
	}
}

}  // namespace laim
