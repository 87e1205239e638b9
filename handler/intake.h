// Transactions from the smtp process (doc/architecture.md, "Processes"): MAIL
// reserves a place in the bounded queue, RCPT is checked against aliases,
// routes and handlers, DATA creates the spool file that smtp writes the
// message into, and end of data is committed durably, a group at a time on
// the committer thread, before the client gets its 250.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/event_loop.h"
#include "common/fd.h"
#include "common/peer.h"
#include "common/proto.h"
#include "handler/api/handler.h"
#include "handler/queue.h"
#include "handler/ratelimit.h"
#include "handler/routes.h"
#include "handler/spool.h"
#include "handler/workers.h"

namespace laim {

// Syncer threads of a group commit (Intake::run_together): with the
// committer itself, the syncs a group runs at once.
constexpr size_t SYNC_THREADS = 8;

class Intake {
 public:
	// Hands a committed message to the queue.
	using Enqueue = std::function<void(const Envelope& env, uint64_t size, double arrival, Queue::Bytes bytes)>;

	// cfg is the handler process's own, current across reloads; protocol
	// errors from smtp are reported to parent; limits judge each MAIL.
	Intake(EventLoop& loop, ImsgPeer& parent, const Config& cfg, Spool& spool, Queue& queue, RateLimiter& limits,
	       Expand expand, Enqueue enqueue);

	// Serves a fresh channel to the smtp process (at start, and whenever
	// the parent restarted it).
	void attach(UniqueFd fd) { smtp_.attach(std::move(fd)); }
	// Hands the ends of data that arrived since the last group to the
	// committer, unless a group is being synced (they wait for the next).
	void commit_pending();
	// Transactions open now: each holds a place in the queue.
	size_t in_progress() const { return txns_.size() + syncing_.size(); }
	// Places of max_queue_size left for a new message (0: the queue is
	// full): open transactions and the messages in their first round take
	// one each.
	size_t room() const;
	// Whether MAIL from uid (none: TCP) is past its source's share: a third
	// of max_queue_size in open transactions, or of max_deferred in
	// messages deferred; root has none.
	bool source_full(std::optional<uid_t> uid) const;
	// Once per loop turn: MAILs waiting for room in a full queue get it,
	// in their order, or 452 once they waited queue_full_wait seconds.
	void admit_waiting();

 private:
	// One SMTP transaction as the handler sees it, keyed by session id.
	struct Txn {
		Envelope env;
		UniqueFd file;      // the spool file, once DATA began
		Spool::Created created;  // the header's length, a recycled file
		uint64_t size = 0;  // message size reported at commit
		RateLimiter::Ticket limits;  // what MAIL counted
	};
	// A transaction in the group being synced, no longer in txns_: the
	// committer thread owns it until it signals done_.
	struct Commit {
		uint32_t session;
		uint64_t channel;  // smtp_channel_ when committed: whom to answer
		Txn txn;
		std::string error;      // set: not committed
		bool committed = false; // marked committed in queue/ (durable unless dir_error_)
		bool in_journal = false; // its record is in the group's batch
		std::string bytes;      // the file as its journal record holds it (small ones)
	};

	void smtp_message(Imsg& m);
	void smtp_gone();
	void reply(uint32_t type, uint32_t session, BackendStatus st);
	void on_mail(uint32_t session, MailMsg m, std::optional<uid_t> uid);
	void on_local_mail(uint32_t session, MailMsg m, int client);
	void on_rcpt(uint32_t session, const std::string& rcpt);
	void on_data(uint32_t session);
	void on_commit(uint32_t session, uint64_t size);
	void abort_txn(uint32_t session);
	void discard(const std::string& id);
	std::string sync_group(Spool& spool, std::vector<Commit>& group);
	static size_t record_size(const Spool& spool, const Txn& t, bool larger);
	static bool stage(Spool& spool, Commit& c);
	static std::string check_size(Txn& t);
	void run_together(std::vector<std::function<void()>>& calls);
	void group_done();
	void count_committed(const Txn& t, const Queue::Bytes& bytes);
	Expanded expand(const std::string& rcpt) { return expand_(rcpt); }

	const Config& cfg_;
	Spool& spool_;
	Queue& queue_;
	RateLimiter& limits_;
	Expand expand_;
	Enqueue enqueue_;
	SiblingChannel smtp_;
	// A MAIL that found the queue full, waiting for room (Postfix's
	// in_flow_delay, bounded): a burst is slowed down, not turned away.
	struct WaitingMail {
		uint32_t session;
		MailMsg mail;
		std::optional<uid_t> uid;  // the local submitter's, from the kernel
		int64_t deadline_ms;       // CLOCK_MONOTONIC: whole seconds would cut the wait short
	};
	bool queue_full() const;
	std::pair<size_t, size_t> source_places(std::optional<uid_t> uid) const;
	size_t source_deferred_most() const;
	std::string why_full(std::optional<uid_t> uid) const;
	void refuse_full(uint32_t session, const std::string& sender, std::optional<uid_t> uid);
	void open_txn(uint32_t session, MailMsg m, std::optional<uid_t> uid);

	std::map<uint32_t, Txn> txns_;
	std::deque<WaitingMail> waiting_;
	std::vector<uint32_t> commits_;  // sessions whose commit waits for the next group
	uint64_t smtp_channel_ = 0;      // counts smtp processes gone
	std::vector<Commit> syncing_;    // the group on the committer thread
	std::string dir_error_;          // why its fsync of queue/ failed, if it did
	bool group_running_ = false;
	std::atomic<bool> group_finished_{false};  // set by the committer, last
	UniqueFd done_;                  // eventfd: the committer finished a group
	EventLoop::Watch done_watch_;
	WorkerPool committer_{1};
	WorkerPool syncers_{SYNC_THREADS};  // a group's fdatasyncs at once
};

}  // namespace laim
