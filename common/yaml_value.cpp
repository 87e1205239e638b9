// The typed readers of YAML values; see yaml_value.h.
#include "common/yaml_value.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include "common/text.h"

namespace laim {

namespace {

bool all_digits(std::string_view s)
{
	return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// What an error says was found instead: the kind of a non-scalar, the
// text of a scalar, and "a quoted string" when the quotes are what make
// it wrong for a boolean or an integer.
std::string describe(const YamlNode& n)
{
	switch (n.kind) {
	case YamlNode::Kind::Null:
		return "an empty value";
	case YamlNode::Kind::Sequence:
		return "a sequence";
	case YamlNode::Kind::Mapping:
		return "a mapping";
	case YamlNode::Kind::Scalar:
		break;
	}
	return (n.quoted ? "a quoted string \"" : "\"") + n.value + "\"";
}

// How the range of an integer is put: the bounds that matter, no more.
std::string integer_range(uint64_t min, uint64_t max)
{
	if (min == 1 && max >= std::numeric_limits<uint32_t>::max())
		return "a positive integer";
	if (min == 0 && max >= std::numeric_limits<uint32_t>::max())
		return "a non-negative integer";
	return "an integer from " + std::to_string(min) + " to " + std::to_string(max);
}

}  // namespace

bool parse_decimal(std::string_view s, uint64_t* out)
{
	if (!all_digits(s) || (s.size() > 1 && s[0] == '0'))
		return false;
	auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
	return ec == std::errc() && end == s.data() + s.size();
}

YamlValue::YamlValue(const YamlNode& node, const std::string& file, std::string key)
    : node_(node), file_(file), key_(std::move(key))
{
}

std::string YamlValue::expected_got(const std::string& what) const
{
	return "expected " + what + ", got " + describe(node_);
}

void YamlValue::fail_expected(const std::string& what) const
{
	fail(expected_got(what));
}

void YamlValue::fail(const std::string& what) const
{
	throw ConfigError(file_, node_.line, key_, what);
}

std::string YamlValue::string() const
{
	if (node_.kind != YamlNode::Kind::Scalar)
		fail_expected("a string");
	if (node_.value.find('\0') != std::string::npos)
		fail("contains a NUL character");
	return node_.value;
}

std::string YamlValue::path() const
{
	std::string p = string();
	if (p.empty() || p[0] != '/')
		fail("expected an absolute path, got \"" + p + "\"");
	// One spelling per file: laimd compares paths and takes the parent
	// of one as what comes before its last '/' (the spool's, say). So a
	// trailing '/', '//' and '.' go; '..' is refused (through a symbolic
	// link it is not the parent the text shows).
	std::string clean;
	for (size_t i = 1; i <= p.size();) {
		size_t end = std::min(p.find('/', i), p.size());
		std::string_view part(p.data() + i, end - i);
		if (part == "..")
			fail("\"" + p + "\": write the path without '..'");
		if (!part.empty() && part != ".")
			clean.append("/").append(part);
		i = end + 1;
	}
	return clean.empty() ? "/" : clean;
}

bool YamlValue::boolean() const
{
	if (node_.kind == YamlNode::Kind::Scalar && !node_.quoted) {
		const std::string& v = node_.value;
		for (const char* t : {"true", "yes", "on"})
			if (iequal(v, t))
				return true;
		for (const char* f : {"false", "no", "off"})
			if (iequal(v, f))
				return false;
	}
	fail_expected("a boolean (true/false, yes/no, on/off)");
}

uint64_t YamlValue::integer(uint64_t min, uint64_t max) const
{
	std::string expected = integer_range(min, max);
	const std::string& v = node_.value;
	if (node_.kind != YamlNode::Kind::Scalar || node_.quoted || !all_digits(v))
		fail_expected(expected);
	if (v.size() > 1 && v[0] == '0')
		fail(expected_got(expected) + " (YAML 1.1 reads a leading 0 as octal: write the number without it)");
	uint64_t n;
	if (!parse_decimal(v, &n) || n < min || n > max)  // digits that do not parse are too many
		fail(v + " is out of range: expected " + expected);
	return n;
}

std::vector<std::string> YamlValue::strings() const
{
	// A string written where the list belongs is not quoted: it may be
	// a secret (a webhook header, a command's environment entry).
	if (node_.kind == YamlNode::Kind::Scalar)
		fail("expected a list of strings, got a string");
	if (node_.kind != YamlNode::Kind::Sequence)
		fail_expected("a list of strings");
	std::vector<std::string> out;
	for (size_t i = 0; i < node_.items.size(); i++)
		out.push_back(YamlValue(node_.items[i], file_, key_ + "[" + std::to_string(i) + "]").string());
	return out;
}

}  // namespace laim
