// smarthost: relays every message to one SMTP server (a provider's
// submission port, the company's relay), as a mail client does: TLS
// (STARTTLS or implicit) with the certificate verified, AUTH PLAIN or
// LOGIN with the credentials of a root-only file, then one MAIL, an RCPT
// per recipient and DATA (handler/api/smtp_client.h). Each recipient is
// settled on its own: a 5xx to its RCPT fails it, a 4xx defers it, and
// the reply to the message's end settles those accepted. Whatever stops
// the session before MAIL (no STARTTLS, a bad certificate, AUTH refused,
// a timeout) defers the message with the reason; it never goes on in
// clear or without AUTH.
//
//   handlers:
//     relay:
//       type: smarthost
//       host: smtp.example.org         # a name (checked against the certificate) or an address
//       port: 587                      # default 587, or 465 with tls: implicit
//       tls: starttls                  # starttls | implicit | none; port 465 defaults to implicit;
//                                      # none only with host localhost, 127.0.0.0/8 or ::1
//       ca_file: /etc/ssl/certs/ca-certificates.crt  # trusted CAs; default: the system store
//       tls_fingerprint: "5E:2B:...:9C"  # optional: the certificate's SHA-256 instead of its chain
//       auth: auto                     # auto (PLAIN, else LOGIN) | plain | login | none
//       credentials: /etc/laim/relay.secret  # "user:password", root:root 0600
//       helo: host.example.org         # default: the hostname key
//       mail_from: alerts@example.org  # envelope sender; "alerts@" adds this host's name
//       rewrite_from: missing          # off | missing | always: From: becomes mail_from
//                                      # (else the credentials' user)
//       connect_timeout: 20            # seconds
//       command_timeout: 10
//       data_timeout: 20               # for the reply to the message's end
//                                      # (the session before it ends within
//                                      # delivery_timeout, however the steps add up)
//       workers: 4

#include <arpa/inet.h>

#include <algorithm>

#include "common/text.h"
#include "handler/api/handler.h"
#include "handler/api/header_edit.h"
#include "handler/api/smtp_client.h"

namespace laim {

namespace {

enum class Tls { StartTls, Implicit, None };
enum class Auth { Auto, Plain, Login, None };
enum class Rewrite { Off, Missing, Always };

// What stops a session: one result for every recipient not yet settled.
struct Stop {
	Result result;
};

bool has_8bit(std::string_view s)
{
	return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// A value that goes into a command line as one word: no space, control
// character or angle bracket that could end it or start another command.
bool is_word(std::string_view s)
{
	return !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
		auto u = static_cast<unsigned char>(c);
		return u <= 0x20 || u == 0x7f || c == '<' || c == '>';
	});
}

// Reads an option that takes one of words (the first is the default).
size_t one_of(HandlerOptions& o, const char* key, std::initializer_list<const char*> words)
{
	std::string v = o.string(key, *words.begin());
	std::string list;
	size_t i = 0;
	for (const char* w : words) {
		if (v == w)
			return i;
		list += (i++ ? ", " : "") + std::string(w);
	}
	o.fail(key, "expected one of " + list + ", got \"" + v + "\"");
}

class Smarthost : public Handler {
 public:
	explicit Smarthost(HandlerOptions& o);

	Results deliver(const Envelope& env, const Message& msg) override;
	Result test() override;
	// Each call has a connection of its own and changes no shared state.
	unsigned default_workers() const override { return 4; }

 private:
	SmtpReply open(SmtpClient& c, std::vector<std::string>* steps) const;
	std::string authenticate(SmtpClient& c, const SmtpReply& ehlo) const;
	SmtpReply ehlo(SmtpClient& c) const;
	std::string masqueraded() const;
	std::string mail_command(const Envelope& env, const SmtpReply& ehlo, std::string_view data) const;
	void read_credentials(HandlerOptions& o);

	std::string host_;
	Tls tls_;
	unsigned port_;
	TlsPolicy policy_;
	Auth auth_;
	std::string user_, password_;
	std::string helo_, mail_from_;
	Rewrite rewrite_;
	int connect_timeout_, command_timeout_, data_timeout_;
	int session_timeout_;  // the whole session's, from delivery_timeout
	std::string peer_;  // host:port, for reasons
};

LAIM_HANDLER("smarthost", Smarthost);

Smarthost::Smarthost(HandlerOptions& o)
    : host_(o.string("host")),
      tls_(o.has("tls") ? static_cast<Tls>(one_of(o, "tls", {"starttls", "implicit", "none"}))
	   : o.has("port") && o.integer("port", 587, 1, 65535) == 465 ? Tls::Implicit : Tls::StartTls),
      port_(static_cast<unsigned>(o.integer("port", tls_ == Tls::Implicit ? 465 : 587, 1, 65535))),
      auth_(static_cast<Auth>(one_of(o, "auth", {"auto", "plain", "login", "none"}))),
      helo_(o.string("helo", "")),
      mail_from_(o.string("mail_from", "")),
      rewrite_(static_cast<Rewrite>(one_of(o, "rewrite_from", {"off", "missing", "always"}))),
      connect_timeout_(static_cast<int>(o.integer("connect_timeout", 20, 1, 3600))),
      command_timeout_(static_cast<int>(o.integer("command_timeout", 10, 1, 3600))),
      data_timeout_(static_cast<int>(o.integer("data_timeout", 20, 1, 3600))),
      session_timeout_(static_cast<int>(o.call_timeout()))
{
	if (!is_word(host_))
		o.fail("host", "expected a host name or address, got \"" + host_ + "\"");
	// A name or an address alone, as getaddrinfo() takes it: "HOST:PORT"
	// and "[::1]" resolve to nothing, and every message would defer until
	// it expires. A colon belongs only to an IPv6 address (with its
	// %scope, if any).
	std::string unscoped = host_.substr(0, host_.find('%'));
	struct in6_addr a6;
	if (host_[0] == '[')
		o.fail("host", "\"" + host_ + "\": expected no brackets: an IPv6 address alone (::1), the port in port:");
	if (host_.find(':') != std::string::npos && inet_pton(AF_INET6, unscoped.c_str(), &a6) != 1)
		o.fail("host", "\"" + host_ + "\": expected a host name or address without a port: give the port in port:");
	peer_ = (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
	policy_ = {host_, o.has("ca_file") ? o.path("ca_file") : "", o.string("tls_fingerprint", "")};
	std::string pin = policy_.fingerprint;
	pin.erase(std::remove(pin.begin(), pin.end(), ':'), pin.end());
	bool sha256 = pin.size() == 64 && pin.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
	if (o.has("tls_fingerprint") && !sha256)
		o.fail("tls_fingerprint", "expected a SHA-256 fingerprint, 64 hex digits (colons optional)");
	// tls: none sends the message in clear: only to a relay on this host,
	// where it crosses no network.
	if (tls_ == Tls::None && !loopback_address(host_) && !iequal(host_, "localhost"))
		o.fail("tls", "none sends the message in clear: only to a relay on this host (localhost, 127.0.0.0/8 or "
			      "::1), not to \"" + host_ + "\"");
	for (const char* key : {"ca_file", "tls_fingerprint"})
		if (tls_ == Tls::None && o.has(key))
			o.fail(key, "has no use with tls: none");
	if (!helo_.empty() && !is_word(helo_))
		o.fail("helo", "expected a host name, got \"" + helo_ + "\"");
	size_t at = mail_from_.find('@');
	if (!mail_from_.empty() && (!is_word(mail_from_) || at == 0 || at == std::string::npos ||
				    mail_from_.find('@', at + 1) != std::string::npos))
		o.fail("mail_from", "expected user@domain or user@, got \"" + mail_from_ + "\"");
	read_credentials(o);
	if (rewrite_ != Rewrite::Off && mail_from_.empty() && user_.find('@') == std::string::npos)
		o.fail("rewrite_from", "needs mail_from, or credentials whose user is an address");
}

// credentials: "user:password" (the password may hold ':'). AUTH never
// goes in clear, so tls: none with credentials is an error; so are
// credentials with auth: none, and auth: plain or login without them.
void Smarthost::read_credentials(HandlerOptions& o)
{
	if (!o.has("credentials")) {
		if (auth_ == Auth::Plain || auth_ == Auth::Login)
			o.fail("auth", "needs credentials");
		return;
	}
	if (tls_ == Tls::None)
		o.fail("credentials", "AUTH never goes in clear: credentials need tls: starttls or implicit");
	if (auth_ == Auth::None)
		o.fail("credentials", "has no use with auth: none");
	std::string secret = o.secret("credentials");
	size_t colon = secret.find(':');
	if (colon == 0 || colon == std::string::npos || secret.find('\n') != std::string::npos)
		o.fail("credentials", o.path("credentials") + ": expected one line \"user:password\"");
	user_ = secret.substr(0, colon);
	password_ = secret.substr(colon + 1);
}

// mail_from as an address: "user@" completed with this host's name, as
// dma's MASQUERADE does.
std::string Smarthost::masqueraded() const
{
	return mail_from_.back() == '@' ? mail_from_ + host_name() : mail_from_;
}

SmtpReply Smarthost::ehlo(SmtpClient& c) const
{
	SmtpReply r = c.command("EHLO " + (helo_.empty() ? host_name() : helo_), command_timeout_);
	if (!r.ok())
		throw Stop{Result::tempfail(peer_ + ": EHLO: " + r.text())};
	return r;
}

// Connects and gets the session as far as MAIL: greeting, EHLO, TLS,
// AUTH, each step written to *steps when given (laimctl test). Returns
// the last EHLO reply; throws Stop when the server or the policy ends it.
// The session ends within delivery_timeout, however its steps add up.
SmtpReply Smarthost::open(SmtpClient& c, std::vector<std::string>* steps) const
{
	auto step = [steps](std::string s) {
		if (steps)
			steps->push_back(std::move(s));
	};
	c.limit_session(session_timeout_);
	c.connect_tcp(host_, port_, connect_timeout_);
	step("connected to " + peer_);
	if (tls_ == Tls::Implicit) {
		c.start_tls(policy_, command_timeout_);
		step("TLS: " + c.tls_summary());
	}
	SmtpReply r = c.read_reply(command_timeout_);
	if (r.code != 220)
		throw Stop{Result::tempfail(peer_ + ": greeting: " + r.text())};
	r = ehlo(c);
	step("EHLO: " + r.text());
	if (tls_ == Tls::StartTls) {
		if (!r.extension("STARTTLS"))
			throw Stop{Result::tempfail(peer_ +
						    " offers no STARTTLS (tls: starttls): not sending in clear")};
		SmtpReply go = c.command("STARTTLS", command_timeout_);
		if (go.code != 220)
			throw Stop{Result::tempfail(peer_ + ": STARTTLS: " + go.text())};
		c.start_tls(policy_, command_timeout_);
		step("STARTTLS: " + c.tls_summary());
		r = ehlo(c);
		step("EHLO: " + r.text());
	}
	if (!user_.empty())
		step(authenticate(c, r));
	return r;
}

// AUTH PLAIN (RFC 4616) or LOGIN, as auth says and the server offers; the
// step as laimctl test shows it. A refusal defers: one wrong password
// must not fail every alert for good.
std::string Smarthost::authenticate(SmtpClient& c, const SmtpReply& ehlo) const
{
	std::optional<std::string> offered = ehlo.extension("AUTH");
	if (!offered)
		throw Stop{Result::tempfail(peer_ + " offers no AUTH, and credentials are set")};
	std::string list = " " + *offered + " ";
	auto offers = [&list](const std::string& m) { return list.find(" " + m + " ") != std::string::npos; };
	std::string mech = auth_ == Auth::Login || (auth_ == Auth::Auto && !offers("PLAIN")) ? "LOGIN" : "PLAIN";
	if (!offers(mech))
		throw Stop{Result::tempfail(peer_ + " offers AUTH " + *offered + ", not " + mech)};
	SmtpReply r;
	if (mech == "PLAIN") {
		std::string plain = std::string(1, '\0') + user_ + '\0' + password_;
		r = c.command("AUTH PLAIN " + base64(plain), command_timeout_);
	} else {
		r = c.command("AUTH LOGIN", command_timeout_);
		if (r.code == 334)
			r = c.command(base64(user_), command_timeout_);
		if (r.code == 334)
			r = c.command(base64(password_), command_timeout_);
	}
	if (r.code == 235)
		return "AUTH " + mech + " as " + user_ + ": " + r.text();
	std::string why = peer_ + ": AUTH " + mech + " ********: " + r.text();
	if (r.code == 535 || r.code == 534)
		why += " (check the credentials file; a provider with two-factor login wants an application password)";
	throw Stop{Result::tempfail(why)};
}

// MAIL FROM with SIZE when offered, BODY=8BITMIME when offered and the
// message has 8-bit bytes (sent without it when not offered, as Postfix
// does), SMTPUTF8 when offered and an address needs it.
std::string Smarthost::mail_command(const Envelope& env, const SmtpReply& ehlo, std::string_view data) const
{
	// The null sender stays null: a bounce must not bounce.
	std::string from = mail_from_.empty() || env.sender.empty() ? env.sender : masqueraded();
	std::string cmd = "MAIL FROM:<" + from + ">";
	if (ehlo.extension("SIZE"))
		cmd += " SIZE=" + std::to_string(data.size());
	if (ehlo.extension("8BITMIME") && has_8bit(data))
		cmd += " BODY=8BITMIME";
	bool utf8 = has_8bit(from) || std::any_of(env.recipients.begin(), env.recipients.end(),
						   [](const std::string& r) { return has_8bit(r); });
	if (utf8 && ehlo.extension("SMTPUTF8"))
		cmd += " SMTPUTF8";
	return cmd;
}

// One transaction for all of the call's recipients. A recipient refused
// at RCPT keeps that reply; the others get the reply to DATA or to the
// message's end, or the reason the session stopped.
Results Smarthost::deliver(const Envelope& env, const Message& msg)
{
	std::vector<Result> each(env.recipients.size());
	std::vector<bool> settled(env.recipients.size(), false);
	auto settle_rest = [&](const Result& r) {
		for (size_t i = 0; i < each.size(); i++)
			if (!settled[i])
				each[i] = r;
	};
	std::string rewritten;
	std::string_view data = msg.raw();
	if (rewrite_ != Rewrite::Off &&
	    rewrite_from(data, mail_from_.empty() ? user_ : masqueraded(), rewrite_ == Rewrite::Missing, &rewritten))
		data = rewritten;
	SmtpClient c;
	try {
		SmtpReply ehlo_reply = open(c, nullptr);
		SmtpReply r = c.command(mail_command(env, ehlo_reply, data), command_timeout_);
		if (r.code == 530)  // RFC 4954: AUTH (or TLS) required, a setting to fix, not a bad message
			throw Stop{Result::tempfail(peer_ + ": MAIL FROM: " + r.text())};
		if (r.code / 100 != 2)
			throw Stop{r.result("MAIL FROM: ")};
		for (size_t i = 0; i < env.recipients.size(); i++) {
			r = c.command("RCPT TO:<" + env.recipients[i] + ">", command_timeout_);
			if (r.code / 100 != 2) {
				each[i] = r.result("RCPT TO: ");
				settled[i] = true;
			}
		}
		if (std::find(settled.begin(), settled.end(), false) == settled.end()) {
			c.quit();  // no DATA: every recipient has its answer
			return each;
		}
		r = c.command("DATA", command_timeout_);
		if (r.code != 354)
			throw Stop{r.code >= 400 ? r.result("DATA: ") : Result::tempfail(peer_ + ": DATA: " + r.text())};
		// data_timeout, plus a second per 64 KiB for a large message
		c.send_data(data, data_timeout_ + static_cast<int>(data.size() >> 16));
		settle_rest(c.read_end_reply(data_timeout_).result());
		c.quit();
	} catch (const Stop& s) {
		settle_rest(s.result);
		c.quit();
	} catch (const SmtpError& e) {
		settle_rest(Result::tempfail(e.what()));
	}
	return each;
}

// laimctl test: the session up to AUTH, then QUIT; every step in the
// reason, one line joined by "; ".
Result Smarthost::test()
{
	std::vector<std::string> steps;
	SmtpClient c;
	Result out;
	try {
		open(c, &steps);
		c.quit();
		steps.push_back("QUIT");
		out = Result::delivered();
	} catch (const Stop& s) {
		c.quit();
		steps.push_back(s.result.reason);
		out = Result::tempfail("");
	} catch (const SmtpError& e) {
		steps.push_back(e.what());
		out = Result::tempfail("");
	}
	for (size_t i = 0; i < steps.size(); i++)
		out.reason += (i ? "; " : "") + steps[i];
	return out;
}

}  // namespace

}  // namespace laim
