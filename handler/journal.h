// The commit journal (doc/architecture.md, "The spool"): SPOOL/journal, a
// file of fixed size whose blocks were written once when it was made, so
// that appending to it and its fdatasync change no metadata and cost the
// file system no journal commit of its own: one write and one cache flush
// make a whole group of messages durable.
//
// After a 64-byte header (magic, u64 generation, the kernel's boot id when
// the journal was last emptied, at the latest at laimd's start), records
// follow each other:
//
//   u32 magic | u32 length | u64 generation | char kind | char id[10] |
//   char 0 | u32 CRC-32 of the record with this field 0 | length bytes
//
// kind 'C': a committed message, its queue file's bytes inline; 'D': a
// message delivered and removed, or moved to failed/. (A message larger
// than RECORD_MAX has no record: its file is synced on its own.) A
// record counts only when its generation is the header's and its sum
// holds, and the first one that does not ends the journal. A checkpoint
// (Spool::checkpoint: every file the records stand for is synced)
// empties it by raising the generation.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"

namespace laim {

class Journal {
 public:
	// Bytes, header included. The journal is emptied by a checkpoint (a
	// syncfs, then its header synced) when full: with 1 MiB messages, 8
	// MiB took one every 7 messages, 1.7 cache flushes a message where
	// 32 MiB take 1.2.
	static constexpr uint64_t SIZE = 32 << 20;
	static constexpr size_t HEADER = 64, RECORD_HEAD = 32, BOOT_ID_MAX = HEADER - 16;
	// A queue file of at most INLINE_MAX bytes is copied into its record
	// from the committer's memory (the seal read it, and the queue keeps
	// those bytes for its delivery); one of at most RECORD_MAX through a
	// small buffer. A larger one is synced on its own: two commits of the
	// file system's journal, where a record costs one cache flush.
	static constexpr size_t INLINE_MAX = 64 * 1024, RECORD_MAX = 2 << 20;

	enum Kind : char { Commit = 'C', Done = 'D' };
	struct Record {
		Kind kind;
		std::string id;
		uint64_t at;      // a Commit's queue file: where its bytes are
		uint32_t length;  // in the journal, and how many
	};

	// Opens dir/journal and reads its records. One missing is made (its
	// SIZE bytes written and synced); one damaged (another size, no
	// header, not openable) is logged, moved aside to
	// dir/journal.damaged.TIME and a new one made. Throws
	// std::system_error.
	explicit Journal(const std::string& dir);

	// The records found at open, until reset().
	const std::vector<Record>& records() const { return found_; }
	// A Commit record's queue file, read from the journal when recovery
	// needs it (until reset()), so that a full journal is never all in
	// memory. Throws std::system_error.
	std::string content(const Record& r) const;
	// Whether they were written in this boot: then laimd ended, not the
	// system, and the page cache still holds every write.
	bool written_this_boot() const { return written_this_boot_; }
	// Whether it was made at this start: then it knows nothing of the
	// commits before (Spool::recover judges queue/ by the files alone).
	bool made() const { return made_; }

	// Any thread: a removed (or failed) message's record, written at once.
	void note_done(std::string_view id);
	// The committer: adds a record to the batch.
	void add(Kind kind, std::string_view id, std::string_view content = {});
	// A queue file's seal, made as write() copies the file: the CRC-32 of
	// its bytes from body on, as text() spells it, goes at sum_at, in the
	// file and in its copy. One read of the file then serves both sums.
	struct Seal {
		size_t body, sum_at;
		std::string (*text)(uint32_t crc);
	};
	// The committer: adds a Commit record whose content is the first len
	// bytes of the file fd, sealed; write() copies them, so fd stays open
	// until it returned.
	void add_file(std::string_view id, int fd, size_t len, const Seal& seal);
	// Whether the batch, with extra more bytes of records, still fits;
	// never after a failed reset(), until one succeeds.
	bool fits(size_t extra = 0) const;
	// Writes the batch after the last record (one pwrite); false when it
	// was empty. Then sync() makes it durable. Both throw
	// std::system_error.
	bool write();
	void sync();
	// Empties the journal: a new generation, in the header, synced.
	// Throws std::system_error.
	void reset();

 private:
	std::string check();
	void make(const std::string& dir);
	void read_records();
	void append(std::string& to, Kind kind, std::string_view id, std::string_view content) const;
	size_t append_head(std::string& to, Kind kind, std::string_view id, size_t len) const;
	struct FileContent;
	uint32_t copy_in(const FileContent& f, uint64_t off, const char* head);
	size_t batch_size() const;

	std::string path_;
	std::string boot_id_;  // this boot's
	bool written_this_boot_ = false;
	bool made_ = false;
	UniqueFd fd_;
	uint64_t generation_ = 0;    // changed by reset() under mutex_, read under it by others
	uint64_t end_ = HEADER;      // where the next record goes; under mutex_
	bool reset_failed_ = false;  // under mutex_
	// Room kept for removals' records between two groups; past it they
	// are dropped, and the next group checkpoints first.
	static constexpr size_t SLACK = 64 * 1024;

	std::vector<Record> found_;
	std::string batch_;          // the committer's
	// add_file()'s contents: each follows the first at bytes of batch_.
	struct FileContent {
		size_t at;
		int fd;
		size_t len;
		Seal seal;
	};
	std::vector<FileContent> batch_files_;
	mutable std::mutex mutex_;   // end_ and writes to the file
};

}  // namespace laim
