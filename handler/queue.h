// The delivery queue of the handler process: committed messages waiting
// for their handler instances, with the retry policy of
// doc/architecture.md ("The queue"). Each instance has a pool of worker
// threads; a job is one call: a message to the recipients routed to one
// instance. The main loop dispatches and collects; each recipient's
// result is settled on its own.
#pragma once

#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/fd.h"
#include "handler/api/handler.h"
#include "handler/spool.h"
#include "handler/workers.h"

namespace laim {

// A configured handler instance and its workers. busy counts the calls in
// progress, timed-out ones included (a call that timed out holds its
// worker until it returns); no call starts while busy == workers. A
// reload's instance of the same name shares the count, so that the calls
// still running on the old one hold their workers across a SIGHUP.
struct Instance {
	Instance(std::string n, std::shared_ptr<Handler> h, unsigned w)
		: name(std::move(n)), handler(std::move(h)), workers(w), pool(w) {}
	std::string name;
	std::shared_ptr<Handler> handler;  // shared with the instances that link it
	unsigned workers;
	std::shared_ptr<unsigned> busy = std::make_shared<unsigned>(0);  // main thread only
	std::deque<std::string> waiting;  // ids of messages waiting for a free worker
	WorkerPool pool;
};
using Instances = std::map<std::string, std::shared_ptr<Instance>>;

struct Job;

class Queue {
 public:
	explicit Queue(Spool& spool);
	// The eventfd that becomes readable when a worker finished a job.
	int notify_fd() const { return notify_.get(); }

	// (Re)configures routes, retry policy and handler instances; jobs in
	// progress keep the instances they started with.
	void configure(const Config& cfg, Instances instances);
	const Instances& instances() const { return instances_; }

	// A committed message's file as the commit read it, for its first
	// dispatch: those jobs need not read it again.
	using Bytes = std::shared_ptr<const std::string>;
	// A committed message of size bytes (arrival with sub-second
	// precision when known); fresh unless loaded at start.
	void add(const Envelope& env, uint64_t size, double arrival, Bytes bytes = nullptr, bool fresh = true);
	// At start: loads queue/ from the spool; corrupt files go to failed/.
	void load_spool();
	size_t size() const { return entries_.size(); }
	// Messages in their first round (committed since the start, not yet
	// deferred): each takes a place of max_queue_size.
	size_t fresh() const { return fresh_; }
	// The others: deferred, retried, or loaded at start; all of them, or
	// those a source submitted (its uid; none: TCP and laimd's own).
	size_t retried() const { return entries_.size() - fresh_; }
	size_t retried(std::optional<uid_t> source) const;

	// `laimctl test`: runs the instance's test() on one of its workers;
	// done gets the answer in the main thread, from collect(). False when
	// there is no such instance.
	bool test(const std::string& instance, std::function<void(const Result&)> done);

	// Starts due deliveries and expires timed-out ones.
	void run();
	// Processes the jobs the workers finished (call when notify_fd is readable).
	void collect();
	// Milliseconds until run() has something to do (capped at 1000).
	// Scheduling costs no scan of the queue: due messages wait in a
	// list, deferred ones in a timer set, those whose instance is busy in
	// the instance's waiting list.
	int next_wakeup_ms() const;
	// No more dispatching (SIGTERM); running() tells what is still going.
	void stop() { stopped_ = true; }
	size_t running() const;

	// For the control socket (laimctl, mailq).
	struct Item {
		Envelope env;  // its recipients: only those still to deliver to
		uint64_t size = 0;
		unsigned attempts = 0;
		time_t next_try = 0;  // seconds_since_boot()
		std::string last_error;
	};
	std::vector<Item> items() const;
	// Every deferred message becomes due now; with an owner, only those
	// submitted with that uid whose last round ended retry_initial ago
	// (and whose handlers' retry_after has passed).
	void flush(std::optional<uid_t> owner = std::nullopt);
	// Drops a message that no delivery call is running for, one past
	// delivery_timeout included (it may still deliver). "" when done,
	// else why not.
	std::string remove(const std::string& id);
	// The first round's bytes that messages not yet dispatched, or
	// waiting for a worker, keep: at most HELD_BYTES_MAX in all; the
	// others read their file when their turn comes.
	static constexpr size_t HELD_BYTES_MAX = 512 * 1024;
	size_t held_bytes() const { return held_bytes_; }

	// Counters: received, delivered, deferred, failed, and per instance
	// handler.NAME.delivered/deferred/failed.
	void count(const std::string& key) { stats_[key]++; }
	const std::map<std::string, uint64_t>& stats() const { return stats_; }

	// Called for a message given up (a recipient failed for good), with
	// its envelope and failure lines, before it moves to failed/: the
	// sender's notice (handler/bounce.h). True once it is taken care of;
	// false when it cannot be now, and the message is finished at the
	// next run(), asking again.
	std::function<bool(const Envelope& env, const std::vector<std::string>& failures)> given_up;

 private:
	// A recipient of one instance that failed temporarily this round.
	struct Deferral {
		std::string instance, rcpt;
		Result result;
	};
	// A recipient of one instance still to deliver after a round, with the
	// last error it got.
	struct Pending {
		std::string instance, rcpt;
		std::shared_ptr<const std::string> error;
	};
	struct Entry {
		Envelope env;
		uint64_t size = 0;
		double arrival = 0;
		unsigned attempts = 0;
		time_t next_try = 0;  // seconds_since_boot(); 0: not deferred
		// seconds_since_boot(): when its last round ended, and until when
		// its handlers asked for no retry (retry_after)
		time_t round_ended = 0, asked_until = 0;
		int running = 0;
		bool fresh = false;  // in its first round: see fresh()
		bool loaded = false;  // from the spool, at start
		time_t added = 0;  // seconds_since_boot() when add()ed
		std::set<std::pair<std::string, std::string>> done;   // (instance, rcpt) finished
		size_t saved_done = 0;  // of them, in queue/ID.done (save_progress())
		std::set<std::pair<std::string, std::string>> tried;  // (instance, rcpt) tried this round
		// (instance, rcpt) of a call that timed out and still runs: not
		// tried again until it returns (late_delivery()).
		std::set<std::pair<std::string, std::string>> late;
		bool awaits_late = false;  // nothing else to do: made due when the late call returns
		std::vector<std::string> failures;   // permanent failure reasons
		bool noticed = false;  // given_up() took it
		std::vector<Deferral> deferred;      // this round's temporary failures
		std::vector<Pending> pending;        // the last round's temporary failures
		std::set<std::string> waiting_for;  // instances whose waiting list holds it
		Bytes bytes;  // for the first round's jobs, until they all started
	};
	// Entry::bytes, counted in held_bytes_.
	void hold(Entry& e, Bytes bytes);
	Bytes take(Entry& e);
	size_t held_bytes_ = 0;
	size_t fresh_ = 0;  // entries with fresh set
	std::map<std::optional<uid_t>, size_t> retried_;  // the others, by source
	void set_next_try(Entry& e, time_t at);
	static double age(const Entry& e);
	void bring_retries_forward();
	bool recipient_done(const Entry& e, const std::string& rcpt) const;
	bool owed_unrouted(const Entry& e, const std::string& rcpt) const;
	void forget(Entry& e);
	void make_due(const std::string& id);
	void dispatch(Entry& e);
	bool start(Entry& e, const std::string& name, std::vector<std::string> rcpts, const Bytes& bytes);
	std::string launch(const std::shared_ptr<Job>& job);
	void finish_job(Job& job, const Results& results);
	static std::string describe(const Result& r);
	std::shared_ptr<const std::string> shared_text(std::string text);
	void settle_recipient(Entry& e, const std::string& instance, const std::string& rcpt, const Result& r);
	void settle(const std::string& id);
	void save_progress(Entry& e);
	bool restore_progress(Entry& e, const std::string& text);
	void expire(const std::string& id);
	void late_delivery(const Job& job);
	void finalize(const std::string& id);
	void go(const std::string& id);
	void take_waiting(Instance& inst);

	Spool& spool_;
	UniqueFd notify_;
	std::vector<Route> routes_;
	// Why recipients wait when the file has no routes; "" when it has some.
	std::string no_routes_;
	Instances instances_;
	uint32_t retry_initial_ = 60, retry_max_ = 3600, delivery_timeout_ = 300;
	uint64_t max_queue_age_ = 345600;
	std::map<std::string, Entry> entries_;
	std::deque<std::string> due_;                       // to dispatch at the next run()
	std::set<std::pair<time_t, std::string>> timers_;  // (next_try, id) of deferred ones
	std::vector<std::shared_ptr<Job>> jobs_;  // running (not yet collected)
	bool stopped_ = false;
	time_t last_timeout_check_ = 0;
	std::map<std::string, uint64_t> stats_;
	std::shared_ptr<const std::string> last_text_;  // shared_text()'s last
};

}  // namespace laim
