// The seccomp filters of the smtp and handler processes and of laim-mda,
// syscall by syscall: a child installs the filter exactly as the daemon
// does (sandbox_seccomp_smtp, sandbox_seccomp_handler,
// sandbox_seccomp_mda on an open directory), makes one system call
// and reports its errno; the parent compares that, or the SIGSYS that
// killed the child, with the table. Each refused call is also made
// without a filter, with arguments that then give another answer, so a
// row that a filter no longer covers fails.
#include <check.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/sandbox.h"

using namespace laim;

namespace {

enum class Expect { Allowed, Refused, Killed };

struct Row {
	const char* what;
	long (*call)();
	Expect expect;
	int err;  // Refused: the errno the filter must give
};

struct Outcome {
	bool killed = false;
	int err = 0;  // errno of the call, 0 when it succeeded
};

// The process the "another process" rows aim at: the test itself, read
// before the filter goes in (the smtp filter kills getppid).
pid_t g_other;

// Runs row.call in a child with `install` applied first (none: no
// filter); the child reports the call's errno through a pipe, so that a
// child that died any other way is not mistaken for an answer.
Outcome run_row(const Row& row, void (*install)())
{
	int report[2];
	ck_assert_int_eq(pipe(report), 0);
	g_other = getpid();
	pid_t pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		close(report[0]);
		if (install)
			install();
		errno = 0;
		int err = row.call() == -1 ? errno : 0;
		_exit(write(report[1], &err, sizeof err) == sizeof err ? 0 : 1);
	}
	close(report[1]);
	int err = -1;
	ssize_t got = read(report[0], &err, sizeof err);
	close(report[0]);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st)) {
		ck_assert_msg(WTERMSIG(st) == SIGSYS, "%s: killed by signal %d", row.what, WTERMSIG(st));
		return {true, 0};
	}
	ck_assert_msg(got == sizeof err && WEXITSTATUS(st) == 0, "%s: the child exited %d without a report",
		      row.what, WEXITSTATUS(st));
	return {false, err};
}

std::string describe(const Outcome& o)
{
	return o.killed ? "killed by SIGSYS" : o.err ? strerror(o.err) : "success";
}

bool matches(const Row& row, const Outcome& o)
{
	switch (row.expect) {
	case Expect::Killed:
		return o.killed;
	case Expect::Refused:
		return !o.killed && o.err == row.err;
	case Expect::Allowed:
		return !o.killed && o.err != EPERM && o.err != EACCES && o.err != ENOSYS;
	}
	return false;
}

// Runs every row and fails once, naming each row that answered otherwise.
void check_table(const Row* rows, size_t n, void (*install)(), const char* filter)
{
	std::string wrong;
	for (size_t i = 0; i < n; i++) {
		Outcome o = run_row(rows[i], install);
		if (!matches(rows[i], o))
			wrong += std::string("; ") + rows[i].what + ": got " + describe(o);
	}
	ck_assert_msg(wrong.empty(), "%s filter%s", filter, wrong.c_str());
}

// Without a filter every refused row must answer otherwise, or the row
// would pass whatever the filter says.
void check_rows_bite(const Row* rows, size_t n)
{
	std::string wrong;
	for (size_t i = 0; i < n; i++) {
		if (rows[i].expect == Expect::Allowed)
			continue;
		Outcome o = run_row(rows[i], nullptr);
		if (matches(rows[i], o))
			wrong += std::string("; ") + rows[i].what + " answers " + describe(o);
	}
	ck_assert_msg(wrong.empty(), "even without a filter%s", wrong.c_str());
}

// The calls, with arguments that harm nothing when they are let through.
long call_getpid() { return syscall(SYS_getpid) > 0 ? 0 : -1; }
long call_write_badfd() { return syscall(SYS_write, -1, "x", 1); }
long call_tgkill_self() { return syscall(SYS_tgkill, getpid(), gettid(), 0); }
long call_execve()
{
	char* const argv[] = {const_cast<char*>("/nonexistent/laim-test"), nullptr};
	return syscall(SYS_execve, argv[0], argv, nullptr);
}
long call_execveat() { return syscall(SYS_execveat, -1, "", nullptr, nullptr, 0); }
long call_open() { return syscall(SYS_open, "/nonexistent/laim-test", O_RDONLY); }
long call_openat() { return syscall(SYS_openat, AT_FDCWD, "/nonexistent/laim-test", O_RDONLY); }
long call_open_devnull() { return syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY) >= 0 ? 0 : -1; }
long call_socket_inet() { return syscall(SYS_socket, AF_INET, SOCK_STREAM, 0) >= 0 ? 0 : -1; }
long call_socket_packet() { return syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0) >= 0 ? 0 : -1; }
long call_socket_netlink_route() { return syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE) >= 0 ? 0 : -1; }
long call_socket_netlink_audit() { return syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_AUDIT) >= 0 ? 0 : -1; }
long call_connect() { return syscall(SYS_connect, -1, nullptr, 0); }
long call_bind() { return syscall(SYS_bind, -1, nullptr, 0); }
long call_setsockopt() { return syscall(SYS_setsockopt, -1, SOL_SOCKET, SO_KEEPALIVE, nullptr, 0); }
long call_ptrace() { return syscall(SYS_ptrace, PTRACE_PEEKDATA, g_other, nullptr, nullptr); }
long call_process_vm_writev() { return syscall(SYS_process_vm_writev, g_other, nullptr, 0, nullptr, 0, 0); }
long call_kill_other() { return syscall(SYS_kill, g_other, 0); }
long call_tgkill_other() { return syscall(SYS_tgkill, g_other, g_other, 0); }
// CLONE_NEWUSER with CLONE_FS is invalid: without a filter, EINVAL.
long call_clone_newuser() { return syscall(SYS_clone, CLONE_NEWUSER | CLONE_FS | SIGCHLD, 0, 0, 0, 0); }
// A thread's flags plus one namespace flag, but without CLONE_SIGHAND,
// which CLONE_THREAD needs: without a filter, EINVAL.
template <unsigned long NS>
long call_clone_thread_ns()
{
	return syscall(SYS_clone, CLONE_THREAD | CLONE_VM | NS, 0, 0, 0, 0);
}
long call_clone_fork()
{
	long r = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	return r > 0 ? 0 : -1;
}
long call_clone3() { return syscall(SYS_clone3, nullptr, 0); }
void* thread_body(void* arg) { return arg; }
long call_pthread_create()
{
	pthread_t t;
	int r = pthread_create(&t, nullptr, thread_body, nullptr);
	if (r != 0) {
		errno = r;
		return -1;
	}
	return pthread_join(t, nullptr) == 0 ? 0 : -1;
}
// 0x1 is no unshare flag: without a filter, EINVAL.
long call_unshare() { return syscall(SYS_unshare, CLONE_NEWNET | CLONE_NEWNS | 0x1); }
long call_setns() { return syscall(SYS_setns, -1, CLONE_NEWNET); }
long call_mount() { return syscall(SYS_mount, "none", "/nonexistent/laim-test", "tmpfs", 0, nullptr); }
long call_io_uring_setup() { return syscall(SYS_io_uring_setup, 0, nullptr); }
long call_bpf() { return syscall(SYS_bpf, -1, nullptr, 0); }
long call_keyctl() { return syscall(SYS_keyctl, -1, 0, 0, 0, 0); }
long call_add_key() { return syscall(SYS_add_key, nullptr, nullptr, nullptr, 0, 0); }
long call_perf_event_open() { return syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0); }
long call_userfaultfd() { return syscall(SYS_userfaultfd, -1); }
long call_personality() { return syscall(SYS_personality, 0xffffffff) == -1 ? -1 : 0; }
long call_ioctl_tiocsti() { return syscall(SYS_ioctl, -1, TIOCSTI, "x"); }
// The smtp process's wait for the parent's signature (TLS).
long call_poll() { return syscall(SYS_poll, nullptr, 0, 0); }
long call_ppoll()
{
	struct timespec zero = {};
	return syscall(SYS_ppoll, nullptr, 0, &zero, nullptr, 0);
}

// laim-mda's filter takes the mail directory's descriptor: a directory
// opened just before it goes in (the calls below run after).
int g_mail_dir = -1;
void install_mda()
{
	g_mail_dir = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	sandbox_seccomp_mda(g_mail_dir);
}
long call_openat_mail_dir() { return syscall(SYS_openat, g_mail_dir, "nonexistent-laim-test", O_RDONLY); }
long call_unlinkat_mail_dir() { return syscall(SYS_unlinkat, g_mail_dir, "nonexistent-laim-test", 0); }
long call_unlinkat() { return syscall(SYS_unlinkat, AT_FDCWD, "/nonexistent/laim-test", 0); }
long call_ftruncate_badfd() { return syscall(SYS_ftruncate, -1, 0); }
long call_fsync_badfd() { return syscall(SYS_fsync, -1); }
// Nothing to restart: EINTR.
long call_restart_syscall() { return syscall(SYS_restart_syscall); }
long call_rt_sigpending()
{
	sigset_t pending;
	return syscall(SYS_rt_sigpending, &pending, _NSIG / 8);
}

// The smtp process: an allowlist; open and sockets get EACCES (glibc's
// syslog reconnect), everything else kills.
const Row smtp_rows[] = {
	{"getpid", call_getpid, Expect::Allowed, 0},
	{"write", call_write_badfd, Expect::Allowed, 0},
	{"tgkill to itself", call_tgkill_self, Expect::Allowed, 0},
	{"poll (TLS: the key service's answer)", call_poll, Expect::Allowed, 0},
	{"ppoll", call_ppoll, Expect::Allowed, 0},
	{"execve", call_execve, Expect::Killed, 0},
	{"execveat", call_execveat, Expect::Killed, 0},
	{"open", call_open, Expect::Refused, EACCES},
	{"openat", call_openat, Expect::Refused, EACCES},
	{"socket", call_socket_inet, Expect::Refused, EACCES},
	{"connect", call_connect, Expect::Refused, EACCES},
	{"bind", call_bind, Expect::Killed, 0},
	// TCP_NODELAY comes from the listener: a socket's options are not the
	// smtp process's to change (SO_LINGER, TCP_ULP, buffer sizes).
	{"setsockopt", call_setsockopt, Expect::Killed, 0},
	{"ptrace", call_ptrace, Expect::Killed, 0},
	{"process_vm_writev", call_process_vm_writev, Expect::Killed, 0},
	{"kill to another process", call_kill_other, Expect::Killed, 0},
	{"tgkill to another process", call_tgkill_other, Expect::Killed, 0},
	{"clone with CLONE_NEWUSER", call_clone_newuser, Expect::Killed, 0},
	{"clone thread with CLONE_NEWUSER", call_clone_thread_ns<CLONE_NEWUSER>, Expect::Killed, 0},
	{"fork (clone)", call_clone_fork, Expect::Killed, 0},
	{"clone3", call_clone3, Expect::Killed, 0},
	{"unshare", call_unshare, Expect::Killed, 0},
	{"setns", call_setns, Expect::Killed, 0},
	{"mount", call_mount, Expect::Killed, 0},
	{"io_uring_setup", call_io_uring_setup, Expect::Killed, 0},
	{"bpf", call_bpf, Expect::Killed, 0},
	{"keyctl", call_keyctl, Expect::Killed, 0},
	{"add_key", call_add_key, Expect::Killed, 0},
	{"perf_event_open", call_perf_event_open, Expect::Killed, 0},
	{"userfaultfd", call_userfaultfd, Expect::Killed, 0},
	{"personality", call_personality, Expect::Killed, 0},
	{"ioctl TIOCSTI", call_ioctl_tiocsti, Expect::Killed, 0},
};

// The handler process: files, sockets and threads; anything else EPERM.
const Row handler_rows[] = {
	{"getpid", call_getpid, Expect::Allowed, 0},
	{"write", call_write_badfd, Expect::Allowed, 0},
	{"tgkill to itself", call_tgkill_self, Expect::Allowed, 0},
	{"openat /dev/null", call_open_devnull, Expect::Allowed, 0},
	{"socket AF_INET", call_socket_inet, Expect::Allowed, 0},
	{"socket NETLINK_ROUTE", call_socket_netlink_route, Expect::Allowed, 0},
	{"connect", call_connect, Expect::Allowed, 0},
	{"bind", call_bind, Expect::Allowed, 0},
	{"pthread_create", call_pthread_create, Expect::Allowed, 0},
	{"socket AF_PACKET", call_socket_packet, Expect::Refused, EPERM},
	{"socket NETLINK_AUDIT", call_socket_netlink_audit, Expect::Refused, EPERM},
	{"execve", call_execve, Expect::Refused, EPERM},
	{"execveat", call_execveat, Expect::Refused, EPERM},
	{"ptrace", call_ptrace, Expect::Refused, EPERM},
	{"process_vm_writev", call_process_vm_writev, Expect::Refused, EPERM},
	{"kill to another process", call_kill_other, Expect::Refused, EPERM},
	{"tgkill to another process", call_tgkill_other, Expect::Refused, EPERM},
	{"clone with CLONE_NEWUSER", call_clone_newuser, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWNS", call_clone_thread_ns<CLONE_NEWNS>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWUSER", call_clone_thread_ns<CLONE_NEWUSER>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWPID", call_clone_thread_ns<CLONE_NEWPID>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWNET", call_clone_thread_ns<CLONE_NEWNET>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWUTS", call_clone_thread_ns<CLONE_NEWUTS>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWIPC", call_clone_thread_ns<CLONE_NEWIPC>, Expect::Refused, EPERM},
	{"clone thread with CLONE_NEWCGROUP", call_clone_thread_ns<CLONE_NEWCGROUP>, Expect::Refused, EPERM},
	{"fork (clone)", call_clone_fork, Expect::Refused, EPERM},
	{"clone3", call_clone3, Expect::Refused, ENOSYS},
	{"unshare", call_unshare, Expect::Refused, EPERM},
	{"setns", call_setns, Expect::Refused, EPERM},
	{"mount", call_mount, Expect::Refused, EPERM},
	{"io_uring_setup", call_io_uring_setup, Expect::Refused, EPERM},
	{"bpf", call_bpf, Expect::Refused, EPERM},
	{"keyctl", call_keyctl, Expect::Refused, EPERM},
	{"add_key", call_add_key, Expect::Refused, EPERM},
	{"perf_event_open", call_perf_event_open, Expect::Refused, EPERM},
	{"userfaultfd", call_userfaultfd, Expect::Refused, EPERM},
	{"personality", call_personality, Expect::Refused, EPERM},
	{"ioctl TIOCSTI", call_ioctl_tiocsti, Expect::Refused, EPERM},
};

// laim-mda: appending to a file in the mail directory; anything else
// kills it (an open outside the directory's descriptor included).
const Row mda_rows[] = {
	{"getpid", call_getpid, Expect::Allowed, 0},
	{"write", call_write_badfd, Expect::Allowed, 0},
	{"fsync", call_fsync_badfd, Expect::Allowed, 0},
	{"ftruncate", call_ftruncate_badfd, Expect::Allowed, 0},
	{"restart_syscall (a poll continued after a stop)", call_restart_syscall, Expect::Allowed, 0},
	{"rt_sigpending (the parent's SIGTERM)", call_rt_sigpending, Expect::Allowed, 0},
	{"openat in the mail directory", call_openat_mail_dir, Expect::Allowed, 0},
	{"unlinkat in the mail directory", call_unlinkat_mail_dir, Expect::Allowed, 0},
	{"openat elsewhere", call_openat, Expect::Killed, 0},
	{"open", call_open, Expect::Killed, 0},
	{"unlinkat elsewhere", call_unlinkat, Expect::Killed, 0},
	{"execve", call_execve, Expect::Killed, 0},
	{"execveat", call_execveat, Expect::Killed, 0},
	{"socket", call_socket_inet, Expect::Killed, 0},
	{"connect", call_connect, Expect::Killed, 0},
	{"bind", call_bind, Expect::Killed, 0},
	{"ptrace", call_ptrace, Expect::Killed, 0},
	{"process_vm_writev", call_process_vm_writev, Expect::Killed, 0},
	{"kill to another process", call_kill_other, Expect::Killed, 0},
	{"tgkill to another process", call_tgkill_other, Expect::Killed, 0},
	{"fork (clone)", call_clone_fork, Expect::Killed, 0},
	{"clone3", call_clone3, Expect::Killed, 0},
	{"unshare", call_unshare, Expect::Killed, 0},
	{"setns", call_setns, Expect::Killed, 0},
	{"mount", call_mount, Expect::Killed, 0},
	{"io_uring_setup", call_io_uring_setup, Expect::Killed, 0},
	{"bpf", call_bpf, Expect::Killed, 0},
	{"keyctl", call_keyctl, Expect::Killed, 0},
	{"perf_event_open", call_perf_event_open, Expect::Killed, 0},
	{"userfaultfd", call_userfaultfd, Expect::Killed, 0},
	{"personality", call_personality, Expect::Killed, 0},
	{"ioctl TIOCSTI", call_ioctl_tiocsti, Expect::Killed, 0},
};

}  // namespace

START_TEST(smtp_filter)
{
	check_table(smtp_rows, sizeof smtp_rows / sizeof *smtp_rows, sandbox_seccomp_smtp, "smtp");
}
END_TEST

START_TEST(handler_filter)
{
	check_table(handler_rows, sizeof handler_rows / sizeof *handler_rows, sandbox_seccomp_handler, "handler");
}
END_TEST

START_TEST(mda_filter)
{
	check_table(mda_rows, sizeof mda_rows / sizeof *mda_rows, install_mda, "laim-mda");
}
END_TEST

// As root, like make check: unprivileged, bpf, userfaultfd and raw
// sockets answer EPERM even without a filter.
START_TEST(rows_bite_without_filter)
{
	ck_assert_msg(geteuid() == 0, "run as root (make check is): unprivileged, some rows answer EPERM anyway");
	check_rows_bite(smtp_rows, sizeof smtp_rows / sizeof *smtp_rows);
	check_rows_bite(handler_rows, sizeof handler_rows / sizeof *handler_rows);
	check_rows_bite(mda_rows, sizeof mda_rows / sizeof *mda_rows);
}
END_TEST

int main()
{
	Suite* s = suite_create("seccomp");
	TCase* tc = tcase_create("filters");
	tcase_add_test(tc, smtp_filter);
	tcase_add_test(tc, handler_filter);
	tcase_add_test(tc, mda_filter);
	tcase_add_test(tc, rows_bite_without_filter);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
