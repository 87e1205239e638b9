// Editing a message's header block for a handler that passes the message
// on changed (smarthost's rewrite_from, forward's Subject: and From:):
// the fields are located in the raw bytes, one is replaced or added, and
// every other byte stays as it was.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace laim {

// One header field: where it starts and ends in the message (continuation
// lines and line end included), and its name as written.
struct HeaderField {
	size_t begin, end;
	std::string_view name;
};

// The fields of msg's header block, which ends at the first empty line
// (or with the message); *end gets the offset of that line.
std::vector<HeaderField> header_fields(std::string_view msg, size_t* end);

// True when a field's name is lower (given in lower case), in any case.
bool header_name_is(std::string_view name, std::string_view lower);

// A field's value unfolded (RFC 5322 2.2.3: its line breaks removed) and
// without the white space around it; raw is what follows the colon.
std::string header_unfold(std::string_view raw);

// msg with "From: from": in place of its From:, whose value is kept in
// X-Original-From: and, when the message has no Reply-To:, in one; or
// added when it has none. With only_when_missing, a message that has a
// From: is left alone. False when nothing changes.
bool rewrite_from(std::string_view msg, const std::string& from, bool only_when_missing, std::string* out);

}  // namespace laim
