// The imsg vocabulary between laim's three processes: the message types,
// the channel validators that say which types each end accepts, and one
// payload struct per type with its encode/decode pair, which sender and
// receiver both use. Decoding is as strict as the framing: a truncated
// payload, trailing bytes or an out-of-range status is refused.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/imsg.h"

namespace laim {

struct Config;

enum ImsgType : uint32_t {
	// parent -> smtp
	IMSG_P_SMTP_CONF = 1,     // SmtpConf
	IMSG_P_HANDLER_CHANNEL,   // NoPayload; fd: a fresh smtp<->handler channel
	IMSG_P_SMTP_TLS = 10,     // SmtpTls: a listener's new certificate chain (SIGHUP)
	// parent -> handler
	IMSG_P_HANDLER_CONF,      // HandlerConf; fd: memfd holding a HandlerConfText
	IMSG_P_SMTP_CHANNEL,      // NoPayload; fd: a fresh smtp<->handler channel

	// smtp -> handler; peerid = session id
	IMSG_S_MAIL = 100,        // MailMsg
	IMSG_S_RCPT,              // RcptMsg
	IMSG_S_DATA,              // NoPayload
	IMSG_S_COMMIT,            // CommitMsg
	IMSG_S_ABORT,             // NoPayload
	IMSG_S_MAIL_LOCAL,        // MailMsg; fd: the client's connection to the submission socket

	// handler -> smtp; peerid = session id
	IMSG_H_MAIL = 200,        // StatusMsg
	IMSG_H_RCPT,              // StatusMsg
	IMSG_H_DATA_OK,           // DataOkMsg; fd: the spool file
	IMSG_H_DATA_FAIL,         // StatusMsg
	IMSG_H_COMMIT,            // StatusMsg

	// child -> parent
	IMSG_C_PEER_ERROR = 300,  // PeerErrorMsg: the sibling broke the protocol with this frame; end it
	IMSG_C_PEER_ERROR_FD,     // PeerErrorMsg; fd: the descriptor that came with the frame

	// handler -> parent, on the command service channel
	IMSG_H_COMMAND_RUN = 500,   // CommandRunMsg; fd: the reply channel, where the rest goes
	// parent -> handler, on a command's reply channel
	IMSG_P_COMMAND_INPUT,       // NoPayload; fd: the write end of the command's stdin
	IMSG_P_COMMAND_UNREAD,      // NoPayload; fd: a read end of that pipe, never read: what it
	                            // holds once the command is gone was left unread (FIONREAD)
	IMSG_P_COMMAND_OUTPUT,      // CommandStartedMsg; fd: the read end of its stdout and stderr
	IMSG_P_COMMAND_EXIT,        // CommandExitMsg: it ended, and its process group is killed
	IMSG_P_COMMAND_FAIL,        // CommandFailMsg: it was not started

	// smtp -> parent, on the key channel: a private-key operation
	IMSG_T_RSA_PRIV_ENC = 600,  // KeyOpMsg: RSA_private_encrypt (a signature)
	IMSG_T_ECDSA_SIGN,          // KeyOpMsg: an ECDSA signature of a digest, DER
	// parent -> smtp, on the key channel
	IMSG_K_RESULT,              // KeyResultMsg
	// smtp -> parent, on the key channel, after each SmtpTls it was given
	IMSG_T_KEY_IN_USE,          // SmtpTls without its chain: the key of the listener's context (0: none)

	// smtp -> parent; peerid = session id
	IMSG_S_AUTH = 700,          // AuthMsg: check these credentials
	// parent -> smtp; peerid = session id
	IMSG_P_AUTH,                // AuthResultMsg
	// smtp -> parent; peerid = session id
	IMSG_S_CLIENT_UID,          // NoPayload; fd: a TCP client's connection, from this host
	// parent -> smtp; peerid = session id
	IMSG_P_CLIENT_UID,          // ClientUidMsg: who owns the client's end
};

// "IMSG_S_MAIL" for IMSG_S_MAIL, for messages about the protocol.
const char* imsg_name(uint32_t type);

// Outcome of a transaction step, as the handler process answers it to the
// smtp process (the u32 status of IMSG_H_* payloads).
enum class BackendStatus : uint32_t {
	Ok,
	Full,         // queue full: 452 4.3.1
	Unavailable,  // handler process down or failing: 451 4.3.0
	Reject,       // recipient refused: 550 5.1.1
	Defer,        // recipient deferred: 451 4.3.0
	TooBig,       // over the size limit: 552 5.3.4
	Error,        // local error (disk full, ...): 451 4.3.0
	RateLimited,  // the sender is over a rate limit: 451 4.7.1 with StatusMsg::text
	TooMany,      // the recipient's alias expands past laim's limits: 452 4.5.3
};

// The payloads, each with its encode/decode pair. Strings and integers
// travel as ImsgWriter fields, in the order of the struct.

// IMSG_P_SMTP_CONF: what the smtp process takes from the configuration.
struct SmtpConf {
	std::string hostname;
	std::string ident;
	uint64_t size_limit = 0;
	uint32_t hop_count_limit = 0;
	bool smtputf8 = false;
	uint32_t timeout = 0;
	uint32_t max_sessions = 0;
	uint32_t greeting_delay = 0;
	// This host's own addresses: AUTH from any of them is this host's
	// (smtp/auth_guard.h).
	std::vector<std::string> host_addresses;
};
// The smtp process's part of cfg, hostname as resolved at start.
SmtpConf smtp_conf(const Config& cfg, const std::string& hostname, const std::vector<std::string>& host_addresses);

// IMSG_P_SMTP_TLS, and what the smtp process inherits at fork: the
// certificate chain of listener cfg.listen[listen_index], leaf first
// (PEM), and the id under which the parent keeps its private key.
struct SmtpTls {
	uint32_t listen_index = 0;
	uint32_t key_id = 0;
	std::string chain;
};

// IMSG_T_*: one private-key operation for the parent's key key_id.
struct KeyOpMsg {
	uint32_t key_id = 0;
	uint32_t padding = 0;  // RSA_PKCS1_PADDING or RSA_NO_PADDING (PSS); 0 for ECDSA
	std::string data;      // what to sign
};
// IMSG_K_RESULT: the operation's output; ok false when it failed (an
// unknown key id, a size out of range, an OpenSSL error).
struct KeyResultMsg {
	bool ok = false;
	std::string data;
};

// IMSG_P_HANDLER_CONF: the config file's name, for messages; its text
// comes in the memfd.
struct HandlerConf {
	std::string file;
};
// What that memfd holds: the config text, and the secret files it names
// as the parent read them (Secrets::encode), which the handler process
// could not read itself.
struct HandlerConfText {
	std::string text;
	std::string secrets;
};

// IMSG_S_MAIL, IMSG_S_MAIL_LOCAL: a transaction's start. A local client's
// uid is not smtp's word: the handler process reads it from the socket
// that comes with IMSG_S_MAIL_LOCAL (common/submitter.h).
struct MailMsg {
	std::string sender;  // "" for the null sender
	std::string helo;
	std::string client;  // the client's address, or "local"
	std::string auth_user;  // the user the session authenticated as, or ""
};

// IMSG_S_RCPT
struct RcptMsg {
	std::string rcpt;
};

// IMSG_S_COMMIT: end of data.
struct CommitMsg {
	uint64_t size = 0;  // bytes smtp wrote after the envelope header
};

// IMSG_H_MAIL, IMSG_H_RCPT, IMSG_H_DATA_FAIL, IMSG_H_COMMIT
struct StatusMsg {
	BackendStatus status = BackendStatus::Ok;
	// RateLimited: the reply's words after "451 4.7.1 ". Printable ASCII,
	// at most STATUS_TEXT_MAX bytes: decode() refuses anything else, so
	// that it can never end the reply line or add one.
	std::string text;
};
constexpr size_t STATUS_TEXT_MAX = 400;

// IMSG_H_DATA_OK: the spool file is ready for the message; the local
// client's uid as the handler process read it, for Received:.
struct DataOkMsg {
	std::string queue_id;
	std::optional<uid_t> uid;
	std::string user;  // login name of uid, "" if none
};

// IMSG_C_PEER_ERROR, IMSG_C_PEER_ERROR_FD: what the sibling broke, and the
// frame that broke it, for the parent to judge (sibling_frame_fault).
struct PeerErrorMsg {
	std::string what;   // at most PEER_ERROR_WHAT_MAX bytes
	std::string frame;  // the record as received, header included; its first PEER_ERROR_FRAME_MAX bytes
};
constexpr size_t PEER_ERROR_WHAT_MAX = 512;
constexpr size_t PEER_ERROR_FRAME_MAX = IMSG_MAX_PAYLOAD - PEER_ERROR_WHAT_MAX - 8;

// Why frame, a record one child sent its sibling as the sibling received
// it (fd: the descriptor that came with it, or -1; not taken), breaks
// the rules its receiver applies: the framing and its channel's validator
// valid, its payload's decoder, and for IMSG_S_MAIL_LOCAL the client's
// connection to socket_path (common/submitter.h). "" when it breaks
// none. The parent judges a child's IMSG_C_PEER_ERROR with it.
std::string sibling_frame_fault(std::string_view frame, int fd, ImsgValidator valid, const std::string& socket_path);

// The parent's verdict on a child's IMSG_C_PEER_ERROR (frame as forwarded,
// MAC trailer included): Fault when the frame carries the accused
// sibling's MAC (sender_key) and breaks a rule (*fault says which); Lie
// when it is valid; Unauthenticated when its MAC does not verify, which
// either child could have caused (doc/architecture.md).
enum class PeerReport { Fault, Lie, Unauthenticated };
PeerReport judge_peer_report(std::string_view frame, int fd, const ImsgMacKey& sender_key, ImsgValidator valid,
			     const std::string& socket_path, std::string* fault);

// IMSG_H_COMMAND_RUN: run instance's command for one message. The parent
// takes the argv, the user and the limits from its own configuration, and
// the values only for the placeholders (handler/api/command.h).
struct CommandRunMsg {
	std::string instance;  // a pipe instance, or "alias:command"
	std::string queue_id;
	std::string sender;    // "" for the null sender
	std::vector<std::string> recipients;  // alias:command: the one "|command" target
};

// IMSG_P_COMMAND_OUTPUT: the command runs.
struct CommandStartedMsg {
	std::string user;  // as whom
};

// IMSG_P_COMMAND_EXIT
struct CommandExitMsg {
	uint32_t status = 0;     // as waitpid(2) gives it
	bool timed_out = false;  // killed by the parent at its time limit
	uint32_t timeout = 0;    // that limit, in seconds
};

// IMSG_P_COMMAND_FAIL
struct CommandFailMsg {
	bool permanent = false;
	std::string why;
};

// IMSG_S_AUTH: an AUTH's credentials, for the parent to check against
// the users file of the listener the session came in on.
struct AuthMsg {
	uint32_t listener = 0;  // index in the config's listen:
	std::string user;
	std::string password;
};

// IMSG_P_AUTH: the parent's verdict.
struct AuthResultMsg {
	bool ok = false;
	// ok and the listener has a senders file: the envelope senders the
	// user may use (patterns: '*' matches any characters); MAIL FROM
	// anything else gets 553 5.7.1.
	bool bound = false;
	std::vector<std::string> senders;
};

// IMSG_P_CLIENT_UID: the uid that owns the socket at the client's end of
// a TCP connection from this host, which the AUTH guard counts that
// client's failures by (smtp/auth_guard.h); unknown when the kernel no
// longer has it (the client left).
struct ClientUidMsg {
	bool known = false;
	uint32_t uid = 0;
};

// The types whose frame is all they say (and the fd they carry).
struct NoPayload {};

std::string encode(const SmtpConf& m);
std::string encode(const HandlerConf& m);
std::string encode(const HandlerConfText& m);
std::string encode(const MailMsg& m);
std::string encode(const RcptMsg& m);
std::string encode(const CommitMsg& m);
std::string encode(const StatusMsg& m);
std::string encode(const DataOkMsg& m);
std::string encode(const PeerErrorMsg& m);
std::string encode(const CommandRunMsg& m);
std::string encode(const CommandStartedMsg& m);
std::string encode(const CommandExitMsg& m);
std::string encode(const CommandFailMsg& m);
std::string encode(const AuthMsg& m);
std::string encode(const AuthResultMsg& m);
std::string encode(const ClientUidMsg& m);
std::string encode(const NoPayload& m);
std::string encode(const SmtpTls& m);
std::string encode(const KeyOpMsg& m);
std::string encode(const KeyResultMsg& m);

bool decode(std::string_view data, SmtpConf& m);
bool decode(std::string_view data, HandlerConf& m);
bool decode(std::string_view data, HandlerConfText& m);
bool decode(std::string_view data, MailMsg& m);
bool decode(std::string_view data, RcptMsg& m);
bool decode(std::string_view data, CommitMsg& m);
bool decode(std::string_view data, StatusMsg& m);
bool decode(std::string_view data, DataOkMsg& m);
bool decode(std::string_view data, PeerErrorMsg& m);
bool decode(std::string_view data, CommandRunMsg& m);
bool decode(std::string_view data, CommandStartedMsg& m);
bool decode(std::string_view data, CommandExitMsg& m);
bool decode(std::string_view data, CommandFailMsg& m);
bool decode(std::string_view data, AuthMsg& m);
bool decode(std::string_view data, AuthResultMsg& m);
bool decode(std::string_view data, ClientUidMsg& m);
bool decode(std::string_view data, NoPayload& m);
bool decode(std::string_view data, SmtpTls& m);
bool decode(std::string_view data, KeyOpMsg& m);
bool decode(std::string_view data, KeyResultMsg& m);

// A message that breaks the protocol: malformed, of a type its channel
// does not serve, or out of turn. A channel's dispatch throws it; the
// channel's owner decides what that costs the peer (common/peer.h).
struct ImsgProtocolError : std::runtime_error {
	using std::runtime_error::runtime_error;
};

// m's payload as T; ImsgProtocolError when it does not decode.
template <typename T>
T payload(const Imsg& m)
{
	T out;
	if (!decode(m.data, out))
		throw ImsgProtocolError(std::string("malformed ") + imsg_name(m.type));
	return out;
}

// For a dispatch's default case: a type the channel does not serve.
[[noreturn]] void unexpected_imsg(const Imsg& m);

// Channel validators: the types each end of each channel accepts, and
// whether each carries an fd. A child never accepts a parent's message from
// its sibling, nor the reverse.
inline ImsgTypeInfo imsg_valid_parent_to_smtp(uint32_t t)
{
	switch (t) {
	case IMSG_P_SMTP_CONF: case IMSG_P_SMTP_TLS: return {true, false};
	case IMSG_P_HANDLER_CHANNEL: return {true, true};
	case IMSG_P_AUTH: case IMSG_P_CLIENT_UID: return {true, false};
	default: return {};
	}
}

inline ImsgTypeInfo imsg_valid_parent_to_handler(uint32_t t)
{
	switch (t) {
	case IMSG_P_HANDLER_CONF: case IMSG_P_SMTP_CHANNEL: return {true, true};
	default: return {};
	}
}

inline ImsgTypeInfo imsg_valid_handler_to_smtp(uint32_t t)
{
	switch (t) {
	case IMSG_H_MAIL: case IMSG_H_RCPT: case IMSG_H_DATA_FAIL: case IMSG_H_COMMIT: return {true, false};
	case IMSG_H_DATA_OK: return {true, true};
	default: return {};
	}
}

inline ImsgTypeInfo imsg_valid_smtp_to_handler(uint32_t t)
{
	switch (t) {
	case IMSG_S_MAIL: case IMSG_S_RCPT: case IMSG_S_DATA: case IMSG_S_COMMIT: case IMSG_S_ABORT:
		return {true, false};
	case IMSG_S_MAIL_LOCAL: return {true, true};
	default: return {};
	}
}

inline ImsgTypeInfo imsg_valid_child_to_parent(uint32_t t)
{
	switch (t) {
	case IMSG_C_PEER_ERROR: return {true, false};
	case IMSG_C_PEER_ERROR_FD: return {true, true};
	default: return {};
	}
}

// The smtp process may also ask for an AUTH check, and whose a local
// TCP client is.
inline ImsgTypeInfo imsg_valid_smtp_to_parent(uint32_t t)
{
	switch (t) {
	case IMSG_S_AUTH: return {true, false};
	case IMSG_S_CLIENT_UID: return {true, true};
	default: return imsg_valid_child_to_parent(t);
	}
}

inline ImsgTypeInfo imsg_valid_command_request(uint32_t t)
{
	return t == IMSG_H_COMMAND_RUN ? ImsgTypeInfo{true, true} : ImsgTypeInfo{};
}

inline ImsgTypeInfo imsg_valid_command_reply(uint32_t t)
{
	switch (t) {
	case IMSG_P_COMMAND_INPUT: case IMSG_P_COMMAND_UNREAD: case IMSG_P_COMMAND_OUTPUT: return {true, true};
	case IMSG_P_COMMAND_EXIT: case IMSG_P_COMMAND_FAIL: return {true, false};
	default: return {};
	}
}

// The parent's end of a command's reply channel: the handler process
// only closes it (when it gives up on the command).
inline ImsgTypeInfo imsg_valid_key_request(uint32_t t)
{
	return t == IMSG_T_RSA_PRIV_ENC || t == IMSG_T_ECDSA_SIGN || t == IMSG_T_KEY_IN_USE ? ImsgTypeInfo{true, false}
										    : ImsgTypeInfo{};
}

inline ImsgTypeInfo imsg_valid_key_reply(uint32_t t)
{
	return t == IMSG_K_RESULT ? ImsgTypeInfo{true, false} : ImsgTypeInfo{};
}

inline ImsgTypeInfo imsg_valid_nothing(uint32_t)
{
	return {};
}

}  // namespace laim
