// What the root parent prepares for its two children before forking them.
#pragma once

#include <sys/types.h>

#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/fd.h"
#include "common/imsg.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "common/secrets.h"

namespace laim {

struct Listener {
	UniqueFd fd;
	std::string name;  // "127.0.0.1:25", "[::1]:25" or the socket path
	bool local = false;  // the unix submission socket (SO_PEERCRED)
};

struct Runtime {
	Config cfg;
	std::string config_text;  // as read, for the handler's reloads
	Secrets secrets;          // the secret files the handler sections name, as read
	std::string hostname;     // resolved once at start
	RunAs user;
	std::vector<Listener> listeners;  // served by smtp
	Listener control;   // the control socket, served by the handler process
	bool have_drop_group = false;  // the laimdrop group exists: offline/ is open to laim-drop
	gid_t drop_gid = 0;
	bool foreground = false;  // -d: log to stderr
	int verbose = 0;
};

struct MailboxRefusal {
	MailboxStatus status;
	std::string why;
};

// parent/mailbox.cpp: users' mailboxes under mail_dir, opened and locked
// (fcntl and dotlock) for the handler process. Each grant is a lease that
// holds the dotlock until the handler says it is done or dies.
class MailboxService {
 public:
	// Answers one request; false when it breaks the protocol.
	bool request(const Config& cfg, ImsgChannel& chan, const Imsg& m);
	// A lease held far longer than an append takes.
	bool overdue(time_t now) const;
	void release_all();

 private:
	struct Lease {
		std::string dir, dotlock;
		dev_t dev;
		ino_t ino;
		time_t granted;
	};
	UniqueFd open(const Config& cfg, uint32_t id, const std::string& user, MailboxRefusal& no);
	void release(uint32_t id);
	std::map<uint32_t, Lease> leases_;
};

// parent/listen.cpp: binds every configured listener, fatal on failure.
std::vector<Listener> listen_all(const Config& cfg);
// parent/listen.cpp: a unix socket every local user may connect to (0666).
Listener listen_unix(const std::string& path);
// parent/listen.cpp: the configured hostname, /etc/mailname, or the FQDN.
std::string resolve_hostname(const Config& cfg);

}  // namespace laim
