// The delivery queue of the handler process: committed messages waiting
// for their handler instances, with the retry policy of design.md
// ("The bounded queue"). Deliveries run in worker threads, one job per
// (message, handler instance); the main loop dispatches and collects.
#pragma once

#include <ctime>
#include <deque>
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

namespace laim {

// A configured handler instance. busy while a worker calls it, so that
// deliver() never runs twice at once on one instance. A handler that asks
// for one recipient per call gets each in its own call, with its own result.
struct Instance {
	std::string name;
	std::unique_ptr<Handler> handler;
	bool busy = false;
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

	// A committed message (arrival with sub-second precision when known).
	void add(const Envelope& env, double arrival);
	// At start: loads queue/ from the spool; corrupt files go to failed/.
	void load_spool();
	size_t size() const { return entries_.size(); }

	// Starts due deliveries and expires timed-out ones.
	void run();
	// Processes the jobs the workers finished (call when notify_fd is readable).
	void collect();
	// Milliseconds until run() has something to do (capped at 1000).
	int next_wakeup_ms() const;
	// No more dispatching (SIGTERM); running() tells what is still going.
	void stop() { stopped_ = true; }
	size_t running() const;

	// For the control socket (laimctl, mailq).
	struct Item {
		Envelope env;
		uint64_t size = 0;
		unsigned attempts = 0;
		std::string last_error;
	};
	std::vector<Item> items() const;
	// Every deferred message becomes due now.
	void flush();
	// Drops a message that is not being delivered right now.
	bool remove(const std::string& id);
	// Counters: received, delivered, deferred, failed, and per instance
	// handler.NAME.delivered/deferred/failed.
	void count(const std::string& key) { stats_[key]++; }
	const std::map<std::string, uint64_t>& stats() const { return stats_; }

 private:
	struct Entry {
		Envelope env;
		double arrival = 0;
		unsigned attempts = 0;
		time_t next_try = 0;
		int running = 0;
		std::set<std::pair<std::string, std::string>> done;   // (instance, rcpt) finished
		std::set<std::pair<std::string, std::string>> tried;  // (instance, rcpt) tried this round
		std::vector<std::string> failures;   // permanent failure reasons
		std::vector<std::shared_ptr<Job>> deferred;  // this round's temporary failures
		std::string last_error;
	};
	void dispatch(Entry& e);
	void finish_job(const std::shared_ptr<Job>& job);
	void settle(const std::string& id);
	void late_delivery(const Job& job);
	void finalize(const std::string& id);

	Spool& spool_;
	UniqueFd notify_;
	std::vector<Route> routes_;
	Instances instances_;
	uint32_t retry_initial_ = 60, retry_max_ = 3600, delivery_timeout_ = 300;
	uint64_t max_queue_age_ = 345600;
	std::map<std::string, Entry> entries_;
	std::vector<std::shared_ptr<Job>> jobs_;  // running (not yet collected)
	bool stopped_ = false;
	std::map<std::string, uint64_t> stats_;
};

}  // namespace laim
