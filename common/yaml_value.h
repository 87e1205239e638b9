// Typed readers of the config's YAML values: the one rule for a string, a
// path, a boolean, an integer or a list of strings, whether the key is a
// core key (common/config.cpp) or a handler option (handler/api/options.cpp).
//
// Every error is a ConfigError at the value's line, worded
//   FILE:LINE: key: expected a positive integer, got "5m"
// where what was got is "an empty value", "a sequence", "a mapping",
// "a quoted string \"12\"" or, unquoted, the scalar itself; a string
// where a list of strings belongs is "a string", never quoted (it may be
// a secret).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"

namespace laim {

// One value of the tree, with the file and the key path its errors name.
// It refers to node and file: use it while they live.
class YamlValue {
 public:
	YamlValue(const YamlNode& node, const std::string& file, std::string key);

	// A scalar, quoted or not, without NUL: these strings reach C APIs,
	// and a "\0" escape would cut them short.
	std::string string() const;
	// A string that starts with '/' and holds no ".." component, written
	// one way: without a trailing '/', "//" or "." ("/var/spool/laim/."
	// is "/var/spool/laim").
	std::string path() const;
	// An unquoted true, yes, on, false, no or off, in any case (YAML 1.1);
	// a quoted "yes" is a string.
	bool boolean() const;
	// Unquoted decimal digits within [min, max]: no sign, no leading zero
	// (YAML 1.1 reads 050 as octal), no exponent, no hex.
	uint64_t integer(uint64_t min, uint64_t max) const;
	// A sequence of strings; an item's errors name it key[i].
	std::vector<std::string> strings() const;

	// Throws "expected WHAT, got <this value>".
	[[noreturn]] void fail_expected(const std::string& what) const;
	// Throws "WHAT" at this value's line and key.
	[[noreturn]] void fail(const std::string& what) const;

 private:
	std::string expected_got(const std::string& what) const;

	const YamlNode& node_;
	const std::string& file_;
	std::string key_;
};

// Decimal digits without sign or leading zero ("0" itself is fine), as
// YamlValue::integer reads them, for numbers inside a string such as the
// port of HOST:PORT. False when s is not that, or does not fit.
bool parse_decimal(std::string_view s, uint64_t* out);

}  // namespace laim
