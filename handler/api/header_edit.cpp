// Editing a message's header block byte for byte; see header_edit.h.
#include "handler/api/header_edit.h"

#include <algorithm>

#include "common/text.h"

namespace laim {

namespace {

// The header field name of a line ("From" of "From: x"), or "" for a
// continuation line.
std::string_view field_name(std::string_view line)
{
	size_t colon = line.find(':');
	if (line.empty() || line[0] == ' ' || line[0] == '\t' || colon == std::string_view::npos)
		return {};
	std::string_view name = line.substr(0, colon);
	while (!name.empty() && (name.back() == ' ' || name.back() == '\t'))
		name.remove_suffix(1);
	return name;
}

}  // namespace

// Each CRLF goes (a fold's CRLF is followed by the white space that
// stays), then the white space at either end.
std::string header_unfold(std::string_view raw)
{
	std::string out;
	out.reserve(raw.size());
	for (char c : raw)
		if (c != '\r' && c != '\n')
			out += c;
	size_t start = out.find_first_not_of(" \t");
	if (start == std::string::npos)
		return {};
	size_t end = out.find_last_not_of(" \t");
	return out.substr(start, end - start + 1);
}

bool header_name_is(std::string_view name, std::string_view lower)
{
	return iequal(name, lower);
}

std::vector<HeaderField> header_fields(std::string_view msg, size_t* end)
{
	std::vector<HeaderField> fields;
	size_t pos = 0;
	while (pos < msg.size()) {
		size_t nl = msg.find('\n', pos);
		size_t next = nl == std::string_view::npos ? msg.size() : nl + 1;
		std::string_view line = msg.substr(pos, next - pos);
		if (line == "\r\n" || line == "\n")
			break;
		if ((line[0] == ' ' || line[0] == '\t') && !fields.empty())
			fields.back().end = next;
		else
			fields.push_back({pos, next, field_name(line)});
		pos = next;
	}
	*end = pos;
	return fields;
}

bool rewrite_from(std::string_view msg, const std::string& from, bool only_when_missing, std::string* out)
{
	size_t end = 0;
	std::vector<HeaderField> fields = header_fields(msg, &end);
	auto named = [](const char* n) { return [n](const HeaderField& f) { return header_name_is(f.name, n); }; };
	bool has_from = std::any_of(fields.begin(), fields.end(), named("from"));
	bool has_reply_to = std::any_of(fields.begin(), fields.end(), named("reply-to"));
	if (only_when_missing && has_from)
		return false;
	out->clear();
	out->reserve(msg.size() + 1024);  // one copy, even of a large message
	std::string new_from = "From: " + from + "\r\n";
	bool first = true;
	size_t copied = 0;
	for (const HeaderField& f : fields) {
		if (!header_name_is(f.name, "from"))
			continue;
		std::string_view value = msg.substr(f.begin, f.end - f.begin).substr(f.name.size());
		value.remove_prefix(value.find(':') + 1);
		out->append(msg.substr(copied, f.begin - copied));
		if (first)
			out->append(new_from);
		if (first && !has_reply_to)
			out->append("Reply-To:").append(value);
		out->append("X-Original-From:").append(value);  // a second From: too: it goes
		first = false;
		copied = f.end;
	}
	out->append(msg.substr(copied, end - copied));
	if (!has_from)
		out->append(new_from);
	out->append(msg.substr(end));
	return true;
}

}  // namespace laim
