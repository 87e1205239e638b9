// mbox and LF text output for the file, mbox and pipe handlers and alias
// deliveries.
#include "handler/api/mbox_format.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/fd.h"
#include "common/mbox_tail.h"
#include "handler/api/header_edit.h"

namespace laim {

namespace {

// Buffers output to an fd; the first failure sticks and keeps its errno.
class FdWriter {
 public:
	explicit FdWriter(int fd) : fd_(fd) {}

	void put(std::string_view s)
	{
		if (buf_.size() + s.size() > kFlushAt)
			flush();
		if (s.size() > kFlushAt)
			write_out(s);
		else
			buf_.append(s);
	}
	void put(char c) { put(std::string_view(&c, 1)); }
	bool flush()
	{
		write_out(buf_);
		buf_.clear();
		return error_ == 0;
	}
	int error() const { return error_; }

 private:
	static constexpr size_t kFlushAt = 64 * 1024;

	void write_out(std::string_view s)
	{
		if (error_ == 0 && !write_all(fd_, s))
			error_ = errno ? errno : EIO;
	}

	int fd_;
	int error_ = 0;
	std::string buf_;
};

// "Sun Nov 22 10:00:00 2026": the From_ line's date, the message's arrival
// in asctime(3) format and local time, as every mbox reader expects.
std::string from_date(time_t t)
{
	struct tm tm;
	char buf[64];
	if (!localtime_r(&t, &tm) || !asctime_r(&tm, buf))
		return "Thu Jan  1 00:00:00 1970";
	std::string s(buf);
	if (!s.empty() && s.back() == '\n')
		s.pop_back();
	return s;
}

// Writes the message with LF line ends. With mboxrd, a line that is
// "From " after any number of '>' gets one more '>', so that readers
// neither split the message there nor lose the original text.
void put_lines(FdWriter& w, std::string_view raw, bool mboxrd)
{
	while (!raw.empty()) {
		size_t nl = raw.find('\n');
		std::string_view line = raw.substr(0, nl);
		raw.remove_prefix(nl == std::string_view::npos ? raw.size() : nl + 1);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		std::string_view rest = line.substr(std::min(line.find_first_not_of('>'), line.size()));
		if (mboxrd && rest.starts_with("From "))
			w.put('>');
		w.put(line);
		w.put('\n');
	}
}

// Return-Path, then Delivered-To unless rcpt is empty, then the message
// without its own Return-Path and Content-Length (delivered_parts()), with
// LF line ends and every line ended, the last one included.
void put_delivered(FdWriter& w, const Envelope& env, const std::string& rcpt, const Message& msg, bool mboxrd)
{
	w.put("Return-Path: <" + env.sender + ">\n");
	if (!rcpt.empty())
		w.put("Delivered-To: " + rcpt + "\n");
	for (std::string_view part : msg.delivered_parts())  // whole lines, but the last
		put_lines(w, part, mboxrd);
}

// One mbox copy: the From_ line, put_delivered() with mboxrd quoting, and
// the empty line that ends it.
void put_copy(FdWriter& w, const Envelope& env, const std::string& rcpt, const Message& msg)
{
	std::string sender = env.sender.empty() ? "MAILER-DAEMON" : env.sender;
	w.put("From " + sender + " " + from_date(env.arrival ? env.arrival : time(nullptr)) + "\n");
	put_delivered(w, env, rcpt, msg, true);
	w.put('\n');
}

// Runs put(w) on a writer for fd and flushes it: false on a write error,
// with errno set.
template <class Put>
bool write_with(int fd, Put put)
{
	FdWriter w(fd);
	put(w);
	if (w.flush())
		return true;
	errno = w.error();
	return false;
}

Result fail(const std::string& path, const char* what, int err)
{
	return Result::tempfail(path + ": " + what + ": " + strerror(err));
}

// open(2), or with no_symlinks openat2(2) refusing any symbolic link on
// the way.
int open_with(const std::string& path, int flags, bool no_symlinks)
{
	if (!no_symlinks)
		return open(path.c_str(), flags, 0600);
	struct open_how how {};
	how.flags = static_cast<uint64_t>(flags);
	how.mode = flags & O_CREAT ? 0600 : 0;  // else EINVAL
	how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	return static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
}

// Opens path for appending, creating it 0600 when missing (*created says
// whether this call did). Read-write, so that the append sees how the file
// ends (mbox_tail_gap), or write-only where only writing is allowed.
// O_NONBLOCK keeps a FIFO put in its place from stalling the delivery
// thread (the caller refuses anything but a regular file), and is cleared
// again. With no_symlinks, no component of the path may be a symbolic
// link (openat2).
int open_append(const std::string& path, bool no_symlinks, bool* created)
{
	const int flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	int fd = -1;
	for (int attempt = 0; fd < 0 && attempt < 2; attempt++) {
		fd = open_with(path, flags, no_symlinks);
		if (fd < 0 && errno == EACCES)
			fd = open_with(path, (flags & ~O_ACCMODE) | O_WRONLY, no_symlinks);
		if (fd < 0 && errno == ENOENT) {
			fd = open_with(path, flags | O_CREAT | O_EXCL, no_symlinks);
			*created = fd >= 0;
		}
		if (fd < 0 && errno != EEXIST)  // else created meanwhile: open that one
			return -1;
	}
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

// A new file's name is durable only once its directory is synced (POSIX;
// ext4 and XFS do it with the file's own fsync, other file systems may not).
int sync_parent(const std::string& path)
{
	return fsync_dir(path.substr(0, path.rfind('/') + 1).c_str());
}

}  // namespace

std::optional<Result> delivered_to_loop(const Message& msg, const std::string& rcpt)
{
	std::string_view raw = msg.raw();
	size_t end = 0;
	for (const HeaderField& f : header_fields(raw, &end)) {
		if (!header_name_is(f.name, "delivered-to"))
			continue;
		std::string_view field = raw.substr(f.begin, f.end - f.begin);
		std::string value = header_unfold(field.substr(field.find(':') + 1));
		std::string_view to = value;
		if (to.empty())
			continue;
		if (to.starts_with('<') && to.ends_with('>'))
			to = to.substr(1, to.size() - 2);
		if (same_recipient(to, rcpt))
			return Result::permfail("mail forwarding loop for " + rcpt).with_code("5.4.6");
	}
	return std::nullopt;
}

bool write_lf_text(int fd, std::string_view raw)
{
	return write_with(fd, [raw](FdWriter& w) { put_lines(w, raw, false); });
}

bool write_lf_copy(int fd, const Envelope& env, const Message& msg)
{
	return write_with(fd, [&](FdWriter& w) { put_delivered(w, env, "", msg, false); });
}

bool write_mbox_copy(int fd, const Envelope& env, const std::string& delivered_to, const Message& msg)
{
	return write_with(fd, [&](FdWriter& w) { put_copy(w, env, delivered_to, msg); });
}

namespace {

// The append to a mailbox the caller opened (O_APPEND) and locked; path
// only names it in errors.
Result mbox_append(int fd, const std::string& path, const Envelope& env,
		   const std::vector<std::string>& delivered_to, const Message& msg)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return fail(path, "stat", errno);
	if (!S_ISREG(st.st_mode))
		return Result::tempfail(path + ": not a regular file");
	std::string_view gap;
	if (!mbox_tail_gap(fd, st.st_size, &gap))
		return fail(path, "reading its end", errno);

	FdWriter w(fd);
	w.put(gap);
	for (const std::string& rcpt : delivered_to)
		put_copy(w, env, rcpt, msg);
	int err = 0;
	const char* what = "write";
	if (!w.flush())
		err = w.error();
	else if (fsync(fd) != 0)
		err = errno, what = "fsync";
	if (err) {
		(void)!ftruncate(fd, st.st_size);
		return fail(path, what, err);
	}
	return Result::delivered();
}

}  // namespace

Result mbox_deliver(const std::string& path, bool no_symlinks, const Envelope& env,
		    const std::vector<std::string>& delivered_to, const Message& msg)
{
	bool created = false;
	UniqueFd fd(open_append(path, no_symlinks, &created));
	if (!fd)
		return fail(path, "open", errno);
	if (created) {
		if (int err = sync_parent(path))
			return fail(path, "syncing its directory", err);
	}
	// An open file description lock: it conflicts with mail readers'
	// fcntl locks and, unlike those, also with another delivery thread of
	// this process appending to the same file. A held lock is not waited
	// for (as laim-mda does not): anyone who may read the file could hold
	// it for ever, and the instance's worker, and every file's mail behind
	// it, would wait with it. The delivery is deferred and retried.
	struct flock lk {};
	lk.l_type = F_WRLCK;
	lk.l_whence = SEEK_SET;
	lk.l_pid = 0;
	if (fcntl(fd.get(), F_OFD_SETLK, &lk) != 0) {
		if (errno == EAGAIN || errno == EACCES)
			return Result::tempfail(path + ": locked (fcntl) by another process, not waited for");
		return fail(path, "lock", errno);
	}
	return mbox_append(fd.get(), path, env, delivered_to, msg);  // closing the fd releases the lock
}

}  // namespace laim
