// The sendmail command: the parts main() is built from, each testable on
// its own (regress/unit/test_sendmail.cpp).
//
//   options.cpp    the command line (sendmail(8) flags, by flag, getopt style)
//   addresses.cpp  envelope addresses: splitting, qualification, checks
//   message.cpp    the message as submitted: headers added, Bcc,
//                  Return-Path and Content-Length removed,
//                  the lone-dot end, line ends made CRLF
//   submit.cpp     the SMTP client over laimd's unix socket; the -bs relay
//   sendmail.cpp   main(): the modes, the laim-drop fallback
#pragma once

#include <sys/types.h>

#include <ctime>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"

namespace laim::sendmail {

// Ends the command with a sysexits code and a one-line message.
class Failure : public std::runtime_error {
 public:
	Failure(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
	int code() const { return code_; }

 private:
	int code_;
};

// ------------------------------------------------------------ options.cpp

enum class Mode {
	Deliver,     // -bm, the default: submit the message on stdin
	SmtpRelay,   // -bs: an SMTP session on stdin/stdout, relayed to laimd
	ListQueue,   // -bp, or called as mailq
	NewAliases,  // -bi, or called as newaliases
	Flush,       // -q: retry deferred messages now
};

struct Options {
	Mode mode = Mode::Deliver;
	bool extract_recipients = false;  // -t
	bool ignore_dots = false;         // -i, -oi
	bool verbose = false;             // -v
	std::optional<std::string> sender;     // -f, -r, as given
	std::optional<std::string> full_name;  // -F
	std::vector<std::string> recipients;   // operands, as given
};

// Parses the arguments after argv[0]; progname is argv[0] (its basename
// "mailq" or "newaliases" selects the mode). Throws Failure(EX_USAGE)
// naming the option, for an unknown option, a missing argument, a CR or
// LF in a value, or an operand that begins with '-'.
Options parse_options(std::string_view progname, const std::vector<std::string>& args);

// ----------------------------------------------------------- addresses.cpp

// The qualification domain: the first line of $LAIM_MAILNAME or
// /etc/mailname, else the host's FQDN.
std::string mailname();

// addr with "@domain" appended when it has none.
std::string qualify(std::string_view addr, std::string_view domain);

// Parses one address list (a command-line operand or a To/Cc/Bcc value)
// with GMime, and appends its mailboxes (groups flattened), qualified and
// checked, to out unless already there. Throws Failure(code) naming
// `where` for a list that does not parse (or only in part: nothing is
// dropped silently), an invalid address or one that begins with '-'. An
// empty or blank list adds nothing.
void add_address_list(std::string_view list, std::string_view domain, const std::string& where, int code,
		      std::vector<std::string>& out);

// The envelope sender for a -f/-r value: "addr", "Name <addr>", or "" /
// "<>" for the null sender; qualified. Throws Failure(EX_USAGE).
std::string parse_sender(std::string_view value, std::string_view domain);

// g_mime_init(), once per process, before any GMime call.
void gmime_init_once();

// Whether any address holds a non-ASCII byte (needs SMTPUTF8).
bool needs_smtputf8(const std::string& sender, const std::vector<std::string>& recipients);

// ------------------------------------------------------------- message.cpp

// What the headers that sendmail adds say.
struct HeaderFacts {
	std::string from_address;  // the From: mailbox, "" for none:
	std::string from_error;    // then why, for a message without From:
	std::string from_name;     // its display name, "" for none
	std::string domain;        // right-hand side of the Message-ID
	time_t now = 0;            // Date:, and the Message-ID
	pid_t pid = 0;
	std::string random;        // Message-ID uniqueness, a few hex digits
};

// RFC 5322 3.3 date-time in local time with its zone:
// "Tue, 4 Jun 2024 09:05:03 +0200".
std::string rfc5322_date(time_t t);

// The header field "FIELD: Name <addr>" CRLF (or "FIELD: addr" when name
// is empty), the name quoted or RFC 2047 encoded as needed, folded so
// that no line passes 78 octets where it can (From:, Resent-From:). A
// name that is not UTF-8 is read as Latin-1.
std::string mailbox_field(const std::string& field, const std::string& name, const std::string& addr);

// The GECOS full name: the part before the first comma, with '&' (BSD
// convention) replaced by the capitalized login name.
std::string gecos_name(std::string_view gecos, std::string_view login);

// Turns sendmail's input into the message to submit, streaming: line ends
// (LF, CRs before a LF, each bare CR) become CRLF, a leading Unix "From " line is
// dropped; without ignore_dots a line holding a single "." ends the input;
// the header block (at most MAX_HEADER bytes) is held until its end, then
// Date, From and Message-ID are added when missing (and Resent-Date and
// Resent-From when there are Resent- fields), Bcc, Resent-Bcc,
// Return-Path and Content-Length are removed and, with extract, the To/Cc/Bcc recipients are collected (the
// Resent-To/Cc/Bcc ones instead when there are such fields). Everything
// else passes byte for byte. Output goes to sink in chunks.
class MessagePreparer {
 public:
	static constexpr size_t MAX_HEADER = 1024 * 1024;
	using Sink = std::function<void(std::string_view)>;

	MessagePreparer(bool ignore_dots, bool extract, HeaderFacts facts, Sink sink);

	// Takes more input; returns false once the input has ended (a lone
	// dot), when the caller stops reading. Throws Failure(EX_DATAERR) for
	// a header block over MAX_HEADER and for bad addresses under -t, and
	// Failure(EX_NOUSER, facts.from_error) for a message without From:
	// when facts.from_address is empty.
	bool feed(std::string_view data);
	// The end of the input: flushes everything to the sink. Throws as
	// feed() does.
	void finish();

	// After finish(): the -t recipients (qualified with facts.domain),
	// whether the message has 8-bit bytes, its size.
	const std::vector<std::string>& recipients() const { return recipients_; }
	bool eight_bit() const { return eight_bit_; }
	uint64_t size() const { return size_; }

 private:
	struct Header {
		std::string name;
		std::string text;  // all its lines, each ending in CRLF
	};

	void text(std::string_view s);
	void end_line();
	void header_line(const std::string& line);
	void end_headers(bool separator);
	void emit(std::string_view s);
	void flush();

	bool ignore_dots_, extract_;
	HeaderFacts facts_;
	Sink sink_;
	bool ended_ = false;        // a lone dot, or finish()
	size_t pending_crs_ = 0;    // CRs whose LF may come in the next chunk
	bool first_line_ = true;
	bool in_headers_ = true;
	bool line_start_ = true;    // body: at the start of a line
	bool dot_pending_ = false;  // body: the line so far is "."
	std::string line_;          // header phase: the current line
	size_t header_bytes_ = 0;
	std::vector<Header> headers_;
	std::string out_;
	std::vector<std::string> recipients_;
	bool eight_bit_ = false;
	uint64_t size_ = 0;
};

// -------------------------------------------------------------- submit.cpp

// Dot-stuffs a CRLF message for the DATA phase (RFC 5321 4.5.2), making
// any bare LF a CRLF, across calls; finish() appends the final CRLF (when
// the message does not end with one) and ".CRLF".
class DataEncoder {
 public:
	void encode(std::string_view in, std::string& out);
	void finish(std::string& out);

 private:
	bool line_start_ = true;
	bool after_cr_ = false;
};

// Seconds sendmail waits for laimd: its greeting, a reply, room for more
// input. laimd's local socket answers at once (it waits for no room in
// the queue there), so a longer silence is a laimd that is stuck.
constexpr int LAIMD_TIMEOUT = 60;

// Why laimd could not take the message now: the caller falls back to
// laim-drop. A permanent refusal is a Failure instead.
class TemporaryFailure : public std::runtime_error {
 public:
	using std::runtime_error::runtime_error;
};

struct Submission {
	std::string socket_path;
	std::string sender;
	std::vector<std::string> recipients;
	bool eight_bit = false;
	int message_fd = -1;  // the prepared message, read from offset 0
	bool verbose = false;
	int timeout = LAIMD_TIMEOUT;  // seconds per reply
	size_t submitted = 0; // how many of recipients laimd has taken the message for
};

// Submits over SMTP, in as many transactions as laimd's recipient limit
// asks for: returns once laimd has answered 250 to the data of each.
// With more than one, every recipient is tried (MAIL, RCPT, RSET) before
// the first DATA, so a refused recipient leaves nothing stored.
// Throws TemporaryFailure (cannot connect, 4xx, timeout, broken
// connection) or Failure (5xx: 65 for the sender or the data, 67 for a
// recipient, 69 otherwise, with laimd's reply); s.submitted then says
// which recipients have the message already.
void smtp_submit(Submission& s);

// The socket: $LAIM_SOCKET when set and not empty, else LAIM_SOCKET.
std::string submit_socket_path();

// Connects to the unix stream socket at path; throws TemporaryFailure.
UniqueFd connect_unix(const std::string& path);

// The -bs relay's view of the session, between the client (stdin) and
// laimd, which answers every command itself. The client's bytes go on as
// they are but for a bare LF, which becomes CRLF (laimd takes only CRLF;
// a person or a script types LF). After a DATA line the client's input
// waits until laimd has answered every command sent, DATA last: laimd
// ends a session whose text comes before its 354 (RFC 2920 3.1), and a
// script piped in whole would lose its message. After a 354 the message
// goes on up to its lone "." line.
class SmtpRelay {
 public:
	// Takes client input, appending what goes to laimd to out; returns
	// the bytes taken, all of in unless a DATA line ended in it: then
	// held() is true and the rest waits.
	size_t from_client(std::string_view in, std::string& out);
	// Reads what laimd sent (which the caller relays unchanged).
	void from_laimd(std::string_view in);
	// The client's input waits for laimd's reply to DATA.
	bool held() const { return held_; }
	// laimd owes a reply: to a complete command line or the end of the
	// data that it has not answered yet.
	bool awaits_reply() const { return unanswered_ > (client_in_line_ && !data_ ? 1 : 0); }
	// The code of laimd's last reply: 221 once QUIT is answered, 421
	// when laimd ended the session; 0 before any.
	int last_code() const { return last_code_; }

 private:
	bool data_ = false;         // between the 354 and the lone "."
	bool held_ = false;
	bool client_cr_ = false;    // the client's last byte was a CR
	bool client_in_line_ = false;  // inside a line of the client's
	std::string client_line_;   // the first octets of its line, CRs kept
	uint64_t unanswered_ = 0;   // commands (and ends of data) sent, not answered
	std::string reply_line_;    // the first octets of laimd's line, CR left out
	int last_code_ = 0;
};

}  // namespace laim::sendmail
