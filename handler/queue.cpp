#include "handler/queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "common/log.h"
#include "handler/routes.h"

namespace laim {

// One delivery: a message to the recipients routed to one instance. The
// worker thread writes result and finished under jobs_mutex; everything
// else belongs to the main thread.
struct Job {
	std::string id;
	std::shared_ptr<Instance> inst;
	Envelope env;
	time_t started = 0;
	Result result;
	bool finished = false;
	bool expired = false;  // timed out; its result was already accounted for
	bool late_delivered = false;  // expired, then the call returned delivered
};

namespace {

std::mutex jobs_mutex;

double now_real()
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
}

// The worker thread: loads the message, calls the handler, reports back.
// An exception is a temporary failure (design.md "Handlers").
void work(std::shared_ptr<Job> job, const Spool* spool, int notify)
{
	Result r;
	try {
		SpoolMessage sm = spool->load(job->id);
		Message msg(sm.body());
		r = job->inst->handler->deliver(job->env, msg);
	} catch (const std::exception& e) {
		r = Result::tempfail(e.what());
	} catch (...) {
		r = Result::tempfail("unknown exception");
	}
	{
		// An expired job's result was settled by the main thread, which
		// may be reading it: leave it alone.
		std::lock_guard<std::mutex> lock(jobs_mutex);
		if (!job->expired)
			job->result = std::move(r);
		else
			job->late_delivered = r.status == Result::Status::Delivered;
		job->finished = true;
	}
	uint64_t one = 1;
	(void)!write(notify, &one, sizeof one);
}

std::string one_line(std::string s)
{
	for (char& c : s)
		if (c == '\n' || c == '\r')
			c = ' ';
	return s;
}

}  // namespace

Queue::Queue(Spool& spool) : spool_(spool), notify_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC))
{
	if (!notify_)
		fatal("eventfd");
}

void Queue::configure(const Config& cfg, Instances instances)
{
	routes_ = cfg.routes;
	instances_ = std::move(instances);
	retry_initial_ = cfg.retry_initial;
	retry_max_ = cfg.retry_max;
	max_queue_age_ = cfg.max_queue_age;
	delivery_timeout_ = cfg.delivery_timeout;
}

void Queue::add(const Envelope& env, double arrival)
{
	Entry& e = entries_[env.id];
	e.env = env;
	e.arrival = arrival;
	e.next_try = 0;
}

void Queue::load_spool()
{
	for (const std::string& id : spool_.list_queue()) {
		try {
			SpoolMessage m = spool_.load(id);
			add(m.envelope, static_cast<double>(m.envelope.arrival));
		} catch (const std::exception& e) {
			log_warnx("%s: unusable queue file (%s): moved to failed/", id.c_str(), e.what());
			try {
				spool_.fail(id, e.what());
			} catch (const std::exception& e2) {
				log_warnx("%s: %s", id.c_str(), e2.what());
			}
		}
	}
	if (!entries_.empty())
		log_info("%zu queued messages loaded from the spool", entries_.size());
}

// Starts the deliveries of one message: its recipients grouped by handler
// instance (one at a time for a handler that takes one per call), skipping what is
// done or was tried this round; settles the round when nothing is left to
// try. Waits while a needed instance is busy.
void Queue::dispatch(Entry& e)
{
	std::map<std::string, std::vector<std::string>> groups;
	for (const std::string& rcpt : e.env.recipients) {
		const Route* r = route_find(routes_, rcpt);
		if (!r) {
			if (e.done.insert({"", rcpt}).second) {
				e.failures.push_back("<" + rcpt + ">: no route");
				count("failed");
				log_info("%s: to=<%s>, handler=none, status=failed (no route)", e.env.id.c_str(), rcpt.c_str());
			}
			continue;
		}
		for (const std::string& name : r->handlers) {
			auto inst = instances_.find(name);
			bool one = inst != instances_.end() && inst->second->handler->one_recipient_per_call();
			if (!e.done.count({name, rcpt}) && !e.tried.count({name, rcpt}) && !(one && groups.count(name)))
				groups[name].push_back(rcpt);
		}
	}
	if (groups.empty()) {
		settle(e.env.id);
		return;
	}
	if (stopped_)
		return;  // what is left stays queued for the next start
	for (const auto& [name, rcpts] : groups) {
		auto it = instances_.find(name);
		if (it != instances_.end() && it->second->busy)
			return;
	}
	time_t now = time(nullptr);
	for (const auto& [name, rcpts] : groups) {
		for (const std::string& r : rcpts)
			e.tried.insert({name, r});
		auto job = std::make_shared<Job>();
		job->id = e.env.id;
		job->env = e.env;
		job->env.recipients = rcpts;
		job->started = now;
		auto it = instances_.find(name);
		if (it == instances_.end()) {
			job->result = Result::tempfail("handler instance " + name + " is not configured");
			e.deferred.push_back(job);
			continue;
		}
		job->inst = it->second;
		try {
			std::thread(work, job, &spool_, notify_.get()).detach();
		} catch (const std::exception& ex) {
			log_warnx("%s: cannot start a delivery thread: %s", e.env.id.c_str(), ex.what());
			job->result = Result::tempfail("cannot start a delivery thread");
			e.deferred.push_back(job);
			continue;
		}
		job->inst->busy = true;
		jobs_.push_back(job);
		e.running++;
	}
	if (e.running == 0)
		dispatch(e);  // nothing started: the rest of the round, or settle it
}

void Queue::run()
{
	time_t now = time(nullptr);
	std::vector<std::shared_ptr<Job>> expired;
	{
		std::lock_guard<std::mutex> lock(jobs_mutex);
		for (auto& job : jobs_) {
			if (job->finished || job->expired || now - job->started < static_cast<time_t>(delivery_timeout_))
				continue;
			job->expired = true;
			job->result = Result::tempfail("handler " + job->inst->name + " timed out after " +
						       std::to_string(delivery_timeout_) + "s");
			expired.push_back(job);
		}
	}
	for (auto& job : expired) {
		log_warnx("%s: handler %s timed out after %us; it stays busy until the call returns", job->id.c_str(),
			  job->inst->name.c_str(), delivery_timeout_);
		finish_job(job);
	}
	if (stopped_)
		return;
	std::vector<std::string> due;
	for (auto& [id, e] : entries_)
		if (e.running == 0 && e.next_try <= now)
			due.push_back(id);
	for (const std::string& id : due) {
		auto it = entries_.find(id);
		if (it == entries_.end())
			continue;
		if (it->second.attempts > 0 && now_real() - it->second.arrival >= static_cast<double>(max_queue_age_)) {
			it->second.failures.push_back("expired: in the queue longer than max_queue_age");
			finalize(id);
			continue;
		}
		dispatch(it->second);
	}
}

void Queue::collect()
{
	uint64_t v;
	(void)!read(notify_.get(), &v, sizeof v);
	std::vector<std::shared_ptr<Job>> finished;
	{
		std::lock_guard<std::mutex> lock(jobs_mutex);
		auto mid = std::stable_partition(jobs_.begin(), jobs_.end(), [](auto& j) { return !j->finished; });
		finished.assign(mid, jobs_.end());
		jobs_.erase(mid, jobs_.end());
	}
	for (auto& job : finished) {
		job->inst->busy = false;
		if (!job->expired)
			finish_job(job);
		else if (job->late_delivered)
			late_delivery(*job);
	}
}

// A call that timed out (counted as deferred) returned delivered after
// all: its recipients are done, so the retry does not deliver them twice.
void Queue::late_delivery(const Job& job)
{
	auto it = entries_.find(job.id);
	for (const std::string& r : job.env.recipients) {
		log_info("%s: to=<%s>, handler=%s, status=delivered, late (after its timeout)%s", job.id.c_str(),
			 r.c_str(), job.inst->name.c_str(), it == entries_.end() ? ", message no longer queued" : "");
		count("delivered");
		count("handler." + job.inst->name + ".delivered");
		if (it != entries_.end())
			it->second.done.insert({job.inst->name, r});
	}
}

// Accounts for one job's result; the last job of a round ends it.
void Queue::finish_job(const std::shared_ptr<Job>& job)
{
	auto it = entries_.find(job->id);
	if (it == entries_.end())
		return;
	Entry& e = it->second;
	const char* id = job->id.c_str();
	const char* name = job->inst->name.c_str();
	double delay = now_real() - e.arrival;
	std::string reason = one_line(job->result.reason);
	switch (job->result.status) {
	case Result::Status::Delivered:
		for (const std::string& r : job->env.recipients) {
			e.done.insert({job->inst->name, r});
			count("delivered");
			count("handler." + job->inst->name + ".delivered");
			log_info("%s: to=<%s>, handler=%s, status=delivered, delay=%.2f", id, r.c_str(), name, delay);
		}
		break;
	case Result::Status::PermFail:
		for (const std::string& r : job->env.recipients) {
			e.done.insert({job->inst->name, r});
			count("failed");
			count("handler." + job->inst->name + ".failed");
			e.failures.push_back("<" + r + "> handler " + job->inst->name + ": " + reason);
			log_info("%s: to=<%s>, handler=%s, status=failed (%s)", id, r.c_str(), name, reason.c_str());
		}
		break;
	case Result::Status::TempFail:
		e.deferred.push_back(job);
		break;
	}
	if (--e.running == 0)
		dispatch(e);  // what this round has not tried yet, or settle it
}

// A round is over (each pending recipient was tried once): done, or retry
// later with exponential back-off (retry_initial doubling up to
// retry_max), or give up when the message is older than max_queue_age.
void Queue::settle(const std::string& id)
{
	Entry& e = entries_.at(id);
	e.tried.clear();
	if (e.deferred.empty()) {
		finalize(id);
		return;
	}
	e.attempts++;
	double backoff = std::min(static_cast<double>(retry_max_),
				  retry_initial_ * std::pow(2.0, std::min(e.attempts - 1, 30u)));
	time_t retry_in = static_cast<time_t>(backoff);
	double delay = now_real() - e.arrival;
	bool expired = delay >= static_cast<double>(max_queue_age_);
	for (auto& job : e.deferred) {
		std::string reason = one_line(job->result.reason);
		const std::string name = job->inst ? job->inst->name : "none";
		e.last_error = reason;
		for (const std::string& r : job->env.recipients) {
			std::string what = expired ? "failed" : "deferred";
			count(what);
			count("handler." + name + "." + what);
			if (expired) {
				e.failures.push_back("<" + r + "> handler " + name + ": expired after " +
						     std::to_string(e.attempts) + " attempts: " + reason);
				log_info("%s: to=<%s>, handler=%s, status=failed (expired after %u attempts: %s)", id.c_str(),
					 r.c_str(), name.c_str(), e.attempts, reason.c_str());
			} else {
				log_info("%s: to=<%s>, handler=%s, status=deferred, delay=%.2f, attempt=%u, retry_in=%lds (%s)",
					 id.c_str(), r.c_str(), name.c_str(), delay, e.attempts, (long)retry_in, reason.c_str());
			}
		}
	}
	e.deferred.clear();
	if (expired) {
		finalize(id);
		return;
	}
	e.next_try = time(nullptr) + retry_in;
}

// The message is finished: removed, or moved to failed/ with its reasons.
void Queue::finalize(const std::string& id)
{
	Entry& e = entries_.at(id);
	try {
		if (e.failures.empty()) {
			spool_.remove(id);
			log_info("%s: removed", id.c_str());
		} else {
			std::string reasons;
			for (const std::string& f : e.failures)
				reasons += f + "\n";
			reasons.pop_back();
			spool_.fail(id, reasons);
			log_info("%s: moved to failed/: %s", id.c_str(), one_line(e.failures.front()).c_str());
		}
	} catch (const std::exception& ex) {
		log_warnx("%s: finishing the queue file: %s", id.c_str(), ex.what());
	}
	entries_.erase(id);
}

int Queue::next_wakeup_ms() const
{
	time_t now = time(nullptr);
	long ms = 1000;
	for (const auto& [id, e] : entries_)
		if (e.running == 0)
			ms = std::min<long>(ms, std::max<long>(0, (e.next_try - now) * 1000));
	return static_cast<int>(ms);
}

std::vector<Queue::Item> Queue::items() const
{
	std::vector<Item> out;
	for (const auto& [id, e] : entries_) {
		Item it;
		it.env = e.env;
		it.attempts = e.attempts;
		it.last_error = e.last_error;
		try {
			it.size = spool_.load(id).body().size();
		} catch (const std::exception&) {
			// Being finished right now; show it without a size.
		}
		out.push_back(std::move(it));
	}
	std::sort(out.begin(), out.end(), [](const Item& a, const Item& b) { return a.env.arrival < b.env.arrival; });
	return out;
}

void Queue::flush()
{
	for (auto& [id, e] : entries_)
		e.next_try = 0;
}

bool Queue::remove(const std::string& id)
{
	auto it = entries_.find(id);
	if (it == entries_.end() || it->second.running > 0)
		return false;
	try {
		spool_.remove(id);
	} catch (const std::exception& ex) {
		log_warnx("%s: remove: %s", id.c_str(), ex.what());
		return false;
	}
	entries_.erase(it);
	log_info("%s: removed by the administrator", id.c_str());
	return true;
}

size_t Queue::running() const
{
	std::lock_guard<std::mutex> lock(jobs_mutex);
	size_t n = 0;
	for (const auto& job : jobs_)
		n += !job->finished && !job->expired;
	return n;
}

}  // namespace laim
