// Import of SPOOL/offline/: messages that sendmail handed to the setgid
// laim-drop while laimd was down or its queue was full (issue: nothing
// submitted locally is ever lost).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ctl.h"
#include "common/offline.h"
#include "handler/api/handler.h"
#include "handler/ratelimit.h"
#include "handler/routes.h"
#include "handler/spool.h"

namespace laim {

// An imported message: its envelope and the size of the spooled message.
struct Imported {
	Envelope env;
	uint64_t size = 0;
};

class OfflineImport {
 public:
	// drop_gid: the laimdrop group; files of any other group are refused.
	// limits: a file whose sender is over a rate limit waits in offline/.
	OfflineImport(Spool& spool, std::string hostname, gid_t drop_gid, RateLimiter& limits);
	// Whether the owner may queue a message now; a file whose owner may
	// not (their share of the queue is taken) waits in offline/.
	std::function<bool(uid_t)> admits;
	// A file refused after its envelope was read, once it is in failed/:
	// the notice to its sender (handler/bounce.h), with a failure line
	// "<RCPT>: CODE WHY" per recipient and the message.
	std::function<void(const Envelope& env, const std::vector<std::string>& failures, std::string_view message)>
		tell_sender;

	// Moves up to `room` offline files into queue/, oldest name first
	// (each fsynced before its offline file is removed), and returns them.
	// Recipients go through `expand` (aliases), then routes
	// (add_recipient() of handler/routes.h); a file with a recipient
	// that expand() defers or finds too big stays for a later run. Files that fail the checks
	// (not a regular file with one link, not group laimdrop, owner not a
	// real user, malformed, over size_limit, more Received: fields than
	// hop_limit: a mail loop) are moved to failed/ and
	// logged. Files held by a rate limit stay, and are not opened again
	// until their window allows (next_release()).
	// Files whose message is in queue/ already (imported_before()) are
	// only removed. Every removal is synced (an fsync of offline/) before
	// run() returns, so before any message it returns can be delivered.
	std::vector<Imported> run(size_t room, uint64_t size_limit, uint32_t hop_limit,
				  const std::vector<Route>& routes, const Expand& expand);
	// At start, for each message of queue/ that names its offline file
	// (Envelope::offline): a stop between its commit and the file's
	// removal left the file in offline/, and the next run() removes it
	// instead of importing it again.
	void imported_before(const std::string& name, const std::string& id) { imported_[name] = id; }
	// The files in offline/ not imported yet (held by a rate limit, or
	// waiting for room in the queue): those owner owns, or all. Throws
	// std::runtime_error when offline/ cannot be read.
	size_t waiting(std::optional<uid_t> owner) const;
	// When the first file held by a rate limit may go; 0 when none waits.
	time_t next_release() const { return next_release_; }
	// The files refused so far, in failed/ as offline.NAME: their reason,
	// size, mtime, and the envelope when its header reads (a symlink,
	// directory or FIFO is listed with its reason, never opened).
	std::vector<CtlFailedEntry> refused() const;

 private:
	bool not_imported(std::vector<std::string>& names) const;
	void import_some(size_t room, uint64_t size_limit, uint32_t hop_limit, const std::vector<Route>& routes,
			 const Expand& expand, std::vector<Imported>& out);
	bool import_one(const std::string& name, uint64_t size_limit, uint32_t hop_limit,
			const std::vector<Route>& routes, const Expand& expand, Imported& out);
	bool held(const std::string& name, const Envelope& who, time_t now);
	bool refuse(const std::string& name, const std::string& why);
	bool refuse_and_tell(const std::string& name, const OfflineEnvelope& oe, time_t arrival,
			     std::string_view body, const char* code, const std::string& why);
	bool postpone(const std::string& name, const char* what);
	bool remove_imported();
	void sync_offline();

	Spool& spool_;
	std::string hostname_;
	gid_t drop_gid_;
	RateLimiter& limits_;
	std::map<std::string, Envelope> held_;  // file name -> its sender (uid, sender, client)
	time_t next_release_ = 0;
	std::map<std::string, std::string> imported_;  // file name -> the queue id its message has
};

}  // namespace laim
