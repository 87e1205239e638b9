// The handler process: answers the smtp process's transaction steps,
// creates and commits spool files, and runs the delivery queue.
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <system_error>

#include "common/log.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "handler/handlerd.h"
#include "handler/queue.h"
#include "handler/routes.h"
#include "handler/spool.h"

namespace laim {

namespace {

volatile sig_atomic_t got_sigterm = 0;
constexpr int SHUTDOWN_GRACE = 30;  // seconds deliveries in progress get at SIGTERM

enum : uint64_t { EV_PARENT = 1, EV_SMTP, EV_QUEUE };

// One SMTP transaction as the handler sees it, keyed by session id.
struct Txn {
	Envelope env;
	UniqueFd file;      // the spool file, once DATA began
	off_t header_len = 0;
	uint64_t size = 0;  // message size reported at commit
};

class HandlerServer {
 public:
	HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp);
	[[noreturn]] void run();

 private:
	void watch(int fd, uint64_t data, int op = EPOLL_CTL_ADD);
	Instances build_instances(const Config& cfg);
	void set_smtp_channel(UniqueFd fd);
	void drop_smtp_channel();
	void smtp_event();
	void dispatch_smtp(Imsg& m);
	void reply(uint32_t type, uint32_t session, BackendStatus st);
	void on_mail(uint32_t session, ImsgReader& r);
	void on_rcpt(uint32_t session, ImsgReader& r);
	void on_data(uint32_t session);
	void abort_txn(uint32_t session);
	void commit_pending();
	void parent_event();
	void reload(Imsg& m);
	void shutdown();

	Runtime& rt_;
	Config cfg_;
	Spool spool_;
	Queue queue_;
	int ep_ = -1;
	std::unique_ptr<ImsgChannel> parent_, smtp_;
	std::map<uint32_t, Txn> txns_;
	std::vector<uint32_t> commits_;  // sessions whose commit waits for the group fsync
};

HandlerServer::HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp)
	: rt_(rt), cfg_(rt.cfg), spool_(rt.cfg.spool), queue_(spool_)
{
	ep_ = epoll_create1(EPOLL_CLOEXEC);
	if (ep_ == -1)
		fatal("epoll_create1");
	parent_ = std::make_unique<ImsgChannel>(std::move(parent), imsg_valid_parent_to_handler);
	watch(parent_->fd(), EV_PARENT);
	watch(queue_.notify_fd(), EV_QUEUE);
	set_smtp_channel(std::move(smtp));
	queue_.configure(cfg_, build_instances(cfg_));
	size_t n = spool_.clean_incoming();
	if (n)
		log_info("removed %zu incomplete messages from incoming/", n);
	queue_.load_spool();
}

void HandlerServer::watch(int fd, uint64_t data, int op)
{
	struct epoll_event ev = {};
	ev.events = EPOLLIN;
	ev.data.u64 = data;
	if (epoll_ctl(ep_, op, fd, &ev) == -1)
		fatal("epoll_ctl");
}

// Constructs and starts every handler instance; a start() failure is
// logged and left to show up as delivery failures.
Instances HandlerServer::build_instances(const Config& cfg)
{
	Instances out;
	for (auto& [name, h] : handlers_create(cfg)) {
		try {
			h->start();
		} catch (const std::exception& e) {
			log_warnx("handler %s: start failed: %s", name.c_str(), e.what());
		}
		auto inst = std::make_shared<Instance>();
		inst->name = name;
		inst->handler = std::move(h);
		out[name] = inst;
	}
	return out;
}

void HandlerServer::set_smtp_channel(UniqueFd fd)
{
	drop_smtp_channel();
	smtp_ = std::make_unique<ImsgChannel>(std::move(fd), imsg_valid_smtp_to_handler);
	watch(smtp_->fd(), EV_SMTP);
}

// The smtp process is gone: its open transactions can never complete.
void HandlerServer::drop_smtp_channel()
{
	if (!smtp_)
		return;
	epoll_ctl(ep_, EPOLL_CTL_DEL, smtp_->fd(), nullptr);
	smtp_.reset();
	while (!txns_.empty())
		abort_txn(txns_.begin()->first);
	commits_.clear();
}

void HandlerServer::reply(uint32_t type, uint32_t session, BackendStatus st)
{
	if (!smtp_)
		return;
	ImsgWriter w;
	w.u32(static_cast<uint32_t>(st));
	smtp_->compose(type, session, w.data());
}

// MAIL FROM: a new transaction reserves a place in the bounded queue, so
// that a 250 is never followed by a drop (design.md).
void HandlerServer::on_mail(uint32_t session, ImsgReader& r)
{
	Txn t;
	uint32_t has_uid, uid;
	if (!(r.str(t.env.sender) && r.str(t.env.helo) && r.str(t.env.client) && r.u32(has_uid) && r.u32(uid) &&
	      r.done()))
		fatalx("malformed MAIL message from the smtp process");
	if (has_uid)
		t.env.uid = uid;
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

// RCPT TO: the recipient needs a route, and each handler on it may judge it.
void HandlerServer::on_rcpt(uint32_t session, ImsgReader& r)
{
	std::string rcpt;
	if (!(r.str(rcpt) && r.done()))
		fatalx("malformed RCPT message from the smtp process");
	auto it = txns_.find(session);
	if (it == txns_.end()) {
		reply(IMSG_H_RCPT, session, BackendStatus::Unavailable);
		return;
	}
	const Route* route = route_find(cfg_.routes, rcpt);
	BackendStatus st = route ? BackendStatus::Ok : BackendStatus::Reject;
	for (size_t i = 0; route && i < route->handlers.size() && st == BackendStatus::Ok; i++) {
		auto inst = queue_.instances().find(route->handlers[i]);
		if (inst == queue_.instances().end())
			continue;
		RcptVerdict v = RcptVerdict::Defer;
		try {
			v = inst->second->handler->check_recipient(rcpt);
		} catch (const std::exception& e) {
			log_warnx("handler %s: checking <%s>: %s", inst->first.c_str(), rcpt.c_str(), e.what());
		}
		if (v == RcptVerdict::Reject)
			st = BackendStatus::Reject;
		else if (v == RcptVerdict::Defer)
			st = BackendStatus::Defer;
	}
	if (!route)
		log_info("recipient <%s> refused: no route matches", rcpt.c_str());
	if (st == BackendStatus::Ok)
		it->second.env.recipients.push_back(rcpt);
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
		int dup = fcntl(t.file.get(), F_DUPFD_CLOEXEC, 0);
		if (dup == -1 || t.header_len < 0)
			throw std::system_error(errno, std::generic_category(), "duplicating the spool fd");
		smtp_->compose(IMSG_H_DATA_OK, session, ImsgWriter().str(t.env.id).data(), dup);
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
		Txn& t = txns_.at(session);
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
		txns_.erase(session);
	}
}

void HandlerServer::dispatch_smtp(Imsg& m)
{
	ImsgReader r(m.data);
	switch (m.type) {
	case IMSG_S_MAIL: on_mail(m.peerid, r); break;
	case IMSG_S_RCPT: on_rcpt(m.peerid, r); break;
	case IMSG_S_DATA:
		if (!r.done())
			fatalx("malformed DATA message from the smtp process");
		on_data(m.peerid);
		break;
	case IMSG_S_COMMIT: {
		uint64_t size;
		if (!(r.u64(size) && r.done()))
			fatalx("malformed COMMIT message from the smtp process");
		auto it = txns_.find(m.peerid);
		if (it == txns_.end() || !it->second.file) {
			reply(IMSG_H_COMMIT, m.peerid, BackendStatus::Unavailable);
			break;
		}
		it->second.size = size;
		commits_.push_back(m.peerid);
		break;
	}
	case IMSG_S_ABORT:
		if (!r.done())
			fatalx("malformed ABORT message from the smtp process");
		abort_txn(m.peerid);
		break;
	}
}

void HandlerServer::smtp_event()
{
	for (int i = 0; i < 256 && smtp_; i++) {
		Imsg m;
		ImsgError err = ImsgError::None;
		switch (smtp_->read(m, &err)) {
		case ImsgChannel::Read::Message: dispatch_smtp(m); continue;
		case ImsgChannel::Read::Again: break;
		case ImsgChannel::Read::Closed: drop_smtp_channel(); break;
		case ImsgChannel::Read::Error:
			log_warnx("smtp channel: %s", err == ImsgError::None ? strerror(errno) : imsg_strerror(err));
			drop_smtp_channel();
			break;
		}
		break;
	}
	commit_pending();
	if (smtp_ && !smtp_->flush())
		drop_smtp_channel();
}

// SIGHUP, as relayed by the parent (which validated the file already).
void HandlerServer::reload(Imsg& m)
{
	std::string text;
	char buf[65536];
	ssize_t n;
	lseek(m.fd.get(), 0, SEEK_SET);
	while ((n = read(m.fd.get(), buf, sizeof buf)) > 0)
		text.append(buf, static_cast<size_t>(n));
	try {
		Config cfg = config_parse(text, m.data);
		queue_.configure(cfg, build_instances(cfg));
		cfg_ = std::move(cfg);
		log_debug("handler configuration reloaded");
	} catch (const std::exception& e) {
		log_warnx("%s; keeping the previous configuration", e.what());
	}
}

void HandlerServer::parent_event()
{
	Imsg m;
	ImsgError err = ImsgError::None;
	switch (parent_->read(m, &err)) {
	case ImsgChannel::Read::Again: return;
	case ImsgChannel::Read::Closed: fatalx("parent went away");
	case ImsgChannel::Read::Error: fatalx("parent channel: %s", imsg_strerror(err));
	case ImsgChannel::Read::Message: break;
	}
	if (m.type == IMSG_P_SMTP_CHANNEL) {
		set_smtp_channel(std::move(m.fd));
		log_debug("new smtp channel");
	} else {
		reload(m);
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

void HandlerServer::run()
{
	for (;;) {
		if (got_sigterm)
			shutdown();
		queue_.run();
		struct epoll_event evs[8];
		int n = epoll_wait(ep_, evs, 8, queue_.next_wakeup_ms());
		if (n == -1 && errno != EINTR)
			fatal("epoll_wait");
		for (int i = 0; i < n; i++) {
			switch (evs[i].data.u64) {
			case EV_PARENT: parent_event(); break;
			case EV_SMTP: smtp_event(); break;
			case EV_QUEUE: queue_.collect(); break;
			}
		}
	}
}

void on_sigterm(int) { got_sigterm = 1; }

}  // namespace

void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan)
{
	struct sigaction sa = {};
	sa.sa_handler = on_sigterm;
	sigaction(SIGTERM, &sa, nullptr);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	sandbox_drop(rt.user, nullptr);
	if (chdir(rt.cfg.spool.c_str()) == -1)
		fatal("chdir %s", rt.cfg.spool.c_str());
	sandbox_seccomp_handler();
	HandlerServer server(rt, std::move(parent_chan), std::move(smtp_chan));
	server.run();
}

}  // namespace laim
