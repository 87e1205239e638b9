// The control protocol, client side (laimctl, and sendmail for -bp, -q
// and -bi). The protocol itself is described in handler/control.h: one
// request line, then "OK" or "ERR message", payload lines, EOF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace laim {

// Longest request line laimd accepts, "\n" included; its socket reader
// stops reading there.
constexpr size_t CONTROL_MAX_LINE = 1024;

// Connects to the control socket at path, sends command (one line, without
// "\n") and returns the payload lines after "OK", without their "\n".
// Throws std::system_error when it cannot connect ("cannot connect to
// PATH: reason"), std::runtime_error for an "ERR" answer (what() is the
// text after "ERR ") and for a connection that breaks, times out or
// answers something else, and std::invalid_argument for a command holding
// a control character or too long for laimd (CONTROL_MAX_LINE).
std::vector<std::string> ctl_request(const std::string& path, const std::string& command);

// The control socket: $LAIM_CONTROL when set and not empty, else the
// compiled-in LAIM_CONTROL_SOCKET.
std::string ctl_socket_path();

// The traditional mailq listing, in Postfix's layout, from "show queue"
// lines, then a line saying how many messages wait in offline/ ("show
// offline") when some do: those are not lost, and an empty queue is then
// not "empty". Throws std::runtime_error for a line that is not one.
std::string format_mailq(const std::vector<std::string>& queue_lines, size_t offline = 0);

// One line of "show queue" and of "show failed", parsed. Extra trailing
// fields (from a newer laimd) are ignored; the parsers throw
// std::runtime_error for a line with too few fields or a bad number.
struct CtlQueueEntry {
	std::string id;
	time_t arrival = 0;
	uint64_t size = 0;
	std::string uid;  // decimal, or "-" when not a local submission
	std::string sender;  // "" for the null sender
	std::vector<std::string> recipients;
	unsigned attempts = 0;
	std::string last_error;
};
struct CtlFailedEntry {
	std::string id;
	time_t arrival = 0;
	uint64_t size = 0;
	std::string sender;
	std::vector<std::string> recipients;
	std::string reason;
};
CtlQueueEntry ctl_parse_queue_line(const std::string& line);
CtlFailedEntry ctl_parse_failed_line(const std::string& line);

// Splits a "show queue" / "show failed" recipient field at the commas that
// separate addresses (not those inside a quoted local part or an address
// literal).
std::vector<std::string> ctl_split_recipients(const std::string& field);

}  // namespace laim
