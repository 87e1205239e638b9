// Secret files that handler options name (credentials:, token_file:).
// The handler process runs as the laim user and can never open root's
// files, so the root parent reads each secret while it validates the
// config and hands the bytes to the handler process with the config: in
// memory across the fork at start, in a memfd on SIGHUP. Nothing prints
// a secret's bytes; errors name only its file.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace laim {

class Secrets {
 public:
	// The parent's store: get() reads files from disk.
	static Secrets from_files() { return Secrets(true); }
	// The handler process's store: only what the parent passed.
	static Secrets passed(std::string_view encoded);
	Secrets() = default;

	// The bytes of path, less one trailing newline. In the parent the file
	// must be a regular file owned by root that others may not read and
	// group or others may not write; throws std::runtime_error saying
	// why (path, owner, mode), never what it holds.
	const std::string& get(const std::string& path);
	// For the handler process: every secret read so far.
	std::string encode() const;
	bool empty() const { return bytes_.empty(); }
	// Overwrites and forgets every secret (in a process that needs none).
	void wipe();
	// From now on get() gives only the secrets held (in the handler
	// process, which could not read the files anyway).
	void seal() { read_files_ = false; }

 private:
	explicit Secrets(bool read_files) : read_files_(read_files) {}
	std::string read_file(const std::string& path) const;
	bool read_files_ = false;
	std::map<std::string, std::string> bytes_;
};

}  // namespace laim
