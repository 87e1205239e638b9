#include "common/log.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <syslog.h>
#include <unistd.h>

#include "common/address.h"

namespace laim {

namespace {
bool log_to_stderr = true;
int log_verbose = 0;
std::atomic<pid_t> self_pid{0};
char syslog_ident[32];

// Formats one line and writes it with a single write(2) so lines of the
// three processes never interleave on a shared stderr. What it formats
// is escaped (log_escape): a client's or a child's words never start a
// line of their own.
void vlog(int pri, const char* fmt, va_list ap, const char* suffix)
{
	char raw[2048];
	vsnprintf(raw, sizeof raw, fmt, ap);
	std::string escaped = log_escape(raw);
	const char* msg = escaped.c_str();
	if (!log_to_stderr) {
		if (suffix)
			syslog(pri, "%s: %s", msg, suffix);
		else
			syslog(pri, "%s", msg);
		return;
	}
	char line[8448];
	int n = snprintf(line, sizeof line, "laimd[%d]: %s%s%s\n", (int)process_id(), msg,
			 suffix ? ": " : "", suffix ? suffix : "");
	if (n < 0)
		return;
	if ((size_t)n >= sizeof line) {
		n = sizeof line;
		line[n - 1] = '\n';
	}
	(void)!write(STDERR_FILENO, line, n);
}
}  // namespace

std::string log_escape(std::string_view s)
{
	static const char hex[] = "0123456789abcdef";
	bool keep_8bit = valid_utf8(s);
	std::string out;
	out.reserve(s.size());
	for (unsigned char c : s) {
		if (c == '\n')
			out += "\\n";
		else if (c == '\r')
			out += "\\r";
		else if (c == '\t')
			out += "\\t";
		else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !keep_8bit))
			out.append("\\x").append(1, hex[c >> 4]).append(1, hex[c & 15]);
		else
			out += static_cast<char>(c);
	}
	return out;
}

std::string log_escape_lines(std::string_view s)
{
	std::string out;
	for (size_t start = 0;;) {
		size_t end = s.find('\n', start);
		out += log_escape(s.substr(start, end == std::string_view::npos ? end : end - start));
		if (end == std::string_view::npos)
			return out;
		out += '\n';
		start = end + 1;
	}
}

bool cut_utf8(std::string& s, size_t max)
{
	if (s.size() <= max)
		return false;
	size_t n = max;
	for (int back = 0; back < 3 && n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; back++)
		n--;
	s.resize(n);
	return true;
}

std::string printable_text(std::string_view s)
{
	std::string out;
	out.reserve(s.size());
	for (size_t i = 0; i < s.size();) {
		uint32_t cp;
		size_t len = utf8_char(s, i, cp);
		if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
			out += '?';
		else if (!is_display_control(cp))
			out.append(s.substr(i, len));
		i += len ? len : 1;
	}
	return out;
}

pid_t process_id()
{
	static bool registered = pthread_atfork(nullptr, nullptr, [] { self_pid = 0; }) == 0;
	(void)registered;
	pid_t pid = self_pid.load(std::memory_order_relaxed);
	if (pid == 0)
		self_pid = pid = getpid();
	return pid;
}

// The ident carries the pid, formatted once: LOG_PID would make syslog(3)
// call getpid() for every line. A forked child calls this again.
void log_init(bool foreground, int verbose)
{
	log_to_stderr = foreground;
	log_verbose = verbose;
	if (!foreground) {
		closelog();  // a forked child reconnects before it is confined
		snprintf(syslog_ident, sizeof syslog_ident, "laimd[%d]", (int)process_id());
		openlog(syslog_ident, LOG_NDELAY, LOG_MAIL);
	}
}

void log_setverbose(int verbose) { log_verbose = verbose; }
int log_getverbose() { return log_verbose; }

void log_info(const char* fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_INFO, fmt, ap, nullptr);
	va_end(ap);
}

void log_warn(const char* fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_WARNING, fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void log_warnx(const char* fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_WARNING, fmt, ap, nullptr);
	va_end(ap);
}

void log_debug(const char* fmt, ...)
{
	if (log_verbose < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, fmt, ap, nullptr);
	va_end(ap);
}

void fatal(const char* fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_CRIT, fmt, ap, strerror(saved));
	va_end(ap);
	_exit(1);
}

void fatalx(const char* fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_CRIT, fmt, ap, nullptr);
	va_end(ap);
	_exit(1);
}

}  // namespace laim
