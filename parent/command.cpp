// The parent's command service: the unprivileged handler process asks for
// the command of a pipe handler instance or of a "|command" alias target,
// naming the instance, the queue id and the envelope values, and gets the
// command's pipes back. Only root can start a program as another user,
// with that user's groups and without laim's confinement (no_new_privs,
// seccomp), which setuid helpers such as dovecot-lda's need; and only
// root should decide what runs: the program, its arguments and the user
// come from the parent's own copy of the configuration (a pipe section),
// or from an aliases file that root owns (an alias command, run as
// nobody); the handler's values only fill placeholders, inside argv
// words, never as options. The mbox handler's mailbox deliveries are
// commands too, which the parent builds itself: laim-mda (mda/mda.cpp)
// as the recipient, for a user name it checks. The parent never waits
// for a command: it forks it, passes the pipes, continues it when it is
// stopped (its user may signal it), and reports its end when it reaps it.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/address.h"
#include "common/aliases.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/proto.h"
#include "handler/api/command.h"
#include "parent/parent.h"

namespace laim {

namespace {

// Commands at once: more than the handler's delivery threads ever start,
// few enough that a handler process cannot fill the process table.
constexpr size_t MAX_COMMANDS = 64;
// The longest value a placeholder takes (an address is at most 256).
constexpr size_t MAX_VALUE = 1024;

// A queue id as Spool::new_id() makes them: 10 upper-case hex digits.
bool valid_queue_id(const std::string& id)
{
	return id.size() == 10 &&
	       std::all_of(id.begin(), id.end(), [](char c) { return isdigit(c) || (c >= 'A' && c <= 'F'); });
}

// No envelope value the handler process holds has a control character
// (the spool refuses CR, LF and NUL, SMTP the rest), so none reaches an
// argv, an environment or a log line.
bool valid_value(const std::string& v)
{
	return v.size() <= MAX_VALUE &&
	       std::none_of(v.begin(), v.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

bool valid_request(const CommandRunMsg& req)
{
	return valid_queue_id(req.queue_id) && valid_value(req.instance) && valid_value(req.sender) &&
	       !req.recipients.empty() && std::all_of(req.recipients.begin(), req.recipients.end(), valid_value);
}

// Why a command was not started, for the handler's result.
struct Refusal : std::runtime_error {
	Refusal(bool permanent, const std::string& why) : std::runtime_error(why), permanent(permanent) {}
	bool permanent;
};

// The pipe section req names, from the parent's own configuration.
CommandSpec pipe_spec(const Config& cfg, const CommandRunMsg& req)
{
	auto s = std::find_if(cfg.handlers.begin(), cfg.handlers.end(), [&](const HandlerSection& h) {
		return h.name == req.instance && h.type == "pipe";
	});
	if (s == cfg.handlers.end())
		throw Refusal(false, "no pipe handler \"" + req.instance + "\" in " + cfg.file);
	try {
		HandlerOptions o(*s, cfg.file);
		CommandSpec spec = read_command_spec(o);
		// Temporary: the handler process may still run the instance of
		// the config before a SIGHUP that turned per_recipient on.
		if (spec.per_recipient && req.recipients.size() != 1)
			throw Refusal(false, "per_recipient: one recipient per command");
		return spec;
	} catch (const ConfigError& e) {
		throw Refusal(false, e.what());  // its user went away since the config was read
	}
}

// An alias command: /bin/sh -c COMMAND as nobody, when alias_commands is
// on and the aliases file, read again here, lists that target.
CommandSpec alias_spec(const Config& cfg, const CommandRunMsg& req)
{
	const std::string& target = req.recipients[0];
	if (!cfg.alias_commands)
		throw Refusal(true, "alias commands are not enabled (alias_commands)");
	if (req.recipients.size() != 1 || !target.starts_with('|'))
		throw Refusal(true, "an alias command request names one \"|command\" target");
	if (!Aliases::load(cfg.aliases, nullptr).lists(target))
		throw Refusal(true, target + " is not a command that " + cfg.aliases + " lists (run newaliases)");
	CommandSpec spec;
	spec.argv = {"/bin/sh", "-c", target.substr(1)};
	spec.user = ALIAS_COMMAND_USER;
	spec.timeout = alias_command_timeout(cfg.delivery_timeout);
	return spec;
}

// The user a command runs as: ids, supplementary groups, home, shell.
// egid is gid but for laim-mda in a mail directory only its group may
// write (mailbox_account()).
struct Account {
	std::string name, home, shell;
	uid_t uid = 0;
	gid_t gid = 0, egid = 0;
	std::vector<gid_t> groups;
};

// True when /etc/aliases sends this name's mail elsewhere and not also to
// itself (as "root", or "root@" one of this host's names): its mailbox
// then takes no mail, even from a handler with a stale alias table.
bool aliased_away(const Config& cfg, const std::string& user)
{
	Aliases::Expansion x = Aliases::load(cfg.aliases, nullptr).expand(user);
	return std::none_of(x.addresses.begin(), x.addresses.end(), [&](const std::string& a) {
		return local_part(a) == user && is_local_address(a);
	});
}

// Who delivers to mail_dir/USER: USER, with USER's group and no other.
// When the mail directory lets only its group create files (Debian's
// /var/mail, root:mail 2775) and USER does not own it, that group is the
// effective and saved gid, USER's the real one: the least that can create
// the mailbox and its dotlock, and a process USER cannot ptrace (the
// kernel wants the tracer's gid to be all three) and that is not dumpable
// (its gids differ at exec). As a supplementary group USER could ptrace
// it and use the group on other users' mailboxes. Root's mailbox only
// while the aliases do not send root's mail elsewhere.
Account mailbox_account(const Config& cfg, const std::string& user)
{
	struct passwd* pw = valid_user_name(user) ? getpwnam(user.c_str()) : nullptr;
	if (!pw || pw->pw_name != user)
		throw Refusal(true, "mailbox: no such user \"" + user + "\"");
	if (pw->pw_uid == 0 && aliased_away(cfg, user))
		throw Refusal(true, "mailbox of " + user + ": " + cfg.aliases +
					    " sends this user's mail elsewhere (run newaliases)");
	Account a{pw->pw_name, "/", "/bin/sh", pw->pw_uid, pw->pw_gid, pw->pw_gid, {}};
	struct stat st;
	if (stat(cfg.mail_dir.c_str(), &st) == 0 && st.st_uid != a.uid && (st.st_mode & S_IWGRP) &&
	    !(st.st_mode & S_IWOTH))
		a.egid = st.st_gid;
	return a;
}

Account lookup_account(const std::string& user)
{
	struct passwd* pw = getpwnam(user.c_str());
	if (!pw)
		throw Refusal(false, "no such user \"" + user + "\"");
	if (pw->pw_uid == 0)
		throw Refusal(true, "\"" + user + "\" is root: a command never runs as root");
	Account a{pw->pw_name, pw->pw_dir, *pw->pw_shell ? pw->pw_shell : "/bin/sh", pw->pw_uid, pw->pw_gid,
		  pw->pw_gid, {}};
	int n = 0;
	getgrouplist(a.name.c_str(), a.gid, nullptr, &n);
	a.groups.resize(static_cast<size_t>(std::max(n, 1)));
	if (getgrouplist(a.name.c_str(), a.gid, a.groups.data(), &n) < 0)
		throw Refusal(false, "the groups of \"" + user + "\" keep changing");
	a.groups.resize(static_cast<size_t>(n));
	return a;
}

// What the child needs after fork: built before, so that it only makes
// system calls.
struct Launch {
	Account account;
	std::vector<std::string> argv, env;
	unsigned timeout = 0;
};

// A mailbox delivery: laim-mda MAIL_DIR USER SECONDS. SECONDS, four
// fifths of a command's limit, is its time to read the message and take
// the locks: it starts no append later. The parent's time limit is twice
// a command's: a SIGKILL during the append would leave the copy (or part
// of it) and the dotlock, and the retry would append the copy again, so
// a slow disk gets that long to end it. (The queue counts the call as
// deferred at delivery_timeout, and as delivered if it then ends so.)
Launch mailbox_launch(const Config& cfg, const CommandRunMsg& req)
{
	if (req.recipients.size() != 1)
		throw Refusal(true, "a mailbox request names one user");
	const char* env = getenv("LAIM_MDA");  // root's own environment: the e2e cases' build tree
	unsigned timeout = alias_command_timeout(cfg.delivery_timeout);
	Launch l{mailbox_account(cfg, req.recipients[0]), {}, {}, 2 * timeout};
	l.argv = {env && *env ? env : LAIM_MDA, cfg.mail_dir, l.account.name,
		  std::to_string(std::max(1u, timeout * 4 / 5))};
	return l;
}

// A command is fed by mail: as the handler or the smtp process's uid it
// could signal or trace them, and read the spool. config_check_users()
// refuses such a config; this holds whatever the user database says by
// the time the command starts.
void refuse_own_uid(const Runtime& rt, const Account& a)
{
	for (const RunAs* own : {&rt.user, &rt.smtp_user})
		if (a.uid == own->uid)
			throw Refusal(false, "\"" + a.name + "\" has uid " + std::to_string(a.uid) + ", that of laimd's " +
						     (own == &rt.user ? "handler" : "smtp") + " process (" + own->name +
						     "): a command never runs as laim's own processes do");
}

// The command req asks for, or a Refusal (thrown). Mailboxes are
// delivered only for a configured mbox handler (temporary: the handler
// process may still run the config before a SIGHUP).
Launch prepare(const Runtime& rt, const CommandRunMsg& req)
{
	const Config& cfg = rt.cfg;
	if (req.instance == MAILBOX_INSTANCE) {
		if (std::none_of(cfg.handlers.begin(), cfg.handlers.end(), [](auto& h) { return h.type == "mbox"; }))
			throw Refusal(false, "no mbox handler in " + cfg.file);
		return mailbox_launch(cfg, req);
	}
	bool alias = req.instance == ALIAS_COMMAND_INSTANCE;
	CommandSpec spec = alias ? alias_spec(cfg, req) : pipe_spec(cfg, req);
	Launch l{lookup_account(spec.user), {}, {}, spec.timeout};
	refuse_own_uid(rt, l.account);
	try {
		l.argv = alias ? spec.argv : command_argv(spec.argv, {req.queue_id, req.sender, req.recipients});
	} catch (const std::invalid_argument& e) {
		throw Refusal(true, e.what());
	}
	const Account& a = l.account;
	l.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + a.home, "USER=" + a.name, "LOGNAME=" + a.name,
		 "SHELL=" + a.shell, "SENDER=" + req.sender, "QUEUE_ID=" + req.queue_id};
	if (!alias && req.recipients.size() == 1)
		l.env.push_back("RECIPIENT=" + req.recipients[0]);
	l.env.insert(l.env.end(), spec.env.begin(), spec.env.end());
	return l;
}

std::vector<char*> c_strings(std::vector<std::string>& v)
{
	std::vector<char*> out;
	for (std::string& s : v)
		out.push_back(s.data());
	out.push_back(nullptr);
	return out;
}

// The child, after fork: stdin from in, stdout and stderr into out (so
// that a failure here is the command's output), a session of its own,
// the account's ids and groups (an effective gid of its own: see
// mailbox_account()), its home (or /) as working directory, default
// signals, umask 077, no other descriptor; then the program. A step that
// fails exits 71 (EX_OSERR: deferred) with the reason.
[[noreturn]] void become(const Account& a, char* const argv[], char* const envp[], int in, int out)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, nullptr);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	const char* step = "dup2";
	if (dup2(in, 0) == 0 && dup2(out, 1) == 1 && dup2(out, 2) == 2 && (step = "setsid", setsid() > 0) &&
	    (step = "setgroups", setgroups(a.groups.size(), a.groups.data()) == 0) &&
	    (step = "setresgid", setresgid(a.gid, a.egid, a.egid) == 0) && (step = "setuid", setuid(a.uid) == 0)) {
		if (chdir(a.home.c_str()) != 0)
			(void)!chdir("/");
		umask(077);
		close_range(3, ~0U, 0);
		execve(argv[0], argv, envp);
		step = "exec";
	}
	dprintf(2, "cannot run %s as %s: %s: %s\n", argv[0], a.name.c_str(), step, strerror(errno));
	_exit(EX_OSERR);
}

// The handler's ends of a command's pipes.
struct Pipes {
	UniqueFd input;   // stdin's write end
	UniqueFd unread;  // a read end of stdin, which the handler never reads
	UniqueFd output;  // stdout and stderr's read end
};

// Fork and pipes: the command's pid, and in *p the handler's ends; -1
// with errno when either fails.
pid_t spawn(Launch& l, Pipes* p)
{
	std::vector<char*> argv = c_strings(l.argv), envp = c_strings(l.env);
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) != 0)
		return -1;
	p->input.reset(in[1]);
	p->unread.reset(in[0]);
	if (pipe2(out, O_CLOEXEC) != 0)
		return -1;
	p->output.reset(out[0]);
	UniqueFd child_out(out[1]);
	pid_t pid = fork();
	if (pid == 0)
		become(l.account, argv.data(), envp.data(), in[0], out[1]);
	return pid;
}

// The reply channel of a request that started nothing: why, then closed.
void refuse(UniqueFd reply, const Refusal& r)
{
	ImsgChannel chan(std::move(reply), imsg_valid_nothing);
	chan.compose(IMSG_P_COMMAND_FAIL, 0, encode(CommandFailMsg{r.permanent, r.what()}));
	chan.flush();
}

}  // namespace

// Starts the command a request names, or says why not. False when the
// The reply channel must be one end of the AF_UNIX SOCK_SEQPACKET pair
// the handler process makes (handler/command_client.cpp): another kind of
// descriptor does not go into the parent's event loop.
static bool reply_channel(int fd)
{
	struct stat st;
	int type = 0, domain = 0;
	socklen_t tlen = sizeof type, dlen = sizeof domain;
	return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_SEQPACKET &&
	       getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 && domain == AF_UNIX;
}

// request is malformed (the caller ends the handler process).
bool CommandService::request(const Runtime& rt, EventLoop& loop, Imsg& m)
{
	CommandRunMsg req;
	if (!decode(m.data, req))
		return false;
	if (!reply_channel(m.fd.get())) {
		log_warnx("command request whose reply channel is not a unix seqpacket socket");
		return false;
	}
	if (!valid_request(req)) {
		log_warnx("command request with a malformed envelope refused");
		refuse(std::move(m.fd), Refusal(true, "command: malformed envelope values"));
		return true;
	}
	std::string label = req.queue_id + ": handler=" + req.instance;
	try {
		if (running_.size() >= MAX_COMMANDS)
			throw Refusal(false, "too many commands running at once");
		Launch l = prepare(rt, req);
		Pipes p;
		pid_t pid = spawn(l, &p);
		if (pid < 0)
			throw Refusal(false, std::string("cannot start a command: ") + strerror(errno));
		ImsgPeer& reply = watch(loop, pid, std::move(m.fd), label, l.account.name, l.timeout,
					req.instance == MAILBOX_INSTANCE);
		reply.send(IMSG_P_COMMAND_INPUT, 0, encode(NoPayload{}), std::move(p.input));
		reply.send(IMSG_P_COMMAND_UNREAD, 0, encode(NoPayload{}), std::move(p.unread));
		reply.send(IMSG_P_COMMAND_OUTPUT, 0, encode(CommandStartedMsg{l.account.name}), std::move(p.output));
		log_debug("%s, command started as %s (uid %u), pid %d: %s", label.c_str(), l.account.name.c_str(),
			  (unsigned)l.account.uid, (int)pid, l.argv[0].c_str());
	} catch (const Refusal& r) {
		log_warnx("%s, command refused: %s", label.c_str(), r.what());
		refuse(std::move(m.fd), r);
	}
	return true;
}

// A started command, until its end: reply is where the end is reported.
ImsgPeer& CommandService::watch(EventLoop& loop, pid_t pid, UniqueFd reply, const std::string& label,
				const std::string& user, unsigned timeout, bool mailbox)
{
	Running& r = running_[pid];
	r.label = label;
	r.user = user;
	r.timeout = timeout;
	r.mailbox = mailbox;
	r.deadline = seconds_since_boot() + timeout;
	r.reply = std::make_unique<ImsgPeer>(
		loop, std::move(reply), imsg_valid_nothing, [](Imsg& m) { unexpected_imsg(m); },
		[this, pid](const char*) { let_go(pid); });
	return *r.reply;
}

// The handler process closed a command's reply channel (it gave up, or
// died, or ended at a stop): nobody reads the command's output any more,
// so it is killed. Not laim-mda, which may be appending: a SIGKILL there
// would leave part of the copy in the mailbox. It is told to stop
// (SIGTERM), and cuts back what it appended (mda/mda.cpp), since nobody
// will mark the message delivered: else its retry would append it again.
void CommandService::let_go(pid_t pid)
{
	auto it = running_.find(pid);
	if (it == running_.end() || !it->second.reply)
		return;
	Running& r = it->second;
	kill(-pid, r.mailbox ? SIGTERM : SIGKILL);
	if (r.mailbox)
		log_warnx("%s, laim-mda as %s (pid %d) told to stop: the handler process let go", r.label.c_str(),
			  r.user.c_str(), (int)pid);
	r.reply.reset();
}

// Called while pid is an unreaped zombie (waitid with WNOWAIT), so that
// its number cannot go to another process: what it left in its process
// group is killed, then it is reaped and its end reported.
bool CommandService::reap(pid_t pid)
{
	auto it = running_.find(pid);
	if (it == running_.end())
		return false;
	kill(-pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	Running& r = it->second;
	if (r.reply)
		r.reply->send(IMSG_P_COMMAND_EXIT, 0,
			      encode(CommandExitMsg{static_cast<uint32_t>(status), r.timed_out, r.timeout}));
	else if (r.mailbox)  // its line on stderr has no reader: its end is logged here
		log_info("%s, laim-mda as %s (pid %d) %s %d", r.label.c_str(), r.user.c_str(), (int)pid,
			 WIFEXITED(status) ? "exited with status" : "killed by signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	running_.erase(it);
	return true;
}

// A command runs as its user, who may stop it (SIGSTOP); stopped, it
// would hold its delivery thread until its time limit, and laim-mda the
// mbox handler's, and with it every other user's mail, until twice that.
// So its process group is continued at once; the first stop is logged.
// One waitid per command, not a loop until none is stopped: a user
// stopping its command as fast as it can does not keep the parent here.
void CommandService::resume_stopped()
{
	for (auto& [pid, r] : running_) {
		siginfo_t si{};
		if (waitid(P_PID, static_cast<id_t>(pid), &si, WSTOPPED | WNOHANG) != 0 || si.si_pid != pid)
			continue;
		kill(-pid, SIGCONT);
		if (!r.stopped)
			log_warnx("%s, %s as %s (pid %d) was stopped: continued", r.label.c_str(),
				  r.mailbox ? "laim-mda" : "command", r.user.c_str(), (int)pid);
		r.stopped = true;
	}
}

// Kills the process group of each command past its time limit.
void CommandService::expire(time_t now)
{
	for (auto& [pid, r] : running_) {
		if (r.timed_out || now < r.deadline)
			continue;
		log_warnx("%s, command (pid %d) still running after %us: killed", r.label.c_str(), (int)pid, r.timeout);
		kill(-pid, SIGKILL);
		r.timed_out = true;
	}
}

// At exit, the handler process gone (its closed reply channels may not
// have been read yet): every command is let go, laim-mda told to stop.
void CommandService::let_go_all()
{
	for (auto& [pid, r] : running_)
		let_go(pid);
}

// At exit: no command outlives laimd.
void CommandService::kill_all()
{
	for (auto& [pid, r] : running_)
		kill(-pid, SIGKILL);
}

}  // namespace laim
