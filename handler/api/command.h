// Commands as delivery agents: the pipe handler's options and
// placeholders, and what a command's end means. Shared by the handler
// process, which feeds a command the message (handler/builtin/pipe.cpp,
// handler/alias_delivery.cpp, handler/command_client.cpp), and the root
// parent, which starts it as its user from its own copy of the config
// (parent/command.cpp). The exit statuses are read as Postfix's pipe(8)
// reads them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "handler/api/handler.h"

namespace laim {

// The instance that delivers "|command" targets of /etc/aliases.
inline constexpr const char* ALIAS_COMMAND_INSTANCE = "alias:command";
// The instance of the mbox handler's mailbox deliveries: the parent runs
// laim-mda as the one recipient, a user name (mda/mda.cpp). Its stdin:
// the mbox copy's length in decimal and a LF, then the copy.
inline constexpr const char* MAILBOX_INSTANCE = "mbox:mailbox";

// An alias command's time limit: a second less than the queue's
// delivery_timeout, so that the command's end, not the queue's, decides.
inline unsigned alias_command_timeout(unsigned delivery_timeout)
{
	return delivery_timeout > 1 ? delivery_timeout - 1 : delivery_timeout;
}

// The variables every command's environment holds, set by laim; env:
// may add others, never these.
inline constexpr std::array<const char*, 8> COMMAND_ENV_NAMES = {
	"PATH", "HOME", "USER", "LOGNAME", "SHELL", "SENDER", "RECIPIENT", "QUEUE_ID"};

// Bytes of a command's output kept: the reason is its first line.
constexpr size_t COMMAND_OUTPUT_KEPT = 512;

// A pipe instance's command, as its options give it.
struct CommandSpec {
	std::vector<std::string> argv;  // argv[0] absolute; words may hold placeholders
	std::string user;               // runs as this user, never root
	std::vector<std::string> env;   // NAME=value, after laim's own variables
	unsigned timeout = 0;           // seconds, then its process group is killed
	bool per_recipient = true;      // a command per recipient, else one for all
	bool mbox = false;              // stdin: mbox, else raw
};

// Reads and checks a pipe section's options. The user must exist and not
// be root: a lookup in the passwd database, which is all the validation
// in the parent (laimd -n, SIGHUP) touches.
CommandSpec read_command_spec(HandlerOptions& o);

// What the placeholders stand for in one command.
struct CommandVars {
	std::string queue_id;
	std::string sender;  // "" for the null sender
	std::vector<std::string> recipients;
};

// argv with its placeholders replaced, no shell involved: {sender} and
// {queue_id} in place; a word holding {recipient}, {user} (the local part
// before '+') or {extension} (after it) once per recipient, as Postfix's
// ${recipient}. Throws std::invalid_argument when a value would make a
// word start with '-' (an option to the command; Postfix's allow_min_user).
std::vector<std::string> command_argv(const std::vector<std::string>& argv, const CommandVars& v);

// How a command ended, as the handler process saw it.
struct CommandEnd {
	std::string user;      // it ran as
	int status = 0;        // as waitpid(2) gives it
	bool timed_out = false;
	unsigned timeout = 0;  // seconds it had
	std::string output;    // the first COMMAND_OUTPUT_KEPT bytes of its stdout and stderr
	uint64_t unread = 0;   // bytes of its stdin it left unread
};

// The result: exit 0 delivers (with whole_input, only when stdin was read
// to its end); a signal, the time limit, 71, 74 and 75 defer; a leading
// enhanced status code in the output ("5.1.1 text") decides a non-zero
// exit; the other sysexits (64-78) fail with Postfix's text and code;
// any other status defers. The reason names the user and quotes the
// first line of the output.
Result command_result(const CommandEnd& end, bool whole_input);

// A leading RFC 3463 status code of class 4 or 5 ("5.1.1 text"): the code,
// and the text after it in *text; "" when line starts with none.
std::string leading_code(const std::string& line, std::string* text);

}  // namespace laim
