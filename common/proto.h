// The imsg vocabulary between laim's three processes. Each channel accepts
// only its own types (validators below); payloads are ImsgWriter fields in
// the order given.
#pragma once

#include <cstdint>

#include "common/imsg.h"

namespace laim {

enum ImsgType : uint32_t {
	// parent -> smtp
	IMSG_P_SMTP_CONF = 1,     // SmtpConf fields (see smtp/smtp.cpp)
	IMSG_P_HANDLER_CHANNEL,   // fd: a fresh smtp<->handler channel
	// parent -> handler
	IMSG_P_HANDLER_CONF,      // str file; fd: memfd holding the config text
	IMSG_P_SMTP_CHANNEL,      // fd: a fresh smtp<->handler channel

	// smtp -> handler; peerid = session id
	IMSG_S_MAIL = 100,        // str sender, str helo, str client, u32 has_uid, u32 uid
	IMSG_S_RCPT,              // str rcpt
	IMSG_S_DATA,              // (empty)
	IMSG_S_COMMIT,            // u64 size written after the header
	IMSG_S_ABORT,             // (empty)

	// handler -> smtp; peerid = session id; status = BackendStatus value
	IMSG_H_MAIL = 200,        // u32 status
	IMSG_H_RCPT,              // u32 status
	IMSG_H_DATA_OK,           // str queue id, str login name of the uid ("" if none); fd: the spool file
	IMSG_H_DATA_FAIL,         // u32 status
	IMSG_H_COMMIT,            // u32 status

	// child -> parent
	IMSG_C_PEER_ERROR = 300,  // str what: the sibling broke the protocol; end it

	// handler -> parent, on the mailbox service channel; peerid = lease id
	IMSG_H_MAILBOX_OPEN = 400,  // str user: open and lock mail_dir/USER
	IMSG_H_MAILBOX_DONE,        // (empty): the lease's fd is closed, drop its dotlock
	// parent -> handler, on the mailbox service channel; peerid = lease id
	IMSG_P_MAILBOX_OK,          // fd: the mailbox, O_APPEND, fcntl- and dot-locked
	IMSG_P_MAILBOX_FAIL,        // u32 MailboxStatus, str why
};

// Why the parent did not hand out a mailbox (IMSG_P_MAILBOX_FAIL).
enum class MailboxStatus : uint32_t {
	Busy,       // locked by a mail reader: temporary, and not worth a log line
	TempFail,   // worth retrying: an I/O error, or a link or wrong owner the admin can fix
	PermFail,   // never deliverable: no such user, or root aliased elsewhere
};

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
};

// Channel validators: the types each end of each channel accepts, and
// whether each carries an fd. A child never accepts a parent's message from
// its sibling, nor the reverse.
inline ImsgTypeInfo imsg_valid_parent_to_smtp(uint32_t t)
{
	switch (t) {
	case IMSG_P_SMTP_CONF: return {true, false};
	case IMSG_P_HANDLER_CHANNEL: return {true, true};
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
	default: return {};
	}
}

inline ImsgTypeInfo imsg_valid_child_to_parent(uint32_t t)
{
	return t == IMSG_C_PEER_ERROR ? ImsgTypeInfo{true, false} : ImsgTypeInfo{};
}

inline ImsgTypeInfo imsg_valid_mailbox_request(uint32_t t)
{
	return t == IMSG_H_MAILBOX_OPEN || t == IMSG_H_MAILBOX_DONE ? ImsgTypeInfo{true, false} : ImsgTypeInfo{};
}

inline ImsgTypeInfo imsg_valid_mailbox_reply(uint32_t t)
{
	switch (t) {
	case IMSG_P_MAILBOX_OK: return {true, true};
	case IMSG_P_MAILBOX_FAIL: return {true, false};
	default: return {};
	}
}

}  // namespace laim
