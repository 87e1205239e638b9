// Non-delivery notices: when laim gives a message up (a permanent
// failure, or max_queue_age), a local sender gets a delivery status
// notification (RFC 3464) from the null sender, as RFC 5321 6.1 asks of
// a server that accepted a message it cannot deliver. Only local senders
// (no domain, or one of this host's names): a notice to a remote sender
// would leave this host, and to a forged one it is backscatter.
// The notice itself has the null sender, so no failure of it is ever
// answered (doc/architecture.md, "The queue").
#pragma once

#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "handler/api/handler.h"

namespace laim {

// Whether a given-up message gets a notice: a sender that is local, not
// the null sender, and not one of laim's own notices.
bool wants_bounce(const Envelope& env);

// The notice, CRLF line ends: a text part saying what failed, a
// message/delivery-status part (a Final-Recipient, Action: failed,
// Status and Diagnostic-Code per failure) and the original message's
// header section (text/rfc822-headers, at most BOUNCE_HEADERS_MAX bytes,
// cut at a line end). failures are Queue's lines, "<RCPT> handler NAME:
// [CODE ]REASON" or "<RCPT>: no route", or an offline import's
// "<RCPT>: CODE WHY"; message is the message as received.
std::string bounce_message(const Envelope& env, const std::vector<std::string>& failures,
			   std::string_view message, const std::string& hostname, time_t now);
constexpr size_t BOUNCE_HEADERS_MAX = 32 * 1024;

}  // namespace laim
