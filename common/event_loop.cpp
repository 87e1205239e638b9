#include "common/event_loop.h"

#include <sys/epoll.h>

#include <cerrno>

#include "common/log.h"

namespace laim {

EventLoop::EventLoop() : ep_(epoll_create1(EPOLL_CLOEXEC))
{
	if (!ep_)
		fatal("epoll_create1");
}

void EventLoop::control(int op, int fd, uint64_t id, uint32_t events)
{
	struct epoll_event ev = {};
	ev.events = events;
	ev.data.u64 = id;
	if (epoll_ctl(ep_.get(), op, fd, &ev) == -1)
		fatal("epoll_ctl %s fd %d", op == EPOLL_CTL_ADD ? "add" : "mod", fd);
}

EventLoop::Watch EventLoop::watch(int fd, uint32_t events, Callback cb)
{
	Watch w;
	w.loop_ = this;
	w.fd_ = fd;
	w.id_ = next_id_++;
	w.events_ = events;
	w.added_ = events != 0;
	if (w.added_)
		control(EPOLL_CTL_ADD, fd, w.id_, events);
	callbacks_[w.id_] = std::make_shared<Callback>(std::move(cb));
	return w;
}

void EventLoop::run_posted()
{
	while (!posted_.empty()) {  // a function may post another
		running_.swap(posted_);
		for (auto& fn : running_)
			fn();
		running_.clear();
	}
}

void EventLoop::wait(int timeout_ms)
{
	run_posted();
	struct epoll_event evs[64];
	int n = epoll_wait(ep_.get(), evs, 64, timeout_ms);
	if (n == -1 && errno != EINTR)
		fatal("epoll_wait");
	for (int i = 0; i < n; i++) {
		// A copy: struct epoll_event is packed on x86-64, and find()
		// takes a reference, which must not point at a misaligned u64.
		uint64_t id = evs[i].data.u64;
		auto it = callbacks_.find(id);
		if (it == callbacks_.end())
			continue;  // unwatched by an earlier callback
		std::shared_ptr<Callback> cb = it->second;
		(*cb)(evs[i].events);
	}
	run_posted();
}

EventLoop::Watch& EventLoop::Watch::operator=(Watch&& o) noexcept
{
	if (this != &o) {
		reset();
		loop_ = std::exchange(o.loop_, nullptr);
		fd_ = o.fd_;
		id_ = o.id_;
		events_ = o.events_;
		added_ = o.added_;
	}
	return *this;
}

// A descriptor watched for nothing yet is added at its first events: a
// new connection costs one epoll_ctl, not two.
void EventLoop::Watch::set_events(uint32_t events)
{
	if (!loop_ || events == events_)
		return;
	events_ = events;
	loop_->control(added_ ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd_, id_, events);
	added_ = true;
}

void EventLoop::Watch::reset()
{
	if (!loop_)
		return;
	if (added_)
		epoll_ctl(loop_->ep_.get(), EPOLL_CTL_DEL, fd_, nullptr);
	loop_->callbacks_.erase(id_);
	loop_ = nullptr;
}

}  // namespace laim
