// Mail addresses as RFC 5321 section 4.1.2 writes them, parsed strictly:
//
//   Path      = "<" [ A-d-l ":" ] Mailbox ">"
//   Mailbox   = Local-part "@" ( Domain / address-literal )
//   Local-part = Dot-string / Quoted-string
//
// plus, as Postfix does for local mail, a bare Local-part without domain
// ("<root>"), and UTF-8 in the local part and domain (RFC 6531), which
// the caller allows only when the client asked for SMTPUTF8. An accepted
// address never holds a control character, CR, LF or NUL, nor a code
// point that reorders or breaks displayed text (the bidi controls and
// marks, U+2028 and U+2029).
//
// Used by the SMTP session (MAIL FROM / RCPT TO) and the sendmail command.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace laim {

// Limits of RFC 5321 section 4.5.3.1, in octets.
constexpr size_t ADDR_MAX_LOCAL = 64;    // local part (4.5.3.1.1)
// A domain in text form: 4.5.3.1.2 allows 255 octets, but counts them as
// DNS carries the name (RFC 1035 3.1: a length octet before each label and
// the root's zero octet), which leaves 253 for the dotted text.
constexpr size_t ADDR_MAX_DOMAIN = 253;
constexpr size_t ADDR_MAX_PATH = 256;    // "<...>" with punctuation (4.5.3.1.3)

enum class AddressStatus {
	Ok,
	Syntax,   // not a "<...>" path at all (501 5.5.4)
	Invalid,  // a path, but its content is not an address (553)
};

// A path parsed out of a MAIL FROM: or RCPT TO: argument.
struct SmtpPath {
	std::string_view mailbox;  // the Mailbox, source route stripped; "" for "<>"
	std::string_view rest;     // what follows ">": ESMTP parameters
	bool utf8 = false;         // non-ASCII (valid UTF-8): needs SMTPUTF8
};

// Parses the path at the start of arg ("<user@example.com> SIZE=100").
// A source route ("<@a,@b:user@c>") is checked and dropped. "<>" is
// accepted with an empty mailbox: only a reverse-path may be null, the
// caller decides. UTF-8 is accepted and flagged in out.utf8. On Ok, out's
// views point into arg.
AddressStatus parse_path(std::string_view arg, SmtpPath& out);

// Checks a bare Mailbox, without angle brackets: "user@example.com",
// "\"john doe\"@[192.0.2.1]", or a local part alone ("root") when
// allow_bare_local. Non-ASCII only when utf8 (and then valid UTF-8).
bool valid_mailbox(std::string_view mailbox, bool utf8, bool allow_bare_local = true);

// Well-formed UTF-8 (RFC 3629) without the C1 control characters, the
// bidi controls and the line and paragraph separators.
bool valid_utf8(std::string_view s);

// The length of the well-formed UTF-8 character (RFC 3629) at s[i], its
// code point in cp; 0 when none starts there (a continuation byte, an
// overlong form, a surrogate, a sequence cut short).
size_t utf8_char(std::string_view s, size_t i, uint32_t& cp);

// Code points that change how the text around them is shown: the bidi
// embeddings, overrides and isolates and the LRM/RLM marks ("Trojan
// Source", CVE-2021-42574: an address that reads as another one), and
// the line and paragraph separators U+2028 and U+2029.
bool is_display_control(uint32_t cp);

// Checks a Domain (RFC 5321 4.1.2, RFC 1035 2.3.1 with the leading digit
// of RFC 1123 2.1): dot-separated labels of letters, digits and inner
// hyphens, at most 63 octets each and ADDR_MAX_DOMAIN in all; with utf8,
// non-ASCII characters count as letters and must be valid UTF-8 (RFC
// 6531). The one rule for addresses, the hostname and route patterns.
bool valid_domain(std::string_view domain, bool utf8);

// A name for this host (hostname:, /etc/mailname): a valid_domain whose
// last label is not all digits, so never an IPv4 address, which EHLO,
// Received: and an address's domain would have to write as [127.0.0.1].
bool valid_host_name(std::string_view name);

// Checks an address-literal (RFC 5321 4.1.3): "[192.0.2.1]" or
// "[IPv6:2001:db8::1]"; general address literals are refused.
bool valid_address_literal(std::string_view literal);

// The text a Local-part stands for: a Quoted-string without its quotes
// and with its quoted-pairs resolved ("\"john doe\"" is john doe), a
// Dot-string as it is.
std::string local_part_text(std::string_view local);

// text written as a Local-part: as it is when it is a Dot-string (UTF-8
// counting as atext), else as a Quoted-string with '"' and '\\' quoted,
// as Postfix writes an address it rebuilt ("\"SRS0=...=john doe\"").
// text must hold printable ASCII or UTF-8 only, as local_part_text()
// gives for an address that valid_mailbox() accepts.
std::string quote_local_part(std::string_view text);

// What may name a mailbox file, mail_dir/USER: a plain user name (letters,
// digits, '.', '_', '-'; not starting with '.' or '-'; at most 64
// octets), never a path.
bool valid_user_name(std::string_view user);

// A user name (a login name, an AUTH user) as a Received: comment or a
// log line carries it: printable ASCII without spaces, parentheses or
// backslashes, anything else as '_', at most 255 characters (the longest
// user name a users file holds). It can neither end the comment it is
// written in ("rdz) (authenticated as admin") nor quote its ')'.
std::string comment_name(std::string_view name);

}  // namespace laim
