// Text helpers every process shares.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

namespace laim {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

// ASCII case-insensitive equality, as SMTP verbs and keywords, header
// field names and domains compare, whatever the locale (strcasecmp(3)
// follows it).
inline bool iequal(std::string_view a, std::string_view b)
{
	return a.size() == b.size() &&
	       std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// s begins with prefix, in ASCII case-insensitive terms (iequal).
inline bool istarts(std::string_view s, std::string_view prefix)
{
	return s.size() >= prefix.size() && iequal(s.substr(0, prefix.size()), prefix);
}

// s on one line: each CR and LF a space (a peer's reply in a log line, a
// reason file, a header field).
inline std::string one_line(std::string s)
{
	for (char& c : s)
		if (c == '\n' || c == '\r')
			c = ' ';
	return s;
}

}  // namespace laim
