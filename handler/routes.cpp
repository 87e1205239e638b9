// Route matching: which configured route a recipient falls under.
#include "handler/routes.h"

#include <algorithm>

#include "common/aliases.h"
#include "common/text.h"
#include "handler/alias_delivery.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

struct Parts {
	std::string_view local;
	std::string_view domain;
	bool has_domain = false;
};

// Splits an address (no angle brackets) into local part and domain. A
// quoted local part (RFC 5321 4.1.2) may hold '@', so its closing quote
// is found first; an unquoted one cannot, and the last '@' separates.
Parts split_address(std::string_view addr)
{
	size_t at = std::string_view::npos;
	if (!addr.empty() && addr[0] == '"') {
		size_t i = 1;
		while (i < addr.size() && addr[i] != '"')
			i += addr[i] == '\\' ? 2 : 1;
		if (i + 1 < addr.size() && addr[i + 1] == '@')
			at = i + 1;
	} else {
		at = addr.rfind('@');
	}
	if (at == std::string_view::npos)
		return {addr, {}, false};
	return {addr.substr(0, at), addr.substr(at + 1), true};
}

// Local parts are case-sensitive (RFC 5321 2.4) except the reserved
// "postmaster" (RFC 5321 4.5.1), matched in any case. Quoted local parts
// compare as written.
bool local_equals(std::string_view a, std::string_view b)
{
	return a == b || (iequal(a, "postmaster") && iequal(b, "postmaster"));
}

}  // namespace

bool route_matches(std::string_view pattern, std::string_view rcpt)
{
	if (pattern == "*")
		return true;
	Parts r = split_address(rcpt);
	if (pattern.starts_with("*@"))
		return r.has_domain && iequal(pattern.substr(2), r.domain);
	if (pattern.size() > 2 && pattern.ends_with("@*"))
		return local_equals(pattern.substr(0, pattern.size() - 2), r.local);
	Parts p = split_address(pattern);
	if (p.has_domain != r.has_domain || !local_equals(p.local, r.local))
		return false;
	return !p.has_domain || iequal(p.domain, r.domain);
}

const Route* route_find(const std::vector<Route>& routes, std::string_view rcpt)
{
	static const Route command_route{"|", {ALIAS_COMMAND_INSTANCE}, 0};
	static const Route file_route{"/", {ALIAS_FILE_INSTANCE}, 0};
	if (alias_delivery(rcpt))
		return rcpt.front() == '|' ? &command_route : &file_route;
	for (const auto& route : routes)
		if (route_matches(route.match, rcpt))
			return &route;
	return nullptr;
}

void add_recipient(const std::vector<Route>& routes, std::vector<std::string>& list, std::string rcpt)
{
	const Route* mine = route_find(routes, rcpt);
	auto same = [&](const std::string& r) {
		if (!same_recipient(r, rcpt))
			return false;
		const Route* theirs = route_find(routes, r);
		return theirs == mine || (theirs && mine && theirs->handlers == mine->handlers);
	};
	if (std::none_of(list.begin(), list.end(), same))
		list.push_back(std::move(rcpt));
}

}  // namespace laim
