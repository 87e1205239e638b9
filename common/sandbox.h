// Confinement of the unprivileged processes (smtp, handler, laim-mda):
// identity, capabilities, no_new_privs and seccomp (doc/architecture.md, "Processes").
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>

namespace laim {

struct RunAs {
	std::string name;
	uid_t uid = 0;
	gid_t gid = 0;
};

// Looks up the configured user; fatal error when missing or root.
RunAs sandbox_lookup_user(const std::string& name);

// chroot into root_dir (if not null), then become `who` with no
// supplementary groups, an empty capability bounding set and no
// capabilities at all (libcap-ng), and set PR_SET_NO_NEW_PRIVS. Fatal on
// any failure: a child never runs half-confined.
void sandbox_drop(const RunAs& who, const char* root_dir);

// Seccomp for the smtp process: an allowlist, everything else kills the
// process (SCMP_ACT_KILL_PROCESS; the parent sees SIGSYS); tgkill only to
// this process. Call it in the process it confines: it reads getpid().
void sandbox_seccomp_smtp();

// Seccomp for the handler process: an allowlist of what its handlers,
// the spool and its threads need (threads only, no namespaces, sockets
// of four families); everything else fails with EPERM (why: the comment
// in sandbox.cpp and doc/architecture.md, "Processes").
void sandbox_seccomp_handler();

// Seccomp for laim-mda, the mailbox delivery process (mda/mda.cpp): what
// appending to one file needs, openat and unlinkat only relative to dir
// (the mail directory); everything else kills the process.
void sandbox_seccomp_mda(int dir);

// Remembers main's argv area, which set_process_title may overwrite.
void process_title_init(int argc, char* argv[]);
// Sets what ps shows for this process ("laimd: smtp"): points the kernel's
// view of the command line at a static buffer (needs CAP_SYS_RESOURCE, so
// call it before dropping privileges), or else overwrites the original
// argv area, truncating the title if that area is shorter.
void set_process_title(const char* title);

// Signals of a child process: SIGTERM sets *term (the main loop polls
// it), SIGPIPE and SIGINT (the terminal's, meant for the parent) are
// ignored.
void child_signals(volatile sig_atomic_t* term);

// Makes root_dir an empty directory owned by root, mode 0555.
void sandbox_prepare_chroot(const char* root_dir);

}  // namespace laim
