// Writing messages the way Unix mail programs read them: mbox copies
// (for the file and mbox handlers, "/file" alias targets and the pipe
// handler's stdin: mbox) and plain LF text (for "|command" alias targets
// and stdin: raw); and the loop test of every handler that adds
// Delivered-To (these and maildir).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "handler/api/handler.h"

namespace laim {

// Appends to the mbox file at path (opened O_APPEND, created 0600 when
// missing, and then its directory synced; with no_symlinks, refused when
// any component of the path is a symbolic link) one copy of msg per entry
// of delivered_to: the From_ line, Return-Path, a Delivered-To header
// unless the entry is empty, then the message without its own Return-Path
// and Content-Length (Message::delivered_parts()) with LF line ends and
// mboxrd quoting, then an empty line; before them, the line ends a last line
// without its newline lacks (mbox_tail_gap). Holds an fcntl write lock (a
// lock held by another process is not waited for: a temporary failure),
// fsyncs, and on any error cuts the file back to where it was, so a reader
// never sees half a message. Errors are temporary failures that name the
// path.
Result mbox_deliver(const std::string& path, bool no_symlinks, const Envelope& env,
		    const std::vector<std::string>& delivered_to, const Message& msg);

// Writes one such copy to fd (a pipe handler's stdin: mbox), with
// Delivered-To unless delivered_to is empty. False on a write error, with
// errno set.
bool write_mbox_copy(int fd, const Envelope& env, const std::string& delivered_to, const Message& msg);

// Postfix's loop test (local(8), pipe(8) with flag D), for a handler about
// to add Delivered-To: rcpt to its copy: when the message's header section
// (up to its first empty line) already has a Delivered-To: naming rcpt
// (unfolded, angle brackets optional, same_recipient()), the message came
// back to the mailbox it was delivered to, and another copy would only go
// round again: a permanent failure, 5.4.6 "mail forwarding loop for
// RCPT". Else nullopt.
std::optional<Result> delivered_to_loop(const Message& msg, const std::string& rcpt);

// Writes raw (lines ending in CRLF, as received) to fd with LF line ends
// and nothing else changed. False on a write error, with errno set.
bool write_lf_text(int fd, std::string_view raw);

// Writes to fd Return-Path, then the message as an mbox copy holds it
// but without mboxrd quoting (a "|command" alias target's stdin). False
// on a write error, with errno set.
bool write_lf_copy(int fd, const Envelope& env, const Message& msg);

}  // namespace laim
