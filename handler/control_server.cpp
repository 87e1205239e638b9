#include "handler/control_server.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>

#include "common/clock.h"
#include "common/log.h"

namespace laim {

namespace {

constexpr time_t CONTROL_TIMEOUT = 5;       // seconds a client gets to send its line
constexpr time_t CONTROL_WAIT_TIMEOUT = 25; // ...and to get an answer that comes later (laimctl waits 30)
constexpr size_t CONTROL_MAX_CLIENTS = 32;  // connections at once...
constexpr size_t CONTROL_MAX_PER_UID = 4;   // ...and per local user

}  // namespace

ControlServer::ControlServer(EventLoop& loop, int listen_fd, ControlTarget& target)
	: loop_(loop), listen_fd_(listen_fd), target_(target)
{
	listen();
}

// Accepts clients again (at start, and after a pause).
void ControlServer::listen()
{
	if (listen_fd_ >= 0)
		listening_ = loop_.watch(listen_fd_, EPOLLIN, [this](uint32_t) { accept_clients(); });
}

// Admits the clients waiting on the socket, within the limits.
void ControlServer::accept_clients()
{
	for (int i = 0; i < 16; i++) {
		UniqueFd fd(accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
		if (!fd) {
			if (errno == EMFILE || errno == ENFILE) {
				// Out of descriptors: stop listening for a moment rather
				// than spin on a socket that stays readable.
				log_warn("control socket");
				listening_.reset();
				paused_until_ = seconds_since_boot() + 1;
			}
			return;
		}
		struct ucred cred;
		socklen_t len = sizeof cred;
		if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
			continue;
		// Every local user may connect: bound them all, and each one.
		size_t mine = 0;
		for (const auto& [n, c] : clients_)
			mine += c.uid == cred.uid;
		if (clients_.size() >= CONTROL_MAX_CLIENTS || mine >= CONTROL_MAX_PER_UID) {
			(void)!write(fd.get(), "ERR too many connections\n", 25);
			continue;
		}
		uint32_t n = next_client_++;
		Client& c = clients_[n];
		c.fd = std::move(fd);
		c.uid = cred.uid;
		c.started = seconds_since_boot();
		c.watch = loop_.watch(c.fd.get(), EPOLLIN, [this, n](uint32_t events) { client_event(n, events); });
	}
}

// Reads a client's request line; once it is complete (or as long as a
// line may be), writes the answer and closes the connection.
void ControlServer::client_event(uint32_t n, uint32_t events)
{
	auto it = clients_.find(n);
	if (it == clients_.end())
		return;
	Client& c = it->second;
	if (c.waiting) {
		if (events & (EPOLLHUP | EPOLLERR))
			clients_.erase(it);  // gone: its answer, when it comes, is dropped
		return;
	}
	if (c.out.empty() && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		char buf[512];
		ssize_t r = read(c.fd.get(), buf, sizeof buf);
		if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
			clients_.erase(it);
			return;
		}
		if (r > 0)
			c.in.append(buf, static_cast<size_t>(r));
		size_t nl = c.in.find('\n');
		if (nl == std::string::npos && c.in.size() < CONTROL_MAX_LINE)
			return;
		std::string now = control_answer(c.in, c.uid, target_,
						 [this, n](std::string later) { answer(n, std::move(later)); });
		if (now.empty() && c.out.empty()) {
			c.waiting = true;  // answer() writes it
			c.watch.set_events(0);
			return;
		}
		if (!now.empty())
			c.out = std::move(now);
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
	clients_.erase(it);
}

// An answer that came later, for client n if it is still there.
void ControlServer::answer(uint32_t n, std::string response)
{
	auto it = clients_.find(n);
	if (it == clients_.end())
		return;
	it->second.waiting = false;
	it->second.started = seconds_since_boot();  // CONTROL_TIMEOUT from now to write it
	it->second.out = std::move(response);
	it->second.watch.set_events(EPOLLOUT);
}

// Once per loop turn: resumes accepting after a pause, and ends clients
// that took longer than CONTROL_TIMEOUT (CONTROL_WAIT_TIMEOUT while an
// answer is still to come, which then says so).
void ControlServer::expire()
{
	time_t now = seconds_since_boot();
	if (paused_until_ && now >= paused_until_) {
		paused_until_ = 0;
		listen();
	}
	for (auto it = clients_.begin(); it != clients_.end();) {
		Client& c = it->second;
		if (c.waiting && now - c.started > CONTROL_WAIT_TIMEOUT)
			answer((it++)->first, "ERR no answer within " + std::to_string(CONTROL_WAIT_TIMEOUT) + " s\n");
		else if (!c.waiting && now - c.started > CONTROL_TIMEOUT)
			it = clients_.erase(it);
		else
			++it;
	}
}

}  // namespace laim
