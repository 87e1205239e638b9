// The handler process's end of the parent's mailbox service (see
// parent/mailbox.cpp): delivery threads ask for a user's mailbox and get
// an open descriptor, locked the way Debian's mail readers lock.
#pragma once

#include <cstdint>
#include <string>

#include "common/fd.h"
#include "handler/api/handler.h"

namespace laim {

// Called once in the handler process, before any delivery.
void mailbox_client_init(UniqueFd chan);

// A granted mailbox: fd is open for appending and holds the fcntl lock;
// the parent holds the dotlock until the lease ends (on destruction, after
// fd is closed).
class MailboxLease {
 public:
	MailboxLease() = default;
	MailboxLease(const MailboxLease&) = delete;
	MailboxLease& operator=(const MailboxLease&) = delete;
	~MailboxLease();

	UniqueFd fd;
	uint32_t id = 0;
};

// Asks for USER's mailbox: delivered with *lease set, or the failure to
// report (no such user is permanent; a mail reader's lock is temporary,
// and is not waited for).
Result mailbox_open(const std::string& user, MailboxLease* lease);

}  // namespace laim
