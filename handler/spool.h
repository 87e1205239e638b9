// The spool: the durable half of the bounded queue (doc/architecture.md,
// "A message's way, and the spool").
//
//   SPOOL/incoming/ID   being received; removed at start
//   SPOOL/queue/ID      committed (250 sent), not yet handled
//   SPOOL/failed/ID     given up; SPOOL/failed/ID.reason says why
//   SPOOL/free/NAME     emptied files of removed messages, for reuse
//   SPOOL/offline/      dropped by sendmail while laimd is down
//
// A spool file is an envelope header written by the handler process,
// followed by the message exactly as the smtp process wrote it:
//
//   LAIM 1\n [boot BOOTID\n] sum CRC\n id ID\n arrival SECONDS\n sender ADDR\n
//   rcpt ADDR\n ... [uid N\n] client ADDR\n helo NAME\n [auth USER\n]
//   [instance NAME\n] \n MESSAGE...
//
// boot is the kernel's boot id when the file was made. sum is the CRC-32
// of MESSAGE in 8 hex digits, written at the commit ("--------" before).
// A queue file's mode says where its commit stands: 0700 from its
// creation until the commit's syncs have all returned, 0600 after. Files
// of laim before boot and sum have neither and are 0600.
//
// auth is the user an SMTP AUTH authenticated, when there was one.
// instance is set only on laim's own notices: the one handler instance
// they go to, routes bypassed.
//
// Envelope values never contain CR, LF or NUL (create() refuses them), so
// the first empty line ends the header whatever bytes the message holds.
#pragma once

#include <atomic>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "handler/api/handler.h"

namespace laim {

// A spool file that cannot be used (bad header, unreadable); what() says why.
class SpoolError : public std::runtime_error {
 public:
	using std::runtime_error::runtime_error;
};

// A committed message in memory: read when small (a mapping would cost the
// threads of the handler process a TLB shootdown when it goes), mapped
// read-only when large.
class SpoolMessage {
 public:
	SpoolMessage() = default;
	SpoolMessage(SpoolMessage&&) noexcept;
	SpoolMessage& operator=(SpoolMessage&&) noexcept;
	~SpoolMessage();

	Envelope envelope;
	std::string_view body() const { return body_; }  // the message after the header
	// The file, open while a large message is mapped (else -1), and where
	// the body starts in it: for Message::write_to().
	int file() const { return file_.get(); }
	off_t body_offset() const { return body_offset_; }

 private:
	friend class Spool;
	void* map_ = nullptr;
	size_t map_len_ = 0;
	std::unique_ptr<char[]> read_;
	UniqueFd file_;
	off_t body_offset_ = 0;
	std::string_view body_;
	bool pending_ = false;  // mode 0700: its commit did not finish
	std::string boot_, sum_;
};

class Spool {
 public:
	// dir must exist with incoming/, queue/, failed/ (the parent makes
	// them, parent/spool.cpp).
	explicit Spool(std::string dir);

	const std::string& dir() const { return dir_; }

	// A fresh queue id: 10 upper-case hex digits, unused in failed/.
	std::string new_id() const;

	// What create() made: the header's length, and whether the file is a
	// recycled one, which may be longer than what is written into it
	// (zeros past that: no byte of the message it held is left).
	struct Created {
		size_t header_len = 0;
		bool recycled = false;
		size_t sum_offset = 0;  // where seal() writes the sum
	};
	// Creates incoming/ID (O_EXCL, 0700: pending), or renames a recycled file from
	// free/ to it, writes the envelope header (env.id must be set) and
	// returns the fd positioned after it, opened for writing. Throws
	// std::system_error, or std::invalid_argument for an envelope value
	// holding CR, LF or NUL.
	UniqueFd create(const Envelope& env, Created* created = nullptr);

	// Commits a message that the handler process makes itself (an
	// offline import, a rate limit's alert) in one go: incoming/ID with
	// env's header and the parts, synced, published, queue/ synced.
	// Returns the message's size; throws, incoming/ID removed, on failure.
	uint64_t store(const Envelope& env, std::initializer_list<std::string_view> parts);

	// The commit (doc/architecture.md, "The spool"). Step 1, per message:
	// the CRC-32 of the size bytes after the header of incoming/ID into
	// its sum, through fd.
	void seal(const std::string& id, int fd, const Created& created, uint64_t size);
	// Step 2, per message: move incoming/ID to queue/ID (never replacing
	// an existing file). Throws std::system_error.
	void publish(const std::string& id);
	// Step 3, all at once for a group: each file's fdatasync and one fsync
	// of queue/. Any thread may call them.
	void sync_file(int fd);
	void sync_queue_dir();
	// Step 4, once both syncs returned: the file's mode says committed.
	void mark_committed(int fd);
	// A published message whose sync failed: queue/ID goes.
	void unpublish(const std::string& id);

	// At start, for a queue file load() found pending (its commit cut off):
	// from this boot, laim stopped before the 250, so it is removed; from
	// another, the system stopped, maybe after the 250, so it is kept when
	// its sum matches and goes to failed/ when not.
	enum class Recovered { Committed, Removed, Kept, Failed };
	Recovered recover(const std::string& id, const SpoolMessage& m);

	// Removes incoming/ID (aborted transaction); no error if missing.
	void discard(const std::string& id);
	// At start: removes everything in incoming/; returns how many.
	size_t clean_incoming();
	// Ids in queue/ (or sub = "failed"), oldest first by mtime.
	std::vector<std::string> list_queue(const char* sub = "queue") const;
	// Maps queue/ID (or sub/ID); throws SpoolError when missing or malformed.
	SpoolMessage load(const std::string& id, const char* sub = "queue") const;
	// Delivered: removes queue/ID, by moving it to free/ while it is at
	// most RECYCLE_MAX_SIZE bytes and fewer than MAX_FREE_FILES are kept.
	void remove(const std::string& id);
	static constexpr size_t MAX_FREE_FILES = 256;
	static constexpr off_t RECYCLE_MAX_SIZE = 64 * 1024;
	// Given up: writes failed/ID.reason, then moves queue/ID to failed/ID.
	void fail(const std::string& id, const std::string& reason);

 private:
	std::string path(const char* sub, const std::string& id) const;
	void load_free_files();
	UniqueFd take_free_file(const std::string& to);
	bool recycle(const std::string& id);

	std::string dir_;
	std::string boot_id_;  // the kernel's, "" when unreadable
	UniqueFd queue_dirfd_;
	// Recycling saves the file system an inode and its blocks' allocation
	// and release per message (doc/architecture.md, "The spool"). A file
	// in free/ is reused only once an fsync of queue/ begun after its
	// removal has returned: until then a crash could bring back its old
	// name in queue/, by then holding another message.
	struct FreeFile {
		uint64_t ready_after;  // sync_queue_dir() calls that must have returned
		std::string name;
	};
	UniqueFd free_dirfd_;          // none: no free/, no recycling
	std::deque<FreeFile> free_;    // oldest first; the main thread's
	std::atomic<uint64_t> syncs_started_{0}, syncs_done_{0};
};

}  // namespace laim
