// The handler registry (type name -> factory, filled by LAIM_HANDLER at
// static initialisation) and HandlerOptions, through which every handler
// class reads and validates its own section of the config.
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <map>
#include <strings.h>

#include "common/hostname.h"
#include "common/log.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

// A function-local static: LAIM_HANDLER lines in other translation units
// run before main() in unspecified order, and must find the map built.
std::map<std::string, HandlerFactory, std::less<>>& registry()
{
	static std::map<std::string, HandlerFactory, std::less<>> map;
	return map;
}

std::string join(const std::vector<std::string>& v, const char* sep)
{
	std::string out;
	for (const std::string& s : v) {
		if (!out.empty())
			out += sep;
		out += s;
	}
	return out;
}

// How a wrong value is described: "expected a string, got a sequence".
std::string got(const YamlNode& n)
{
	switch (n.kind) {
	case YamlNode::Kind::Null:
		return ", got an empty value";
	case YamlNode::Kind::Scalar:
		return ", got \"" + n.value + "\"";
	case YamlNode::Kind::Sequence:
		return ", got a sequence";
	case YamlNode::Kind::Mapping:
		return ", got a mapping";
	}
	return "";
}

}  // namespace

HandlerRegistration::HandlerRegistration(const char* type, HandlerFactory factory)
{
	if (!registry().emplace(type, factory).second)
		fatalx("handler type \"%s\" registered twice", type);
}

namespace {
std::vector<std::string> local_domains;  // written before any delivery thread starts
}  // namespace

void set_local_domains(const std::string& hostname)
{
	local_domains = {hostname, "localhost", "localhost.localdomain"};
	if (std::string m = read_mailname("/etc/mailname"); !m.empty())
		local_domains.push_back(m);
}

bool is_local_address(std::string_view rcpt)
{
	size_t at = rcpt.rfind('@');
	if (at == std::string_view::npos)
		return true;
	std::string_view dom = rcpt.substr(at + 1);
	for (const std::string& d : local_domains)
		if (d.size() == dom.size() && strncasecmp(d.data(), dom.data(), d.size()) == 0)
			return true;
	return false;
}

HandlerFactory handler_factory(std::string_view type)
{
	auto it = registry().find(type);
	return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> handler_types()
{
	std::vector<std::string> out;
	for (const auto& [name, factory] : registry())
		out.push_back(name);
	return out;
}

// ---------------------------------------------------------------- options

HandlerOptions::HandlerOptions(const HandlerSection& section, const std::string& file)
    : section_(section), file_(file), used_{"type"}
{
}

bool HandlerOptions::has(const char* key) const
{
	return section_.options.find(key) != nullptr;
}

// Finds an option and marks it used; nullptr when absent.
const YamlNode* HandlerOptions::lookup(const char* key)
{
	const YamlNode* node = section_.options.find(key);
	if (node && std::find(used_.begin(), used_.end(), key) == used_.end())
		used_.emplace_back(key);
	return node;
}

void HandlerOptions::fail(const char* key, const std::string& what) const
{
	int line = section_.line;
	const YamlNode& opts = section_.options;
	for (size_t i = 0; i < opts.entries.size(); i++) {
		if (opts.entries[i].first != key)
			continue;
		line = i < opts.key_lines.size() ? opts.key_lines[i] : opts.entries[i].second.line;
		break;
	}
	throw ConfigError(file_, line, "handlers." + section_.name + "." + key, what);
}

std::string HandlerOptions::string(const char* key, std::optional<std::string> def)
{
	const YamlNode* node = lookup(key);
	if (!node) {
		if (!def)
			fail(key, "missing required option");
		return *def;
	}
	if (node->kind != YamlNode::Kind::Scalar)
		fail(key, "expected a string" + got(*node));
	// These strings reach C APIs: a "\0" escape would cut them short.
	if (node->value.find('\0') != std::string::npos)
		fail(key, "contains a NUL character");
	return node->value;
}

long long HandlerOptions::integer(const char* key, std::optional<long long> def, long long min,
				  long long max)
{
	const YamlNode* node = lookup(key);
	if (!node) {
		if (!def)
			fail(key, "missing required option");
		return *def;
	}
	const std::string& v = node->value;
	long long n = 0;
	auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
	if (node->kind != YamlNode::Kind::Scalar || node->quoted || v.empty() || ec != std::errc() ||
	    end != v.data() + v.size())
		fail(key, "expected an integer" + got(*node));
	if (n < min || n > max)
		fail(key, "expected an integer from " + std::to_string(min) + " to " +
				  std::to_string(max) + got(*node));
	return n;
}

// YAML 1.1 booleans, as Laim's PyYAML config accepted them.
bool HandlerOptions::boolean(const char* key, std::optional<bool> def)
{
	const YamlNode* node = lookup(key);
	if (!node) {
		if (!def)
			fail(key, "missing required option");
		return *def;
	}
	if (node->kind == YamlNode::Kind::Scalar && !node->quoted) {
		const char* v = node->value.c_str();
		for (const char* t : {"true", "yes", "on"})
			if (strcasecmp(v, t) == 0)
				return true;
		for (const char* f : {"false", "no", "off"})
			if (strcasecmp(v, f) == 0)
				return false;
	}
	fail(key, "expected a boolean (true/false, yes/no, on/off)" + got(*node));
}

std::vector<std::string> HandlerOptions::strings(const char* key)
{
	const YamlNode* node = lookup(key);
	if (!node)
		return {};
	if (node->kind != YamlNode::Kind::Sequence)
		fail(key, "expected a list of strings" + got(*node));
	std::vector<std::string> out;
	for (const YamlNode& item : node->items) {
		if (item.kind != YamlNode::Kind::Scalar || item.value.find('\0') != std::string::npos)
			throw ConfigError(file_, item.line, "handlers." + section_.name + "." + key,
					  "expected a list of strings" + got(item));
		out.push_back(item.value);
	}
	return out;
}

void HandlerOptions::check_unused() const
{
	for (const auto& [key, node] : section_.options.entries)
		if (std::find(used_.begin(), used_.end(), key) == used_.end())
			fail(key.c_str(), "unknown key");
}

// ---------------------------------------------------------------- create

// Builds every configured instance: the factory reads and validates its
// options, then any key it did not read is an error. A constructor that
// throws something other than ConfigError is reported at its section.
std::vector<std::pair<std::string, std::unique_ptr<Handler>>> handlers_create(const Config& cfg)
{
	std::vector<std::pair<std::string, std::unique_ptr<Handler>>> out;
	for (const HandlerSection& section : cfg.handlers) {
		HandlerFactory factory = handler_factory(section.type);
		if (!factory) {
			const YamlNode* type = section.options.find("type");
			throw ConfigError(cfg.file, type ? type->line : section.line,
					  "handlers." + section.name + ".type",
					  "unknown handler type \"" + section.type + "\" (known: " +
						  join(handler_types(), ", ") + ")");
		}
		HandlerOptions opts(section, cfg.file);
		std::unique_ptr<Handler> handler;
		try {
			handler = factory(opts);
		} catch (const ConfigError&) {
			throw;
		} catch (const std::exception& e) {
			throw ConfigError(cfg.file, section.line, "handlers." + section.name, e.what());
		}
		opts.check_unused();
		out.emplace_back(section.name, std::move(handler));
	}
	return out;
}

}  // namespace laim
