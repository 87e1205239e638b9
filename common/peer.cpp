#include "common/peer.h"

#include <sys/epoll.h>

#include <algorithm>
#include <string>

#include "common/log.h"

namespace laim {

ImsgPeer::ImsgPeer(EventLoop& loop, UniqueFd fd, ImsgValidator valid, OnMessage on_message, OnLost on_lost)
	: loop_(loop), chan_(std::move(fd), valid), on_message_(std::move(on_message)), on_lost_(std::move(on_lost))
{
	watch_ = loop.watch(chan_.fd(), EPOLLIN, [this](uint32_t events) { on_event(events); });
}

ImsgPeer::OnLost ImsgPeer::fatal_loss(const char* peer)
{
	return [peer](const char* broken) {
		if (!broken)
			fatalx("%s went away", peer);
		fatalx("%s channel: %s", peer, broken);
	};
}

bool ImsgPeer::send(uint32_t type, uint32_t peerid, std::string_view payload, UniqueFd fd)
{
	chan_.compose(type, peerid, payload, fd.release());
	if (!batched_) {
		write_queued();
	} else if (!flush_queued_) {
		flush_queued_ = true;
		loop_.post([this, alive = alive_] {
			if (!*alive)
				return;
			flush_queued_ = false;
			write_queued();
		});
	}
	return !failed_;
}

void ImsgPeer::batch_io()
{
	batched_ = true;
	chan_.read_in_batches();
}

// Writes what is queued, as far as the socket takes it (a batched peer:
// what one wake-up of the loop sent, in as few calls).
void ImsgPeer::write_queued()
{
	if (!chan_.flush())
		failed_ = true;
	watch_output();
}

// Write readiness is watched only while output waits, or to have the loop
// report a failed write.
void ImsgPeer::watch_output()
{
	uint32_t events = EPOLLIN;
	if (failed_ || chan_.pending())
		events |= EPOLLOUT;
	watch_.set_events(events);
}

void ImsgPeer::on_event(uint32_t events)
{
	if (!failed_ && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !read_frames())
		return;
	if (failed_ || !chan_.flush())
		return lose(nullptr);
	watch_output();
}

// Reads and dispatches up to MAX_FRAMES frames. False when the peer was
// lost or destroyed meanwhile: then this must not be touched.
bool ImsgPeer::read_frames()
{
	std::shared_ptr<bool> alive = alive_;
	OnMessage dispatch = on_message_;  // the peer, and so on_message_, may go during the call
	for (int i = 0; i < MAX_FRAMES && !failed_; i++) {
		Imsg m;
		ImsgError err = ImsgError::None;
		switch (chan_.read(m, &err)) {
		case ImsgChannel::Read::Message:
			break;
		case ImsgChannel::Read::Again:
			return true;
		case ImsgChannel::Read::Closed:
			lose(nullptr);
			return false;
		case ImsgChannel::Read::Error:
			offense_ = chan_.take_refused();
			lose(err == ImsgError::None ? nullptr : imsg_strerror(err));
			return false;
		}
		std::string broken;
		try {
			dispatch(m);
		} catch (const ImsgProtocolError& e) {
			broken = e.what();
			imsg_encode(m.type, m.peerid, m.pid, m.data, offense_.record);
			offense_.record += chan_.last_mac();
			offense_.fd = std::move(m.fd);
		}
		if (!*alive)
			return false;
		if (!broken.empty()) {
			lose(broken.c_str());
			return false;
		}
	}
	return true;
}

void ImsgPeer::lose(const char* broken)
{
	watch_.reset();
	failed_ = true;
	OnLost lost = on_lost_;  // it may destroy the peer
	lost(broken);
}

SiblingChannel::SiblingChannel(EventLoop& loop, ImsgPeer& parent, const char* sibling, ImsgValidator valid,
			       ImsgPeer::OnMessage on_message, std::function<void()> on_drop)
	: loop_(loop), parent_(parent), sibling_(sibling), valid_(valid), on_message_(std::move(on_message)),
	  on_drop_(std::move(on_drop))
{
}

ImsgMacKey SiblingChannel::key_;

void SiblingChannel::set_key(const ImsgMacKey& key)
{
	key_ = key;
}

void SiblingChannel::attach(UniqueFd fd)
{
	drop();
	peer_ = std::make_unique<ImsgPeer>(loop_, std::move(fd), valid_, on_message_, [this](const char* broken) {
		if (broken)
			protocol_error(broken, peer_->take_offense());
		else
			drop();
	});
	peer_->seal_with(key_);
	peer_->batch_io();
}

void SiblingChannel::drop()
{
	if (!peer_)
		return;
	peer_.reset();
	on_drop_();
}

void SiblingChannel::protocol_error(const char* what, ImsgChannel::Refused offense)
{
	log_warnx("protocol error from the %s process: %s; asking the parent to restart it", sibling_, what);
	drop();
	PeerErrorMsg report{std::string(what).substr(0, PEER_ERROR_WHAT_MAX), std::move(offense.record)};
	report.frame.resize(std::min(report.frame.size(), PEER_ERROR_FRAME_MAX));
	bool with_fd = static_cast<bool>(offense.fd);
	parent_.send(with_fd ? IMSG_C_PEER_ERROR_FD : IMSG_C_PEER_ERROR, 0, encode(report), std::move(offense.fd));
}

bool SiblingChannel::send(uint32_t type, uint32_t peerid, std::string_view payload, UniqueFd fd)
{
	return peer_ && peer_->send(type, peerid, payload, std::move(fd));
}

}  // namespace laim
