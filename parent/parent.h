// The root parent's own parts: binding the listeners, preparing the spool,
// the command service for the handler process (which also runs its
// mailbox deliveries).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/event_loop.h"
#include "common/fd.h"
#include "common/imsg.h"
#include "common/peer.h"
#include "common/proto.h"
#include "common/runtime.h"

namespace laim {

// parent/command.cpp: commands for the handler process (pipe instances,
// alias commands and laim-mda for the mbox handler), started as their
// user from the parent's own configuration; the handler gets their pipes,
// and a report of their end.
class CommandService {
 public:
	// Answers one IMSG_H_COMMAND_RUN from rt.cfg, never as rt.user's or
	// rt.smtp_user's uid; false when it breaks the protocol.
	bool request(const Runtime& rt, EventLoop& loop, Imsg& m);
	// pid ended: reaps it, kills what is left of its process group and
	// reports its end; false when pid is not a command. Call it while pid
	// is still a zombie (waitid WNOWAIT).
	bool reap(pid_t pid);
	// Continues each stopped command at once, so that its user, who may
	// signal it, cannot hold up the handler's delivery thread.
	void resume_stopped();
	// Kills the commands past their time limit.
	void expire(time_t now);
	// At exit: lets every command go (laim-mda is told to stop, the others
	// are killed).
	void let_go_all();
	// True while a command is left to reap.
	bool running() const { return !running_.empty(); }
	// At exit: kills every command.
	void kill_all();

 private:
	struct Running {
		std::string label;  // "ID: handler=NAME", for log lines
		std::string user;
		unsigned timeout = 0;
		time_t deadline = 0;
		bool timed_out = false;
		bool stopped = false;  // was stopped and continued (logged once)
		bool mailbox = false;  // laim-mda: told to stop, not killed, when the handler lets go
		std::unique_ptr<ImsgPeer> reply;  // null once the handler process let go
	};
	ImsgPeer& watch(EventLoop& loop, pid_t pid, UniqueFd reply, const std::string& label,
			const std::string& user, unsigned timeout, bool mailbox);
	void let_go(pid_t pid);
	std::map<pid_t, Running> running_;
};

// parent/restart.cpp: a child that dies is forked again after its
// back-off: 1 s, doubling with each death up to RESTART_MAX_DELAY, and 1 s
// again once it had run more than RESTART_STABLE seconds. Returns the
// delay for a child started at `started` that died at `died`, and moves
// backoff (the child's, 1 at first) on to the next one.
inline constexpr unsigned RESTART_MAX_DELAY = 60;
inline constexpr time_t RESTART_STABLE = 60;
unsigned restart_delay(unsigned& backoff, time_t started, time_t died);

// parent/listen.cpp: binds every configured listener, fatal on failure.
std::vector<Listener> listen_all(const Config& cfg);
// parent/listen.cpp: a unix socket every local user may connect to (0666).
Listener listen_unix(const std::string& path);
// parent/listen.cpp: the configured hostname, /etc/mailname, or the FQDN.
std::string resolve_hostname(const Config& cfg);
// parent/spool.cpp: locks the spool (rt.spool_lock; fatal when another
// laimd holds it), makes its directories and gives them to rt.user
// (offline/ also to laim-drop's group); fatal on failure.
void prepare_spool(Runtime& rt);
// parent/spool.cpp: this process's pid into the spool's lock file, again
// after daemonizing, for the message of a laimd that finds it taken.
void write_spool_lock_pid(int lock, const std::string& spool);

}  // namespace laim
