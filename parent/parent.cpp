// laimd: the root parent. Reads the config, binds, forks the smtp and
// handler processes, then only supervises them (doc/architecture.md, "Processes").
#include "config.h"

#include <dirent.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <openssl/crypto.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <tuple>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/hostname.h"
#include "common/log.h"
#include "common/peer.h"
#include "common/proto.h"
#include "handler/api/handler.h"
#include "handler/handlerd.h"
#include "parent/auth.h"
#include "parent/client_uid.h"
#include "parent/keyserver.h"
#include "parent/parent.h"
#include "smtp/smtp.h"

using namespace laim;

namespace {

enum { SMTP = 0, HANDLER = 1 };
const char* const child_name[] = {"smtp", "handler"};
// Seconds a stop waits for laim-mda to cut back an append it was told to
// stop (its write or fsync returns first, then a truncate and an fsync).
constexpr time_t COMMAND_STOP_WAIT = 10;

struct Child {
	pid_t pid = -1;
	std::unique_ptr<ImsgPeer> chan;  // parent's end
	std::unique_ptr<ImsgPeer> command_chan;  // handler only: its command requests
	std::unique_ptr<ImsgPeer> key_chan;      // smtp only: its private-key operations
	time_t started = 0;
	time_t restart_at = 0;  // when dead: when to fork it again
	unsigned backoff = 1;   // seconds, restart_delay()'s
	ImsgMacKey mac_key{};   // MACs its sibling frames; drawn afresh at each fork
};

// The supervision loop: signals and the children's channels. Declared
// first, so that it outlives every Watch at exit.
std::optional<EventLoop> loop;
EventLoop::Watch signals;
Runtime rt;
Child children[2];
CommandService commands;
AuthService auth;  // the users files of the auth listeners
KeyServer keys;
UniqueFd sibling_end[2];  // the smtp<->handler end kept for a child not yet forked
bool shutting_down = false;

[[noreturn]] void usage()
{
	fprintf(stderr, "usage: laimd [-d] [-n] [-v] [-f file]\n");
	exit(64);  // EX_USAGE
}

// Loads and fully validates a config, handler sections included (their
// constructors only parse options, and read the secret files they name
// into *secrets) and the listeners' files. Throws ConfigError.
Config load_config(const std::string& file, std::string* text, Secrets* secrets, bool* world_readable)
{
	*text = config_read(file, world_readable);
	Config cfg = config_parse(*text, file);
	config_check_tool_paths(cfg);
	listen_check_files(cfg);
	config_check_users(cfg);
	config_check_mail_dir(cfg);
	*secrets = Secrets::from_files();
	handlers_create(cfg, *secrets);
	return cfg;
}

std::pair<UniqueFd, UniqueFd> seqpacket_pair()
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		fatal("socketpair");
	return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// Under systemd (Type=notify): the datagram sd_notify(3) sends, to the
// socket in NOTIFY_SOCKET ("@" for the abstract namespace). Written out as
// sd_notify(3) documents it rather than linked from libsystemd, whose
// library and its compression and crypto libraries would be a tenth of
// laimd's memory for this one call.
void notify_ready()
{
	const char* path = getenv("NOTIFY_SOCKET");
	if (!path || (path[0] != '/' && path[0] != '@'))
		return;
	struct sockaddr_un sun = {};
	sun.sun_family = AF_UNIX;
	size_t len = strlen(path);
	if (len >= sizeof sun.sun_path) {
		log_warnx("NOTIFY_SOCKET %s: name too long", path);
		return;
	}
	memcpy(sun.sun_path, path, len);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
	static const char ready[] = "READY=1";
	if (!fd || sendto(fd.get(), ready, sizeof ready - 1, MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sun),
			  static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len)) < 0)
		log_warn("NOTIFY_SOCKET %s", path);
}

// A freshly forked smtp or handler process runs SCHED_BATCH, unless laimd
// was given another policy than the default (systemd's
// CPUSchedulingPolicy=): mail is not interactive, and a woken laim
// process that does not preempt the running one lets each do more per
// wake-up. The parent, and the commands it runs, keep the default.
void batch_scheduling()
{
	struct sched_param p = {};
	if (sched_getscheduler(0) == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &p) == -1)
		log_warn("sched_setscheduler SCHED_BATCH");
}

// Closes every descriptor a freshly forked child must not keep.
void close_other_fds(std::initializer_list<int> keep)
{
	std::vector<int> doomed;
	DIR* d = opendir("/proc/self/fd");
	if (!d)
		fatal("/proc/self/fd");
	while (struct dirent* e = readdir(d)) {
		int fd = atoi(e->d_name);
		bool k = fd < 3 || fd == dirfd(d) || !isdigit(static_cast<unsigned char>(e->d_name[0]));
		for (int f : keep)
			k |= f == fd;
		for (const Listener& l : rt.listeners)
			k |= l.fd.get() == fd;
		if (!k)
			doomed.push_back(fd);
	}
	closedir(d);
	for (int fd : doomed)
		close(fd);
}

void child_message(int which, Imsg& m);
void child_channel_lost(int which, const char* broken);
void command_request(Imsg& m);
void key_channel_lost(const char* broken);
void service_channel_lost(std::unique_ptr<ImsgPeer>& chan, const char* service, const char* broken);

// Forks one child with a fresh parent channel; sib is its end of the
// smtp<->handler channel. The handler also gets a channel of its own for
// command requests (mailbox deliveries among them), made last.
void start_child(int which, UniqueFd sib)
{
	auto [mine, theirs] = seqpacket_pair();
	UniqueFd cmd_mine, cmd_theirs, key_mine, key_theirs;
	if (which == HANDLER)
		std::tie(cmd_mine, cmd_theirs) = seqpacket_pair();
	else
		std::tie(key_mine, key_theirs) = seqpacket_pair();
	// The kernel's generator: OpenSSL's would load its providers into the
	// parent (about 2.5 MiB of the tree's memory) for 32 bytes.
	ImsgMacKey& key = children[which].mac_key;
	if (getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size()))
		fatal("getrandom for the %s process's key", child_name[which]);
	pid_t pid = fork();
	if (pid == -1) {
		log_warn("fork %s process", child_name[which]);
		children[which].restart_at = seconds_since_boot() + children[which].backoff;
		sibling_end[which] = std::move(sib);
		return;
	}
	if (pid == 0) {
		mine.reset();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, nullptr);
		signal(SIGHUP, SIG_IGN);
		cmd_mine.reset();
		key_mine.reset();
		SiblingChannel::set_key(children[which].mac_key);  // its own key only
		for (Child& c : children)
			OPENSSL_cleanse(c.mac_key.data(), c.mac_key.size());
		keys.forget();  // only the parent holds the TLS keys
		auth.wipe();  // and the password hashes
		close_other_fds({theirs.get(), sib.get(), rt.control.fd.get(), cmd_theirs.get(), key_theirs.get(),
				 rt.spool_lock.get()});
		log_init(rt.foreground, rt.verbose);
		set_process_title(which == SMTP ? "laimd: smtp" : "laimd: handler");
		batch_scheduling();
		if (which == SMTP) {
			// The listeners stay with smtp only, the control socket
			// with the handler, and the spool's lock: a handler left
			// by a parent killed -9 still holds the spool.
			rt.control.fd.reset();
			rt.spool_lock.reset();
			smtp_main(rt, std::move(theirs), std::move(sib), std::move(key_theirs));
		}
		for (Listener& l : rt.listeners)
			l.fd.reset();
		handler_main(rt, std::move(theirs), std::move(sib), std::move(cmd_theirs));
	}
	Child& c = children[which];
	c.pid = pid;
	c.started = seconds_since_boot();
	c.restart_at = 0;
	c.chan = std::make_unique<ImsgPeer>(
		*loop, std::move(mine), which == SMTP ? imsg_valid_smtp_to_parent : imsg_valid_child_to_parent,
		[which](Imsg& m) { child_message(which, m); },
		[which](const char* broken) { child_channel_lost(which, broken); });
	if (which == HANDLER) {
		c.command_chan = std::make_unique<ImsgPeer>(
			*loop, std::move(cmd_mine), imsg_valid_command_request, command_request,
			[](const char* broken) { service_channel_lost(children[HANDLER].command_chan, "command", broken); });
	} else {
		c.key_chan = std::make_unique<ImsgPeer>(
			*loop, std::move(key_mine), imsg_valid_key_request,
			[](Imsg& m) { keys.answer(*children[SMTP].key_chan, m); }, key_channel_lost);
		keys.sent_to_smtp(true);  // rt.tls, which it inherits
	}
	log_debug("%s process started, pid %d", child_name[which], (int)pid);
}

// A restarted child needs a fresh smtp<->handler channel: one end goes to
// it at fork, the other to its running sibling over imsg (or is kept for
// the sibling's own restart when it is down too).
void restart_child(int which)
{
	int other = 1 - which;
	if (sibling_end[which]) {
		start_child(which, std::move(sibling_end[which]));
		return;
	}
	auto [mine, theirs] = seqpacket_pair();
	if (children[other].pid > 0) {
		uint32_t type = other == SMTP ? IMSG_P_HANDLER_CHANNEL : IMSG_P_SMTP_CHANNEL;
		children[other].chan->send(type, 0, encode(NoPayload{}), std::move(theirs));
	} else {
		sibling_end[other] = std::move(theirs);
	}
	start_child(which, std::move(mine));
}

std::string describe_status(int status)
{
	if (WIFEXITED(status))
		return "exited with status " + std::to_string(WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		std::string s = std::string("killed by signal SIG") + sigabbrev_np(sig);
		if (sig == SIGSYS)
			s += " (seccomp violation)";
		return s;
	}
	return "stopped with status " + std::to_string(status);
}

// Each ended process is looked at before it is reaped (WNOWAIT), so that
// a command's process group is killed while its number is still taken
// (CommandService::reap); a child is restarted after its back-off. A
// stopped command is continued (CommandService::resume_stopped).
void reap_children()
{
	commands.resume_stopped();
	for (siginfo_t si{}; waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0; si = {}) {
		pid_t pid = si.si_pid;
		int status = 0;
		if (commands.reap(pid) || waitpid(pid, &status, 0) != pid)
			continue;
		for (int which : {SMTP, HANDLER}) {
			Child& c = children[which];
			if (c.pid != pid)
				continue;
			c.pid = -1;
			c.chan.reset();
			c.key_chan.reset();
			if (which == HANDLER)
				c.command_chan.reset();
			if (shutting_down) {
				log_debug("%s process %s", child_name[which], describe_status(status).c_str());
				continue;
			}
			time_t now = seconds_since_boot();
			unsigned delay = restart_delay(c.backoff, c.started, now);
			log_warnx("%s process (pid %d) %s; restarting in %us", child_name[which], (int)pid,
				  describe_status(status).c_str(), delay);
			c.restart_at = now + delay;
		}
	}
}

// What a reload cannot change in a running laimd keeps its running value
// in cfg, with a warning when the file says otherwise. The host name is
// one of them: the handler process's local domains (set_local_domains())
// and the parent's are resolved once, at start.
void keep_until_restart(Config& cfg)
{
	bool listeners_changed = cfg.socket != rt.cfg.socket || cfg.control_socket != rt.cfg.control_socket ||
				 cfg.listen.size() != rt.cfg.listen.size();
	for (size_t i = 0; !listeners_changed && i < cfg.listen.size(); i++) {
		const ListenAddress &a = cfg.listen[i], &b = rt.cfg.listen[i];
		listeners_changed = a.host != b.host || a.port != b.port || a.tls != b.tls || a.cert.path != b.cert.path ||
				    a.key.path != b.key.path || a.auth_required != b.auth_required ||
				    a.users.path != b.users.path || a.senders.path != b.senders.path;
	}
	if (listeners_changed || cfg.user != rt.cfg.user || cfg.smtp_user != rt.cfg.smtp_user ||
	    cfg.spool != rt.cfg.spool || cfg.hostname != rt.cfg.hostname)
		log_warnx("listen, socket, control_socket, user, smtp_user, spool and hostname changes take effect "
			  "at the next restart (the files a listener names are read again)");
	cfg.listen = rt.cfg.listen;
	cfg.hostname = rt.cfg.hostname;
	cfg.socket = rt.cfg.socket;
	cfg.control_socket = rt.cfg.control_socket;
	cfg.user = rt.cfg.user;
	cfg.smtp_user = rt.cfg.smtp_user;
	cfg.spool = rt.cfg.spool;
}

// SIGHUP: a valid new config replaces the old one in both children; an
// invalid one is logged and the old one stays.
void reload()
{
	std::string text;
	Secrets secrets;
	bool world_readable = false;
	Config cfg;
	AuthService new_auth;
	try {
		cfg = load_config(rt.cfg.file, &text, &secrets, &world_readable);
		new_auth = AuthService::load(rt.cfg);  // the listeners in use, their files read again
	} catch (const ConfigError& e) {
		log_warnx("%s; keeping the previous configuration", e.what());
		return;
	}
	if (world_readable)
		log_warnx("%s is readable by others: handlers may keep secrets there", cfg.file.c_str());
	if (cfg.routes.empty())
		log_warnx("%s has no routes: every recipient is deferred", cfg.file.c_str());
	for (const std::string& w : new_auth.warnings())
		log_warnx("%s", w.c_str());
	keep_until_restart(cfg);
	try {
		config_check_users(cfg);  // the new commands' users, against the users running now
	} catch (const ConfigError& e) {
		log_warnx("%s (user and smtp_user stay \"%s\" and \"%s\" until the next restart); keeping the "
			  "previous configuration", e.what(), cfg.user.c_str(), cfg.smtp_user.c_str());
		return;
	}
	TlsKeys tls;
	try {
		tls = tls_keys_load(cfg);  // a renewed certificate and key
	} catch (const ConfigError& e) {
		log_warnx("%s; keeping the previous configuration and certificates", e.what());
		return;
	}
	keys.adopt(std::move(tls));
	rt.tls = keys.chains();
	rt.cfg = std::move(cfg);
	rt.config_text = std::move(text);
	rt.secrets = std::move(secrets);
	auth.wipe();
	auth = std::move(new_auth);

	rt.host_addresses = host_addresses();  // one added since (ip addr add) is this host's too
	if (children[SMTP].pid > 0) {
		children[SMTP].chan->send(IMSG_P_SMTP_CONF, 0, encode(smtp_conf(rt.cfg, rt.hostname, rt.host_addresses)));
		for (const SmtpTls& t : rt.tls)
			children[SMTP].chan->send(IMSG_P_SMTP_TLS, 0, encode(t));
		keys.sent_to_smtp(false);
	}
	if (children[HANDLER].pid > 0) {
		// The config and its secrets, which the handler process cannot read.
		UniqueFd mfd(memfd_create("laim-config", MFD_CLOEXEC));
		if (!mfd || !write_all(mfd.get(), encode(HandlerConfText{rt.config_text, rt.secrets.encode()})))
			log_warn("passing the configuration to the handler process");
		else
			children[HANDLER].chan->send(IMSG_P_HANDLER_CONF, 0, encode(HandlerConf{rt.cfg.file}),
						     std::move(mfd));
	}
	log_info("configuration reloaded");
}

// A child told to stop serves no new client: the parent closes its own
// copies of that child's sockets and removes their paths, so that a new
// client is refused at once (sendmail falls back to offline/, laimctl says
// laimd is not running) instead of waiting, unserved, in a backlog until
// laimd exits.
void stop_serving(int which)
{
	if (which == SMTP) {
		rt.listeners.clear();
		unlink(rt.cfg.socket.c_str());
	} else {
		rt.control.fd.reset();
		unlink(rt.cfg.control_socket.c_str());
	}
}

// SIGTERM: smtp first (its sessions may still need the handler to commit),
// then the handler (which finishes deliveries in progress), each with a
// bounded wait. Signals are no longer read; the loop still serves the
// commands (and mailbox deliveries) that deliveries in progress may
// need. No command outlives laimd: a laim-mda still running is told to
// stop and waited for (COMMAND_STOP_WAIT) while it cuts back its append,
// which a SIGKILL, the parent's or systemd's once laimd exits, would
// leave half-written in the mailbox; then whatever is left is killed.
[[noreturn]] void shutdown_children()
{
	shutting_down = true;
	signals.reset();
	for (int which : {SMTP, HANDLER}) {
		Child& c = children[which];
		stop_serving(which);
		if (c.pid <= 0)
			continue;
		kill(c.pid, SIGTERM);
		for (time_t deadline = seconds_since_boot() + 60; c.pid > 0 && seconds_since_boot() < deadline;) {
			loop->wait(100);
			reap_children();
		}
		if (c.pid > 0) {
			log_warnx("%s process did not stop in time, killing it", child_name[which]);
			kill(c.pid, SIGKILL);
			waitpid(c.pid, nullptr, 0);
			c.pid = -1;
		}
	}
	commands.let_go_all();
	for (time_t deadline = seconds_since_boot() + COMMAND_STOP_WAIT;
	     commands.running() && seconds_since_boot() < deadline;) {
		loop->wait(100);
		reap_children();
	}
	commands.kill_all();
	log_info("exiting");
	exit(0);
}

void daemonize()
{
	if (daemon(0, 0) == -1)
		fatal("daemon");
}

// A child reports that its sibling broke the imsg protocol, forwarding
// the frame with its MAC. The parent ends the sibling only when the frame
// carries the sibling's MAC and breaks a rule its receiver applies
// (judge_peer_report); a report about a valid frame is a lie, and ends the
// reporter instead; a frame without the sibling's MAC was made up by one
// of them, the parent cannot tell which, and ends both. Either way the
// ended child is restarted, like any child that dies (doc/architecture.md,
// "Channels and messages"). The smtp process also asks for AUTH checks,
// and whose a local TCP client is.
void child_message(int which, Imsg& m)
{
	switch (m.type) {
	case IMSG_S_AUTH:
		if (which != SMTP || !auth.request(*children[SMTP].chan, m))
			throw ImsgProtocolError("bad AUTH request");
		break;
	case IMSG_S_CLIENT_UID:
		if (which != SMTP || !answer_client_uid(*children[SMTP].chan, m))
			throw ImsgProtocolError("bad client uid request");
		break;
	case IMSG_C_PEER_ERROR:
	case IMSG_C_PEER_ERROR_FD: {
		PeerErrorMsg report = payload<PeerErrorMsg>(m);
		int other = 1 - which;
		ImsgValidator receiver = which == SMTP ? imsg_valid_handler_to_smtp : imsg_valid_smtp_to_handler;
		std::string fault;
		PeerReport verdict = judge_peer_report(report.frame, m.fd.get(), children[other].mac_key, receiver,
						       rt.cfg.socket, &fault);
		const char* reporter = child_name[which];
		const char* accused = child_name[other];
		if (verdict == PeerReport::Fault)
			log_warnx("%s process reports a protocol error from the %s process (%s): ending it", reporter,
				  accused, fault.c_str());
		else if (verdict == PeerReport::Lie)
			log_warnx("%s process reports a protocol error from the %s process (%s), but the frame it "
				  "forwards is valid: ending the %s process",
				  reporter, accused, report.what.c_str(), reporter);
		else
			log_warnx("%s process reports a protocol error from the %s process (%s), but the frame it "
				  "forwards does not carry the %s process's MAC: ending both",
				  reporter, accused, report.what.c_str(), accused);
		for (int c : {SMTP, HANDLER}) {
			bool ended = verdict == PeerReport::Unauthenticated || c == (verdict == PeerReport::Fault ? other : which);
			if (ended && children[c].pid > 0)
				kill(children[c].pid, SIGKILL);
		}
		break;
	}
	default:
		unexpected_imsg(m);
	}
}

// A child's channel closed (the child is ending) or broke the protocol.
// The peer stays, for what the parent still sends, until the child is
// reaped. A child that broke it is ended (and restarted): the parent no
// longer reads it, so it could not go on.
void child_channel_lost(int which, const char* broken)
{
	if (!broken)
		return;
	log_warnx("%s process broke the parent channel's protocol (%s): ending it", child_name[which], broken);
	if (children[which].pid > 0)
		kill(children[which].pid, SIGKILL);
}

// The key channel closed (smtp is ending) or the smtp process broke its
// protocol: that ends the process, as a protocol error between siblings
// does; the parent goes on.
void key_channel_lost(const char* broken)
{
	if (!broken)
		return;
	log_warnx("smtp process broke the key protocol (%s): ending it", broken);
	if (children[SMTP].pid > 0)
		kill(children[SMTP].pid, SIGKILL);
}

// A command request from the handler process.
void command_request(Imsg& m)
{
	if (!commands.request(rt, *loop, m))
		throw ImsgProtocolError("bad request");
}

// The command channel closed, or the handler process broke its protocol:
// that ends the process, as a protocol error between siblings does.
void service_channel_lost(std::unique_ptr<ImsgPeer>& chan, const char* service, const char* broken)
{
	chan.reset();
	if (!broken)
		return;
	log_warnx("handler process broke the %s protocol (%s): ending it", service, broken);
	if (children[HANDLER].pid > 0)
		kill(children[HANDLER].pid, SIGKILL);
}

// SIGCHLD reaps, SIGHUP reloads, SIGTERM and SIGINT shut down.
void read_signals(int sigfd)
{
	struct signalfd_siginfo si;
	while (read(sigfd, &si, sizeof si) == sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD: reap_children(); break;
		case SIGHUP: reload(); break;
		case SIGTERM:
		case SIGINT:
			log_info("received SIG%s, shutting down", sigabbrev_np(si.ssi_signo));
			shutdown_children();
		}
	}
}

// The supervision loop: signals through a signalfd, reports from the
// children, child restarts on their back-off timers.
[[noreturn]] void supervise(int sigfd)
{
	signals = loop->watch(sigfd, EPOLLIN, [sigfd](uint32_t) { read_signals(sigfd); });
	for (;;) {
		time_t now = seconds_since_boot();
		for (int which : {SMTP, HANDLER})
			if (children[which].pid <= 0 && children[which].restart_at && children[which].restart_at <= now)
				restart_child(which);
		commands.expire(now);
		loop->wait(250);
	}
}

}  // namespace

int main(int argc, char* argv[])
{
	keyserver_init();
	process_title_init(argc, argv);
	std::string file = LAIM_CONFIG_FILE;
	bool check_only = false;
	int ch;
	while ((ch = getopt(argc, argv, "df:nv")) != -1) {
		switch (ch) {
		case 'd': rt.foreground = true; break;
		case 'f': file = optarg; break;
		case 'n': check_only = true; break;
		case 'v': rt.verbose++; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();

	bool world_readable = false;
	try {
		rt.cfg = load_config(file, &rt.config_text, &rt.secrets, &world_readable);
		auth = AuthService::load(rt.cfg);
		keys.adopt(tls_keys_load(rt.cfg));
		rt.tls = keys.chains();
	} catch (const ConfigError& e) {
		fprintf(stderr, "laimd: %s\n", e.what());
		return 1;
	}
	if (world_readable)
		fprintf(stderr, "laimd: warning: %s is readable by others: handlers may keep secrets there\n",
			file.c_str());
	if (rt.cfg.routes.empty())
		fprintf(stderr, "laimd: warning: %s has no routes: every recipient is deferred\n", file.c_str());
	for (const std::string& w : auth.warnings())
		fprintf(stderr, "laimd: warning: %s\n", w.c_str());
	if (check_only) {
		printf("%s: configuration OK\n", file.c_str());
		return 0;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "laimd: must be started as root\n");
		return 77;  // EX_NOPERM
	}

	// Under systemd (Type=notify) stay in the foreground but log to syslog.
	bool systemd = getenv("NOTIFY_SOCKET") != nullptr;
	log_init(rt.foreground, rt.verbose);
	log_info("laimd %s starting", PACKAGE_VERSION);
	rt.user = sandbox_lookup_user(rt.cfg.user);
	rt.smtp_user = sandbox_lookup_user(rt.cfg.smtp_user);
	rt.hostname = resolve_hostname(rt.cfg);
	rt.local_domains = host_names(rt.hostname);
	rt.host_addresses = host_addresses();
	set_local_domains(rt.local_domains);  // for the alias check of root's mailbox
	sandbox_prepare_chroot(LAIM_EMPTY_DIR);
	prepare_spool(rt);
	rt.listeners = listen_all(rt.cfg);
	rt.control = listen_unix(rt.cfg.control_socket);
	if (!rt.foreground && !systemd) {
		daemonize();
		write_spool_lock_pid(rt.spool_lock.get(), rt.cfg.spool);
	}
	set_process_title("laimd: parent");

	sigset_t mask;
	sigemptyset(&mask);
	for (int s : {SIGCHLD, SIGHUP, SIGTERM, SIGINT})
		sigaddset(&mask, s);
	sigprocmask(SIG_BLOCK, &mask, nullptr);
	signal(SIGPIPE, SIG_IGN);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd == -1)
		fatal("signalfd");

	loop.emplace();
	auto [s_end, h_end] = seqpacket_pair();
	start_child(SMTP, std::move(s_end));
	start_child(HANDLER, std::move(h_end));
	log_info("ready");
	notify_ready();
	supervise(sigfd);
}
