// Envelope addresses for the sendmail command: the qualification domain,
// address lists parsed with GMime (RFC 5322 3.4: display names, groups,
// comments, quoted local parts), and the checks every address passes
// before it goes into an SMTP command or an offline file.
#include <gmime/gmime.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <mutex>

#include "common/address.h"
#include "common/hostname.h"
#include "sendmail/sendmail.h"

namespace laim::sendmail {

namespace {

struct GObjectUnref {
	void operator()(gpointer p) const { g_object_unref(p); }
};
using AddressList = std::unique_ptr<InternetAddressList, GObjectUnref>;

std::string_view trim(std::string_view s)
{
	size_t b = s.find_first_not_of(" \t\r\n");
	if (b == std::string_view::npos)
		return {};
	size_t e = s.find_last_not_of(" \t\r\n");
	return s.substr(b, e - b + 1);
}

// The host's fully qualified name: gethostname, made canonical through
// the resolver (AI_CANONNAME), as sendmail and Postfix do.
// Appends every mailbox of list (recursing into groups) to addrs.
void flatten(InternetAddressList* list, std::vector<std::string>& addrs)
{
	int n = internet_address_list_length(list);
	for (int i = 0; i < n; i++) {
		InternetAddress* ia = internet_address_list_get_address(list, i);
		if (INTERNET_ADDRESS_IS_GROUP(ia)) {
			flatten(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), addrs);
		} else if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
			const char* a = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
			addrs.emplace_back(a ? a : "");
		}
	}
}

// GMime reports an address list it could only partly parse (it drops
// what it cannot read) through the parser's warning callback.
void on_parser_warning(gint64, GMimeParserWarning code, const gchar*, gpointer invalid)
{
	if (code == GMIME_WARN_INVALID_ADDRESS_LIST)
		*static_cast<bool*>(invalid) = true;
}

// Parses an RFC 5322 address list; nullopt when GMime finds nothing in
// it or had to drop part of it. Local parts without a domain are
// addresses here ("root, \"Doe, J\" <j@x>"), as sendmail accepts them.
std::optional<std::vector<std::string>> parse_list(std::string_view text)
{
	gmime_init_once();
	std::string s(text);
	bool invalid = false;
	GMimeParserOptions* opts = g_mime_parser_options_new();
	g_mime_parser_options_set_allow_addresses_without_domain(opts, TRUE);
	g_mime_parser_options_set_warning_callback(opts, on_parser_warning, &invalid);
	AddressList list(internet_address_list_parse(opts, s.c_str()));
	g_mime_parser_options_free(opts);
	if (!list || invalid)
		return std::nullopt;
	std::vector<std::string> addrs;
	flatten(list.get(), addrs);
	return addrs;
}

// Qualifies and checks one address; throws Failure(code) naming where.
std::string checked_address(std::string_view addr, std::string_view domain, const std::string& where, int code)
{
	if (!addr.empty() && addr[0] == '-')
		throw Failure(code, where + ": address \"" + std::string(addr) + "\" begins with '-': refused");
	if (addr.empty())
		throw Failure(code, where + ": empty address");
	std::string q = qualify(addr, domain);
	// RFC 5321 4.5.3.1 limits (64 + 1 + 255 octets); UTF-8 per RFC 6531.
	if (!valid_mailbox(q, true, false))
		throw Failure(code, where + ": invalid address <" + q + ">");
	return q;
}

}  // namespace

void gmime_init_once()
{
	static std::once_flag flag;
	std::call_once(flag, [] { g_mime_init(); });
}

std::string mailname()
{
	const char* env = getenv("LAIM_MAILNAME");
	std::string name = read_mailname(env && *env ? env : "/etc/mailname");
	return name.empty() ? host_fqdn() : name;
}

std::string qualify(std::string_view addr, std::string_view domain)
{
	// A domain is an '@' after any quoted local part ("a@b"@c).
	size_t quote = addr.rfind('"');
	size_t at = addr.rfind('@');
	if (at != std::string_view::npos && (quote == std::string_view::npos || at > quote))
		return std::string(addr);
	return std::string(addr) + "@" + std::string(domain);
}

void add_address_list(std::string_view list, std::string_view domain, const std::string& where, int code,
		      std::vector<std::string>& out)
{
	if (list.find('\0') != std::string_view::npos)
		throw Failure(code, where + ": NUL byte in an address");
	if (trim(list).empty())
		return;
	auto addrs = parse_list(list);
	if (!addrs)
		throw Failure(code, where + ": cannot parse \"" + std::string(trim(list)) + "\" as addresses");
	for (const std::string& a : *addrs) {
		std::string q = checked_address(a, domain, where, code);
		if (std::find(out.begin(), out.end(), q) == out.end())
			out.push_back(std::move(q));
	}
}

std::string parse_sender(std::string_view value, std::string_view domain)
{
	std::string_view v = trim(value);
	if (v.empty() || v == "<>")
		return "";
	if (v[0] == '-')
		throw Failure(EX_USAGE, "sender \"" + std::string(v) + "\" begins with '-': refused");
	auto addrs = parse_list(v);
	if (!addrs || addrs->size() != 1)
		throw Failure(EX_USAGE, "bad sender address \"" + std::string(v) + "\"");
	return checked_address((*addrs)[0], domain, "sender", EX_USAGE);
}

bool needs_smtputf8(const std::string& sender, const std::vector<std::string>& recipients)
{
	auto non_ascii = [](const std::string& s) {
		return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
	};
	return non_ascii(sender) || std::any_of(recipients.begin(), recipients.end(), non_ascii);
}

}  // namespace laim::sendmail
