// HandlerOptions: how every handler class reads and validates its own
// section of the config (file, line and key in every error). The values
// obey the rules of the core keys: common/yaml_value.h reads both.
#include <algorithm>

#include "common/yaml_value.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

// The default of an absent option; without one, the option is required.
template <typename T>
T absent(const HandlerOptions& o, const char* key, std::optional<T> def)
{
	if (!def)
		o.fail(key, "missing required option");
	return std::move(*def);
}

// The key path that errors name: handlers.INSTANCE.key.
std::string key_path(const HandlerOptions& o, const char* key)
{
	return "handlers." + o.name() + "." + key;
}

// An option's value, to read with the rules of the core keys.
YamlValue value(const HandlerOptions& o, const YamlNode& node, const char* key)
{
	return YamlValue(node, o.file(), key_path(o, key));
}

}  // namespace

HandlerOptions::HandlerOptions(const HandlerSection& section, const std::string& file, Secrets* secrets,
			       unsigned delivery_timeout)
    : section_(section), file_(file), used_{"type"}, secrets_(secrets), delivery_timeout_(delivery_timeout)
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
	throw ConfigError(file_, line, key_path(*this, key), what);
}

std::string HandlerOptions::string(const char* key, std::optional<std::string> def)
{
	const YamlNode* node = lookup(key);
	return node ? value(*this, *node, key).string() : absent(*this, key, std::move(def));
}

std::string HandlerOptions::path(const char* key, std::optional<std::string> def)
{
	const YamlNode* node = lookup(key);
	return node ? value(*this, *node, key).path() : absent(*this, key, std::move(def));
}

// The bounds are clamped to 0: an integer is written without a sign.
long long HandlerOptions::integer(const char* key, std::optional<long long> def, long long min,
				  long long max)
{
	const YamlNode* node = lookup(key);
	if (!node)
		return absent(*this, key, def);
	return (long long)value(*this, *node, key).integer(std::max(min, 0LL), std::max(max, 0LL));
}

bool HandlerOptions::boolean(const char* key, std::optional<bool> def)
{
	const YamlNode* node = lookup(key);
	return node ? value(*this, *node, key).boolean() : absent(*this, key, def);
}

std::vector<std::string> HandlerOptions::strings(const char* key)
{
	const YamlNode* node = lookup(key);
	return node ? value(*this, *node, key).strings() : std::vector<std::string>{};
}

std::string HandlerOptions::secret(const char* key)
{
	std::string path = this->path(key);
	if (!secrets_)
		fail(key, "no secrets in this context");
	try {
		return secrets_->get(path);
	} catch (const std::runtime_error& e) {
		fail(key, e.what());
	}
}

InstanceLink HandlerOptions::instance(const char* key, const char* type)
{
	InstanceLink link(string(key));
	links_.push_back({key, type, link});
	return link;
}

void HandlerOptions::check_unused() const
{
	for (const auto& [key, node] : section_.options.entries)
		if (std::find(used_.begin(), used_.end(), key) == used_.end())
			fail(key.c_str(), "unknown key");
}

}  // namespace laim
