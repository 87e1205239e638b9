// An SMTP command line as laimd's session reads it (smtp/session.cpp):
// its verb and argument. Header-only, shared with sendmail -bs, whose
// relay must hold the client's input after the very lines that laimd
// runs as DATA (a text sent before the 354 ends the session).
#pragma once

#include <string_view>

#include "common/text.h"

namespace laim {

struct SmtpCommand {
	std::string_view verb;  // what comes before the first space
	std::string_view arg;   // what follows it; empty without one
};

// Splits a command line (its CRLF removed): the blanks (SP, HTAB) at its
// end go, then the verb ends at the first space. "DATA\t" is DATA;
// "DATA\tx" is the unknown verb "DATA\tx".
inline SmtpCommand smtp_command(std::string_view line)
{
	while (!line.empty() && (line.back() == ' ' || line.back() == '\t'))
		line.remove_suffix(1);
	size_t sp = line.find(' ');
	if (sp == std::string_view::npos)
		return {line, {}};
	return {line.substr(0, sp), line.substr(sp + 1)};
}

// Whether laimd runs the line as DATA (with an argument: a 501).
inline bool smtp_is_data(std::string_view line)
{
	std::string_view verb = smtp_command(line).verb;
	return iequal(verb, "DATA");
}

}  // namespace laim
