// Failed AUTHs by client address, across sessions. A session ends at its
// third failure, but a guesser can open session after session, in
// parallel, each costing the parent a password hash: once an address has
// failed AUTH_GUARD_FAILURES times within AUTH_GUARD_WINDOW seconds, its
// AUTH gets 454 for AUTH_GUARD_HOLD seconds and none of its passwords is
// checked, the right one neither. Checks still in flight count as
// failures to come: while they and the failures make
// AUTH_GUARD_FAILURES, a further AUTH waits (in the smtp process's line)
// for a verdict rather than be checked. IPv6 addresses count by their /64,
// which one client usually holds whole, and all loopback addresses
// (127.0.0.0/8, ::1) and the host's own addresses as one: they are all
// this host, whose users can bind() any of them. The smtp process counts
// a client of this host by its uid instead ("uid N", which the parent
// reads off the client's socket: parent/client_uid.h), so that one local
// user's guesses hold off no other user; "this host" is left for a client
// whose uid could not be known.
#pragma once

#include <time.h>

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace laim {

inline constexpr unsigned AUTH_GUARD_FAILURES = 10;
inline constexpr time_t AUTH_GUARD_WINDOW = 600;
inline constexpr time_t AUTH_GUARD_HOLD = 900;
inline constexpr size_t AUTH_GUARD_ADDRESSES = 4096;  // tracked at most

class AuthGuard {
 public:
	// Held while address is held off; Wait while its failures in the
	// window and its checks still in flight reach AUTH_GUARD_FAILURES
	// (parallel sessions get no more tries than one after the other);
	// Check otherwise.
	enum class Admit { Check, Wait, Held };
	Admit admit(const std::string& address, time_t now) const;
	// The bucket address counts in: itself, its /64, or "this host".
	// Anything else that is no address ("uid N") is a bucket of its own.
	std::string key(const std::string& address) const;
	// Whether address is a loopback one or one of this host's own.
	bool this_host(const std::string& address) const;
	// This host's own addresses (SmtpConf::host_addresses): a local
	// user can bind() any of them, so each counts as this host.
	void set_host_addresses(const std::vector<std::string>& addresses);
	// A password of address went to the parent; its verdict came back
	// (before failed(), when it is a no).
	void checking(const std::string& address);
	void checked(const std::string& address);
	// Counts a failure of address; true when it starts a hold (to be
	// logged once).
	bool failed(const std::string& address, time_t now);

 private:
	struct Failures {
		unsigned count = 0;
		time_t since = 0;       // the first failure counted
		time_t held_until = 0;  // 0: not held
	};
	void forget_expired(time_t now);
	std::unordered_map<std::string, Failures> by_address_;
	// Checks in flight by key; as many as the parent has yet to answer.
	std::unordered_map<std::string, unsigned> checking_;
	std::unordered_set<std::string> host_addresses_;
};

}  // namespace laim
