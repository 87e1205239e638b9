#include "common/secrets.h"

#include <sys/stat.h>

#include <string.h>

#include <stdexcept>

#include "common/config.h"
#include "common/imsg.h"

namespace laim {

namespace {

constexpr size_t SECRET_MAX_SIZE = 65536;

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

std::string Secrets::read_file(const std::string& path) const
{
	std::string bytes = read_root_file(path, {"secret", S_IROTH | S_IWOTH | S_IWGRP,
						  "not readable by others and not writable by group or others",
						  "; chmod 0600 or 0640 it", SECRET_MAX_SIZE});
	if (!bytes.empty() && bytes.back() == '\n')
		bytes.pop_back();
	if (!bytes.empty() && bytes.back() == '\r')
		bytes.pop_back();
	return bytes;
}

}  // namespace laim
