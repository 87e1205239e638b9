// The spool: the durable half of the bounded queue (doc/architecture.md,
// "A message's way, and the spool").
//
//   SPOOL/queue/ID      being received or committed (mode 0700 until its
//                       commit returned, 0600 after), not yet handled
//   SPOOL/queue/ID.done the recipients its earlier rounds finished, when
//                       others wait for a retry
//   SPOOL/failed/ID     given up; SPOOL/failed/ID.reason says why
//   SPOOL/free/NAME     emptied files of removed messages, for reuse
//   SPOOL/offline/      dropped by sendmail while laimd is down
//   SPOOL/incoming/     files of earlier laim, removed at start; the
//                       restore of a file (recover()) writes it there
//
// A spool file is an envelope header written by the handler process,
// followed by the message exactly as the smtp process wrote it:
//
//   LAIM 1\n sum CRC\n id ID\n arrival SECONDS\n sender ADDR\n
//   rcpt ADDR\n ... [uid N\n] client ADDR\n helo NAME\n [auth USER\n]
//   [instance NAME\n] [offline FILE\n] \n MESSAGE...
//
// sum is the CRC-32 of MESSAGE in 8 hex digits, written at the commit
// ("--------" before). A queue file's mode says where its commit stands:
// 0700 from its creation until the commit's syncs have all returned, 0600
// after. Files of earlier laim may have a boot line (ignored) or no sum.
//
// SPOOL/journal (handler/journal.h) holds what the last commits made
// durable, until a checkpoint has synced their files.
//
// auth is the user an SMTP AUTH authenticated, when there was one.
// instance is set only on laim's own notices: the one handler instance
// they go to, routes bypassed. offline is set only on an offline import:
// the name of the file in offline/ the message came from.
//
// Envelope values never contain CR, LF or NUL (create() refuses them), so
// the first empty line ends the header whatever bytes the message holds.
#pragma once

#include <atomic>
#include <deque>
#include <initializer_list>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "handler/api/handler.h"
#include "handler/journal.h"

namespace laim {

// A spool file that cannot be used (bad header, unreadable); what() says why.
class SpoolError : public std::runtime_error {
 public:
	using std::runtime_error::runtime_error;
};

// A committed message in memory: read when small (a mapping would cost the
// threads of the handler process a TLB shootdown when it goes), mapped
// read-only when large (its headers read, in front of the mapping: see
// Spool::map_message); or the bytes the commit read.
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
	// The header parsed from data (the file's bytes), body_ set after it.
	void set_data(const std::string& id, std::string_view data);
	void* map_ = nullptr;
	size_t map_len_ = 0;
	std::shared_ptr<const std::string> read_;
	UniqueFd file_;
	off_t body_offset_ = 0;
	std::string_view body_;
	std::string sum_;
};

class Spool {
 public:
	// dir must exist with incoming/, queue/, failed/ (the parent makes
	// them, parent/spool.cpp).
	explicit Spool(std::string dir);

	const std::string& dir() const { return dir_; }

	// A fresh queue id: 10 upper-case hex digits, unused in failed/.
	std::string new_id();

	// What create() made: the header's length, and whether the file is a
	// recycled one, which may be longer than what is written into it
	// (zeros past that: no byte of the message it held is left).
	struct Created {
		size_t header_len = 0;
		bool recycled = false;
		size_t sum_offset = 0;  // where seal() writes the sum
	};
	// Creates queue/ID (O_EXCL, 0700: pending), or, unless fresh, renames
	// a recycled file from free/ to it (never over an existing file),
	// writes the envelope header (env.id must be set) and returns the fd
	// positioned after it, open for reading and writing without access
	// times (O_NOATIME: on a file system mounted relatime, the seal's read
	// would otherwise write the inode). Throws std::system_error (EEXIST:
	// queue/ID is there already; a file it made is removed again), or
	// std::invalid_argument for an envelope value holding CR, LF or NUL.
	UniqueFd create(const Envelope& env, Created* created = nullptr, bool fresh = false);

	// Commits a message that the handler process makes itself (an
	// offline import, a rate limit's alert) in one go: queue/ID, a fresh
	// file (a recycled one may still be open in the smtp process, which
	// wrote an earlier message into it; what comes through smtp it could
	// change anyway, this must stay out of its reach), with env's header
	// and the parts, synced, queue/ synced, committed. Returns the
	// message's size; throws, queue/ID removed, on failure.
	uint64_t store(const Envelope& env, std::initializer_list<std::string_view> parts);

	// The commit (doc/architecture.md, "The spool"). Step 1, per message:
	// the CRC-32 of the size bytes after the header of queue/ID into its
	// sum, through fd; with content, the whole file, sum included, into
	// *content too.
	void seal(const std::string& id, int fd, const Created& created, uint64_t size,
		  std::string* content = nullptr);
	// Step 1 instead for a file the journal copies through a buffer
	// (Journal::add_file): its sum is taken as the copy is, in one read.
	void seal_in_journal(const std::string& id, int fd, const Created& created, uint64_t size);
	// Step 2, all at once for a group: the journal's write and sync and,
	// for a message too large for it, its file's fdatasync and an fsync of
	// queue/. Any thread may call them.
	Journal* journal() { return journal_.get(); }  // none when it could not be made
	// Whether a queue file of file_size bytes may commit through the
	// journal (else with syncs of its own).
	bool journals(uint64_t file_size) const { return journal_ && file_size <= Journal::RECORD_MAX; }
	// Whether a queue file of file_size bytes is small: one the journal
	// does not hold has its committed mode synced before its 250, so
	// recover() removes one left pending without a record.
	static bool small_file(uint64_t file_size) { return file_size <= Journal::INLINE_MAX; }
	void sync_file(int fd);
	void sync_queue_dir();
	// Step 3, once the syncs returned: the file's mode says committed,
	// and with sync that is on disk too.
	void mark_committed(int fd, bool sync = false);
	// Every file the journal stands for is made durable on its own (a
	// syncfs of the spool's file system), and the journal emptied, unless
	// recover() left a message unjudged. On the committer, between
	// groups: when the journal is full, or when free/ waits for a
	// barrier; and at start.
	void checkpoint();
	bool wants_checkpoint(size_t group_bytes) const;

	// At start, before the queue loads: a pending file that cannot have
	// had its 250 is removed; after a stop of the system, each message the
	// journal holds is made whole in queue/ (restored from the journal
	// when torn or lost). Then a checkpoint. Logs what it changed. A
	// message it could not judge (a failing or full disk) is left as it
	// is for the next start: unjudged() until then.
	void recover();
	bool unjudged(const std::string& id) const { return unjudged_.count(id) != 0; }

	// Removes queue/ID of a transaction that never got its 250 (aborted,
	// or its commit failed); no error if missing.
	void discard(const std::string& id);
	// At start: removes everything in incoming/; returns how many.
	size_t clean_incoming();
	// Ids in queue/ (or sub = "failed"), oldest first by mtime.
	std::vector<std::string> list_queue(const char* sub = "queue") const;
	// Maps queue/ID (or sub/ID); throws SpoolError when missing or malformed.
	SpoolMessage load(const std::string& id, const char* sub = "queue") const;
	// Only its envelope, and in *size the message's size.
	Envelope load_envelope(const std::string& id, const char* sub, uint64_t* size) const;
	// The message from its file's bytes as the commit read them, when it
	// kept them (its first round needs no read of the file), else as
	// load(id). SpoolError when they do not parse.
	SpoolMessage load(const std::string& id, std::shared_ptr<const std::string> bytes) const;
	// Delivered: removes queue/ID, by moving it to free/ while it is at
	// most RECYCLE_MAX_SIZE bytes and fewer than MAX_FREE_FILES are kept.
	void remove(const std::string& id);
	static constexpr size_t MAX_FREE_FILES = 256;
	static constexpr off_t RECYCLE_MAX_SIZE = 64 * 1024;
	// Given up: writes failed/ID.reason, then moves queue/ID to failed/ID,
	// done for the journal as remove() is.
	void fail(const std::string& id, const std::string& reason);
	// failed/NAME.reason: reason written (each line escaped as the log
	// escapes it: a peer's words may be in it; throws), or its first line
	// read ("" when there is none).
	void write_reason(const std::string& name, const std::string& reason);
	std::string reason(const std::string& name) const;
	// queue/ID.done: what the rounds of a message still queued finished
	// (Queue writes and reads its lines): saved (replacing the last),
	// read ("" when there is none), removed with its message. At start,
	// progress_ids() lists them, so that those whose message is gone go
	// too.
	void save_progress(const std::string& id, const std::string& text);
	std::string load_progress(const std::string& id) const;
	void drop_progress(const std::string& id);
	std::set<std::string> progress_ids();

 private:
	std::string path(const char* sub, const std::string& id) const;
	UniqueFd open_message(const std::string& id, const char* sub, size_t* len) const;
	static SpoolMessage parse(const std::string& id, std::shared_ptr<const std::string> bytes);
	static char* map_message(const std::string& id, int fd, size_t len);
	void load_free_files();
	void load_failed_ids();
	void note_failed_id(const std::string& id);
	UniqueFd take_free_file(const std::string& id);
	bool recycle(const std::string& id);

	void recover_file(const std::string& id, const Journal::Record* r, bool same_boot);
	void restore(const std::string& id, const std::string& content);
	template <typename F>
	void barrier(F sync);

	std::string dir_;
	UniqueFd queue_dirfd_;
	std::unique_ptr<Journal> journal_;
	std::set<std::string> unjudged_;  // by recover(); read-only after
	unsigned char random_[255];  // new_id()'s pool: 5 bytes an id
	std::vector<uint64_t> failed_ids_;  // sorted: ids in failed/
	size_t random_used_ = sizeof random_;
	// Recycling saves the file system an inode and its blocks' allocation
	// and release per message (doc/architecture.md, "The spool"). A file
	// in free/ is reused only once a barrier (an fsync of queue/ or a
	// checkpoint) begun after its removal has returned: until then a crash
	// could bring back its old name in queue/, by then holding another
	// message.
	struct FreeFile {
		uint64_t ready_after;  // barriers that must have returned
		std::string name;
	};
	UniqueFd free_dirfd_;          // none: no free/, no recycling
	std::deque<FreeFile> free_;    // oldest first; the main thread's
	std::atomic<uint64_t> syncs_started_{0}, syncs_done_{0};
	std::atomic<size_t> removed_since_barrier_{0};  // moved to free/ since a barrier began
};

}  // namespace laim
