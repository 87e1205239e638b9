// lmtp: hands each message to an LMTP server (RFC 2033), such as
// Dovecot's lmtp service, which stores it in its users' mailboxes. One
// session per call: LHLO, MAIL FROM, a RCPT TO per recipient and DATA,
// pipelined when the server offers PIPELINING; after the message, LMTP
// answers once per accepted recipient, so each recipient is delivered
// (2xx), deferred (4xx) or failed (5xx) on its own, as is one the server
// refuses at RCPT. The server's reply goes verbatim into the result.
// Connection errors defer and say what to fix.
//
//   handlers:
//     dovecot:
//       type: lmtp
//       socket: /run/dovecot/lmtp    # or host: 127.0.0.1:24 ([::1]:24); one of the two
//       rcpt_to: user                # user: the local part, after /etc/aliases, of
//                                    # this host's addresses (Dovecot's default
//                                    # auth_username_format); address: as it is
//       lhlo: mail.example.org       # name sent with LHLO; default: the hostname key
//       timeout: 30                  # seconds to connect, and for each reply; the
//                                    # whole session ends within delivery_timeout
//       verify_recipients: false     # true: ask the server at laim's RCPT (550/451)
//       workers: 4                   # sessions at once
//
// Dovecot's unix_listener must let laim's user connect: its default mode
// 0666 does; with a stricter one, `user = laim`, or a group laim is in
// with mode 0660.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "common/hostname.h"
#include "common/log.h"
#include "common/yaml_value.h"
#include "handler/api/handler.h"
#include "handler/api/smtp_client.h"

namespace laim {

namespace {

// The name of a uid or gid, else the number.
std::string user_name(uid_t uid)
{
	std::string name = login_name(uid);
	return name.empty() ? std::to_string(uid) : name;
}

std::string group_name(gid_t gid)
{
	struct group gr, *found = nullptr;
	char buf[4096];
	if (getgrgid_r(gid, &gr, buf, sizeof buf, &found) == 0 && found)
		return found->gr_name;
	return std::to_string(gid);
}

// A valid LHLO argument: printable ASCII without spaces (a domain or an
// address literal), so that it can never break the command line.
bool valid_lhlo(const std::string& name)
{
	if (name.empty() || name.size() > 255)
		return false;
	for (unsigned char c : name)
		if (c <= ' ' || c >= 0x7f)
			return false;
	return true;
}

class LmtpHandler : public Handler {
 public:
	explicit LmtpHandler(HandlerOptions& o);

	RcptVerdict check_recipient(std::string_view rcpt) override;
	Results deliver(const Envelope& env, const Message& msg) override;
	Result test() override;
	// Each call has its own session and changes no shared state.
	unsigned default_workers() const override { return 4; }

 private:
	void read_host(HandlerOptions& o);
	std::string peer() const;
	std::string lhlo_name() const { return lhlo_.empty() ? host_name() : lhlo_; }
	std::string rcpt_address(std::string_view rcpt) const;
	SmtpReply open(SmtpClient& c) const;
	void transaction(SmtpClient& c, const Envelope& env, const Message& msg,
			 std::vector<std::optional<Result>>& each) const;
	std::vector<SmtpReply> send_envelope(SmtpClient& c, const std::vector<std::string>& lines,
					     bool pipelining) const;
	std::string failure(const SmtpError& e) const;
	std::string access_hint() const;

	std::string name_;
	std::string socket_;  // a unix socket, or
	std::string host_;    // a TCP host and port
	unsigned port_ = 0;
	bool rcpt_user_;
	std::string lhlo_;  // empty: host_name()
	int timeout_;
	int session_timeout_;  // the whole session's, from delivery_timeout
	bool verify_;
};

LAIM_HANDLER("lmtp", LmtpHandler);

LmtpHandler::LmtpHandler(HandlerOptions& o)
    : name_(o.name()),
      timeout_(static_cast<int>(o.integer("timeout", 30, 1, 3600))),
      session_timeout_(static_cast<int>(o.call_timeout())),
      verify_(o.boolean("verify_recipients", false))
{
	if (o.has("socket") && o.has("host"))
		o.fail("host", "socket and host exclude each other: give one");
	if (o.has("socket"))
		socket_ = o.path("socket");
	else if (o.has("host"))
		read_host(o);
	else
		o.fail("socket", "missing required option: socket (a unix socket path) or host (HOST:PORT)");

	std::string rcpt_to = o.string("rcpt_to", "user");
	if (rcpt_to != "user" && rcpt_to != "address")
		o.fail("rcpt_to", "expected user or address, got \"" + rcpt_to + "\"");
	rcpt_user_ = rcpt_to == "user";

	lhlo_ = o.string("lhlo", "");
	if (!lhlo_.empty() && !valid_lhlo(lhlo_))
		o.fail("lhlo", "\"" + lhlo_ + "\": expected a host name (printable, no spaces)");
}

// host: HOST:PORT, an IPv6 address in brackets ([::1]:24). LMTP has no
// assigned port (RFC 2033 only keeps it off 25), so the port is written.
void LmtpHandler::read_host(HandlerOptions& o)
{
	std::string s = o.string("host");
	size_t colon = s.rfind(':');
	if (!s.empty() && s[0] == '[') {
		size_t close = s.find(']');
		if (close != std::string::npos && colon == close + 1)
			host_ = s.substr(1, close - 1);
	} else if (colon != std::string::npos && s.find(':') == colon) {
		host_ = s.substr(0, colon);
	}
	if (host_.empty() || host_.find_first_of(" []") != std::string::npos)
		o.fail("host", "\"" + s + "\": expected HOST:PORT, e.g. 127.0.0.1:24 or [::1]:24 (LMTP has no default port)");
	uint64_t p;
	if (!parse_decimal(std::string_view(s).substr(colon + 1), &p) || p < 1 || p > 65535)
		o.fail("host", "\"" + s + "\": the port must be a number from 1 to 65535");
	port_ = static_cast<unsigned>(p);
}

// The server, as reasons name it: the socket path, or HOST:PORT.
std::string LmtpHandler::peer() const
{
	if (!socket_.empty())
		return socket_;
	return (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

// What RCPT TO names: with rcpt_to: user, the local part of this host's
// addresses (Dovecot's default auth_username_format, %Lu, wants the user
// name); another domain's address stays whole, since its local part
// could name a different local user.
std::string LmtpHandler::rcpt_address(std::string_view rcpt) const
{
	if (rcpt_user_ && is_local_address(rcpt))
		return std::string(local_part(rcpt));
	return std::string(rcpt);
}

// Connects, reads the greeting and says LHLO; returns the LHLO reply
// (its extensions). A server that refuses LHLO speaks SMTP, not LMTP.
// The session ends within delivery_timeout, however its steps add up.
SmtpReply LmtpHandler::open(SmtpClient& c) const
{
	c.limit_session(session_timeout_);
	if (!socket_.empty())
		c.connect_unix(socket_, timeout_);
	else
		c.connect_tcp(host_, port_, timeout_);
	SmtpReply greeting = c.read_reply(timeout_);
	if (greeting.code != 220)
		throw SmtpError(peer() + " greets with " + greeting.text());
	SmtpReply lhlo = c.command("LHLO " + lhlo_name(), timeout_);
	if (lhlo.code != 250)
		throw SmtpError(peer() + " answers LHLO with " + lhlo.text() +
				": an SMTP server, not LMTP (RFC 2033)?");
	return lhlo;
}

// With verify_recipients, asks the server about the recipient with an
// LMTP RCPT and no DATA: a 5xx refuses it (550 at laim's RCPT), a 4xx or
// no answer defers it (451), as does a refused MAIL FROM:<>, whatever its
// class: it says nothing of the recipient. This runs on the handler
// process's main loop, which waits meanwhile: each step (connecting, each
// reply) gets timeout seconds, and a failed session is closed without QUIT.
RcptVerdict LmtpHandler::check_recipient(std::string_view rcpt)
{
	if (!verify_)
		return RcptVerdict::Accept;
	SmtpClient c;
	try {
		open(c);
		SmtpReply mail = c.command("MAIL FROM:<>", timeout_);
		if (!mail.ok()) {
			c.quit();
			log_warnx("handler %s: verifying <%s>: %s refuses MAIL FROM:<>: %s", name_.c_str(),
				  std::string(rcpt).c_str(), peer().c_str(), mail.text().c_str());
			return RcptVerdict::Defer;
		}
		SmtpReply r = c.command("RCPT TO:<" + rcpt_address(rcpt) + ">", timeout_);
		c.quit();
		if (r.ok())
			return RcptVerdict::Accept;
		log_info("handler %s: <%s> refused by %s: %s", name_.c_str(), std::string(rcpt).c_str(),
			 peer().c_str(), r.text().c_str());
		return r.code >= 500 ? RcptVerdict::Reject : RcptVerdict::Defer;
	} catch (const SmtpError& e) {
		log_warnx("handler %s: verifying <%s>: %s", name_.c_str(), std::string(rcpt).c_str(),
			  failure(e).c_str());
		return RcptVerdict::Defer;
	}
}

// MAIL, the RCPTs and DATA: queued and sent at once when the server
// offers PIPELINING (RFC 2920), else one at a time. Returns the replies
// read, in the order of lines; after a refused MAIL, no more.
std::vector<SmtpReply> LmtpHandler::send_envelope(SmtpClient& c, const std::vector<std::string>& lines,
						  bool pipelining) const
{
	if (pipelining) {
		for (const std::string& line : lines)
			c.queue(line);
		c.flush(timeout_);
	}
	std::vector<SmtpReply> replies;
	for (const std::string& line : lines) {
		replies.push_back(pipelining ? c.read_reply(timeout_) : c.command(line, timeout_));
		if (!replies[0].ok())
			break;
	}
	return replies;
}

// One LMTP transaction; settles each recipient as its answer comes, so
// that a session that breaks later keeps what was already settled.
void LmtpHandler::transaction(SmtpClient& c, const Envelope& env, const Message& msg,
			      std::vector<std::optional<Result>>& each) const
{
	bool pipelining = open(c).extension("PIPELINING").has_value();
	std::vector<std::string> lines{"MAIL FROM:<" + env.sender + ">"};
	for (const std::string& rcpt : env.recipients)
		lines.push_back("RCPT TO:<" + rcpt_address(rcpt) + ">");
	lines.push_back("DATA");
	std::vector<SmtpReply> replies = send_envelope(c, lines, pipelining);

	if (!replies[0].ok()) {
		for (auto& r : each)
			r = replies[0].result("MAIL: ");
		return;
	}
	std::vector<size_t> accepted;
	for (size_t i = 0; i < each.size(); i++) {
		if (replies[i + 1].ok())
			accepted.push_back(i);
		else
			each[i] = replies[i + 1].result("RCPT: ");
	}
	if (accepted.empty())
		return;
	// Only a 354 sends the message: a 2xx here (a broken server, or one
	// whose replies came out of step) must not count as its delivery.
	const SmtpReply& data = replies.back();
	if (data.code != 354) {
		for (size_t i : accepted)
			each[i] = data.code >= 400 ? data.result("DATA: ")
						   : Result::tempfail(peer() + ": DATA: unexpected reply " + data.text());
		return;
	}
	c.send_data(msg.raw(), timeout_);
	for (size_t i : accepted)
		each[i] = c.read_end_reply(timeout_).result();
}

// One result per recipient, in env.recipients order; those the server
// had not answered when the session failed are deferred with the reason.
// A failed session is closed without QUIT, whose wait a hung server
// would only lengthen.
Results LmtpHandler::deliver(const Envelope& env, const Message& msg)
{
	std::vector<std::optional<Result>> each(env.recipients.size());
	std::string broken = "lmtp: " + peer() + ": the session ended without an answer";
	SmtpClient c;
	try {
		transaction(c, env, msg, each);
		c.quit();
	} catch (const SmtpError& e) {
		broken = failure(e);
	}
	std::vector<Result> out;
	for (std::optional<Result>& r : each)
		out.push_back(r ? std::move(*r) : Result::tempfail(broken));
	return out;
}

// `laimctl test`: connects, reads the greeting, says LHLO and QUIT;
// nothing is sent.
Result LmtpHandler::test()
{
	SmtpClient c;
	try {
		SmtpReply lhlo = open(c);
		c.quit();
		std::string ext;
		for (size_t i = 1; i < lhlo.lines.size(); i++)
			ext += (ext.empty() ? "" : " ") + lhlo.lines[i];
		return Result::delivered("lmtp: " + peer() + " answers LHLO " + lhlo_name() + " with 250" +
					 (ext.empty() ? "" : " (" + ext + ")"));
	} catch (const SmtpError& e) {
		return Result::tempfail(failure(e));
	}
}

// A failed session as a reason: what failed and, for the connection
// errors an administrator meets, what to fix.
std::string LmtpHandler::failure(const SmtpError& e) const
{
	std::string why = std::string("lmtp: ") + e.what();
	switch (e.error) {
	case ENOENT:
		return why + " (is the LMTP server running, and is this its unix_listener's path?)";
	case EACCES:
		return socket_.empty() ? why : why + " (" + access_hint() + ")";
	case ECONNREFUSED:
		return why + (socket_.empty() ? " (is the LMTP server running, with a listener on this port?)"
					      : " (nothing accepts on the socket: is the LMTP server running?)");
	default:
		return why;
	}
}

// Why the laim user may not connect to the socket, and the Dovecot
// setting that lets it.
std::string LmtpHandler::access_hint() const
{
	std::string me = user_name(geteuid());
	struct stat st;
	std::string seen;
	if (stat(socket_.c_str(), &st) == 0) {
		char mode[8];
		snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
		seen = "the socket is owned by " + user_name(st.st_uid) + ":" + group_name(st.st_gid) +
		       ", mode " + mode;
	} else {
		seen = "a directory above the socket is not searchable by " + me;
	}
	return seen + "; " + me + " needs write permission on it: set user = " + me +
	       " (or group = a group " + me + " is in, and mode = 0660) in Dovecot's "
	       "service lmtp { unix_listener lmtp { ... } }";
}

}  // namespace

}  // namespace laim
