// The sendmail(8) command line, parsed by flag, getopt style: flags may be
// grouped ("-ti"), an option's argument may be attached ("-fuser") or the
// next argument ("-f user"), options may follow operands, and "--" ends
// them. The accepted set is what cron, sudo, mailx, mutt, PHP, git and
// the Debian tools pass, and what Postfix's sendmail(1) accepts and
// ignores; other flags are refused by name.
#include <sysexits.h>

#include <cstdio>
#include <string>

#include "common/log.h"
#include "sendmail/sendmail.h"

namespace laim::sendmail {

namespace {

// Options that take an argument; every other known option is a flag.
//   A m|c      sendmail 8's configuration file (-Am, -Ac): ignored
//   B type     body type (-B8BITMIME): ignored, the body is sent as it is
//   b mode     -bm deliver, -bs SMTP session, -bp queue, -bi aliases
//   e x        error reporting mode (-em, -ep...): ignored
//   F name     full name for the From: header
//   f, r addr  envelope sender
//   h hops     hop count (-h 17): ignored
//   L tag      syslog tag: ignored
//   N dsn      DSN notify (-Nnever): ignored
//   o opt      -oi as -i; the others (-oem, -odi, -odb...) ignored
//   R ret      DSN return (-Rhdrs): ignored
//   V envid    DSN envelope id: ignored
//   X file     sendmail 8's traffic log: ignored, as Postfix documents
bool takes_argument(char c)
{
	switch (c) {
	case 'A': case 'B': case 'b': case 'e': case 'F': case 'f': case 'h':
	case 'L': case 'N': case 'o': case 'R': case 'r': case 'V': case 'X':
		return true;
	default:
		return false;
	}
}

std::string_view basename_of(std::string_view path)
{
	size_t slash = path.rfind('/');
	return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// A CR or LF in an envelope value or a header the command writes could
// forge SMTP commands or header fields: refused outright.
void refuse_line_breaks(std::string_view value, const std::string& what)
{
	if (value.find_first_of("\r\n") != std::string_view::npos)
		throw Failure(EX_USAGE, "CR or LF in " + what + " refused");
}

void set_mode(Options& o, std::string_view mode)
{
	if (mode == "m")
		o.mode = Mode::Deliver;
	else if (mode == "s")
		o.mode = Mode::SmtpRelay;
	else if (mode == "p")
		o.mode = Mode::ListQueue;
	else if (mode == "i")
		o.mode = Mode::NewAliases;
	else
		throw Failure(EX_USAGE, "unsupported option -b" + std::string(mode));
}

// Applies option c with its argument.
void apply(Options& o, char c, const std::string& arg)
{
	switch (c) {
	case 'A':
		if (arg != "m" && arg != "c")
			throw Failure(EX_USAGE, "unsupported option -A" + arg);
		break;
	case 'b':
		set_mode(o, arg);
		break;
	case 'F':
		refuse_line_breaks(arg, "the full name (-F)");
		o.full_name = arg;
		break;
	case 'f':
	case 'r':
		refuse_line_breaks(arg, "the sender (-" + std::string(1, c) + ")");
		o.sender = arg;
		break;
	case 'o':
		if (arg == "i")
			o.ignore_dots = true;
		break;
	default:  // B, e, h, L, N, R, V, X
		break;
	}
}

// Parses one argument that starts with '-' (not "--"); may take the next
// argument as an option's value (advancing i).
void parse_cluster(Options& o, const std::vector<std::string>& args, size_t& i)
{
	const std::string& a = args[i];
	for (size_t j = 1; j < a.size(); j++) {
		char c = a[j];
		if (takes_argument(c)) {
			if (j + 1 < a.size()) {
				apply(o, c, a.substr(j + 1));
			} else if (i + 1 < args.size()) {
				apply(o, c, args[++i]);
			} else {
				throw Failure(EX_USAGE, "option -" + std::string(1, c) + " requires an argument");
			}
			return;
		}
		switch (c) {
		case 't':
			o.extract_recipients = true;
			break;
		case 'i':
			o.ignore_dots = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'I':  // newaliases, as Postfix has it
			o.mode = Mode::NewAliases;
			break;
		case 'm':  // "me too" (mailx's metoo): laim never leaves out the sender
		case 'U':  // initial user submission
		case 'G':  // a relayed, not an initial, submission: laim rewrites no address
		case 'n':  // no alias expansion (sendmail 8): laimd expands aliases at delivery
			break;
		case 'q':  // -q, or -q with a sendmail queue interval: flush now
			o.mode = Mode::Flush;
			return;
		default:
			if (c == '-')  // "--help": there are no long options; the whole one is named
				throw Failure(EX_USAGE, "unknown option " + log_escape(a));
			unsigned char u = static_cast<unsigned char>(c);
			char name[8] = {c, 0};
			if (u < 0x20 || u >= 0x7f)
				snprintf(name, sizeof name, "\\x%02x", u);
			throw Failure(EX_USAGE, std::string("unknown option -") + name);
		}
	}
}

void add_operand(Options& o, const std::string& a)
{
	refuse_line_breaks(a, "a recipient");
	if (!a.empty() && a[0] == '-')
		throw Failure(EX_USAGE, "recipient \"" + a + "\" begins with '-': refused");
	o.recipients.push_back(a);
}

}  // namespace

Options parse_options(std::string_view progname, const std::vector<std::string>& args)
{
	Options o;
	std::string_view name = basename_of(progname);
	if (name == "mailq")
		o.mode = Mode::ListQueue;
	else if (name == "newaliases")
		o.mode = Mode::NewAliases;

	bool operands_only = false;
	for (size_t i = 0; i < args.size(); i++) {
		const std::string& a = args[i];
		if (operands_only || a.size() < 2 || a[0] != '-')
			add_operand(o, a);
		else if (a == "--")
			operands_only = true;
		else
			parse_cluster(o, args, i);
	}
	return o;
}

}  // namespace laim::sendmail
