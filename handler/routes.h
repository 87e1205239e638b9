// Routes: which handler instances get a recipient. The first route whose
// pattern matches wins:
//   "*"              every recipient (the default route)
//   "*@example.org"  any local part at that domain
//   "alerts@*"       that local part at any domain, or without one
//   "root@host.lan"  exactly that address
// Domains compare case-insensitively, local parts as written (RFC 5321
// 2.4), except that "postmaster" matches in any case. Alias deliveries
// ("|command", "/file") always go to their built-in instances
// (alias_delivery.h).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/proto.h"

namespace laim {

// One envelope recipient after /etc/aliases, before the routes: its final
// recipients, or the answer it gets instead (Reject: 550, Defer: 451, an
// aliases file or :include: file unreadable; TooMany: 452, the alias
// expands past laim's limits). Ok with no addresses is a 550 too.
struct Expanded {
	std::vector<std::string> addresses;
	BackendStatus status = BackendStatus::Ok;
};
using Expand = std::function<Expanded(const std::string& rcpt)>;

bool route_matches(std::string_view pattern, std::string_view rcpt);
// The first matching route, or nullptr (the recipient is refused: 550).
const Route* route_find(const std::vector<Route>& routes, std::string_view rcpt);
// Appends rcpt to the envelope's list unless the list already holds a
// recipient that reaches the same final recipient (same_recipient())
// through the same handler instances. Routes compare local parts as
// written and same_recipient() local ones in any case, so only both
// together say that one copy is enough: Alice@* and alice@* routed
// apart, or root@localhost and root@HOST, each keep theirs.
void add_recipient(const std::vector<Route>& routes, std::vector<std::string>& list, std::string rcpt);

}  // namespace laim
