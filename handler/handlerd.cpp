// The handler process: answers the smtp process's transaction steps,
// creates and commits spool files, and runs the delivery queue.
#include "config.h"

#include <fcntl.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <stdexcept>
#include <system_error>

#include "common/aliases.h"
#include "common/event_loop.h"
#include "common/hostname.h"
#include "common/log.h"
#include "common/peer.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "handler/alias_delivery.h"
#include "handler/control.h"
#include "handler/handlerd.h"
#include "handler/import.h"
#include "handler/mailbox_client.h"
#include "handler/queue.h"
#include "handler/routes.h"
#include "handler/spool.h"

namespace laim {

namespace {

volatile sig_atomic_t got_sigterm = 0;
constexpr int SHUTDOWN_GRACE = 30;  // seconds deliveries in progress get at SIGTERM

constexpr time_t CONTROL_TIMEOUT = 5;    // seconds a control client gets to send its line
constexpr time_t IMPORT_INTERVAL = 2;    // seconds between looks into offline/
constexpr size_t IMPORT_BATCH = 4;       // offline files imported per loop turn
constexpr size_t CONTROL_MAX_CLIENTS = 32;  // control connections at once...
constexpr size_t CONTROL_MAX_PER_UID = 4;   // ...and per local user

// A laimctl/mailq client on the control socket.
struct CtlConn {
	UniqueFd fd;
	EventLoop::Watch watch;
	uid_t uid = 0;
	std::string in, out;
	time_t started = 0;
};

// One SMTP transaction as the handler sees it, keyed by session id.
struct Txn {
	Envelope env;
	UniqueFd file;      // the spool file, once DATA began
	off_t header_len = 0;
	uint64_t size = 0;  // message size reported at commit
};

class HandlerServer : public ControlTarget {
 public:
	HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp);
	[[noreturn]] void run();

	// ControlTarget: what laimctl and mailq see and do.
	std::vector<QueueItem> queue() override;
	std::vector<FailedItem> failed() override;
	std::vector<std::pair<std::string, uint64_t>> stats() override;
	void flush() override { queue_.flush(); }
	bool remove(const std::string& id) override { return queue_.remove(id); }
	std::string reload_aliases() override;

 private:
	Instances build_instances(const Config& cfg);
	void smtp_gone();
	void smtp_message(Imsg& m);
	void reply(uint32_t type, uint32_t session, BackendStatus st);
	void on_mail(uint32_t session, MailMsg m);
	void on_rcpt(uint32_t session, const std::string& rcpt);
	void on_data(uint32_t session);
	void abort_txn(uint32_t session);
	void commit_pending();
	void parent_message(Imsg& m);
	void reload(const std::string& file, int fd);
	void shutdown();
	std::vector<std::string> expand(const std::string& rcpt);
	void control_listen();
	void control_accept();
	void control_event(uint32_t n, uint32_t events);
	void control_expire();
	void import_offline(bool force);

	Runtime& rt_;
	Config cfg_;
	Spool spool_;
	Queue queue_;
	EventLoop loop_;
	ImsgPeer parent_;
	SiblingChannel smtp_;
	EventLoop::Watch queue_done_, control_listener_;
	std::map<uint32_t, Txn> txns_;
	std::vector<uint32_t> commits_;  // sessions whose commit waits for the group fsync
	Aliases aliases_;
	OfflineImport import_;
	time_t next_import_ = 0;
	std::map<uint32_t, CtlConn> ctl_;
	uint32_t next_ctl_ = 1;
	time_t control_paused_until_ = 0;  // listener unwatched after EMFILE
	uint64_t received_ = 0;
};

HandlerServer::HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp)
	: rt_(rt),
	  cfg_(rt.cfg),
	  spool_(rt.cfg.spool),
	  queue_(spool_),
	  parent_(loop_, std::move(parent), imsg_valid_parent_to_handler, [this](Imsg& m) { parent_message(m); },
		  ImsgPeer::fatal_loss("parent")),
	  smtp_(loop_, parent_, "smtp", imsg_valid_smtp_to_handler, [this](Imsg& m) { smtp_message(m); },
		[this] { smtp_gone(); }),
	  import_(spool_, rt.hostname, rt.drop_gid)
{
	queue_done_ = loop_.watch(queue_.notify_fd(), EPOLLIN, [this](uint32_t) { queue_.collect(); });
	set_local_domains(rt.hostname);
	smtp_.attach(std::move(smtp));
	queue_.configure(cfg_, build_instances(cfg_));
	control_listen();
	reload_aliases();
	size_t n = spool_.clean_incoming();
	if (n)
		log_info("removed %zu incomplete messages from incoming/", n);
	queue_.load_spool();
	import_offline(true);
}

// (Re)reads the aliases file. As with Postfix's newaliases, the entries
// that parse are used even when other lines have errors; those are logged
// and the first is returned for the control client.
std::string HandlerServer::reload_aliases()
{
	std::vector<std::string> errors;
	aliases_ = Aliases::load(cfg_.aliases, &errors);
	for (const std::string& e : errors)
		log_warnx("%s", e.c_str());
	log_debug("%zu aliases loaded from %s", aliases_.size(), cfg_.aliases.c_str());
	return errors.empty() ? "" : errors.front();
}

// The final recipients of one envelope recipient after /etc/aliases; an
// address without an alias stays as it was given.
std::vector<std::string> HandlerServer::expand(const std::string& rcpt)
{
	if (alias_delivery(rcpt)) {
		log_info("recipient <%s> refused: only /etc/aliases may name a command or file", rcpt.c_str());
		return {};
	}
	if (!is_local_address(rcpt))
		return {rcpt};
	std::string local(local_part(rcpt));
	Aliases::Expansion x = aliases_.expand(local, {cfg_.alias_commands, cfg_.alias_files});
	for (const std::string& r : x.refused)
		log_warnx("alias %s: target refused: %s", local.c_str(), r.c_str());
	if (x.loop)
		log_warnx("alias %s: expansion loop cut", local.c_str());
	if (x.addresses.size() == 1 && x.addresses[0] == local)
		return {rcpt};
	return x.addresses;
}

// Constructs and starts every handler instance, plus the built-in alias
// delivery instances the config enables; a start() failure is logged and
// left to show up as delivery failures.
Instances HandlerServer::build_instances(const Config& cfg)
{
	Instances out;
	auto add = [&out](const std::string& name, std::unique_ptr<Handler> h) {
		auto inst = std::make_shared<Instance>();
		inst->name = name;
		inst->handler = std::move(h);
		out[name] = inst;
	};
	for (auto& [name, h] : handlers_create(cfg)) {
		try {
			h->start();
		} catch (const std::exception& e) {
			log_warnx("handler %s: start failed: %s", name.c_str(), e.what());
		}
		add(name, std::move(h));
	}
	if (cfg.alias_commands)
		add(ALIAS_COMMAND_INSTANCE, alias_command_handler(cfg.user, cfg.delivery_timeout));
	if (cfg.alias_files)
		add(ALIAS_FILE_INSTANCE, alias_file_handler());
	return out;
}

// The smtp process is gone: its open transactions can never complete.
void HandlerServer::smtp_gone()
{
	while (!txns_.empty())
		abort_txn(txns_.begin()->first);
	commits_.clear();
}

void HandlerServer::reply(uint32_t type, uint32_t session, BackendStatus st)
{
	smtp_.send(type, session, encode(StatusMsg{st}));
}

// MAIL FROM: a new transaction reserves a place in the bounded queue, so
// that a 250 is never followed by a drop (design.md).
void HandlerServer::on_mail(uint32_t session, MailMsg m)
{
	Txn t;
	t.env.sender = std::move(m.sender);
	t.env.helo = std::move(m.helo);
	t.env.client = std::move(m.client);
	t.env.uid = m.uid;
	abort_txn(session);
	if (queue_.size() + txns_.size() >= cfg_.max_queue_size) {
		log_warnx("queue full (%zu queued, %zu in progress, max_queue_size %u): deferring mail from <%s>",
			  queue_.size(), txns_.size(), cfg_.max_queue_size, t.env.sender.c_str());
		reply(IMSG_H_MAIL, session, BackendStatus::Full);
		return;
	}
	txns_[session] = std::move(t);
	reply(IMSG_H_MAIL, session, BackendStatus::Ok);
}

// RCPT TO: after /etc/aliases, each final recipient needs a route, and each
// handler on it may judge it.
void HandlerServer::on_rcpt(uint32_t session, const std::string& rcpt)
{
	auto it = txns_.find(session);
	if (it == txns_.end()) {
		reply(IMSG_H_RCPT, session, BackendStatus::Unavailable);
		return;
	}
	std::vector<std::string> targets = expand(rcpt);
	BackendStatus st = targets.empty() ? BackendStatus::Reject : BackendStatus::Ok;
	for (const std::string& t : targets) {
		const Route* route = route_find(cfg_.routes, t);
		if (!route) {
			log_info("recipient <%s> refused: no route matches <%s>", rcpt.c_str(), t.c_str());
			st = BackendStatus::Reject;
			break;
		}
		for (const std::string& name : route->handlers) {
			auto inst = queue_.instances().find(name);
			if (inst == queue_.instances().end())
				continue;
			RcptVerdict v = RcptVerdict::Defer;
			try {
				v = inst->second->handler->check_recipient(t);
			} catch (const std::exception& e) {
				log_warnx("handler %s: checking <%s>: %s", name.c_str(), t.c_str(), e.what());
			}
			if (v == RcptVerdict::Reject)
				st = BackendStatus::Reject;
			else if (v == RcptVerdict::Defer && st == BackendStatus::Ok)
				st = BackendStatus::Defer;
		}
	}
	if (st == BackendStatus::Ok) {
		auto& rcpts = it->second.env.recipients;
		for (std::string& t : targets)
			if (std::find(rcpts.begin(), rcpts.end(), t) == rcpts.end())
				rcpts.push_back(std::move(t));
	}
	reply(IMSG_H_RCPT, session, st);
}

// DATA: create incoming/ID with the envelope and hand its fd to smtp,
// which writes the message straight into it.
void HandlerServer::on_data(uint32_t session)
{
	auto it = txns_.find(session);
	if (it == txns_.end() || it->second.env.recipients.empty() || it->second.file) {
		reply(IMSG_H_DATA_FAIL, session, BackendStatus::Unavailable);
		return;
	}
	Txn& t = it->second;
	try {
		t.env.id = spool_.new_id();
		t.env.arrival = time(nullptr);
		t.file = spool_.create(t.env);
		t.header_len = lseek(t.file.get(), 0, SEEK_CUR);
		UniqueFd dup(fcntl(t.file.get(), F_DUPFD_CLOEXEC, 0));
		if (!dup || t.header_len < 0)
			throw std::system_error(errno, std::generic_category(), "duplicating the spool fd");
		std::string user = t.env.uid ? login_name(*t.env.uid) : "";
		smtp_.send(IMSG_H_DATA_OK, session, encode(DataOkMsg{t.env.id, user}), std::move(dup));
	} catch (const std::exception& e) {
		log_warnx("cannot create a spool file: %s", e.what());
		if (!t.env.id.empty())
			spool_.discard(t.env.id);
		t.env.id.clear();
		t.file.reset();
		reply(IMSG_H_DATA_FAIL, session, BackendStatus::Error);
	}
}

void HandlerServer::abort_txn(uint32_t session)
{
	auto it = txns_.find(session);
	if (it == txns_.end())
		return;
	if (it->second.file)
		spool_.discard(it->second.env.id);
	txns_.erase(it);
}

// Group commit (design.md): every message whose end of data arrived in
// this loop iteration is flushed, moved to queue/, and covered by one
// fsync of queue/; only then do their clients get 250.
void HandlerServer::commit_pending()
{
	std::vector<uint32_t> published;
	for (uint32_t session : commits_) {
		auto it = txns_.find(session);
		if (it == txns_.end())
			continue;
		Txn& t = it->second;
		struct stat st;
		try {
			if (fstat(t.file.get(), &st) == -1)
				throw std::system_error(errno, std::generic_category(), "fstat");
			if (static_cast<uint64_t>(st.st_size) != static_cast<uint64_t>(t.header_len) + t.size)
				throw std::runtime_error("size mismatch: smtp reported " + std::to_string(t.size) +
							 " bytes, file has " + std::to_string(st.st_size - t.header_len));
			spool_.sync_file(t.file.get());
			spool_.publish(t.env.id);
			published.push_back(session);
		} catch (const std::exception& e) {
			log_warnx("%s: commit failed: %s", t.env.id.c_str(), e.what());
			reply(IMSG_H_COMMIT, session, BackendStatus::Error);
			abort_txn(session);
		}
	}
	commits_.clear();
	if (published.empty())
		return;
	bool synced = true;
	try {
		spool_.sync_queue_dir();
	} catch (const std::exception& e) {
		log_warnx("fsync of queue/: %s", e.what());
		synced = false;
	}
	double now = static_cast<double>(time(nullptr));
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
		now = static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
	for (uint32_t session : published) {
		auto it = txns_.find(session);
		if (it == txns_.end())
			continue;
		Txn& t = it->second;
		if (!synced) {
			// Already in queue/ and so delivered later, but not durable
			// yet: the client must not count on it.
			reply(IMSG_H_COMMIT, session, BackendStatus::Error);
		} else {
			reply(IMSG_H_COMMIT, session, BackendStatus::Ok);
		}
		std::string uid = t.env.uid ? ", uid=" + std::to_string(*t.env.uid) : "";
		log_info("%s: from=<%s>, size=%llu, nrcpt=%zu, client=%s%s", t.env.id.c_str(), t.env.sender.c_str(),
			 (unsigned long long)t.size, t.env.recipients.size(), t.env.client.c_str(), uid.c_str());
		queue_.add(t.env, now);
		received_++;
		txns_.erase(session);
	}
}

// One transaction step from the smtp process, for session m.peerid.
void HandlerServer::smtp_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_S_MAIL: on_mail(m.peerid, payload<MailMsg>(m)); break;
	case IMSG_S_RCPT: on_rcpt(m.peerid, payload<RcptMsg>(m).rcpt); break;
	case IMSG_S_DATA:
		payload<NoPayload>(m);
		on_data(m.peerid);
		break;
	case IMSG_S_COMMIT: {
		uint64_t size = payload<CommitMsg>(m).size;
		auto it = txns_.find(m.peerid);
		if (std::find(commits_.begin(), commits_.end(), m.peerid) != commits_.end())
			throw ImsgProtocolError("second COMMIT for one transaction");
		if (it == txns_.end() || !it->second.file) {
			reply(IMSG_H_COMMIT, m.peerid, BackendStatus::Unavailable);
			break;
		}
		it->second.size = size;
		commits_.push_back(m.peerid);
		break;
	}
	case IMSG_S_ABORT:
		payload<NoPayload>(m);
		abort_txn(m.peerid);
		break;
	default:
		unexpected_imsg(m);
	}
}

// SIGHUP, as relayed by the parent (which validated the file already).
void HandlerServer::reload(const std::string& file, int fd)
{
	std::string text;
	char buf[65536];
	ssize_t n;
	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf, sizeof buf)) > 0)
		text.append(buf, static_cast<size_t>(n));
	try {
		Config cfg = config_parse(text, file);
		queue_.configure(cfg, build_instances(cfg));
		cfg_ = std::move(cfg);
		reload_aliases();
		log_debug("handler configuration reloaded");
	} catch (const std::exception& e) {
		log_warnx("%s; keeping the previous configuration", e.what());
	}
}

void HandlerServer::parent_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_P_SMTP_CHANNEL:
		payload<NoPayload>(m);
		smtp_.attach(std::move(m.fd));
		log_debug("new smtp channel");
		break;
	case IMSG_P_HANDLER_CONF:
		reload(payload<HandlerConf>(m).file, m.fd.get());
		break;
	default:
		unexpected_imsg(m);
	}
}

// SIGTERM: no new deliveries; those in progress get SHUTDOWN_GRACE
// seconds. Queued messages stay in the spool for the next start.
void HandlerServer::shutdown()
{
	queue_.stop();
	for (int i = 0; i < SHUTDOWN_GRACE * 10 && queue_.running() > 0; i++) {
		usleep(100000);
		queue_.collect();
	}
	if (queue_.running() > 0)
		log_warnx("%zu deliveries still running at exit; they will be retried", queue_.running());
	log_debug("handler process done, %zu messages stay queued", queue_.size());
	_exit(0);
}

void HandlerServer::control_listen()
{
	if (rt_.control.fd)
		control_listener_ = loop_.watch(rt_.control.fd.get(), EPOLLIN, [this](uint32_t) { control_accept(); });
}

// The control socket: one request line per connection, answered and
// closed. Clients are local users; each is bounded in time and size.
void HandlerServer::control_accept()
{
	for (int i = 0; i < 16; i++) {
		UniqueFd fd(accept4(rt_.control.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
		if (!fd) {
			if (errno == EMFILE || errno == ENFILE) {
				// Out of descriptors: stop listening for a moment rather
				// than spin on a socket that stays readable.
				log_warn("control socket");
				control_listener_.reset();
				control_paused_until_ = time(nullptr) + 1;
			}
			return;
		}
		struct ucred cred;
		socklen_t len = sizeof cred;
		if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
			continue;
		// Every local user may connect: bound them all, and each one.
		size_t mine = 0;
		for (const auto& [n, c] : ctl_)
			mine += c.uid == cred.uid;
		if (ctl_.size() >= CONTROL_MAX_CLIENTS || mine >= CONTROL_MAX_PER_UID) {
			(void)!write(fd.get(), "ERR too many connections\n", 25);
			continue;
		}
		uint32_t n = next_ctl_++;
		CtlConn& c = ctl_[n];
		c.fd = std::move(fd);
		c.uid = cred.uid;
		c.started = time(nullptr);
		c.watch = loop_.watch(c.fd.get(), EPOLLIN, [this, n](uint32_t events) { control_event(n, events); });
	}
}

void HandlerServer::control_event(uint32_t n, uint32_t events)
{
	auto it = ctl_.find(n);
	if (it == ctl_.end())
		return;
	CtlConn& c = it->second;
	if (c.out.empty() && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		char buf[512];
		ssize_t r = read(c.fd.get(), buf, sizeof buf);
		if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
			ctl_.erase(it);
			return;
		}
		if (r > 0)
			c.in.append(buf, static_cast<size_t>(r));
		size_t nl = c.in.find('\n');
		if (nl == std::string::npos && c.in.size() < 1024)
			return;
		c.out = control_answer(c.in, c.uid, *this);
		if (c.out.empty())
			c.out = "ERR no answer\n";
		c.watch.set_events(EPOLLOUT);
	}
	while (!c.out.empty()) {
		ssize_t w = write(c.fd.get(), c.out.data(), c.out.size());
		if (w < 0 && errno == EAGAIN)
			return;
		if (w <= 0)
			break;
		c.out.erase(0, static_cast<size_t>(w));
	}
	ctl_.erase(it);
}

void HandlerServer::control_expire()
{
	time_t now = time(nullptr);
	if (control_paused_until_ && now >= control_paused_until_) {
		control_paused_until_ = 0;
		control_listen();
	}
	for (auto it = ctl_.begin(); it != ctl_.end();)
		it = now - it->second.started > CONTROL_TIMEOUT ? ctl_.erase(it) : std::next(it);
}

std::vector<QueueItem> HandlerServer::queue()
{
	std::vector<QueueItem> out;
	for (Queue::Item& i : queue_.items())
		out.push_back({i.env.id, i.env.arrival, i.size, i.env.uid, i.env.sender, i.env.recipients, i.attempts,
			       i.last_error});
	return out;
}

std::vector<FailedItem> HandlerServer::failed()
{
	std::vector<FailedItem> out;
	for (const std::string& id : spool_.list_queue("failed")) {
		FailedItem f;
		f.id = id;
		std::ifstream reason(spool_.dir() + "/failed/" + id + ".reason");
		std::getline(reason, f.reason);
		try {
			SpoolMessage m = spool_.load(id, "failed");
			f.arrival = m.envelope.arrival;
			f.size = m.body().size();
			f.sender = m.envelope.sender;
			f.recipients = m.envelope.recipients;
		} catch (const std::exception& e) {
			f.reason += f.reason.empty() ? e.what() : "";
		}
		out.push_back(std::move(f));
	}
	return out;
}

std::vector<std::pair<std::string, uint64_t>> HandlerServer::stats()
{
	const auto& s = queue_.stats();
	auto get = [&](const char* k) { auto it = s.find(k); return it == s.end() ? uint64_t(0) : it->second; };
	std::vector<std::pair<std::string, uint64_t>> out = {
		{"received", received_}, {"delivered", get("delivered")}, {"deferred", get("deferred")},
		{"failed", get("failed")}, {"queue_length", queue_.size()}};
	for (const auto& [name, inst] : queue_.instances())
		for (const char* what : {"delivered", "deferred", "failed"}) {
			std::string k = "handler." + name + "." + what;
			out.push_back({k, get(k.c_str())});
		}
	return out;
}

// offline/ is looked at every IMPORT_INTERVAL seconds and whenever the
// queue has room, within max_queue_size.
void HandlerServer::import_offline(bool force)
{
	time_t now = time(nullptr);
	if (!rt_.have_drop_group || (!force && now < next_import_))
		return;
	next_import_ = now + IMPORT_INTERVAL;
	size_t used = queue_.size() + txns_.size();
	size_t room = used < cfg_.max_queue_size ? cfg_.max_queue_size - used : 0;
	// A few files per loop turn, so that a pile of large ones never holds
	// up SMTP transactions for long; more follow at the next turn.
	auto imported = import_.run(std::min(room, IMPORT_BATCH), cfg_.data_size_limit,
				    [this](const std::string& r) { return expand(r); });
	if (imported.size() == IMPORT_BATCH)
		next_import_ = now;
	for (Envelope& env : imported) {
		queue_.add(env, static_cast<double>(env.arrival));
		received_++;
	}
}

void HandlerServer::run()
{
	for (;;) {
		if (got_sigterm)
			shutdown();
		queue_.run();
		import_offline(false);
		control_expire();
		loop_.wait(std::min(queue_.next_wakeup_ms(), 1000));
		commit_pending();
	}
}

}  // namespace

void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan, UniqueFd mailbox_chan)
{
	mailbox_client_init(std::move(mailbox_chan));
	child_signals(&got_sigterm);
	sandbox_drop(rt.user, nullptr);
	if (chdir(rt.cfg.spool.c_str()) == -1)
		fatal("chdir %s", rt.cfg.spool.c_str());
	sandbox_seccomp_handler();
	HandlerServer server(rt, std::move(parent_chan), std::move(smtp_chan));
	server.run();
}

}  // namespace laim
