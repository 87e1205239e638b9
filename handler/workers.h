// A bounded pool of reusable threads: the workers of one handler
// instance. Threads start on demand, up to the pool's size, and wait for
// the next call instead of exiting, so a busy instance creates no thread
// per delivery.
#pragma once

#include <functional>
#include <memory>

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

}  // namespace laim
