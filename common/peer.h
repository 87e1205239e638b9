// An imsg channel served by the event loop (OpenSMTPD's mproc): the one
// way laim's processes read and write their channels to each other. The
// command client's synchronous channels (handler/command_client.cpp) are
// the one exception: delivery threads wait on them outside any loop.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "common/event_loop.h"
#include "common/imsg.h"
#include "common/proto.h"

namespace laim {

// Each wake-up reads at most MAX_FRAMES frames, checked by the channel's
// validator, and hands each to the one dispatch callback; output the
// socket cannot take yet waits for write readiness. When the channel
// closes, fails or breaks the protocol (a bad frame, or an
// ImsgProtocolError thrown by the dispatch), the lost callback runs once
// and the peer leaves the loop; either callback may destroy the peer.
class ImsgPeer {
 public:
	static constexpr int MAX_FRAMES = 256;
	using OnMessage = std::function<void(Imsg&)>;
	// broken: nullptr when the channel closed or failed, else the rule the
	// peer broke.
	using OnLost = std::function<void(const char* broken)>;

	ImsgPeer(EventLoop& loop, UniqueFd fd, ImsgValidator valid, OnMessage on_message, OnLost on_lost);
	~ImsgPeer() { *alive_ = false; }
	ImsgPeer(const ImsgPeer&) = delete;
	ImsgPeer& operator=(const ImsgPeer&) = delete;

	// Queues a frame (with fd, closed once sent) and writes what the socket
	// takes now; false when the channel failed (the loop then reports it
	// lost). A lost peer still sends, as well as its socket allows.
	bool send(uint32_t type, uint32_t peerid, std::string_view payload = {}, UniqueFd fd = UniqueFd());
	// Writes what is queued, for a process about to exit.
	bool flush() { return chan_.flush(); }
	bool pending() const { return chan_.pending(); }
	// Once the peer broke the protocol: the frame that broke it (a
	// refused record, or one whose dispatch threw), with its descriptor.
	ImsgChannel::Refused take_offense() { return std::move(offense_); }
	// MACs what it sends with key, strips the trailer of what it reads.
	void seal_with(const ImsgMacKey& key) { chan_.seal_with(key); }
	// For a busy channel (smtp<->handler): reads come in batches
	// (recvmmsg), and what the loop's callbacks send during one wake-up
	// goes out in one call (sendmmsg) once they ran, rather than a system
	// call for each frame each way.
	void batch_io();

	// The lost callback for a trusted peer (a child's parent): nothing can
	// go on without it, so losing it ends this process.
	static OnLost fatal_loss(const char* peer);

 private:
	void on_event(uint32_t events);
	void write_queued();
	bool read_frames();
	void lose(const char* broken);
	void watch_output();

	EventLoop& loop_;
	ImsgChannel chan_;
	EventLoop::Watch watch_;
	OnMessage on_message_;
	OnLost on_lost_;
	bool failed_ = false;  // a write failed: the loop reports the loss
	bool batched_ = false;       // batch_io()
	bool flush_queued_ = false;  // write_queued() is posted to the loop
	ImsgChannel::Refused offense_;
	std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The channel between the smtp and handler processes, from either end.
// The parent hands out a fresh one whenever it restarts one of them. A
// sibling that breaks the protocol is broken or subverted: its channel is
// dropped and the parent asked to end it (doc/architecture.md,
// "Channels and messages").
class SiblingChannel {
 public:
	// sibling names the other process in logs; on_drop lets go of what was
	// in progress with it.
	SiblingChannel(EventLoop& loop, ImsgPeer& parent, const char* sibling, ImsgValidator valid,
		       ImsgPeer::OnMessage on_message, std::function<void()> on_drop);
	SiblingChannel(const SiblingChannel&) = delete;
	SiblingChannel& operator=(const SiblingChannel&) = delete;

	// This process's key, which MACs every frame it sends its sibling (the
	// parent sets it in the child it forks; common/imsg.h).
	static void set_key(const ImsgMacKey& key);
	// Serves fd from now on, dropping the channel in use first.
	void attach(UniqueFd fd);
	// Forgets the sibling's channel (closed, failed, or broken).
	void drop();
	// False when there is no channel or it failed.
	bool send(uint32_t type, uint32_t peerid, std::string_view payload = {}, UniqueFd fd = UniqueFd());
	bool flush() { return peer_ && peer_->flush(); }
	explicit operator bool() const { return peer_ != nullptr; }

 private:
	// Logs what the sibling did, drops its channel and asks the parent to
	// end it, forwarding the offending frame for the parent to judge.
	void protocol_error(const char* what, ImsgChannel::Refused offense);

	EventLoop& loop_;
	ImsgPeer& parent_;
	const char* sibling_;
	ImsgValidator valid_;
	ImsgPeer::OnMessage on_message_;
	std::function<void()> on_drop_;
	std::unique_ptr<ImsgPeer> peer_;
	static ImsgMacKey key_;
};

}  // namespace laim
