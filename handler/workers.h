// A bounded pool of reusable threads: the workers of one handler
// instance. Threads start on demand, up to the pool's size, and wait for
// the next call instead of exiting, so a busy instance creates no thread
// per delivery.
#pragma once

#include <functional>
#include <memory>

#include "common/event_loop.h"

namespace laim {

class WorkerPool {
 public:
	explicit WorkerPool(unsigned size);
	// Idle threads exit now, busy ones after their call returns (a call
	// that hangs keeps its thread; nothing waits for it).
	~WorkerPool();
	WorkerPool(const WorkerPool&) = delete;
	WorkerPool& operator=(const WorkerPool&) = delete;

	// Runs task on an idle thread, starting one if fewer than size run.
	// The caller keeps at most size tasks in flight. Throws
	// std::system_error when no thread can be started (task not queued).
	void run(std::function<void()> task);
	unsigned size() const { return size_; }

 private:
	struct State;
	static void serve(std::shared_ptr<State> st);
	std::shared_ptr<State> st_;
	unsigned size_;
};

// File work a request needs that the handler process's main loop must
// not wait for, since every 250 waits for that loop (show failed reads
// two files per failed message): work runs on a pool thread, then done,
// with its result, on the loop's thread.
class Offload {
 public:
	Offload(EventLoop& loop, unsigned threads);
	template <class R>
	void run(std::function<R()> work, std::function<void(R)> done)
	{
		auto result = std::make_shared<R>();
		submit([work = std::move(work), result] { *result = work(); },
		       [done = std::move(done), result] { done(std::move(*result)); });
	}

 private:
	struct State;  // shared with the threads, which may outlive this
	void submit(std::function<void()> work, std::function<void()> done);
	void collect();
	std::shared_ptr<State> st_;
	WorkerPool pool_;
	EventLoop::Watch watch_;
};

}  // namespace laim
