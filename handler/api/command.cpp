// Commands as delivery agents (see command.h): the pipe handler's options,
// placeholder expansion, and the meaning of a command's end.
#include "handler/api/command.h"

#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <sysexits.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>
#include <stdexcept>

namespace laim {

namespace {

constexpr const char* PLACEHOLDERS = "{sender}, {recipient}, {user}, {extension}, {queue_id}";

// The name of the placeholder that starts at word[i] ("{name}", the name
// in a-z and '_'), or "" when none does.
std::string_view placeholder_at(std::string_view word, size_t i)
{
	if (word[i] != '{')
		return {};
	size_t end = i + 1;
	while (end < word.size() && (islower(static_cast<unsigned char>(word[end])) || word[end] == '_'))
		end++;
	if (end == i + 1 || end == word.size() || word[end] != '}')
		return {};
	return word.substr(i + 1, end - i - 1);
}

bool per_recipient_name(std::string_view name)
{
	return name == "recipient" || name == "user" || name == "extension";
}

bool known_name(std::string_view name)
{
	return per_recipient_name(name) || name == "sender" || name == "queue_id";
}

// True when the word holds a placeholder that satisfies pred.
template <typename Pred>
bool has_placeholder(std::string_view word, Pred pred)
{
	for (size_t i = 0; i < word.size(); i++)
		if (std::string_view name = placeholder_at(word, i); !name.empty() && pred(name))
			return true;
	return false;
}

// command: the program (an absolute path, no placeholder) and its
// arguments, with known placeholders only.
std::vector<std::string> read_argv(HandlerOptions& o)
{
	std::vector<std::string> argv = o.strings("command");
	if (argv.empty())
		o.fail("command", o.has("command") ? "expected the program and its arguments, got an empty list"
						   : "missing required option");
	if (argv[0].empty() || argv[0][0] != '/')
		o.fail("command", "the program must be an absolute path, got \"" + argv[0] + "\"");
	if (has_placeholder(argv[0], [](std::string_view) { return true; }))
		o.fail("command", "the program cannot hold a placeholder: \"" + argv[0] + "\"");
	for (const std::string& word : argv)
		for (size_t i = 0; i < word.size(); i++) {
			std::string_view name = placeholder_at(word, i);
			if (!name.empty() && !known_name(name))
				o.fail("command", "unknown placeholder {" + std::string(name) + "} (known: " +
							  PLACEHOLDERS + ")");
		}
	return argv;
}

// user: an existing user other than root.
std::string read_user(HandlerOptions& o)
{
	std::string user = o.string("user");
	struct passwd pw, *found = nullptr;
	char buf[4096];
	if (getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || !found)
		o.fail("user", "no such user \"" + user + "\"");
	if (found->pw_uid == 0)
		o.fail("user", "\"" + user + "\" is root: a command never runs as root");
	return user;
}

// env: NAME=value entries, none of the names laim sets itself.
std::vector<std::string> read_env(HandlerOptions& o)
{
	std::vector<std::string> env = o.strings("env");
	for (size_t i = 0; i < env.size(); i++) {
		const std::string& e = env[i];
		size_t eq = e.find('=');
		std::string name = e.substr(0, eq);
		bool valid = eq != std::string::npos && !name.empty() && !isdigit(static_cast<unsigned char>(name[0])) &&
			     std::all_of(name.begin(), name.end(),
					 [](unsigned char c) { return isalnum(c) || c == '_'; });
		if (!valid)
			o.fail("env", "entry " + std::to_string(i + 1) + " is not NAME=value (not quoted: it may hold a secret)");
		if (std::find(COMMAND_ENV_NAMES.begin(), COMMAND_ENV_NAMES.end(), name) != COMMAND_ENV_NAMES.end())
			o.fail("env", name + " is set by laim itself");
	}
	return env;
}

// What one placeholder stands for; rcpt is null outside a per-recipient word.
std::string value_of(std::string_view name, const CommandVars& v, const std::string* rcpt)
{
	if (name == "sender")
		return v.sender;
	if (name == "queue_id")
		return v.queue_id;
	std::string_view local = local_part(*rcpt);
	size_t plus = local.find('+');
	if (name == "user")
		return std::string(local.substr(0, plus));
	if (name == "extension")
		return plus == std::string_view::npos ? "" : std::string(local.substr(plus + 1));
	return *rcpt;
}

// One word with its placeholders replaced. The values are not scanned
// again: a sender holding "{user}" stays as it is.
std::string expand(const std::string& word, const CommandVars& v, const std::string* rcpt)
{
	std::string out;
	for (size_t i = 0; i < word.size();) {
		std::string_view name = placeholder_at(word, i);
		if (name.empty() || !known_name(name)) {
			out += word[i++];
			continue;
		}
		out += value_of(name, v, rcpt);
		i += name.size() + 2;
	}
	if (!out.empty() && out[0] == '-' && word[0] != '-')
		throw std::invalid_argument("\"" + out + "\" would be an option to the command (it begins with '-')");
	return out;
}

// The first line of the output, control characters made visible as '?'.
std::string first_line(const std::string& output)
{
	std::string line = output.substr(0, output.find('\n'));
	if (!line.empty() && line.back() == '\r')
		line.pop_back();
	for (char& c : line)
		if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
			c = '?';
	return line;
}

// Postfix's texts for the sysexits.h statuses; 71, 74 and 75 are temporary.
struct SysExit {
	int status;
	const char* code;
	const char* text;
};
constexpr SysExit SYSEXITS[] = {
	{EX_USAGE, "5.3.0", "command line usage error"},
	{EX_DATAERR, "5.6.0", "data format error"},
	{EX_NOINPUT, "5.3.0", "cannot open input"},
	{EX_NOUSER, "5.1.1", "user unknown"},
	{EX_NOHOST, "5.1.2", "host name unknown"},
	{EX_UNAVAILABLE, "5.3.0", "service unavailable"},
	{EX_SOFTWARE, "5.3.0", "internal software error"},
	{EX_OSERR, "4.3.0", "system resource problem"},
	{EX_OSFILE, "5.3.0", "critical OS file missing"},
	{EX_CANTCREAT, "5.3.0", "can't create output file"},
	{EX_IOERR, "4.3.0", "input/output error"},
	{EX_TEMPFAIL, "4.3.0", "temporary failure"},
	{EX_PROTOCOL, "5.3.0", "remote protocol error"},
	{EX_NOPERM, "5.7.0", "permission denied"},
	{EX_CONFIG, "5.3.5", "configuration error"},
};

// tempfail or permfail by the class of code, with the code.
Result by_class(const std::string& code, std::string why)
{
	Result r = code[0] == '4' ? Result::tempfail(std::move(why)) : Result::permfail(std::move(why));
	return std::move(r).with_code(code);
}

// A non-zero exit status: the output's own code, a sysexits status, or a
// temporary failure (lmtp-bridge's exit 1 means "try again").
Result exit_result(int status, const std::string& who, const std::string& line)
{
	std::string why = who + " exited with status " + std::to_string(status);
	std::string text;
	std::string code = leading_code(line, &text);
	if (!code.empty())
		return by_class(code, why + (text.empty() ? "" : ": " + text));
	std::string output = line.empty() ? "" : ": " + line;
	for (const SysExit& s : SYSEXITS)
		if (s.status == status)
			return by_class(s.code, why + " (" + s.text + ")" + output);
	return Result::tempfail(why + output);
}

}  // namespace

std::string leading_code(const std::string& line, std::string* text)
{
	size_t i = 0;
	auto digits = [&](size_t most) {
		size_t start = i;
		while (i < line.size() && i - start < most && isdigit(static_cast<unsigned char>(line[i])))
			i++;
		return i > start && (i == line.size() || !isdigit(static_cast<unsigned char>(line[i])));
	};
	if (line.empty() || (line[0] != '4' && line[0] != '5') || line.size() < 2 || line[1] != '.')
		return "";
	i = 2;
	if (!digits(3) || i == line.size() || line[i++] != '.' || !digits(3) || (i < line.size() && line[i] != ' '))
		return "";
	size_t rest = line.find_first_not_of(' ', i);
	*text = rest == std::string::npos ? "" : line.substr(rest);
	return line.substr(0, i);
}

CommandSpec read_command_spec(HandlerOptions& o)
{
	CommandSpec spec;
	spec.argv = read_argv(o);
	spec.user = read_user(o);
	spec.env = read_env(o);
	spec.timeout = static_cast<unsigned>(o.integer("timeout", 120, 1, 86400));
	spec.per_recipient = o.boolean("per_recipient", true);
	std::string input = o.string("stdin", "raw");
	if (input != "raw" && input != "mbox")
		o.fail("stdin", "expected raw or mbox, got \"" + input + "\"");
	spec.mbox = input == "mbox";
	return spec;
}

std::vector<std::string> command_argv(const std::vector<std::string>& argv, const CommandVars& v)
{
	std::vector<std::string> out;
	for (const std::string& word : argv) {
		if (!has_placeholder(word, per_recipient_name)) {
			out.push_back(expand(word, v, nullptr));
			continue;
		}
		for (const std::string& rcpt : v.recipients)
			out.push_back(expand(word, v, &rcpt));
	}
	return out;
}

Result command_result(const CommandEnd& end, bool whole_input)
{
	std::string who = "command as " + end.user;
	std::string line = first_line(end.output);
	std::string output = line.empty() ? "" : ": " + line;
	if (end.timed_out)
		return Result::tempfail(who + " still running after " + std::to_string(end.timeout) + "s: killed");
	if (WIFSIGNALED(end.status)) {
		int sig = WTERMSIG(end.status);
		const char* name = sigabbrev_np(sig);
		return Result::tempfail(who + " killed by signal " + std::to_string(sig) +
					(name ? std::string(" (SIG") + name + ")" : "") + output);
	}
	if (!WIFEXITED(end.status))
		return Result::tempfail(who + " ended with wait status " + std::to_string(end.status));
	int status = WEXITSTATUS(end.status);
	if (status != 0)
		return exit_result(status, who, line);
	if (whole_input && end.unread > 0)
		return Result::tempfail(who + " exited before reading all of its input (" + std::to_string(end.unread) +
					" bytes left)" + output);
	return Result::delivered(who + " exited with status 0" + output);
}

}  // namespace laim
