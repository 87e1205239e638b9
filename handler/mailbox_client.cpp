// Mailbox requests from delivery threads to the root parent: one request
// at a time, answered at once (the parent never waits for a lock).
#include "handler/mailbox_client.h"

#include <cstdint>
#include <memory>
#include <mutex>

#include "common/imsg.h"
#include "common/proto.h"

namespace laim {

namespace {

constexpr int ANSWER_TIMEOUT_MS = 10000;

std::mutex service_mu;
std::unique_ptr<ImsgChannel> service;  // guarded by service_mu
uint32_t next_id = 1;

// The parent's answer to request id. A late answer to an earlier request
// that timed out is handed back at once, so its dotlock goes too.
bool await_answer(uint32_t id, Imsg& m)
{
	int64_t deadline = monotonic_ms() + ANSWER_TIMEOUT_MS;
	ImsgError err = ImsgError::None;
	while (service->read_wait(m, deadline, &err) == ImsgChannel::Read::Message) {
		if (m.peerid == id)
			return true;
		if (m.type == IMSG_P_MAILBOX_OK)
			service->compose(IMSG_H_MAILBOX_DONE, m.peerid, "");
	}
	return false;
}

}  // namespace

void mailbox_client_init(UniqueFd chan)
{
	std::lock_guard<std::mutex> hold(service_mu);
	service = std::make_unique<ImsgChannel>(std::move(chan), imsg_valid_mailbox_reply);
}

MailboxLease::~MailboxLease()
{
	if (!id)
		return;
	fd.reset();  // the fcntl lock first, then the dotlock: the reverse of taking them
	std::lock_guard<std::mutex> hold(service_mu);
	if (service) {
		service->compose(IMSG_H_MAILBOX_DONE, id, "");
		service->flush_wait(ANSWER_TIMEOUT_MS);
	}
}

// One request and its answer. A mailbox a reader holds locked is a
// temporary failure at once: waiting here would keep the instance busy
// for everyone else's mail.
Result mailbox_open(const std::string& user, MailboxLease* lease)
{
	std::lock_guard<std::mutex> hold(service_mu);
	if (!service)
		return Result::tempfail("mailbox service unavailable");
	uint32_t id = next_id;
	next_id = next_id == UINT32_MAX ? 1 : next_id + 1;  // never 0: 0 is "no lease"
	service->compose(IMSG_H_MAILBOX_OPEN, id, encode(MailboxOpenMsg{user}));
	Imsg m;
	if (!service->flush_wait(ANSWER_TIMEOUT_MS) || !await_answer(id, m))
		return Result::tempfail("mailbox service: no answer from the parent process");
	NoPayload granted;
	if (m.type == IMSG_P_MAILBOX_OK && decode(m.data, granted)) {
		lease->fd = std::move(m.fd);
		lease->id = id;
		return Result::delivered();
	}
	MailboxFailMsg refused;
	if (m.type != IMSG_P_MAILBOX_FAIL || !decode(m.data, refused))
		return Result::tempfail("mailbox service: malformed answer");
	if (refused.status == MailboxStatus::PermFail)
		return Result::permfail(refused.why);
	return Result::tempfail(refused.why);
}

}  // namespace laim
