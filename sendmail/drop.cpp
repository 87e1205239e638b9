// laim-drop: stores one message in the spool's offline/ directory while
// laimd cannot take it. Installed setgid laimdrop (mode 2755); offline/
// is laim:laimdrop 1730, so only this program can add files there and no
// caller can read or remove another's.
//
//   laim-drop -f SENDER -- RCPT...     (the message on stdin)
//
// It trusts nothing it is given and reads nothing but its arguments and
// stdin: no environment, no configuration. (A test build, configured
// with --enable-test-handlers, takes the spool from $LAIM_TEST_SPOOL_DIR
// so that the regress cases never touch the system's spool; the package
// is built without it.) The group privilege is used
// for two system calls only: creating the unnamed file, and linking it
// into offline/ once it is complete and on disk. The file ends owned by
// the caller's uid (laimd imports it as that uid's), group laimdrop, one
// link, in the format of common/offline.h.
//
// Any user may run it directly, and laimd judges a file only at the
// import, so it leaves a floor of the spool's file system free, of
// blocks and of inodes (check_free_space): laimd's processes run as laim,
// without root's reserved blocks, and a user who filled either with
// offline/ files would make laimd refuse everyone's mail.
//
// Exit status: 0 stored, 64 usage, 65 bad address or message too large,
// 75 cannot store it ("laim-drop: cannot store the message: REASON").
#include "config.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>

#include "common/address.h"
#include "common/fd.h"
#include "common/offline.h"

#ifndef LAIM_SPOOL_DIR
#define LAIM_SPOOL_DIR "/var/spool/laim"
#endif

using laim::OfflineEnvelope;
using laim::UniqueFd;
using laim::write_all;

namespace {

constexpr size_t MAX_MESSAGE = 256u << 20;

// The free space left on the spool's file system for laimd and the rest
// of it: FLOOR_PERCENT of the file system, but at least FLOOR_MIN and at
// most FLOOR_MAX (a 5% of a large disk would refuse cron's mail on a
// server whose /var is merely well used), in addition to root's reserved
// blocks (statvfs f_bavail).
constexpr uint64_t FLOOR_MIN = 64u << 20;
constexpr uint64_t FLOOR_MAX = 1u << 30;
constexpr uint64_t FLOOR_PERCENT = 5;
// The same for inodes (statvfs f_favail): a user's many tiny files would
// otherwise use them all while the blocks stay free. A file system that
// counts no inodes (f_files 0, as btrfs) has no such floor.
constexpr uint64_t FILES_FLOOR_MIN = 64;
constexpr uint64_t FILES_FLOOR_MAX = 65536;

std::string offline_dir = LAIM_SPOOL_DIR "/offline";

// The test seam, read before the environment is cleared: only in a test
// build (LAIM_TEST_SEAMS), never in a setgid laim-drop of the package.
void take_test_spool()
{
#ifdef LAIM_TEST_SEAMS
	const char* dir = getenv("LAIM_TEST_SPOOL_DIR");
	if (dir && *dir)
		offline_dir = std::string(dir) + "/offline";
#endif
}

// Exits with the group privilege given up, as a stored message's exit
// does: nothing after this point may use it.
[[noreturn]] void die(int code, const std::string& msg)
{
	fprintf(stderr, "laim-drop: %s\n", msg.c_str());
	gid_t gid = getgid();
	(void)!setresgid(gid, gid, gid);
	exit(code);
}

[[noreturn]] void cannot_store(const std::string& why)
{
	die(EX_TEMPFAIL, "cannot store the message: " + why);
}

[[noreturn]] void cannot_store_errno(const std::string& what)
{
	cannot_store(what + ": " + strerror(errno));
}

std::string mib(uint64_t bytes)
{
	char s[32];
	snprintf(s, sizeof s, "%.1f MiB", double(bytes) / (1u << 20));
	return s;
}

// Refuses (75) when writing `more` bytes to fd, on the spool's file
// system, would leave less than the floor free there, or when fewer
// inodes than their floor are left free (fd holds its own already).
void check_free_space(int fd, size_t more)
{
	struct statvfs fs;
	if (fstatvfs(fd, &fs) == -1)
		cannot_store_errno("statvfs " + offline_dir);
	uint64_t keep_files = std::clamp(uint64_t(fs.f_files) / 100 * FLOOR_PERCENT, FILES_FLOOR_MIN, FILES_FLOOR_MAX);
	if (fs.f_files != 0 && fs.f_favail < keep_files)
		cannot_store("the file system of " + offline_dir + " has " + std::to_string(fs.f_favail) +
			     " free inodes, and laim-drop leaves " + std::to_string(keep_files) + " of them free for laimd");
	uint64_t unit = fs.f_frsize ? fs.f_frsize : fs.f_bsize;
	uint64_t avail = uint64_t(fs.f_bavail) * unit;
	uint64_t keep = std::clamp(uint64_t(fs.f_blocks) * unit / 100 * FLOOR_PERCENT, FLOOR_MIN, FLOOR_MAX);
	if (avail < keep || avail - keep < more)
		cannot_store("the file system of " + offline_dir + " has " + mib(avail) +
			     " free, and laim-drop leaves " + mib(keep) + " of it free for laimd");
}

// Checks an envelope address as sendmail wrote it: qualified, RFC 5321
// syntax (UTF-8 allowed), no control characters, not an option.
void check_address(const std::string& a, const char* what, bool may_be_empty)
{
	if (a.empty() && may_be_empty)
		return;
	bool ok = !a.empty() && a[0] != '-' && a.size() <= laim::OFFLINE_MAX_VALUE &&
		  a.find_first_of("\r\n") == std::string::npos && laim::valid_mailbox(a, true, false);
	if (!ok)
		die(EX_DATAERR, std::string("bad ") + what + " address \"" + a + "\"");
}

OfflineEnvelope parse_args(int argc, char** argv)
{
	if (argc < 5 || strcmp(argv[1], "-f") != 0 || strcmp(argv[3], "--") != 0)
		die(EX_USAGE, "usage: laim-drop -f SENDER -- RCPT...");
	OfflineEnvelope env;
	env.sender = argv[2];
	check_address(env.sender, "sender", true);
	if (size_t(argc - 4) > laim::OFFLINE_MAX_RECIPIENTS)
		die(EX_USAGE, "more than 1000 recipients");
	for (int i = 4; i < argc; i++) {
		env.recipients.emplace_back(argv[i]);
		check_address(env.recipients.back(), "recipient", false);
	}
	return env;
}

// Effective gid changes; the saved gid keeps laimdrop until the end.
void set_egid(gid_t gid)
{
	if (setresgid(gid_t(-1), gid, gid_t(-1)) == -1)
		cannot_store_errno("setresgid");
}

// Header, then stdin up to MAX_MESSAGE bytes, then fsync; each write
// first checks the free space, as the size is known only at the end.
void write_message(int fd, const std::string& header)
{
	check_free_space(fd, header.size());
	if (!write_all(fd, header))
		cannot_store_errno("write");
	char buf[64 * 1024];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			cannot_store_errno("reading the message");
		if (n == 0)
			break;
		total += size_t(n);
		if (total > MAX_MESSAGE)
			die(EX_DATAERR, "message too large (more than 256 MiB)");
		check_free_space(fd, size_t(n));
		if (!write_all(fd, std::string_view(buf, size_t(n))))
			cannot_store_errno("write");
	}
	if (fsync(fd) == -1)
		cannot_store_errno("fsync");
}

// "<epoch>.<pid>.<8 random hex>": unique without reading the directory.
std::string file_name()
{
	unsigned char r[4] = {};
	if (getrandom(r, sizeof r, 0) != ssize_t(sizeof r))
		cannot_store_errno("getrandom");
	char name[64];
	snprintf(name, sizeof name, "%lld.%d.%02x%02x%02x%02x", (long long)time(nullptr), int(getpid()), r[0], r[1],
		 r[2], r[3]);
	return name;
}

// Gives the unnamed file its name in offline/ (the only other use of the
// group), retrying on the unlikely clash.
void link_into(int fd, int dirfd, gid_t drop_gid, gid_t rgid)
{
	std::string proc = "/proc/self/fd/" + std::to_string(fd);
	for (int attempt = 0;; attempt++) {
		std::string name = file_name();
		set_egid(drop_gid);
		int r = linkat(AT_FDCWD, proc.c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW);
		int err = errno;
		set_egid(rgid);
		if (r == 0)
			return;
		errno = err;
		if (err != EEXIST || attempt == 5)
			cannot_store_errno("linking the file into " + offline_dir);
	}
}

// The new directory entry must be durable too. offline/ is not readable
// by the group, so it cannot be opened for fsync(2) unless the caller
// owns it (root, laim): then syncfs(2) on the file's filesystem.
void sync_directory(int fd)
{
	UniqueFd dir(open(offline_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	int r = dir ? fsync(dir.get()) : syncfs(fd);
	if (r == -1)
		cannot_store_errno("syncing " + offline_dir);
}

}  // namespace

int main(int argc, char** argv)
{
	laim::open_std_fds();  // setgid: its own files must not land there
	take_test_spool();
	clearenv();
	umask(022);
	OfflineEnvelope env = parse_args(argc, argv);
	std::string header;
	try {
		header = laim::offline_encode(env);
	} catch (const std::invalid_argument& e) {
		die(EX_DATAERR, e.what());
	}

	gid_t rgid, egid, sgid;
	if (getresgid(&rgid, &egid, &sgid) == -1)
		cannot_store_errno("getresgid");
	gid_t drop_gid = egid;  // laimdrop, by the setgid bit

	UniqueFd dirfd(open(offline_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (!dirfd)
		cannot_store_errno("opening " + offline_dir);
	UniqueFd fd(openat(dirfd.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644));
	if (!fd)
		cannot_store_errno("creating a file in " + offline_dir);
	set_egid(rgid);

	write_message(fd.get(), header);
	link_into(fd.get(), dirfd.get(), drop_gid, rgid);
	if (setresgid(rgid, rgid, rgid) == -1)
		cannot_store_errno("setresgid");
	sync_directory(fd.get());
	return EX_OK;
}
