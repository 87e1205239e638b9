// The spool: one file per committed message, sealed with its sum, renamed
// into queue/ and made durable by one barrier, the journal's sync, before
// the smtp process may answer 250. See spool.h for the file format and
// what a file's mode says, journal.h for the journal.
#include "handler/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <zlib.h>

#include "common/log.h"
#include "handler/read_chunks.h"

namespace laim {

namespace {

constexpr size_t ID_LEN = 10;
constexpr size_t READ_LIMIT = 256 * 1024;  // larger messages are mapped
constexpr size_t MAPPED_HEAD_READ = 16 * 1024;  // of a mapped one, read (map_message)
constexpr std::string_view MAGIC = "LAIM 1";
constexpr std::string_view SUM_PENDING = "--------";  // 8 hex digits at the commit
// The mode bits of a queue file whose commit has not finished.
constexpr mode_t MODE_PENDING = 0700, MODE_COMMITTED = 0600;

[[noreturn]] void throw_errno(const std::string& what)
{
	throw std::system_error(errno, std::generic_category(), what);
}

// crc (zlib's CRC-32) carried over bytes, which may exceed the 4 GiB
// one crc32() call takes.
uLong crc_add(uLong crc, std::string_view bytes)
{
	for (size_t at = 0; at < bytes.size(); at += 1 << 30)
		crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at),
			    static_cast<uInt>(std::min<size_t>(bytes.size() - at, 1 << 30)));
	return crc;
}

// CRC-32 of len bytes of fd from offset.
uint32_t crc_of_range(int fd, off_t offset, uint64_t len, const std::string& what)
{
	uLong crc = crc32(0, nullptr, 0);
	read_chunks(fd, offset, len, what, [&crc](std::string_view chunk) { crc = crc_add(crc, chunk); });
	return static_cast<uint32_t>(crc);
}

std::string sum_text(uint32_t crc)
{
	char hex[9];
	snprintf(hex, sizeof hex, "%08x", crc);
	return hex;
}

// The header's sum of a message in memory.
std::string sum_of(std::string_view message)
{
	return sum_text(static_cast<uint32_t>(crc_add(crc32(0, nullptr, 0), message)));
}

// A queue id is exactly what new_id() makes: 10 upper-case hex digits.
// Checking it before building a path keeps "../x" out of the spool.
bool valid_id(std::string_view id)
{
	return id.size() == ID_LEN && std::all_of(id.begin(), id.end(), [](char c) {
		       return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
	       });
}

// A valid id's 40 bits, as a number.
uint64_t id_number(std::string_view id)
{
	uint64_t n = 0;
	std::from_chars(id.data(), id.data() + id.size(), n, 16);
	return n;
}

void check_id(const std::string& id)
{
	if (!valid_id(id))
		throw std::invalid_argument("id: not a queue id: \"" + id + "\"");
}

// Envelope values go one per header line: CR, LF or NUL would let a
// value end the header early or forge a key.
void check_value(const char* field, std::string_view value)
{
	if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
		throw std::invalid_argument(std::string(field) + ": CR, LF or NUL in envelope value");
}

// The envelope header of spool.h, blank line included; *sum_offset is
// where the sum's digits go.
std::string format_header(const Envelope& env, size_t* sum_offset)
{
	std::string h;
	h.append(MAGIC).append("\n");
	h.append("sum ");
	*sum_offset = h.size();
	h.append(SUM_PENDING).append("\n");
	h.append("id ").append(env.id).append("\n");
	h.append("arrival ").append(std::to_string((long long)env.arrival)).append("\n");
	h.append("sender ").append(env.sender).append("\n");
	for (const auto& r : env.recipients)
		h.append("rcpt ").append(r).append("\n");
	if (env.uid)
		h.append("uid ").append(std::to_string(*env.uid)).append("\n");
	h.append("client ").append(env.client).append("\n");
	h.append("helo ").append(env.helo).append("\n");
	if (!env.auth_user.empty())
		h.append("auth ").append(env.auth_user).append("\n");
	if (!env.instance.empty())
		h.append("instance ").append(env.instance).append("\n");
	if (!env.offline.empty())
		h.append("offline ").append(env.offline).append("\n");
	h.append("\n");
	return h;
}

template <typename T>
bool parse_int(std::string_view s, T& out)
{
	auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
	return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// Parses the envelope header at the start of `data` into env and returns
// the offset of the message. Throws SpoolError("ID: what") on anything
// create() would not have written.
size_t parse_header(std::string_view data, const std::string& id, Envelope& env, std::string& sum)
{
	auto bad = [&id](const std::string& what) -> SpoolError { return SpoolError(id + ": " + what); };
	bool seen_id = false, seen_arrival = false, seen_sender = false, seen_uid = false,
	     seen_client = false, seen_helo = false, seen_instance = false, seen_auth = false, seen_boot = false,
	     seen_sum = false, seen_offline = false;
	size_t pos = 0;
	for (int lineno = 1;; lineno++) {
		size_t nl = data.find('\n', pos);
		if (nl == std::string_view::npos)
			throw bad("truncated header (no blank line)");
		std::string_view line = data.substr(pos, nl - pos);
		pos = nl + 1;
		if (lineno == 1) {
			if (line != MAGIC)
				throw bad("not a laim spool file (bad magic)");
			continue;
		}
		if (line.empty())
			break;
		size_t sp = line.find(' ');
		if (sp == std::string_view::npos)
			throw bad("header line " + std::to_string(lineno) + ": no value");
		std::string_view key = line.substr(0, sp), value = line.substr(sp + 1);
		if (value.find_first_of(std::string_view("\r\0", 2)) != std::string_view::npos)
			throw bad(std::string(key) + ": CR or NUL in value");
		auto once = [&](bool& seen) {
			if (seen)
				throw bad("duplicate " + std::string(key));
			seen = true;
		};
		if (key == "boot") {  // written by earlier laim
			once(seen_boot);
		} else if (key == "sum") {
			once(seen_sum);
			if (value.size() != SUM_PENDING.size())
				throw bad("sum: not 8 hex digits");
			sum = value;
		} else if (key == "id") {
			once(seen_id);
			if (value != id)
				throw bad("id " + std::string(value) + " does not match the file name");
			env.id = value;
		} else if (key == "arrival") {
			once(seen_arrival);
			long long t;
			if (!parse_int(value, t))
				throw bad("arrival: not an integer");
			env.arrival = (time_t)t;
		} else if (key == "sender") {
			once(seen_sender);
			env.sender = value;
		} else if (key == "rcpt") {
			if (value.empty())
				throw bad("rcpt: empty");
			env.recipients.emplace_back(value);
		} else if (key == "uid") {
			once(seen_uid);
			uid_t uid;
			if (!parse_int(value, uid))
				throw bad("uid: not an integer");
			env.uid = uid;
		} else if (key == "client") {
			once(seen_client);
			env.client = value;
		} else if (key == "helo") {
			once(seen_helo);
			env.helo = value;
		} else if (key == "auth") {
			once(seen_auth);
			if (value.empty())
				throw bad("auth: empty");
			env.auth_user = value;
		} else if (key == "instance") {
			once(seen_instance);
			if (value.empty())
				throw bad("instance: empty");
			env.instance = value;
		} else if (key == "offline") {
			once(seen_offline);
			if (value.empty())
				throw bad("offline: empty");
			env.offline = value;
		} else {
			throw bad("unknown key \"" + std::string(key) + "\"");
		}
	}
	const std::pair<bool, const char*> required[] = {
		{seen_id, "id"}, {seen_arrival, "arrival"}, {seen_sender, "sender"},
		{seen_client, "client"}, {seen_helo, "helo"},
	};
	for (const auto& [seen, key] : required)
		if (!seen)
			throw bad(std::string("missing ") + key);
	if (env.recipients.empty())
		throw bad("no rcpt");
	return pos;
}

// Opens a directory for readdir at its start, with its own file offset.
UniqueFd open_dir(int dirfd, const char* name, const std::string& path)
{
	UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!fd)
		throw_errno("open " + path);
	return fd;
}

struct DirCloser {
	void operator()(DIR* d) const { ::closedir(d); }
};
using UniqueDir = std::unique_ptr<DIR, DirCloser>;

// A spool file opened for reading without an access time: on a file
// system mounted relatime, the first read after each change would
// otherwise write its inode (each file's first read after a restart; the
// seal reads through create()'s descriptor, also O_NOATIME). A file laim
// does not own (restored by hand as root) is opened as usual.
UniqueFd open_for_reading(int dirfd, const char* name)
{
	int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC;
	UniqueFd fd(::openat(dirfd, name, flags | O_NOATIME));
	if (!fd && errno == EPERM)
		fd.reset(::openat(dirfd, name, flags));
	return fd;
}

UniqueDir fd_to_dir(UniqueFd fd, const std::string& path)
{
	DIR* d = ::fdopendir(fd.get());
	if (!d)
		throw_errno("fdopendir " + path);
	fd.release();
	return UniqueDir(d);
}

}  // namespace

SpoolMessage::SpoolMessage(SpoolMessage&& o) noexcept
	: envelope(std::move(o.envelope)),
	  map_(std::exchange(o.map_, nullptr)),
	  map_len_(std::exchange(o.map_len_, 0)),
	  read_(std::move(o.read_)),
	  file_(std::move(o.file_)),
	  body_offset_(o.body_offset_),
	  body_(std::exchange(o.body_, {})),
	  sum_(std::move(o.sum_))
{
}

SpoolMessage& SpoolMessage::operator=(SpoolMessage&& o) noexcept
{
	if (this != &o) {
		if (map_)
			::munmap(map_, map_len_);
		envelope = std::move(o.envelope);
		map_ = std::exchange(o.map_, nullptr);
		map_len_ = std::exchange(o.map_len_, 0);
		read_ = std::move(o.read_);
		file_ = std::move(o.file_);
		body_offset_ = o.body_offset_;
		body_ = std::exchange(o.body_, {});
		sum_ = std::move(o.sum_);
	}
	return *this;
}

SpoolMessage::~SpoolMessage()
{
	if (map_)
		::munmap(map_, map_len_);
}

Spool::Spool(std::string dir)
	: dir_(std::move(dir)),
	  queue_dirfd_(open_dir(AT_FDCWD, (dir_ + "/queue").c_str(), dir_ + "/queue"))
{
	try {
		journal_ = std::make_unique<Journal>(dir_);
	} catch (const std::exception& e) {
		log_warnx("%s: no journal (%s): each commit syncs its own files and queue/, a slower way", dir_.c_str(),
			  e.what());
	}
	load_free_files();
	load_failed_ids();
}

// The ids in failed/ at start, sorted, 8 bytes each; fail() adds to them.
// One the administrator deletes later stays known: new_id() then skips
// an id it could have used, which costs nothing.
void Spool::load_failed_ids()
{
	std::string f = dir_ + "/failed";
	UniqueDir d = fd_to_dir(open_dir(AT_FDCWD, f.c_str(), f), f);
	errno = 0;
	while (struct dirent* de = ::readdir(d.get())) {
		if (valid_id(de->d_name))
			failed_ids_.push_back(id_number(de->d_name));
		errno = 0;
	}
	if (errno != 0)
		throw_errno("readdir " + f);
	std::sort(failed_ids_.begin(), failed_ids_.end());
}

void Spool::note_failed_id(const std::string& id)
{
	uint64_t n = id_number(id);
	auto at = std::lower_bound(failed_ids_.begin(), failed_ids_.end(), n);
	if (at == failed_ids_.end() || *at != n)
		failed_ids_.insert(at, n);
}

// free/ as the last run left it: its files are reusable at once; beyond
// MAX_FREE_FILES they go. An entry that is not a regular file (left by
// hand) is not one of them: taken, it would stay in queue/ for good.
void Spool::load_free_files()
{
	std::string f = dir_ + "/free";
	free_dirfd_ = UniqueFd(::open(f.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!free_dirfd_)
		return;
	UniqueDir d = fd_to_dir(open_dir(free_dirfd_.get(), ".", f), f);
	while (struct dirent* de = ::readdir(d.get())) {
		if (!valid_id(de->d_name))
			continue;
		struct stat st;
		if (::fstatat(free_dirfd_.get(), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
			log_warnx("%s/%s: not a regular file, ignored", f.c_str(), de->d_name);
			continue;
		}
		if (free_.size() < MAX_FREE_FILES)
			free_.push_back({0, de->d_name});
		else
			::unlinkat(free_dirfd_.get(), de->d_name, 0);
	}
}

// A recycled file, renamed to queue/ID and open for writing, pending, its
// old bytes turned to zeros where they lie: ZERO_RANGE keeps the blocks,
// where a truncation would free them (and, on a file system mounted with
// discard, wait for the device to discard them). It is made pending
// before the rename, so that no stop can leave queue/ID committed with
// the old message's bytes. None when no file in free/ is reusable yet.
UniqueFd Spool::take_free_file(const std::string& id)
{
	while (!free_.empty() && free_.front().ready_after <= syncs_done_) {
		std::string name = std::move(free_.front().name);
		free_.pop_front();
		if (::fchmodat(free_dirfd_.get(), name.c_str(), MODE_PENDING, 0) < 0 ||
		    ::renameat2(free_dirfd_.get(), name.c_str(), queue_dirfd_.get(), id.c_str(), RENAME_NOREPLACE) < 0)
			continue;
		UniqueFd fd(::openat(queue_dirfd_.get(), id.c_str(), O_RDWR | O_NOATIME | O_NOFOLLOW | O_CLOEXEC));
		struct stat st;
		if (fd && ::fstat(fd.get(), &st) == 0 &&
		    (st.st_size == 0 || ::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 0, st.st_size) == 0 ||
		     ::ftruncate(fd.get(), 0) == 0))
			return fd;
		::unlinkat(queue_dirfd_.get(), id.c_str(), 0);
	}
	return UniqueFd();
}

std::string Spool::path(const char* sub, const std::string& id) const
{
	return dir_ + "/" + sub + "/" + id;
}

// 40 random bits, from a pool that one getrandom fills for 51 ids; an id
// still present in failed/ (whose files keep their id) is drawn again,
// known from failed_ids_ rather than a lookup per message.
// An id in queue/ already makes create() fail with EEXIST (it never
// replaces a file): its caller draws another.
std::string Spool::new_id()
{
	for (int attempt = 0; attempt < 100; attempt++) {
		if (random_used_ + ID_LEN / 2 > sizeof random_) {
			ssize_t n;
			do
				n = ::getrandom(random_, sizeof random_, 0);
			while (n < 0 && errno == EINTR);
			if (n != (ssize_t)sizeof random_) {
				if (n >= 0)
					errno = EIO;
				throw_errno("getrandom");
			}
			random_used_ = 0;
		}
		const unsigned char* rnd = random_ + random_used_;
		random_used_ += ID_LEN / 2;
		static const char hex[] = "0123456789ABCDEF";
		std::string id;
		for (const unsigned char* b = rnd; b < rnd + ID_LEN / 2; b++) {
			id += hex[*b >> 4];
			id += hex[*b & 0xf];
		}
		if (!std::binary_search(failed_ids_.begin(), failed_ids_.end(), id_number(id)))
			return id;
	}
	errno = EEXIST;
	throw_errno("new queue id in " + dir_);
}

UniqueFd Spool::create(const Envelope& env, Created* created, bool fresh)
{
	check_id(env.id);
	check_value("sender", env.sender);
	if (env.recipients.empty())
		throw std::invalid_argument("rcpt: no recipient");
	for (const auto& r : env.recipients) {
		if (r.empty())
			throw std::invalid_argument("rcpt: empty recipient");
		check_value("rcpt", r);
	}
	check_value("client", env.client);
	check_value("helo", env.helo);
	check_value("auth", env.auth_user);
	check_value("instance", env.instance);
	check_value("offline", env.offline);

	UniqueFd fd = fresh ? UniqueFd() : take_free_file(env.id);
	bool recycled = static_cast<bool>(fd);
	if (!fd)
		fd = UniqueFd(::openat(queue_dirfd_.get(), env.id.c_str(),
				       O_RDWR | O_NOATIME | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, MODE_PENDING));
	if (!fd)
		throw_errno("create " + path("queue", env.id));
	size_t sum_offset = 0;
	std::string header = format_header(env, &sum_offset);
	if (created)
		*created = {header.size(), recycled, sum_offset};
	if (!write_all(fd.get(), header)) {
		int saved = errno;
		::unlinkat(queue_dirfd_.get(), env.id.c_str(), 0);
		errno = saved;
		throw_errno("write " + path("queue", env.id));
	}
	return fd;
}

uint64_t Spool::store(const Envelope& env, std::initializer_list<std::string_view> parts)
{
	Created created;
	UniqueFd file = create(env, &created, true);
	uint64_t size = 0;
	try {
		for (std::string_view p : parts) {
			if (!write_all(file.get(), p))
				throw_errno("writing " + path("queue", env.id));
			size += p.size();
		}
		seal(env.id, file.get(), created, size);
		sync_file(file.get());
		sync_queue_dir();
		// Committed without the journal: its mode is synced too, else a
		// stop could leave it pending with no record, for recover() to
		// remove.
		mark_committed(file.get(), true);
	} catch (...) {
		discard(env.id);  // committed or not: the caller tries again
		throw;
	}
	return size;
}

void Spool::seal(const std::string& id, int fd, const Created& created, uint64_t size, std::string* content)
{
	check_id(id);
	std::string p = path("queue", id);
	std::string sum;
	if (content) {
		content->resize(created.header_len + size);
		ssize_t n = ::pread(fd, content->data(), content->size(), 0);
		if (n != static_cast<ssize_t>(content->size()))
			throw_errno("read " + p);
		sum = sum_of(std::string_view(*content).substr(created.header_len));
		content->replace(created.sum_offset, sum.size(), sum);
	} else {
		sum = sum_text(crc_of_range(fd, static_cast<off_t>(created.header_len), size, p));
	}
	if (::pwrite(fd, sum.data(), sum.size(), static_cast<off_t>(created.sum_offset)) != static_cast<ssize_t>(sum.size()))
		throw_errno("write the sum of a spool file in " + dir_);
}

void Spool::seal_in_journal(const std::string& id, int fd, const Created& created, uint64_t size)
{
	check_id(id);
	journal_->add_file(id, fd, created.header_len + size, {created.header_len, created.sum_offset, sum_text});
}

void Spool::sync_file(int fd)
{
	if (::fdatasync(fd) < 0)
		throw_errno("fdatasync spool file (fd " + std::to_string(fd) + ") in " + dir_);
}

void Spool::mark_committed(int fd, bool sync)
{
	if (::fchmod(fd, MODE_COMMITTED) < 0)
		throw_errno("chmod spool file (fd " + std::to_string(fd) + ") in " + dir_);
	if (sync && ::fsync(fd) < 0)
		throw_errno("fsync spool file (fd " + std::to_string(fd) + ") in " + dir_);
}

// A barrier for free/: files removed before sync began are reusable
// once it returned.
template <typename F>
void Spool::barrier(F sync)
{
	uint64_t seq = ++syncs_started_;
	removed_since_barrier_ = 0;
	sync();
	uint64_t done = syncs_done_;
	while (done < seq && !syncs_done_.compare_exchange_weak(done, seq)) {
	}
}

void Spool::sync_queue_dir()
{
	barrier([this] {
		if (::fsync(queue_dirfd_.get()) < 0)
			throw_errno("fsync " + dir_ + "/queue");
	});
}

// syncfs: one call for thousands of files, most of them long written back
// by then; it flushes the rest of the file system's dirty data too, which
// the kernel would write within seconds anyway.
//
// While a file recover() could not judge is left, the journal is not
// emptied: its record decides at the next start. (Once the journal is
// full, small messages commit as large ones do.)
void Spool::checkpoint()
{
	barrier([this] {
		if (::syncfs(queue_dirfd_.get()) < 0)
			throw_errno("syncfs " + dir_);
	});
	if (journal_ && unjudged_.empty())
		journal_->reset();
}

// Before a group of group_bytes of records: when the journal cannot hold
// it (and a checkpoint would empty it), or when half of free/'s files
// wait for a barrier (each file made new, for want of one to reuse,
// costs the file system an inode).
bool Spool::wants_checkpoint(size_t group_bytes) const
{
	return (journal_ && unjudged_.empty() && !journal_->fits(group_bytes)) ||
	       removed_since_barrier_ >= MAX_FREE_FILES / 2;
}

void Spool::discard(const std::string& id)
{
	check_id(id);
	if (::unlinkat(queue_dirfd_.get(), id.c_str(), 0) < 0 && errno != ENOENT)
		throw_errno("unlink " + path("queue", id));
}

size_t Spool::clean_incoming()
{
	std::string in = dir_ + "/incoming";
	UniqueDir d = fd_to_dir(open_dir(AT_FDCWD, in.c_str(), in), in);
	size_t count = 0;
	errno = 0;
	while (struct dirent* de = ::readdir(d.get())) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (::unlinkat(::dirfd(d.get()), de->d_name, 0) < 0)
			throw_errno("unlink " + in + "/" + de->d_name);
		count++;
		errno = 0;
	}
	if (errno != 0)
		throw_errno("readdir " + in);
	return count;
}

// Ids of the regular files in queue/ (or failed/), oldest mtime first,
// ties by id so the order is stable. Anything else there (a stray file, a
// directory, a .reason file) is not a message and is skipped.
std::vector<std::string> Spool::list_queue(const char* sub) const
{
	std::string q = dir_ + "/" + sub;
	UniqueDir d = fd_to_dir(open_dir(AT_FDCWD, q.c_str(), q), q);
	struct Entry {
		struct timespec mtime;
		std::string id;
	};
	std::vector<Entry> entries;
	errno = 0;
	while (struct dirent* de = ::readdir(d.get())) {
		if (!valid_id(de->d_name)) {
			errno = 0;
			continue;
		}
		struct stat st;
		if (::fstatat(::dirfd(d.get()), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				throw_errno("stat " + q + "/" + de->d_name);
		} else if (S_ISREG(st.st_mode)) {
			entries.push_back({st.st_mtim, de->d_name});
		}
		errno = 0;
	}
	if (errno != 0)
		throw_errno("readdir " + q);
	std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
		if (a.mtime.tv_sec != b.mtime.tv_sec)
			return a.mtime.tv_sec < b.mtime.tv_sec;
		if (a.mtime.tv_nsec != b.mtime.tv_nsec)
			return a.mtime.tv_nsec < b.mtime.tv_nsec;
		return a.id < b.id;
	});
	std::vector<std::string> ids;
	ids.reserve(entries.size());
	for (auto& e : entries)
		ids.push_back(std::move(e.id));
	return ids;
}

// sub/ID open for reading, and its length; SpoolError when it is missing,
// not a regular file or empty.
UniqueFd Spool::open_message(const std::string& id, const char* sub, size_t* len) const
{
	if (!valid_id(id))
		throw SpoolError(id + ": not a queue id");
	UniqueFd fd = open_for_reading(AT_FDCWD, path(sub, id).c_str());
	if (!fd)
		throw SpoolError(id + ": open " + path(sub, id) + ": " + strerror(errno));
	struct stat st;
	if (::fstat(fd.get(), &st) < 0)
		throw SpoolError(id + ": fstat: " + strerror(errno));
	if (!S_ISREG(st.st_mode))
		throw SpoolError(id + ": not a regular file");
	if (st.st_size == 0)
		throw SpoolError(id + ": empty file");
	*len = static_cast<size_t>(st.st_size);
	return fd;
}

// Reads from the start only until the header's blank line, in growing
// steps: loading the queue at start and listing failed/ need no message.
Envelope Spool::load_envelope(const std::string& id, const char* sub, uint64_t* size) const
{
	size_t len = 0;
	UniqueFd fd = open_message(id, sub, &len);
	std::string head;
	for (size_t want = 4096;; want *= 4) {
		head.resize(std::min(want, len));
		ssize_t n = ::pread(fd.get(), head.data(), head.size(), 0);
		if (n != static_cast<ssize_t>(head.size()))
			throw SpoolError(id + ": read: " + (n < 0 ? strerror(errno) : "short read"));
		if (head.size() == len || head.find("\n\n") != std::string::npos)
			break;
	}
	Envelope env;
	std::string sum;
	*size = len - parse_header(head, id, env, sum);
	return env;
}

SpoolMessage Spool::load(const std::string& id, const char* sub) const
{
	size_t len = 0;
	UniqueFd fd = open_message(id, sub, &len);
	if (len <= READ_LIMIT) {
		auto bytes = std::make_shared<std::string>(len, '\0');
		ssize_t n = ::pread(fd.get(), bytes->data(), len, 0);
		if (n != static_cast<ssize_t>(len))
			throw SpoolError(id + ": read: " + (n < 0 ? strerror(errno) : "short read"));
		return parse(id, std::move(bytes));
	}
	SpoolMessage msg;
	char* map = map_message(id, fd.get(), len);
	msg.map_ = map;
	msg.map_len_ = len;
	msg.file_ = std::move(fd);
	msg.set_data(id, std::string_view(map, len));
	return msg;
}

// A large message's len bytes, one range of memory: its first
// MAPPED_HEAD_READ bytes (the headers, in nearly every message) read into
// memory, the rest of the file mapped after them. A handler that reads
// only the headers (a mailbox's, which sends the body with sendfile)
// then maps none of the file's pages; the kernel would map 64 KiB or more
// of them around the first one touched, for every message in delivery.
char* Spool::map_message(const std::string& id, int fd, size_t len)
{
	size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
	size_t head = (MAPPED_HEAD_READ + page - 1) / page * page;  // < READ_LIMIT < len
	void* map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		throw SpoolError(id + ": mmap: " + strerror(errno));
	char* p = static_cast<char*>(map);
	ssize_t n = ::pread(fd, p, head, 0);
	if (n != static_cast<ssize_t>(head) ||
	    ::mmap(p + head, len - head, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, static_cast<off_t>(head)) == MAP_FAILED ||
	    ::mprotect(p, head, PROT_READ) < 0) {
		std::string why = n >= 0 && n < static_cast<ssize_t>(head) ? "short read" : strerror(errno);
		::munmap(map, len);
		throw SpoolError(id + ": map: " + why);
	}
	return p;
}

SpoolMessage Spool::load(const std::string& id, std::shared_ptr<const std::string> bytes) const
{
	return bytes ? parse(id, std::move(bytes)) : load(id);
}

SpoolMessage Spool::parse(const std::string& id, std::shared_ptr<const std::string> bytes)
{
	SpoolMessage msg;
	msg.read_ = std::move(bytes);
	msg.set_data(id, *msg.read_);
	return msg;
}

void SpoolMessage::set_data(const std::string& id, std::string_view data)
{
	size_t body = parse_header(data, id, envelope, sum_);
	body_ = data.substr(body);
	body_offset_ = static_cast<off_t>(body);
}

// What a stop in the middle of commits left. When the journal was
// written in this boot, laimd (or its handler process) ended, not the
// system: the page cache holds every write, a pending file never got its
// 250 and goes, and the files are the truth. After a stop of the system
// the journal decides: a message it holds may have been answered 250,
// and its file is kept when whole, else restored from the journal (or
// failed, when too large to be in it); one it holds that is gone from
// queue/, neither done nor failed, is restored (delivered twice at
// worst, never lost); a pending file it does not hold goes. A journal
// made at this start knows nothing of earlier commits: queue/ is judged
// as without one (recover_file()).
void Spool::recover()
{
	bool same_boot = journal_ && journal_->written_this_boot();
	std::map<std::string, const Journal::Record*> held;
	if (journal_ && !same_boot)
		for (const Journal::Record& r : journal_->records()) {
			if (r.kind == Journal::Done)
				held.erase(r.id);
			else
				held[r.id] = &r;
		}
	std::string q = dir_ + "/queue";
	std::vector<std::string> ids;  // unsorted: list_queue() would stat each file once more
	UniqueDir d = fd_to_dir(open_dir(AT_FDCWD, q.c_str(), q), q);
	while (struct dirent* de = ::readdir(d.get()))
		if (valid_id(de->d_name))
			ids.emplace_back(de->d_name);
	auto judging = [this](const std::string& id, auto judge) {
		try {
			judge();
		} catch (const std::exception& e) {
			log_warnx("%s: left in the spool as it is, judged again at the next start: %s", id.c_str(), e.what());
			unjudged_.insert(id);
		}
	};
	for (const std::string& id : ids) {
		auto it = held.find(id);
		judging(id, [&] { recover_file(id, it == held.end() ? nullptr : it->second, same_boot); });
		if (it != held.end())
			held.erase(it);
	}
	for (const auto& [id, r] : held) {
		struct stat st;
		if (r->kind != Journal::Commit || ::lstat(path("failed", id).c_str(), &st) == 0)
			continue;
		judging(id, [&, &id = id, &r = r] {
			restore(id, journal_->content(*r));
			log_warnx("%s: queue file missing after a stop of the system: restored from the journal",
				  id.c_str());
		});
	}
	try {
		checkpoint();
	} catch (const std::exception& e) {
		log_warnx("checkpoint of the journal at start: %s", e.what());  // its records stay, judged again
	}
}

// One file of queue/ at start, r its record in the journal if it counts.
// After a stop of the system, a pending file too large for the journal
// (or with no journal, or one made at this start) is removed when never
// sealed or not even readable as a spool file (cut off in its DATA, or a
// recycled file not yet rewritten: its fdatasync, before any 250, would
// have made it whole), kept when whole, maybe without its 250 (delivered
// twice at worst), and failed when not.
void Spool::recover_file(const std::string& id, const Journal::Record* r, bool same_boot)
{
	struct stat st;
	if (::fstatat(queue_dirfd_.get(), id.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (!S_ISREG(st.st_mode)) {
		log_warnx("%s: not a regular file, ignored", path("queue", id).c_str());
		return;
	}
	bool pending = (st.st_mode & 0777) == MODE_PENDING;
	// A larger file may have had syncs of its own, its mode not yet on
	// disk (small_file()). A journal made at this start cannot say that it
	// never held a file.
	bool small = journal_ && small_file(static_cast<uint64_t>(st.st_size)) && !journal_->made();
	if (!r && (!pending || same_boot || small)) {
		if (pending) {
			discard(id);
			log_warnx(same_boot ? "%s: message cut off by laimd's end, before any 250: removed"
					    : "%s: commit cut off before the journal held it, so before any 250: removed",
				  id.c_str());
		}
		return;
	}
	bool whole = false, sealed = false;
	try {
		SpoolMessage m = load(id);
		whole = m.sum_ == sum_of(m.body_);
		sealed = m.sum_ != SUM_PENDING;
	} catch (const SpoolError&) {
	}
	if (pending && !r && !sealed) {
		discard(id);
		log_warnx("%s: message cut off before its commit, so before any 250: removed", id.c_str());
	} else if (whole) {
		if (pending && ::fchmodat(queue_dirfd_.get(), id.c_str(), MODE_COMMITTED, 0) < 0)
			throw_errno("chmod " + path("queue", id));
	} else if (r && r->kind == Journal::Commit) {
		restore(id, journal_->content(*r));
		log_warnx("%s: queue file not whole after a stop of the system: restored from the journal", id.c_str());
	} else {
		fail(id, "committed, but its file is not whole after a stop of the system");
		log_warnx("%s: queue file not whole after a stop of the system: moved to failed/", id.c_str());
	}
}

// queue/ID from the journal's copy, written beside it and renamed over
// it; recover()'s checkpoint makes it durable.
void Spool::restore(const std::string& id, const std::string& content)
{
	check_id(id);
	std::string p = path("incoming", id);
	UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, MODE_COMMITTED));
	if (!fd)
		throw_errno("create " + p);
	if (!write_all(fd.get(), content) || ::fchmod(fd.get(), MODE_COMMITTED) < 0)
		throw_errno("write " + p);
	if (::renameat(AT_FDCWD, p.c_str(), queue_dirfd_.get(), id.c_str()) < 0)
		throw_errno("rename " + p + " to " + path("queue", id));
}

void Spool::remove(const std::string& id)
{
	check_id(id);
	if (!recycle(id) && ::unlinkat(queue_dirfd_.get(), id.c_str(), 0) < 0)
		throw_errno("unlink " + path("queue", id));
	if (journal_)
		journal_->note_done(id);
}

// queue/ID moves to free/ID, blocks and all, for take_free_file(). False
// when it is too large to keep, free/ is full (or missing), or it cannot
// be moved.
bool Spool::recycle(const std::string& id)
{
	struct stat st;
	if (!free_dirfd_ || free_.size() >= MAX_FREE_FILES ||
	    ::fstatat(queue_dirfd_.get(), id.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > RECYCLE_MAX_SIZE)
		return false;
	if (::renameat(queue_dirfd_.get(), id.c_str(), free_dirfd_.get(), id.c_str()) < 0)
		return false;
	free_.push_back({syncs_started_ + 1, id});
	removed_since_barrier_++;
	return true;
}

// The reason is written first so that a file in failed/ always has one;
// a message that never reached queue/ (a corrupt offline import) still
// gets its reason recorded. Done for the journal, as a removal is: the
// administrator may delete failed/ID, and a stop of the system must not
// bring it back from its record.
void Spool::fail(const std::string& id, const std::string& reason)
{
	check_id(id);
	write_reason(id, reason);
	std::string to = path("failed", id);
	note_failed_id(id);
	if (::renameat(queue_dirfd_.get(), id.c_str(), AT_FDCWD, to.c_str()) < 0 && errno != ENOENT)
		throw_errno("rename " + path("queue", id) + " to " + to);
	if (journal_)
		journal_->note_done(id);
}

void Spool::write_reason(const std::string& name, const std::string& reason)
{
	std::string rpath = path("failed", name) + ".reason";
	UniqueFd fd(::open(rpath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
	if (!fd)
		throw_errno("create " + rpath);
	if (!write_all(fd.get(), log_escape_lines(reason) + "\n"))
		throw_errno("write " + rpath);
}

// Written to ID.done.new and renamed over ID.done, so that a stop midway
// leaves the old file or the new one, never half of one. Not synced: a
// stop of the system may cost the last round's record, and a recipient
// then has the message twice (as every recipient did before there were
// such files), never lose it.
void Spool::save_progress(const std::string& id, const std::string& text)
{
	check_id(id);
	std::string done = id + ".done", fresh = done + ".new";
	UniqueFd fd(::openat(queue_dirfd_.get(), fresh.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
			     0600));
	if (!fd || !write_all(fd.get(), text) || ::renameat(queue_dirfd_.get(), fresh.c_str(), queue_dirfd_.get(),
							     done.c_str()) < 0)
		throw_errno("writing " + path("queue", done));
}

std::string Spool::load_progress(const std::string& id) const
{
	std::ifstream in(path("queue", id) + ".done", std::ios::binary);
	return std::string(std::istreambuf_iterator<char>(in), {});
}

void Spool::drop_progress(const std::string& id)
{
	check_id(id);
	if (::unlinkat(queue_dirfd_.get(), (id + ".done").c_str(), 0) < 0 && errno != ENOENT)
		throw_errno("unlink " + path("queue", id) + ".done");
}

// The ids of the ID.done files in queue/, at start; an ID.done.new that
// a stop cut off before its rename goes.
std::set<std::string> Spool::progress_ids()
{
	std::string q = dir_ + "/queue";
	UniqueDir d = fd_to_dir(open_dir(AT_FDCWD, q.c_str(), q), q);
	std::set<std::string> ids;
	errno = 0;
	while (struct dirent* de = ::readdir(d.get())) {
		std::string_view name = de->d_name;
		size_t dot = name.find('.');
		if (dot != std::string_view::npos && valid_id(name.substr(0, dot))) {
			if (name.substr(dot) == ".done")
				ids.emplace(name.substr(0, dot));
			else if (name.substr(dot) == ".done.new")
				::unlinkat(::dirfd(d.get()), de->d_name, 0);
		}
		errno = 0;
	}
	if (errno != 0)
		throw_errno("readdir " + q);
	return ids;
}

std::string Spool::reason(const std::string& name) const
{
	std::ifstream in(path("failed", name) + ".reason");
	std::string line;
	std::getline(in, line);
	return line;
}

}  // namespace laim
