// file: appends each recipient's copy to an mbox file, under an fcntl
// write lock (the lock mutt, mailx and Postfix's local(8) take too).
//
//   handlers:
//     archive:
//       type: file
//       path: /var/mail/root    # absolute; created 0600 when missing
//
// A copy is the From_ line, Return-Path and Delivered-To, then the
// message with CRLF turned into LF and mboxrd quoting (">From ",
// ">>From ", ...), then an empty line. A failed append is cut back off
// the file, so a reader never sees half a message.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/fd.h"
#include "handler/handler.h"

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
		while (!s.empty() && error_ == 0) {
			ssize_t n = write(fd_, s.data(), s.size());
			if (n < 0) {
				if (errno != EINTR)
					error_ = errno;
				continue;
			}
			s.remove_prefix(n);
		}
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

// Writes the message body in mboxrd form: lines end in LF, and a line that
// is "From " after any number of '>' gets one more '>' so that readers
// neither split the message there nor lose the original text.
void put_mboxrd(FdWriter& w, std::string_view raw)
{
	while (!raw.empty()) {
		size_t nl = raw.find('\n');
		std::string_view line = raw.substr(0, nl);
		raw.remove_prefix(nl == std::string_view::npos ? raw.size() : nl + 1);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		std::string_view rest = line.substr(std::min(line.find_first_not_of('>'), line.size()));
		if (rest.starts_with("From "))
			w.put('>');
		w.put(line);
		w.put('\n');
	}
}

class FileHandler : public Handler {
 public:
	explicit FileHandler(HandlerOptions& o) : path_(o.string("path"))
	{
		if (path_.empty() || path_.front() != '/')
			o.fail("path", "expected an absolute path, got \"" + path_ + "\"");
	}

	Result deliver(const Envelope& env, const Message& msg) override;

 private:
	Result fail(const char* what, int err) const
	{
		return Result::tempfail("file: " + path_ + ": " + what + ": " + strerror(err));
	}

	std::string path_;
};

LAIM_HANDLER("file", FileHandler);

// Appends one copy per recipient while holding the lock, fsyncs, and on any
// error truncates the file back to where it was.
Result FileHandler::deliver(const Envelope& env, const Message& msg)
{
	UniqueFd fd(open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600));
	if (!fd)
		return fail("open", errno);
	// An open file description lock: it conflicts with mail readers'
	// fcntl locks and, unlike those, also with another delivery thread of
	// this process appending to the same file.
	struct flock lk {};
	lk.l_type = F_WRLCK;
	lk.l_whence = SEEK_SET;
	lk.l_pid = 0;
	while (fcntl(fd.get(), F_OFD_SETLKW, &lk) != 0)
		if (errno != EINTR)
			return fail("lock", errno);
	struct stat st;
	if (fstat(fd.get(), &st) != 0)
		return fail("stat", errno);
	if (!S_ISREG(st.st_mode))
		return Result::tempfail("file: " + path_ + ": not a regular file");

	std::string sender = env.sender.empty() ? "MAILER-DAEMON" : env.sender;
	std::string date = from_date(env.arrival ? env.arrival : time(nullptr));
	FdWriter w(fd.get());
	for (const std::string& rcpt : env.recipients) {
		w.put("From " + sender + " " + date + "\n");
		w.put("Return-Path: <" + env.sender + ">\nDelivered-To: " + rcpt + "\n");
		put_mboxrd(w, msg.raw());  // ends every line, the last one included
		w.put('\n');
	}
	int err = 0;
	const char* what = "write";
	if (!w.flush())
		err = w.error();
	else if (fsync(fd.get()) != 0)
		err = errno, what = "fsync";
	if (err) {
		(void)!ftruncate(fd.get(), st.st_size);
		return fail(what, err);
	}
	return Result::delivered();  // closing the fd releases the lock
}

}  // namespace

}  // namespace laim
