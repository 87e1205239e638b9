// imsg: framed messages between laim's processes (doc/architecture.md,
// "Channels and messages").
//
// A frame is a 16-byte header {uint32 type, uint32 len (header included),
// uint32 peerid, uint32 pid} in host byte order, then len - 16 bytes of
// payload (at most IMSG_MAX_PAYLOAD), optionally with one fd attached by
// SCM_RIGHTS. The channels are SOCK_SEQPACKET socketpairs: every frame is
// one record, so a record that is short, longer than its header says,
// oversized, of an unknown type, or with an fd its type does not carry is
// a protocol error. Payloads are built with ImsgWriter and read with
// ImsgReader, which is just as strict (truncated field, trailing bytes),
// in the encode/decode pair of each message type (common/proto.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/fd.h"

typedef struct _GHmac GHmac;  // <glib.h>

namespace laim {

constexpr size_t IMSG_HEADER_SIZE = 16;
constexpr size_t IMSG_MAX_PAYLOAD = 16384;

// The smtp<->handler channel's frames carry a MAC trailer after the
// record: HMAC-SHA256 with the sender's key (the parent draws one per
// child at each fork), truncated. The receiver strips it unread; only the
// parent, which holds both keys, checks it when a child reports a frame
// (doc/architecture.md, "Channels and messages").
constexpr size_t IMSG_MAC_SIZE = 16;
using ImsgMacKey = std::array<uint8_t, 32>;
// The MAC of a record (header + payload) and the descriptor that came with
// it (-1: none; else its file's identity, st_dev and st_ino).
std::string imsg_mac(const ImsgMacKey& key, std::string_view record, int fd);

// HMAC-SHA256 keyed once, for a channel that seals every frame. GLib's
// GHmac, not OpenSSL's: OpenSSL 3 reaches HMAC only through its provider
// machinery, whose first use initialises the default provider's tables
// in each process (about 2 MiB of the tree's PSS, for a few hashes).
class ImsgMac {
 public:
	ImsgMac() = default;  // unkeyed: the channel is not sealed
	explicit ImsgMac(const ImsgMacKey& key) { set_key(key); }
	~ImsgMac();
	void set_key(const ImsgMacKey& key);
	explicit operator bool() const { return keyed_ != nullptr; }
	ImsgMac(ImsgMac&& o) noexcept : keyed_(o.keyed_) { o.keyed_ = nullptr; }
	ImsgMac& operator=(ImsgMac&&) = delete;
	// Appends the MAC of record and fd (as imsg_mac() defines it) to out.
	void append(std::string_view record, int fd, std::string& out);

 private:
	GHmac* keyed_ = nullptr;  // the key's inner and outer states, copied per MAC
};

struct Imsg {
	uint32_t type = 0;
	uint32_t peerid = 0;
	uint32_t pid = 0;
	std::string data;  // payload
	UniqueFd fd;       // attached descriptor, if any
};

enum class ImsgError {
	None,
	Truncated,   // record shorter than the header or than its len
	Oversized,   // len or record larger than header + IMSG_MAX_PAYLOAD
	Trailing,    // record longer than its len
	UnknownType, // type rejected by the channel's validator
	BadFd,       // fd missing where the type needs one, or present where not
};
const char* imsg_strerror(ImsgError e);

// Which types a channel accepts, and whether each carries an fd.
struct ImsgTypeInfo {
	bool known = false;
	bool with_fd = false;
};
using ImsgValidator = ImsgTypeInfo (*)(uint32_t type);

// Decodes one record (header + payload) strictly; fd is the descriptor
// received with it or -1 (ownership passes to out on success only).
ImsgError imsg_decode(const uint8_t* rec, size_t n, int fd, ImsgValidator valid, Imsg& out);
// Encodes a frame's header and payload into out.
void imsg_encode(uint32_t type, uint32_t peerid, uint32_t pid, std::string_view payload, std::string& out);

// One end of a SOCK_SEQPACKET socketpair, non-blocking. The processes
// serve theirs through ImsgPeer (common/peer.h).
class ImsgChannel {
 public:
	ImsgChannel(UniqueFd fd, ImsgValidator valid);
	ImsgChannel(ImsgChannel&& o) noexcept;
	ImsgChannel& operator=(ImsgChannel&&) = delete;
	~ImsgChannel();
	int fd() const { return fd_.get(); }

	// The smtp<->handler channel's ends: every frame sent carries a MAC
	// with key, every frame read has its trailer stripped before decoding.
	void seal_with(const ImsgMacKey& key);
	// The trailer of the last frame read (sealed channels only).
	const std::string& last_mac() const { return last_mac_; }

	// Queues a frame (fd: attached and closed after sending, or -1).
	void compose(uint32_t type, uint32_t peerid, std::string_view payload, int fd = -1);
	// Sends queued frames, up to SEND_BATCH in one call; false on a fatal
	// socket error (peer gone).
	bool flush();
	bool pending() const { return !out_.empty(); }

	enum class Read { Message, Again, Closed, Error };
	// Receives one frame: Message (in msg), Again (nothing now), Closed
	// (peer closed), or Error (*err says which decoding rule it broke).
	Read read(Imsg& msg, ImsgError* err);
	// From now on read() takes up to READ_BATCH records with one call
	// and hands them out one by one (a busy channel: common/peer.h).
	void read_in_batches();

	// For a thread that waits on its channel outside any event loop (the
	// mailbox and command clients): sends everything queued, waiting up to
	// timeout_ms for room each time; false when the peer is gone or stuck.
	bool flush_wait(int timeout_ms);
	// Waits until deadline (monotonic_ms()) for one frame, as read()
	// returns it; Again when the deadline passed first.
	Read read_wait(Imsg& msg, int64_t deadline, ImsgError* err);

	// The record the last read() refused (Error) as it came, and the first
	// descriptor that came with it: what a sibling reports to the parent.
	struct Refused {
		std::string record;
		UniqueFd fd;
	};
	Refused take_refused() { return std::move(refused_); }

 private:
	static constexpr size_t SEND_BATCH = 16;
	static constexpr unsigned READ_BATCH = 8;
	struct Frame {
		std::string bytes;
		UniqueFd fd;
	};
	struct Batch;  // records received together, in imsg.cpp
	Read take(const uint8_t* rec, size_t n, int flags, std::vector<UniqueFd>& fds, Imsg& msg,
		  ImsgError* err);
	Read read_batched(Imsg& msg, ImsgError* err);

	UniqueFd fd_;
	ImsgValidator valid_;
	std::deque<Frame> out_;
	Refused refused_;
	ImsgMac mac_;  // keyed: the channel is sealed
	std::string last_mac_;
	Batch* batch_ = nullptr;  // owned; read_in_batches()
};

// Payload builder: fixed-width integers and length-prefixed strings.
class ImsgWriter {
 public:
	ImsgWriter& u32(uint32_t v);
	ImsgWriter& u64(uint64_t v);
	ImsgWriter& str(std::string_view s);
	const std::string& data() const { return buf_; }

 private:
	std::string buf_;
};

// Strict payload reader: every get fails on truncation; done() fails when
// bytes are left over. A failed reader stays failed.
class ImsgReader {
 public:
	explicit ImsgReader(std::string_view data) : d_(data) {}
	bool u32(uint32_t& v);
	bool u64(uint64_t& v);
	bool str(std::string& s);
	bool done() const { return ok_ && d_.empty(); }
	bool ok() const { return ok_; }

 private:
	bool take(void* p, size_t n);
	std::string_view d_;
	bool ok_ = true;
};

}  // namespace laim
