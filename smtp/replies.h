// The fixed SMTP replies of a session, one static table in the manner of
// nginx's mail module. Every reply but the greeting and the HELO/EHLO
// answer carries an enhanced status code (RFC 2034 section 3, codes of
// RFC 3463). Replies that name the host (220, 421, the EHLO lines) are
// assembled in session.cpp around the pieces below.
#pragma once

#include <string_view>

namespace laim::reply {

#define LAIM_CRLF "\r\n"

// 2xx
inline constexpr std::string_view ok = "250 2.0.0 Ok" LAIM_CRLF;
inline constexpr std::string_view mail_ok = "250 2.1.0 Ok" LAIM_CRLF;
inline constexpr std::string_view rcpt_ok = "250 2.1.5 Ok" LAIM_CRLF;
inline constexpr std::string_view queued = "250 2.0.0 Ok: queued as ";  // + id CRLF
inline constexpr std::string_view bye = "221 2.0.0 Bye" LAIM_CRLF;
inline constexpr std::string_view help =
	"214-2.0.0 laim, a local-only mail agent. Commands:" LAIM_CRLF
	"214 2.0.0 HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP" LAIM_CRLF;
// RFC 5321 3.5.3: no address verification, but RCPT will tell.
inline constexpr std::string_view vrfy =
	"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery" LAIM_CRLF;

// EHLO keywords after "250-HOSTNAME" (RFC 5321 4.1.1.1); SIZE carries the
// limit (RFC 1870), SMTPUTF8 only when enabled (RFC 6531).
inline constexpr std::string_view ehlo_size = "250-SIZE";
inline constexpr std::string_view ehlo_8bitmime = "250-8BITMIME" LAIM_CRLF;
inline constexpr std::string_view ehlo_smtputf8 = "250-SMTPUTF8" LAIM_CRLF;
inline constexpr std::string_view ehlo_starttls = "250-STARTTLS" LAIM_CRLF;
// RFC 4954: only on an auth: required listener, and only under TLS.
inline constexpr std::string_view ehlo_auth = "250-AUTH PLAIN LOGIN" LAIM_CRLF;
inline constexpr std::string_view ehlo_last =
	"250-PIPELINING" LAIM_CRLF
	"250 ENHANCEDSTATUSCODES" LAIM_CRLF;

// RFC 3207 4
inline constexpr std::string_view starttls_go = "220 2.0.0 Ready to start TLS" LAIM_CRLF;

// 3xx
inline constexpr std::string_view data_go = "354 End data with <CR><LF>.<CR><LF>" LAIM_CRLF;
// RFC 4954 4: AUTH's challenges. PLAIN's is empty; LOGIN asks for
// "Username:" and "Password:" in base64.
inline constexpr std::string_view auth_plain_go = "334 " LAIM_CRLF;
inline constexpr std::string_view auth_login_user = "334 VXNlcm5hbWU6" LAIM_CRLF;
inline constexpr std::string_view auth_login_password = "334 UGFzc3dvcmQ6" LAIM_CRLF;

// 2xx, AUTH (RFC 4954 6)
inline constexpr std::string_view auth_ok = "235 2.7.0 Authentication successful" LAIM_CRLF;

// 4xx
inline constexpr std::string_view queue_full =
	"452 4.3.1 Insufficient system storage, try again later" LAIM_CRLF;
inline constexpr std::string_view tempfail =
	"451 4.3.0 Local error in processing, try again later" LAIM_CRLF;
inline constexpr std::string_view rcpt_deferred =
	"451 4.3.0 Recipient temporarily unavailable, try again later" LAIM_CRLF;
// RFC 3463 X.7.1 (not authorized) for a sender over its rate limit:
// "451 4.7.1 " + the limit's words from the handler process + CRLF.
inline constexpr std::string_view rate_limited = "451 4.7.1 ";
inline constexpr std::string_view rate_limited_default = "rate limit exceeded; try again later";
// RFC 3207 4: STARTTLS where the listener's certificate did not load;
// also AUTH and MAIL that wait for TLS there, never a 5xx for our fault.
inline constexpr std::string_view tls_unavailable = "454 4.7.0 TLS not available due to temporary reason" LAIM_CRLF;
inline constexpr std::string_view too_many_rcpts = "452 4.5.3 Too many recipients" LAIM_CRLF;
// "421 4.4.2 HOSTNAME Error: timeout exceeded" (RFC 5321 4.5.3.2)
inline constexpr std::string_view timeout_code = "421 4.4.2 ";
inline constexpr std::string_view timeout = " Error: timeout exceeded" LAIM_CRLF;
// "421 4.7.0 HOSTNAME Error: too many failed authentications": the third
// failed AUTH ends the session, as Postfix's smtpd_hard_error_limit.
inline constexpr std::string_view auth_limit_code = "421 4.7.0 ";
inline constexpr std::string_view auth_limit = " Error: too many failed authentications" LAIM_CRLF;
// "421 4.3.2 HOSTNAME Service shutting down" (RFC 5321 3.8)
inline constexpr std::string_view shutdown_code = "421 4.3.2 ";
inline constexpr std::string_view shutdown = " Service shutting down" LAIM_CRLF;

// 5xx: command syntax and sequence (RFC 5321 4.2.4, 4.3.2)
inline constexpr std::string_view line_too_long = "500 5.5.2 Line too long" LAIM_CRLF;
// RFC 5321 2.3.8: a command line ends at CRLF, never at a bare CR or LF.
inline constexpr std::string_view bare_line_end = "500 5.5.2 Line must end with CRLF" LAIM_CRLF;
inline constexpr std::string_view unknown_command = "500 5.5.2 Command unrecognized" LAIM_CRLF;
inline constexpr std::string_view nul_in_command = "501 5.5.2 NUL character in command" LAIM_CRLF;
inline constexpr std::string_view syntax_helo = "501 5.5.4 Syntax: HELO hostname" LAIM_CRLF;
inline constexpr std::string_view syntax_ehlo = "501 5.5.4 Syntax: EHLO hostname" LAIM_CRLF;
inline constexpr std::string_view bad_helo = "501 5.5.4 Invalid domain name" LAIM_CRLF;
inline constexpr std::string_view syntax_mail = "501 5.5.4 Syntax: MAIL FROM:<address>" LAIM_CRLF;
inline constexpr std::string_view syntax_rcpt = "501 5.5.4 Syntax: RCPT TO:<address>" LAIM_CRLF;
inline constexpr std::string_view syntax_vrfy = "501 5.5.4 Syntax: VRFY address" LAIM_CRLF;
inline constexpr std::string_view syntax_noarg = "501 5.5.4 Syntax error: no arguments allowed" LAIM_CRLF;
inline constexpr std::string_view syntax_param = "501 5.5.4 Syntax error in parameters" LAIM_CRLF;
inline constexpr std::string_view tls_active = "503 5.5.1 Error: TLS already active" LAIM_CRLF;
inline constexpr std::string_view need_helo = "503 5.5.1 Error: send HELO/EHLO first" LAIM_CRLF;
inline constexpr std::string_view nested_mail = "503 5.5.1 Error: nested MAIL command" LAIM_CRLF;
inline constexpr std::string_view need_mail = "503 5.5.1 Error: need MAIL command" LAIM_CRLF;
inline constexpr std::string_view need_rcpt = "503 5.5.1 Error: need RCPT command" LAIM_CRLF;
inline constexpr std::string_view no_valid_rcpts = "554 5.5.1 Error: no valid recipients" LAIM_CRLF;
// RFC 2920 3.1: DATA must be the last command of a group.
inline constexpr std::string_view pipelining =
	"503 5.5.0 Improper use of SMTP command pipelining" LAIM_CRLF;
inline constexpr std::string_view pregreet =
	"554 5.5.1 Protocol error: client spoke before the greeting" LAIM_CRLF;
inline constexpr std::string_view mail_param =
	"555 5.5.4 Unsupported MAIL parameter" LAIM_CRLF;
// RFC 5321 4.1.1.11: parameters belong to the extensions EHLO announced.
inline constexpr std::string_view mail_param_helo =
	"555 5.5.4 MAIL parameters need EHLO" LAIM_CRLF;
inline constexpr std::string_view rcpt_param =
	"555 5.5.4 RCPT parameters are not supported" LAIM_CRLF;

// 5xx: addresses (RFC 3463 X.1.7 sender, X.1.3 recipient, X.6.7 RFC 6531)
inline constexpr std::string_view bad_sender = "553 5.1.7 Bad sender address syntax" LAIM_CRLF;
inline constexpr std::string_view bad_rcpt = "553 5.1.3 Bad recipient address syntax" LAIM_CRLF;
inline constexpr std::string_view need_smtputf8 =
	"553 5.6.7 Non-ASCII address requires SMTPUTF8" LAIM_CRLF;
inline constexpr std::string_view rcpt_rejected =
	"550 5.1.1 Recipient address rejected: user unknown" LAIM_CRLF;

// 5xx: the submission listener's rules (RFC 3207 4, RFC 4954 6), worded as
// Postfix's submission service words them.
inline constexpr std::string_view need_starttls = "530 5.7.0 Must issue a STARTTLS command first" LAIM_CRLF;
inline constexpr std::string_view need_auth = "530 5.7.0 Authentication required" LAIM_CRLF;
inline constexpr std::string_view auth_failed = "535 5.7.8 Authentication credentials invalid" LAIM_CRLF;
// AUTH from an address held off after its failures (smtp/auth_guard.h).
inline constexpr std::string_view auth_held = "454 4.7.0 Temporary authentication failure, try again later" LAIM_CRLF;
inline constexpr std::string_view auth_unknown_mech = "504 5.5.4 Unrecognized authentication type" LAIM_CRLF;
// AUTH where it is not offered: a listener without auth: required, or
// before TLS (it is not in the EHLO reply there).
inline constexpr std::string_view auth_not_enabled = "503 5.5.1 Error: authentication not enabled" LAIM_CRLF;
// AUTH after HELO or no greeting: only EHLO offers it (RFC 4954 3).
inline constexpr std::string_view auth_need_ehlo = "503 5.5.1 Error: send EHLO first" LAIM_CRLF;
inline constexpr std::string_view auth_twice = "503 5.5.1 Error: already authenticated" LAIM_CRLF;
inline constexpr std::string_view auth_in_txn = "503 5.5.1 Error: MAIL transaction in progress" LAIM_CRLF;
inline constexpr std::string_view syntax_auth = "501 5.5.4 Syntax: AUTH mechanism [initial-response]" LAIM_CRLF;
inline constexpr std::string_view auth_cancelled = "501 5.0.0 Authentication cancelled" LAIM_CRLF;
inline constexpr std::string_view auth_bad_base64 = "501 5.5.2 Cannot decode response" LAIM_CRLF;
// "553 5.7.1 <ADDR>: sender not owned by user NAME" (the senders file)
inline constexpr std::string_view sender_not_owned_code = "553 5.7.1 <";
inline constexpr std::string_view sender_not_owned = ">: sender not owned by user ";

// 5xx: message content
inline constexpr std::string_view size_exceeded = "552 5.3.4 Message size exceeds fixed limit" LAIM_CRLF;
inline constexpr std::string_view data_bare_crlf =
	"550 5.6.0 Message rejected: bare CR or LF in data" LAIM_CRLF;
inline constexpr std::string_view data_long_line =
	"550 5.6.0 Message rejected: line longer than 1000 octets" LAIM_CRLF;
inline constexpr std::string_view data_nul = "554 5.6.0 Message rejected: NUL in data" LAIM_CRLF;
// RFC 3463 X.4.6 (routing loop detected), past hop_count_limit:
// "554 5.4.6 Message rejected: too many hops (" + count + this.
inline constexpr std::string_view hop_limit_code = "554 5.4.6 Message rejected: too many hops (";
inline constexpr std::string_view hop_limit = " Received: headers): mail loop?" LAIM_CRLF;

#undef LAIM_CRLF

}  // namespace laim::reply
