// How an append to an mbox file joins what is already there, for the
// handler's file appends (handler/api/mbox_format.cpp) and laim-mda.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace laim {

// What to write, under the lock, before the first From_ line appended to
// the mbox file fd of size bytes, so that it starts a line after an empty
// one, as every copy laim writes ends: "\n\n" after a last line without
// its newline (an append or an editor cut short; glued to that line, the
// From_ line starts no message and the new mail reads as part of the old
// one), "\n" after a single line end, nothing after an empty line or in
// an empty file. Reads the last bytes with lseek and read (appends are
// O_APPEND: the offset does not matter to them). A file open write-only
// cannot be read and gets nothing, as before. False on a read error, with
// errno set.
inline bool mbox_tail_gap(int fd, off_t size, std::string_view* gap)
{
	*gap = "";
	char tail[2];
	const size_t n = size < 2 ? static_cast<size_t>(size) : 2;
	if (n == 0)
		return true;
	ssize_t r;
	if (lseek(fd, size - static_cast<off_t>(n), SEEK_SET) < 0)
		return false;
	while ((r = read(fd, tail, n)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return errno == EBADF;
	if (static_cast<size_t>(r) != n) {  // cut shorter under the lock: someone not locking
		errno = EIO;
		return false;
	}
	if (tail[n - 1] != '\n')
		*gap = "\n\n";
	else if (n == 2 && tail[0] != '\n')
		*gap = "\n";
	return true;
}

}  // namespace laim
