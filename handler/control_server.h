// The control socket's server in the handler process: laimctl and mailq
// connect, send one request line, get the answer control_answer() gives
// (handler/control.h) and are closed. Every local user may connect, so
// clients are bounded in number (in all and per uid), in time and in
// size; out of descriptors, the server stops accepting for a second
// rather than spin on a socket that stays readable.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <map>
#include <string>

#include "common/event_loop.h"
#include "common/fd.h"
#include "handler/control.h"

namespace laim {

class ControlServer {
 public:
	// listen_fd: the bound control socket (-1: none), served on loop.
	ControlServer(EventLoop& loop, int listen_fd, ControlTarget& target);
	void expire();

 private:
	// A laimctl/mailq client.
	struct Client {
		UniqueFd fd;
		EventLoop::Watch watch;
		uid_t uid = 0;
		std::string in, out;
		time_t started = 0;
		bool waiting = false;  // for an answer that comes later (test INSTANCE)
	};

	void listen();
	void accept_clients();
	void client_event(uint32_t n, uint32_t events);
	void answer(uint32_t n, std::string response);

	EventLoop& loop_;
	int listen_fd_;
	ControlTarget& target_;
	EventLoop::Watch listening_;
	std::map<uint32_t, Client> clients_;
	uint32_t next_client_ = 1;
	time_t paused_until_ = 0;  // after EMFILE: not accepting until then
};

}  // namespace laim
