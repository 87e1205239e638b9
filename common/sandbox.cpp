#include <config.h>

#include "common/sandbox.h"

#include <cap-ng.h>
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <linux/netlink.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <initializer_list>
#include <cstring>

#include "common/log.h"

namespace laim {

RunAs sandbox_lookup_user(const std::string& name)
{
	errno = 0;
	struct passwd* pw = getpwnam(name.c_str());
	if (!pw)
		fatalx("user \"%s\" does not exist (create it: adduser --system --group %s)", name.c_str(), name.c_str());
	if (pw->pw_uid == 0)
		fatalx("user \"%s\" is root: laim's children must run unprivileged", name.c_str());
	return {name, pw->pw_uid, pw->pw_gid};
}

void sandbox_drop(const RunAs& who, const char* root_dir)
{
	if (root_dir) {
		if (chroot(root_dir) == -1)
			fatal("chroot %s", root_dir);
		if (chdir("/") == -1)
			fatal("chdir / in chroot");
	}
	capng_clear(CAPNG_SELECT_ALL);
	int r = capng_change_id(static_cast<int>(who.uid), static_cast<int>(who.gid),
				static_cast<capng_flags_t>(CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING));
	if (r != 0)
		fatalx("cannot change to user %s (uid %u): capng_change_id failed (%d)", who.name.c_str(),
		       (unsigned)who.uid, r);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL)
		fatal("clearing ambient capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("PR_SET_NO_NEW_PRIVS");
	// Belt and braces: prove the drop took before serving anything.
	if (getuid() != who.uid || geteuid() != who.uid || getgid() != who.gid || getegid() != who.gid ||
	    setuid(0) != -1 || getgroups(0, nullptr) != 0)
		fatalx("privilege drop to %s did not take", who.name.c_str());
}

namespace {

// Adds one rule for the syscall `name` (skipped where this architecture
// has no such call), with up to two argument comparisons.
void seccomp_add(scmp_filter_ctx ctx, uint32_t action, const char* name,
		 std::initializer_list<scmp_arg_cmp> args = {})
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return;  // not a syscall on this architecture
	int r = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()), args.begin());
	if (r < 0)
		fatalx("seccomp rule for %s: %s", name, strerror(-r));
}

void seccomp_load_or_die(scmp_filter_ctx ctx, const char* what)
{
	int r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0)
		fatalx("loading the %s seccomp filter: %s", what, strerror(-r));
}

// tgkill only to this process's own threads: glibc's abort() and raise()
// use it, and nothing else may signal another process.
void seccomp_allow_tgkill_self(scmp_filter_ctx ctx)
{
	seccomp_add(ctx, SCMP_ACT_ALLOW, "tgkill", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid()))});
}

}  // namespace

void sandbox_seccomp_smtp()
{
	// What an epoll loop over sockets, writing to inherited spool fds,
	// needs from glibc and the kernel; nothing that opens, connects or
	// executes anything.
	static const char* const allow[] = {
		"read", "write", "writev", "close", "epoll_wait", "epoll_pwait", "epoll_ctl",
		"accept", "accept4", "recvmsg", "sendmsg", "recvmmsg", "sendmmsg", "recvfrom", "sendto", "getsockopt",
		"shutdown", "fcntl", "fstat", "newfstatat", "brk", "mmap", "munmap",
		"mremap", "madvise", "mprotect", "futex",
		"clock_gettime", "gettimeofday", "time", "getpid", "gettid", "rt_sigreturn",
		"rt_sigprocmask", "exit", "exit_group", "restart_syscall", "getrandom",
		"clock_nanosleep", "nanosleep",
		// TLS: a handshake waits in poll for the parent's answer to a
		// private-key operation (smtp/tls.cpp); OpenSSL's DRBG reseeds
		// with getrandom, above.
		"poll", "ppoll",
	};
	// Denied quietly so glibc's syslog reconnect or a stray open fails
	// with an error instead of killing a process that serves clients.
	static const char* const refuse[] = {"openat", "open", "socket", "connect"};

	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		fatalx("seccomp_init failed");
	for (const char* name : allow)
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
	seccomp_allow_tgkill_self(ctx);
#ifdef LAIM_SANITIZERS
	// --enable-sanitizers only: the ASan/UBSan runtime probes memory
	// through a pipe and reads its own limits while reporting.
	for (const char* name : {"pipe", "pipe2", "sigaltstack", "prlimit64", "getrlimit", "sched_yield",
				 "readlink", "rt_sigaction", "prctl"})
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
#endif
	for (const char* name : refuse)
		seccomp_add(ctx, SCMP_ACT_ERRNO(EACCES), name);
	seccomp_load_or_die(ctx, "smtp");
}

namespace {

// The handler process's allowlist, by what needs each group. Anything
// not here fails with EPERM (see sandbox_seccomp_handler).
const char* const handler_allow[] = {
	// the event loop, imsg channels to the parent and smtp (fd passing),
	// the committer thread's eventfd, timers
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek",
	"close", "close_range", "dup", "dup2", "dup3", "fcntl", "epoll_create1", "epoll_ctl",
	"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6",
	"eventfd2", "pipe", "pipe2", "recvmsg", "sendmsg",
	// the spool, maildir and the queue: create, write, fsync and rename
	// files and directories below the spool and the configured paths
	"openat", "open", "creat", "fstat", "newfstatat", "stat", "lstat", "statx", "fstatfs",
	"statfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64",
	"mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
	"link", "linkat", "fsync", "fdatasync", "syncfs", "sync_file_range", "fallocate", "ftruncate",
	"fchmod", "fchmodat", "umask", "getcwd", "chdir", "fchdir", "flock", "utimensat",
	"sendfile", "copy_file_range", "memfd_create",
	// handlers that talk to networks: lmtp, smarthost (OpenSSL), webhook
	// (libcurl), forward (libresolv's UDP/TCP queries); socket() itself
	// is argument-filtered below
	"connect", "bind", "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown",
	"sendto", "recvfrom", "sendmmsg", "recvmmsg", "socketpair",
	// memory, threads (the committer, the delivery workers, libcurl's
	// resolver; clone is argument-filtered below), signals, time,
	// identity, limits
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "futex", "set_robust_list",
	"rseq", "set_tid_address", "sched_yield", "sched_getaffinity", "exit", "exit_group",
	"getpid", "gettid", "getppid", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
	"sigaltstack", "restart_syscall", "getuid", "geteuid", "getgid", "getegid", "getgroups",
	"getresuid", "getresgid", "uname", "getrlimit", "getrusage", "sysinfo", "clock_gettime",
	"clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep", "getrandom",
	// the control socket (handler/control.cpp) accepts laimctl
	"accept", "accept4",
	// the mbox format's open with RESOLVE_NO_SYMLINKS (handler/api/mbox_format.cpp)
	"openat2",
};

// The handler's calls allowed only with certain arguments.
void seccomp_allow_handler_filtered(scmp_filter_ctx ctx)
{
	seccomp_allow_tgkill_self(ctx);
	// Threads only: a clone without CLONE_THREAD (fork, posix_spawn) or
	// with any namespace flag is refused. Commands run from the root
	// parent (parent/command.cpp): this process never starts a program.
	const scmp_datum_t ns = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
				CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
#if defined(__s390__) || defined(__s390x__)
	// s390's clone takes the stack first and the flags second.
	seccomp_add(ctx, SCMP_ACT_ALLOW, "clone", {SCMP_A1(SCMP_CMP_MASKED_EQ, ns | CLONE_THREAD, CLONE_THREAD)});
#else
	seccomp_add(ctx, SCMP_ACT_ALLOW, "clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, ns | CLONE_THREAD, CLONE_THREAD)});
#endif
	// clone3 passes its flags in memory a filter cannot read: ENOSYS
	// makes glibc fall back to clone, which the rule above judges.
	seccomp_add(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3");
	// Sockets of the families mail needs: unix (syslog, nscd), IPv4 and
	// IPv6, and NETLINK_ROUTE for getaddrinfo's AI_ADDRCONFIG.
	for (int family : {AF_UNIX, AF_INET, AF_INET6})
		seccomp_add(ctx, SCMP_ACT_ALLOW, "socket", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))});
	seccomp_add(ctx, SCMP_ACT_ALLOW, "socket",
		    {SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_EQ, NETLINK_ROUTE)});
	// isatty() (stdio's buffering) and non-blocking sockets.
	for (unsigned long req : {TCGETS, FIONBIO, FIONREAD})
		seccomp_add(ctx, SCMP_ACT_ALLOW, "ioctl", {SCMP_A1(SCMP_CMP_EQ, req)});
	// Thread names only (pthread_setname_np, pthread_getname_np). The
	// other prctl seen here, libcap's constructor probing the bounding set
	// when getpwnam loads libnss_systemd, gets EPERM and copes.
	for (int option : {PR_SET_NAME, PR_GET_NAME})
		seccomp_add(ctx, SCMP_ACT_ALLOW, "prctl", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(option))});
	// prlimit64 to read this process's own limits (pid 0, no new limit).
	seccomp_add(ctx, SCMP_ACT_ALLOW, "prlimit64", {SCMP_A0(SCMP_CMP_EQ, 0), SCMP_A2(SCMP_CMP_EQ, 0)});
}

}  // namespace

void sandbox_seccomp_handler()
{
	// Default EPERM, not kill: this process holds accepted mail, and
	// glibc, OpenSSL and libcurl probe for newer calls and fall back when
	// refused; a kill there would turn a probe into a restart loop with
	// deliveries stuck behind it, an error fails one delivery, which the
	// queue retries and the log names.
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		fatalx("seccomp_init failed");
	for (const char* name : handler_allow)
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
	seccomp_allow_handler_filtered(ctx);
	seccomp_load_or_die(ctx, "handler");
}

void sandbox_seccomp_mda(int dir)
{
	// Appending one message to one file: read stdin (with a deadline),
	// open, lock, stat, write, fsync and cut back the mailbox, make and
	// remove the dotlock, say why on stderr, exit; memory for the copy;
	// rt_sigpending: a SIGTERM from the parent (blocked) cancels the append.
	// Files are opened and unlinked only relative to the mail directory
	// (the filter sees the descriptor, never the name: the names come
	// from laim-mda itself, and it runs as the recipient). restart_syscall:
	// its user may stop it, the parent continues it, and the kernel then
	// resumes its poll with that call.
	static const char* const allow[] = {
		"read", "write", "close", "fstat", "newfstatat", "fcntl", "fsync", "ftruncate", "lseek",
		"poll", "ppoll", "brk", "mmap", "munmap", "mremap", "madvise", "clock_gettime", "getpid", "getuid",
		"rt_sigprocmask", "rt_sigpending", "rt_sigreturn", "restart_syscall", "exit", "exit_group",
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		fatalx("seccomp_init failed");
	for (const char* name : allow)
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
	for (const char* name : {"openat", "unlinkat"})
		seccomp_add(ctx, SCMP_ACT_ALLOW, name, {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(dir))});
#ifdef LAIM_SANITIZERS
	for (const char* name : {"pipe", "pipe2", "sigaltstack", "prlimit64", "getrlimit", "sched_yield",
				 "readlink", "rt_sigaction", "prctl", "gettid", "futex"})
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
	seccomp_allow_tgkill_self(ctx);
#endif
	seccomp_load_or_die(ctx, "laim-mda");
}

namespace {
char* argv_start = nullptr;
size_t argv_len = 0;
}  // namespace

void process_title_init(int argc, char* argv[])
{
	if (argc < 1)
		return;
	argv_start = argv[0];
	char* end = argv[0] + strlen(argv[0]) + 1;
	for (int i = 1; i < argc && argv[i] == end; i++)
		end = argv[i] + strlen(argv[i]) + 1;
	argv_len = static_cast<size_t>(end - argv_start);
}

void set_process_title(const char* title)
{
	static char buf[64];
	size_t n = strnlen(title, sizeof buf - 1);
	memcpy(buf, title, n);
	buf[n] = '\0';
	// ARG_START first: the new buffer lies below the stack, so start < end
	// holds after each step.
	if (prctl(PR_SET_MM, PR_SET_MM_ARG_START, reinterpret_cast<unsigned long>(buf), 0, 0) == 0 &&
	    prctl(PR_SET_MM, PR_SET_MM_ARG_END, reinterpret_cast<unsigned long>(buf + n + 1), 0, 0) == 0)
		return;
	if (argv_len < 2)
		return;
	memset(argv_start, 0, argv_len);
	memcpy(argv_start, buf, std::min(n, argv_len - 1));
}

namespace {
volatile sig_atomic_t* term_flag = nullptr;
void on_term(int) { *term_flag = 1; }
}  // namespace

void child_signals(volatile sig_atomic_t* term)
{
	term_flag = term;
	struct sigaction sa = {};
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, nullptr);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
}

void sandbox_prepare_chroot(const char* root_dir)
{
	std::string path(root_dir);
	for (size_t i = 1; i <= path.size(); i++) {
		if (i != path.size() && path[i] != '/')
			continue;
		std::string p = path.substr(0, i);
		if (mkdir(p.c_str(), 0755) == -1 && errno != EEXIST)
			fatal("mkdir %s", p.c_str());
	}
	struct stat st;
	if (lstat(root_dir, &st) == -1)
		fatal("%s", root_dir);
	if (!S_ISDIR(st.st_mode))
		fatalx("%s: chroot directory is not a directory", root_dir);
	if (st.st_uid != 0 && chown(root_dir, 0, 0) == -1)
		fatal("chown %s", root_dir);
	if (chmod(root_dir, 0555) == -1)
		fatal("chmod %s", root_dir);
	DIR* d = opendir(root_dir);
	if (!d)
		fatal("%s", root_dir);
	struct dirent* e;
	int entries = 0;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			entries++;
	closedir(d);
	if (entries)
		fatalx("%s: chroot directory must be empty", root_dir);
}

}  // namespace laim
