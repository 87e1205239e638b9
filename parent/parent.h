// The root parent's own parts: binding the listeners, preparing the spool,
// the mailbox service for the handler process.
#pragma once

#include <sys/types.h>

#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/fd.h"
#include "common/imsg.h"
#include "common/peer.h"
#include "common/proto.h"
#include "common/runtime.h"

namespace laim {

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
	bool request(const Config& cfg, ImsgPeer& chan, const Imsg& m);
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
	void grant(const Config& cfg, ImsgPeer& chan, uint32_t id, const std::string& user);
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
// parent/spool.cpp: makes the spool's directories and gives them to
// rt.user (offline/ also to laim-drop's group); fatal on failure.
void prepare_spool(Runtime& rt);

}  // namespace laim
