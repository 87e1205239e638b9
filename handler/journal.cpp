// The commit journal: see journal.h for its format and
// doc/architecture.md, "The spool", for its part in the commit.
#include "handler/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <zlib.h>

#include "common/log.h"
#include "handler/read_chunks.h"

namespace laim {

namespace {

constexpr char FILE_MAGIC[8] = {'L', 'A', 'I', 'M', 'J', 'R', 'N', '1'};
constexpr uint32_t RECORD_MAGIC = 0x4c4a5243;  // "CRJL" on disk
constexpr size_t ID_LEN = 10;
constexpr size_t CHUNK = 1 << 20;  // zeros written per call when making the file

[[noreturn]] void throw_errno(const std::string& what)
{
	throw std::system_error(errno, std::generic_category(), what);
}

void pwrite_all(int fd, const char* data, size_t len, uint64_t off, const std::string& path)
{
	while (len > 0) {
		ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			throw_errno("write " + path);
		data += n;
		len -= static_cast<size_t>(n);
		off += static_cast<uint64_t>(n);
	}
}

// The kernel's id of this boot ("" when unreadable).
std::string read_boot_id()
{
	char buf[64] = {};
	UniqueFd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
	ssize_t n = fd ? ::read(fd.get(), buf, sizeof buf - 1) : -1;
	std::string id(buf, n > 0 ? static_cast<size_t>(n) : 0);
	while (!id.empty() && id.back() == '\n')
		id.pop_back();
	return id.size() <= Journal::BOOT_ID_MAX ? id : "";
}

template <typename T>
T get(const char* p)
{
	T v;
	memcpy(&v, p, sizeof v);
	return v;
}

template <typename T>
void put(std::string& s, T v)
{
	s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

// A journal that is there but cannot serve (cannot be opened, not a
// regular file, of another size, without a journal's header) is moved
// aside for the administrator, never overwritten or removed, and a new
// one is made.
Journal::Journal(const std::string& dir) : path_(dir + "/journal"), boot_id_(read_boot_id())
{
	std::string damage;
	fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
	if (fd_) {
		damage = check();
		if (damage.empty()) {
			read_records();
			return;
		}
		fd_.reset();
	} else if (errno == EACCES || errno == EPERM || errno == ELOOP || errno == EISDIR) {
		damage = std::string("cannot be opened: ") + strerror(errno);
	} else if (errno != ENOENT) {
		throw_errno("open " + path_);
	}
	if (!damage.empty()) {
		std::string aside = path_ + ".damaged." + std::to_string(time(nullptr));
		if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, aside.c_str(), RENAME_NOREPLACE) < 0)
			throw_errno(path_ + " " + damage + ": rename to " + aside);
		log_warnx("%s %s: moved to %s; a new journal is made, and queue/ judged by its files alone", path_.c_str(),
			  damage.c_str(), aside.c_str());
	}
	make(dir);
}

// What makes the open journal unusable, or "".
std::string Journal::check()
{
	struct stat st;
	if (::fstat(fd_.get(), &st) < 0)
		throw_errno("fstat " + path_);
	if (!S_ISREG(st.st_mode))
		return "is not a regular file";
	if (static_cast<uint64_t>(st.st_size) != SIZE)
		return "has " + std::to_string(st.st_size) + " bytes, not " + std::to_string(SIZE);
	char magic[sizeof FILE_MAGIC];
	if (::pread(fd_.get(), magic, sizeof magic, 0) != static_cast<ssize_t>(sizeof magic))
		throw_errno("read " + path_);
	if (memcmp(magic, FILE_MAGIC, sizeof FILE_MAGIC) != 0)
		return "has no journal header";
	return "";
}

// A new journal, made as journal.new (what an earlier start left of one
// is replaced) and written whole with zeros: blocks allocated and written
// now are never metadata to a later append. Its header synced, it is
// named journal and the spool's directory synced. What it took of a full
// disk is given back when that fails.
void Journal::make(const std::string& dir)
{
	std::string fresh = path_ + ".new";
	fd_ = UniqueFd(::open(fresh.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
	if (!fd_)
		throw_errno("create " + fresh);
	try {
		std::string zeros(CHUNK, '\0');
		for (uint64_t off = 0; off < SIZE; off += CHUNK)
			pwrite_all(fd_.get(), zeros.data(), CHUNK, off, fresh);
		reset();
		if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) < 0)
			throw_errno("rename " + fresh + " to " + path_);
		if (int err = fsync_dir(dir.c_str()))
			throw std::system_error(err, std::generic_category(), "fsync " + dir);
	} catch (...) {
		::unlinkat(AT_FDCWD, fresh.c_str(), 0);
		throw;
	}
	made_ = true;
}

// The records of the header's generation, up to the first that is torn,
// stale or not a record.
void Journal::read_records()
{
	char head[HEADER];
	if (::pread(fd_.get(), head, HEADER, 0) != static_cast<ssize_t>(HEADER))
		throw_errno("read " + path_);
	generation_ = get<uint64_t>(head + 8);
	std::string boot(head + 16, strnlen(head + 16, BOOT_ID_MAX));
	written_this_boot_ = !boot_id_.empty() && boot == boot_id_;
	std::string rec;
	for (end_ = HEADER; end_ + RECORD_HEAD <= SIZE;) {
		rec.resize(RECORD_HEAD);
		if (::pread(fd_.get(), rec.data(), RECORD_HEAD, static_cast<off_t>(end_)) != static_cast<ssize_t>(RECORD_HEAD))
			throw_errno("read " + path_);
		uint32_t len = get<uint32_t>(rec.data() + 4);
		if (get<uint32_t>(rec.data()) != RECORD_MAGIC || get<uint64_t>(rec.data() + 8) != generation_ ||
		    len > SIZE - end_ - RECORD_HEAD)
			break;
		rec.resize(RECORD_HEAD + len);
		if (::pread(fd_.get(), rec.data() + RECORD_HEAD, len, static_cast<off_t>(end_ + RECORD_HEAD)) !=
		    static_cast<ssize_t>(len))
			throw_errno("read " + path_);
		uint32_t sum = get<uint32_t>(rec.data() + 28);
		memset(rec.data() + 28, 0, 4);
		if (sum != crc32(0, reinterpret_cast<const Bytef*>(rec.data()), static_cast<uInt>(rec.size())))
			break;
		found_.push_back({static_cast<Kind>(rec[16]), rec.substr(17, ID_LEN), end_ + RECORD_HEAD, len});
		end_ += rec.size();
	}
}

std::string Journal::content(const Record& r) const
{
	std::string out(r.length, '\0');
	if (::pread(fd_.get(), out.data(), out.size(), static_cast<off_t>(r.at)) != static_cast<ssize_t>(out.size()))
		throw_errno("read " + path_);
	return out;
}

// A record's head, its sum still 0, after to; returns where it starts.
size_t Journal::append_head(std::string& to, Kind kind, std::string_view id, size_t len) const
{
	if (id.size() != ID_LEN || len > SIZE)
		throw std::invalid_argument("journal record for " + std::string(id) + ": bad id or size");
	size_t start = to.size();
	put<uint32_t>(to, RECORD_MAGIC);
	put<uint32_t>(to, static_cast<uint32_t>(len));
	put<uint64_t>(to, generation_);
	to += static_cast<char>(kind);
	to += id;
	to += '\0';
	put<uint32_t>(to, 0);
	return start;
}

void Journal::append(std::string& to, Kind kind, std::string_view id, std::string_view content) const
{
	size_t start = append_head(to, kind, id, content.size());
	to += content;
	uint32_t sum = crc32(0, reinterpret_cast<const Bytef*>(to.data() + start), static_cast<uInt>(to.size() - start));
	memcpy(to.data() + start + 28, &sum, sizeof sum);
}

// Written at once (not synced): the page cache keeps it across the end
// of laimd, so only a stop of the system can bring the message back. The
// record is made under the lock, so its generation is the one of the
// records it follows, also while a reset() runs.
void Journal::note_done(std::string_view id)
{
	std::string rec;
	std::lock_guard<std::mutex> lock(mutex_);
	append(rec, Done, id, {});
	if (end_ + rec.size() > SIZE)
		return;  // dropped: at worst delivered twice, after a stop of the system
	pwrite_all(fd_.get(), rec.data(), rec.size(), end_, path_);
	end_ += rec.size();
}

void Journal::add(Kind kind, std::string_view id, std::string_view content)
{
	append(batch_, kind, id, content);
}

void Journal::add_file(std::string_view id, int fd, size_t len, const Seal& seal)
{
	if (seal.body > len || seal.sum_at + seal.text(0).size() > seal.body)
		throw std::invalid_argument("journal record for " + std::string(id) + ": bad seal");
	append_head(batch_, Commit, id, len);
	batch_files_.push_back({batch_.size(), fd, len, seal});
}

// The bytes the batch's records take, the files' contents included.
size_t Journal::batch_size() const
{
	size_t n = batch_.size();
	for (const FileContent& f : batch_files_)
		n += f.len;
	return n;
}

bool Journal::fits(size_t extra) const
{
	std::lock_guard<std::mutex> lock(mutex_);
	return !reset_failed_ && end_ + batch_size() + extra + SLACK <= SIZE;
}

// A batch that does not fit is refused whole: the caller checkpoints
// first (fits()), so this is a bound, not a path. Records are written
// under the lock and end_ moves only past what was written, so no record
// ever follows a gap (which would end the journal before it).
bool Journal::write()
{
	size_t size = batch_size();
	std::string batch = std::exchange(batch_, {});
	std::vector<FileContent> files = std::exchange(batch_files_, {});
	if (size == 0)
		return false;
	std::lock_guard<std::mutex> lock(mutex_);
	if (end_ + size > SIZE)
		throw std::system_error(ENOSPC, std::generic_category(), "write " + path_ + ": journal full");
	uint64_t off = end_;
	size_t from = 0;
	for (const FileContent& f : files) {
		// The content first: its record's sum goes into the head.
		char* head = batch.data() + f.at - RECORD_HEAD;
		uint64_t content = off + (f.at - from);
		uint32_t sum = copy_in(f, content, head);
		memcpy(head + 28, &sum, sizeof sum);
		pwrite_all(fd_.get(), batch.data() + from, f.at - from, off, path_);
		off = content + f.len;
		from = f.at;
	}
	pwrite_all(fd_.get(), batch.data() + from, batch.size() - from, off, path_);
	end_ += size;
	return true;
}

// f's file, into the journal at off, sealed; returns its record's sum,
// of head (its sum 0) and the content. Both sums are taken of what was
// copied, in one read: the smtp process still holds the file, and a
// record whose sum disagreed with its content would end the journal for
// every record after it. The file's header is kept aside until its sum
// is known; the record's sum joins the header's CRC and the body's.
uint32_t Journal::copy_in(const FileContent& f, uint64_t off, const char* head)
{
	std::string header;
	uLong body = crc32(0, nullptr, 0);
	uint64_t at = 0;
	read_chunks(f.fd, 0, f.len, "a queue file for " + path_, [&](std::string_view chunk) {
		pwrite_all(fd_.get(), chunk.data(), chunk.size(), off + at, path_);
		size_t in_header = at < f.seal.body ? std::min<size_t>(chunk.size(), f.seal.body - at) : 0;
		header.append(chunk.substr(0, in_header));
		body = crc32(body, reinterpret_cast<const Bytef*>(chunk.data() + in_header),
			     static_cast<uInt>(chunk.size() - in_header));
		at += chunk.size();
	});
	std::string sum = f.seal.text(static_cast<uint32_t>(body));
	header.replace(f.seal.sum_at, sum.size(), sum);
	pwrite_all(fd_.get(), sum.data(), sum.size(), off + f.seal.sum_at, path_);
	pwrite_all(f.fd, sum.data(), sum.size(), f.seal.sum_at, "the sum of a queue file for " + path_);
	uLong crc = crc32(0, reinterpret_cast<const Bytef*>(head), RECORD_HEAD);
	crc = crc32(crc, reinterpret_cast<const Bytef*>(header.data()), static_cast<uInt>(header.size()));
	return static_cast<uint32_t>(crc32_combine(crc, body, static_cast<z_off_t>(f.len - f.seal.body)));
}

void Journal::sync()
{
	if (::fdatasync(fd_.get()) < 0)
		throw_errno("fdatasync " + path_);
}

// The new generation counts only once its header is on disk: until then
// records keep the old one. After a failed reset the header on disk may
// say either, so no record is trusted to it (fits() is false) until a
// reset succeeds. The lock is not held across the sync, so that a
// removal (note_done(), on the main loop) never waits for the disk: its
// record meanwhile follows the old records, in their generation, and
// counts only if the new header never reaches the disk.
void Journal::reset()
{
	std::string head(FILE_MAGIC, sizeof FILE_MAGIC);
	put<uint64_t>(head, generation_ + 1);
	head += boot_id_;
	head.resize(HEADER, '\0');
	{
		std::lock_guard<std::mutex> lock(mutex_);
		reset_failed_ = true;
		pwrite_all(fd_.get(), head.data(), head.size(), 0, path_);
	}
	sync();
	std::lock_guard<std::mutex> lock(mutex_);
	reset_failed_ = false;
	generation_++;
	end_ = HEADER;
	found_.clear();
}

}  // namespace laim
