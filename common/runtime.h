// What the root parent prepares for its two children before forking them:
// the configuration, the sockets it bound as root, the unprivileged users.
// Each child takes what it serves and closes the rest.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/config.h"
#include "common/fd.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "common/secrets.h"

namespace laim {

struct Listener {
	UniqueFd fd;
	std::string name;  // "127.0.0.1:25", "[::1]:25" or the socket path
	bool local = false;  // the unix submission socket (SO_PEERCRED)
	int listen_index = -1;  // its entry in Config::listen; -1 for the unix socket
};

struct Runtime {
	Config cfg;
	std::string config_text;  // as read, for the handler's reloads
	Secrets secrets;          // the secret files the handler sections name, as read
	std::string hostname;     // resolved once at start
	std::vector<std::string> local_domains;  // host_names(hostname), at start
	std::vector<std::string> host_addresses;  // host_addresses(), at start and at each reload
	RunAs user;       // the handler process's
	RunAs smtp_user;  // the smtp process's, another uid: it cannot signal the handler
	std::vector<Listener> listeners;  // served by smtp
	std::vector<SmtpTls> tls;  // the TLS listeners' certificate chains (the parent keeps their keys)
	Listener control;   // the control socket, served by the handler process
	UniqueFd spool_lock;  // SPOOL/lock, flock()ed: kept by the parent and the handler process
	bool have_drop_group = false;  // the laimdrop group exists: offline/ is open to laim-drop
	gid_t drop_gid = 0;
	bool foreground = false;  // -d: log to stderr
	int verbose = 0;
};

}  // namespace laim
