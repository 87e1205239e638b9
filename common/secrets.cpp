#include "common/secrets.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string.h>
#include <stdexcept>

#include "common/fd.h"
#include "common/imsg.h"

namespace laim {

namespace {

constexpr size_t SECRET_MAX_SIZE = 65536;

std::string mode_text(mode_t mode)
{
	char m[8];
	snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode & 07777));
	return m;
}

}  // namespace

Secrets Secrets::passed(std::string_view encoded)
{
	Secrets s;
	ImsgReader r(encoded);
	uint32_t n = 0;
	if (!r.u32(n))
		throw std::runtime_error("secrets: malformed");
	for (uint32_t i = 0; i < n; i++) {
		std::string path, bytes;
		if (!(r.str(path) && r.str(bytes)))
			throw std::runtime_error("secrets: malformed");
		s.bytes_[path] = std::move(bytes);
	}
	if (!r.done())
		throw std::runtime_error("secrets: malformed");
	return s;
}

std::string Secrets::encode() const
{
	ImsgWriter w;
	w.u32(static_cast<uint32_t>(bytes_.size()));
	for (const auto& [path, bytes] : bytes_)
		w.str(path).str(bytes);
	return w.data();
}

void Secrets::wipe()
{
	for (auto& [path, bytes] : bytes_)
		explicit_bzero(bytes.data(), bytes.size());
	bytes_.clear();
}

const std::string& Secrets::get(const std::string& path)
{
	auto it = bytes_.find(path);
	if (it != bytes_.end())
		return it->second;
	if (!read_files_)
		throw std::runtime_error(path + ": secret not passed to the handler process");
	return bytes_[path] = read_file(path);
}

// Opened without following a link and without blocking on a FIFO; the
// checks are made on the open file, so it cannot be swapped in between.
std::string Secrets::read_file(const std::string& path) const
{
	UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
	if (!fd)
		throw std::runtime_error(path + ": " + (errno == ELOOP ? "is a symbolic link" : strerror(errno)));
	struct stat st;
	if (fstat(fd.get(), &st) == -1)
		throw std::runtime_error(path + ": fstat: " + strerror(errno));
	if (!S_ISREG(st.st_mode))
		throw std::runtime_error(path + ": not a regular file");
	if (st.st_uid != 0 || (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)))
		throw std::runtime_error(path + ": a secret must be owned by root, not readable by others and not "
					 "writable by group or others (uid " + std::to_string(st.st_uid) + ", mode " +
					 mode_text(st.st_mode) + "; chmod 0600 or 0640 it)");
	if (static_cast<uint64_t>(st.st_size) > SECRET_MAX_SIZE)
		throw std::runtime_error(path + ": larger than 64 KiB");
	std::string bytes(static_cast<size_t>(st.st_size) + 1, '\0');
	ssize_t n;
	do
		n = pread(fd.get(), bytes.data(), bytes.size(), 0);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		throw std::runtime_error(path + ": read: " + strerror(errno));
	if (static_cast<size_t>(n) != static_cast<size_t>(st.st_size))
		throw std::runtime_error(path + ": changed while being read");
	bytes.resize(static_cast<size_t>(n));
	if (!bytes.empty() && bytes.back() == '\n')
		bytes.pop_back();
	if (!bytes.empty() && bytes.back() == '\r')
		bytes.pop_back();
	return bytes;
}

}  // namespace laim
