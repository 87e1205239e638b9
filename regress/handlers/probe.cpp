// probe: a handler for the regress suite only (configure
// --enable-test-handlers), whose answer each recipient's local part
// chooses, so that end-to-end cases can drive the queue through a real
// laimd:
//   ok...     delivered: "ID RCPT" appended to PATH/deliveries, with
//             " auth=USER" when the envelope has an authenticated user
//   defer...  451 4.2.0 until the file `release` names exists, then as ok
//   fail...   552 5.2.2 over quota, for good
//   later...  429 with Retry-After: `retry_after` seconds
//   exec...   starts /bin/true: delivered if it ran, else failed with
//             the error (the handler process's seccomp filter refuses it)
//   forge...  failed for good, with a reason that would forge a log line
//             if it were logged as it is: "554 5.0.0 forged\nlaimd[1]: ..."
//   term...   as ok, after a SIGTERM to the handler process's main
//             thread, once the process is on its way out: the delivery
//             ends while the process stops
// With `hang_until:` (a path), every call first waits until that file
// exists: a call that hangs for as long as a case needs (a mail reader's
// lock no longer does: file appends do not wait for it).
// With `credentials:` (a secret file), each delivery also writes the
// secret's bytes to PATH/secret-seen, proving they reached the handler
// process; test() reports their length, never the bytes.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "common/fd.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

class ProbeHandler : public Handler {
 public:
	explicit ProbeHandler(HandlerOptions& o)
	    : path_(o.string("path")), release_(o.string("release", "")), hang_until_(o.string("hang_until", "")),
	      retry_after_(static_cast<unsigned>(o.integer("retry_after", 0))),
	      secret_(o.has("credentials") ? o.secret("credentials") : "")
	{
	}

	Results deliver(const Envelope& env, const Message&) override
	{
		while (!hang_until_.empty() && access(hang_until_.c_str(), F_OK) != 0)
			usleep(10000);
		std::vector<Result> each;
		for (const std::string& rcpt : env.recipients)
			each.push_back(answer(env, rcpt));
		return each;
	}

	Result test() override
	{
		if (access(path_.c_str(), W_OK) != 0)
			return Result::tempfail("probe: " + path_ + " is not writable");
		return Result::delivered("probe: credentials of " + std::to_string(secret_.size()) + " bytes");
	}

	unsigned default_workers() const override { return 2; }

 private:
	Result answer(const Envelope& env, const std::string& rcpt)
	{
		std::string_view local = local_part(rcpt);
		if (local.substr(0, 4) == "fail")
			return Result::permfail("552 5.2.2 <" + rcpt + "> Quota exceeded").with_code("5.2.2");
		if (local.substr(0, 4) == "exec")
			return run_true();
		if (local.substr(0, 5) == "forge")
			return Result::permfail("554 5.0.0 forged\nlaimd[1]: forged line\x1b[2K\r");
		if (local.substr(0, 5) == "later")
			return Result::tempfail("HTTP 429 Too Many Requests", retry_after_);
		if (local.substr(0, 5) == "defer" && access(release_.c_str(), F_OK) != 0)
			return Result::tempfail("451 4.2.0 <" + rcpt + "> Temporary internal error").with_code("4.2.0");
		std::string auth = env.auth_user.empty() ? "" : " auth=" + env.auth_user;
		if (!append(path_ + "/deliveries", env.id + " " + rcpt + auth + "\n"))
			return Result::tempfail("probe: cannot write " + path_);
		if (!secret_.empty() && !append(path_ + "/secret-seen", secret_))
			return Result::tempfail("probe: cannot write " + path_);
		if (local.substr(0, 4) == "term")
			stop_main_thread();
		return Result::delivered("250 2.0.0 <" + rcpt + "> Saved");
	}

	// SIGTERM to the main thread (its id is the pid), then back once it
	// is on its way out: its first step, saving the rate limit state,
	// replaced ratelimit.json in the spool (the working directory).
	static void stop_main_thread()
	{
		auto inode = [] {
			struct stat st;
			return stat("ratelimit.json", &st) == 0 ? st.st_ino : 0;
		};
		ino_t before = inode();
		syscall(SYS_tgkill, getpid(), getpid(), SIGTERM);
		for (int i = 0; i < 10000000 && inode() == before; i++) {
		}
	}

	static Result run_true()
	{
		pid_t pid;
		char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
		if (int err = posix_spawn(&pid, argv[0], nullptr, nullptr, argv, nullptr))
			return Result::permfail(std::string("probe: exec /bin/true: ") + strerror(err));
		waitpid(pid, nullptr, 0);
		return Result::delivered("probe: /bin/true ran");
	}

	static bool append(const std::string& file, const std::string& line)
	{
		UniqueFd fd(open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
		return fd && write_all(fd.get(), line);
	}

	std::string path_, release_, hang_until_;
	unsigned retry_after_;
	std::string secret_;
};

LAIM_HANDLER("probe", ProbeHandler);

}  // namespace

}  // namespace laim
