// Command requests from delivery threads to the root parent. The request
// channel is shared, under a mutex held only to send; each command's
// answers come over a reply channel of its own that the asking thread
// makes and passes with the request, so that no thread waits on
// another's command. Closing the reply channel (giving up, or the handler
// process dying) makes the parent kill the command.
#include "handler/command_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "common/imsg.h"
#include "common/proto.h"
#include "handler/api/command.h"

namespace laim {

namespace {

constexpr int ANSWER_TIMEOUT_MS = 10000;  // the parent answers a request at once
constexpr int END_GRACE_S = 10;  // past the time limit, for the parent to report the end

std::mutex service_mu;
std::unique_ptr<ImsgChannel> service;  // guarded by service_mu

// A started command's pipes, as the parent passed them.
struct Pipes {
	UniqueFd input;   // its stdin, to write
	UniqueFd unread;  // a read end of the same pipe, never read
	UniqueFd output;  // its stdout and stderr
	std::string user;
};

// Sends a request with the far end of its reply channel; false when the
// parent is gone.
bool send_request(const CommandRunMsg& req, UniqueFd reply)
{
	std::lock_guard<std::mutex> hold(service_mu);
	if (!service)
		return false;
	service->compose(IMSG_H_COMMAND_RUN, 0, encode(req), reply.release());
	return service->flush_wait(ANSWER_TIMEOUT_MS);
}

// The parent's answer to a request: the command's pipes (the output
// comes last), or the reason it did not start.
Result await_start(ImsgChannel& reply, Pipes& p)
{
	int64_t deadline = monotonic_ms() + ANSWER_TIMEOUT_MS;
	while (!p.output) {
		Imsg m;
		ImsgError err = ImsgError::None;
		if (reply.read_wait(m, deadline, &err) != ImsgChannel::Read::Message)
			return Result::tempfail("command service: no answer from the parent process");
		CommandStartedMsg started;
		CommandFailMsg refused;
		if (m.type == IMSG_P_COMMAND_FAIL && decode(m.data, refused))
			return refused.permanent ? Result::permfail(refused.why) : Result::tempfail(refused.why);
		if (m.type == IMSG_P_COMMAND_INPUT && m.data.empty())
			p.input = std::move(m.fd);
		else if (m.type == IMSG_P_COMMAND_UNREAD && m.data.empty())
			p.unread = std::move(m.fd);
		else if (m.type == IMSG_P_COMMAND_OUTPUT && decode(m.data, started))
			p.output = std::move(m.fd), p.user = started.user;
		else
			break;
	}
	if (!p.input || !p.unread || !p.output)
		return Result::tempfail("command service: malformed answer");
	return Result::delivered();
}

// Writes what the pipe takes of the input from *done on; the write end is
// closed (the command's end of file) once all is written, or on an error.
void write_some(Pipes& p, int input, off_t size, off_t* done)
{
	char buf[65536];
	ssize_t n = pread(input, buf, static_cast<size_t>(std::min<off_t>(sizeof buf, size - *done)), *done);
	ssize_t w = n > 0 ? write(p.input.get(), buf, static_cast<size_t>(n)) : n;
	if (w > 0)
		*done += w;
	if (*done == size || (w < 0 && errno != EAGAIN && errno != EINTR) || n < 0)
		p.input.reset();
}

// Reads what the command wrote (a bounded amount per call), keeping the
// first COMMAND_OUTPUT_KEPT bytes; the pipe is closed at its end.
void read_some(UniqueFd& output, std::string& kept)
{
	char buf[4096];
	ssize_t n = 0;
	for (int i = 0; i < 16 && (n = read(output.get(), buf, sizeof buf)) > 0; i++) {
		size_t room = COMMAND_OUTPUT_KEPT - std::min(kept.size(), COMMAND_OUTPUT_KEPT);
		kept.append(buf, std::min(static_cast<size_t>(n), room));
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		output.reset();
}

// Feeds the command its input and keeps the start of its output until
// the parent reports its end (then *end is complete); false when it does
// not by the deadline.
bool feed(ImsgChannel& reply, Pipes& p, int input, int64_t deadline, CommandEnd* end)
{
	off_t size = lseek(input, 0, SEEK_END), done = 0;
	fcntl(p.input.get(), F_SETFL, O_NONBLOCK);
	fcntl(p.output.get(), F_SETFL, O_NONBLOCK);
	for (;;) {
		int64_t left = deadline - monotonic_ms();
		struct pollfd fds[3] = {{reply.fd(), POLLIN, 0}, {p.output.get(), POLLIN, 0}, {p.input.get(), POLLOUT, 0}};
		if (left <= 0 || (poll(fds, 3, static_cast<int>(left)) < 0 && errno != EINTR))
			return false;
		if (p.input && fds[2].revents)
			write_some(p, input, size, &done);
		if (p.output && fds[1].revents)
			read_some(p.output, end->output);
		Imsg m;
		ImsgError err = ImsgError::None;
		ImsgChannel::Read r = fds[0].revents ? reply.read(m, &err) : ImsgChannel::Read::Again;
		CommandExitMsg exit;
		if (r == ImsgChannel::Read::Again)
			continue;
		if (r != ImsgChannel::Read::Message || m.type != IMSG_P_COMMAND_EXIT || !decode(m.data, exit))
			return false;
		if (p.output)
			read_some(p.output, end->output);  // what it wrote last
		int pending = 0;
		ioctl(p.unread.get(), FIONREAD, &pending);
		end->unread = static_cast<uint64_t>(size - done) + static_cast<uint64_t>(std::max(pending, 0));
		end->status = static_cast<int>(exit.status);
		end->timed_out = exit.timed_out;
		end->timeout = exit.timeout;
		return true;
	}
}

}  // namespace

void command_client_init(UniqueFd chan)
{
	std::lock_guard<std::mutex> hold(service_mu);
	service = std::make_unique<ImsgChannel>(std::move(chan), imsg_valid_nothing);
}

UniqueFd command_input_file()
{
	return UniqueFd(memfd_create("laim-command-input", MFD_CLOEXEC));
}

Result command_run(const std::string& instance, const Envelope& env, const std::vector<std::string>& recipients,
		   int input, unsigned timeout, bool whole_input)
{
	CommandRunMsg req{instance, env.id, env.sender, recipients};
	if (encode(req).size() > IMSG_MAX_PAYLOAD)
		return Result::permfail("command: the envelope is too large for one command");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return Result::tempfail(std::string("command: socketpair: ") + strerror(errno));
	ImsgChannel reply(UniqueFd(sv[0]), imsg_valid_command_reply);
	if (!send_request(req, UniqueFd(sv[1])))
		return Result::tempfail("command service: the parent process does not take requests");
	Pipes p;
	Result started = await_start(reply, p);
	if (started.status != Result::Status::Delivered)
		return started;
	CommandEnd end;
	end.user = p.user;
	if (!feed(reply, p, input, monotonic_ms() + (timeout + END_GRACE_S) * 1000LL, &end))
		return Result::tempfail("command as " + p.user + ": the parent process did not report its end");
	return command_result(end, whole_input);
}

}  // namespace laim
