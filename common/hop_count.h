// The hop count of a message: how many Received: fields its header
// section holds (RFC 5321 6.3, "loop detection"). Each relay adds one, so
// a message that goes round a loop (a smarthost pointed back at laim, a
// filter that hands the mail to sendmail again) carries more at every
// pass; past hop_count_limit (laim.yml(5), as Postfix's) laim refuses it
// rather than circle for ever. Header-only: the smtp process counts DATA
// as it streams, the handler process an offline file whole.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace laim {

// Fed the message text in pieces of any size (line ends CRLF, as laim
// spools them), counts the fields named Received, in any case, at the
// start of a header line; a folded continuation line (starting with a
// space or tab) is no new field. The header section ends at the first
// empty line: nothing in the body counts. "Received :" (RFC 5322 4.5.3,
// space before the colon) counts too.
class HopCounter {
public:
	void feed(std::string_view text)
	{
		for (size_t i = 0; i < text.size() && state_ != State::Body; i++) {
			char c = text[i];
			switch (state_) {
			case State::LineStart:
				matched_ = 0;
				if (c == '\r')
					state_ = State::EmptyCR;
				else if (c == '\n')
					state_ = State::Body;
				else
					name(c);
				break;
			case State::EmptyCR:
				state_ = c == '\n' ? State::Body : State::Rest;
				break;
			case State::Name:
				name(c);
				break;
			case State::Rest: {
				// Skip to the line end in one step.
				const void* nl = memchr(text.data() + i, '\n', text.size() - i);
				if (!nl)
					return;
				i = size_t(static_cast<const char*>(nl) - text.data());
				state_ = State::LineStart;
				break;
			}
			case State::Body:
				break;
			}
		}
	}

	unsigned hops() const { return hops_; }

private:
	enum class State : uint8_t {
		LineStart,  // after LF
		EmptyCR,    // a CR opened the line: LF makes it the empty line
		Name,       // matching "received" (matched_ octets so far), then ':'
		Rest,       // the rest of a line: nothing to see up to its LF
		Body,       // after the empty line: done
	};
	static constexpr std::string_view field_ = "received";

	void name(char c)
	{
		state_ = State::Name;
		if (matched_ < field_.size()) {
			if ((c | 0x20) == field_[matched_])
				matched_++;
			else
				state_ = c == '\n' ? State::LineStart : State::Rest;
		} else if (c == ':') {
			hops_++;
			state_ = State::Rest;
		} else if (c != ' ' && c != '\t') {
			state_ = c == '\n' ? State::LineStart : State::Rest;
		}
	}

	State state_ = State::LineStart;
	size_t matched_ = 0;
	unsigned hops_ = 0;
};

// Why a message past the limit is refused, in the log and in failed/:
// "mail loop: 51 Received: headers, over hop_count_limit 50".
inline std::string hop_count_fault(unsigned hops, unsigned limit)
{
	return "mail loop: " + std::to_string(hops) + " Received: headers, over hop_count_limit " +
	       std::to_string(limit);
}

}  // namespace laim
