// The handler process: its setup, its channel to the parent, the delivery
// queue and offline imports. Transactions from the smtp process are
// handler/intake.cpp's, the control socket handler/control_server.cpp's.
#include "config.h"

#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <stdexcept>

#include "common/aliases.h"
#include "common/clock.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/peer.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "handler/alias_delivery.h"
#include "handler/bounce.h"
#include "handler/control.h"
#include "handler/command_client.h"
#include "handler/control_server.h"
#include "handler/handlerd.h"
#include "handler/import.h"
#include "handler/intake.h"
#include "handler/queue.h"
#include "handler/ratelimit.h"
#include "handler/routes.h"
#include "handler/workers.h"
#include "handler/spool.h"

namespace laim {

namespace {

volatile sig_atomic_t got_sigterm = 0;
constexpr int SHUTDOWN_GRACE = 30;  // seconds deliveries in progress get at SIGTERM

constexpr time_t IMPORT_INTERVAL = 2;    // seconds between looks into offline/
constexpr size_t IMPORT_BATCH = 4;       // offline files imported per loop turn
constexpr size_t NOTICES_PER_TURN = 4;   // failure notices stored per loop turn

// The process: its loop, its parent channel, and what runs between loop
// turns (deliveries, offline imports, group commits).
class HandlerServer : public ControlTarget {
 public:
	HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp);
	[[noreturn]] void run();

	// ControlTarget: what laimctl and mailq see and do.
	std::vector<QueueItem> queue() override;
	size_t offline(std::optional<uid_t> owner) override { return import_.waiting(owner); }
	void failed(std::function<void(std::vector<FailedItem>, std::string)> done) override;
	std::vector<std::pair<std::string, uint64_t>> stats() override;
	void flush(std::optional<uid_t> owner) override { queue_.flush(owner); }
	std::string remove(const std::string& id) override { return queue_.remove(id); }
	std::string reload_aliases(std::string* loaded) override;
	std::vector<LimitItem> limits() override { return limiter_.near_limits(time(nullptr)); }
	bool reset_limit(const std::string& key) override;
	bool test(const std::string& instance, std::function<void(bool, std::string)> done) override
	{
		return queue_.test(instance, [done](const Result& r) {
			done(r.status == Result::Status::Delivered, r.reason);
		});
	}

 private:
	Instances build_instances(const Config& cfg);
	void parent_message(Imsg& m);
	void reload(const std::string& file, int fd);
	void shutdown();
	Expanded expand(const std::string& rcpt);
	void enqueue(const Envelope& env, uint64_t size, double arrival, Queue::Bytes bytes);
	void import_offline(bool force);
	std::string store_alert(const std::string& instance, const std::string& message);
	Envelope own_envelope() const;
	uint64_t commit_own(Envelope& env, std::string_view message);
	bool given_up(const Envelope& original, const std::vector<std::string>& failures);
	void store_notice(const Envelope& original, const std::vector<std::string>& failures,
			  std::string_view message);

	Runtime& rt_;
	Config cfg_;
	Spool spool_;
	Queue queue_;
	RateLimiter limiter_;
	EventLoop loop_;
	ImsgPeer parent_;
	Intake intake_;
	ControlServer control_;
	EventLoop::Watch queue_done_;
	Offload offload_{loop_, 1};  // show failed's reads
	std::optional<Aliases> aliases_;  // none while the file was never read
	OfflineImport import_;
	time_t next_import_ = 0;
	size_t notices_ = 0;  // failure notices stored this loop turn
	uint64_t received_ = 0;
};

HandlerServer::HandlerServer(Runtime& rt, UniqueFd parent, UniqueFd smtp)
	: rt_(rt),
	  cfg_(rt.cfg),
	  spool_(rt.cfg.spool),
	  queue_(spool_),
	  limiter_(rt.cfg.spool + "/ratelimit.json", rt.hostname,
		   [this](const std::string& instance, const std::string& message) {
			   return store_alert(instance, message);
		   }),
	  parent_(loop_, std::move(parent), imsg_valid_parent_to_handler, [this](Imsg& m) { parent_message(m); },
		  ImsgPeer::fatal_loss("parent")),
	  intake_(loop_, parent_, cfg_, spool_, queue_, limiter_, [this](const std::string& r) { return expand(r); },
		  [this](const Envelope& env, uint64_t size, double arrival, Queue::Bytes bytes) {
			  enqueue(env, size, arrival, std::move(bytes));
		  }),
	  control_(loop_, rt.control.fd.get(), *this),
	  import_(spool_, rt.hostname, rt.drop_gid, limiter_)
{
	queue_done_ = loop_.watch(queue_.notify_fd(), EPOLLIN, [this](uint32_t) { queue_.collect(); });
	import_.admits = [this](uid_t owner) { return !intake_.source_full(owner); };
	queue_.given_up = [this](const Envelope& env, const std::vector<std::string>& failures) {
		return given_up(env, failures);
	};
	import_.tell_sender = [this](const Envelope& env, const std::vector<std::string>& failures,
				     std::string_view message) { store_notice(env, failures, message); };
	set_local_domains(rt.local_domains);
	intake_.attach(std::move(smtp));
	queue_.configure(cfg_, build_instances(cfg_));
	limiter_.configure(cfg_.rate_limits);
	limiter_.load(time(nullptr));
	reload_aliases(nullptr);
	size_t n = spool_.clean_incoming();
	if (n)
		log_info("removed %zu incomplete messages from incoming/", n);
	spool_.recover();
	queue_.load_spool();
	for (const Queue::Item& q : queue_.items())
		if (!q.env.offline.empty())
			import_.imported_before(q.env.offline, q.env.id);
	import_offline(true);
}

// (Re)reads the aliases file. As with Postfix's newaliases, the entries
// that parse are used even when other lines have errors; those are logged
// and the first is returned for the control client. A file that cannot be
// read at all replaces nothing: the table read before stays, and without
// one local recipients are deferred (expand()), never taken unaliased.
std::string HandlerServer::reload_aliases(std::string* loaded)
{
	std::vector<std::string> errors;
	Aliases table = Aliases::load(cfg_.aliases, &errors);
	for (const std::string& e : errors)
		log_warnx("%s", e.c_str());
	if (table.unreadable()) {
		if (aliases_)
			log_warnx("aliases file %s unreadable: keeping the %zu aliases read before", cfg_.aliases.c_str(),
				  aliases_->size());
		else
			log_warnx("aliases file %s unreadable: local recipients are deferred until it can be read",
				  cfg_.aliases.c_str());
		return errors.front();
	}
	aliases_ = std::move(table);
	log_debug("%zu aliases loaded from %s", aliases_->size(), cfg_.aliases.c_str());
	if (loaded)
		*loaded = cfg_.aliases + ": " + std::to_string(aliases_->size()) + " aliases";
	return errors.empty() ? "" : errors.front();
}

// The final recipients of one envelope recipient after /etc/aliases; an
// address without an alias stays as it was given. A name the aliases
// produce is qualified with the domain rcpt had, so that routes see
// "postmaster@HOST" expanded as they see "root@HOST" written. An
// expansion that is incomplete is never used: an unreadable file defers
// the recipient, one past the limits gets 452 4.5.3.
Expanded HandlerServer::expand(const std::string& rcpt)
{
	if (alias_delivery(rcpt)) {
		log_info("recipient <%s> refused: only /etc/aliases may name a command or file", rcpt.c_str());
		return {{}, BackendStatus::Reject};
	}
	if (!is_local_address(rcpt))
		return {{rcpt}};
	if (!aliases_) {
		log_warnx("recipient <%s> deferred: aliases file %s unreadable", rcpt.c_str(), cfg_.aliases.c_str());
		return {{}, BackendStatus::Defer};
	}
	std::string local(local_part(rcpt));
	Aliases::Expansion x = aliases_->expand(local, {cfg_.alias_commands, cfg_.alias_files});
	for (const std::string& r : x.refused)
		log_warnx("alias %s: target refused: %s", local.c_str(), r.c_str());
	if (x.loop)
		log_warnx("alias %s: expansion loop cut", local.c_str());
	if (!x.unreadable.empty()) {
		log_warnx("alias %s: %s; recipient <%s> deferred", local.c_str(), x.unreadable.c_str(), rcpt.c_str());
		return {{}, BackendStatus::Defer};
	}
	if (!x.stopped.empty()) {
		log_warnx("alias %s: %s; recipient <%s> refused", local.c_str(), x.stopped.c_str(), rcpt.c_str());
		return {{}, BackendStatus::TooMany};
	}
	if (x.addresses.size() == 1 && x.addresses[0] == local)
		return {{rcpt}};
	size_t at = rcpt.rfind('@');
	for (std::string& a : x.addresses)
		if (at != std::string::npos && !alias_delivery(a) && a.find('@') == std::string::npos)
			a += rcpt.substr(at);
	return {std::move(x.addresses)};
}

// Constructs and starts every handler instance, plus the built-in alias
// delivery instances the config enables; a start() failure is logged and
// left to show up as delivery failures.
Instances HandlerServer::build_instances(const Config& cfg)
{
	Instances out;
	auto add = [&out](const std::string& name, std::shared_ptr<Handler> h, unsigned workers) {
		out[name] = std::make_shared<Instance>(name, std::move(h), workers);
	};
	for (ConfiguredHandler& h : handlers_create(cfg, rt_.secrets)) {
		try {
			h.handler->start();
		} catch (const std::exception& e) {
			log_warnx("handler %s: start failed: %s", h.name.c_str(), e.what());
		}
		add(h.name, std::move(h.handler), h.workers);
	}
	// Commands run one at a time, as they always did.
	if (cfg.alias_commands)
		add(ALIAS_COMMAND_INSTANCE, alias_command_handler(cfg.delivery_timeout), 1);
	if (cfg.alias_files)
		add(ALIAS_FILE_INSTANCE, alias_file_handler(), 1);
	return out;
}

// SIGHUP, as relayed by the parent (which validated the file already):
// the memfd holds the config text and the secrets it names.
void HandlerServer::reload(const std::string& file, int fd)
{
	std::string conf;
	char buf[65536];
	ssize_t n;
	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf, sizeof buf)) > 0)
		conf.append(buf, static_cast<size_t>(n));
	try {
		HandlerConfText given;
		if (!decode(conf, given))
			throw std::runtime_error("malformed configuration from the parent");
		Config cfg = config_parse(given.text, file);
		// The submission socket stays where it was bound until a restart
		// (the parent's reload()): local MAILs are checked against it.
		cfg.socket = cfg_.socket;
		rt_.secrets = Secrets::passed(given.secrets);
		queue_.configure(cfg, build_instances(cfg));
		limiter_.configure(cfg.rate_limits);
		cfg_ = std::move(cfg);
		reload_aliases(nullptr);
		log_debug("handler configuration reloaded");
	} catch (const std::exception& e) {
		log_warnx("%s; keeping the previous configuration", e.what());
	}
}

// A message from the parent: a fresh smtp channel, or a new configuration.
void HandlerServer::parent_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_P_SMTP_CHANNEL:
		payload<NoPayload>(m);
		intake_.attach(std::move(m.fd));
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
// seconds. Queued messages stay in the spool for the next start. A
// delivery that ended before the signal was seen is settled too: left
// uncollected, its message would be delivered again at the next start.
void HandlerServer::shutdown()
{
	queue_.stop();
	limiter_.save();
	for (int i = 0;; i++) {
		bool ended = queue_.running() == 0;  // then collect() settles every one
		queue_.collect();
		if (ended || i == SHUTDOWN_GRACE * 10)
			break;
		usleep(100000);
	}
	if (queue_.running() > 0)
		log_warnx("%zu deliveries still running at exit; they will be retried", queue_.running());
	log_debug("handler process done, %zu messages stay queued", queue_.size());
	_exit(0);
}

std::vector<QueueItem> HandlerServer::queue()
{
	std::vector<QueueItem> out;
	for (Queue::Item& i : queue_.items())
		out.push_back({i.env.id, i.env.arrival, i.size, i.env.uid, i.env.sender, i.env.recipients, i.attempts,
			       i.last_error});
	return out;
}

// The files of failed/ are read on offload_'s thread: thousands of them,
// cold in the cache, would hold every SMTP transaction for a second.
void HandlerServer::failed(std::function<void(std::vector<FailedItem>, std::string)> done)
{
	struct Listing {
		std::vector<FailedItem> items;
		std::string error;
	};
	std::vector<FailedItem> refused = import_.refused();
	const Spool& spool = spool_;
	std::function<Listing()> read_failed = [&spool] {
		Listing out;
		try {
			for (const std::string& id : spool.list_queue("failed")) {
				FailedItem f;
				f.id = id;
				f.reason = spool.reason(id);
				try {
					Envelope env = spool.load_envelope(id, "failed", &f.size);
					f.arrival = env.arrival;
					f.sender = env.sender;
					f.recipients = env.recipients;
				} catch (const std::exception& e) {
					f.reason += f.reason.empty() ? e.what() : "";
				}
				out.items.push_back(std::move(f));
			}
		} catch (const std::exception& e) {
			out.error = e.what();
		}
		return out;
	};
	try {
		offload_.run<Listing>(std::move(read_failed), [done, refused](Listing l) mutable {
			for (FailedItem& f : refused)
				l.items.push_back(std::move(f));
			done(std::move(l.items), std::move(l.error));
		});
	} catch (const std::exception& e) {
		done({}, std::string("cannot start a thread: ") + e.what());
	}
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
	time_t now = seconds_since_boot();
	if (!rt_.have_drop_group || (!force && now < next_import_))
		return;
	next_import_ = now + IMPORT_INTERVAL;
	size_t room = intake_.room();
	// A few files per loop turn, so that a pile of large ones never holds
	// up SMTP transactions for long; more follow at the next turn.
	auto imported = import_.run(std::min(room, IMPORT_BATCH), cfg_.data_size_limit, cfg_.hop_count_limit,
				    cfg_.routes, [this](const std::string& r) { return expand(r); });
	if (imported.size() == IMPORT_BATCH)
		next_import_ = now;
	// Files held by a rate limit go when their window ends, not later.
	if (import_.next_release() && import_.next_release() < next_import_)
		next_import_ = import_.next_release();
	for (const Imported& m : imported)
		enqueue(m.env, m.size, static_cast<double>(m.env.arrival), nullptr);
}

// A rate limit's alert: from the null sender to postmaster (through
// /etc/aliases, as Postfix's notices), committed like any message and
// queued for the limit's instance alone. It passes no rate limit, so it
// can never trigger one. Returns its queue id, or "".
std::string HandlerServer::store_alert(const std::string& instance, const std::string& message)
{
	Envelope env = own_envelope();
	std::string postmaster = "postmaster@" + rt_.hostname;
	const std::vector<Route> own = {{"*", {instance}, 0}};  // as Queue::dispatch() routes it
	for (std::string& r : expand(postmaster).addresses)
		if (!alias_delivery(r))
			add_recipient(own, env.recipients, std::move(r));
	if (env.recipients.empty())
		env.recipients.push_back(postmaster);
	env.instance = instance;
	try {
		uint64_t size = commit_own(env, message);
		log_info("%s: from=<>, size=%llu, nrcpt=%zu, client=laimd, rate limit alert for handler %s", env.id.c_str(),
			 (unsigned long long)size, env.recipients.size(), instance.c_str());
		return env.id;
	} catch (const std::exception& e) {
		log_warnx("rate limit alert for handler %s not stored: %s", instance.c_str(), e.what());
		return "";
	}
}

// The envelope of a message laimd makes itself (a rate limit's alert, a
// failure notice): from the null sender, arriving now.
Envelope HandlerServer::own_envelope() const
{
	Envelope env;
	env.client = "local";
	env.helo = rt_.hostname;
	env.arrival = time(nullptr);
	return env;
}

// Commits such a message under a new queue id (Spool::store: synced
// before it returns) and queues it; its size. Throws, nothing queued,
// when it cannot be stored.
uint64_t HandlerServer::commit_own(Envelope& env, std::string_view message)
{
	env.id = spool_.new_id();
	uint64_t size = spool_.store(env, {message});
	queue_.add(env, size, static_cast<double>(env.arrival));
	return size;
}

// A message given up by the queue: its sender's notice, at most
// NOTICES_PER_TURN a loop turn (false: the queue asks again at the
// next), so that a burst of failures holds no 250 for long.
bool HandlerServer::given_up(const Envelope& original, const std::vector<std::string>& failures)
{
	if (!wants_bounce(original))
		return true;
	if (notices_ == NOTICES_PER_TURN)
		return false;
	notices_++;
	try {
		SpoolMessage m = spool_.load(original.id);
		store_notice(original, failures, m.body());
	} catch (const std::exception& e) {
		log_warnx("%s: no notice of its failure to <%s>: %s", original.id.c_str(), original.sender.c_str(),
			  e.what());
	}
	return true;
}

// The notice to the sender of a message given up or refused
// (handler/bounce.h): from the null sender, through /etc/aliases and the
// routes as a message from a client would go (a recipient with no route
// is left out), committed like an alert, in the main loop. One that
// cannot be stored is logged, and the message given up without it.
void HandlerServer::store_notice(const Envelope& original, const std::vector<std::string>& failures,
				 std::string_view message)
{
	if (!wants_bounce(original))
		return;
	const char* id = original.id.c_str();
	Envelope env = own_envelope();
	Expanded x = expand(original.sender);
	for (std::string& r : x.addresses)
		if (alias_delivery(r) || route_find(cfg_.routes, r))
			add_recipient(cfg_.routes, env.recipients, std::move(r));
	if (env.recipients.empty()) {
		log_warnx("%s: no notice of its failure to <%s>: %s", id, original.sender.c_str(),
			  x.status == BackendStatus::Ok ? "the address has no route" : "/etc/aliases did not expand it");
		return;
	}
	try {
		uint64_t size = commit_own(env, bounce_message(original, failures, message, rt_.hostname, env.arrival));
		log_info("%s: from=<>, size=%llu, nrcpt=%zu, client=laimd, notice of the failure of %s to <%s>",
			 env.id.c_str(), (unsigned long long)size, env.recipients.size(), id, original.sender.c_str());
	} catch (const std::exception& e) {
		log_warnx("%s: no notice of its failure to <%s>: %s", id, original.sender.c_str(), e.what());
	}
}

// A received message, committed to the spool, enters the queue.
void HandlerServer::enqueue(const Envelope& env, uint64_t size, double arrival, Queue::Bytes bytes)
{
	queue_.add(env, size, arrival, std::move(bytes));
	received_++;
}

// laimctl reset-limit KEY: the key's files held in offline/ go at once.
bool HandlerServer::reset_limit(const std::string& key)
{
	if (!limiter_.reset(key))
		return false;
	import_offline(true);
	return true;
}

// One loop turn: deliveries due, an offline import, rate limit windows,
// control timeouts, then whatever is ready, then the group commit of the
// ends of data it brought.
void HandlerServer::run()
{
	for (;;) {
		if (got_sigterm)
			shutdown();
		notices_ = 0;
		queue_.run();
		import_offline(false);
		limiter_.tick(time(nullptr));
		control_.expire();
		intake_.admit_waiting();
		loop_.wait(std::min(queue_.next_wakeup_ms(), 1000));
		intake_.commit_pending();
	}
}

}  // namespace

void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan, UniqueFd command_chan)
{
	command_client_init(std::move(command_chan));
	child_signals(&got_sigterm);
	rt.secrets.seal();  // this process cannot read them itself
	sandbox_drop(rt.user, nullptr);
	if (chdir(rt.cfg.spool.c_str()) == -1)
		fatal("chdir %s", rt.cfg.spool.c_str());
	sandbox_seccomp_handler();
	std::optional<HandlerServer> server;
	try {
		server.emplace(rt, std::move(parent_chan), std::move(smtp_chan));
	} catch (const std::exception& e) {  // the spool unreadable, say: the parent restarts this process
		fatalx("handler process cannot start: %s", e.what());
	}
	server->run();
}

}  // namespace laim
