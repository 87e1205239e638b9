// The control protocol, server side: what laimd answers on the control
// socket. The handler process owns the socket and learns the caller's uid
// with SO_PEERCRED; this file only turns one request line into the
// response text, so it is pure and testable.
//
// Request: ONE line, one of
//
//   show queue | show offline | show stats | show failed | show limits
//   | flush | remove ID | reload aliases | test INSTANCE | reset-limit KEY
//
// KEY is the rest of the line (a sender key may hold spaces). A line of
// CONTROL_MAX_LINE bytes or more gets "ERR request too long", and the
// connection is closed with the rest unread (the client sees a reset
// after the answer).
//
// Response: "OK\n" or "ERR <message>\n", then payload lines, then EOF.
//
//   show queue   ID \t ARRIVAL \t SIZE \t UID_or_- \t SENDER \t RCPT,RCPT \t ATTEMPTS \t LAST_ERROR
//   show offline N: how many files wait in offline/, not imported yet
//   show failed  ID \t ARRIVAL \t SIZE \t SENDER \t RCPT,RCPT \t REASON (its first line)
//   show stats   "key value" per line
//   show limits  KEY \t WHO \t COUNT \t LIMIT \t WINDOW \t PER \t LEFT \t DEFERRED \t HELD \t ALERT
//                (the rate limit windows at or near their limits; PER is
//                message or recipient, HELD yes or no, ALERT sent, earlier,
//                not yet or none)
//   reload aliases  "PATH: N aliases": the file laimd read (aliases: of
//                laim.yml) and what it holds now (newaliases prints it)
//   test         "OK\nINSTANCE: ready: WHAT WAS CHECKED\n", or
//                "ERR INSTANCE: not ready: WHY\n" (the handler's test())
//
// uid 0 may do everything; other users may "show queue", "show offline"
// and "flush" (their own messages only: a user's flush must not undo the
// back-off of everyone's retries). Fields never hold a tab,
// CR, LF or other control character: they are escaped as in the log
// (log_escape), so no value (a last error quoting a remote reply, say)
// can forge a field or a line, or drive the terminal that shows it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/ctl.h"

namespace laim {

// A message waiting in queue/ (new or deferred).
struct QueueItem {
	std::string id;
	time_t arrival = 0;
	uint64_t size = 0;
	std::optional<uid_t> uid;  // submitting uid, for local submissions
	std::string sender;        // "" for the null sender
	std::vector<std::string> recipients;
	unsigned attempts = 0;
	std::string last_error;    // "" until a delivery was deferred
};

// A rate limit window at or near its limit, for "show limits".
struct LimitItem {
	std::string key;  // "uid:1000", what reset-limit takes
	std::string who;  // "uid 1000 (alice)"
	uint64_t count = 0, limit = 0;
	uint32_t window = 0;  // seconds
	bool per_recipient = false;
	time_t left = 0;      // seconds until the window ends
	uint64_t refused = 0;
	bool held = false;    // files wait in offline/
	// "sent" (this window's alert went out), "earlier" (the key was limited
	// in the window before, whose alert covers it), "not yet", "none"
	std::string alert;
};

// A message in failed/, with the first line of its .reason file: the
// same fields the client parses.
using FailedItem = CtlFailedEntry;

// What the control protocol acts on; the handler process implements it
// over its queue, the unit tests with a fake.
class ControlTarget {
 public:
	virtual ~ControlTarget() = default;
	virtual std::vector<QueueItem> queue() = 0;
	// The files in offline/ not imported yet: those owner owns, or all.
	virtual size_t offline(std::optional<uid_t> owner) = 0;
	// Lists failed/, which takes reading two files per message: done gets
	// the list later, or why it could not be read.
	virtual void failed(std::function<void(std::vector<FailedItem> items, std::string error)> done) = 0;
	virtual std::vector<std::pair<std::string, uint64_t>> stats() = 0;
	// Makes every deferred message due now: those owner submitted, or all.
	virtual void flush(std::optional<uid_t> owner) = 0;
	// Removes a queued message: "" when done, else why not (no such
	// message, a delivery call of it still running).
	virtual std::string remove(const std::string& id) = 0;
	// Re-reads the aliases file: "" or the first error; *loaded (when
	// given) is set to "PATH: N aliases", the table laimd holds after it.
	virtual std::string reload_aliases(std::string* loaded) = 0;
	// The rate limit windows at or near their limits.
	virtual std::vector<LimitItem> limits() = 0;
	// Forgets KEY's rate limit windows; false when it has none.
	virtual bool reset_limit(const std::string& key) = 0;
	// Starts the dry run of a handler instance (Handler::test(), which may
	// take a while on a worker); done gets its verdict later: ready, and
	// what was checked or why not. False when there is no such instance.
	virtual bool test(const std::string& instance, std::function<void(bool ready, std::string what)> done) = 0;
};

// How an answer that comes later is delivered: the complete response.
using ControlReply = std::function<void(std::string response)>;

// Answers one request line (with or without its final "\n") from a client
// with uid `uid`: the complete response, every line ending in "\n"; or ""
// when the answer comes later, through `later` (test INSTANCE, show failed).
// Exceptions from the target become "ERR internal error: ...".
std::string control_answer(std::string_view line, uid_t uid, ControlTarget& t, ControlReply later = {});

}  // namespace laim
