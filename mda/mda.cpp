// laim-mda: appends one message to one user's mailbox, MAIL_DIR/USER
// (Debian's /var/mail layout), as that user. The root parent starts it
// for the mbox handler (parent/command.cpp, a mailbox request) with the
// user's uid and group and, only when the directory is writable by its
// group alone, that group as effective and saved gid (not a supplementary
// group: so the user can neither ptrace it nor read its memory, and
// glibc runs it in secure mode); the handler process streams
// the mbox copy to its stdin. So the handler process, compromised or
// not, never holds a descriptor to anyone's mailbox, and a delivery can
// do to a mailbox no more than its owner could (OpenSMTPD's mda and
// Postfix's local(8) deliver the same way).
//
//   laim-mda MAIL_DIR USER SECONDS
//
// USER is not checked again: the parent passes only a name it checked and
// found in passwd, and runs laim-mda as that user. laim-mda is not setuid,
// so a name given by hand ("../x") reaches only a file its caller owns and
// could write anyway.
//
// stdin: the copy's length in decimal and a LF, then the copy, so that a
// copy cut short by a dying handler is told from a whole one. All of it
// is read, within SECONDS, before the mailbox is touched. Then: MAIL_DIR
// must be root's; USER is opened without following a link, or created
// 0600 and MAIL_DIR synced so that its name is durable; anything but this user's own regular file with one name is
// refused; the fcntl lock and then the dotlock USER.lock are taken (a
// dotlock older than 300 s is stale and removed; a held lock is not
// waited for); the copy is appended (after ending the mailbox's last line
// when that lacks its newline) and fsynced, and on any failure the
// mailbox is cut back to its old size before the locks go, so that it
// never holds half a message. The append starts only within SECONDS of
// the start (else the locks go and it gives up, the mailbox as it was):
// SECONDS is four fifths of the delivery's limit, and the parent kills
// laim-mda only at twice that limit, so a slow disk has the rest to end
// an append. A kill in the append would leave the copy, or part of it,
// and the dotlock, and the retry would append it again. SIGTERM is the
// parent's word that nobody will take the result (the handler process
// ended: laimd is stopping, or it died): no append starts after it, and
// one it came in is cut back once its write or fsync returns, so that
// the message, still queued, is in the mailbox once after its retry. It
// runs without capabilities (root's mailbox is delivered as root), under
// no_new_privs and a seccomp filter of its own (sandbox_seccomp_mda),
// with every signal but SIGKILL blocked (SIGTERM is only looked at; its
// user may still SIGSTOP it: the parent continues it at once). One line
// on stderr says what happened (the handler logs it); exit 0 delivered,
// EX_TEMPFAIL (75) for what may pass later (a lock, no space, a link in
// the mailbox's place, no time left, SIGTERM: the message stays queued),
// EX_USAGE (64) for a malformed invocation.
#include <config.h>

#include <cap-ng.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/mail_dir.h"
#include "common/mbox_tail.h"
#include "common/sandbox.h"

using namespace laim;

#ifdef LAIM_SANITIZERS
// --enable-sanitizers only: laimd runs laim-mda with a clean environment,
// and LeakSanitizer's scan at exit (ptrace, clone) is not in its filter;
// the tree's sanitizer runs keep leak checks off anyway.
extern "C" const char* __asan_default_options()
{
	return "detect_leaks=0:halt_on_error=1";
}
#endif

namespace {

// A dotlock older than this is left over from a crash (liblockfile and
// mutt use the same age).
constexpr time_t STALE_DOTLOCK = 300;
// The longest copy taken: far above any message_size_limit.
constexpr size_t MAX_COPY = size_t(1) << 31;

std::string box;  // MAIL_DIR/USER, for messages

// Says why on stderr, one line, and exits with status.
[[noreturn]] void give_up(int status, const char* fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	dprintf(2, "%s: %s\n", box.c_str(), why);
	_exit(status);
}

// True once the parent sent SIGTERM (blocked, so pending): see the
// header comment.
bool told_to_stop()
{
	sigset_t pending;
	return sigpending(&pending) == 0 && sigismember(&pending, SIGTERM) == 1;
}

// Milliseconds left until the deadline, <= 0 once it has passed.
long ms_left(const struct timespec& deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
}

// Waits until stdin has something (or its end) to read; gives up at the
// deadline, done of n bytes read.
void wait_input(const struct timespec& deadline, size_t done, size_t n)
{
	long left = ms_left(deadline);
	struct pollfd p = {0, POLLIN, 0};
	if (left <= 0 || poll(&p, 1, static_cast<int>(left)) == 0)
		give_up(EX_TEMPFAIL, "the message did not arrive in time (%zu of %zu bytes)", done, n);
}

// Reads n bytes of stdin into buf, or gives up at the deadline.
void read_input(char* buf, size_t n, const struct timespec& deadline)
{
	for (size_t done = 0; done < n;) {
		wait_input(deadline, done, n);
		ssize_t r = read(0, buf + done, n - done);
		if (r == 0)
			give_up(EX_TEMPFAIL, "the message ended early (%zu of %zu bytes)", done, n);
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			give_up(EX_TEMPFAIL, "reading the message: %s", strerror(errno));
		done += r > 0 ? static_cast<size_t>(r) : 0;
	}
}

// The copy: n bytes of stdin, taken as they come, or give up at the
// deadline. The buffer grows with what arrived (doubling, never past n),
// not with what the length line claims: else a subverted handler process
// could have root start laim-mda processes that each allocate and zero
// 2 GiB before a byte came, the zeroing eating into the deadline.
std::string read_message(size_t n, const struct timespec& deadline)
{
	char buf[64 * 1024];
	std::string copy;
	copy.reserve(std::min(n, sizeof buf));
	while (copy.size() < n) {
		wait_input(deadline, copy.size(), n);
		ssize_t r = read(0, buf, std::min(sizeof buf, n - copy.size()));
		if (r == 0)
			give_up(EX_TEMPFAIL, "the message ended early (%zu of %zu bytes)", copy.size(), n);
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			give_up(EX_TEMPFAIL, "reading the message: %s", strerror(errno));
		if (r < 0)
			continue;
		if (copy.size() + r > copy.capacity())
			copy.reserve(std::min(n, 2 * copy.capacity()));
		copy.append(buf, static_cast<size_t>(r));
	}
	return copy;
}

// The whole framed copy from stdin (see the header comment), and nothing
// after it, by the deadline.
std::string read_copy(const struct timespec& deadline)
{
	std::string len;
	for (char c = 0; c != '\n';) {
		read_input(&c, 1, deadline);
		if (c != '\n' && (c < '0' || c > '9' || len.size() >= 20))
			give_up(EX_TEMPFAIL, "the message's length line is malformed");
		if (c != '\n')
			len += c;
	}
	size_t n = len.empty() ? 0 : strtoull(len.c_str(), nullptr, 10);
	if (n == 0 || n > MAX_COPY)
		give_up(EX_TEMPFAIL, "the message's length (%s) is out of range", len.c_str());
	std::string copy = read_message(n, deadline);
	char extra;
	wait_input(deadline, n, n);
	if (read(0, &extra, 1) != 0)
		give_up(EX_TEMPFAIL, "more input than the message's length");
	return copy;
}

// Opens USER for appending without following a link, creating it 0600
// (the umask the parent set) when missing; *created says which.
// Read-write, so that the append sees how the mailbox ends
// (mbox_tail_gap), or write-only where its mode allows only that.
UniqueFd open_mailbox(int dir, const char* user, bool* created)
{
	const int flags = O_RDWR | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	for (int attempt = 0; attempt < 2; attempt++) {
		UniqueFd fd(openat(dir, user, flags));
		if (!fd && errno == EACCES)
			fd.reset(openat(dir, user, (flags & ~O_ACCMODE) | O_WRONLY));
		if (!fd && errno == ENOENT) {
			fd.reset(openat(dir, user, flags | O_CREAT | O_EXCL, 0600));
			*created = static_cast<bool>(fd);
		}
		if (fd)
			return fd;
		if (errno == ELOOP)
			give_up(EX_TEMPFAIL, "is a symbolic link");
		if (errno != EEXIST)  // else created meanwhile: open that one
			give_up(EX_TEMPFAIL, "open: %s", strerror(errno));
	}
	give_up(EX_TEMPFAIL, "keeps appearing and disappearing");
}

// The mailbox must be this user's own regular file with one name, or a
// link made by someone else could point the append anywhere.
void check_mailbox(int fd, const char* user, struct stat* st)
{
	if (fstat(fd, st) == -1)
		give_up(EX_TEMPFAIL, "fstat: %s", strerror(errno));
	if (!S_ISREG(st->st_mode))
		give_up(EX_TEMPFAIL, "is not a regular file");
	if (st->st_nlink != 1)
		give_up(EX_TEMPFAIL, "has %lu hard links", (unsigned long)st->st_nlink);
	if (st->st_uid != getuid())
		give_up(EX_TEMPFAIL, "is owned by uid %u, not %s", (unsigned)st->st_uid, user);
}

// The fcntl lock every Debian mail reader takes; it goes with the
// descriptor at exit.
void lock_fcntl(int fd)
{
	struct flock lk {};
	lk.l_type = F_WRLCK;
	lk.l_whence = SEEK_SET;
	if (fcntl(fd, F_SETLK, &lk) == 0)
		return;
	if (errno == EAGAIN || errno == EACCES)
		give_up(EX_TEMPFAIL, "locked (fcntl) by a mail reader");
	give_up(EX_TEMPFAIL, "fcntl lock: %s", strerror(errno));
}

// USER.lock, created exclusively (after the fcntl lock, as Debian policy
// orders them); a stale one is removed first (*stale says so). Returns
// the lock's name.
std::string lock_dotlock(int dir, const char* user, bool* stale)
{
	std::string name = std::string(user) + ".lock";
	for (int attempt = 0; attempt < 2; attempt++) {
		UniqueFd fd(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
		if (fd) {
			std::string pid = std::to_string(getpid()) + "\n";
			(void)!write(fd.get(), pid.data(), pid.size());
			return name;
		}
		struct stat st;
		if (errno != EEXIST || fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1)
			give_up(EX_TEMPFAIL, "%s: %s", name.c_str(), strerror(errno));
		if (time(nullptr) - st.st_mtime < STALE_DOTLOCK)
			give_up(EX_TEMPFAIL, "locked (%s) by a mail reader", name.c_str());
		*stale = unlinkat(dir, name.c_str(), 0) == 0;  // a crash left it
	}
	give_up(EX_TEMPFAIL, "locked (%s)", name.c_str());
}

// Appends the copy to the locked mailbox, after the line ends its last
// line lacks (*gap, mbox_tail_gap), and makes it durable; on any failure,
// or a SIGTERM that came meanwhile, cuts the mailbox back to the size it
// had and returns why ("" when delivered).
std::string append(int fd, const std::string& copy, std::string_view* gap)
{
	struct stat st;
	if (fstat(fd, &st) == -1)  // under the locks: the size to go back to
		return std::string("fstat: ") + strerror(errno);
	if (!mbox_tail_gap(fd, st.st_size, gap))
		return std::string("reading its end: ") + strerror(errno);
	const char* what = nullptr;
	int err = EIO;  // a write that takes nothing without an error
	for (std::string_view part : {*gap, std::string_view(copy)}) {
		for (size_t done = 0; !what && done < part.size();) {
			ssize_t w = write(fd, part.data() + done, part.size() - done);
			if (w > 0)
				done += static_cast<size_t>(w);
			else if (w == 0 || errno != EINTR)
				what = "write", err = w == 0 ? EIO : errno;
		}
	}
	if (!what && !told_to_stop() && fsync(fd) != 0)
		what = "fsync", err = errno;
	if (!what && !told_to_stop())
		return "";
	std::string why = what ? std::string(what) + ": " + strerror(err) : "told to stop (SIGTERM)";
	if (ftruncate(fd, st.st_size) != 0 || fsync(fd) != 0)
		return why + ", and cutting it back to " + std::to_string(st.st_size) + " bytes failed: " + strerror(errno);
	return why + " (cut back to " + std::to_string(st.st_size) + " bytes)";
}

}  // namespace

int main(int argc, char* argv[])
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, nullptr);  // only SIGKILL ends it half-way; SIGTERM: told_to_stop()
	if (argc != 4 || argv[1][0] != '/' || atoi(argv[3]) <= 0) {
		fprintf(stderr, "usage: laim-mda MAIL_DIR USER SECONDS (run by laimd)\n");
		return EX_USAGE;
	}
	const char* user = argv[2];
	box = std::string(argv[1]) + "/" + user;
	UniqueFd dir;
	std::string unusable = mail_dir_open(argv[1], &dir);
	if (!unusable.empty())
		give_up(EX_TEMPFAIL, "the mail directory: %s", unusable.c_str());
	// Root's own mailbox is delivered as root, but without root's
	// capabilities: the owner's rights are all an append needs. The
	// bounding set goes too when this process may drop it (CAP_SETPCAP,
	// root's delivery); a user's has no capability to drop, and asking
	// libcap-ng to clear the bounding set without CAP_SETPCAP only makes
	// it log a failure to syslog at each delivery. no_new_privs below
	// keeps either from gaining one.
	capng_get_caps_process();
	capng_select_t drop =
		capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP) ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS;
	capng_clear(CAPNG_SELECT_BOTH);
	if (capng_apply(drop) != 0)
		give_up(EX_TEMPFAIL, "dropping capabilities failed");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		give_up(EX_TEMPFAIL, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	sandbox_seccomp_mda(dir.get());

	unsigned seconds = static_cast<unsigned>(atoi(argv[3]));
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += seconds;
	std::string copy = read_copy(deadline);
	bool created = false;
	UniqueFd fd = open_mailbox(dir.get(), user, &created);
	if (created && fsync(dir.get()) != 0)  // the new name, durable before any mail is in it
		give_up(EX_TEMPFAIL, "syncing the mail directory: %s", strerror(errno));
	struct stat st;
	check_mailbox(fd.get(), user, &st);
	lock_fcntl(fd.get());
	bool stale = false;
	std::string dotlock = lock_dotlock(dir.get(), user, &stale);
	if (ms_left(deadline) <= 0) {  // no append starts late (see the header comment)
		unlinkat(dir.get(), dotlock.c_str(), 0);
		give_up(EX_TEMPFAIL, "not appended: reading the copy and locking took more than %u s", seconds);
	}
	if (told_to_stop()) {
		unlinkat(dir.get(), dotlock.c_str(), 0);
		give_up(EX_TEMPFAIL, "not appended: told to stop (SIGTERM)");
	}
	fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
	std::string_view gap;
	std::string failed = append(fd.get(), copy, &gap);
	unlinkat(dir.get(), dotlock.c_str(), 0);
	if (!failed.empty())
		give_up(EX_TEMPFAIL, "%s", failed.c_str());
	dprintf(2, "%s: %zu bytes appended%s%s%s\n", box.c_str(), copy.size(), created ? ", mailbox created" : "",
		gap == "\n\n" ? ", after ending the mailbox's last line" : "",
		stale ? ", a stale dotlock removed" : "");
	return 0;
}
