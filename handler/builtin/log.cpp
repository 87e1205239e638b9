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

// Replaces what would corrupt a log line or a terminal: C0 controls, DEL
// and the C1 controls U+0080..U+009F (UTF-8 C2 80..C2 9F) become '?'.
std::string printable(std::string_view s)
{
	std::string out;
	out.reserve(s.size());
	for (size_t i = 0; i < s.size(); i++) {
		unsigned char c = s[i];
		if (c < 0x20 || c == 0x7f) {
			out += '?';
		} else if (c == 0xc2 && i + 1 < s.size() && (unsigned char)s[i + 1] >= 0x80 &&
			   (unsigned char)s[i + 1] <= 0x9f) {
			out += '?';
			i++;
		} else {
			out += (char)c;
		}
	}
	return out;
}

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
			 printable(msg.subject()).c_str());
		return Result::delivered();
	}

 private:
	std::string name_;
};

LAIM_HANDLER("log", LogHandler);

}  // namespace

}  // namespace laim
