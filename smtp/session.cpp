// One SMTP session (RFC 5321): command parsing, the transaction state
// machine, AUTH on a submission listener (RFC 4954, PLAIN and LOGIN: the
// credentials go to the parent, the senders it allows bind MAIL FROM) and
// the data phase, which streams the message into the spool fd through a
// fixed write buffer. See session.h for the interface.
//
// Memory per session is constant: a fixed input buffer (a command line
// longer than RFC 5321 allows is discarded up to its LF, never buffered),
// a fixed write buffer for the data phase, and reply strings whose
// capacity is reused from line to line.
#include "config.h"

#include "smtp/session.h"

#include <fnmatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "common/address.h"
#include "common/fd.h"
#include "common/hop_count.h"
#include "common/log.h"
#include "common/smtp_command.h"
#include "common/text.h"
#include "smtp/replies.h"

namespace laim {

namespace {

constexpr size_t INPUT_SIZE = 4096;          // fixed input buffer
constexpr size_t MAX_COMMAND_LINE = 512;     // RFC 5321 4.5.3.1.4, CRLF included
constexpr size_t AUTH_PARAM_ROOM = 500;      // RFC 4954 5: MAIL's AUTH= may make its line longer
constexpr size_t MAX_TEXT_LINE = 1000;       // RFC 5321 4.5.3.1.6, CRLF included
constexpr size_t WRITE_BUFFER_SIZE = 65536;  // data phase, flushed when full
constexpr size_t OUTPUT_HIGH_WATER = 65536;  // stop reading while this much waits
constexpr unsigned AUTH_MAX_FAILURES = 3;    // failures, or AUTHs held off: then 421, the end

// xtext (RFC 3461 4), as MAIL's AUTH= parameter carries an address or
// "<>": printable ASCII but '+' and '=', and "+XX" (two upper-case hex
// digits) for any octet. Empty is no value.
bool valid_xtext(std::string_view s)
{
	auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
	for (size_t i = 0; i < s.size(); i++) {
		if (s[i] == '+') {
			if (i + 2 >= s.size() || !hex(s[i + 1]) || !hex(s[i + 2]))
				return false;
			i += 2;
		} else if (s[i] < '!' || s[i] > '~' || s[i] == '=') {
			return false;
		}
	}
	return !s.empty();
}

// HELO/EHLO argument (RFC 5321 4.1.1.1): a domain (letters, digits,
// hyphens and dots, labels of at most 63 octets) or an address literal,
// so that what goes into Received: is a name and nothing else.
bool valid_helo(std::string_view s)
{
	return valid_domain(s, false) || valid_address_literal(s);
}

// RFC 5322 3.3 date-time in UTC, "Sat, 22 Nov 2026 10:00:00 +0000".
// Civil-calendar arithmetic from <chrono>: unlike gmtime_r, which makes
// glibc load /etc/localtime on first use, it touches no file, which
// matters in the chrooted, seccomp-confined smtp process.
size_t format_date(char* buf, size_t len)
{
	static constexpr const char* wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
						 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	using namespace std::chrono;
	auto now = floor<seconds>(system_clock::now());
	auto day = floor<days>(now);
	year_month_day ymd{day};
	hh_mm_ss hms{now - day};
	int n = snprintf(buf, len, "%s, %u %s %d %02d:%02d:%02d +0000", wdays[weekday{day}.c_encoding()],
			 unsigned(ymd.day()), months[unsigned(ymd.month()) - 1], int(ymd.year()),
			 int(hms.hours().count()), int(hms.minutes().count()), int(hms.seconds().count()));
	return n < 0 ? 0 : std::min(size_t(n), len - 1);
}

// Scanner state of the data phase: where we are relative to a line start.
// A line starts only after CRLF (or right after the 354), so bare CR or LF
// can never open a line, and so never end the message or unstuff a dot.
enum class DataState : uint8_t {
	LineStart,  // after CRLF
	Dot,        // "." at a line start
	DotCR,      // ".\r" at a line start: LF ends the message
	Text,       // inside a line
	CR,         // a CR inside a line: LF ends the line
};

// Why a message is refused at its end; the first cause found wins.
enum class Reject : uint8_t { None, BareCrLf, LongLine, Nul, TooBig, TooManyHops, WriteError };

std::string_view reject_reply(Reject r)
{
	switch (r) {
	case Reject::BareCrLf:
		return reply::data_bare_crlf;
	case Reject::LongLine:
		return reply::data_long_line;
	case Reject::Nul:
		return reply::data_nul;
	case Reject::TooBig:
		return reply::size_exceeded;
	case Reject::TooManyHops:  // assembled in data_end, with the count
	case Reject::WriteError:
	case Reject::None:
		break;
	}
	return reply::tempfail;
}

// RFC 4648 base64 as AUTH sends it: whole groups of four, '=' only as
// padding at the end. False for anything else.
bool base64_decode(std::string_view in, std::string& out)
{
	static constexpr std::string_view alphabet =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t pad = in.size() - std::min(in.size(), in.find_last_not_of('=') + 1);
	if (in.size() % 4 != 0 || pad > 2 || in.substr(0, in.size() - pad).find_first_not_of(alphabet) != in.npos)
		return false;
	out.resize(in.size() / 4 * 3);
	int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
				reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
	if (n < 0 || size_t(n) < pad)
		return false;
	out.resize(size_t(n) - pad);  // EVP_DecodeBlock counts the padding as bytes
	return true;
}

std::string_view without_crlf(std::string_view s)
{
	while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
		s.remove_suffix(1);
	return s;
}

}  // namespace

struct Session::Impl {
	// Command and data input; never grows.
	std::array<char, INPUT_SIZE> in;
	size_t in_start = 0, in_end = 0;
	bool discarding = false;  // skipping the rest of a too long command line
	bool busy = false;        // inside process(): its loop picks up replies
	bool in_data = false;     // between 354 and the final "."
	bool input_ended = false; // the client shut its side: nothing more comes

	enum class Proto : uint8_t { None, Helo, Ehlo } proto = Proto::None;
	bool txn = false;         // MAIL accepted, neither committed nor aborted
	bool utf8 = false;        // SMTPUTF8 on the MAIL command
	bool rcpt_tried = false;  // some RCPT was given in this transaction
	bool shutdown_pending = false;
	std::string pending;      // the recipient the backend is judging

	// AUTH (RFC 4954).
	enum class AuthStep : uint8_t { None, Plain, LoginUser, LoginPassword } auth_step = AuthStep::None;
	std::string auth_user;      // authenticated as; "" before
	std::string auth_pending;   // the user the parent is asked about
	std::string login_user;     // LOGIN's first answer
	std::string secret;         // a decoded response, overwritten after use
	unsigned auth_failures = 0;
	unsigned auth_holds = 0;  // its AUTHs held off (454): the first is logged
	bool senders_bound = false;
	std::vector<std::string> senders;  // patterns, when senders_bound
	std::vector<std::string> spare;  // strings of past recipients, reused

	// Data phase.
	UniqueFd spool;
	std::string queue_id;
	std::unique_ptr<char[]> wbuf;  // WRITE_BUFFER_SIZE, allocated at first DATA
	size_t wlen = 0;
	uint64_t written = 0;  // bytes written to the spool, Received: included
	uint64_t size = 0;     // message bytes after unstuffing, Received: excluded
	size_t line_len = 0;   // octets of the current line, CRLF excluded
	DataState ds = DataState::LineStart;
	Reject reject = Reject::None;
	HopCounter hops;       // Received: fields in the message's header
};

Session::Session(SessionBackend& backend, const SmtpSettings& settings, ClientInfo client, uint32_t id)
    : backend_(backend), settings_(settings), client_(std::move(client)), id_(id),
      impl_(std::make_unique<Impl>())
{
}

Session::~Session() = default;

void Session::greet()
{
	out_.append("220 ").append(settings_.hostname).append(" ESMTP ").append(settings_.ident).append("\r\n");
}

// A client that talks before the greeting is not a mail client that
// follows RFC 5321 3.1; tell it and close.
void Session::pregreet()
{
	reply(reply::pregreet);
	closing_ = true;
}

// "421 4.x.x HOSTNAME text": the replies that close the connection.
void Session::reply_host(std::string_view code, std::string_view text)
{
	out_.append(code).append(settings_.hostname).append(text);
}

std::pair<char*, size_t> Session::input_space()
{
	Impl& m = *impl_;
	// Backpressure: a client that does not read its replies stops being read.
	if (closing_ || starttls_wanted_ || out_.size() >= OUTPUT_HIGH_WATER)
		return {nullptr, 0};
	if (m.in_start > 0) {
		memmove(m.in.data(), m.in.data() + m.in_start, m.in_end - m.in_start);
		m.in_end -= m.in_start;
		m.in_start = 0;
	}
	return {m.in.data() + m.in_end, INPUT_SIZE - m.in_end};
}

void Session::input_commit(size_t n)
{
	Impl& m = *impl_;
	m.in_end += std::min(n, INPUT_SIZE - m.in_end);
	if (closing_) {
		m.in_start = m.in_end = 0;
		return;
	}
	process();
}

bool Session::has_pending_input() const { return impl_->in_end > impl_->in_start; }

void Session::output_consumed(size_t n) { out_.erase(0, std::min(n, out_.size())); }

// Works through the buffered input until it is used up, a backend reply
// is awaited, or the session closes. Backend replies given synchronously
// from inside (busy) are picked up by this loop rather than recursing.
void Session::process()
{
	Impl& m = *impl_;
	if (m.busy)
		return;
	m.busy = true;
	while (!closing_ && !starttls_wanted_ && waiting_ == Wait::None && m.in_start < m.in_end) {
		if (m.in_data)
			data_input();
		else if (!command_input())
			break;
	}
	if (m.in_start == m.in_end)
		m.in_start = m.in_end = 0;
	m.busy = false;
	// What is left cannot go on once the client's side is shut: a line
	// without its end, a message without its final ".".
	if (m.input_ended && !closing_ && waiting_ == Wait::None) {
		abort_transaction();
		closing_ = true;
	}
}

// After an asynchronous backend reply: continue with buffered input.
void Session::resume()
{
	if (!impl_->busy)
		process();
}

// Takes one command line off the input buffer and runs it; false when no
// complete line is buffered yet.
bool Session::command_input()
{
	Impl& m = *impl_;
	const char* p = m.in.data() + m.in_start;
	size_t n = m.in_end - m.in_start;
	const char* lf = static_cast<const char*>(memchr(p, '\n', n));
	if (m.discarding) {
		if (lf == nullptr) {
			m.in_start = m.in_end = 0;
			return false;
		}
		m.discarding = false;
		m.in_start += lf - p + 1;
		return true;
	}
	if (lf == nullptr) {
		if (n < command_line_limit(std::string_view(p, n)))
			return false;
		// Already too long whatever follows (RFC 5321 4.5.3.1.10): answer
		// now and drop bytes up to the LF instead of buffering them.
		m.auth_step = Impl::AuthStep::None;  // a reply other than 334 ends the exchange
		reply(reply::line_too_long);
		m.discarding = true;
		m.in_start = m.in_end = 0;
		return true;
	}
	size_t len = lf - p + 1;
	m.in_start += len;
	if (len > command_line_limit(std::string_view(p, len))) {
		m.auth_step = Impl::AuthStep::None;
		reply(reply::line_too_long);
		return true;
	}
	// RFC 5321 2.3.8: only CRLF ends a line. A bare LF, or a CR anywhere
	// else in the line, gets an answer and the line is not run, so no
	// reading of the line ends can make one line two commands.
	std::string_view line(p, len - 1);
	bool crlf = !line.empty() && line.back() == '\r' && memchr(line.data(), '\r', line.size() - 1) == nullptr;
	if (crlf)
		line.remove_suffix(1);
	if (m.auth_step != Impl::AuthStep::None || istarts(line, "AUTH ")) {
		if (!crlf) {
			m.auth_step = Impl::AuthStep::None;  // a reply other than 334 ends the exchange
			reply(reply::bare_line_end);
		} else if (m.auth_step != Impl::AuthStep::None) {
			auth_response(line);
		} else {
			command(line);
		}
		OPENSSL_cleanse(const_cast<char*>(p), len);  // the credentials, in base64
		return true;
	}
	if (!crlf) {
		reply(reply::bare_line_end);
		return true;
	}
	command(line);
	return true;
}

// The longest command line (CRLF included) that one starting with start
// may be: RFC 5321's, and for MAIL 500 octets more where AUTH is offered
// (RFC 4954 5), for its AUTH= parameter.
size_t Session::command_line_limit(std::string_view start) const
{
	return auth_offered() && istarts(start, "MAIL ") ? MAX_COMMAND_LINE + AUTH_PARAM_ROOM : MAX_COMMAND_LINE;
}

// Runs one command line (CRLF removed). Verbs are case-insensitive
// (RFC 5321 2.4).
void Session::command(std::string_view line)
{
	Impl& m = *impl_;
	if (memchr(line.data(), '\0', line.size()) != nullptr) {
		reply(reply::nul_in_command);
		return;
	}
	auto [verb, arg] = smtp_command(line);  // the split sendmail -bs relies on, in common/

	if (m.shutdown_pending && !m.txn) {
		reply_host(reply::shutdown_code, reply::shutdown);
		closing_ = true;
		return;
	}
	if (iequal(verb, "EHLO")) {
		cmd_helo(arg, true);
	} else if (iequal(verb, "HELO")) {
		cmd_helo(arg, false);
	} else if (iequal(verb, "MAIL")) {
		cmd_mail(arg);
	} else if (iequal(verb, "AUTH")) {
		cmd_auth(arg);
	} else if (iequal(verb, "RCPT")) {
		cmd_rcpt(arg);
	} else if (iequal(verb, "DATA")) {
		cmd_data(arg);
	} else if (iequal(verb, "STARTTLS")) {
		cmd_starttls(arg);
	} else if (iequal(verb, "RSET")) {
		if (!arg.empty()) {
			reply(reply::syntax_noarg);
			return;
		}
		abort_transaction();
		reply(reply::ok);
	} else if (iequal(verb, "NOOP")) {
		reply(reply::ok);
	} else if (iequal(verb, "QUIT")) {
		if (!arg.empty()) {
			reply(reply::syntax_noarg);
			return;
		}
		reply(reply::bye);
		abort_transaction();
		closing_ = true;
	} else if (iequal(verb, "VRFY")) {
		reply(arg.empty() ? reply::syntax_vrfy : reply::vrfy);
	} else if (iequal(verb, "HELP")) {
		reply(reply::help);
#ifdef LAIM_SECCOMP_TRIGGER
	} else if (iequal(verb, "XSECCOMP")) {
		backend_.on_seccomp_trigger();
		reply(reply::ok);
#endif
	} else {
		reply(reply::unknown_command);
	}
}

// HELO/EHLO (RFC 5321 4.1.1.1): resets any transaction, like RSET.
void Session::cmd_helo(std::string_view arg, bool ehlo)
{
	Impl& m = *impl_;
	if (arg.empty()) {
		reply(ehlo ? reply::syntax_ehlo : reply::syntax_helo);
		return;
	}
	if (!valid_helo(arg)) {
		reply(reply::bad_helo);
		return;
	}
	abort_transaction();
	helo_.assign(arg);
	if (!ehlo) {
		m.proto = Impl::Proto::Helo;
		out_.append("250 ").append(settings_.hostname).append("\r\n");
		return;
	}
	m.proto = Impl::Proto::Ehlo;
	out_.append("250-").append(settings_.hostname).append("\r\n");
	out_.append(reply::ehlo_size);
	if (settings_.size_limit > 0) {
		char num[24];
		auto r = std::to_chars(num, num + sizeof num, settings_.size_limit);
		out_.append(" ").append(num, r.ptr);
	}
	out_.append("\r\n").append(reply::ehlo_8bitmime);
	if (settings_.smtputf8)
		out_.append(reply::ehlo_smtputf8);
	if (client_.starttls && !tls_)
		out_.append(reply::ehlo_starttls);
	if (auth_offered())
		out_.append(reply::ehlo_auth);
	out_.append(reply::ehlo_last);
}

// STARTTLS (RFC 3207 4): only where the listener offers it, once; 454
// while its certificate did not load, a fault of ours. What the client
// sent behind it in the clear is dropped unread (the command-injection
// class of CVE-2011-0411), and the session starts over under TLS: no
// HELO, no transaction (4.2).
void Session::cmd_starttls(std::string_view arg)
{
	Impl& m = *impl_;
	if (!client_.starttls) {
		reply(reply::unknown_command);  // as before listeners had TLS
		return;
	}
	if (tls_) {
		reply(reply::tls_active);
		return;
	}
	if (!arg.empty()) {
		reply(reply::syntax_noarg);
		return;
	}
	if (client_.tls_unavailable) {
		reply(reply::tls_unavailable);
		return;
	}
	abort_transaction();
	helo_.clear();
	m.proto = Impl::Proto::None;
	m.in_start = m.in_end = 0;
	m.discarding = false;
	reply(reply::starttls_go);
	starttls_wanted_ = true;
}

void Session::tls_started()
{
	starttls_wanted_ = false;
	tls_ = true;
}

// "FROM:" / "TO:" and at most one space before the path: RFC 5321 has
// none, but enough clients send one that Postfix and others allow it.
static bool take_path_prefix(std::string_view& arg, std::string_view prefix)
{
	if (!istarts(arg, prefix))
		return false;
	arg.remove_prefix(prefix.size());
	if (!arg.empty() && arg[0] == ' ')
		arg.remove_prefix(1);
	return true;
}

// MAIL FROM:<reverse-path> [SP Mail-parameters] (RFC 5321 4.1.1.2), with
// SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and, where AUTH
// is offered, AUTH (RFC 4954 5).
void Session::cmd_mail(std::string_view arg)
{
	Impl& m = *impl_;
	if (m.proto == Impl::Proto::None) {
		reply(reply::need_helo);
		return;
	}
	if (m.txn) {
		reply(reply::nested_mail);
		return;
	}
	// A submission listener wants TLS, then AUTH; a STARTTLS listener
	// without auth: required takes mail in the clear too (as Postfix's
	// smtpd_tls_security_level=may).
	if (client_.auth_required && !tls_) {
		reply(client_.tls_unavailable ? reply::tls_unavailable : reply::need_starttls);
		return;
	}
	if (client_.auth_required && m.auth_user.empty()) {
		reply(reply::need_auth);
		return;
	}
	SmtpPath path;
	AddressStatus st = AddressStatus::Syntax;
	if (take_path_prefix(arg, "FROM:"))
		st = parse_path(arg, path);
	if (st == AddressStatus::Syntax) {
		reply(reply::syntax_mail);
		return;
	}
	if (st == AddressStatus::Invalid) {
		reply(reply::bad_sender);
		return;
	}

	bool utf8 = false;
	std::string_view params = path.rest;
	if (m.proto == Impl::Proto::Helo && params.find_first_not_of(' ') != std::string_view::npos) {
		reply(reply::mail_param_helo);
		return;
	}
	for (;;) {
		while (!params.empty() && params[0] == ' ')
			params.remove_prefix(1);
		if (params.empty())
			break;
		size_t sp = params.find(' ');
		std::string_view param = params.substr(0, sp);
		params.remove_prefix(param.size());
		size_t eq = param.find('=');
		std::string_view key = param.substr(0, eq);
		std::string_view value = eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
		if (eq != std::string_view::npos && iequal(key, "SIZE")) {
			// RFC 1870 6: refuse at MAIL what would exceed the limit.
			uint64_t v = 0;
			auto r = std::from_chars(value.data(), value.data() + value.size(), v);
			bool overflow = r.ec == std::errc::result_out_of_range;
			if (value.empty() || r.ptr != value.data() + value.size() || (r.ec != std::errc() && !overflow)) {
				reply(reply::syntax_param);
				return;
			}
			if (settings_.size_limit > 0 && (overflow || v > settings_.size_limit)) {
				reply(reply::size_exceeded);
				return;
			}
		} else if (eq != std::string_view::npos && iequal(key, "BODY")) {
			if (!iequal(value, "7BIT") && !iequal(value, "8BITMIME")) {
				reply(reply::mail_param);
				return;
			}
		} else if (settings_.smtputf8 && iequal(param, "SMTPUTF8")) {
			utf8 = true;
		} else if (eq != std::string_view::npos && iequal(key, "AUTH") && auth_offered()) {
			// RFC 4954 5: who submitted the message, as the client
			// says; taken and ignored (the Received: header names
			// the user of this session's AUTH).
			if (!valid_xtext(value)) {
				reply(reply::syntax_param);
				return;
			}
		} else {
			reply(reply::mail_param);
			return;
		}
	}
	// RFC 6531 3.7.4.1: non-ASCII addresses only with SMTPUTF8.
	if (path.utf8 && !utf8) {
		reply(reply::need_smtputf8);
		return;
	}
	if (!sender_allowed(path.mailbox)) {
		out_.append(reply::sender_not_owned_code).append(path.mailbox).append(reply::sender_not_owned);
		out_.append(m.auth_user).append("\r\n");
		return;
	}
	m.utf8 = utf8;
	m.rcpt_tried = false;
	sender_.assign(path.mailbox);
	waiting_ = Wait::Mail;
	backend_.on_mail(*this, sender_);
}

// RCPT TO:<forward-path> (RFC 5321 4.1.1.3); no parameters are supported.
void Session::cmd_rcpt(std::string_view arg)
{
	Impl& m = *impl_;
	if (!m.txn) {
		reply(reply::need_mail);
		return;
	}
	m.rcpt_tried = true;
	// RFC 5321 4.5.3.1.8 and 4.5.3.1.10: 452 beyond the recipient limit.
	if (rcpts_.size() >= settings_.max_rcpts) {
		reply(reply::too_many_rcpts);
		return;
	}
	SmtpPath path;
	AddressStatus st = AddressStatus::Syntax;
	if (take_path_prefix(arg, "TO:"))
		st = parse_path(arg, path);
	if (st == AddressStatus::Syntax) {
		reply(reply::syntax_rcpt);
		return;
	}
	if (st == AddressStatus::Invalid || path.mailbox.empty()) {
		reply(reply::bad_rcpt);
		return;
	}
	if (path.rest.find_first_not_of(' ') != std::string_view::npos) {
		reply(reply::rcpt_param);
		return;
	}
	if (path.utf8 && !m.utf8) {
		reply(reply::need_smtputf8);
		return;
	}
	m.pending.assign(path.mailbox);
	waiting_ = Wait::Rcpt;
	backend_.on_rcpt(*this, m.pending);
}

// DATA (RFC 5321 4.1.1.4): the backend creates the spool file first.
void Session::cmd_data(std::string_view arg)
{
	Impl& m = *impl_;
	if (!arg.empty()) {
		reply(reply::syntax_noarg);
		return;
	}
	if (!m.txn) {
		reply(reply::need_mail);
		return;
	}
	// RFC 5321 3.3: no recipient accepted, 503 or 554.
	if (rcpts_.empty()) {
		reply(m.rcpt_tried ? reply::no_valid_rcpts : reply::need_rcpt);
		return;
	}
	waiting_ = Wait::Data;
	backend_.on_data(*this);
}

// ---------------------------------------------------------------- AUTH

// AUTH mechanism [initial-response] (RFC 4954 4): PLAIN (RFC 4616) and
// LOGIN, offered only on an auth: required listener under TLS, once per
// session and outside a transaction.
void Session::cmd_auth(std::string_view arg)
{
	Impl& m = *impl_;
	if (m.proto != Impl::Proto::Ehlo) {
		reply(reply::auth_need_ehlo);
		return;
	}
	if (!auth_offered()) {
		reply(client_.auth_required && client_.tls_unavailable ? reply::tls_unavailable : reply::auth_not_enabled);
		return;
	}
	if (!m.auth_user.empty()) {
		reply(reply::auth_twice);
		return;
	}
	if (m.txn) {
		reply(reply::auth_in_txn);
		return;
	}
	size_t sp = arg.find(' ');
	std::string_view mech = arg.substr(0, sp);
	std::string_view initial = sp == std::string_view::npos ? std::string_view() : arg.substr(sp + 1);
	if (mech.empty() || initial.find(' ') != std::string_view::npos) {
		reply(reply::syntax_auth);
		return;
	}
	if (iequal(mech, "PLAIN")) {
		m.auth_step = Impl::AuthStep::Plain;
	} else if (iequal(mech, "LOGIN")) {
		m.auth_step = Impl::AuthStep::LoginUser;
	} else {
		reply(reply::auth_unknown_mech);
		return;
	}
	if (initial.empty())
		reply(m.auth_step == Impl::AuthStep::Plain ? reply::auth_plain_go : reply::auth_login_user);
	else
		auth_response(initial == "=" ? std::string_view() : initial);  // "=": an empty response
}

// One base64 response: an initial response, or a line after a 334.
void Session::auth_response(std::string_view line)
{
	Impl& m = *impl_;
	Impl::AuthStep step = m.auth_step;
	m.auth_step = Impl::AuthStep::None;
	if (line == "*") {
		reply(reply::auth_cancelled);
		return;
	}
	bool ok = base64_decode(line, m.secret);
	if (ok && step == Impl::AuthStep::Plain) {
		auth_plain(m.secret);
	} else if (ok && step == Impl::AuthStep::LoginUser) {
		m.login_user.assign(m.secret);
		m.auth_step = Impl::AuthStep::LoginPassword;
		reply(reply::auth_login_password);
	} else if (ok) {
		auth_check(m.login_user, m.secret);
	} else {
		reply(reply::auth_bad_base64);
	}
	OPENSSL_cleanse(m.secret.data(), m.secret.size());
	m.secret.clear();
}

// PLAIN's response: authzid NUL authcid NUL password. Acting for another
// user (an authzid other than the authcid) is not allowed: a failure.
void Session::auth_plain(std::string_view response)
{
	size_t a = response.find('\0');
	size_t b = a == std::string_view::npos ? a : response.find('\0', a + 1);
	if (b == std::string_view::npos || response.find('\0', b + 1) != std::string_view::npos) {
		reply(reply::auth_bad_base64);
		return;
	}
	std::string_view authzid = response.substr(0, a), user = response.substr(a + 1, b - a - 1);
	if (!authzid.empty() && authzid != user) {
		impl_->auth_pending.assign(user);
		waiting_ = Wait::Auth;
		auth_failed();
		return;
	}
	auth_check(user, response.substr(b + 1));
}

// Asks the parent (through the backend) whether password is user's.
void Session::auth_check(std::string_view user, std::string_view password)
{
	Impl& m = *impl_;
	m.auth_pending.assign(user);
	waiting_ = Wait::Auth;
	std::string pw(password);
	backend_.on_auth(*this, m.auth_pending, pw);
	OPENSSL_cleanse(pw.data(), pw.size());
	OPENSSL_cleanse(m.login_user.data(), m.login_user.size());
	m.login_user.clear();
}

void Session::auth_reply(bool ok, bool bound, std::vector<std::string> senders)
{
	Impl& m = *impl_;
	if (waiting_ != Wait::Auth)
		return;
	if (!ok) {
		auth_failed();
		return;
	}
	waiting_ = Wait::None;
	if (closing_)
		return;
	m.auth_user = std::move(m.auth_pending);
	m.senders_bound = bound;
	m.senders = std::move(senders);
	log_info("smtp: AUTH as %s from %s", comment_name(m.auth_user).c_str(), client_.address.c_str());
	reply(reply::auth_ok);
	resume();
}

// Logs the session's first refusal only: a client held off can repeat
// AUTH without a delay, and each line would cost more than its 454.
void Session::auth_held(std::string_view why)
{
	Impl& m = *impl_;
	if (waiting_ != Wait::Auth)
		return;
	if (m.auth_holds++ == 0)
		log_info("smtp: AUTH for user=%s from %s %.*s, not checked", comment_name(m.auth_pending).c_str(),
			 client_.address.c_str(), (int)why.size(), why.data());
	m.auth_pending.clear();
	waiting_ = Wait::None;
	if (closing_)
		return;
	reply(reply::auth_held);
	// A client that goes on trying while held off gets no check, but
	// would spin the session for as long as it liked: ended as at its
	// third failure.
	if (m.auth_holds >= AUTH_MAX_FAILURES) {
		reply_host(reply::auth_limit_code, reply::auth_limit);
		closing_ = true;
		return;
	}
	resume();
}

// Counts and logs a failure; the 535 waits for the backend's delay.
void Session::auth_failed()
{
	Impl& m = *impl_;
	m.auth_failures++;
	log_info("smtp: AUTH failed for user=%s from %s (%u/%u)", comment_name(m.auth_pending).c_str(),
		 client_.address.c_str(), m.auth_failures, AUTH_MAX_FAILURES);
	m.auth_pending.clear();
	waiting_ = Wait::AuthDelay;
	backend_.on_auth_delay(*this);
}

void Session::auth_delay_over()
{
	Impl& m = *impl_;
	if (waiting_ != Wait::AuthDelay)
		return;
	waiting_ = Wait::None;
	if (closing_)
		return;
	reply(reply::auth_failed);
	if (m.auth_failures >= AUTH_MAX_FAILURES) {
		reply_host(reply::auth_limit_code, reply::auth_limit);
		closing_ = true;
		return;
	}
	resume();
}

// The senders file binds an authenticated user's MAIL FROM to its
// patterns ('*' any characters, case ignored); the null sender is always
// allowed, as Postfix's reject_sender_login_mismatch allows it (bounces
// and receipts a user's client sends).
bool Session::sender_allowed(std::string_view sender) const
{
	const Impl& m = *impl_;
	if (!m.senders_bound || sender.empty())
		return true;
	std::string s(sender);
	return std::any_of(m.senders.begin(), m.senders.end(),
			   [&s](const std::string& p) { return fnmatch(p.c_str(), s.c_str(), FNM_CASEFOLD) == 0; });
}

const std::string& Session::auth_user() const { return impl_->auth_user; }

void SessionBackend::on_auth(Session& s, const std::string&, const std::string&) { s.auth_reply(false); }

void SessionBackend::on_auth_delay(Session& s) { s.auth_delay_over(); }

void Session::mail_reply(BackendStatus st, std::string_view text)
{
	Impl& m = *impl_;
	if (waiting_ != Wait::Mail)
		return;
	waiting_ = Wait::None;
	if (closing_) {
		// The client left while the backend reserved room: give it back.
		if (st == BackendStatus::Ok)
			backend_.on_abort(*this);
		sender_.clear();
		return;
	}
	switch (st) {
	case BackendStatus::Ok:
		m.txn = true;
		reply(reply::mail_ok);
		break;
	case BackendStatus::Full:
		sender_.clear();
		reply(reply::queue_full);
		break;
	case BackendStatus::RateLimited:
		sender_.clear();
		out_.append(reply::rate_limited).append(text.empty() ? reply::rate_limited_default : text).append("\r\n");
		break;
	default:
		sender_.clear();
		reply(reply::tempfail);
		break;
	}
	resume();
}

void Session::rcpt_reply(BackendStatus st)
{
	Impl& m = *impl_;
	if (waiting_ != Wait::Rcpt)
		return;
	waiting_ = Wait::None;
	if (closing_)
		return;
	switch (st) {
	case BackendStatus::Ok:
		if (m.spare.empty()) {
			rcpts_.push_back(m.pending);
		} else {
			rcpts_.push_back(std::move(m.spare.back()));
			m.spare.pop_back();
			rcpts_.back().assign(m.pending);
		}
		reply(reply::rcpt_ok);
		break;
	case BackendStatus::Reject:
		reply(reply::rcpt_rejected);
		break;
	case BackendStatus::Full:
		reply(reply::queue_full);
		break;
	case BackendStatus::TooMany:
		reply(reply::too_many_rcpts);
		break;
	default:
		reply(reply::rcpt_deferred);
		break;
	}
	resume();
}

void Session::data_reply(BackendStatus st, int fd, const std::string& queue_id)
{
	Impl& m = *impl_;
	UniqueFd spool(fd);  // ours from here, whatever happens
	if (waiting_ != Wait::Data)
		return;
	waiting_ = Wait::None;
	if (closing_)
		return;  // the transaction was aborted when the session closed
	if (st != BackendStatus::Ok || !spool) {
		spool.reset();
		reply(st == BackendStatus::Full ? reply::queue_full : reply::tempfail);
		abort_transaction();
		resume();
		return;
	}
	// RFC 2920 3.1: DATA ends a command group; a client that sends more
	// before the 354 is not speaking SMTP (or is smuggling): close.
	if (m.in_end > m.in_start) {
		spool.reset();
		log_info("session %u: %s: pipelining after DATA from %s[%s]", id_, queue_id.c_str(),
			 helo_.c_str(), client_.address.c_str());
		reply(reply::pipelining);
		abort_transaction();
		closing_ = true;
		return;
	}
	m.spool = std::move(spool);
	m.queue_id.assign(queue_id);
	data_start();
	reply(reply::data_go);
	resume();
}

void Session::commit_reply(BackendStatus st)
{
	Impl& m = *impl_;
	if (waiting_ != Wait::Commit)
		return;
	waiting_ = Wait::None;
	reset_transaction();
	if (closing_)
		return;
	switch (st) {
	case BackendStatus::Ok:
		out_.append(reply::queued).append(m.queue_id).append("\r\n");
		break;
	case BackendStatus::TooBig:
		reply(reply::size_exceeded);
		break;
	default:
		reply(reply::tempfail);
		break;
	}
	resume();
}

void Session::timeout()
{
	if (closing_)
		return;
	reply_host(reply::timeout_code, reply::timeout);
	abort_transaction();
	closing_ = true;
}

void Session::shutdown()
{
	Impl& m = *impl_;
	if (closing_)
		return;
	if (m.txn || m.in_data || waiting_ != Wait::None) {
		m.shutdown_pending = true;
		return;
	}
	reply_host(reply::shutdown_code, reply::shutdown);
	closing_ = true;
}

// A client may shut its side once it has sent all (sendmail -bs after
// QUIT does): what it sent is still answered, and process() ends the
// session once nothing buffered can go on. But a client that shut it
// with nothing behind a MAIL still unanswered has left (it can send no
// RCPT, nor QUIT): the MAIL goes now, not once the handler's line for
// queue room reaches it.
void Session::input_ended()
{
	Impl& m = *impl_;
	m.input_ended = true;
	if (waiting_ == Wait::Mail && m.in_start == m.in_end) {
		disconnected();
		return;
	}
	process();
}

void Session::disconnected()
{
	Impl& m = *impl_;
	m.in_start = m.in_end = 0;
	// A MAIL in the handler's line for queue room has no transaction yet,
	// but its place in line must go, not be served later.
	if (waiting_ == Wait::Mail)
		backend_.on_abort(*this);
	abort_transaction();
	closing_ = true;
}

// Ends the transaction without commit: the spool fd is closed first, then
// the backend drops its reservation and any spool file.
void Session::abort_transaction()
{
	Impl& m = *impl_;
	bool had = m.txn;
	m.spool.reset();
	m.in_data = false;
	if (had)
		backend_.on_abort(*this);
	reset_transaction();
}

void Session::reset_transaction()
{
	Impl& m = *impl_;
	m.txn = false;
	m.utf8 = false;
	m.rcpt_tried = false;
	sender_.clear();
	// Keep the strings' memory for the next transaction.
	for (std::string& r : rcpts_)
		m.spare.push_back(std::move(r));
	rcpts_.clear();
}

// ---------------------------------------------------------------- data

void Session::data_start()
{
	Impl& m = *impl_;
	if (!m.wbuf)
		m.wbuf = std::make_unique_for_overwrite<char[]>(WRITE_BUFFER_SIZE);
	m.wlen = 0;
	m.written = 0;
	m.size = 0;
	m.line_len = 0;
	m.ds = DataState::LineStart;
	m.reject = Reject::None;
	m.hops = {};
	m.in_data = true;
	write_received();
}

// The trace header of RFC 5321 4.4, first in the message:
//   Received: from HELO (CLIENT)
//   	(authenticated as USER)             after AUTH
//   	by HOSTNAME (laim) with ESMTPSA id QUEUEID
//   	for <rcpt>; DATE
// "with" names the protocol as RFC 3848 and RFC 6531 3.7.3 register it
// (S under TLS, A after AUTH); "for" only with a single recipient, not
// to disclose the others.
void Session::write_received()
{
	Impl& m = *impl_;
	auto put = [this](std::string_view s) { spool_put(s.data(), s.size()); };
	put("Received: from ");
	put(helo_);
	put(" (");
	put(client_.address);
	if (client_.uid) {
		char num[16];
		auto r = std::to_chars(num, num + sizeof num, *client_.uid);
		put(" uid ");
		put(std::string_view(num, r.ptr - num));
		if (!client_.user.empty()) {
			// A login name is a trusted but unchecked string.
			put(" (");
			put(comment_name(client_.user));
			put(")");
		}
	}
	put(")\r\n\t");
	if (!m.auth_user.empty()) {
		put("(authenticated as ");
		put(comment_name(m.auth_user));
		put(")\r\n\t");
	}
	put("by ");
	put(settings_.hostname);
	put(" (laim) with ");
	put(m.utf8 ? "UTF8SMTP" : m.proto == Impl::Proto::Ehlo ? "ESMTP" : "SMTP");
	if (tls_ && m.proto == Impl::Proto::Ehlo)
		put("S");  // ESMTPS, UTF8SMTPS: RFC 3848, RFC 6531 3.7.3
	if (m.proto == Impl::Proto::Ehlo && !m.auth_user.empty())
		put("A");  // ESMTPSA: RFC 3848
	put(" id ");
	put(m.queue_id);
	if (rcpts_.size() == 1) {
		put("\r\n\tfor <");
		put(rcpts_[0]);
		put(">");
	}
	put("; ");
	char date[64];
	put(std::string_view(date, format_date(date, sizeof date)));
	put("\r\n");
}

void Session::data_input()
{
	Impl& m = *impl_;
	bool end = false;
	m.in_start += data_scan(m.in.data() + m.in_start, m.in_end - m.in_start, end);
	if (end)
		data_end();
}

// The data phase byte machine (RFC 5321 4.1.1.4, 4.5.2): removes the
// transparency dot, finds the end at CRLF "." CRLF only, and marks the
// message bad on a bare CR or LF (never treating either as a line end, so
// no SMTP smuggling), on NUL and on an over-long line. Returns the bytes
// used; sets end after the final LF.
size_t Session::data_scan(const char* p, size_t n, bool& end)
{
	Impl& m = *impl_;
	size_t i = 0;
	auto refuse = [&m](Reject r) {
		if (m.reject == Reject::None)
			m.reject = r;
	};
	while (i < n) {
		char c = p[i];
		switch (m.ds) {
		case DataState::Text: {
			size_t j = i;
			while (j < n && p[j] != '\r' && p[j] != '\n' && p[j] != '\0')
				j++;
			if (j > i) {
				data_put(p + i, j - i);
				i = j;
				break;
			}
			i++;
			if (c == '\r')
				m.ds = DataState::CR;
			else if (c == '\n')
				refuse(Reject::BareCrLf);
			else
				refuse(Reject::Nul);
			break;
		}
		case DataState::LineStart:
			if (c == '.') {
				i++;
				m.ds = DataState::Dot;
			} else {
				m.ds = DataState::Text;
			}
			break;
		case DataState::Dot:
			if (c == '\r') {
				i++;
				m.ds = DataState::DotCR;
			} else {
				// A line starting with "." had it doubled: drop one (4.5.2).
				m.ds = DataState::Text;
			}
			break;
		case DataState::DotCR:
			i++;
			if (c == '\n') {
				end = true;
				return i;
			}
			refuse(Reject::BareCrLf);
			m.ds = DataState::Text;
			i--;
			break;
		case DataState::CR:
			if (c == '\n') {
				i++;
				data_put_crlf();
				m.ds = DataState::LineStart;
			} else {
				refuse(Reject::BareCrLf);
				m.ds = DataState::Text;
			}
			break;
		}
	}
	return i;
}

// Message text within a line: counted, limited, written. The RFC 5321
// line limit binds TCP clients only: on the unix socket the sendmail
// command passes what cron and the rest printed, long lines included
// (data_size_limit still applies), and streaming keeps memory flat.
void Session::data_put(const char* p, size_t n)
{
	Impl& m = *impl_;
	m.line_len += n;
	m.size += n;
	m.hops.feed(std::string_view(p, n));
	if (m.reject != Reject::None)
		return;
	if (m.line_len > MAX_TEXT_LINE - 2 && client_.address != "local")
		m.reject = Reject::LongLine;
	else if (settings_.size_limit > 0 && m.size > settings_.size_limit)
		m.reject = Reject::TooBig;
	else
		spool_put(p, n);
}

void Session::data_put_crlf()
{
	Impl& m = *impl_;
	m.line_len = 0;
	m.size += 2;
	m.hops.feed("\r\n");
	if (m.reject != Reject::None)
		return;
	if (settings_.size_limit > 0 && m.size > settings_.size_limit)
		m.reject = Reject::TooBig;
	else
		spool_put("\r\n", 2);
}

void Session::spool_put(const char* p, size_t n)
{
	Impl& m = *impl_;
	while (n > 0 && m.reject == Reject::None) {
		size_t k = std::min(n, WRITE_BUFFER_SIZE - m.wlen);
		memcpy(m.wbuf.get() + m.wlen, p, k);
		m.wlen += k;
		p += k;
		n -= k;
		if (m.wlen == WRITE_BUFFER_SIZE)
			spool_flush();
	}
}

// Writes the buffer to the spool fd. A failure is remembered: the rest of
// the message is still read (to find its end) and then refused with 451.
void Session::spool_flush()
{
	Impl& m = *impl_;
	size_t off = 0;
	while (off < m.wlen) {
		ssize_t r = ::write(m.spool.get(), m.wbuf.get() + off, m.wlen - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			log_warn("session %u: %s: write to spool file", id_, m.queue_id.c_str());
			m.reject = Reject::WriteError;
			break;
		}
		off += size_t(r);
	}
	m.written += off;
	m.wlen = 0;
}

// After CRLF "." CRLF: commit the message or refuse it. One with more
// Received: fields than hop_count_limit has gone round a mail loop
// (RFC 5321 6.3): refused, and the client, laim itself or another MTA
// of the loop, bounces it instead of sending it round again.
void Session::data_end()
{
	Impl& m = *impl_;
	m.in_data = false;
	if (m.reject == Reject::None && m.hops.hops() > settings_.hop_count_limit)
		m.reject = Reject::TooManyHops;
	if (m.reject == Reject::None)
		spool_flush();
	m.wlen = 0;
	m.spool.reset();  // closed before on_commit/on_abort
	if (m.reject == Reject::TooManyHops) {
		log_info("%s: reject: DATA from %s[%s]: %s; from=<%s>", m.queue_id.c_str(), helo_.c_str(),
			 client_.address.c_str(), hop_count_fault(m.hops.hops(), settings_.hop_count_limit).c_str(),
			 sender_.c_str());
		out_.append(reply::hop_limit_code).append(std::to_string(m.hops.hops())).append(reply::hop_limit);
		abort_transaction();
		return;
	}
	if (m.reject != Reject::None) {
		std::string_view text = reject_reply(m.reject);
		log_info("%s: reject: DATA from %s[%s]: %.*s; from=<%s>", m.queue_id.c_str(), helo_.c_str(),
			 client_.address.c_str(), int(without_crlf(text).size()), text.data(), sender_.c_str());
		reply(text);
		abort_transaction();
		return;
	}
	m.txn = false;  // from here the backend owns the message: no on_abort
	waiting_ = Wait::Commit;
	backend_.on_commit(*this, m.written);
}

}  // namespace laim
