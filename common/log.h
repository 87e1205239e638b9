// Logging for all three processes, in the style of OpenSMTPD's log.c:
// log_info/log_warnx for events, log_warn appends strerror(errno),
// fatal/fatalx log and exit. Lines go to syslog (facility mail, ident
// laimd, with the pid) or, in the foreground (-d), to stderr as
// "laimd[PID]: message" so tests and admins grep the same text.
#pragma once

#define LAIM_PRINTF(a, b) __attribute__((format(printf, a, b)))

#include <sys/types.h>

#include <string>
#include <string_view>

namespace laim {

// s as one line of a log: CR, LF and tab as \r, \n and \t, other control
// characters (DEL included) as \xNN, and every byte from 0x80 as \xNN
// unless s is valid_utf8() (no C1 or bidi controls). Every log line goes
// through it, so a child's report, a client's address or a handler's
// reason cannot forge a line.
std::string log_escape(std::string_view s);
// The same for text of several lines, each escaped on its own: a reason
// file in failed/, whose lines a peer's reply may have written, is read
// by an administrator's terminal.
std::string log_escape_lines(std::string_view s);

// s as one line of text for a person to read where an escape would not
// do (a subject in an alert or a chat post): control characters (C0,
// DEL, C1) and bytes that are not UTF-8 become '?', and the code points
// that reorder or break the text around them (is_display_control) are
// dropped.
std::string printable_text(std::string_view s);
// Cuts s to at most max bytes, not inside a UTF-8 character (it steps
// back over at most three continuation bytes); true when it cut.
bool cut_utf8(std::string& s, size_t max);

// getpid(), asked once per process (and again after a fork): imsg
// headers and log lines carry it.
pid_t process_id();

// foreground: log to stderr instead of syslog. verbose > 0 enables debug.
void log_init(bool foreground, int verbose);
void log_setverbose(int verbose);
int log_getverbose();

void log_info(const char* fmt, ...) LAIM_PRINTF(1, 2);
void log_warn(const char* fmt, ...) LAIM_PRINTF(1, 2);
void log_warnx(const char* fmt, ...) LAIM_PRINTF(1, 2);
void log_debug(const char* fmt, ...) LAIM_PRINTF(1, 2);
[[noreturn]] void fatal(const char* fmt, ...) LAIM_PRINTF(1, 2);
[[noreturn]] void fatalx(const char* fmt, ...) LAIM_PRINTF(1, 2);

}  // namespace laim
