#include <config.h>

#include "common/sandbox.h"

#include <cap-ng.h>
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace laim {

RunAs sandbox_lookup_user(const std::string& name)
{
	errno = 0;
	struct passwd* pw = getpwnam(name.c_str());
	if (!pw)
		fatalx("user \"%s\" does not exist (create it: useradd --system laim)", name.c_str());
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

void seccomp_add(scmp_filter_ctx ctx, uint32_t action, const char* name)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return;  // not a syscall on this architecture
	int r = seccomp_rule_add(ctx, action, nr, 0);
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

}  // namespace

void sandbox_seccomp_smtp()
{
	// What an epoll loop over sockets, writing to inherited spool fds,
	// needs from glibc and the kernel; nothing that opens, connects or
	// executes anything.
	static const char* const allow[] = {
		"read", "write", "writev", "close", "epoll_wait", "epoll_pwait", "epoll_ctl",
		"accept", "accept4", "recvmsg", "sendmsg", "recvfrom", "sendto", "getsockopt",
		"setsockopt", "getsockname", "getpeername", "shutdown", "fcntl", "fstat", "newfstatat",
		"brk", "mmap", "munmap", "mremap", "madvise", "mprotect", "futex",
		"clock_gettime", "gettimeofday", "time", "getpid", "gettid", "rt_sigreturn",
		"rt_sigprocmask", "exit", "exit_group", "restart_syscall", "tgkill", "getrandom",
		"clock_nanosleep", "nanosleep",
	};
	// Denied quietly so glibc's syslog reconnect or a stray open fails
	// with an error instead of killing a process that serves clients.
	static const char* const refuse[] = {"openat", "open", "socket", "connect"};

	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		fatalx("seccomp_init failed");
	for (const char* name : allow)
		seccomp_add(ctx, SCMP_ACT_ALLOW, name);
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

void sandbox_seccomp_handler()
{
	static const char* const deny[] = {
		"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "mount", "umount2",
		"pivot_root", "chroot", "unshare", "setns", "swapon", "swapoff", "reboot",
		"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
		"bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
		"acct", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at", "quotactl",
		"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "personality",
		"lookup_dcookie", "fanotify_init", "syslog", "vhangup", "sethostname",
		"setdomainname", "mbind", "migrate_pages", "move_pages", "set_mempolicy",
		"fsopen", "fsmount", "fsconfig", "move_mount", "open_tree",
		// Commands run from the root parent (parent/command.cpp): this
		// process never starts a program.
		"execve", "execveat",
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		fatalx("seccomp_init failed");
	for (const char* name : deny)
		seccomp_add(ctx, SCMP_ACT_ERRNO(EPERM), name);
	seccomp_load_or_die(ctx, "handler");
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
