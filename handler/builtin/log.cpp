// log: one line per message, for an audit trail or while testing routes:
//   ID: handler=NAME, from=<SENDER>, to=<R1>,<R2>, size=N, subject=SUBJECT
// The subject is decoded (RFC 2047) and made safe to log.
//
//   handlers:
//     audit:
//       type: log
#include "common/log.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

class LogHandler : public Handler {
 public:
	explicit LogHandler(HandlerOptions& o) : name_(o.name()) {}

	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::string to;
		for (const std::string& r : env.recipients)
			to += (to.empty() ? "<" : ",<") + r + ">";
		log_info("%s: handler=%s, from=<%s>, to=%s, size=%zu, subject=%s", env.id.c_str(),
			 name_.c_str(), env.sender.c_str(), to.c_str(), msg.size(),
			 printable_text(msg.subject()).c_str());
		return Result::delivered();
	}

 private:
	std::string name_;
};

LAIM_HANDLER("log", LogHandler);

}  // namespace

}  // namespace laim
