#include "handler/intake.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <stdexcept>
#include <system_error>

#include "common/hostname.h"
#include "common/log.h"
#include "handler/routes.h"

namespace laim {

Intake::Intake(EventLoop& loop, ImsgPeer& parent, const Config& cfg, Spool& spool, Queue& queue, Expand expand,
	       Enqueue enqueue)
	: cfg_(cfg),
	  spool_(spool),
	  queue_(queue),
	  expand_(std::move(expand)),
	  enqueue_(std::move(enqueue)),
	  smtp_(loop, parent, "smtp", imsg_valid_smtp_to_handler, [this](Imsg& m) { smtp_message(m); },
		[this] { smtp_gone(); })
{
}

// One transaction step from the smtp process, for session m.peerid.
void Intake::smtp_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_S_MAIL: on_mail(m.peerid, payload<MailMsg>(m)); break;
	case IMSG_S_RCPT: on_rcpt(m.peerid, payload<RcptMsg>(m).rcpt); break;
	case IMSG_S_DATA:
		payload<NoPayload>(m);
		on_data(m.peerid);
		break;
	case IMSG_S_COMMIT: on_commit(m.peerid, payload<CommitMsg>(m).size); break;
	case IMSG_S_ABORT:
		payload<NoPayload>(m);
		abort_txn(m.peerid);
		break;
	default:
		unexpected_imsg(m);
	}
}

// The smtp process is gone: its open transactions can never complete.
void Intake::smtp_gone()
{
	while (!txns_.empty())
		abort_txn(txns_.begin()->first);
	commits_.clear();
}

// Answers a step with a status (nothing when smtp is gone meanwhile).
void Intake::reply(uint32_t type, uint32_t session, BackendStatus st)
{
	smtp_.send(type, session, encode(StatusMsg{st}));
}

// MAIL FROM: a new transaction reserves a place in the bounded queue, so
// that a 250 is never followed by a drop (doc/architecture.md).
void Intake::on_mail(uint32_t session, MailMsg m)
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
void Intake::on_rcpt(uint32_t session, const std::string& rcpt)
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
			add_recipient(rcpts, std::move(t));
	}
	reply(IMSG_H_RCPT, session, st);
}

// DATA: create incoming/ID with the envelope and hand its fd to smtp,
// which writes the message straight into it.
void Intake::on_data(uint32_t session)
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

// End of data: the commit waits for this loop turn's group.
void Intake::on_commit(uint32_t session, uint64_t size)
{
	auto it = txns_.find(session);
	if (std::find(commits_.begin(), commits_.end(), session) != commits_.end())
		throw ImsgProtocolError("second COMMIT for one transaction");
	if (it == txns_.end() || !it->second.file) {
		reply(IMSG_H_COMMIT, session, BackendStatus::Unavailable);
		return;
	}
	it->second.size = size;
	commits_.push_back(session);
}

// The transaction ended without commit: its place in the queue and its
// spool file go.
void Intake::abort_txn(uint32_t session)
{
	auto it = txns_.find(session);
	if (it == txns_.end())
		return;
	if (it->second.file)
		spool_.discard(it->second.env.id);
	txns_.erase(it);
}

// Group commit (doc/architecture.md), once per loop turn: every message whose end of
// data arrived in this loop iteration is flushed, moved to queue/, and covered by one
// fsync of queue/; only then do their clients get 250.
void Intake::commit_pending()
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
		enqueue_(t.env, t.size, now);
		txns_.erase(session);
	}
}

}  // namespace laim
