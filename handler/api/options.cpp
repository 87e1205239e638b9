// HandlerOptions: how every handler class reads and validates its own
// section of the config (file, line and key in every error).
#include <algorithm>
#include <charconv>
#include <strings.h>

#include "handler/api/handler.h"

namespace laim {

namespace {

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

HandlerOptions::HandlerOptions(const HandlerSection& section, const std::string& file, Secrets* secrets)
    : section_(section), file_(file), used_{"type"}, secrets_(secrets)
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

std::string HandlerOptions::secret(const char* key)
{
	std::string path = string(key);
	if (!secrets_)
		fail(key, "no secrets in this context");
	try {
		return secrets_->get(path);
	} catch (const std::runtime_error& e) {
		fail(key, e.what());
	}
}

void HandlerOptions::check_unused() const
{
	for (const auto& [key, node] : section_.options.entries)
		if (std::find(used_.begin(), used_.end(), key) == used_.end())
			fail(key.c_str(), "unknown key");
}

}  // namespace laim
