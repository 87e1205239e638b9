#include "handler/workers.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/log.h"

namespace laim {

// Shared by the pool and its threads, so that a thread still in a call
// when the pool goes (a reload, a timed-out call) has something to return to.
struct WorkerPool::State {
	std::mutex mutex;
	std::condition_variable wake;
	std::deque<std::function<void()>> tasks;
	unsigned threads = 0;
	unsigned idle = 0;
	bool closing = false;
};

WorkerPool::WorkerPool(unsigned size) : st_(std::make_shared<State>()), size_(size ? size : 1) {}

WorkerPool::~WorkerPool()
{
	std::lock_guard<std::mutex> lock(st_->mutex);
	st_->closing = true;
	st_->wake.notify_all();
}

// An idle thread is woken after the lock is released, so that it does not
// wake only to wait for the lock.
void WorkerPool::run(std::function<void()> task)
{
	std::unique_lock<std::mutex> lock(st_->mutex);
	st_->tasks.push_back(std::move(task));
	if (st_->idle >= st_->tasks.size() || st_->threads >= size_) {
		lock.unlock();
		st_->wake.notify_one();
		return;
	}
	try {
		std::thread(serve, st_).detach();
	} catch (...) {
		st_->tasks.pop_back();
		throw;
	}
	st_->threads++;
}

// A worker thread: runs tasks until the pool closes and none is left.
void WorkerPool::serve(std::shared_ptr<State> st)
{
	std::unique_lock<std::mutex> lock(st->mutex);
	for (;;) {
		while (st->tasks.empty() && !st->closing) {
			st->idle++;
			st->wake.wait(lock);
			st->idle--;
		}
		if (st->tasks.empty()) {
			st->threads--;
			return;
		}
		std::function<void()> task = std::move(st->tasks.front());
		st->tasks.pop_front();
		lock.unlock();
		task();
		task = nullptr;  // what it holds goes before the lock is taken again
		lock.lock();
	}
}

struct Offload::State {
	std::mutex mutex;
	std::vector<std::function<void()>> finished;  // the dones of work done
	UniqueFd notify{eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
};

Offload::Offload(EventLoop& loop, unsigned threads) : st_(std::make_shared<State>()), pool_(threads)
{
	if (!st_->notify)
		fatal("eventfd");
	watch_ = loop.watch(st_->notify.get(), EPOLLIN, [this](uint32_t) { collect(); });
}

// Throws std::system_error when no thread can be started.
void Offload::submit(std::function<void()> work, std::function<void()> done)
{
	pool_.run([st = st_, work = std::move(work), done = std::move(done)]() mutable {
		work();
		{
			std::lock_guard<std::mutex> lock(st->mutex);
			st->finished.push_back(std::move(done));
		}
		uint64_t one = 1;
		(void)!write(st->notify.get(), &one, sizeof one);
	});
}

void Offload::collect()
{
	uint64_t n;
	(void)!read(st_->notify.get(), &n, sizeof n);
	std::vector<std::function<void()>> done;
	{
		std::lock_guard<std::mutex> lock(st_->mutex);
		done.swap(st_->finished);
	}
	for (auto& fn : done)
		fn();
}

}  // namespace laim
