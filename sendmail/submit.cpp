// The sendmail command's SMTP client: a small blocking client over
// laimd's unix submission socket (RFC 5321), one reply at a time, each
// within a timeout. laimd learns the caller's uid from SO_PEERCRED.
// Also SmtpRelay, what -bs needs to follow of a session it relays.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/smtp_command.h"
#include "common/text.h"
#include "sendmail/sendmail.h"

#ifndef LAIM_SOCKET
#define LAIM_SOCKET "/run/laim/submit.sock"
#endif

namespace laim::sendmail {

namespace {

constexpr size_t MAX_REPLY_LINE = 4096;  // RFC 5321 4.5.3.1.5 says 512
constexpr size_t MAX_REPLY_LINES = 100;

struct Reply {
	int code = 0;
	std::string text;  // every line, joined with "\n", without CRLF
	std::vector<std::string> lines;
};

// One SMTP connection: commands out, replies in, -v echoes both.
class Client {
 public:
	Client(UniqueFd fd, bool verbose, int timeout) : fd_(std::move(fd)), verbose_(verbose), timeout_(timeout) {}

	void command(const std::string& line)
	{
		if (verbose_)
			fprintf(stderr, ">>> %s\n", line.c_str());
		send(line + "\r\n");
	}

	void send(std::string_view data)
	{
		while (!data.empty()) {
			wait_for(POLLOUT);
			ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				throw TemporaryFailure(std::string("connection to laimd lost: ") + strerror(errno));
			data.remove_prefix(size_t(n));
		}
	}

	// Reads a complete (possibly multi-line) reply, RFC 5321 4.2.1.
	Reply reply()
	{
		Reply r;
		for (;;) {
			std::string line = read_line();
			if (verbose_)
				fprintf(stderr, "<<< %s\n", line.c_str());
			bool digits = line.size() >= 3 && std::isdigit((unsigned char)line[0]) &&
				      std::isdigit((unsigned char)line[1]) && std::isdigit((unsigned char)line[2]);
			if (!digits || (line.size() > 3 && line[3] != ' ' && line[3] != '-'))
				throw TemporaryFailure("laimd sent a malformed reply: " + line);
			int code = std::stoi(line.substr(0, 3));
			if (r.code != 0 && code != r.code)
				throw TemporaryFailure("laimd sent a malformed reply: " + line);
			r.code = code;
			r.text += (r.text.empty() ? "" : "\n") + line;
			r.lines.push_back(line);
			if (line.size() == 3 || line[3] == ' ')
				return r;
			if (r.lines.size() >= MAX_REPLY_LINES)
				throw TemporaryFailure("laimd sent an endless reply");
		}
	}

 private:
	// Waits until the socket is ready for events, at most timeout_ seconds.
	void wait_for(short events)
	{
		pollfd p{fd_.get(), events, 0};
		timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		for (;;) {
			timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long left = long(timeout_) * 1000 - ((now.tv_sec - start.tv_sec) * 1000 +
							     (now.tv_nsec - start.tv_nsec) / 1000000);
			if (left <= 0)
				throw TemporaryFailure("no answer from laimd within " + std::to_string(timeout_) +
						       " seconds");
			int n = poll(&p, 1, int(left));
			if (n > 0)
				return;
			if (n < 0 && errno != EINTR)
				throw TemporaryFailure(std::string("poll: ") + strerror(errno));
		}
	}

	std::string read_line()
	{
		for (;;) {
			size_t lf = buf_.find('\n');
			if (lf != std::string::npos) {
				std::string line = buf_.substr(0, lf);
				buf_.erase(0, lf + 1);
				if (!line.empty() && line.back() == '\r')
					line.pop_back();
				return line;
			}
			if (buf_.size() > MAX_REPLY_LINE)
				throw TemporaryFailure("laimd sent a reply line that is too long");
			wait_for(POLLIN);
			char b[4096];
			ssize_t n = ::read(fd_.get(), b, sizeof b);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				throw TemporaryFailure(std::string("connection to laimd lost: ") + strerror(errno));
			if (n == 0)
				throw TemporaryFailure("laimd closed the connection");
			buf_.append(b, size_t(n));
		}
	}

	UniqueFd fd_;
	bool verbose_;
	int timeout_;
	std::string buf_;
};

// Judges a reply at one step: `ok` is the expected first digit. 4xx (and
// anything unexpected) is temporary; 5xx ends with exit code `code`.
void expect(const Reply& r, int ok, const char* step, int code)
{
	int cls = r.code / 100;
	if (cls == ok)
		return;
	if (cls == 5)
		throw Failure(code, std::string("laimd refused ") + step + ": " + r.text);
	throw TemporaryFailure(std::string("laimd answered ") + step + " with: " + r.text);
}

bool has_extension(const Reply& ehlo, std::string_view name)
{
	for (size_t i = 1; i < ehlo.lines.size(); i++) {
		std::string_view kw = std::string_view(ehlo.lines[i]).substr(4);
		kw = kw.substr(0, kw.find(' '));
		if (iequal(kw, name))
			return true;
	}
	return false;
}

// Streams the prepared message through the encoder.
void send_message(Client& c, int fd)
{
	DataEncoder enc;
	std::string out;
	char buf[64 * 1024];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof buf, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			throw Failure(EX_IOERR, std::string("reading the temporary message file: ") + strerror(errno));
		if (n == 0)
			break;
		off += n;
		out.clear();
		enc.encode(std::string_view(buf, size_t(n)), out);
		c.send(out);
	}
	out.clear();
	enc.finish(out);
	c.send(out);
}

// MAIL, then RCPT for the recipients from first on, until laimd answers
// 452 to one too many: returns the end of those it took.
size_t open_transaction(Client& c, const std::string& mail, const std::vector<std::string>& rcpts, size_t first)
{
	c.command(mail);
	expect(c.reply(), 2, "the sender", EX_DATAERR);
	size_t end = first;
	for (; end < rcpts.size(); end++) {
		c.command("RCPT TO:<" + rcpts[end] + ">");
		Reply rr = c.reply();
		if (rr.code == 452 && end > first)
			break;
		expect(rr, 2, ("recipient <" + rcpts[end] + ">").c_str(), EX_NOUSER);
	}
	return end;
}

// Ends the open transaction without a message (RFC 5321 4.1.1.5).
void reset(Client& c)
{
	c.command("RSET");
	expect(c.reply(), 2, "RSET", EX_UNAVAILABLE);
}

}  // namespace

void DataEncoder::encode(std::string_view in, std::string& out)
{
	out.reserve(out.size() + in.size() + in.size() / 32 + 2);
	for (char c : in) {
		if (line_start_ && c == '.')
			out += '.';  // RFC 5321 4.5.2 transparency
		if (c == '\n' && !after_cr_)
			out += '\r';
		out += c;
		after_cr_ = c == '\r';
		line_start_ = c == '\n';
	}
}

void DataEncoder::finish(std::string& out)
{
	if (!line_start_)
		out += "\r\n";
	out += ".\r\n";
	line_start_ = true;
	after_cr_ = false;
}

std::string submit_socket_path()
{
	const char* env = getenv("LAIM_SOCKET");
	return env && *env ? env : LAIM_SOCKET;
}

UniqueFd connect_unix(const std::string& path)
{
	sockaddr_un sun{};
	sun.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof sun.sun_path)
		throw TemporaryFailure("cannot connect to " + path + ": path too long");
	memcpy(sun.sun_path, path.data(), path.size());
	UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		throw TemporaryFailure(std::string("socket: ") + strerror(errno));
	int r;
	do
		r = connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		throw TemporaryFailure("cannot connect to " + path + ": " + strerror(errno));
	return fd;
}

void smtp_submit(Submission& s)
{
	Client c(connect_unix(s.socket_path), s.verbose, s.timeout);
	expect(c.reply(), 2, "the connection", EX_UNAVAILABLE);
	c.command("EHLO localhost");
	Reply ehlo = c.reply();
	expect(ehlo, 2, "EHLO", EX_UNAVAILABLE);

	std::string mail = "MAIL FROM:<" + s.sender + ">";
	if (s.eight_bit && has_extension(ehlo, "8BITMIME"))
		mail += " BODY=8BITMIME";  // RFC 6152
	if (needs_smtputf8(s.sender, s.recipients) && has_extension(ehlo, "SMTPUTF8"))
		mail += " SMTPUTF8";  // RFC 6531 3.4
	// RFC 5321 3.3: a 452 to one recipient too many (laimd takes 100 a
	// transaction) sends the message to those accepted, and the rest go
	// in the next transaction. A later transaction's refusal would then
	// come after the first is stored: so the later ones are tried first,
	// and reset, and nothing is stored unless laimd takes every recipient.
	size_t end = open_transaction(c, mail, s.recipients, s.submitted);
	if (end < s.recipients.size()) {
		for (size_t from = end; from < s.recipients.size();) {
			reset(c);
			from = open_transaction(c, mail, s.recipients, from);
		}
		reset(c);
		end = open_transaction(c, mail, s.recipients, s.submitted);
	}
	for (;;) {
		c.command("DATA");
		expect(c.reply(), 3, "DATA", EX_UNAVAILABLE);
		send_message(c, s.message_fd);
		if (s.verbose)
			fprintf(stderr, ">>> .\n");
		expect(c.reply(), 2, "the message", EX_DATAERR);
		s.submitted = end;
		if (end == s.recipients.size())
			break;
		end = open_transaction(c, mail, s.recipients, end);
	}

	// Stored: the rest is courtesy (RFC 5321 4.1.1.10).
	try {
		c.command("QUIT");
		c.reply();
	} catch (const TemporaryFailure&) {
	}
}

size_t SmtpRelay::from_client(std::string_view in, std::string& out)
{
	// The first octets of a line: laimd runs no command line longer than
	// RFC 5321's 512 octets (a longer one taken for DATA only waits).
	constexpr size_t HEAD = 512;
	for (size_t i = 0; i < in.size(); i++) {
		char c = in[i];
		if (c == '\n' && !client_cr_)
			out += '\r';
		out += c;
		client_cr_ = c == '\r';
		// A command is counted at its first octet: laimd answers a line
		// too long before its end.
		if (!client_in_line_ && !data_)
			unanswered_++;
		client_in_line_ = c != '\n';
		if (c != '\n') {
			if (client_line_.size() < HEAD)
				client_line_ += c;
			continue;
		}
		// laimd ends a line at CRLF only (every LF goes to it as one): a
		// CR before that is part of the line, so ".\r\r\n" ends no data.
		std::string_view line = client_line_;
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		if (data_ && line == ".") {  // the end of data, which is answered
			data_ = false;
			unanswered_++;
		} else if (!data_) {
			// DATA as laimd reads it ("DATA\t" too; with arguments: 501),
			// held while its reply is owed: a line too long is answered
			// before its end, and no reply would release it.
			held_ = unanswered_ > 0 && smtp_is_data(line);
		}
		client_line_.clear();
		if (held_)
			return i + 1;
	}
	return in.size();
}

void SmtpRelay::from_laimd(std::string_view in)
{
	for (char c : in) {
		if (c == '\r')
			continue;
		if (c != '\n') {
			if (reply_line_.size() < 4)
				reply_line_ += c;
			continue;
		}
		// The last line of a reply: "NNN" or "NNN text" (RFC 5321 4.2.1).
		const std::string& r = reply_line_;
		auto digit = [&r](size_t i) { return std::isdigit(static_cast<unsigned char>(r[i])) != 0; };
		if (r.size() >= 3 && digit(0) && digit(1) && digit(2) && (r.size() == 3 || r[3] != '-')) {
			last_code_ = (r[0] - '0') * 100 + (r[1] - '0') * 10 + (r[2] - '0');
			if (unanswered_ > 0)
				unanswered_--;
			if (held_ && unanswered_ == 0) {
				held_ = false;
				data_ = last_code_ == 354;
			}
		}
		reply_line_.clear();
	}
}

}  // namespace laim::sendmail
