// One SMTP session (RFC 5321): the protocol state machine, independent of
// sockets and processes so it can be unit-tested and fuzzed. The smtp
// process feeds it client bytes and writes out what it produces; the
// transaction steps that need the handler process (MAIL, RCPT, DATA,
// end of data) and AUTH's check by the parent go out through
// SessionBackend and come back, possibly later, through the *_reply
// methods. While such a reply is pending the
// session processes no further input (pipelined commands wait in the
// input buffer, whose fixed size bounds memory).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/proto.h"

namespace laim {

class Session;

struct SmtpSettings {
	std::string hostname;  // in the greeting, EHLO reply and Received:
	std::string ident;     // "laim 0.1.0", in the greeting
	uint64_t size_limit = 33554432;  // data_size_limit; 0 = none
	unsigned hop_count_limit = 50;   // more Received: fields: refused as a loop
	bool smtputf8 = true;
	unsigned max_rcpts = 100;
};

// What the smtp process knows about the client, for Received: and logs.
struct ClientInfo {
	std::string address;  // "127.0.0.1", "::1", or "local" for the unix socket
	std::optional<uid_t> uid;  // the local client's, as the handler process read it (SO_PEERCRED)
	std::string user;  // login name of uid when known, else ""
	bool starttls = false;  // the listener offers STARTTLS (tls: starttls)
	// The listener's AUTH (listen: in laim.yml(5)).
	uint32_t listener = 0;       // index in listen:, for the parent's AUTH check
	bool auth_required = false;  // auth: required: AUTH offered under TLS, MAIL needs it
	// starttls, but the listener's certificate did not load: STARTTLS,
	// and the AUTH and MAIL of auth: required that need it, get 454.
	bool tls_unavailable = false;
};

class SessionBackend {
 public:
	virtual ~SessionBackend() = default;
	// Start of a transaction: reserve room in the queue.
	// Answer with Session::mail_reply(Ok|Full|Unavailable|Error), or
	// RateLimited with the limit's words.
	virtual void on_mail(Session& s, const std::string& sender) = 0;
	// Answer with Session::rcpt_reply(Ok|Reject|Defer|Unavailable).
	virtual void on_rcpt(Session& s, const std::string& rcpt) = 0;
	// DATA: the handler creates the spool file for the envelope gathered
	// so far. Answer with Session::data_reply(status, fd, queue_id).
	virtual void on_data(Session& s) = 0;
	// End of data with everything written to the spool fd (fd closed by
	// the session). Answer with Session::commit_reply(status).
	virtual void on_commit(Session& s, uint64_t size) = 0;
	// The transaction ended without commit (RSET, rejected data, QUIT,
	// disconnect), or the client left while its MAIL waited for an
	// answer: the handler drops the reservation, the MAIL's place in the
	// line for queue room and any spool file. No reply.
	virtual void on_abort(Session& s) = 0;
	// AUTH: the credentials to check (the parent does, against the
	// listener's users file). Answer with Session::auth_reply(). The
	// session overwrites password once the call returns. The default
	// answers no.
	virtual void on_auth(Session& s, const std::string& user, const std::string& password);
	// A failed AUTH: wait a random 1 to 3 s, without holding up other
	// sessions, then call Session::auth_delay_over(). The default does
	// not wait.
	virtual void on_auth_delay(Session& s);
#ifdef LAIM_SECCOMP_TRIGGER
	// Test builds only: the XSECCOMP command.
	virtual void on_seccomp_trigger() {}
#endif
};

class Session {
 public:
	Session(SessionBackend& backend, const SmtpSettings& settings, ClientInfo client, uint32_t id);
	~Session();
	Session(const Session&) = delete;
	Session& operator=(const Session&) = delete;

	uint32_t id() const { return id_; }
	const ClientInfo& client() const { return client_; }
	// The local client's uid and login name, which the handler process
	// reads from the connection and the user database (this process has
	// neither's word).
	void set_client_user(std::optional<uid_t> uid, std::string user)
	{
		client_.uid = uid;
		client_.user = std::move(user);
	}
	const std::string& helo() const { return helo_; }
	const std::string& sender() const { return sender_; }
	const std::vector<std::string>& recipients() const { return rcpts_; }

	// Queue the 220 greeting. If the client already sent something (the
	// smtp process checks before greeting), call pregreet() instead: 554
	// and close.
	void greet();
	void pregreet();

	// Input: the caller reads into input_space() (never more than its
	// size), then calls input_commit(n), which processes as much as it can.
	// When input_space() is empty the caller stops reading (backpressure).
	std::pair<char*, size_t> input_space();
	void input_commit(size_t n);
	// True when buffered input waits (e.g. pipelined commands).
	bool has_pending_input() const;

	// Output for the client, to write in order; consume what was written.
	const std::string& output() const { return out_; }
	void output_consumed(size_t n);

	// True once the session must end: close after output is flushed.
	bool closing() const { return closing_; }
	// True while a backend reply is outstanding.
	bool waiting() const { return waiting_ != Wait::None; }

	// TLS (RFC 3207). After "220 Ready to start TLS" the session reads
	// nothing until the caller, once that reply is written, has done the
	// handshake and called tls_started(); the input buffered behind the
	// STARTTLS command is discarded. tls_started() also begins an
	// implicit TLS session, before greet().
	bool starttls_wanted() const { return starttls_wanted_; }
	void tls_started();
	bool tls_active() const { return tls_; }

	// Timed out between commands: 421 4.4.2 and close.
	void timeout();
	// Daemon shutting down: idle sessions get 421 4.3.2 now; a session in
	// a transaction gets it at its next command (the smtp process closes
	// it after a bounded wait anyway).
	void shutdown();
	// The client shut its sending side (EOF): what it sent is answered,
	// then the session closes; an unfinished command or message is
	// dropped. With nothing sent after a MAIL still unanswered, it is
	// taken as gone: disconnected().
	void input_ended();
	// The client went away: abort any transaction, or the MAIL waiting
	// for its answer.
	void disconnected();

	// Backend replies.
	// RateLimited: text (StatusMsg::text, checked by its decoder) follows
	// "451 4.7.1 ".
	void mail_reply(BackendStatus st, std::string_view text = {});
	void rcpt_reply(BackendStatus st);
	// On Ok, fd is the spool file (the session owns and closes it) and id
	// the queue id, used in the Received: header and the 250 reply.
	void data_reply(BackendStatus st, int fd, const std::string& queue_id);
	void commit_reply(BackendStatus st);
	// The parent's verdict on an AUTH. ok: bound says whether the user's
	// envelope senders are limited to the patterns in senders.
	void auth_reply(bool ok, bool bound = false, std::vector<std::string> senders = {});
	// After the delay that a failed AUTH waits: 535, or 421 and the end
	// at the third failure.
	void auth_delay_over();
	// Instead of auth_reply(): the backend checked nothing: 454, and the
	// session goes on. why, for the log: "held off" (the client's
	// address is), or why else the password went unchecked.
	void auth_held(std::string_view why = "held off");

	// The user the session authenticated as; "" before AUTH.
	const std::string& auth_user() const;

 private:
	// Private members are the implementation's to shape (see session.cpp).
	enum class Wait { None, Mail, Rcpt, Data, Commit, Auth, AuthDelay };
	struct Impl;

	void process();
	void resume();
	bool command_input();
	size_t command_line_limit(std::string_view start) const;
	// AUTH is offered: an auth: required listener, under TLS.
	bool auth_offered() const { return client_.auth_required && tls_; }
	void data_input();
	void command(std::string_view line);
	void cmd_helo(std::string_view arg, bool ehlo);
	void cmd_mail(std::string_view arg);
	void cmd_rcpt(std::string_view arg);
	void cmd_data(std::string_view arg);
	void cmd_starttls(std::string_view arg);
	void cmd_auth(std::string_view arg);
	void auth_response(std::string_view line);
	void auth_plain(std::string_view response);
	void auth_check(std::string_view user, std::string_view password);
	void auth_failed();
	bool sender_allowed(std::string_view sender) const;
	void data_start();
	void write_received();
	size_t data_scan(const char* p, size_t n, bool& end);
	void data_put(const char* p, size_t n);
	void data_put_crlf();
	void spool_put(const char* p, size_t n);
	void spool_flush();
	void data_end();
	void abort_transaction();
	void reset_transaction();
	void reply(std::string_view text) { out_.append(text); }
	void reply_host(std::string_view code, std::string_view text);

	SessionBackend& backend_;
	const SmtpSettings& settings_;
	ClientInfo client_;
	uint32_t id_;
	Wait waiting_ = Wait::None;
	bool closing_ = false;
	bool starttls_wanted_ = false;
	bool tls_ = false;
	std::string helo_, sender_;
	std::vector<std::string> rcpts_;
	std::string out_;
	std::unique_ptr<Impl> impl_;  // buffers, state and data-phase state
};

}  // namespace laim
