// Names of this host and of its users, looked up once at start (never in
// the mail path, where laim does no DNS).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace laim {

// The first line of a mailname file (/etc/mailname), trimmed, when it is a
// valid domain; "" when the file is missing or holds something else.
std::string read_mailname(const char* path);

// The host's fully qualified name: gethostname(), canonicalized through
// the resolver only when it has no dot; "localhost" when there is none.
// Resolved once per process, on first use.
std::string host_fqdn();

// This host's names, the domains whose addresses are local: hostname (as
// configured or resolved), the machine's own name and FQDN, /etc/mailname
// and localhost; without repeats. Resolved once, by the parent at start.
std::vector<std::string> host_names(const std::string& hostname);

// This host's own addresses (getifaddrs(3)), numeric as inet_ntop(3)
// writes them, loopback too: the parent's, at start and at each reload,
// for the smtp process's AUTH guard (a local user may bind any of them).
std::vector<std::string> host_addresses();

// The login name of uid, or "" when no user has it.
std::string login_name(uid_t uid);

}  // namespace laim
