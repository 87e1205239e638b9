// laimctl: the administrator's view of a running laimd, over the control
// socket (handler/control.h has the protocol).
//
//   laimctl show queue | show offline | show stats | show failed | show limits | flush
//         | remove ID | reload aliases | test INSTANCE | reset-limit KEY
//
// Exit status: 0 done, 1 laimd refused (its ERR text on stderr), 64 usage,
// 69 (EX_UNAVAILABLE) laimd is not running.
#include <sysexits.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "common/ctl.h"
#include "common/fd.h"

using namespace laim;

namespace {

[[noreturn]] void usage()
{
	fprintf(stderr, "usage: laimctl show queue|show offline|show stats|show failed|show limits|flush|remove ID|reload aliases|"
			"test INSTANCE|reset-limit KEY\n");
	exit(EX_USAGE);
}

// "VERB ARG", or exit 64 naming what is wrong with ARG, before laimd
// would refuse it: empty, a control character, a space where the name
// cannot hold one (an instance name; a sender key may), or longer than
// laimd reads.
std::string with_argument(const std::string& verb, const char* what, const std::string& arg, bool spaces)
{
	std::string request = verb + " " + arg;
	size_t longest = CONTROL_MAX_LINE - 2 - verb.size();  // the space and "\n"
	std::string wrong;
	if (arg.empty())
		wrong = "is empty";
	else if (std::any_of(arg.begin(), arg.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
		wrong = "holds a control character";
	else if (!spaces && arg.find(' ') != std::string::npos)
		wrong = "holds a space";
	else if (arg.size() > longest)
		wrong = "is longer than " + std::to_string(longest) + " bytes";
	if (wrong.empty())
		return request;
	fprintf(stderr, "laimctl: %s: %s %s\n", verb.c_str(), what, wrong.c_str());
	exit(EX_USAGE);
}

// The request for the command line, or usage(). A queue id may be typed
// in lower case; laimd's ids are upper-case hex.
std::string request_of(const std::vector<std::string>& args)
{
	auto is = [&](std::initializer_list<const char*> words) {
		return std::equal(args.begin(), args.end(), words.begin(), words.end(),
		                  [](const std::string& a, const char* w) { return a == w; });
	};
	if (is({"show", "queue"}) || is({"show", "offline"}) || is({"show", "stats"}) || is({"show", "failed"}) || is({"show", "limits"}) ||
	    is({"flush"}) || is({"reload", "aliases"}))
		return args[0] + (args.size() > 1 ? " " + args[1] : "");
	if (args.size() == 2 && args[0] == "test")
		return with_argument(args[0], "INSTANCE", args[1], false);
	if (args.size() == 2 && args[0] == "reset-limit")
		return with_argument(args[0], "KEY", args[1], true);
	if (args.size() == 2 && args[0] == "remove") {
		std::string id = args[1];
		bool ok = id.size() == 10 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
			return std::isxdigit(c);
		});
		if (!ok) {
			fprintf(stderr, "laimctl: invalid queue id: %s (10 hexadecimal digits)\n", id.c_str());
			exit(EX_USAGE);
		}
		std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::toupper(c); });
		return "remove " + id;
	}
	usage();
}

// How long ago, in the largest whole unit: "45s", "2m", "3h", "12d".
std::string age(time_t arrival, time_t now)
{
	long long s = now > arrival ? (long long)(now - arrival) : 0;
	if (s < 60)
		return std::to_string(s) + "s";
	if (s < 3600)
		return std::to_string(s / 60) + "m";
	if (s < 86400)
		return std::to_string(s / 3600) + "h";
	return std::to_string(s / 86400) + "d";
}

std::string human_size(uint64_t bytes)
{
	if (bytes < 1024)
		return std::to_string(bytes) + "B";
	const char* units = "KMGT";
	double v = (double)bytes / 1024;
	int u = 0;
	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	char buf[32];
	snprintf(buf, sizeof(buf), v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
	return buf;
}

std::string join(const std::vector<std::string>& v)
{
	std::string out;
	for (const auto& s : v)
		out += (out.empty() ? "" : ",") + s;
	return out;
}

// Prints rows as aligned columns; right_aligned[i] says which are numbers.
// The last column is not padded (it holds free text: errors, reasons).
void print_table(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right_aligned)
{
	std::vector<size_t> width(right_aligned.size(), 0);
	for (const auto& row : rows)
		for (size_t i = 0; i < row.size(); i++)
			width[i] = std::max(width[i], row[i].size());
	for (const auto& row : rows) {
		std::string line;
		for (size_t i = 0; i < row.size(); i++) {
			bool last = i + 1 == row.size();
			size_t pad = width[i] - row[i].size();
			if (right_aligned[i])
				line += std::string(pad, ' ') + row[i];
			else
				line += row[i] + (last ? "" : std::string(pad, ' '));
			if (!last)
				line += "  ";
		}
		while (!line.empty() && line.back() == ' ')
			line.pop_back();
		printf("%s\n", line.c_str());
	}
}

void show_queue(const std::vector<std::string>& lines)
{
	if (lines.empty()) {
		printf("queue is empty\n");
		return;
	}
	time_t now = time(nullptr);
	std::vector<std::vector<std::string>> rows = {
		{"ID", "AGE", "SIZE", "SENDER", "RECIPIENTS", "ATTEMPTS", "LAST ERROR"}};
	for (const auto& line : lines) {
		CtlQueueEntry e = ctl_parse_queue_line(line);
		rows.push_back({e.id, age(e.arrival, now), human_size(e.size),
		                e.sender.empty() ? "<>" : e.sender, join(e.recipients),
		                std::to_string(e.attempts), e.last_error});
	}
	print_table(rows, {false, true, true, false, false, true, false});
}

void show_failed(const std::vector<std::string>& lines)
{
	if (lines.empty()) {
		printf("no failed messages\n");
		return;
	}
	time_t now = time(nullptr);
	std::vector<std::vector<std::string>> rows = {
		{"ID", "AGE", "SIZE", "SENDER", "RECIPIENTS", "REASON"}};
	for (const auto& line : lines) {
		CtlFailedEntry e = ctl_parse_failed_line(line);
		rows.push_back({e.id, age(e.arrival, now), human_size(e.size),
		                e.sender.empty() ? "<>" : e.sender, join(e.recipients), e.reason});
	}
	print_table(rows, {false, true, true, false, false, false});
}

// How many messages (the caller's; all, for root) laim-drop stored in
// offline/ that the handler has not taken into the queue yet.
void show_offline(const std::vector<std::string>& lines)
{
	if (lines.size() != 1 || lines[0].empty() || lines[0].size() > 9 ||
	    lines[0].find_first_not_of("0123456789") != std::string::npos)
		throw std::runtime_error("laimd sent a malformed answer to show offline");
	unsigned long n = std::stoul(lines[0]);
	printf("%lu message%s in offline/, not taken into the queue yet\n", n, n == 1 ? "" : "s");
}

// The rate limit windows at or near their limits, from "show limits".
void show_limits(const std::vector<std::string>& lines)
{
	if (lines.empty()) {
		printf("no key is near its rate limit\n");
		return;
	}
	std::vector<std::vector<std::string>> rows = {
		{"KEY", "USED", "PER", "WINDOW", "LEFT", "DEFERRED", "HELD", "ALERT", "WHO"}};
	for (const auto& line : lines) {
		std::vector<std::string> f;
		for (size_t start = 0;;) {
			size_t tab = line.find('\t', start);
			f.push_back(line.substr(start, tab - start));
			if (tab == std::string::npos)
				break;
			start = tab + 1;
		}
		if (f.size() < 10)
			throw std::runtime_error("laimd sent a malformed limits line: " + line);
		rows.push_back({f[0], f[2] + "/" + f[3], f[5] == "recipient" ? "rcpt" : "msg", f[4] + "s", f[6] + "s",
				f[7], f[8], f[9], f[1]});
	}
	print_table(rows, {false, true, false, true, true, true, false, false, false});
}

// "key value" lines, the values aligned in one column.
void show_stats(const std::vector<std::string>& lines)
{
	size_t width = 0;
	for (const auto& l : lines)
		width = std::max(width, std::min(l.find(' '), l.size()));
	for (const auto& l : lines) {
		size_t sp = l.find(' ');
		if (sp == std::string::npos) {
			printf("%s\n", l.c_str());
			continue;
		}
		printf("%-*s %s\n", (int)width, l.substr(0, sp).c_str(), l.c_str() + sp + 1);
	}
}

}  // namespace

int main(int argc, char** argv)
{
	open_std_fds();
	std::vector<std::string> args(argv + 1, argv + argc);
	std::string request = request_of(args);
	std::string path = ctl_socket_path();

	try {
		std::vector<std::string> lines = ctl_request(path, request);
		if (request == "show queue")
			show_queue(lines);
		else if (request == "show offline")
			show_offline(lines);
		else if (request == "show failed")
			show_failed(lines);
		else if (request == "show stats")
			show_stats(lines);
		else if (request == "show limits")
			show_limits(lines);
		else if (request.starts_with("reset-limit "))
			printf("%s: rate limit reset\n", request.c_str() + 12);
		else if (request == "flush")
			printf("deferred messages are due now\n");
		else if (request == "reload aliases")
			printf("aliases reloaded\n");
		else if (request.starts_with("test "))
			for (const std::string& l : lines)
				printf("%s\n", l.c_str());
		else
			printf("%s removed\n", request.c_str() + 7);
	} catch (const std::system_error& e) {
		fprintf(stderr, "laimctl: laimd is not running (%s)\n", e.what());
		return EX_UNAVAILABLE;
	} catch (const std::exception& e) {
		fprintf(stderr, "laimctl: %s\n", e.what());
		return 1;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("laimctl: stdout");
		return 1;
	}
	return 0;
}
