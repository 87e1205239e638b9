// The root parent's half of SMTP AUTH on a submission listener (listen:
// with auth: required, laim.yml(5)): the users file (user:crypt(3) hash)
// and the optional senders file of each such listener, and the password
// check the smtp process asks for over imsg. The smtp process never sees
// a hash: it sends the credentials, the parent answers yes or no, and with
// yes the envelope senders the user may use (doc/architecture.md, "AUTH").
//
//   # /etc/laim/submit.passwd, root:root 0600
//   alice:$y$j9T$...          (mkpasswd -m yescrypt)
//   bob:$y$j9T$...
//
// Every hash of a file should have one method and cost: an unknown
// user is checked against the costliest, but a cheaper hash answers
// sooner and so tells its user from the others (a warning at load).
//
//   # /etc/laim/senders, root:root 0600
//   alice: alice@example.org, alice+*@example.org
//   bob: @example.org
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/proto.h"

namespace laim {

class ImsgPeer;

// One listener's users. Errors of its files are ConfigError
// "FILE:LINE: what".
class AuthTable {
 public:
	// users: the users file's text; file names it in errors.
	static AuthTable parse_users(std::string_view text, const std::string& file);
	// Adds the senders file's text: every user it names must be a user.
	void parse_senders(std::string_view text, const std::string& file);

	// True when password is user's: crypt(3) against the stored hash,
	// compared in constant time. An unknown user costs a crypt too,
	// against the hash of the file that costs most to check.
	bool check(const std::string& user, const std::string& password) const;
	// The answer to an AUTH request (senders filled in for a yes).
	AuthResultMsg answer(const std::string& user, const std::string& password) const;
	size_t size() const { return users_.size(); }
	// What laimd -n and the log should say about the file ("FILE: what").
	const std::vector<std::string>& warnings() const { return warnings_; }
	// Overwrites the hashes (in a child that must not keep them).
	void wipe();

 private:
	struct User {
		std::string hash;
		std::vector<std::string> senders;  // patterns, when senders_bound_
	};
	std::map<std::string, User, std::less<>> users_;
	void pick_dummy(const std::string& file);

	std::string dummy_;  // what an unknown user's password is checked against
	std::vector<std::string> warnings_;
	bool senders_bound_ = false;
};

// The tables of every auth listener of a config, by index in cfg.listen.
class AuthService {
 public:
	// Reads the users and senders files of cfg's auth listeners (as
	// root: owned by root, no access for group or others). Throws
	// ConfigError "CONFIG:LINE: listen[N].users: FILE:LINE: what".
	static AuthService load(const Config& cfg);
	// Answers one IMSG_S_AUTH from the smtp process on chan; false when
	// it breaks the protocol (no such auth listener, a malformed frame).
	bool request(ImsgPeer& chan, Imsg& m) const;
	// The tables' warnings, each once.
	const std::vector<std::string>& warnings() const { return warnings_; }
	void wipe();

 private:
	std::map<uint32_t, AuthTable> tables_;
	std::vector<std::string> warnings_;
};

}  // namespace laim
