// Rate limits (the rate_limits key): how much mail one local uid, one
// envelope sender or one client address may send in a window. Judged in
// the handler process at MAIL (a refusal is 451 4.7.1) and again when
// offline/ is imported, so that mail given to sendmail cannot get round a
// limit and is never lost: it waits in offline/ until its window allows.
//
// Counting: fixed windows, as Postfix's anvil and the classic Exim
// readsocket limiter count, each opened by a key's first message. A
// fixed window makes "N of M used, W s left" exact for laimctl and the
// log, and needs a counter per key rather than a time per message. A
// message is counted at MAIL (a reservation, given back when the
// transaction ends without a commit, so parallel sessions cannot
// overshoot); per: recipient adds its other final recipients at commit.
// What a window counts beyond the limit (a message with many recipients;
// refused attempts, under mode: strict) is carried into the next window,
// so over time a key never averages more than `count` per window and a
// client that keeps hammering under strict stays refused. Refused attempts
// carry at most `count`: once quiet, a key is refused for the window after
// alone, not for one window per `count` attempts, which a burst of a few
// seconds could make hours on a key that others share or may claim.
//
// Alerts: the first refusal in a window sends one message to the limit's
// `alert` instance (handlerd.cpp stores it), unless the key was limited
// in the window just before too: a burst that outlasts a window (a cron
// job's thousand mails, paced out of offline/) is one alert, not one per
// window. Files held in offline/ are no refusal and never alert.
//
// State: the windows survive a restart in SPOOL/ratelimit.json, replaced
// atomically (temporary file, fsync, rename, fsync of the directory) at
// most once a second while counts change, at once after an alert, and at
// shutdown; a crash forgets at most the last second's counts.
#pragma once

#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "handler/api/handler.h"
#include "handler/control.h"

namespace laim {

class RateLimiter {
 public:
	// The windows a message was admitted into (state id, window start):
	// release() gives them back, count() completes them.
	struct Ticket {
		std::vector<std::pair<std::string, time_t>> windows;
	};
	// Stores an alert (a whole RFC 5322 message, CRLF line ends) for the
	// handler instance; returns its queue id, or "" when it could not.
	using SendAlert = std::function<std::string(const std::string& instance, const std::string& message)>;

	// state_file: where the windows are kept; hostname names this host in
	// alerts.
	RateLimiter(std::string state_file, std::string hostname, SendAlert send_alert);

	// The limits of the config (at start and on SIGHUP): windows of a
	// limit with the same key, window and per keep their counts.
	void configure(const std::vector<RateLimit>& limits);
	// At start, after configure(): the windows saved by the last run.
	void load(time_t now);

	// MAIL from who (its uid, sender and client): "" with the ticket
	// filled when every matching limit has room, else the words of the
	// 451 4.7.1 (printable ASCII). A refusal is logged once per key per
	// window, counted under strict, and may send the alert.
	std::string admit(const Envelope& who, Ticket& ticket, time_t now);
	// offline/ import: 0 when who is under every limit, else when to look
	// again. Holding a file is no refusal: not counted, never alerted;
	// logged once per key per window.
	time_t hold(const Envelope& who, time_t now);
	// Counts one message of who without judging it (after hold() said 0).
	Ticket reserve(const Envelope& who, time_t now);
	// The transaction ended without a commit: its reservation goes back.
	void release(const Ticket& ticket);
	// The message was committed: per: recipient counts its other
	// recipients; its queue id and subject go to the window for the alert.
	void count(const Ticket& ticket, const Envelope& env, std::string_view subject);

	// Once per loop turn: ends the windows whose time is up (logging
	// those that refused or held mail), forgets idle keys, and saves the
	// state when it changed and the last save is a second old.
	void tick(time_t now);
	// Writes the state file now (at shutdown). Failures are logged.
	void save();

	// `laimctl show limits`: the keys at or above 80% of a limit, or
	// refused or held in their current window.
	std::vector<LimitItem> near_limits(time_t now);
	// `laimctl reset-limit KEY`: forgets KEY's windows in every limit;
	// false when it has none.
	bool reset(const std::string& key);

 private:
	struct Window {
		std::string rule;  // the limit's signature: "uid/300/message"
		std::string key;   // "uid:1000"
		time_t start = 0;  // 0: none open; the next message opens one
		uint64_t count = 0;
		uint64_t refused = 0;      // MAILs refused in this window
		bool held = false;         // offline/ files held in this window
		bool alerted = false;      // this window's alert went out
		bool continued = false;    // the window before was limited too: no new alert
		time_t limited_until = 0;  // a window opened before this continues a limited run
		std::string first_id, last_id;
		std::map<std::string, uint64_t> subjects;  // decoded Subject: -> messages
	};
	using Match = std::vector<std::pair<const RateLimit*, Window*>>;

	Match windows_for(const Envelope& who, time_t now);
	const RateLimit* rule_of(const Window& w) const;
	void close_ended(Window& w, const RateLimit& r, time_t now);
	void refuse(const RateLimit& r, Window& w, time_t now);
	void send_alert(const RateLimit& r, Window& w, const std::string& who_text, time_t now);
	std::string alert_message(const RateLimit& r, const Window& w, const std::string& who_text, time_t now);
	void write_state(const std::string& text);

	std::string file_;
	std::string hostname_;
	SendAlert send_alert_;
	std::vector<RateLimit> limits_;
	std::map<std::string, size_t> rules_;   // signature -> index in limits_
	std::map<std::string, Window> windows_;  // by state id: "SIGNATURE KEY"
	bool dirty_ = false;         // changed since the last save
	bool save_failed_ = false;   // the last save failed (logged once)
	time_t swept_at_ = 0;        // tick()'s last sweep
	bool full_warned_ = false;   // the log said that no more keys are counted
	unsigned alerts_sent_ = 0;   // for unique Message-IDs
};

// The decoded Subject: of a message, read from its header block alone;
// "" when it has none, or when GMime cannot be loaded (a warning says why).
std::string message_subject(std::string_view message);

}  // namespace laim
