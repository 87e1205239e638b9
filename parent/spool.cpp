// The spool's directories, made and handed to the unprivileged user by
// the root parent before the handler process starts (handler/spool.h
// describes the layout).
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.h"
#include "parent/parent.h"

namespace laim {

namespace {

// Makes dir/sub (mode 0700) when missing and opens it. The spool belongs
// to the unprivileged user, so root never follows a link planted there.
UniqueFd open_spool_dir(int dir, const std::string& path, const char* sub)
{
	if (mkdirat(dir, sub, 0700) == -1 && errno != EEXIST)
		fatal("spool %s: mkdir %s", path.c_str(), sub);
	UniqueFd fd(openat(dir, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (!fd && (errno == ELOOP || errno == ENOTDIR))
		fatalx("spool %s: %s is a symbolic link or not a directory", path.c_str(), sub);
	if (!fd)
		fatal("spool %s: %s", path.c_str(), sub);
	return fd;
}

// A spool directory the user does not own yet is handed over only when
// empty: a typo ("spool: /var/spool") must not give it a system directory.
void check_unowned_spool(int fd, const std::string& spool, uid_t uid)
{
	struct stat st;
	if (fstat(fd, &st) == -1)
		fatal("spool %s", spool.c_str());
	if (st.st_uid == uid)
		return;
	DIR* d = fdopendir(dup(fd));
	if (!d)
		fatal("spool %s", spool.c_str());
	bool empty = true;
	while (struct dirent* de = readdir(d))
		empty = empty && (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."));
	closedir(d);
	if (!empty)
		fatalx("spool %s: a directory that laimd's user does not own, and not empty (owner uid %u): "
		       "give laimd a directory of its own", spool.c_str(), (unsigned)st.st_uid);
}

// The spool serves one laimd at a time: a second one would deliver its
// queue again and remove the first one's files in reception as cut off.
// SPOOL/lock, root's, is flock()ed for the daemon's life, before any
// socket is bound or spool directory changed, and holds the pid for the
// message of a laimd that finds it taken. The user owns the spool, so the
// file is checked before anything is written to it: not a link to another
// of root's files.
UniqueFd lock_spool(int top, const std::string& spool)
{
	UniqueFd fd(openat(top, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644));
	if (!fd)
		fatal("spool %s: lock", spool.c_str());
	struct stat st;
	if (fstat(fd.get(), &st) == -1)
		fatal("spool %s: lock", spool.c_str());
	if (!S_ISREG(st.st_mode) || st.st_uid != 0 || st.st_nlink != 1)
		fatalx("spool %s: lock is not a file of root's with one link: remove it", spool.c_str());
	if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
		write_spool_lock_pid(fd.get(), spool);
		return fd;
	}
	if (errno != EWOULDBLOCK)
		fatal("spool %s: flock lock", spool.c_str());
	char buf[16] = {};
	long pid = pread(fd.get(), buf, sizeof buf - 1, 0) > 0 ? strtol(buf, nullptr, 10) : 0;
	if (pid <= 0)
		fatalx("%s is in use by another laimd; stop it first", spool.c_str());
	if (kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH)
		fatalx("%s is in use by a process left by laimd pid %ld, which ended; stop it first", spool.c_str(), pid);
	fatalx("%s is in use by laimd pid %ld; stop it first", spool.c_str(), pid);
}

}  // namespace

// The pid, for the message of a second laimd; a failure only costs that
// message its pid.
void write_spool_lock_pid(int lock, const std::string& spool)
{
	std::string pid = std::to_string(getpid()) + "\n";
	if (ftruncate(lock, 0) == -1 || pwrite(lock, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
		log_warn("spool %s: writing the pid to lock", spool.c_str());
}

// The spool belongs to the unprivileged user. offline/ also admits the
// setgid laim-drop (group laimdrop): the spool is group-searchable and
// offline/ group-writable but not readable, sticky like Postfix's maildrop.
// Root works on these directories through O_NOFOLLOW descriptors only: the
// user owns them and could have swapped one for a link to /etc.
void prepare_spool(Runtime& rt)
{
	const std::string& spool = rt.cfg.spool;
	std::string parent = spool.substr(0, spool.find_last_of('/') + 1);
	struct stat pst;
	if (stat(parent.c_str(), &pst) == -1)
		fatal("spool %s: its parent directory %s", spool.c_str(), parent.c_str());
	if (pst.st_uid != 0 || (pst.st_mode & (S_IWGRP | S_IWOTH)))
		fatalx("spool %s: its parent directory %s must be owned by root and not writable by group or others",
		       spool.c_str(), parent.c_str());
	struct group* gr = getgrnam(LAIM_DROP_GROUP);
	rt.have_drop_group = gr != nullptr;
	if (gr)
		rt.drop_gid = gr->gr_gid;
	else
		log_warnx("group %s does not exist: sendmail cannot store mail while laimd is down", LAIM_DROP_GROUP);
	struct {
		const char* sub;
		bool drop;
		mode_t mode;
	} dirs[] = {{".", true, 0710}, {"incoming", false, 0700}, {"queue", false, 0700},
		    {"failed", false, 0700}, {"free", false, 0700}, {"offline", true, 01730}};
	UniqueFd top = open_spool_dir(AT_FDCWD, spool, spool.c_str());
	check_unowned_spool(top.get(), spool, rt.user.uid);
	rt.spool_lock = lock_spool(top.get(), spool);
	for (const auto& d : dirs) {
		UniqueFd fd = open_spool_dir(top.get(), spool, d.sub);
		gid_t gid = d.drop && gr ? rt.drop_gid : rt.user.gid;
		mode_t mode = d.drop && gr ? d.mode : 0700;
		if (fchown(fd.get(), rt.user.uid, gid) == -1 || fchmod(fd.get(), mode) == -1)
			fatal("spool %s/%s", spool.c_str(), d.sub);
	}
}

}  // namespace laim
