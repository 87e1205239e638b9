#include "handler/intake.h"

#include "config.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <latch>
#include <stdexcept>
#include <system_error>

#include "common/clock.h"
#include "common/hostname.h"
#include "common/log.h"
#include "common/submitter.h"
#include "handler/routes.h"

namespace laim {

Intake::Intake(EventLoop& loop, ImsgPeer& parent, const Config& cfg, Spool& spool, Queue& queue, RateLimiter& limits,
	       Expand expand, Enqueue enqueue)
	: cfg_(cfg),
	  spool_(spool),
	  queue_(queue),
	  limits_(limits),
	  expand_(std::move(expand)),
	  enqueue_(std::move(enqueue)),
	  smtp_(loop, parent, "smtp", imsg_valid_smtp_to_handler, [this](Imsg& m) { smtp_message(m); },
		[this] { smtp_gone(); }),
	  done_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC))
{
	if (!done_)
		fatal("eventfd");
	done_watch_ = loop.watch(done_.get(), EPOLLIN, [this](uint32_t) { group_done(); });
}

// One transaction step from the smtp process, for session m.peerid.
void Intake::smtp_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_S_MAIL: on_mail(m.peerid, payload<MailMsg>(m), std::nullopt); break;
	case IMSG_S_MAIL_LOCAL: on_local_mail(m.peerid, payload<MailMsg>(m), m.fd.get()); break;
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

// The smtp process is gone: its open transactions can never complete. The
// group being synced goes on, but its answers must not reach the next
// smtp process, and its messages are not queued (group_done()).
void Intake::smtp_gone()
{
	while (!txns_.empty())
		abort_txn(txns_.begin()->first);
	commits_.clear();
	waiting_.clear();
	smtp_channel_++;
}

// Answers a step with a status (nothing when smtp is gone meanwhile).
void Intake::reply(uint32_t type, uint32_t session, BackendStatus st)
{
	smtp_.send(type, session, encode(StatusMsg{st}));
}

// Places of max_queue_size left: transactions in progress and messages
// in their first round take one each; none is left once max_deferred
// messages wait apart (deferred once, or loaded at start), which take
// none, so that mail a handler keeps deferring (a locked mailbox, a
// smarthost down), made due again by a retry, a flush or a restart,
// never stops other mail.
size_t Intake::room() const
{
	size_t used = queue_.fresh() + in_progress();
	if (used >= cfg_.max_queue_size || queue_.retried() >= cfg_.max_deferred)
		return 0;
	return cfg_.max_queue_size - used;
}

bool Intake::queue_full() const
{
	return room() == 0;
}

// The places one source holds in open transactions, and may hold: a
// third of max_queue_size (at least one). TCP clients together are one
// source (loopback does not say who they are), each uid on the local
// socket another, root none. A session kept alive (NOOP) keeps its place
// until it leaves, so without this one user could hold every place for
// as long as they liked; with it, two sources at most hold two thirds,
// and root's sendmail finds the rest.
std::pair<size_t, size_t> Intake::source_places(std::optional<uid_t> uid) const
{
	size_t held = 0;
	for (const auto& [session, t] : txns_)
		held += t.env.uid == uid;
	return {held, std::max<size_t>(1, cfg_.max_queue_size / 3)};
}

// A third of max_deferred, likewise: one user whose mail keeps being
// deferred (their own mailbox locked, mailed to ten thousand times)
// reaches their share, not the whole.
size_t Intake::source_deferred_most() const
{
	return std::max<size_t>(1, cfg_.max_deferred / 3);
}

bool Intake::source_full(std::optional<uid_t> uid) const
{
	if (uid && *uid == 0)
		return false;
	auto [held, most] = source_places(uid);
	return held >= most || queue_.retried(uid) >= source_deferred_most();
}

// MAIL FROM: a new transaction reserves a place in the bounded queue, so
// that a 250 is never followed by a drop (doc/architecture.md). When the
// queue is full it waits for room, up to queue_full_wait seconds; on the
// local socket it does not: sendmail then hands the message to laim-drop
// at once rather than hold up cron.
void Intake::on_mail(uint32_t session, MailMsg m, std::optional<uid_t> uid)
{
#ifdef LAIM_SECCOMP_TRIGGER
	// Test builds only: a broken handler process that answers with a
	// status out of range, MACed as all it sends (regress/e2e/t_peer_error.py).
	if (m.sender.rfind("badframe@", 0) == 0) {
		smtp_.send(IMSG_H_MAIL, session, ImsgWriter().u32(99).data());
		return;
	}
#endif
	abort_txn(session);
	admit_waiting();  // those already in line have the first turn
	// Only TCP clients wait (below): a local MAIL is not behind them.
	if (!queue_full() && !source_full(uid) && (uid || waiting_.empty())) {
		open_txn(session, std::move(m), uid);
		return;
	}
	time_t wait = uid ? 0 : static_cast<time_t>(cfg_.queue_full_wait);
	if (wait == 0) {  // answered at once, never behind those that wait
		refuse_full(session, m.sender, uid);
		return;
	}
	if (waiting_.empty())
		log_info("%s: MAIL FROM waits up to %lds for room", why_full(uid).c_str(), (long)wait);
	waiting_.push_back({session, std::move(m), uid, monotonic_ms() + wait * 1000});
}

// Why a MAIL from uid (none: TCP) finds no room, for the log.
std::string Intake::why_full(std::optional<uid_t> uid) const
{
	char b[200];
	if (queue_full()) {
		snprintf(b, sizeof b, "queue full (%zu queued, %zu in progress, max_queue_size %u; %zu deferred, max_deferred %u)",
			 queue_.fresh(), in_progress(), cfg_.max_queue_size, queue_.retried(), cfg_.max_deferred);
		return b;
	}
	std::string who = uid ? "uid " + std::to_string(*uid) + " has" : "TCP clients have";
	auto [held, most] = source_places(uid);
	if (held >= most)
		snprintf(b, sizeof b, " %zu places in open transactions, at most %zu (a third of max_queue_size %u)", held,
			 most, cfg_.max_queue_size);
	else
		snprintf(b, sizeof b, " %zu deferred messages, at most %zu (a third of max_deferred %u)",
			 queue_.retried(uid), source_deferred_most(), cfg_.max_deferred);
	return who + b;
}

// A MAIL the full queue, or its source's share, has no room for: 452,
// and smtp defers the mail.
void Intake::refuse_full(uint32_t session, const std::string& sender, std::optional<uid_t> uid)
{
	log_warnx("%s: deferring mail from <%s>", why_full(uid).c_str(), sender.c_str());
	reply(IMSG_H_MAIL, session, BackendStatus::Full);
}

// MAIL on the local socket: the submitter's uid is the kernel's
// (SO_PEERCRED on the connection smtp passed, closed with the frame),
// never smtp's word. A descriptor that is not a client's connection to
// the submission socket is a protocol error, which the parent checks
// with the same submitter_uid() (sibling_frame_fault).
void Intake::on_local_mail(uint32_t session, MailMsg m, int client)
{
	std::string why;
	std::optional<uid_t> uid = submitter_uid(client, cfg_.socket, &why);
	if (!uid)
		throw ImsgProtocolError("IMSG_S_MAIL_LOCAL with " + why);
	m.client = "local";
	on_mail(session, std::move(m), uid);
}

// A MAIL with room in the queue: the rate limits have the last word.
void Intake::open_txn(uint32_t session, MailMsg m, std::optional<uid_t> uid)
{
	Txn t;
	t.env.sender = std::move(m.sender);
	t.env.helo = std::move(m.helo);
	t.env.client = std::move(m.client);
	t.env.uid = uid;
	t.env.auth_user = std::move(m.auth_user);
	std::string refusal = limits_.admit(t.env, t.limits, time(nullptr));
	if (!refusal.empty()) {
		smtp_.send(IMSG_H_MAIL, session, encode(StatusMsg{BackendStatus::RateLimited, refusal}));
		return;
	}
	txns_[session] = std::move(t);
	reply(IMSG_H_MAIL, session, BackendStatus::Ok);
}

void Intake::admit_waiting()
{
	int64_t now = monotonic_ms();
	while (!waiting_.empty()) {
		WaitingMail& w = waiting_.front();
		if (!queue_full() && !source_full(w.uid)) {
			open_txn(w.session, std::move(w.mail), w.uid);
		} else if (now >= w.deadline_ms) {
			refuse_full(w.session, w.mail.sender, w.uid);
		} else {
			return;
		}
		waiting_.pop_front();
	}
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
	Expanded x = expand(rcpt);
	std::vector<std::string>& targets = x.addresses;
	BackendStatus st = x.status == BackendStatus::Ok && targets.empty() ? BackendStatus::Reject : x.status;
	for (const std::string& t : targets) {
		const Route* route = route_find(cfg_.routes, t);
		if (!route && cfg_.routes.empty()) {  // a file cut short, say: not for the sender to bounce
			log_warnx("recipient <%s> deferred: %s has no routes", rcpt.c_str(), cfg_.file.c_str());
			st = BackendStatus::Defer;
			break;
		}
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
			add_recipient(cfg_.routes, rcpts, std::move(t));
	}
	reply(IMSG_H_RCPT, session, st);
}

// DATA: create queue/ID, pending, with the envelope and hand its fd to
// smtp, which writes the message straight into it.
void Intake::on_data(uint32_t session)
{
	auto it = txns_.find(session);
	if (it == txns_.end() || it->second.env.recipients.empty() || it->second.file) {
		reply(IMSG_H_DATA_FAIL, session, BackendStatus::Unavailable);
		return;
	}
	Txn& t = it->second;
	try {
		t.env.arrival = time(nullptr);
		constexpr int ID_TRIES = 10;
		for (int tries = 1; !t.file; tries++) {
			t.env.id = spool_.new_id();
			try {
				t.file = spool_.create(t.env, &t.created);
			} catch (const std::system_error& e) {
				// The id is in queue/ already: another is drawn. (A file
				// create() made is removed again when it fails.)
				if (e.code() != std::errc::file_exists || tries == ID_TRIES)
					throw;
				log_warnx("%s: in %s/queue already: drawing another queue id", t.env.id.c_str(),
					  spool_.dir().c_str());
			}
		}
		UniqueFd dup(fcntl(t.file.get(), F_DUPFD_CLOEXEC, 0));
		if (!dup)
			throw std::system_error(errno, std::generic_category(), "duplicating the spool fd");
		std::string user = t.env.uid ? login_name(*t.env.uid) : "";
		smtp_.send(IMSG_H_DATA_OK, session, encode(DataOkMsg{t.env.id, t.env.uid, user}), std::move(dup));
	} catch (const std::exception& e) {
		log_warnx("cannot create a spool file: %s", e.what());
		if (t.file)
			discard(t.env.id);
		t.env.id.clear();
		t.file.reset();
		reply(IMSG_H_DATA_FAIL, session, BackendStatus::Error);
	}
}

// End of data: the commit waits for this loop turn's group.
void Intake::on_commit(uint32_t session, uint64_t size)
{
	auto it = txns_.find(session);
	// A second COMMIT breaks no rule the parent could check in the frame
	// alone (doc/architecture.md, "Channels and messages"): the first
	// one's answer stands.
	if (std::find(commits_.begin(), commits_.end(), session) != commits_.end()) {
		log_warnx("smtp process: a second COMMIT for session %u ignored", (unsigned)session);
		return;
	}
	if (it == txns_.end() || !it->second.file) {
		reply(IMSG_H_COMMIT, session, BackendStatus::Unavailable);
		return;
	}
	it->second.size = size;
	commits_.push_back(session);
}

// The transaction ended without commit: its place in the queue (or in
// the line for one) and its spool file go.
void Intake::abort_txn(uint32_t session)
{
	auto w = std::find_if(waiting_.begin(), waiting_.end(), [session](auto& m) { return m.session == session; });
	if (w != waiting_.end())
		waiting_.erase(w);
	auto it = txns_.find(session);
	if (it == txns_.end())
		return;
	if (it->second.file)
		discard(it->second.env.id);
	limits_.release(it->second.limits);
	txns_.erase(it);
}

// Removes the file of a transaction that never got its 250. A failure (a
// failing disk) is logged, not thrown: the file stays pending, and the
// next start removes it.
void Intake::discard(const std::string& id)
{
	try {
		spool_.discard(id);
	} catch (const std::exception& e) {
		log_warnx("%s: %s", id.c_str(), e.what());
	}
}

void Intake::commit_pending()
{
	if (group_running_ || commits_.empty())
		return;
	for (uint32_t session : commits_) {
		auto it = txns_.find(session);
		if (it == txns_.end())
			continue;
		syncing_.push_back({session, smtp_channel_, std::move(it->second), "", false});
		txns_.erase(it);
	}
	commits_.clear();
	if (syncing_.empty())
		return;
	group_running_ = true;
	auto sync = [this] {
		dir_error_ = sync_group(spool_, syncing_);
		group_finished_.store(true, std::memory_order_release);
		uint64_t one = 1;
		(void)!write(done_.get(), &one, sizeof one);
	};
	try {
		committer_.run(sync);
	} catch (const std::exception& e) {
		log_warnx("no committer thread (%s): committing in the main loop", e.what());
		sync();
	}
}

// The size of a transaction's journal record; 0 for a file too large to
// be in one, or over INLINE_MAX unless larger.
size_t Intake::record_size(const Spool& spool, const Txn& t, bool larger)
{
	uint64_t n = t.created.header_len + t.size;
	return spool.journals(n) && (larger || n <= Journal::INLINE_MAX) ? Journal::RECORD_HEAD + n : 0;
}

// The group commit (doc/architecture.md, "The spool"), on the committer
// thread: each file is staged (stage()), in the journal while it has
// room; then one barrier: the journal's sync, with the fdatasync of each
// file not in it and an fsync of queue/, all at once; then each file
// whose syncs returned is marked committed. Returns why the fsync of
// queue/ failed, or "".
std::string Intake::sync_group(Spool& spool, std::vector<Commit>& group)
{
	Journal* journal = spool.journal();  // none: every file synced on its own
	// Files over INLINE_MAX go to the journal only while a group's come to
	// at most RECORD_MAX: one alone saves two commits of the file
	// system's journal, where many synced side by side share theirs, and
	// copying many would call a checkpoint (a syncfs) at every group.
	size_t larger = 0, bytes = 0;
	for (const Commit& c : group)
		larger += record_size(spool, c.txn, true) - record_size(spool, c.txn, false);
	bool with_larger = larger <= Journal::RECORD_HEAD + Journal::RECORD_MAX;
	for (const Commit& c : group)
		bytes += record_size(spool, c.txn, with_larger);
	if (spool.wants_checkpoint(bytes)) {
		try {
			spool.checkpoint();
		} catch (const std::exception& e) {
			log_warnx("checkpoint of the journal: %s", e.what());  // what does not fit is synced on its own
		}
	}
	std::vector<Commit*> files;
	for (Commit& c : group) {
		size_t rec = record_size(spool, c.txn, with_larger);
		c.in_journal = rec && journal->fits(rec);
		if (stage(spool, c))
			files.push_back(&c);
	}
	if (files.empty())
		return "";
	std::string journal_error, dir_error;
	auto catching = [](std::string& error, auto call) {
		return [&error, call] {
			try {
				call();
			} catch (const std::exception& e) {
				error = e.what();
			}
		};
	};
	std::vector<std::function<void()>> syncs;
	bool journaled = false;
	if (journal)
		catching(journal_error, [journal, &journaled] { journaled = journal->write(); })();
	if (journaled)
		syncs.push_back(catching(journal_error, [journal] { journal->sync(); }));
	bool alone = false;  // a file synced on its own: its name in queue/ too
	for (Commit* c : files)
		if (!c->in_journal) {
			syncs.push_back(catching(c->error, [&spool, c] { spool.sync_file(c->txn.file.get()); }));
			alone = true;
		}
	if (alone)
		syncs.push_back(catching(dir_error, [&spool] { spool.sync_queue_dir(); }));
	run_together(syncs);
	for (Commit* c : files) {
		if (!journal_error.empty() && c->in_journal)
			c->error += (c->error.empty() ? "" : "; ") + journal_error;
		if (!c->error.empty())
			continue;  // never answered 250: group_done() removes its file
		try {
			// A small file the journal does not hold (it was full, or
			// there is none: the next start may make one) needs its
			// mode on disk: recover() removes one that is pending.
			bool small = Spool::small_file(c->txn.created.header_len + c->txn.size);
			spool.mark_committed(c->txn.file.get(), !c->in_journal && small);
			c->committed = true;
		} catch (const std::exception& e) {
			c->error = e.what();
		}
	}
	return dir_error;
}

// One file of a group, before the barrier: checked to hold exactly what
// smtp reported and sealed with its sum; recorded in the journal, whole,
// when c.in_journal (c.bytes keep what it read of a small one; a larger
// one is copied as the journal is written), else its writeback started
// for its own fdatasync. False, c.error set, when it failed.
bool Intake::stage(Spool& spool, Commit& c)
{
	c.error = check_size(c.txn);
	if (!c.error.empty()) {
		c.in_journal = false;
		return false;
	}
	try {
		const std::string& id = c.txn.env.id;
		int fd = c.txn.file.get();
		uint64_t n = c.txn.created.header_len + c.txn.size;
		bool in_memory = c.in_journal && n <= Journal::INLINE_MAX;
		if (c.in_journal && !in_memory) {
			spool.seal_in_journal(id, fd, c.txn.created, c.txn.size);
			return true;
		}
		spool.seal(id, fd, c.txn.created, c.txn.size, in_memory ? &c.bytes : nullptr);
		if (in_memory)
			spool.journal()->add(Journal::Commit, id, c.bytes);
		else
			sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);  // a start: fdatasync reports
		return true;
	} catch (const std::exception& e) {
		c.in_journal = false;
		c.error = e.what();
		return false;
	}
}

// Whether the file holds exactly what smtp reported ("" if so); a
// recycled file's zeros past it are cut off.
std::string Intake::check_size(Txn& t)
{
	struct stat st;
	if (fstat(t.file.get(), &st) == -1)
		return std::string("fstat: ") + strerror(errno);
	uint64_t has = static_cast<uint64_t>(st.st_size);
	uint64_t want = t.created.header_len + t.size;
	// Only a recycled file may hold more: zeros, cut off here. (A size
	// that wraps want around is more than the file has.)
	if (has < want || want < t.size || (has > want && !t.created.recycled))
		return "size mismatch: smtp reported " + std::to_string(t.size) + " bytes, file has " +
		       std::to_string(static_cast<long long>(has - t.created.header_len));
	if (has > want && ftruncate(t.file.get(), static_cast<off_t>(want)) == -1)
		return std::string("ftruncate: ") + strerror(errno);
	return "";
}

// Runs the calls at once and returns when all have: SYNC_THREADS at a
// time on the syncer threads, one more on this thread. Syncs in flight
// together share the file system's journal commit and the disk's cache
// flush, where one after another each waits for its own.
void Intake::run_together(std::vector<std::function<void()>>& calls)
{
	for (size_t start = 0; start < calls.size(); start += SYNC_THREADS + 1) {
		size_t last = std::min(calls.size(), start + SYNC_THREADS + 1) - 1;
		std::latch done(static_cast<ptrdiff_t>(last - start));
		for (size_t i = start; i < last; i++) {
			auto& call = calls[i];
			try {
				syncers_.run([&call, &done] {
					call();
					done.count_down();
				});
			} catch (const std::system_error&) {
				call();  // no thread: this one here
				done.count_down();
			}
		}
		calls[last]();
		done.wait();
	}
}

// The committer finished a group: each client gets its answer (the 250
// only when the file and its name in queue/ are on disk), and the
// committed messages enter the queue. A message whose smtp process ended
// during the sync never got its 250: its client (sendmail's offline/
// fallback, a retrying MTA) sends it again, so it goes like a failed one.
void Intake::group_done()
{
	uint64_t v;
	(void)!read(done_.get(), &v, sizeof v);
	if (!group_finished_.exchange(false, std::memory_order_acquire))
		return;
	group_running_ = false;
	std::vector<Commit> group = std::exchange(syncing_, {});
	std::string dir_error = std::exchange(dir_error_, {});
	// The next group's sync starts now, and the answers, log lines and
	// queueing below run beside it instead of before it.
	commit_pending();
	if (!dir_error.empty())
		log_warnx("fsync of queue/: %s", dir_error.c_str());
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double now = static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
	for (Commit& c : group) {
		Txn& t = c.txn;
		bool answer = c.channel == smtp_channel_;
		if (!c.committed || !answer) {  // its file goes first, then the answer
			try {
				spool_.discard(t.env.id);
				// Its record may reach the disk with a later group: D
				// keeps a stop of the system from bringing it back.
				if (c.in_journal)
					spool_.journal()->note_done(t.env.id);
			} catch (const std::exception& e) {
				log_warnx("%s: %s", t.env.id.c_str(), e.what());
			}
			if (c.committed)
				log_warnx("%s: removed: the smtp process ended before its 250", t.env.id.c_str());
			else
				log_warnx("%s: commit failed: %s", t.env.id.c_str(), c.error.c_str());
			limits_.release(t.limits);
			if (answer)
				reply(IMSG_H_COMMIT, c.session, BackendStatus::Error);
			continue;
		}
		// Not durable when queue/ could not be synced: queued and so
		// delivered later, but the client must not count on it.
		if (answer)
			reply(IMSG_H_COMMIT, c.session, dir_error.empty() ? BackendStatus::Ok : BackendStatus::Error);
		std::string who = t.env.uid ? ", uid=" + std::to_string(*t.env.uid) : "";
		if (!t.env.auth_user.empty())
			who += ", auth=" + t.env.auth_user;
		log_info("%s: from=<%s>, size=%llu, nrcpt=%zu, client=%s%s", t.env.id.c_str(), t.env.sender.c_str(),
			 (unsigned long long)t.size, t.env.recipients.size(), t.env.client.c_str(), who.c_str());
		Queue::Bytes bytes = c.bytes.empty() ? nullptr : std::make_shared<const std::string>(std::move(c.bytes));
		count_committed(t, bytes);
		enqueue_(t.env, t.size, now, std::move(bytes));
	}
}

// A committed message that a rate limit counts: its windows learn its
// recipients, queue id and subject.
void Intake::count_committed(const Txn& t, const Queue::Bytes& bytes)
{
	if (t.limits.windows.empty())
		return;
	std::string subject;
	try {
		subject = message_subject(spool_.load(t.env.id, bytes).body());
	} catch (const std::exception& e) {
		log_warnx("%s: %s", t.env.id.c_str(), e.what());
	}
	limits_.count(t.limits, t.env, subject);
}

}  // namespace laim
