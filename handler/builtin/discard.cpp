// discard: accepts every message and drops it, like Postfix's discard(8).
// For recipients whose mail nobody wants (noreply@, a noisy cron job).
//
//   handlers:
//     null:
//       type: discard
#include "handler/api/handler.h"

namespace laim {

namespace {

class DiscardHandler : public Handler {
 public:
	explicit DiscardHandler(HandlerOptions&) {}

	Results deliver(const Envelope&, const Message&) override { return Result::delivered(); }
};

LAIM_HANDLER("discard", DiscardHandler);

}  // namespace

}  // namespace laim
