// What the root parent prepares for its two children before forking them.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/fd.h"
#include "common/sandbox.h"

namespace laim {

struct Listener {
	UniqueFd fd;
	std::string name;  // "127.0.0.1:25", "[::1]:25" or the socket path
	bool local = false;  // the unix submission socket (SO_PEERCRED)
};

struct Runtime {
	Config cfg;
	std::string config_text;  // as read, for the handler's reloads
	std::string hostname;     // resolved once at start
	RunAs user;
	std::vector<Listener> listeners;
	bool foreground = false;  // -d: log to stderr
	int verbose = 0;
};

// parent/listen.cpp: binds every configured listener, fatal on failure.
std::vector<Listener> listen_all(const Config& cfg);
// parent/listen.cpp: the configured hostname, /etc/mailname, or the FQDN.
std::string resolve_hostname(const Config& cfg);

}  // namespace laim
