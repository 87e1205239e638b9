// One event loop per process (redis's ae.c): every descriptor a process
// serves is watched here with its callback, and nothing else calls epoll.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/fd.h"

namespace laim {

class EventLoop {
 public:
	// Runs with the epoll events (EPOLLIN, EPOLLOUT, EPOLLHUP, ...) that
	// woke the descriptor.
	using Callback = std::function<void(uint32_t events)>;

	// One descriptor's place in the loop, left when the Watch is destroyed
	// or reset. Declare it after the UniqueFd it watches, so that it goes
	// first. Its callback may destroy it.
	class Watch {
	 public:
		Watch() = default;
		Watch(Watch&& o) noexcept { *this = std::move(o); }
		Watch& operator=(Watch&& o) noexcept;
		Watch(const Watch&) = delete;
		Watch& operator=(const Watch&) = delete;
		~Watch() { reset(); }

		// Changes what the descriptor is watched for (EPOLLIN, EPOLLOUT).
		void set_events(uint32_t events);
		void reset();
		explicit operator bool() const { return loop_ != nullptr; }

	 private:
		friend class EventLoop;
		EventLoop* loop_ = nullptr;
		int fd_ = -1;
		uint64_t id_ = 0;
		uint32_t events_ = 0;
		bool added_ = false;  // in the epoll set: not while watched for nothing
	};

	EventLoop();  // fatal when epoll is not to be had
	EventLoop(const EventLoop&) = delete;
	EventLoop& operator=(const EventLoop&) = delete;

	// Watches fd for events (0: for nothing until set_events(), not
	// even EPOLLHUP); cb runs from wait() until the Watch goes.
	[[nodiscard]] Watch watch(int fd, uint32_t events, Callback cb);
	// Waits up to timeout_ms for ready descriptors and runs their callbacks,
	// then what they posted.
	void wait(int timeout_ms);
	// Runs fn once, after the callbacks of this wake-up (nginx's posted
	// events), or, when posted outside them, before the loop next waits:
	// what the callbacks of one wake-up send goes out together.
	void post(std::function<void()> fn) { posted_.push_back(std::move(fn)); }

 private:
	void control(int op, int fd, uint64_t id, uint32_t events);
	void run_posted();

	UniqueFd ep_;
	// The epoll tag is a registration id, never reused: an event already
	// in hand for a descriptor unwatched meanwhile finds no callback, even
	// when its number went to a new descriptor. A callback is shared so
	// that it outlives its Watch while it runs.
	uint64_t next_id_ = 1;
	std::unordered_map<uint64_t, std::shared_ptr<Callback>> callbacks_;
	std::vector<std::function<void()>> posted_, running_;
};

}  // namespace laim
