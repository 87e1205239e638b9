// The message as the sendmail command submits it; see MessagePreparer in
// sendmail.h. The header block is parsed only as far as RFC 5322 2.2
// needs (field name, colon, folded lines); addresses go to GMime.
#include <gmime/gmime.h>
#include <sysexits.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "common/text.h"
#include "sendmail/sendmail.h"

namespace laim::sendmail {

namespace {

constexpr std::string_view CRLF = "\r\n";

// RFC 5322 2.2: a field name is printable US-ASCII but ':', then the
// colon (obsolete syntax, 4.5.8, allows blanks before it).
std::optional<std::string_view> field_name(std::string_view line)
{
	size_t i = 0;
	while (i < line.size() && line[i] >= 33 && line[i] <= 126 && line[i] != ':')
		i++;
	if (i == 0)
		return std::nullopt;
	size_t j = i;
	while (j < line.size() && (line[j] == ' ' || line[j] == '\t'))
		j++;
	if (j == line.size() || line[j] != ':')
		return std::nullopt;
	return line.substr(0, i);
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// A header's value with its folding undone (RFC 5322 2.2.3).
std::string unfolded_value(const std::string& text)
{
	std::string v;
	size_t colon = text.find(':');
	for (size_t i = colon + 1; i < text.size(); i++)
		if (text[i] != '\r' && text[i] != '\n')
			v += text[i];
	return v;
}

// Whether a field is one of a re-sending's (RFC 5322 3.6.6): Resent-*.
bool resent_field(std::string_view name)
{
	return name.size() > 7 && iequal(name.substr(0, 7), "Resent-");
}

// Whether a field names recipients: To, Cc or Bcc, or with resent their
// Resent- forms (RFC 5322 3.6.6).
bool recipient_field(std::string_view name, bool resent)
{
	if (resent) {
		if (!resent_field(name))
			return false;
		name.remove_prefix(7);
	}
	return iequal(name, "To") || iequal(name, "Cc") || iequal(name, "Bcc");
}

// Whether a field is left out of the message: Bcc and Resent-Bcc (with
// or without -t: mailx -b puts the addresses on the command line and
// leaves their removal to the MTA), and Return-Path and Content-Length,
// which only the delivery may write (RFC 5321 4.4; a false one would
// stand beside the real Return-Path, or cut the message short in a
// mailbox reader that trusts it), as Postfix's cleanup removes them.
bool removed_field(std::string_view name)
{
	return iequal(name, "Bcc") || iequal(name, "Resent-Bcc") || iequal(name, "Return-Path") ||
	       iequal(name, "Content-Length");
}

}  // namespace

std::string rfc5322_date(time_t t)
{
	static const char* const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char* const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	localtime_r(&t, &tm);
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	off = std::labs(off);
	char buf[64];
	snprintf(buf, sizeof buf, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
		 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
	return buf;
}

std::string gecos_name(std::string_view gecos, std::string_view login)
{
	std::string_view full = gecos.substr(0, gecos.find(','));
	std::string name;
	for (char c : full) {
		if (c == '&' && !login.empty()) {
			name += static_cast<char>(std::toupper(static_cast<unsigned char>(login[0])));
			name += login.substr(1);
		} else {
			name += c;
		}
	}
	size_t b = name.find_first_not_of(" \t");
	if (b == std::string::npos)
		return "";
	return name.substr(b, name.find_last_not_of(" \t") - b + 1);
}

std::string mailbox_field(const std::string& field, const std::string& name, const std::string& addr)
{
	if (name.empty())
		return field + ": " + addr + std::string(CRLF);
	gmime_init_once();
	// A name that is not UTF-8 is taken as Latin-1 (an old GECOS field or
	// terminal), where every byte is a character, so that it is encoded
	// like any other, not written raw.
	std::string utf8 = name;
	if (!g_utf8_validate(name.data(), static_cast<gssize>(name.size()), nullptr)) {
		gchar* s = g_convert(name.data(), static_cast<gssize>(name.size()), "UTF-8", "ISO-8859-1", nullptr,
				     nullptr, nullptr);
		if (s)
			utf8 = s;
		g_free(s);
	}
	// GMime writes the field as it writes a header, folded (a long -F
	// name made a line past RFC 5322's 998 octets, which laimd's TCP
	// listener and other MTAs refuse), with CRLF line ends.
	InternetAddressList* list = internet_address_list_new();
	InternetAddress* ia = internet_address_mailbox_new(utf8.c_str(), addr.c_str());
	internet_address_list_add(list, ia);
	GMimeFormatOptions* options = g_mime_format_options_new();
	g_mime_format_options_set_newline_format(options, GMIME_NEWLINE_FORMAT_DOS);
	GString* str = g_string_new((field + ": ").c_str());
	internet_address_list_encode(list, options, str);
	std::string out(str->str, str->len);
	g_string_free(str, TRUE);
	g_mime_format_options_free(options);
	g_object_unref(ia);
	g_object_unref(list);
	return out;
}

MessagePreparer::MessagePreparer(bool ignore_dots, bool extract, HeaderFacts facts, Sink sink)
	: ignore_dots_(ignore_dots), extract_(extract), facts_(std::move(facts)), sink_(std::move(sink))
{
}

bool MessagePreparer::feed(std::string_view data)
{
	size_t i = 0;
	while (i < data.size() && !ended_) {
		char c = data[i];
		if (c == '\r') {
			i++;
			pending_crs_++;
			continue;
		}
		if (pending_crs_ > 0 || c == '\n') {
			// A run of CRs before a LF is one line end (CR CR LF: a line
			// end converted twice); without the LF each CR is one (a bare
			// CR would be refused by laimd: no SMTP smuggling).
			size_t ends = c == '\n' ? 1 : pending_crs_;
			if (c == '\n')
				i++;
			pending_crs_ = 0;
			while (ends-- > 0 && !ended_)
				end_line();
			continue;
		}
		if (c == '\0') {  // laimd refuses NUL in DATA: dropped, so the rest gets through
			i++;
			continue;
		}
		size_t j = data.find_first_of(std::string_view("\r\n\0", 3), i);
		if (j == std::string_view::npos)
			j = data.size();
		text(data.substr(i, j - i));
		i = j;
	}
	return !ended_;
}

// Bytes inside a line.
void MessagePreparer::text(std::string_view s)
{
	if (in_headers_) {
		line_ += s;
		if (header_bytes_ + line_.size() <= MAX_HEADER)
			return;
		// Only a header block that long is refused: a first line that
		// is no header at all (a body without headers) is the body.
		bool header = (is_blank(line_[0]) && !headers_.empty()) || field_name(line_);
		if (header)
			throw Failure(EX_DATAERR, "header block larger than " + std::to_string(MAX_HEADER) + " bytes");
		first_line_ = false;
		end_headers(true);
		line_start_ = false;
		emit(line_);
		line_.clear();
		return;
	}
	if (s.empty())
		return;
	if (line_start_) {
		line_start_ = false;
		if (!ignore_dots_ && s[0] == '.') {
			dot_pending_ = true;
			s.remove_prefix(1);
			if (s.empty())
				return;
		}
	}
	if (dot_pending_) {
		dot_pending_ = false;
		emit(".");
	}
	emit(s);
}

void MessagePreparer::end_line()
{
	if (in_headers_) {
		std::string line;
		line.swap(line_);
		header_line(line);
		return;
	}
	if (dot_pending_) {
		// A line holding a single dot ends the input (sendmail without -i).
		dot_pending_ = false;
		ended_ = true;
		return;
	}
	emit(CRLF);
	line_start_ = true;
}

// One complete line of the header block.
void MessagePreparer::header_line(const std::string& line)
{
	if (!ignore_dots_ && line == ".") {
		ended_ = true;
		return;
	}
	std::optional<std::string_view> name = field_name(line);
	if (first_line_) {
		first_line_ = false;
		// A Unix mailbox "From " line is not part of the message.
		if (line.compare(0, 5, "From ") == 0 && !name)
			return;
	}
	header_bytes_ += line.size() + 2;
	if (header_bytes_ > MAX_HEADER)
		throw Failure(EX_DATAERR, "header block larger than " + std::to_string(MAX_HEADER) + " bytes");
	if (line.empty()) {
		end_headers(true);
		return;
	}
	if (is_blank(line[0]) && !headers_.empty()) {
		headers_.back().text.append(line).append(CRLF);
		return;
	}
	if (name) {
		headers_.push_back({std::string(*name), line + std::string(CRLF)});
		return;
	}
	// Not a header field: the body starts here, without the empty line
	// RFC 5322 2.1 requires; it is supplied.
	end_headers(true);
	emit(line);
	emit(CRLF);
}

// The header block is complete: collect -t recipients, drop the fields
// removed_field() names, add the missing
// fields (RFC 5322 3.6: Date and From are required, Message-ID should be
// there), then the empty line when a body follows. A message being
// re-sent (a Resent-To, -Cc or -Bcc field) goes to its Resent- recipients
// only, not to the original ones again, as with Postfix, Exim and
// sendmail 8. A message with Resent- fields gets the Resent-Date and
// Resent-From that RFC 5322 3.6.6 requires of them, when missing, before
// the first of them (their block), as Postfix adds them.
void MessagePreparer::end_headers(bool separator)
{
	in_headers_ = false;
	auto any = [this](auto pred) { return std::any_of(headers_.begin(), headers_.end(), pred); };
	bool resent = any([](const Header& h) { return recipient_field(h.name, true); });
	bool resent_date = any([](const Header& h) { return iequal(h.name, "Resent-Date"); });
	bool resent_from = any([](const Header& h) { return iequal(h.name, "Resent-From"); });
	bool resent_block = false;  // the first Resent- field was met
	bool has_date = false, has_from = false, has_id = false;
	for (const Header& h : headers_) {
		if (!resent_block && resent_field(h.name)) {
			resent_block = true;
			if (!resent_date)
				emit("Resent-Date: " + rfc5322_date(facts_.now) + std::string(CRLF));
			if (!resent_from && !facts_.from_address.empty())  // none known: left out
				emit(mailbox_field("Resent-From", facts_.from_name, facts_.from_address));
		}
		if (extract_ && recipient_field(h.name, resent))
			add_address_list(unfolded_value(h.text), facts_.domain, h.name + ": header", EX_DATAERR,
					 recipients_);
		has_date |= iequal(h.name, "Date");
		has_from |= iequal(h.name, "From");
		has_id |= iequal(h.name, "Message-ID");
		if (!removed_field(h.name))
			emit(h.text);
	}
	headers_.clear();
	if (!has_date)
		emit("Date: " + rfc5322_date(facts_.now) + std::string(CRLF));
	if (!has_from && facts_.from_address.empty())
		throw Failure(EX_NOUSER, facts_.from_error);
	if (!has_from)
		emit(mailbox_field("From", facts_.from_name, facts_.from_address));
	if (!has_id)
		emit("Message-ID: <" + std::to_string(facts_.now) + "." + std::to_string(facts_.pid) + "." +
		     facts_.random + "@" + facts_.domain + ">" + std::string(CRLF));
	if (separator)
		emit(CRLF);
}

void MessagePreparer::finish()
{
	for (; pending_crs_ > 0 && !ended_; pending_crs_--)
		end_line();
	if (in_headers_) {
		if (!ended_ && !line_.empty()) {
			std::string line;
			line.swap(line_);
			header_line(line);
		}
		if (in_headers_)
			end_headers(false);
	} else if (!ended_) {
		if (dot_pending_)
			dot_pending_ = false;  // a last "." without its line end ends the input too
		else if (!line_start_)
			emit(CRLF);  // the message ends with a complete line
	}
	ended_ = true;
	flush();
}

void MessagePreparer::emit(std::string_view s)
{
	if (!eight_bit_)
		for (char c : s)
			if (static_cast<unsigned char>(c) >= 0x80) {
				eight_bit_ = true;
				break;
			}
	size_ += s.size();
	out_ += s;
	if (out_.size() >= 64 * 1024)
		flush();
}

void MessagePreparer::flush()
{
	if (!out_.empty())
		sink_(out_);
	out_.clear();
}

}  // namespace laim::sendmail
