#include "handler/queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "common/clock.h"
#include "common/log.h"
#include "common/text.h"
#include "handler/routes.h"

namespace laim {

// One call on a worker: a delivery of a message to the recipients routed
// to one instance, or a `laimctl test`. The worker writes results and
// finished under jobs_mutex; everything else belongs to the main thread.
struct Job {
	std::string id;
	std::shared_ptr<Instance> inst;
	Envelope env;
	Queue::Bytes bytes;  // the file as committed, for a first delivery
	time_t started = 0;
	std::function<void(const Result&)> tested;  // set: a test, not a delivery
	Results results = Result();
	bool finished = false;
	bool expired = false;  // timed out; its results were already accounted for
};

namespace {

constexpr size_t MAX_STORED_REASON = 500;  // bytes of a reason kept, cut between characters

std::mutex jobs_mutex;

double now_real()
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
}

// What a call returned, or the temporary failure its exception means.
Results call(Job& job, const Spool& spool)
{
	try {
		if (job.tested)
			return job.inst->handler->test();
		SpoolMessage sm = spool.load(job.id, job.bytes);
		Message msg(sm.body(), sm.file(), sm.body_offset());
		return job.inst->handler->deliver(job.env, msg);
	} catch (const std::exception& e) {
		return Result::tempfail(e.what());
	} catch (...) {
		return Result::tempfail("unknown exception");
	}
}

// A worker's task: makes the call and reports back through the eventfd.
// An expired job keeps the results of the late call for late_delivery().
void work(const std::shared_ptr<Job>& job, const Spool& spool, int notify)
{
	Results r = call(*job, spool);
	{
		std::lock_guard<std::mutex> lock(jobs_mutex);
		job->results = std::move(r);
		job->finished = true;
	}
	uint64_t one = 1;
	(void)!write(notify, &one, sizeof one);
}

// A reason as the queue keeps it for show queue, mailq and failed/ID.reason:
// one line of at most MAX_STORED_REASON bytes, cut between UTF-8
// characters and marked " [...]". A peer may answer with 200 lines of
// 4 KB, and each recipient keeps its own; the log line shows more.
std::string stored_reason(const std::string& reason)
{
	std::string s = one_line(reason.substr(0, MAX_STORED_REASON + 1));
	if (cut_utf8(s, MAX_STORED_REASON))
		s += " [...]";
	return s;
}

// The name the log and failed/ give a recipient's instance: "none" for
// one that no route sent anywhere (held while the file has no routes).
const char* shown(const std::string& instance)
{
	return instance.empty() ? "none" : instance.c_str();
}

}  // namespace

Queue::Queue(Spool& spool) : spool_(spool), notify_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC))
{
	if (!notify_)
		fatal("eventfd");
}

// Messages waiting for a worker of an old instance are due again: the new
// instance starts with an empty waiting list, and with the old one's
// calls in progress counted (workers holds across a reload).
void Queue::configure(const Config& cfg, Instances instances)
{
	for (auto& [name, inst] : instances_) {
		for (const std::string& id : inst->waiting)
			make_due(id);
		if (auto it = instances.find(name); it != instances.end())
			it->second->busy = inst->busy;
	}
	routes_ = cfg.routes;
	no_routes_ = cfg.routes.empty() ? cfg.file + " has no routes" : "";
	instances_ = std::move(instances);
	retry_initial_ = cfg.retry_initial;
	retry_max_ = cfg.retry_max;
	max_queue_age_ = cfg.max_queue_age;
	delivery_timeout_ = cfg.delivery_timeout;
	bring_retries_forward();
}

// A lowered retry_max takes effect at once (laimd(8)): a retry set for
// later than it allows from now comes sooner, though never before a
// handler asked. Timers go by time, so only the last ones are looked at.
void Queue::bring_retries_forward()
{
	time_t latest = seconds_since_boot() + static_cast<time_t>(retry_max_);
	std::vector<std::string> sooner;
	while (!timers_.empty() && std::prev(timers_.end())->first > latest) {
		auto last = std::prev(timers_.end());
		auto it = entries_.find(last->second);
		if (it != entries_.end() && it->second.next_try == last->first)
			sooner.push_back(last->second);
		timers_.erase(last);
	}
	for (const std::string& id : sooner) {
		Entry& e = entries_.at(id);
		e.next_try = std::min(e.next_try, std::max(latest, e.asked_until));
		timers_.insert({e.next_try, id});
	}
}

void Queue::add(const Envelope& env, uint64_t size, double arrival, Bytes bytes, bool fresh)
{
	Entry& e = entries_[env.id];
	e.env = env;
	e.fresh = fresh;
	e.loaded = !fresh;
	e.added = seconds_since_boot();
	if (fresh)
		fresh_++;
	else
		retried_[env.uid]++;
	e.size = size;
	e.arrival = arrival;
	hold(e, std::move(bytes));
	e.next_try = 0;
	due_.push_back(env.id);
}

// Seconds since the message arrived, for max_queue_age: by its arrival
// time, or at least since laimd took it into the queue, on the boot clock.
// An arrival time ahead of the wall clock (a clock stepped back) made the
// age negative, and such a message never expired.
double Queue::age(const Entry& e)
{
	return std::max(now_real() - e.arrival, static_cast<double>(seconds_since_boot() - e.added));
}

// next_try of a message; one that waits ended its first round, if it was
// in it: it takes no place of max_queue_size any more (fresh()), and
// counts among its source's retried ones.
void Queue::set_next_try(Entry& e, time_t at)
{
	if (at != 0 && e.fresh) {
		e.fresh = false;
		fresh_--;
		retried_[e.env.uid]++;
	}
	e.next_try = at;
}

// Before an entry goes: the counts of fresh() and retried().
void Queue::forget(Entry& e)
{
	if (e.fresh) {
		fresh_--;
	} else if (auto it = retried_.find(e.env.uid); it != retried_.end() && --it->second == 0) {
		retried_.erase(it);
	}
}

size_t Queue::retried(std::optional<uid_t> source) const
{
	auto it = retried_.find(source);
	return it == retried_.end() ? 0 : it->second;
}

void Queue::hold(Entry& e, Bytes bytes)
{
	take(e);
	if (!bytes || held_bytes_ + bytes->size() > HELD_BYTES_MAX)
		return;
	held_bytes_ += bytes->size();
	e.bytes = std::move(bytes);
}

Queue::Bytes Queue::take(Entry& e)
{
	if (e.bytes)
		held_bytes_ -= e.bytes->size();
	return std::move(e.bytes);
}

// The message is to be dispatched at the next run(), whatever timer or
// waiting list holds it (stale ones are skipped when they come up).
void Queue::make_due(const std::string& id)
{
	auto it = entries_.find(id);
	if (it == entries_.end())
		return;
	set_next_try(it->second, 0);
	it->second.waiting_for.clear();
	due_.push_back(id);
}

void Queue::load_spool()
{
	std::set<std::string> progress = spool_.progress_ids();
	for (const std::string& id : spool_.list_queue()) {
		bool has_progress = progress.erase(id) > 0;
		if (spool_.unjudged(id))
			continue;  // as it is until the next start judges it
		try {
			uint64_t size = 0;
			Envelope env = spool_.load_envelope(id, "queue", &size);
			add(env, size, static_cast<double>(env.arrival), nullptr, false);
			if (has_progress && !restore_progress(entries_.at(id), spool_.load_progress(id)))
				log_warnx("%s: queue/%s.done is not as laimd writes it: ignored, so its recipients may get "
					  "the message again", id.c_str(), id.c_str());
		} catch (const std::exception& e) {
			log_warnx("%s: unusable queue file (%s): moved to failed/", id.c_str(), e.what());
			try {
				spool_.fail(id, e.what());
				progress.insert(id);
			} catch (const std::exception& e2) {
				log_warnx("%s: %s", id.c_str(), e2.what());
			}
		}
	}
	for (const std::string& id : progress)  // their message is gone
		try {
			spool_.drop_progress(id);
		} catch (const std::exception& e) {
			log_warnx("%s: %s", id.c_str(), e.what());
		}
	if (!entries_.empty())
		log_info("%zu queued messages loaded from the spool", entries_.size());
}

// Starts what it can of one message's round: its pending recipients
// grouped by instance, skipping what is done or was tried this round, on
// instances with a free worker (the others are tried again at the next
// run()). Settles the round when nothing is left to try or running.
void Queue::dispatch(Entry& e)
{
	Bytes bytes = take(e);  // later rounds read the file
	std::map<std::string, std::vector<std::string>> groups;
	// laim's own notices go to their one instance, whatever the routes say.
	std::vector<Route> own;
	if (!e.env.instance.empty())
		own.push_back({"*", {e.env.instance}, 0});
	for (const std::string& rcpt : e.env.recipients) {
		const Route* r = route_find(own.empty() ? routes_ : own, rcpt);
		if (!r && !owed_unrouted(e, rcpt))
			continue;  // settled before a reload took its route away
		if (!r && !no_routes_.empty()) {  // a file cut short: its mail waits for a reload
			if (e.tried.insert({"", rcpt}).second)
				e.deferred.push_back({"", rcpt, Result::tempfail(no_routes_)});
			continue;
		}
		if (!r) {
			if (e.done.insert({"", rcpt}).second) {
				e.failures.push_back("<" + rcpt + ">: no route");
				count("failed");
				log_info("%s: to=<%s>, handler=none, status=failed (no route)", e.env.id.c_str(), rcpt.c_str());
			}
			continue;
		}
		for (const std::string& name : r->handlers)
			if (!e.done.count({name, rcpt}) && !e.tried.count({name, rcpt}) && !e.late.count({name, rcpt}))
				groups[name].push_back(rcpt);
	}
	if (groups.empty()) {
		if (e.running == 0 && e.deferred.empty() && !e.late.empty()) {
			// Settled once the late call says how it went; looked at again
			// meanwhile, so that max_queue_age still ends a call that hangs.
			e.awaits_late = true;
			set_next_try(e, seconds_since_boot() + static_cast<time_t>(retry_max_));
			timers_.insert({e.next_try, e.env.id});
		} else if (e.running == 0)
			settle(e.env.id);
		return;
	}
	if (stopped_)
		return;  // what is left stays queued for the next start
	bool started = false, waits = false;
	for (auto& [name, rcpts] : groups) {
		bool ok = start(e, name, std::move(rcpts), bytes);
		started |= ok;
		waits |= !ok;
	}
	if (waits)
		hold(e, std::move(bytes));  // for its turn: a worker is seldom long in coming
	if (started && e.running == 0)
		dispatch(e);  // only failures to start: the rest of the round, or settle it
}

// Starts one call of e's on instance name, unless all its workers are
// busy (false: e waits in the instance's waiting list). An instance that
// is gone or a thread that cannot start defers these recipients for this
// round.
bool Queue::start(Entry& e, const std::string& name, std::vector<std::string> rcpts, const Bytes& bytes)
{
	auto it = instances_.find(name);
	if (it != instances_.end() && *it->second->busy >= it->second->workers) {
		if (e.waiting_for.insert(name).second)
			it->second->waiting.push_back(e.env.id);
		return false;
	}
	for (const std::string& r : rcpts)
		e.tried.insert({name, r});
	auto defer = [&](const std::string& why) {
		for (const std::string& r : rcpts)
			e.deferred.push_back({name, r, Result::tempfail(why)});
		return true;
	};
	if (it == instances_.end())
		return defer("handler instance " + name + " is not configured");
	auto job = std::make_shared<Job>();
	job->id = e.env.id;
	job->env = e.env;
	job->env.recipients = std::move(rcpts);
	job->inst = it->second;
	job->bytes = bytes;
	if (std::string why = launch(job); !why.empty()) {
		log_warnx("%s: handler %s: %s", e.env.id.c_str(), name.c_str(), why.c_str());
		return defer(why);
	}
	e.running++;
	return true;
}

bool Queue::test(const std::string& instance, std::function<void(const Result&)> done)
{
	auto it = instances_.find(instance);
	if (it == instances_.end())
		return false;
	auto job = std::make_shared<Job>();
	job->inst = it->second;
	job->tested = std::move(done);
	if (std::string why = launch(job); !why.empty())
		job->tested(Result::tempfail(why));
	return true;
}

// Hands job to a worker of its instance, which then counts it busy until
// collect(); "" or why no worker thread could start.
std::string Queue::launch(const std::shared_ptr<Job>& job)
{
	job->started = seconds_since_boot();
	try {
		job->inst->pool.run([job, this] { work(job, spool_, notify_.get()); });
	} catch (const std::exception& ex) {
		return std::string("cannot start a worker thread: ") + ex.what();
	}
	(*job->inst->busy)++;
	jobs_.push_back(job);
	return "";
}

void Queue::run()
{
	time_t now = seconds_since_boot();
	std::vector<std::shared_ptr<Job>> expired;
	if (now != last_timeout_check_) {  // timeouts are whole seconds: once a second
		last_timeout_check_ = now;
		std::lock_guard<std::mutex> lock(jobs_mutex);
		for (auto& job : jobs_) {
			if (job->finished || job->expired || now - job->started < static_cast<time_t>(delivery_timeout_))
				continue;
			job->expired = true;
			expired.push_back(job);
		}
	}
	for (auto& job : expired) {
		Result late = Result::tempfail("handler " + job->inst->name + " timed out after " +
					       std::to_string(delivery_timeout_) + "s");
		log_warnx("%s: handler %s timed out after %us; its worker stays busy until the call returns",
			  job->tested ? "test" : job->id.c_str(), job->inst->name.c_str(), delivery_timeout_);
		if (auto it = entries_.find(job->id); it != entries_.end() && !job->tested)
			for (const std::string& r : job->env.recipients)
				it->second.late.insert({job->inst->name, r});
		finish_job(*job, late);
	}
	if (stopped_)
		return;
	while (!timers_.empty() && timers_.begin()->first <= now) {
		auto [at, id] = *timers_.begin();
		timers_.erase(timers_.begin());
		auto it = entries_.find(id);
		if (it != entries_.end() && it->second.next_try == at)
			make_due(id);
	}
	std::deque<std::string> due;
	due.swap(due_);
	for (const std::string& id : due) {
		auto it = entries_.find(id);
		if (it != entries_.end() && it->second.next_try <= now)
			go(id);
	}
	for (auto& [name, inst] : instances_)
		take_waiting(*inst);
}

// Dispatches a message, or gives it up when it is older than max_queue_age
// (not in the middle of a call).
void Queue::go(const std::string& id)
{
	Entry& e = entries_.at(id);
	if (e.running == 0 && e.attempts > 0 && age(e) >= static_cast<double>(max_queue_age_)) {
		expire(id);
		return;
	}
	dispatch(e);
}

// The messages waiting for a worker of inst go ahead, in turn, while one is
// free. One that expires meanwhile uses no worker: the next one takes it,
// so no free worker is left idle while a message waits for it.
void Queue::take_waiting(Instance& inst)
{
	while (*inst.busy < inst.workers && !inst.waiting.empty()) {
		std::string id = std::move(inst.waiting.front());
		inst.waiting.pop_front();
		auto it = entries_.find(id);
		if (it != entries_.end() && it->second.waiting_for.erase(inst.name))
			go(id);
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
		(*job->inst->busy)--;  // its waiting messages go ahead at the next run()
		if (!job->expired)
			finish_job(*job, job->results);
		else if (!job->tested)
			late_delivery(*job);
	}
}

// A call that timed out (counted as deferred) returned after all: the
// recipients it delivered are done, so the retry does not deliver them
// twice; the others may be tried again now.
void Queue::late_delivery(const Job& job)
{
	auto it = entries_.find(job.id);
	for (size_t i = 0; i < job.env.recipients.size(); i++) {
		const std::string& r = job.env.recipients[i];
		if (it != entries_.end())
			it->second.late.erase({job.inst->name, r});
		if (job.results.at(i).status != Result::Status::Delivered)
			continue;
		log_info("%s: to=<%s>, handler=%s, status=delivered, late (after its timeout)%s", job.id.c_str(),
			 r.c_str(), job.inst->name.c_str(),
			 it == entries_.end() ? ", message no longer queued (if it went to failed/, its reason lists "
						"this recipient as expired)"
					      : "");
		count("delivered");
		count("handler." + job.inst->name + ".delivered");
		if (it != entries_.end())
			it->second.done.insert({job.inst->name, r});
	}
	if (it != entries_.end() && it->second.awaits_late && it->second.late.empty()) {
		it->second.awaits_late = false;
		make_due(job.id);
	}
}

// Accounts for one call's results, each recipient on its own; the last
// call of a round ends it.
void Queue::finish_job(Job& job, const Results& results)
{
	if (job.tested) {
		job.tested(results.at(0));
		return;
	}
	auto it = entries_.find(job.id);
	if (it == entries_.end())
		return;
	Entry& e = it->second;
	for (size_t i = 0; i < job.env.recipients.size(); i++)
		settle_recipient(e, job.inst->name, job.env.recipients[i], results.at(i));
	if (--e.running == 0)
		dispatch(e);  // what this round has not tried yet, or settle it
}

// The last error of a deferred message, shared with the messages before
// it that failed the same way: a handler that is down gives thousands of
// queued messages one reason.
std::shared_ptr<const std::string> Queue::shared_text(std::string text)
{
	if (!last_text_ || *last_text_ != text)
		last_text_ = std::make_shared<const std::string>(std::move(text));
	return last_text_;
}

// What the log adds to a result: the peer's enhanced code and its reason.
std::string Queue::describe(const Result& r)
{
	std::string out = r.code.empty() ? "" : ", dsn=" + r.code;
	std::string reason = one_line(r.reason);
	if (!reason.empty())
		out += " (" + reason + ")";
	return out;
}

// One recipient of one instance: done (delivered or failed for good), or
// deferred to the end of the round.
void Queue::settle_recipient(Entry& e, const std::string& inst, const std::string& rcpt, const Result& r)
{
	const char* id = e.env.id.c_str();
	switch (r.status) {
	case Result::Status::Delivered:
		e.done.insert({inst, rcpt});
		count("delivered");
		count("handler." + inst + ".delivered");
		log_info("%s: to=<%s>, handler=%s, status=delivered, delay=%.2f%s", id, rcpt.c_str(), inst.c_str(),
			 now_real() - e.arrival, describe(r).c_str());
		break;
	case Result::Status::PermFail:
		e.done.insert({inst, rcpt});
		count("failed");
		count("handler." + inst + ".failed");
		e.failures.push_back("<" + rcpt + "> handler " + inst + ": " + (r.code.empty() ? "" : r.code + " ") +
				     stored_reason(r.reason));
		log_info("%s: to=<%s>, handler=%s, status=failed%s", id, rcpt.c_str(), inst.c_str(), describe(r).c_str());
		break;
	case Result::Status::TempFail:
		e.deferred.push_back({inst, rcpt, r});
		break;
	}
}

// A round is over (each pending recipient was tried once): done, or retry
// later with exponential back-off (retry_initial doubling up to
// retry_max, or later when a handler asked so), or give up when the
// message is older than max_queue_age.
void Queue::settle(const std::string& id)
{
	Entry& e = entries_.at(id);
	if (e.deferred.empty()) {
		finalize(id);
		return;
	}
	e.attempts++;
	double delay = now_real() - e.arrival;
	if (age(e) >= static_cast<double>(max_queue_age_)) {
		expire(id);
		return;
	}
	e.tried.clear();
	double backoff = std::min(static_cast<double>(retry_max_),
				  retry_initial_ * std::pow(2.0, std::min(e.attempts - 1, 30u)));
	time_t retry_in = static_cast<time_t>(backoff), asked = 0;
	for (const Deferral& d : e.deferred)
		asked = std::max<time_t>(asked, d.result.retry_after);
	retry_in = std::max(retry_in, asked);
	e.round_ended = seconds_since_boot();
	e.asked_until = e.round_ended + asked;
	e.pending.clear();
	for (const Deferral& d : e.deferred) {
		e.pending.push_back({d.instance, d.rcpt, shared_text(stored_reason(d.result.reason))});
		count("deferred");
		if (!d.instance.empty())
			count("handler." + d.instance + ".deferred");
		log_info("%s: to=<%s>, handler=%s, status=deferred, delay=%.2f, attempt=%u, retry_in=%lds%s", id.c_str(),
			 d.rcpt.c_str(), shown(d.instance), delay, e.attempts, (long)retry_in, describe(d.result).c_str());
	}
	e.deferred = {};  // its capacity too: a deferred message may wait for hours
	save_progress(e);
	set_next_try(e, seconds_since_boot() + retry_in);
	timers_.insert({e.next_try, id});
}

// queue/ID.done (Spool::save_progress): the (instance, recipient) pairs
// finished so far and the failures among them, of a message that waits
// for a retry, rewritten when a round finished more. Without it a restart
// delivered the message again to each recipient that had it, and failed
// again those that had failed. One line each:
//   done INSTANCE RCPT     INSTANCE "*": no route, none
//   fail REASON            as failed/ID.reason will say it
void Queue::save_progress(Entry& e)
{
	if (e.done.size() == e.saved_done)
		return;
	std::string text;
	for (const auto& [inst, rcpt] : e.done)
		text.append("done ").append(inst.empty() ? "*" : inst).append(" ").append(rcpt).append("\n");
	for (const std::string& f : e.failures)
		text.append("fail ").append(f).append("\n");
	try {
		spool_.save_progress(e.env.id, text);
		e.saved_done = e.done.size();
	} catch (const std::exception& ex) {
		log_warnx("%s: %s: after a restart, the recipients done would be tried again", e.env.id.c_str(),
			  ex.what());
	}
}

// At start: e's done pairs and failures from save_progress()'s text.
// False, e unchanged, when a line is not one it writes.
bool Queue::restore_progress(Entry& e, const std::string& text)
{
	std::set<std::pair<std::string, std::string>> done;
	std::vector<std::string> failures;
	size_t pos = 0;
	while (pos < text.size()) {
		size_t nl = text.find('\n', pos);
		if (nl == std::string::npos)
			return false;
		std::string_view line(text.data() + pos, nl - pos);
		pos = nl + 1;
		if (line.substr(0, 5) == "fail ") {
			failures.emplace_back(line.substr(5));
			continue;
		}
		size_t sp = line.find(' ', 5);
		if (line.substr(0, 5) != "done " || sp == std::string_view::npos || sp == 5 || sp + 1 == line.size())
			return false;
		std::string_view inst = line.substr(5, sp - 5);
		done.insert({inst == "*" ? "" : std::string(inst), std::string(line.substr(sp + 1))});
	}
	e.done = std::move(done);
	e.failures = std::move(failures);
	e.saved_done = e.done.size();
	return true;
}

// The message is older than max_queue_age, at the end of a round or when
// its retry comes up: each (instance, recipient) still pending fails for
// good with the last error it got, counted and logged as a failure, and
// the message goes to failed/ with these reasons.
void Queue::expire(const std::string& id)
{
	Entry& e = entries_.at(id);
	std::vector<Pending> left;
	for (const Deferral& d : e.deferred)  // this round's
		left.push_back({d.instance, d.rcpt, shared_text(stored_reason(d.result.reason))});
	for (Pending& p : e.pending)  // the last round's not tried again since
		if (!e.done.count({p.instance, p.rcpt}) && !e.tried.count({p.instance, p.rcpt}))
			left.push_back(std::move(p));
	// Attempts are counted from laimd's start: a message loaded then had others.
	std::string attempts = std::to_string(e.attempts) + (e.attempts == 1 ? " attempt" : " attempts") +
			       (e.loaded ? " since laimd started" : "");
	for (const Pending& p : left) {
		count("failed");
		if (!p.instance.empty())
			count("handler." + p.instance + ".failed");
		// A call past its timeout may still deliver (late_delivery()).
		const char* running = e.late.count({p.instance, p.rcpt}) ? "; its call still runs and may yet deliver" : "";
		e.failures.push_back("<" + p.rcpt + "> handler " + shown(p.instance) + ": expired after " + attempts +
				     ": " + *p.error + running);
		log_info("%s: to=<%s>, handler=%s, status=failed (expired after %s: %s%s)", id.c_str(), p.rcpt.c_str(),
			 shown(p.instance), attempts.c_str(), p.error->c_str(), running);
		e.done.insert({p.instance, p.rcpt});  // failed: not again if finalize() must wait
	}
	e.deferred = {};
	e.pending.clear();
	finalize(id);
}

// The message is finished: removed, or moved to failed/ with its reasons
// after given_up() has taken it (once: not again when the move is
// retried). When that fails (a full or failing disk), it stays queued and this is
// tried again every retry_max seconds (its next round finds nothing left
// to deliver): forgotten, its file stayed in queue/ unseen by show queue,
// remove and flush, and the next start delivered it again.
void Queue::finalize(const std::string& id)
{
	Entry& e = entries_.at(id);
	try {
		if (e.failures.empty()) {
			spool_.remove(id);
			log_info("%s: removed", id.c_str());
		} else {
			if (given_up && !e.noticed) {
				if (!given_up(e.env, e.failures)) {
					save_progress(e);  // what is done, should laimd stop first
					due_.push_back(id);  // dispatch() finds nothing to do, and settles it again
					return;
				}
				e.noticed = true;
			}
			std::string reasons;
			for (const std::string& f : e.failures)
				reasons += f + "\n";
			reasons.pop_back();
			spool_.fail(id, reasons);
			log_info("%s: moved to failed/: %s", id.c_str(), one_line(e.failures.front()).c_str());
		}
	} catch (const std::exception& ex) {
		log_warnx("%s: finishing the queue file: %s: it stays queued, tried again in %us", id.c_str(), ex.what(),
			  retry_max_);
		set_next_try(e, seconds_since_boot() + static_cast<time_t>(retry_max_));
		timers_.insert({e.next_try, id});
		return;
	}
	try {
		if (e.saved_done)
			spool_.drop_progress(id);
	} catch (const std::exception& ex) {
		log_warnx("%s: %s", id.c_str(), ex.what());
	}
	take(e);
	forget(e);
	entries_.erase(id);
}

int Queue::next_wakeup_ms() const
{
	if (stopped_)
		return 1000;
	if (!due_.empty())
		return 0;
	if (timers_.empty())
		return 1000;
	time_t now = seconds_since_boot();
	return static_cast<int>(std::clamp<long>((timers_.begin()->first - now) * 1000L, 0, 1000));
}

// Whether rcpt has nothing left to deliver: it has no route, or each
// instance its route names (a notice's own instance) has delivered it or
// failed for good. By the routes of now, which dispatch() goes by too.
bool Queue::recipient_done(const Entry& e, const std::string& rcpt) const
{
	if (e.done.count({"", rcpt}))
		return true;
	if (!e.env.instance.empty())
		return e.done.count({e.env.instance, rcpt}) > 0;
	const Route* r = route_find(routes_, rcpt);
	if (!r)
		return !owed_unrouted(e, rcpt);
	return std::all_of(r->handlers.begin(), r->handlers.end(),
				[&](const std::string& name) { return e.done.count({name, rcpt}) > 0; });
}

// While no route matches a recipient (a reload took it away, or the file
// has no routes at all), nothing says which instances it goes to: it is
// owed the message when no round settled it anywhere yet, or when one of
// its instances deferred it and has not delivered since. A recipient
// delivered (or failed) before its route went is neither failed "no
// route", nor deferred again, nor failed at max_queue_age.
bool Queue::owed_unrouted(const Entry& e, const std::string& rcpt) const
{
	auto settled = [&](const auto& d) { return d.second == rcpt; };
	return std::none_of(e.done.begin(), e.done.end(), settled) ||
	       std::any_of(e.pending.begin(), e.pending.end(), [&](const Pending& p) {
		       return p.rcpt == rcpt && !e.done.count({p.instance, rcpt});
	       });
}

// The queue as show queue and mailq list it: a recipient that has the
// message already is left out, as Postfix's showq leaves it out.
std::vector<Queue::Item> Queue::items() const
{
	std::vector<Item> out;
	for (const auto& [id, e] : entries_) {
		Item it;
		it.env = e.env;
		std::erase_if(it.env.recipients, [this, &entry = e](const std::string& r) { return recipient_done(entry, r); });
		it.attempts = e.attempts;
		it.next_try = e.next_try;
		it.last_error = e.pending.empty() ? "" : *e.pending.back().error;
		it.size = e.size;
		out.push_back(std::move(it));
	}
	std::sort(out.begin(), out.end(), [](const Item& a, const Item& b) { return a.env.arrival < b.env.arrival; });
	return out;
}

// A user's flush (laimctl flush, sendmail -q) starts a round of one of
// their messages at most every retry_initial seconds, and not before a
// handler's retry_after: in a loop it started a round at every call, past
// the back-off and the rate limits (only MAIL counts), some 70
// authenticated smarthost sessions a second for one message. Root's
// flush makes every deferred message due.
void Queue::flush(std::optional<uid_t> owner)
{
	if (!owner)
		timers_.clear();  // all made due: a timer left would find next_try changed anyway
	time_t now = seconds_since_boot();
	for (auto& [id, e] : entries_)
		if (e.next_try != 0 && (!owner || (e.env.uid == owner && now >= e.asked_until &&
						       now >= e.round_ended + static_cast<time_t>(retry_initial_))))
			make_due(id);
}

std::string Queue::remove(const std::string& id)
{
	auto it = entries_.find(id);
	if (it == entries_.end())
		return "no such message";
	if (it->second.running > 0 || !it->second.late.empty())
		return "a delivery call of " + id + " is still running: try again once it has returned";
	try {
		spool_.remove(id);
		if (it->second.saved_done)
			spool_.drop_progress(id);
	} catch (const std::exception& ex) {
		log_warnx("%s: remove: %s", id.c_str(), ex.what());
		return std::string("cannot remove it: ") + ex.what();
	}
	take(it->second);
	forget(it->second);
	entries_.erase(it);
	log_info("%s: removed by the administrator", id.c_str());
	return "";
}

size_t Queue::running() const
{
	std::lock_guard<std::mutex> lock(jobs_mutex);
	size_t n = 0;
	for (const auto& job : jobs_)
		n += !job->finished && !job->expired && !job->tested;
	return n;
}

}  // namespace laim
