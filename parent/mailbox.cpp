// The parent's mailbox service: the unprivileged handler process asks for
// a user's mailbox (mail_dir/USER, Debian's /var/mail layout) and gets an
// open, locked descriptor back. Only root can create a mailbox owned by its
// user, and only root should decide which file that is, so the request
// carries a user name, never a path.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/aliases.h"
#include "common/log.h"
#include "common/proto.h"
#include "handler/api/handler.h"
#include "parent/parent.h"

namespace laim {

namespace {

// A dotlock older than this is left over from a crash (liblockfile and
// mutt use the same age).
constexpr time_t STALE_DOTLOCK = 300;
// Mailboxes the handler process may hold at once: more than its delivery
// threads ever need, few enough that it cannot lock every user out.
constexpr size_t MAX_LEASES = 64;
// One append never takes this long; a lease that does is a handler
// process that holds mailboxes locked on purpose or by a bug. Well under
// STALE_DOTLOCK, so a reader never removes a dotlock still leased.
constexpr time_t MAX_LEASE_AGE = 120;

// What may name a mailbox file: a plain user name, never a path.
bool valid_user_name(const std::string& user)
{
	if (user.empty() || user.size() > 64 || user[0] == '-' || user[0] == '.')
		return false;
	return std::all_of(user.begin(), user.end(), [](unsigned char c) {
		return isalnum(c) || c == '.' || c == '_' || c == '-';
	});
}

// True when /etc/aliases sends this name's mail elsewhere and not also to
// itself (as "root", or "root@" one of this host's names): the handler
// must then never ask for its mailbox.
bool aliased_away(const Config& cfg, const std::string& user)
{
	Aliases::Expansion x = Aliases::load(cfg.aliases, nullptr).expand(user);
	return std::none_of(x.addresses.begin(), x.addresses.end(), [&](const std::string& a) {
		return local_part(a) == user && is_local_address(a);
	});
}

// Opens mail_dir/USER for appending without following a link, creating it
// USER:mail 0660 (Debian's mode) when missing.
UniqueFd open_mailbox(int dir, const std::string& user, uid_t uid, gid_t user_gid, MailboxRefusal& no)
{
	const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	for (int attempt = 0; attempt < 2; attempt++) {
		UniqueFd fd(openat(dir, user.c_str(), flags));
		if (fd || errno != ENOENT) {
			if (!fd)
				no = {MailboxStatus::TempFail, errno == ELOOP ? "is a symbolic link" : strerror(errno)};
			return fd;
		}
		fd.reset(openat(dir, user.c_str(), flags | O_CREAT | O_EXCL, 0600));
		if (!fd && errno == EEXIST)
			continue;  // created meanwhile: open that one
		if (!fd) {
			no = {MailboxStatus::TempFail, std::string("create: ") + strerror(errno)};
			return fd;
		}
		struct group* mail = getgrnam("mail");
		gid_t gid = mail ? mail->gr_gid : user_gid;
		if (fchown(fd.get(), uid, gid) == -1 || fchmod(fd.get(), mail ? 0660 : 0600) == -1) {
			no = {MailboxStatus::TempFail, std::string("create: ") + strerror(errno)};
			unlinkat(dir, user.c_str(), 0);  // else a root-owned file would block every later try
			return UniqueFd();
		}
		log_info("mailbox created for %s", user.c_str());
		return fd;
	}
	no = {MailboxStatus::TempFail, "keeps appearing and disappearing"};
	return UniqueFd();
}

// The mailbox must be the user's own regular file with one name, or a
// link made by someone else could point the append anywhere.
bool check_mailbox(int fd, const std::string& user, uid_t uid, MailboxRefusal& no)
{
	struct stat st;
	if (fstat(fd, &st) == -1)
		no = {MailboxStatus::TempFail, strerror(errno)};
	else if (!S_ISREG(st.st_mode))
		no = {MailboxStatus::TempFail, "is not a regular file"};
	else if (st.st_nlink != 1)
		no = {MailboxStatus::TempFail, "has " + std::to_string(st.st_nlink) + " hard links"};
	else if (st.st_uid != uid)
		no = {MailboxStatus::TempFail, "is owned by uid " + std::to_string(st.st_uid) + ", not " + user};
	else
		return true;
	return false;
}

// The fcntl lock every Debian mail reader takes, as an open file
// description lock: it travels with the descriptor to the handler process
// and ends when that closes it.
bool lock_fcntl(int fd, MailboxRefusal& no)
{
	struct flock lk {};
	lk.l_type = F_WRLCK;
	lk.l_whence = SEEK_SET;
	if (fcntl(fd, F_OFD_SETLK, &lk) == 0)
		return true;
	if (errno == EAGAIN || errno == EACCES)
		no = {MailboxStatus::Busy, "locked (fcntl) by a mail reader"};
	else
		no = {MailboxStatus::TempFail, std::string("fcntl lock: ") + strerror(errno)};
	return false;
}

// USER.lock, created exclusively (after the fcntl lock, as Debian policy
// orders them); a stale one is removed first.
bool lock_dotlock(int dir, const std::string& name, struct stat* made, MailboxRefusal& no)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		UniqueFd fd(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
		if (fd) {
			std::string pid = std::to_string(getpid()) + "\n";
			(void)!write(fd.get(), pid.data(), pid.size());
			return fstat(fd.get(), made) == 0;
		}
		struct stat st;
		if (errno != EEXIST || fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1) {
			no = {MailboxStatus::TempFail, name + ": " + strerror(errno)};
			return false;
		}
		if (time(nullptr) - st.st_mtime < STALE_DOTLOCK) {
			no = {MailboxStatus::Busy, "locked (" + name + ") by a mail reader"};
			return false;
		}
		log_warnx("%s: removing a stale dotlock", name.c_str());
		unlinkat(dir, name.c_str(), 0);
	}
	no = {MailboxStatus::Busy, "locked (" + name + ")"};
	return false;
}

}  // namespace

// Opens and locks USER's mailbox for lease id, or says why not.
UniqueFd MailboxService::open(const Config& cfg, uint32_t id, const std::string& user, MailboxRefusal& no)
{
	struct passwd* pw = getpwnam(user.c_str());
	if (!pw || pw->pw_name != user) {
		no = {MailboxStatus::PermFail, "no such user"};
		return UniqueFd();
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (uid == 0 && aliased_away(cfg, user)) {
		no = {MailboxStatus::PermFail, cfg.aliases + " sends this user's mail elsewhere (run newaliases)"};
		return UniqueFd();
	}
	if (leases_.size() >= MAX_LEASES) {
		no = {MailboxStatus::TempFail, "too many mailboxes open at once"};
		return UniqueFd();
	}
	UniqueFd dir(::open(cfg.mail_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct stat dst;
	if (!dir || fstat(dir.get(), &dst) == -1 || dst.st_uid != 0) {
		no = {MailboxStatus::TempFail, dir ? "the directory is not root's" : strerror(errno)};
		return UniqueFd();
	}
	UniqueFd fd = open_mailbox(dir.get(), user, uid, gid, no);
	Lease lease{cfg.mail_dir, user + ".lock", 0, 0, 0};
	struct stat made;
	if (!fd || !check_mailbox(fd.get(), user, uid, no) || !lock_fcntl(fd.get(), no) ||
	    !lock_dotlock(dir.get(), lease.dotlock, &made, no))
		return UniqueFd();
	fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
	lease.dev = made.st_dev;
	lease.ino = made.st_ino;
	lease.granted = time(nullptr);
	leases_[id] = std::move(lease);
	return fd;
}

// Removes a lease's dotlock, if it is still the file this service made.
void MailboxService::release(uint32_t id)
{
	auto it = leases_.find(id);
	if (it == leases_.end())
		return;
	const Lease& l = it->second;
	UniqueFd dir(::open(l.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct stat st;
	if (dir && fstatat(dir.get(), l.dotlock.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == l.dev &&
	    st.st_ino == l.ino)
		unlinkat(dir.get(), l.dotlock.c_str(), 0);
	leases_.erase(it);
}

// The handler process ended: whatever it held is released.
void MailboxService::release_all()
{
	while (!leases_.empty())
		release(leases_.begin()->first);
}

// True when a lease has been held longer than any append takes.
bool MailboxService::overdue(time_t now) const
{
	return std::any_of(leases_.begin(), leases_.end(),
			   [now](const auto& l) { return now - l.second.granted > MAX_LEASE_AGE; });
}

// Answers one request from the handler process. False when it broke the
// protocol (the caller ends that process): a malformed frame, a lease id
// in use, a name that cannot be a user's, or a new request while an
// answer is still unsent (the client waits for each, so only a handler
// that stopped reading does that).
bool MailboxService::request(const Config& cfg, ImsgPeer& chan, const Imsg& m)
{
	switch (m.type) {
	case IMSG_H_MAILBOX_OPEN: {
		MailboxOpenMsg req;
		if (!decode(m.data, req) || leases_.count(m.peerid) || !valid_user_name(req.user) || chan.pending())
			return false;
		grant(cfg, chan, m.peerid, req.user);
		return true;
	}
	case IMSG_H_MAILBOX_DONE: {
		NoPayload none;
		if (!decode(m.data, none))
			return false;
		release(m.peerid);
		return true;
	}
	default:
		return false;
	}
}

// Opens USER's mailbox for lease id and sends it, or says why not.
void MailboxService::grant(const Config& cfg, ImsgPeer& chan, uint32_t id, const std::string& user)
{
	MailboxRefusal no{MailboxStatus::TempFail, ""};
	UniqueFd fd = open(cfg, id, user, no);
	if (fd) {
		chan.send(IMSG_P_MAILBOX_OK, id, encode(NoPayload{}), std::move(fd));
		return;
	}
	std::string why = cfg.mail_dir + "/" + user + ": " + no.why;
	if (no.status != MailboxStatus::Busy)
		log_warnx("mailbox for %s refused: %s", user.c_str(), why.c_str());
	chan.send(IMSG_P_MAILBOX_FAIL, id, encode(MailboxFailMsg{no.status, why}));
}

}  // namespace laim
