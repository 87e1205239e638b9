// The directory of the users' mailboxes (mail_dir), as laim-mda takes it
// at each delivery and laimd's config check at load: what the one would
// refuse, the other refuses first, so that an unusable directory is an
// error of laimd -n rather than mail deferred until it expires.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/fd.h"

namespace laim {

// Opens path into *dir: a directory (or a symbolic link to one) owned by
// root; its mode is the admin's (Debian's /var/mail is root:mail 2775).
// Returns "", or what is wrong.
inline std::string mail_dir_open(const std::string& path, UniqueFd* dir)
{
	*dir = UniqueFd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct stat st;
	if (!*dir || fstat(dir->get(), &st) == -1)
		return strerror(errno);
	if (st.st_uid != 0)
		return "not owned by root (uid " + std::to_string(st.st_uid) + ")";
	return "";
}

}  // namespace laim
