// The smtp process: accepts clients on the listeners it inherited, runs one
// Session per client in a single epoll loop, and asks the handler process
// over imsg for every transaction step (doc/architecture.md, "Processes").
#include "config.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <list>
#include <map>
#include <memory>

#include <openssl/crypto.h>

#include "common/address.h"
#include "common/clock.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/peer.h"
#include "common/proto.h"
#include "common/sandbox.h"
#include "smtp/auth_guard.h"
#include "smtp/session.h"
#include "smtp/smtp.h"
#include "smtp/tls.h"

namespace laim {

namespace {

volatile sig_atomic_t got_sigterm = 0;
constexpr time_t SHUTDOWN_GRACE = 10;  // seconds sessions get to finish at SIGTERM
// Descriptors kept free beside the sessions': a new handler channel, a
// descriptor in flight over imsg.
constexpr rlim_t FD_SPARE = 8;
// Sessions on the local socket (sendmail) beyond max_sessions: network
// clients that sit idle or send a byte a second cannot lock local
// submission out.
constexpr uint32_t LOCAL_RESERVE = 8;
constexpr int64_t HANDSHAKE_TIMEOUT_MS = 30000;  // at most; timeout: when shorter
constexpr time_t REFUSALS_LOG_INTERVAL = 60;     // seconds between a listener's lines of refused clients

// How many sessions the open file limit has room for: each holds its
// socket and, in DATA, its spool file, beside the descriptors open now.
// Past it a client gets 421 rather than a session that fails at DATA.
uint32_t sessions_within_fd_limit()
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		return UINT32_MAX;
	rlim_t used = 0;
	for (rlim_t fd = 0; fd < std::min<rlim_t>(rl.rlim_cur, 65536); fd++)
		used += fcntl(static_cast<int>(fd), F_GETFD) != -1;
	rlim_t spare = rl.rlim_cur > used + FD_SPARE ? rl.rlim_cur - used - FD_SPARE : 0;
	return static_cast<uint32_t>(std::min<rlim_t>(spare / 2, UINT32_MAX));
}

struct Conn {
	UniqueFd fd;
	EventLoop::Watch watch;
	std::unique_ptr<Session> session;
	// CLOCK_MONOTONIC: since when the client owes its next command (or
	// its handshake): its last input, the greeting, or the end of a wait
	// for the backend. The idle timeout counts from it.
	int64_t idle_since_ms = 0;
	bool greeted = false;
	int64_t greet_at_ms = 0;    // CLOCK_MONOTONIC
	std::unique_ptr<TlsStream> tls;  // from the handshake on
	bool handshaking = false;
	int listen_index = -1;  // Listener::listen_index
	const std::string* listener = nullptr;  // Listener::name, for log lines
	int64_t auth_delay_until_ms = 0;  // a failed AUTH's 535 waits until then; 0: none
	int64_t auth_line_since_ms = 0;   // since when its AUTH waits in the line; 0: it does not
	// Whose failures its AUTHs count as (AuthGuard): its address, or for
	// a client of this host on an auth listener "uid N", as the parent
	// found; empty until the parent said.
	std::string auth_as;
	int64_t output_moved_ms = 0;  // when its output was last written, or empty
	bool input_ended = false;     // the client shut its side (EOF)
};

class SmtpServer : public SessionBackend {
 public:
	SmtpServer(Runtime& rt, UniqueFd parent, UniqueFd handler);
	[[noreturn]] void run();

	// SessionBackend: each step becomes one imsg to the handler process;
	// one that cannot be sent is answered with a temporary failure.
	void on_mail(Session& s, const std::string& sender) override;
	void on_rcpt(Session& s, const std::string& rcpt) override;
	void on_data(Session& s) override;
	void on_commit(Session& s, uint64_t size) override;
	void on_abort(Session& s) override;
	void on_auth(Session& s, const std::string& user, const std::string& password) override;
	void on_auth_delay(Session& s) override;
#ifdef LAIM_SECCOMP_TRIGGER
	void on_seccomp_trigger() override;
#endif

 private:
	UniqueFd local_connection(uint32_t id);
	void accept_clients(size_t idx);
	void greet(Conn& c);
	void client_event(uint32_t id, uint32_t events);
	bool read_input(uint32_t id, Conn& c);
	bool flush_output(uint32_t id, Conn& c);
	void start_tls(uint32_t id, Conn& c);
	void handshake(uint32_t id, Conn& c);
	void set_tls(const SmtpTls& t, bool reloaded);
	void refused_without_tls(size_t idx, bool flush);
	void update(uint32_t id);
	void close_conn(uint32_t id);
	void handler_gone();
	void auth_failure(const std::string& address, const std::string& as);
	bool ask_client_uid(uint32_t id, const Conn& c);
	void auth_admit(Session& s, Conn& c, const std::string& user, std::string& req);
	void auth_line_join(uint32_t id, std::string key, const std::string& user, std::string& req);
	void send_auth(Session& s, const std::string& as, const std::string& user, std::string& req);
	void auth_line_next(const std::string& key);
	void auth_line_leave(uint32_t id);
	void client_uid(uint32_t id, const ClientUidMsg& r);
	void handler_message(Imsg& m);
	void parent_message(Imsg& m);
	void configure(const SmtpConf& conf);
	void tick();
	void begin_shutdown();

	Runtime& rt_;
	SmtpSettings settings_;
	uint32_t timeout_, max_sessions_, greeting_delay_;
	uint32_t fd_sessions_;  // sessions_within_fd_limit() at start
	uint32_t session_limit(bool local) const;
	EventLoop loop_;
	ImsgPeer parent_;
	SiblingChannel handler_;
#ifdef LAIM_SECCOMP_TRIGGER
	bool test_lie_ = false;  // the next answer from the handler is reported as broken
#endif
	std::vector<EventLoop::Watch> listening_;
	std::map<uint32_t, Conn> conns_;
	AuthGuard auth_guard_;
	// The AUTH checks the parent has yet to answer, by session id: a
	// client that leaves before the verdict still has its failure counted.
	struct AuthCheck {
		std::string address, as, user;
	};
	std::map<uint32_t, AuthCheck> auth_checks_;
	// The AUTHs over their key's checks in flight (AuthGuard::admit()
	// said Wait), in order of arrival: see auth_line_next(); and with an
	// empty key, those waiting for the parent to say whose client they
	// are. req is the encoded AuthMsg, password included, wiped when it
	// leaves (a list: leaving moves no other entry's copy around).
	struct AuthWaiting {
		uint32_t id;
		std::string key, user, req;
	};
	std::list<AuthWaiting> auth_line_;
	std::list<AuthWaiting>::iterator first_waiting(const std::string& key)
	{
		return std::find_if(auth_line_.begin(), auth_line_.end(),
				    [&key](const AuthWaiting& w) { return w.key == key; });
	}
	// By Listener::listen_index; a session's SSL holds its own reference,
	// so a context replaced at SIGHUP lives on while its sessions do.
	std::map<int, std::unique_ptr<TlsContext>> tls_;
	// The clients an implicit TLS listener without a context refused, by
	// index in rt_.listeners, for refused_without_tls().
	struct Refusals {
		time_t logged_at = 0;
		unsigned count = 0;  // since the last line
		bool logged = false;
	};
	std::vector<Refusals> refused_;
	uint32_t next_id_ = 1;
	bool shutting_down_ = false;
	time_t shutdown_deadline_ = 0;
};

SmtpServer::SmtpServer(Runtime& rt, UniqueFd parent, UniqueFd handler)
	: rt_(rt),
	  parent_(loop_, std::move(parent), imsg_valid_parent_to_smtp, [this](Imsg& m) { parent_message(m); },
		  ImsgPeer::fatal_loss("parent")),
	  handler_(loop_, parent_, "handler", imsg_valid_handler_to_smtp, [this](Imsg& m) { handler_message(m); },
		   [this] { handler_gone(); })
{
	configure(smtp_conf(rt.cfg, rt.hostname, rt.host_addresses));
	refused_.resize(rt.listeners.size());
	for (const SmtpTls& t : rt.tls)
		set_tls(t, false);
	handler_.attach(std::move(handler));
	for (size_t i = 0; i < rt.listeners.size(); i++)
		listening_.push_back(
			loop_.watch(rt.listeners[i].fd.get(), EPOLLIN, [this, i](uint32_t) { accept_clients(i); }));
	fd_sessions_ = sessions_within_fd_limit();
	if (session_limit(false) < max_sessions_)
		log_warnx("the open file limit leaves room for %u sessions, fewer than max_sessions (%u)",
			  session_limit(false), max_sessions_);
}

// Network clients get at most max_sessions sessions, the local socket
// LOCAL_RESERVE more; both within the open file limit, where the local
// socket's reserve comes first.
uint32_t SmtpServer::session_limit(bool local) const
{
	if (local)
		return std::min(max_sessions_ + LOCAL_RESERVE, fd_sessions_);
	return std::min(max_sessions_, fd_sessions_ > LOCAL_RESERVE ? fd_sessions_ - LOCAL_RESERVE : 0);
}

// The handler process died or broke the protocol: every session waiting on
// it gets a temporary failure now; later steps fail the same way until the
// parent hands us a channel to its successor.
void SmtpServer::handler_gone()
{
	log_warnx("lost the handler process; new transactions get 451 until it is back");
	for (auto& [id, c] : conns_) {
		Session& s = *c.session;
		if (!s.waiting())
			continue;
		// Exactly one of these matches the step the session waits for;
		// the others are ignored by the session.
		s.mail_reply(BackendStatus::Unavailable);
		s.rcpt_reply(BackendStatus::Unavailable);
		s.data_reply(BackendStatus::Unavailable, -1, "");
		s.commit_reply(BackendStatus::Unavailable);
	}
	for (auto it = conns_.begin(); it != conns_.end();) {
		uint32_t id = (it++)->first;
		update(id);
	}
}

// A local client's MAIL comes with its connection, from which the handler
// process reads who it is (SO_PEERCRED): this process has no say in it.
void SmtpServer::on_mail(Session& s, const std::string& sender)
{
#ifdef LAIM_SECCOMP_TRIGGER
	test_lie_ = sender.rfind("liar@", 0) == 0;
#endif
	const ClientInfo& ci = s.client();
	std::string mail = encode(MailMsg{sender, s.helo(), ci.address, s.auth_user()});
	bool sent = false;
	if (ci.address != "local") {
		sent = handler_.send(IMSG_S_MAIL, s.id(), mail);
	} else if (UniqueFd conn = local_connection(s.id())) {
		sent = handler_.send(IMSG_S_MAIL_LOCAL, s.id(), mail, std::move(conn));
	}
	if (!sent)
		s.mail_reply(BackendStatus::Unavailable);
}

// A copy of session id's connection, to go with its MAIL.
UniqueFd SmtpServer::local_connection(uint32_t id)
{
	auto it = conns_.find(id);
	int fd = it == conns_.end() ? -1 : it->second.fd.get();
#ifdef LAIM_SECCOMP_TRIGGER
	// Test builds only: a subverted smtp process that passes the
	// listening socket, whose SO_PEERCRED is root's (regress/e2e/t_submitter_uid.py).
	if (getenv("LAIM_TEST_SMTP_PASS_LISTENER"))
		for (const Listener& l : rt_.listeners)
			if (l.local)
				fd = l.fd.get();
#endif
	UniqueFd dup(fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0));
	if (!dup)
		log_warn("passing the connection of session %u", (unsigned)id);
	return dup;
}

void SmtpServer::on_rcpt(Session& s, const std::string& rcpt)
{
#ifdef LAIM_SECCOMP_TRIGGER
	// Test builds only: a broken smtp process that sends the handler a
	// malformed RCPT, MACed as all it sends (regress/e2e/t_peer_error.py).
	if (rcpt.rfind("badframe@", 0) == 0) {
		handler_.send(IMSG_S_RCPT, s.id(), "bad");
		return;
	}
#endif
	if (!handler_.send(IMSG_S_RCPT, s.id(), encode(RcptMsg{rcpt})))
		s.rcpt_reply(BackendStatus::Unavailable);
}

void SmtpServer::on_data(Session& s)
{
	if (!handler_.send(IMSG_S_DATA, s.id()))
		s.data_reply(BackendStatus::Unavailable, -1, "");
}

void SmtpServer::on_commit(Session& s, uint64_t size)
{
	if (!handler_.send(IMSG_S_COMMIT, s.id(), encode(CommitMsg{size})))
		s.commit_reply(BackendStatus::Unavailable);
}

void SmtpServer::on_abort(Session& s)
{
	handler_.send(IMSG_S_ABORT, s.id());
}

// The parent checks the credentials against the listener's users file;
// the payload, which holds the password, is overwritten once queued. An
// AUTH over its key's budget of checks in flight waits in the line (as
// does one behind others of its key) rather than get 454: parallel
// sessions with the right password, a web application's workers, all
// get their answer; a guesser's get no more checks at once. An AUTH that
// comes before the parent said whose client it is (accept_clients()) waits
// in the line for that, unjudged, as long as a check in flight would.
void SmtpServer::on_auth(Session& s, const std::string& user, const std::string& password)
{
	Conn& c = conns_.at(s.id());
	std::string req = encode(AuthMsg{s.client().listener, user, password});
	if (c.auth_as.empty())
		auth_line_join(s.id(), "", user, req);
	else
		auth_admit(s, c, user, req);
}

// Passes the parent a copy of c's connection, to learn whose it is
// (IMSG_P_CLIENT_UID). A client of this host counts as the uid that owns
// its socket: every local user can send from any loopback address, and
// one user's guesses must not hold off the others.
bool SmtpServer::ask_client_uid(uint32_t id, const Conn& c)
{
	UniqueFd conn(fcntl(c.fd.get(), F_DUPFD_CLOEXEC, 0));
	return conn && parent_.send(IMSG_S_CLIENT_UID, id, encode(NoPayload{}), std::move(conn));
}

// Counts s's AUTH as c.auth_as's: held off, in the line, or checked.
void SmtpServer::auth_admit(Session& s, Conn& c, const std::string& user, std::string& req)
{
	std::string key = auth_guard_.key(c.auth_as);
	AuthGuard::Admit admit = auth_guard_.admit(c.auth_as, seconds_since_boot());
	if (admit == AuthGuard::Admit::Check && first_waiting(key) != auth_line_.end())
		admit = AuthGuard::Admit::Wait;
	if (admit == AuthGuard::Admit::Held) {
		OPENSSL_cleanse(req.data(), req.size());
		s.auth_held();
	} else if (admit == AuthGuard::Admit::Wait) {
		auth_line_join(s.id(), std::move(key), user, req);
		c.auth_line_since_ms = monotonic_ms();
	} else {
		send_auth(s, c.auth_as, user, req);
	}
}

// Session id's AUTH waits in the line under key; req is wiped here.
void SmtpServer::auth_line_join(uint32_t id, std::string key, const std::string& user, std::string& req)
{
	auth_line_.push_back(AuthWaiting{id, std::move(key), user, req});
	OPENSSL_cleanse(req.data(), req.size());
}

// Sends s's AUTH request req to the parent, then wipes it; its verdict
// counts as the client as's.
void SmtpServer::send_auth(Session& s, const std::string& as, const std::string& user, std::string& req)
{
	bool sent = parent_.send(IMSG_S_AUTH, s.id(), req);
	OPENSSL_cleanse(req.data(), req.size());
	if (!sent) {
		s.auth_reply(false);
		return;
	}
	auth_guard_.checking(as);
	auth_checks_[s.id()] = AuthCheck{s.client().address, as, user};
}

// A verdict of key came back: the AUTHs of key waiting in the line go to
// the parent, first come first, as long as the budget allows, or get 454
// if key is now held off.
void SmtpServer::auth_line_next(const std::string& key)
{
	for (;;) {
		auto it = first_waiting(key);
		if (it == auth_line_.end())
			return;
		Conn& c = conns_.at(it->id);
		AuthGuard::Admit admit = auth_guard_.admit(c.auth_as, seconds_since_boot());
		if (admit == AuthGuard::Admit::Wait)
			return;
		// Out of the line before the session goes on: its next commands
		// may bring another AUTH.
		uint32_t id = it->id;
		std::string user = std::move(it->user), req = it->req;
		auth_line_leave(id);
		Session& s = *c.session;
		if (admit == AuthGuard::Admit::Held) {
			OPENSSL_cleanse(req.data(), req.size());
			s.auth_held();
		} else {
			send_auth(s, c.auth_as, user, req);
		}
		update(id);
	}
}

// Session id's AUTH leaves the line, if it waits there: the session got
// its turn, timed out, or is gone.
void SmtpServer::auth_line_leave(uint32_t id)
{
	auto it = std::find_if(auth_line_.begin(), auth_line_.end(), [id](const AuthWaiting& w) { return w.id == id; });
	if (it == auth_line_.end())
		return;
	OPENSSL_cleanse(it->req.data(), it->req.size());
	auth_line_.erase(it);
	auto c = conns_.find(id);
	if (c != conns_.end())
		c->second.auth_line_since_ms = 0;
}

// The parent says whose session id's client is (or, when the client's
// end is gone, that it is this host's): an AUTH waiting for that leaves
// the line and is judged.
void SmtpServer::client_uid(uint32_t id, const ClientUidMsg& r)
{
	auto c = conns_.find(id);
	if (c == conns_.end())
		return;
	c->second.auth_as = r.known ? "uid " + std::to_string(r.uid) : c->second.session->client().address;
	auto it = std::find_if(auth_line_.begin(), auth_line_.end(),
			       [id](const AuthWaiting& w) { return w.id == id && w.key.empty(); });
	if (it == auth_line_.end())
		return;
	std::string user = std::move(it->user), req = it->req;
	auth_line_leave(id);
	auth_admit(*c->second.session, c->second, user, req);
	update(id);
}

// Counts a failed AUTH of the client as (from address) across sessions;
// logs the hold it starts, with the uid of a local client.
void SmtpServer::auth_failure(const std::string& address, const std::string& as)
{
	if (!auth_guard_.failed(as, seconds_since_boot()))
		return;
	std::string who = as == address ? address : address + " (" + as + ")";
	log_warnx("smtp: AUTH from %s held off for %lds: %u failed authentications within %lds", who.c_str(),
		  (long)AUTH_GUARD_HOLD, AUTH_GUARD_FAILURES, (long)AUTH_GUARD_WINDOW);
}

// A random 1 to 3 s before a failed AUTH's 535, served by tick(): a
// password guesser gets few tries a session and learns nothing from the
// time the check took; other sessions go on meanwhile.
void SmtpServer::on_auth_delay(Session& s)
{
	auto it = conns_.find(s.id());
	if (it != conns_.end())
		auth_failure(s.client().address, it->second.auth_as);
	uint16_t r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = static_cast<uint16_t>(monotonic_ms());
	if (it != conns_.end())
		it->second.auth_delay_until_ms = monotonic_ms() + 1000 + r % 2001;
}

#ifdef LAIM_SECCOMP_TRIGGER
// Test builds only: a system call the smtp policy does not allow.
void SmtpServer::on_seccomp_trigger()
{
	log_warnx("XSECCOMP: calling a forbidden system call on purpose");
	syscall(SYS_ptrace, 0, 0, 0, 0);
}
#endif

// The client address accept(2) gave, numeric, without DNS.
std::string peer_address(const struct sockaddr_storage& ss)
{
	char buf[INET6_ADDRSTRLEN] = "unknown";
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
	return buf;
}

void SmtpServer::accept_clients(size_t idx)
{
	const Listener& l = rt_.listeners[idx];
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss = {};
		socklen_t ss_len = sizeof ss;
		UniqueFd fd(accept4(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &ss_len, SOCK_NONBLOCK | SOCK_CLOEXEC));
		if (!fd) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept on %s", l.name.c_str());
			return;
		}
		if (shutting_down_)
			return;
		auto tls_mode = l.listen_index < 0 ? ListenAddress::Tls::None : rt_.cfg.listen[l.listen_index].tls;
		if (conns_.size() >= session_limit(l.local)) {
			// An implicit TLS client would read a 421 in the clear as
			// a broken handshake: it gets the close alone.
			std::string msg = "421 4.3.2 " + settings_.hostname + " Too many sessions, try again later\r\n";
			if (tls_mode != ListenAddress::Tls::Implicit)
				(void)!write(fd.get(), msg.data(), msg.size());
			if (conns_.size() >= max_sessions_ + (l.local ? LOCAL_RESERVE : 0))
				log_warnx("max_sessions (%u) reached: refused a client on %s", max_sessions_, l.name.c_str());
			else
				log_warnx("open file limit: %u sessions reached: refused a client on %s",
					  session_limit(l.local), l.name.c_str());
			continue;
		}
		ClientInfo ci;
		bool has_tls = tls_.count(l.listen_index) > 0;
		if (tls_mode == ListenAddress::Tls::Implicit && !has_tls) {
			refused_without_tls(idx, false);
			continue;
		}
		ci.starttls = tls_mode == ListenAddress::Tls::Starttls;
		ci.tls_unavailable = ci.starttls && !has_tls;
		if (l.local) {
			ci.address = "local";
		} else {
			ci.listener = static_cast<uint32_t>(l.listen_index);
			ci.auth_required = rt_.cfg.listen.at(l.listen_index).auth_required;
			ci.address = peer_address(ss);  // TCP_NODELAY: from the listener (parent/listen.cpp)
		}
		uint32_t id = next_id_++;
		if (next_id_ == 0)
			next_id_ = 1;
		Conn& c = conns_[id];
		c.fd = std::move(fd);
		c.session = std::make_unique<Session>(*this, settings_, std::move(ci), id);
		c.idle_since_ms = monotonic_ms();
		c.output_moved_ms = c.idle_since_ms;
		c.greet_at_ms = c.idle_since_ms + greeting_delay_;
		c.listen_index = l.listen_index;
		c.listener = &l.name;
		c.watch = loop_.watch(c.fd.get(), 0, [this, id](uint32_t events) { client_event(id, events); });
		const ClientInfo& client = c.session->client();
		if (!(client.auth_required && auth_guard_.this_host(client.address) && ask_client_uid(id, c)))
			c.auth_as = client.address;
		if (tls_mode == ListenAddress::Tls::Implicit)
			start_tls(id, c);
		else if (greeting_delay_ == 0)
			greet(c);
		update(id);
	}
}

// The 220, unless the client already talked: RFC 5321 3.1 has the client
// wait for the greeting, so early input is a broken or hostile client.
void SmtpServer::greet(Conn& c)
{
	char b;
	c.greeted = true;
	c.idle_since_ms = monotonic_ms();  // greeting_delay is not the client's silence
	if (recv(c.fd.get(), &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
		log_info("client %s talked before the greeting: rejected", c.session->client().address.c_str());
		c.session->pregreet();
	} else {
		c.session->greet();
	}
}

void SmtpServer::client_event(uint32_t id, uint32_t events)
{
	auto it = conns_.find(id);
	if (it == conns_.end())
		return;
	Conn& c = it->second;
	if (c.handshaking) {
		handshake(id, c);
	} else if (events & (EPOLLHUP | EPOLLERR) && (c.input_ended || c.session->input_space().second == 0)) {
		// Reset, and no room to read the error with: epoll reports it
		// until the descriptor goes.
		c.session->disconnected();
		close_conn(id);
		return;
	} else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR) || (c.tls && c.tls->wants_write())) {
		read_input(id, c);
	}
	update(id);
}

// Reads what the session has room for, through TLS when it is on; false
// when the client went away (the connection is closed then). At the end
// of its input (EOF, or TLS close_notify) the session still answers what
// it has.
bool SmtpServer::read_input(uint32_t id, Conn& c)
{
	auto [buf, room] = c.session->input_space();
	if (room == 0 || c.input_ended)
		return true;
	size_t n = 0;
	bool gone, ended;
	if (c.tls) {
		TlsStream::Io r = c.tls->read(buf, room, &n);
		if (r == TlsStream::Io::Again)
			return true;
		ended = r == TlsStream::Io::Closed;
		gone = r == TlsStream::Io::Failed;
	} else {
		ssize_t r = read(c.fd.get(), buf, room);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		ended = r == 0;
		gone = r < 0;
		n = r > 0 ? static_cast<size_t>(r) : 0;
	}
	if (ended) {
		c.input_ended = true;
		c.session->input_ended();
		return true;
	}
	if (gone) {
		c.session->disconnected();
		close_conn(id);
		return false;
	}
	c.idle_since_ms = monotonic_ms();
	c.session->input_commit(n);
	return true;
}

// Writes what the socket takes of the session's output; false when the
// client went away (the connection is closed then).
bool SmtpServer::flush_output(uint32_t id, Conn& c)
{
	Session& s = *c.session;
	while (!s.output().empty()) {
		size_t n = 0;
		if (c.tls) {
			TlsStream::Io r = c.tls->write(s.output().data(), s.output().size(), &n);
			if (r == TlsStream::Io::Again)
				return true;
			if (r != TlsStream::Io::Done)
				break;
		} else {
			ssize_t r = write(c.fd.get(), s.output().data(), s.output().size());
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return true;
			if (r <= 0)
				break;
			n = static_cast<size_t>(r);
		}
		s.output_consumed(n);
		c.output_moved_ms = monotonic_ms();
	}
	if (s.output().empty()) {
		c.output_moved_ms = monotonic_ms();
		return true;
	}
	s.disconnected();
	close_conn(id);
	return false;
}

// The server side of a TLS handshake on the listener's context: at accept
// for implicit TLS, after the 220 to STARTTLS otherwise.
void SmtpServer::start_tls(uint32_t id, Conn& c)
{
	auto ctx = tls_.find(c.listen_index);
	try {
		if (ctx == tls_.end())
			throw std::runtime_error("no certificate for this listener");
		c.tls = std::make_unique<TlsStream>(ctx->second->get(), c.fd.get());
	} catch (const std::exception& e) {
		log_warnx("smtp: TLS handshake failed from %s: %s", c.session->client().address.c_str(), e.what());
		c.session->disconnected();
		close_conn(id);
		return;
	}
	c.handshaking = true;
	c.idle_since_ms = monotonic_ms();
	handshake(id, c);
}

// One step of the handshake; when done, the session goes on under TLS
// (an implicit TLS session gets its greeting now).
void SmtpServer::handshake(uint32_t id, Conn& c)
{
	const std::string& client = c.session->client().address;
	switch (c.tls->handshake()) {
	case TlsStream::Io::Again:
		return;
	case TlsStream::Io::Done:
		c.handshaking = false;
		c.idle_since_ms = monotonic_ms();
		c.session->tls_started();
		log_info("smtp: TLS from %s on %s: %s", client.c_str(), c.listener->c_str(), c.tls->describe().c_str());
		if (!c.greeted && c.idle_since_ms >= c.greet_at_ms)
			greet(c);
		return;
	case TlsStream::Io::Closed:
	case TlsStream::Io::Failed:
		log_info("smtp: TLS handshake failed from %s: %s", client.c_str(),
			 c.tls->error().empty() ? "connection closed" : c.tls->error().c_str());
		c.session->disconnected();
		close_conn(id);
	}
}

// A listener's context from its chain and the parent's key id; a chain
// that does not load leaves the context before it. A listener without a
// context answers STARTTLS with 454 (a temporary fault: the client tries
// again later), and an implicit TLS one refuses its clients.
void SmtpServer::set_tls(const SmtpTls& t, bool reloaded)
{
	int i = (int)t.listen_index;
	try {
#ifdef LAIM_SECCOMP_TRIGGER
		// Test builds only: an OpenSSL here that refuses a chain the
		// parent's check passed (regress/e2e/t_tls_keyserver.py).
		if (const char* when = getenv("LAIM_TEST_SMTP_REFUSE_TLS"))
			if (std::string(when) == (reloaded ? "reload" : "start"))
				throw std::runtime_error("TLS context: refused for the test");
#endif
		tls_[i] = std::make_unique<TlsContext>(t.chain, t.key_id);
		for (size_t idx = 0; idx < rt_.listeners.size(); idx++)
			if (rt_.listeners[idx].listen_index == i)
				refused_without_tls(idx, true);
		if (reloaded)
			log_info("smtp: new sessions on listen[%u] get the reloaded certificate", t.listen_index);
	} catch (const std::exception& e) {
		if (tls_.count(i))
			log_warnx("smtp: keeping the previous certificate of listen[%u]: %s", t.listen_index, e.what());
		else
			log_warnx("smtp: listen[%u] serves no TLS (%s): %s", t.listen_index,
				  rt_.cfg.listen.at(i).tls == ListenAddress::Tls::Implicit ? "it refuses every client"
											    : "STARTTLS gets 454",
				  e.what());
	}
	auto ctx = tls_.find(i);
	tls_report_key(t.listen_index, ctx == tls_.end() ? 0 : ctx->second->key_id());
}

// Counts a client that implicit TLS listener idx refused for want of a
// context, and logs: the first at once, later ones at most once every
// REFUSALS_LOG_INTERVAL with how many since the last line, so that a
// local user looping on connect() cannot flood the log. flush: the
// listener has its context now; what was counted since is logged.
void SmtpServer::refused_without_tls(size_t idx, bool flush)
{
	Refusals& r = refused_.at(idx);
	time_t now = seconds_since_boot();
	if (!flush)
		r.count++;
	if (r.count == 0 || (!flush && r.logged && now - r.logged_at < REFUSALS_LOG_INTERVAL))
		return;
	const char* name = rt_.listeners[idx].name.c_str();
	if (!r.logged)
		log_warnx("smtp: refused a client on %s: its certificate did not load", name);
	else
		log_warnx("smtp: refused %u clients on %s in the last %lds: its certificate did not load", r.count,
			  name, (long)(now - r.logged_at));
	r = {now, 0, true};
}

// Writes pending output, starts TLS after a STARTTLS reply, closes a
// finished session, and sets the epoll interest: read only while the
// session has input room and is not waiting to flush a large reply
// (backpressure keeps memory flat). Bytes that OpenSSL decrypted ahead
// wait unseen by epoll: they are read here.
void SmtpServer::update(uint32_t id)
{
	auto it = conns_.find(id);
	if (it == conns_.end())
		return;
	Conn& c = it->second;
	Session& s = *c.session;
	if (c.handshaking) {
		c.watch.set_events(c.tls->wants_write() ? EPOLLOUT : EPOLLIN);
		return;
	}
	if (!flush_output(id, c))
		return;
	if (s.closing() && s.output().empty()) {
		close_conn(id);
		return;
	}
	if (s.starttls_wanted() && s.output().empty() && !c.tls) {
		start_tls(id, c);
		update(id);
		return;
	}
	bool room = c.greeted && !s.closing() && !c.input_ended && s.input_space().second > 0 &&
		    s.output().size() < 65536;
	if (room && c.tls && c.tls->pending()) {
		if (read_input(id, c))
			update(id);
		return;
	}
	uint32_t want = 0;
	if (room)
		want |= EPOLLIN;
	if (!s.output().empty() || (c.tls && c.tls->wants_write()))
		want |= EPOLLOUT;
	c.watch.set_events(want);
}

void SmtpServer::close_conn(uint32_t id)
{
	auth_line_leave(id);
	conns_.erase(id);
}

// An answer from the handler process for session m.peerid. It is decoded
// even when the session is gone: a malformed one breaks the protocol all
// the same.
void SmtpServer::handler_message(Imsg& m)
{
#ifdef LAIM_SECCOMP_TRIGGER
	// Test builds only: a subverted smtp process that reports a valid frame
	// from the handler, in words that carry a forged log line.
	if (test_lie_) {
		test_lie_ = false;
		throw ImsgProtocolError("made up\nlaimd[1]: forged line\x1b[2K\r");
	}
#endif
	StatusMsg st;
	DataOkMsg ok;
	if (m.type == IMSG_H_DATA_OK)
		ok = payload<DataOkMsg>(m);
	else
		st = payload<StatusMsg>(m);
	auto it = conns_.find(m.peerid);
	if (it == conns_.end()) {
		// What the handler holds for the session (a queue reservation, a
		// spool file) must be let go.
		handler_.send(IMSG_S_ABORT, m.peerid);
		return;
	}
	Session& s = *it->second.session;
	switch (m.type) {
	case IMSG_H_MAIL: s.mail_reply(st.status, st.text); break;
	case IMSG_H_RCPT: s.rcpt_reply(st.status); break;
	case IMSG_H_DATA_OK:
		s.set_client_user(ok.uid, ok.user);
		s.data_reply(BackendStatus::Ok, m.fd.release(), ok.queue_id);
		break;
	case IMSG_H_DATA_FAIL: s.data_reply(st.status, -1, ""); break;
	case IMSG_H_COMMIT: s.commit_reply(st.status); break;
	default: unexpected_imsg(m);
	}
	update(m.peerid);
}

// A message from the parent: a fresh handler channel, new settings, or
// the verdict on an AUTH.
void SmtpServer::parent_message(Imsg& m)
{
	switch (m.type) {
	case IMSG_P_HANDLER_CHANNEL:
		payload<NoPayload>(m);
		handler_.attach(std::move(m.fd));
		log_info("handler process is back");
		break;
	case IMSG_P_SMTP_CONF:
		configure(payload<SmtpConf>(m));
		log_debug("smtp settings reloaded");
		break;
	case IMSG_P_SMTP_TLS:
		set_tls(payload<SmtpTls>(m), true);
		break;
	case IMSG_P_AUTH: {
		AuthResultMsg r = payload<AuthResultMsg>(m);
		auto check = auth_checks_.extract(m.peerid);
		if (!check.empty())
			auth_guard_.checked(check.mapped().as);
		auto it = conns_.find(m.peerid);
		if (it != conns_.end()) {
			it->second.session->auth_reply(r.ok, r.bound, std::move(r.senders));
			update(m.peerid);
		} else if (!check.empty() && !r.ok) {
			// The client left before the verdict: a guess all the same.
			const AuthCheck& a = check.mapped();
			log_info("smtp: AUTH failed for user=%s from %s (client gone)", comment_name(a.user).c_str(),
				 a.address.c_str());
			auth_failure(a.address, a.as);
		}
		if (!check.empty())
			auth_line_next(auth_guard_.key(check.mapped().as));
		break;
	}
	case IMSG_P_CLIENT_UID:
		client_uid(m.peerid, payload<ClientUidMsg>(m));
		break;
	default:
		unexpected_imsg(m);
	}
}

// The configuration's part that smtp serves with: at start, and at each
// reload (sessions see the change, they hold settings_ by reference).
void SmtpServer::configure(const SmtpConf& conf)
{
	settings_.hostname = conf.hostname;
	settings_.ident = conf.ident;
	settings_.size_limit = conf.size_limit;
	settings_.hop_count_limit = conf.hop_count_limit;
	settings_.smtputf8 = conf.smtputf8;
	timeout_ = conf.timeout;
	max_sessions_ = conf.max_sessions;
	greeting_delay_ = conf.greeting_delay;
	auth_guard_.set_host_addresses(conf.host_addresses);
}

// Once per loop: delayed greetings, idle timeouts, the shutdown deadline.
void SmtpServer::tick()
{
	time_t now = seconds_since_boot();
	int64_t now_ms = monotonic_ms();
	for (auto it = conns_.begin(); it != conns_.end();) {
		uint32_t id = it->first;
		Conn& c = (it++)->second;
		if (c.handshaking && now_ms - c.idle_since_ms >= std::min<int64_t>(HANDSHAKE_TIMEOUT_MS, timeout_ * 1000LL)) {
			log_info("smtp: TLS handshake failed from %s: timed out", c.session->client().address.c_str());
			c.session->disconnected();
			close_conn(id);
			continue;
		}
		if (c.handshaking && shutting_down_) {
			// Nothing to finish before TLS: it would hold the stop for
			// the whole handshake timeout.
			log_info("smtp: TLS handshake from %s cut off by laimd's stop", c.session->client().address.c_str());
			c.session->disconnected();
			close_conn(id);
			continue;
		}
		if (c.handshaking)
			continue;
		// An AUTH in the line waits at most as long as a command may.
		if (c.auth_line_since_ms && now_ms - c.auth_line_since_ms >= static_cast<int64_t>(timeout_) * 1000) {
			auth_line_leave(id);
			c.session->auth_held("waited too long behind other checks of its address");
		}
		// While the session waits for the handler or the parent (a MAIL
		// in line for queue room, a commit, AUTH) the client waits too.
		if (c.session->waiting())
			c.idle_since_ms = now_ms;
		if (!c.greeted && now_ms >= c.greet_at_ms)
			greet(c);
		else if (c.auth_delay_until_ms && now_ms >= c.auth_delay_until_ms) {
			c.auth_delay_until_ms = 0;
			c.session->auth_delay_over();
		}
		else if (c.greeted && !c.session->waiting() && !c.session->closing() &&
			 now_ms - c.idle_since_ms >= static_cast<int64_t>(timeout_) * 1000)
			c.session->timeout();
		else if (c.session->closing() && now_ms - c.output_moved_ms >= static_cast<int64_t>(timeout_) * 1000) {
			// A client that reads none of its last replies.
			log_info("smtp: %s reads no replies: connection closed", c.session->client().address.c_str());
			close_conn(id);
			continue;
		} else if (shutting_down_ && now >= shutdown_deadline_) {
			std::string msg = "421 4.3.2 " + settings_.hostname + " Service shutting down\r\n";
			if (!c.tls && !c.session->closing())  // not in the clear into TLS, nor after a last reply
				(void)!write(c.fd.get(), msg.data(), msg.size());
			c.session->disconnected();
			close_conn(id);
			continue;
		}
		update(id);
	}
}

// SIGTERM: no new clients; idle sessions get 421 now, sessions in a
// transaction may finish it within SHUTDOWN_GRACE seconds.
void SmtpServer::begin_shutdown()
{
	shutting_down_ = true;
	shutdown_deadline_ = seconds_since_boot() + SHUTDOWN_GRACE;
	listening_.clear();
	for (Listener& l : rt_.listeners)
		l.fd.reset();
	for (auto it = conns_.begin(); it != conns_.end();) {
		uint32_t id = it->first;
		(it++)->second.session->shutdown();
		update(id);
	}
}

void SmtpServer::run()
{
	for (;;) {
		if (got_sigterm && !shutting_down_)
			begin_shutdown();
		if (shutting_down_ && conns_.empty()) {
			handler_.flush();
			log_debug("smtp process done");
			_exit(0);
		}
		int wait_ms = greeting_delay_ && greeting_delay_ < 1000 ? static_cast<int>(greeting_delay_ / 4) + 1 : 250;
		loop_.wait(wait_ms);
		tick();
	}
}

// Overwrites the strings of a YAML tree, keys and values.
void wipe_yaml(YamlNode& n)
{
	explicit_bzero(n.value.data(), n.value.size());
	for (YamlNode& item : n.items)
		wipe_yaml(item);
	for (auto& [key, value] : n.entries) {
		explicit_bzero(key.data(), key.size());
		wipe_yaml(value);
	}
}

// The network-facing process keeps no handler secret: the secret files'
// bytes, nor the config text and handler sections, which hold a webhook's
// inline token and headers. It needs neither: a reload brings it only
// its SmtpConf.
void forget_handler_config(Runtime& rt)
{
	rt.secrets.wipe();
	explicit_bzero(rt.config_text.data(), rt.config_text.size());
	std::string().swap(rt.config_text);
	for (HandlerSection& h : rt.cfg.handlers)
		wipe_yaml(h.options);
	std::vector<HandlerSection>().swap(rt.cfg.handlers);
}

}  // namespace

void smtp_main(Runtime& rt, UniqueFd parent_chan, UniqueFd handler_chan, UniqueFd key_chan)
{
	child_signals(&got_sigterm);
	forget_handler_config(rt);
	if (!rt.tls.empty())
		tls_init(std::move(key_chan));  // before the chroot: OpenSSL's config, the DRBG's seed
	sandbox_drop(rt.smtp_user, LAIM_EMPTY_DIR);
	// A session's 64 KiB data buffer goes at its end; with the default
	// threshold (128 KiB) eight sessions ending together gave the heap
	// back, and the next eight took it again: brk(2) 0.6 times a message.
	mallopt(M_TRIM_THRESHOLD, 1 << 20);
	SmtpServer server(rt, std::move(parent_chan), std::move(handler_chan));
	sandbox_seccomp_smtp();
	server.run();
}

}  // namespace laim
