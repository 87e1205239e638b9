// RFC 5321 section 4.1.2 address grammar, with the RFC 6531 UTF-8
// extension; see address.h.
#include "common/address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>

#include "common/text.h"

namespace laim {

namespace {

bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_8bit(unsigned char c) { return c >= 0x80; }

// atext of RFC 5322 3.2.3, as Dot-string uses it.
bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr);
}

// qtextSMTP: printable ASCII except '"' and '\'.
bool is_qtext(unsigned char c) { return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126); }

bool has_8bit(std::string_view s)
{
	for (unsigned char c : s)
		if (is_8bit(c))
			return true;
	return false;
}

}  // namespace

bool is_display_control(uint32_t cp)
{
	return cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t utf8_char(std::string_view s, size_t i, uint32_t& cp)
{
	unsigned char c = s[i];
	size_t len;
	if (c < 0x80) {
		cp = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (s.size() - i < len)
		return 0;
	for (size_t k = 1; k < len; k++) {
		unsigned char b = s[i + k];
		if ((b & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (b & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (cp >= 0xd800 && cp <= 0xdfff) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// past U+10FFFF) without the C1 control characters U+0080..U+009F and
// without is_display_control's code points.
bool valid_utf8(std::string_view s)
{
	for (size_t i = 0; i < s.size();) {
		uint32_t cp;
		size_t len = utf8_char(s, i, cp);
		if (len == 0 || (cp >= 0x80 && cp < 0xa0) || is_display_control(cp))
			return false;
		i += len;
	}
	return true;
}

namespace {

// Length of the Local-part (Dot-string or Quoted-string) at the start of
// s, or 0 when s does not start with one.
size_t local_part_len(std::string_view s, bool utf8)
{
	size_t i = 0, n = s.size();
	if (n == 0)
		return 0;
	if (s[0] == '"') {
		// Quoted-string: qtextSMTP and quoted-pairSMTP (backslash then
		// printable ASCII), never a control character.
		for (i = 1; i < n; i++) {
			unsigned char c = s[i];
			if (c == '"')
				return i + 1;
			if (c == '\\') {
				if (i + 1 >= n)
					return 0;
				unsigned char e = s[++i];
				if (e < 32 || e > 126)
					return 0;
			} else if (!is_qtext(c) && !(utf8 && is_8bit(c))) {
				return 0;
			}
		}
		return 0;
	}
	// Dot-string = Atom *("." Atom)
	for (;;) {
		size_t start = i;
		while (i < n && (is_atext(s[i]) || (utf8 && is_8bit(s[i]))))
			i++;
		if (i == start)
			return 0;
		if (i < n && s[i] == '.') {
			i++;
			continue;
		}
		return i;
	}
}

// Snum "." Snum "." Snum "." Snum, each 1*3DIGIT at most 255.
bool valid_ipv4(std::string_view s)
{
	for (int part = 0; part < 4; part++) {
		if (part > 0) {
			if (s.empty() || s[0] != '.')
				return false;
			s.remove_prefix(1);
		}
		size_t k = 0;
		unsigned v = 0;
		while (k < s.size() && k < 3 && is_digit(s[k]))
			v = v * 10 + (s[k++] - '0');
		if (k == 0 || v > 255)
			return false;
		s.remove_prefix(k);
	}
	return s.empty();
}

}  // namespace

// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]".
// General-address-literal tags are refused: none is standardized.
bool valid_address_literal(std::string_view s)
{
	if (s.size() < 3 || s.front() != '[' || s.back() != ']' || s.size() > ADDR_MAX_DOMAIN)
		return false;
	s = s.substr(1, s.size() - 2);
	if (s.size() > 5 && istarts(s, "IPv6:")) {
		s.remove_prefix(5);
		char buf[INET6_ADDRSTRLEN];
		if (s.size() >= sizeof buf)
			return false;
		memcpy(buf, s.data(), s.size());
		buf[s.size()] = '\0';
		struct in6_addr a;
		return inet_pton(AF_INET6, buf, &a) == 1;
	}
	return valid_ipv4(s);
}

bool valid_domain(std::string_view d, bool utf8)
{
	if (d.empty() || d.size() > ADDR_MAX_DOMAIN)
		return false;
	if (utf8 ? !valid_utf8(d) : has_8bit(d))
		return false;
	auto let_dig = [utf8](unsigned char c) { return is_alpha(c) || is_digit(c) || (utf8 && is_8bit(c)); };
	// sub-domain = Let-dig [Ldh-str], labels of at most 63 octets (RFC 1035)
	size_t start = 0;
	for (;;) {
		size_t end = d.find('.', start);
		std::string_view label = d.substr(start, end == std::string_view::npos ? end : end - start);
		if (label.empty() || label.size() > 63)
			return false;
		if (!let_dig(label.front()) || !let_dig(label.back()))
			return false;
		for (unsigned char c : label)
			if (!let_dig(c) && c != '-')
				return false;
		if (end == std::string_view::npos)
			return true;
		start = end + 1;
	}
}

bool valid_host_name(std::string_view name)
{
	std::string_view last = name.substr(name.rfind('.') + 1);
	return valid_domain(name, true) && !std::all_of(last.begin(), last.end(), is_digit);
}

bool valid_mailbox(std::string_view m, bool utf8, bool allow_bare_local)
{
	if (utf8 ? !valid_utf8(m) : has_8bit(m))
		return false;
	size_t l = local_part_len(m, utf8);
	if (l == 0 || l > ADDR_MAX_LOCAL)
		return false;
	if (l == m.size())
		return allow_bare_local;
	if (m[l] != '@')
		return false;
	std::string_view domain = m.substr(l + 1);
	if (!domain.empty() && domain[0] == '[')
		return valid_address_literal(domain);
	return valid_domain(domain, utf8);
}

AddressStatus parse_path(std::string_view arg, SmtpPath& out)
{
	if (arg.empty() || arg[0] != '<')
		return AddressStatus::Syntax;
	// The closing '>' is the first one outside a Quoted-string.
	size_t i = 1;
	bool quoted = false;
	for (; i < arg.size(); i++) {
		char c = arg[i];
		if (quoted) {
			if (c == '\\')
				i++;
			else if (c == '"')
				quoted = false;
		} else if (c == '"') {
			quoted = true;
		} else if (c == '>') {
			break;
		}
	}
	if (i >= arg.size())
		return AddressStatus::Syntax;
	std::string_view inner = arg.substr(1, i - 1);
	std::string_view rest = arg.substr(i + 1);
	if (!rest.empty() && rest[0] != ' ')
		return AddressStatus::Syntax;
	if (i + 1 > ADDR_MAX_PATH)
		return AddressStatus::Invalid;

	if (!inner.empty() && inner[0] == '@') {
		// A-d-l = At-domain *( "," At-domain ) ":"; obsolete, ignored
		// (RFC 5321 4.1.2, appendix C) but it must still be well formed.
		size_t colon = inner.find(':');
		if (colon == std::string_view::npos)
			return AddressStatus::Invalid;
		std::string_view route = inner.substr(0, colon);
		while (!route.empty()) {
			size_t comma = route.find(',');
			std::string_view hop = route.substr(0, comma);
			if (hop.size() < 2 || hop[0] != '@' || !valid_domain(hop.substr(1), true))
				return AddressStatus::Invalid;
			if (comma == std::string_view::npos)
				break;
			route.remove_prefix(comma + 1);
			if (route.empty())
				return AddressStatus::Invalid;
		}
		inner.remove_prefix(colon + 1);
		if (inner.empty())
			return AddressStatus::Invalid;
	}
	if (!inner.empty() && !valid_mailbox(inner, true, true))
		return AddressStatus::Invalid;
	out.mailbox = inner;
	out.rest = rest;
	out.utf8 = has_8bit(arg.substr(0, i + 1));
	return AddressStatus::Ok;
}

std::string local_part_text(std::string_view local)
{
	if (local.size() < 2 || local.front() != '"' || local.back() != '"')
		return std::string(local);
	std::string text;
	for (size_t i = 1; i + 1 < local.size(); i++) {
		if (local[i] == '\\' && i + 2 < local.size())
			i++;
		text += local[i];
	}
	return text;
}

std::string quote_local_part(std::string_view text)
{
	if (!text.empty() && local_part_len(text, true) == text.size())
		return std::string(text);
	std::string quoted = "\"";
	for (char c : text) {
		if (c == '"' || c == '\\')
			quoted += '\\';
		quoted += c;
	}
	return quoted + '"';
}

bool valid_user_name(std::string_view user)
{
	if (user.empty() || user.size() > 64 || user[0] == '-' || user[0] == '.')
		return false;
	return std::all_of(user.begin(), user.end(), [](unsigned char c) {
		return isalnum(c) || c == '.' || c == '_' || c == '-';
	});
}

std::string comment_name(std::string_view name)
{
	std::string out;
	for (unsigned char c : name.substr(0, 255))
		out += c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\' ? char(c) : '_';
	return out;
}

}  // namespace laim
