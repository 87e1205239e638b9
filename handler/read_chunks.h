// read_chunks(): a range of a file, 64 KiB at a time, for the spool's
// sums and the journal's copies of queue files.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace laim {

// Calls each(chunk) for len bytes of fd from offset, in order. Throws
// std::system_error "read WHAT" (EIO when the file is shorter).
template <typename F>
void read_chunks(int fd, off_t offset, uint64_t len, const std::string& what, F each)
{
	constexpr size_t CHUNK = 64 * 1024;
	std::unique_ptr<char[]> buf(new char[CHUNK]);
	while (len > 0) {
		ssize_t n = ::pread(fd, buf.get(), static_cast<size_t>(std::min<uint64_t>(len, CHUNK)), offset);
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			if (errno == EINTR)
				continue;
			throw std::system_error(errno, std::generic_category(), "read " + what);
		}
		each(std::string_view(buf.get(), static_cast<size_t>(n)));
		offset += n;
		len -= static_cast<uint64_t>(n);
	}
}

}  // namespace laim
