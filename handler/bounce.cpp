#include "handler/bounce.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "common/clock.h"
#include "common/text.h"
#include "handler/api/command.h"

namespace laim {

namespace {

constexpr const char* NL = "\r\n";

// A failure line taken apart: Queue's "<RCPT> handler NAME: REST" or
// "<RCPT>: no route", an offline import's "<RCPT>: CODE WHY".
struct Failure {
	std::string rcpt, handler, status, diagnostic;
};

// A line of text for a header field or a report line: no CR, LF or NUL.
std::string field_text(std::string_view s)
{
	std::string out = one_line(std::string(s));
	std::replace(out.begin(), out.end(), '\0', ' ');
	return out;
}

// A failure line, by the forms above. The status is the line's code; an
// expired recipient's is 4.4.7 (delivery time expired), else 5.0.0.
Failure parse_failure(std::string_view line)
{
	constexpr auto npos = std::string_view::npos;
	Failure f{"", "", "5.0.0", field_text(line)};
	if (line.empty() || line[0] != '<')
		return f;
	size_t close = line.find("> handler ");
	size_t colon = close == npos ? npos : line.find(": ", close + 10);
	if (colon != npos)  // <RCPT> handler NAME: REST
		f.handler = field_text(line.substr(close + 10, colon - close - 10));
	else if ((close = line.find(">: ")) != npos)  // <RCPT>: REST
		colon = close + 1;
	else
		return f;
	f.rcpt = field_text(line.substr(1, close - 1));
	std::string rest(line.substr(colon + 2)), text;
	if (std::string code = leading_code(rest, &text); !code.empty()) {
		f.status = code;
		rest = text;
	} else if (rest.starts_with("expired after ")) {
		f.status = "4.4.7";
	}
	f.diagnostic = field_text(rest);
	return f;
}

// The message's header section, up to its empty line, cut at a line end
// to at most BOUNCE_HEADERS_MAX bytes, with CRLF line ends.
std::string header_section(std::string_view message)
{
	std::string out;
	size_t pos = 0;
	while (pos < message.size()) {
		size_t nl = message.find('\n', pos);
		size_t end = nl == std::string_view::npos ? message.size() : nl;
		std::string_view line = message.substr(pos, end - pos);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		if (line.empty() || out.size() + line.size() + 2 > BOUNCE_HEADERS_MAX)
			break;
		out.append(line).append(NL);
		pos = end + 1;
	}
	return out;
}

// RFC 3464's diagnostic-type: "smtp" for a peer's SMTP or LMTP reply,
// which the handler's reason starts with ("550 5.1.1 ..."), else laim's.
const char* diagnostic_type(std::string_view d)
{
	bool reply = d.size() > 4 && d[0] >= '2' && d[0] <= '5' && isdigit((unsigned char)d[1]) &&
		     isdigit((unsigned char)d[2]) && (d[3] == ' ' || d[3] == '-');
	return reply ? "smtp" : "X-laim";
}

bool eight_bit(std::string_view s)
{
	for (unsigned char c : s)
		if (c >= 0x80)
			return true;
	return false;
}

}  // namespace

bool wants_bounce(const Envelope& env)
{
	return !env.sender.empty() && env.instance.empty() && is_local_address(env.sender);
}

std::string bounce_message(const Envelope& env, const std::vector<std::string>& failures,
			   std::string_view message, const std::string& hostname, time_t now)
{
	std::vector<Failure> parsed;
	for (const std::string& line : failures)
		parsed.push_back(parse_failure(line));
	std::string boundary = env.id + "." + std::to_string(now) + "/" + hostname;
	std::string headers = header_section(message);
	std::string to = field_text(env.sender);  // a bare local part ("root") gets this host's name
	if (to.find('@') == std::string::npos)
		to += "@" + hostname;
	std::ostringstream m;
	m << "From: Mail Delivery System <MAILER-DAEMON@" << hostname << ">" << NL
	  << "To: <" << to << ">" << NL
	  << "Subject: Undelivered Mail Returned to Sender" << NL
	  << "Date: " << local_time(now, RFC5322_DATE) << NL
	  << "Message-ID: <bounce." << env.id << "." << now << "@" << hostname << ">" << NL
	  << "Auto-Submitted: auto-replied" << NL
	  << "MIME-Version: 1.0" << NL
	  << "Content-Type: multipart/report; report-type=delivery-status;" << NL
	  << "\tboundary=\"" << boundary << "\"" << NL << NL
	  << "This is a MIME-encapsulated message." << NL << NL
	  << "--" << boundary << NL
	  << "Content-Type: text/plain; charset=utf-8" << NL
	  << "Content-Transfer-Encoding: 8bit" << NL << NL
	  << "This is laim on " << hostname << "." << NL << NL
	  << "Your message could not be delivered to one or more of its recipients," << NL
	  << "and laim has given up on it. The administrator finds it as " << env.id << NL
	  << "in the spool's failed/ directory (laimctl show failed)." << NL << NL;
	for (const Failure& f : parsed)
		if (f.rcpt.empty())
			m << f.diagnostic << NL;
		else
			m << "<" << f.rcpt << ">: " << f.diagnostic
			  << (f.handler.empty() ? "" : " (handler " + f.handler + ")") << NL;
	m << NL << "--" << boundary << NL
	  << "Content-Type: message/delivery-status" << NL << NL
	  << "Reporting-MTA: dns; " << hostname << NL
	  << "X-Laim-Queue-ID: " << env.id << NL
	  << "Arrival-Date: " << local_time(env.arrival, RFC5322_DATE) << NL;
	for (const Failure& f : parsed) {
		if (f.rcpt.empty())
			continue;
		m << NL << "Final-Recipient: rfc822; " << f.rcpt << NL
		  << "Action: failed" << NL
		  << "Status: " << f.status << NL
		  << "Diagnostic-Code: " << diagnostic_type(f.diagnostic) << "; " << f.diagnostic << NL;
	}
	m << NL << "--" << boundary << NL
	  << "Content-Type: text/rfc822-headers" << NL;
	if (eight_bit(headers))
		m << "Content-Transfer-Encoding: 8bit" << NL;
	m << NL << headers << NL << "--" << boundary << "--" << NL;
	return m.str();
}

}  // namespace laim
