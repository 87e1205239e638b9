// "|command" and "/file" targets of /etc/aliases (see alias_delivery.h).
#include "handler/alias_delivery.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "handler/api/mbox_format.h"

namespace laim {

namespace {

constexpr size_t OUTPUT_KEPT = 512;  // bytes of the command's output kept for the reason

// A spawned command (the leader of its own session) and its output pipe.
struct Child {
	pid_t pid = -1;
	UniqueFd output;
};

// The message as the command reads it: Return-Path, then the message with
// LF line ends, in an unlinked memory file (stdin may be read at any pace,
// or not at all, without blocking the delivery thread).
UniqueFd message_input(const Envelope& env, const Message& msg)
{
	UniqueFd fd(memfd_create("laim-message", MFD_CLOEXEC));
	if (!fd || !write_all(fd.get(), "Return-Path: <" + env.sender + ">\n") || !write_lf_text(fd.get(), msg.raw()) ||
	    lseek(fd.get(), 0, SEEK_SET) != 0)
		return UniqueFd();
	return fd;
}

// posix_spawn of /bin/sh -c command in a new session, with stdin from
// input, stdout and stderr into a pipe, no other descriptor, default
// signal dispositions, "/" as working directory and a fixed environment.
// Returns the errno of the failure, or 0.
int spawn(const std::string& command, const std::string& user, const Envelope& env, int input, Child& child)
{
	int out[2];
	if (pipe2(out, O_CLOEXEC) != 0)
		return errno;
	UniqueFd rd(out[0]), wr(out[1]);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, input, 0);
	posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
	posix_spawn_file_actions_adddup2(&fa, wr.get(), 2);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawn_file_actions_addchdir_np(&fa, "/");
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

	std::vector<std::string> envs = {"PATH=/usr/local/bin:/usr/bin:/bin", "SHELL=/bin/sh", "HOME=/",
					 "LOGNAME=" + user, "USER=" + user, "SENDER=" + env.sender,
					 "QUEUE_ID=" + env.id};
	std::vector<char*> envp;
	for (std::string& e : envs)
		envp.push_back(e.data());
	envp.push_back(nullptr);
	std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
	char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};

	int err = posix_spawn(&child.pid, "/bin/sh", &fa, &attr, argv, envp.data());
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (err == 0)
		child.output = std::move(rd);
	return err;
}

// How a command ended: exited (status from waitpid), killed at the
// deadline, or lost (it could not be waited for).
struct Ending {
	enum class How { Exited, Killed, Lost } how;
	int status = 0;
};

// Kills what is left of the command's session, then reaps the shell.
// Called while the shell is unreaped, so its pid cannot be reused as
// another process group's id meanwhile.
int end_session(pid_t pid)
{
	kill(-pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	return status;
}

// Reads the command's output (keeping the first OUTPUT_KEPT bytes) until
// the shell exits or the deadline passes. Either way nothing of its
// session is left running.
Ending wait_child(Child& child, time_t deadline, std::string& output)
{
	char buf[4096];
	while (time(nullptr) < deadline) {
		struct pollfd p = {child.output.get(), POLLIN, 0};
		int n = child.output ? poll(&p, 1, 200) : (usleep(50000), 0);
		ssize_t r = n > 0 ? read(child.output.get(), buf, sizeof buf) : -1;
		if (r == 0)
			child.output.reset();
		else if (r > 0 && output.size() < OUTPUT_KEPT)
			output.append(buf, std::min(size_t(r), OUTPUT_KEPT - output.size()));
		siginfo_t si = {};
		if (waitid(P_PID, static_cast<id_t>(child.pid), &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno != EINTR)
			return {Ending::How::Lost};
		if (si.si_pid == child.pid)
			return {Ending::How::Exited, end_session(child.pid)};
	}
	end_session(child.pid);
	return {Ending::How::Killed};
}

// The first line of what the command printed, for the reason.
std::string first_line(const std::string& output)
{
	std::string line = output.substr(0, output.find('\n'));
	for (char& c : line)
		if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
			c = '?';
	return line.empty() ? "" : ": " + line;
}

class CommandDelivery : public Handler {
 public:
	CommandDelivery(std::string user, unsigned timeout) : user_(std::move(user)), timeout_(timeout) {}
	Results deliver(const Envelope& env, const Message& msg) override;

 private:
	Result run(const std::string& command, const Envelope& env, const Message& msg) const;
	std::string user_;
	unsigned timeout_;
};

// Each command is a delivery of its own: one that fails never makes
// another run twice.
Results CommandDelivery::deliver(const Envelope& env, const Message& msg)
{
	std::vector<Result> each;
	for (const std::string& rcpt : env.recipients)
		each.push_back(run(rcpt.substr(1), env, msg));
	return each;
}

// Exit 0 is delivered; EX_TEMPFAIL, EX_OSERR, EX_IOERR, a signal or the
// timeout are temporary (as Postfix's local(8) reads sysexits); any
// other status is permanent.
Result CommandDelivery::run(const std::string& command, const Envelope& env, const Message& msg) const
{
	UniqueFd input = message_input(env, msg);
	if (!input)
		return Result::tempfail(std::string("command: message copy: ") + strerror(errno));
	Child child;
	if (int err = spawn(command, user_, env, input.get(), child))
		return Result::tempfail(std::string("command: cannot run /bin/sh: ") + strerror(err));
	input.reset();
	std::string output;
	Ending end = wait_child(child, time(nullptr) + timeout_, output);
	if (end.how == Ending::How::Killed)
		return Result::tempfail("command still running after " + std::to_string(timeout_) + "s: killed");
	if (end.how == Ending::How::Lost)
		return Result::tempfail(std::string("command: waiting for it: ") + strerror(errno));
	int status = end.status;
	if (WIFSIGNALED(status))
		return Result::tempfail("command killed by signal " + std::to_string(WTERMSIG(status)) +
					first_line(output));
	int code = WEXITSTATUS(status);
	if (code == 0)
		return Result::delivered();
	std::string why = "command exited with status " + std::to_string(code) + first_line(output);
	if (code == EX_TEMPFAIL || code == EX_OSERR || code == EX_IOERR)
		return Result::tempfail(why);
	return Result::permfail(why);
}

// "/file": an mbox append through no symbolic link, since a link in a
// directory others can write would redirect the laim user's write.
class FileDelivery : public Handler {
 public:
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::vector<Result> each;
		for (const std::string& path : env.recipients)
			each.push_back(mbox_deliver(path, true, env, {""}, msg));
		return each;
	}
};

}  // namespace

std::unique_ptr<Handler> alias_command_handler(const std::string& user, unsigned timeout)
{
	// A second less than the queue's own limit, so the command's end,
	// not the queue's, decides the outcome.
	return std::make_unique<CommandDelivery>(user, timeout > 1 ? timeout - 1 : timeout);
}

std::unique_ptr<Handler> alias_file_handler()
{
	return std::make_unique<FileDelivery>();
}

}  // namespace laim
