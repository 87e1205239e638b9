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

#include <string_view>
#include <vector>

#include "common/config.h"

namespace laim {

bool route_matches(std::string_view pattern, std::string_view rcpt);
// The first matching route, or nullptr (the recipient is refused: 550).
const Route* route_find(const std::vector<Route>& routes, std::string_view rcpt);

}  // namespace laim
