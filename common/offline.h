// The offline spool file: what laim-drop writes into SPOOL/offline/ when
// laimd cannot take a message, and what laimd imports when it can.
//
//   "LAIMDROP 1\n"
//   netstring(sender)                   "13:root@host.lan,"  ("0:," null sender)
//   netstring(decimal recipient count)  "1:2,"
//   netstring(recipient)                one per recipient
//   "\n"
//   message bytes to end of file
//
// A netstring is "LENGTH:BYTES," with LENGTH in decimal, no leading zeros
// (except "0"). Every value is length-prefixed, so no byte of the envelope
// or the message can be mistaken for structure. The file is written by an
// unprivileged caller through a setgid helper: the decoder trusts nothing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace laim {

constexpr std::string_view OFFLINE_MAGIC = "LAIMDROP 1\n";
constexpr size_t OFFLINE_MAX_RECIPIENTS = 1000;
constexpr size_t OFFLINE_MAX_VALUE = 320;           // octets of one address
constexpr size_t OFFLINE_MAX_HEADER = 400 * 1024;   // the whole header

struct OfflineEnvelope {
	std::string sender;  // "" for the null sender
	std::vector<std::string> recipients;
};

// The header for env, up to and including its final "\n". Throws
// std::invalid_argument when env breaks the limits above (1..1000
// recipients, no empty recipient, each value at most 320 octets without
// CR, LF or NUL): what it writes, offline_decode always reads back.
std::string offline_encode(const OfflineEnvelope& env);

// Parses the header at the start of data into out and returns its length
// (the message starts there). Throws std::runtime_error saying what is
// wrong with anything malformed or over the limits.
size_t offline_decode(std::string_view data, OfflineEnvelope& out);

// What is wrong with a message (the bytes after the header) by the rules
// the smtp process applies to DATA on the local socket (smtp/session.cpp,
// data_scan), or "" when nothing is: only CRLF ends a line, so a bare CR
// or LF (which a peer further on could take for a line end: SMTP
// smuggling) is refused, and so is NUL. Long lines pass, as they do on
// the local socket. sendmail normalises what it hands to laim-drop;
// anything else run directly must not get past laimd's rules that way.
std::string offline_body_fault(std::string_view message);

}  // namespace laim
