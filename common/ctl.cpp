// The control protocol, client side; see ctl.h and handler/control.h.
#include "common/ctl.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "common/fd.h"

#ifndef LAIM_CONTROL_SOCKET
#define LAIM_CONTROL_SOCKET "/run/laim/control.sock"
#endif

namespace laim {

namespace {

// laimd answers at once; a silent daemon must not hang laimctl or mailq.
constexpr int CTL_TIMEOUT_SECONDS = 30;
// A full queue listing stays far below this; a larger answer is broken.
constexpr size_t CTL_MAX_ANSWER = 256u << 20;

[[noreturn]] void cannot_connect(const std::string& path, int err)
{
	throw std::system_error(err, std::generic_category(), "cannot connect to " + path);
}

[[noreturn]] void broken(const std::string& what, int err)
{
	if (err == EAGAIN || err == EWOULDBLOCK)
		throw std::runtime_error("no answer from laimd within " +
		                         std::to_string(CTL_TIMEOUT_SECONDS) + " seconds");
	throw std::runtime_error("connection to laimd broke while " + what + ": " + std::strerror(err));
}

UniqueFd connect_unix(const std::string& path)
{
	sockaddr_un sun{};
	sun.sun_family = AF_UNIX;
	if (path.empty())
		cannot_connect(path, ENOENT);
	if (path.size() >= sizeof(sun.sun_path))
		cannot_connect(path, ENAMETOOLONG);
	std::memcpy(sun.sun_path, path.data(), path.size());

	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		cannot_connect(path, errno);
	timeval tv{CTL_TIMEOUT_SECONDS, 0};
	::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int r;
	do
		r = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun));
	while (r < 0 && errno == EINTR);
	if (r < 0)
		cannot_connect(path, errno);
	return fd;
}

// Sends the whole request; MSG_NOSIGNAL so a daemon that hangs up turns
// into an error, not a SIGPIPE. A daemon that closed before taking all of
// it may have answered why: the answer is read all the same.
void send_all(int fd, std::string_view data)
{
	while (!data.empty()) {
		ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return;
		if (n < 0)
			broken("sending the request", errno);
		data.remove_prefix((size_t)n);
	}
}

// The answer, up to laimd's close. laimd closing with request bytes
// unread (after "ERR request too long") resets the connection once its
// answer is read: a reset after a complete line is the answer's end, one
// before any answer is left to parse_answer.
std::string read_to_eof(int fd)
{
	std::string answer;
	char buf[16384];
	for (;;) {
		ssize_t n = ::read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ECONNRESET && (answer.empty() || answer.ends_with('\n')))
			return answer;
		if (n < 0)
			broken("reading the answer", errno);
		if (n == 0)
			return answer;
		if (answer.size() + (size_t)n > CTL_MAX_ANSWER)
			throw std::runtime_error("answer from laimd too large");
		answer.append(buf, (size_t)n);
	}
}

// Splits "OK\nline\nline\n" into its payload lines, or throws for "ERR".
std::vector<std::string> parse_answer(std::string_view answer)
{
	if (answer.empty())
		throw std::runtime_error("laimd closed the connection without an answer");
	if (!answer.ends_with('\n'))
		throw std::runtime_error("truncated answer from laimd");
	size_t nl = answer.find('\n');
	std::string_view status = answer.substr(0, nl);
	if (status == "ERR" || status.starts_with("ERR "))
		throw std::runtime_error(std::string(status.substr(status.size() > 3 ? 4 : 3)));
	if (status != "OK")
		throw std::runtime_error("unexpected answer from laimd: " +
		                         std::string(status.substr(0, 80)));
	std::vector<std::string> lines;
	answer.remove_prefix(nl + 1);
	while (!answer.empty()) {
		nl = answer.find('\n');
		lines.emplace_back(answer.substr(0, nl));
		answer.remove_prefix(nl + 1);
	}
	return lines;
}

std::vector<std::string_view> split_tabs(std::string_view line)
{
	std::vector<std::string_view> fields;
	for (;;) {
		size_t tab = line.find('\t');
		fields.push_back(line.substr(0, tab));
		if (tab == std::string_view::npos)
			return fields;
		line.remove_prefix(tab + 1);
	}
}

template <typename T>
T number(std::string_view s, const std::string& line, const char* what)
{
	T v{};
	auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
	if (s.empty() || ec != std::errc() || end != s.data() + s.size())
		throw std::runtime_error(std::string("bad ") + what + " in answer line from laimd: " + line);
	return v;
}

std::vector<std::string_view> fields_of(const std::string& line, size_t want)
{
	auto f = split_tabs(line);
	if (f.size() < want)
		throw std::runtime_error("malformed answer line from laimd: " + line);
	return f;
}

// asctime's first 20 characters ("Sun Nov 22 02:24:26 "), as Postfix
// prints the arrival time, in local time.
std::string arrival_time(time_t t)
{
	struct tm tm;
	char buf[64];
	if (!localtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%a %b %e %H:%M:%S", &tm) == 0)
		return "??";
	return buf;
}

std::string pad_right(std::string s, size_t width)
{
	if (s.size() < width)
		s.append(width - s.size(), ' ');
	return s;
}

std::string pad_left(const std::string& s, size_t width)
{
	return s.size() < width ? std::string(width - s.size(), ' ') + s : s;
}

}  // namespace

std::vector<std::string> ctl_request(const std::string& path, const std::string& command)
{
	for (unsigned char c : command)
		if (c < 0x20 || c == 0x7f)
			throw std::invalid_argument("control command holds a control character");
	if (command.size() + 1 > CONTROL_MAX_LINE)
		throw std::invalid_argument("control command longer than " + std::to_string(CONTROL_MAX_LINE - 1) +
		                            " bytes");
	UniqueFd fd = connect_unix(path);
	send_all(fd.get(), command + "\n");
	::shutdown(fd.get(), SHUT_WR);
	return parse_answer(read_to_eof(fd.get()));
}

std::string ctl_socket_path()
{
	const char* env = std::getenv("LAIM_CONTROL");
	return env && *env ? env : LAIM_CONTROL_SOCKET;
}

// Commas inside a quoted local part ("a,b"@x, RFC 5321 4.1.2) or an
// address literal ([tag:a,b]) do not separate recipients.
std::vector<std::string> ctl_split_recipients(const std::string& field)
{
	std::vector<std::string> out;
	if (field.empty())
		return out;
	std::string cur;
	bool quoted = false, literal = false;
	for (size_t i = 0; i < field.size(); i++) {
		char c = field[i];
		if (quoted && c == '\\' && i + 1 < field.size()) {
			cur += c;
			cur += field[++i];
			continue;
		}
		if (c == '"' && !literal)
			quoted = !quoted;
		else if (c == '[' && !quoted)
			literal = true;
		else if (c == ']' && !quoted)
			literal = false;
		else if (c == ',' && !quoted && !literal) {
			out.push_back(std::move(cur));
			cur.clear();
			continue;
		}
		cur += c;
	}
	out.push_back(std::move(cur));
	return out;
}

CtlQueueEntry ctl_parse_queue_line(const std::string& line)
{
	auto f = fields_of(line, 8);
	CtlQueueEntry e;
	e.id = f[0];
	e.arrival = number<time_t>(f[1], line, "arrival time");
	e.size = number<uint64_t>(f[2], line, "size");
	e.uid = f[3];
	e.sender = f[4];
	e.recipients = ctl_split_recipients(std::string(f[5]));
	e.attempts = number<unsigned>(f[6], line, "attempt count");
	e.last_error = f[7];
	return e;
}

CtlFailedEntry ctl_parse_failed_line(const std::string& line)
{
	auto f = fields_of(line, 6);
	CtlFailedEntry e;
	e.id = f[0];
	e.arrival = number<time_t>(f[1], line, "arrival time");
	e.size = number<uint64_t>(f[2], line, "size");
	e.sender = f[3];
	e.recipients = ctl_split_recipients(std::string(f[4]));
	e.reason = f[5];
	return e;
}

// Postfix's showq layout: a heading, then per message the id, size,
// arrival time and sender, the deferral reason right-aligned in
// parentheses, the recipients under the sender column, a blank line; and
// a total at the end.
std::string format_mailq(const std::vector<std::string>& queue_lines, size_t offline)
{
	std::string waiting;
	if (offline > 0)
		waiting = "-- " + std::to_string(offline) + (offline == 1 ? " message waits" : " messages wait") +
			  " in offline/ to be taken into the queue\n";
	if (queue_lines.empty())
		return offline > 0 ? waiting : "Mail queue is empty\n";
	std::string out = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
	const std::string rcpt_indent(42, ' ');
	uint64_t total = 0;
	for (const std::string& line : queue_lines) {
		CtlQueueEntry e = ctl_parse_queue_line(line);
		total += e.size;
		out += pad_right(e.id, 10) + "  " + pad_left(std::to_string(e.size), 8) + ' ' +
		       pad_right(arrival_time(e.arrival), 20) + ' ' +
		       (e.sender.empty() ? "MAILER-DAEMON" : e.sender) + '\n';
		if (!e.last_error.empty())
			out += pad_left("(" + e.last_error + ")", 78) + '\n';
		for (const std::string& r : e.recipients)
			out += rcpt_indent + r + '\n';
		out += '\n';
	}
	size_t n = queue_lines.size();
	out += "-- " + std::to_string(total / 1024) + " Kbytes in " + std::to_string(n) +
	       (n == 1 ? " Request.\n" : " Requests.\n");
	return out + waiting;
}

}  // namespace laim
