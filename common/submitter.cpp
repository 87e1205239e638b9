// SO_PEERCRED of a local submitter's connection, once the descriptor is
// shown to be one (common/submitter.h).
#include "common/submitter.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace laim {

namespace {

bool sock_int(int fd, int opt, int& out)
{
	socklen_t len = sizeof out;
	return getsockopt(fd, SOL_SOCKET, opt, &out, &len) == 0 && len == sizeof out;
}

}  // namespace

std::optional<uid_t> submitter_uid(int fd, const std::string& socket_path, std::string* why)
{
	struct sockaddr_un sun = {};
	socklen_t slen = sizeof sun;
	int type = 0, listening = 0;
	if (getsockname(fd, reinterpret_cast<sockaddr*>(&sun), &slen) == -1) {
		*why = std::string("not a socket: ") + strerror(errno);
		return std::nullopt;
	}
	if (sun.sun_family != AF_UNIX || !sock_int(fd, SO_TYPE, type) || type != SOCK_STREAM) {
		*why = "not a unix stream socket";
		return std::nullopt;
	}
	size_t plen = slen > offsetof(sockaddr_un, sun_path) ? slen - offsetof(sockaddr_un, sun_path) : 0;
	std::string path(sun.sun_path, strnlen(sun.sun_path, plen));
	if (path != socket_path) {
		*why = "a socket bound to \"" + path + "\", not " + socket_path;
		return std::nullopt;
	}
	if (!sock_int(fd, SO_ACCEPTCONN, listening) || listening) {
		*why = "the listening socket, not a client's connection";
		return std::nullopt;
	}
	struct ucred cred;
	socklen_t clen = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 || clen != sizeof cred) {
		*why = std::string("SO_PEERCRED: ") + strerror(errno);
		return std::nullopt;
	}
	return cred.uid;
}

}  // namespace laim
