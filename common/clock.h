// The clocks laim's timers run on. Timeouts, retries and back-offs count
// time that passed, which no setting of the date moves (date -s, an NTP
// step at boot): on the wall clock a step forward would end every running
// delivery call as timed out and fire every retry at once, a step back
// would hold them for as long. The wall clock (time()) is for what is
// shown or kept across restarts: a message's arrival and age, rate limit
// windows, SRS timestamps.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>

namespace laim {

// Milliseconds on CLOCK_MONOTONIC: the smtp process's session timeouts,
// waits on a channel.
inline int64_t monotonic_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Seconds since boot (CLOCK_BOOTTIME: a suspend counts, so a retry due
// during one comes up at the resume): the timers of whole seconds.
inline time_t seconds_since_boot()
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec;
}

// t in local time, as strftime(3) writes it by fmt: RFC5322_DATE for the
// Date: field of laim's own notices.
constexpr const char* RFC5322_DATE = "%a, %d %b %Y %H:%M:%S %z";
inline std::string local_time(time_t t, const char* fmt)
{
	char buf[64];
	struct tm tm;
	localtime_r(&t, &tm);
	return strftime(buf, sizeof buf, fmt, &tm) ? buf : "";
}

}  // namespace laim
