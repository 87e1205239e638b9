// Rate limits: the windows, their state file and the alert (see
// ratelimit.h for how they count and why).
#include "handler/ratelimit.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "common/clock.h"
#include "common/fd.h"
#include "common/hostname.h"
#include "common/log.h"
#include "common/proto.h"

namespace laim {

namespace {

using nlohmann::json;

constexpr size_t MAX_WINDOWS = 10000;     // keys tracked at once
constexpr size_t MAX_SUBJECTS = 100;      // distinct subjects kept per window
constexpr size_t MAX_SUBJECT_LEN = 200;   // bytes of one, cut at a character
constexpr size_t TOP_SUBJECTS = 10;       // listed in the alert
constexpr size_t HEADER_SCAN = 64 * 1024;  // where message_subject() looks

// What identifies a limit across reloads: its key, window and per (the
// config refuses two limits that share them). Its count, mode and alert
// may change without losing the windows.
std::string signature(const RateLimit& r)
{
	return std::string(rate_limit_key_name(r.key)) + "/" + std::to_string(r.window) + "/" +
	       (r.per_recipient ? "recipient" : "message");
}

// The key who is counted under by r ("uid:1000", "sender:a@b.example",
// "sender:<>", "client:127.0.0.1", "client:local"), or "" when r does not
// apply (a uid limit and mail over TCP, which has no uid).
std::string key_of(RateLimit::Key kind, const Envelope& who)
{
	switch (kind) {
	case RateLimit::Key::Uid: return who.uid ? "uid:" + std::to_string(*who.uid) : "";
	case RateLimit::Key::Sender: return "sender:" + (who.sender.empty() ? std::string("<>") : who.sender);
	case RateLimit::Key::Client: return "client:" + who.client;
	case RateLimit::Key::Auth: return who.auth_user.empty() ? "" : "auth:" + who.auth_user;
	}
	return "";
}

// A key as the 451 and the log name it: "uid 1000 (alice)", "<a@b.example>",
// "127.0.0.1", "the local socket".
std::string who_text(const std::string& key)
{
	if (key.starts_with("uid:")) {
		std::string uid = key.substr(4), name = login_name((uid_t)std::stoul(uid));
		return "uid " + uid + (name.empty() ? "" : " (" + name + ")");
	}
	if (key.starts_with("sender:"))
		return key == "sender:<>" ? "<>" : "<" + key.substr(7) + ">";
	if (key.starts_with("auth:"))
		return "user " + key.substr(5);
	return key == "client:local" ? "the local socket" : key.substr(7);
}

std::string unit(const RateLimit& r, uint64_t n)
{
	return std::string(r.per_recipient ? "recipient" : "message") + (n == 1 ? "" : "s");
}

// "3 messages in 5 s": what a window counted, against the limit's window.
std::string used(const RateLimit& r, uint64_t n)
{
	return std::to_string(n) + " " + unit(r, n) + " in " + std::to_string(r.window) + " s";
}

// Printable ASCII, for an SMTP reply and a Subject: header.
std::string ascii(std::string s)
{
	for (char& c : s)
		if (c < 0x20 || c > 0x7e)
			c = '?';
	return s;
}

// A subject as the window keeps it for the alert: one line of
// printable_text (no control character nor bidi override of a sender's
// reaches the administrator's mail reader), at most MAX_SUBJECT_LEN
// bytes, cut between UTF-8 characters.
std::string clip(std::string_view subject)
{
	std::string s = printable_text(subject.empty() ? "(no subject)" : subject);
	cut_utf8(s, MAX_SUBJECT_LEN);
	return s;
}

// The window's subjects, most frequent first (ties in name order).
std::vector<std::pair<std::string, uint64_t>> top_subjects(const std::map<std::string, uint64_t>& subjects)
{
	std::vector<std::pair<std::string, uint64_t>> v(subjects.begin(), subjects.end());
	std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
	if (v.size() > TOP_SUBJECTS)
		v.resize(TOP_SUBJECTS);
	return v;
}

}  // namespace

RateLimiter::RateLimiter(std::string state_file, std::string hostname, SendAlert send_alert)
	: file_(std::move(state_file)), hostname_(std::move(hostname)), send_alert_(std::move(send_alert))
{
}

void RateLimiter::configure(const std::vector<RateLimit>& limits)
{
	limits_ = limits;
	rules_.clear();
	for (size_t i = 0; i < limits_.size(); i++)
		rules_[signature(limits_[i])] = i;
}

const RateLimit* RateLimiter::rule_of(const Window& w) const
{
	auto it = rules_.find(w.rule);
	return it == rules_.end() ? nullptr : &limits_[it->second];
}

// The windows of every limit that applies to who, each brought up to now
// (opened when none is).
RateLimiter::Match RateLimiter::windows_for(const Envelope& who, time_t now)
{
	Match out;
	for (const RateLimit& r : limits_) {
		std::string key = key_of(r.key, who);
		if (key.empty())
			continue;
		std::string id = signature(r) + " " + key;
		auto it = windows_.find(id);
		if (it == windows_.end()) {
			if (windows_.size() >= MAX_WINDOWS) {
				if (!full_warned_)
					log_warnx("rate limit: %zu keys tracked already: new keys (%s) are not counted "
						  "until windows end", windows_.size(), key.c_str());
				full_warned_ = true;
				continue;
			}
			it = windows_.emplace(id, Window{signature(r), key}).first;
		}
		Window& w = it->second;
		close_ended(w, r, now);
		if (!w.start) {
			w.start = now;
			w.continued = now < w.limited_until;
		}
		out.push_back({&r, &w});
	}
	return out;
}

// Ends w once its time is up. A window that refused or held mail is
// logged with its counts; what it counted beyond the limit opens the next
// window at once, carried; otherwise the key's next message opens one.
// Under strict, a window's refused attempts count for at most the
// limit: a burst of them holds the key back for the window after alone,
// not for one window per `count` attempts (60 refusals against 5 a window
// were 12 windows, and anyone who may claim a sender or share a client
// could spend them on its owners).
void RateLimiter::close_ended(Window& w, const RateLimit& r, time_t now)
{
	if (w.start && now < w.start)
		w.start = now;  // the clock went back: the window starts over
	if (!w.start || now - w.start < (time_t)r.window)
		return;
	bool limited = w.refused || w.held;
	if (limited)
		log_info("rate limit: %s: window of %u s over: %llu %s counted, %llu deferred%s", who_text(w.key).c_str(),
			 r.window, (unsigned long long)w.count, unit(r, w.count).c_str(),
			 (unsigned long long)w.refused, w.held ? ", mail held in offline/" : "");
	uint64_t counted = w.count;
	if (r.strict)
		counted = std::min(counted, w.count - std::min(w.count, w.refused) + r.count);
	uint64_t periods = (uint64_t)(now - w.start) / r.window;
	uint64_t allowed = periods > counted / r.count ? counted : r.count * periods;
	Window next{w.rule, w.key};
	next.count = counted - allowed;
	next.limited_until = limited ? w.start + 2 * (time_t)r.window : 0;
	if (next.count) {
		next.start = w.start + (time_t)(periods * r.window);
		next.continued = next.start < next.limited_until;
	}
	w = std::move(next);
	dirty_ = true;
}

std::string RateLimiter::admit(const Envelope& who, Ticket& ticket, time_t now)
{
	ticket.windows.clear();
	Match m = windows_for(who, now);
	std::string refusal;
	for (auto& [r, w] : m) {
		if (w->count < r->count)
			continue;
		if (refusal.empty())
			refusal = ascii("rate limit: " + used(*r, w->count) + " from " + who_text(w->key) +
					"; try again later");
		refuse(*r, *w, now);
	}
	if (!refusal.empty())
		return refusal.substr(0, STATUS_TEXT_MAX);
	for (auto& [r, w] : m) {
		w->count++;
		ticket.windows.push_back({w->rule + " " + w->key, w->start});
	}
	if (!m.empty())
		dirty_ = true;
	return "";
}

// A MAIL over r's limit: counted under strict; the window's first
// refusal is logged with the counts and sends the alert, unless the key
// was limited in the window before (the run's alert went out then).
void RateLimiter::refuse(const RateLimit& r, Window& w, time_t now)
{
	uint64_t counted = w.count;
	w.refused++;
	if (r.strict)
		w.count++;
	dirty_ = true;
	if (w.refused > 1)
		return;
	std::string who = who_text(w.key);
	log_warnx("rate limit: %s reached %s (key %s, per %s, %s): deferring its mail for %ld s%s", who.c_str(),
		  used(r, counted).c_str(), rate_limit_key_name(r.key), r.per_recipient ? "recipient" : "message",
		  r.strict ? "strict" : "leaky", (long)(w.start + r.window - now),
		  w.continued ? "; no new alert: it was limited in the window before too" : "");
	if (!w.continued && !r.alert.empty())
		send_alert(r, w, who, now);
}

// Stores the alert and saves the state at once: a restart must not send
// it again.
void RateLimiter::send_alert(const RateLimit& r, Window& w, const std::string& who, time_t now)
{
	std::string id = send_alert_(r.alert, alert_message(r, w, who, now));
	if (id.empty())
		return;
	w.alerted = true;
	save();
}

// The alert: who, how many in which window, the first and last queue ids
// and the most frequent subjects, as a plain text message from the
// mailer daemon (null envelope sender: nothing ever answers it).
std::string RateLimiter::alert_message(const RateLimit& r, const Window& w, const std::string& who, time_t now)
{
	const char* nl = "\r\n";
	std::ostringstream m;
	m << "From: Mail Delivery System <MAILER-DAEMON@" << hostname_ << ">" << nl
	  << "To: postmaster@" << hostname_ << nl
	  << "Subject: rate limit: " << ascii(who) << " reached " << used(r, w.count) << nl
	  << "Date: " << local_time(now, RFC5322_DATE) << nl
	  << "Message-ID: <ratelimit." << now << "." << ++alerts_sent_ << "." << getpid() << "@" << hostname_ << ">" << nl
	  << "Auto-Submitted: auto-generated" << nl
	  << "MIME-Version: 1.0" << nl << "Content-Type: text/plain; charset=utf-8" << nl
	  << "Content-Transfer-Encoding: 8bit" << nl << nl
	  << who << " reached its rate limit on " << hostname_ << ": " << used(r, r.count) << nl
	  << "(key " << rate_limit_key_name(r.key) << ", per " << (r.per_recipient ? "recipient" : "message")
	  << ", mode " << (r.strict ? "strict" : "leaky") << ")." << nl << nl
	  << "Window:          " << local_time(w.start, "%Y-%m-%d %H:%M:%S") << " to "
	  << local_time(w.start + r.window, "%H:%M:%S") << " (" << r.window << " s)" << nl
	  << "Counted:         " << w.count << " " << unit(r, w.count) << nl
	  << "Deferred so far: " << w.refused << nl
	  << "First queue id:  " << (w.first_id.empty() ? "-" : w.first_id) << nl
	  << "Last queue id:   " << (w.last_id.empty() ? "-" : w.last_id) << nl << nl
	  << "Most frequent subjects in this window:" << nl;
	for (const auto& [subject, n] : top_subjects(w.subjects))
		m << "  " << std::string(n < 10 ? 5 : n < 100 ? 4 : 3, ' ') << n << "  " << subject << nl;
	m << nl << "Until the window ends, its mail gets 451 4.7.1; what it gives to sendmail waits" << nl
	  << "in the spool's offline/ and is delivered at the allowed pace. No other alert" << nl
	  << "comes while it stays over the limit window after window." << nl
	  << "laimctl show limits lists the keys near their limits; laimctl reset-limit" << nl
	  << w.key << " clears this one." << nl;
	return m.str();
}

time_t RateLimiter::hold(const Envelope& who, time_t now)
{
	time_t until = 0;
	for (auto& [r, w] : windows_for(who, now)) {
		if (w->count < r->count)
			continue;
		until = std::max(until, w->start + (time_t)r->window);
		if (w->held)
			continue;
		w->held = true;
		dirty_ = true;
		log_info("rate limit: %s reached %s: its mail in offline/ waits %ld s", who_text(w->key).c_str(),
			 used(*r, w->count).c_str(), (long)(w->start + r->window - now));
	}
	return until;
}

RateLimiter::Ticket RateLimiter::reserve(const Envelope& who, time_t now)
{
	Ticket t;
	for (auto& [r, w] : windows_for(who, now)) {
		w->count++;
		t.windows.push_back({w->rule + " " + w->key, w->start});
		dirty_ = true;
	}
	return t;
}

void RateLimiter::release(const Ticket& ticket)
{
	for (const auto& [id, start] : ticket.windows) {
		auto it = windows_.find(id);
		if (it != windows_.end() && it->second.start == start && it->second.count > 0) {
			it->second.count--;
			dirty_ = true;
		}
	}
}

void RateLimiter::count(const Ticket& ticket, const Envelope& env, std::string_view subject)
{
	for (const auto& [id, start] : ticket.windows) {
		auto it = windows_.find(id);
		if (it == windows_.end() || it->second.start != start)
			continue;  // its window ended meanwhile
		Window& w = it->second;
		const RateLimit* r = rule_of(w);
		if (r && r->per_recipient && env.recipients.size() > 1)
			w.count += env.recipients.size() - 1;
		if (w.first_id.empty())
			w.first_id = env.id;
		w.last_id = env.id;
		std::string s = clip(subject);
		if (w.subjects.size() < MAX_SUBJECTS || w.subjects.count(s))
			w.subjects[s]++;
		dirty_ = true;
	}
}

void RateLimiter::tick(time_t now)
{
	if (now == swept_at_)
		return;
	swept_at_ = now;
	for (auto it = windows_.begin(); it != windows_.end();) {
		Window& w = it->second;
		const RateLimit* r = rule_of(w);
		if (r)
			close_ended(w, *r, now);
		if (!r || (!w.start && now >= w.limited_until)) {
			it = windows_.erase(it);
			dirty_ = true;
		} else {
			++it;
		}
	}
	full_warned_ = full_warned_ && windows_.size() >= MAX_WINDOWS;
	if (dirty_)
		save();
}

void RateLimiter::save()
{
	json windows = json::array();
	for (const auto& [id, w] : windows_)
		windows.push_back({{"rule", w.rule}, {"key", w.key}, {"start", w.start}, {"count", w.count},
				   {"refused", w.refused}, {"held", w.held}, {"alerted", w.alerted},
				   {"continued", w.continued}, {"limited_until", w.limited_until},
				   {"first_id", w.first_id}, {"last_id", w.last_id}, {"subjects", w.subjects}});
	json state = {{"version", 1}, {"windows", std::move(windows)}};
	write_state(state.dump(1, '\t', false, json::error_handler_t::replace) + "\n");
	dirty_ = false;
}

// Replaces the state file atomically and durably: a temporary file,
// fsynced, renamed over it, and the directory fsynced.
void RateLimiter::write_state(const std::string& text)
{
	std::string tmp = file_ + ".tmp", dir = file_.substr(0, file_.rfind('/') + 1);
	UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
	bool ok = fd && write_all(fd.get(), text) && fsync(fd.get()) == 0;
	fd.reset();
	ok = ok && rename(tmp.c_str(), file_.c_str()) == 0;
	ok = ok && fsync_dir(dir.c_str()) == 0;
	if (!ok && !save_failed_)
		log_warn("rate limit state %s not saved (tried again while counts change)", file_.c_str());
	else if (ok && save_failed_)
		log_info("rate limit state %s saved again", file_.c_str());
	save_failed_ = !ok;
}

void RateLimiter::load(time_t now)
{
	std::ifstream in(file_);
	if (!in)
		return;
	std::stringstream text;
	text << in.rdbuf();
	try {
		json state = json::parse(text.str());
		for (const json& e : state.at("windows")) {
			Window w{e.at("rule").get<std::string>(), e.at("key").get<std::string>()};
			e.at("start").get_to(w.start);
			e.at("count").get_to(w.count);
			e.at("refused").get_to(w.refused);
			e.at("held").get_to(w.held);
			e.at("alerted").get_to(w.alerted);
			e.at("continued").get_to(w.continued);
			e.at("limited_until").get_to(w.limited_until);
			e.at("first_id").get_to(w.first_id);
			e.at("last_id").get_to(w.last_id);
			e.at("subjects").get_to(w.subjects);
			windows_[w.rule + " " + w.key] = std::move(w);
		}
	} catch (const std::exception& e) {
		log_warnx("%s: unusable rate limit state (%s): starting without it", file_.c_str(), e.what());
		windows_.clear();
		return;
	}
	if (!windows_.empty())
		log_info("rate limit: %zu window%s loaded from %s", windows_.size(), windows_.size() == 1 ? "" : "s",
			 file_.c_str());
	tick(now);
}

std::vector<LimitItem> RateLimiter::near_limits(time_t now)
{
	std::vector<LimitItem> rows;
	for (auto& [id, w] : windows_) {
		const RateLimit* r = rule_of(w);
		if (!r)
			continue;
		close_ended(w, *r, now);
		if (!w.start || (w.count * 5 < r->count * 4 && !w.refused && !w.held))
			continue;
		const char* alert = r->alert.empty() ? "none" : w.alerted ? "sent" : w.continued ? "earlier" : "not yet";
		rows.push_back({w.key, who_text(w.key), w.count, r->count, r->window, r->per_recipient,
				w.start + (time_t)r->window - now, w.refused, w.held, alert});
	}
	return rows;
}

bool RateLimiter::reset(const std::string& key)
{
	bool found = false;
	for (auto it = windows_.begin(); it != windows_.end();) {
		if (it->second.key == key) {
			it = windows_.erase(it);
			found = true;
		} else {
			++it;
		}
	}
	if (found) {
		log_info("rate limit: %s reset by laimctl", key.c_str());
		save();
	}
	return found;
}

std::string message_subject(std::string_view message)
{
	std::string_view head = message.substr(0, HEADER_SCAN);
	size_t end = head.find("\r\n\r\n");
	if (end == std::string_view::npos)
		end = head.find("\n\n");
	if (end != std::string_view::npos)
		head = head.substr(0, end + 2);
	try {
		return Message(head).subject();
	} catch (const std::exception& e) {  // GMime cannot be loaded
		log_warnx("rate limit: the alert lists no subject: %s", e.what());
		return "";
	}
}

}  // namespace laim
