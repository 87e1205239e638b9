// UniqueFd: RAII owner of one file descriptor.
#pragma once

#include <fcntl.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

namespace laim {

class UniqueFd {
 public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) : fd_(fd) {}
	UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
	UniqueFd& operator=(UniqueFd&& o) noexcept { reset(o.release()); return *this; }
	UniqueFd(const UniqueFd&) = delete;
	UniqueFd& operator=(const UniqueFd&) = delete;
	~UniqueFd() { reset(); }

	int get() const { return fd_; }
	explicit operator bool() const { return fd_ >= 0; }
	int release() { return std::exchange(fd_, -1); }
	void reset(int fd = -1)
	{
		if (fd_ >= 0)
			::close(fd_);
		fd_ = fd;
	}

 private:
	int fd_ = -1;
};

// write(2) until everything is out, across short writes and EINTR; false
// on an error (errno says which) or a write that wrote nothing.
inline bool write_all(int fd, std::string_view data)
{
	while (!data.empty()) {
		ssize_t n = ::write(fd, data.data(), data.size());
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		data.remove_prefix(static_cast<size_t>(n));
	}
	return true;
}

// fsync of directory dir (a path): what makes a name created, renamed or
// removed in it durable. 0, or the errno of the open or the fsync.
inline int fsync_dir(const char* dir)
{
	UniqueFd fd(::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	return fd && ::fsync(fd.get()) == 0 ? 0 : errno;
}

// For the programs any user or daemon runs (sendmail, laim-drop,
// laimctl): a file or socket they open must not land on fds 0-2, where
// their own writes to stdout or stderr would then go (sendmail -v run with
// stderr closed wrote its SMTP dialogue into the message). Each of them
// that is closed is opened on /dev/null; exits EX_OSERR when one cannot be.
inline void open_std_fds()
{
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF)
			if (::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
				_exit(EX_OSERR);
}

}  // namespace laim
