// The parent's privileged setup: sockets bound as root, the host name.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "common/hostname.h"
#include "common/log.h"
#include "parent/parent.h"

namespace laim {

namespace {

// What socket() or bind() says for ::1 on a host without IPv6: a kernel
// booted with ipv6.disable=1 has no AF_INET6, and disable_ipv6 takes ::1
// off the loopback interface. Another IPv6 address that is not there is
// just not assigned (or not yet usable), which says nothing of IPv6.
bool no_ipv6(const sockaddr_storage& ss, int err)
{
	if (ss.ss_family != AF_INET6)
		return false;
	const in6_addr& addr = reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
	return err == EAFNOSUPPORT || (err == EADDRNOTAVAIL && IN6_IS_ADDR_LOOPBACK(&addr));
}

// A bind that failed otherwise: an entry of listen: names its line.
[[noreturn]] void bind_failed(const Config& cfg, const ListenAddress& a, const std::string& name)
{
	if (a.line != 0)
		fatalx("%s:%d: %s: cannot listen on %s: %s", cfg.file.c_str(), a.line, a.name.c_str(), name.c_str(),
		       strerror(errno));
	fatal("bind %s", name.c_str());
}

// The default [::1]:25 is skipped on a host without IPv6 (errno says
// why); an entry of listen: is not, and names its line.
std::nullopt_t skip_without_ipv6(const Config& cfg, const ListenAddress& a, const std::string& name)
{
	if (a.line != 0)
		fatalx("%s:%d: %s: cannot listen on %s: this host has no IPv6 (%s); remove the entry or enable IPv6",
		       cfg.file.c_str(), a.line, a.name.c_str(), name.c_str(), strerror(errno));
	log_warnx("not listening on %s: this host has no IPv6 (%s)", name.c_str(), strerror(errno));
	return std::nullopt;
}

// A TCP listener on a numeric address; IPv6 sockets are v6-only so that
// 127.0.0.1 and ::1 can be bound side by side. None for the default
// [::1]:25 on a host without IPv6, which many servers are: laimd serves
// 127.0.0.1:25 and the local socket there. A listen: entry that names an
// IPv6 address stops the start there, with the line to change.
std::optional<Listener> listen_tcp(const Config& cfg, const ListenAddress& a)
{
	struct sockaddr_storage ss = {};
	socklen_t len;
	int family;
	if (inet_pton(AF_INET, a.host.c_str(), &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1) {
		auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
		sin->sin_family = family = AF_INET;
		sin->sin_port = htons(a.port);
		len = sizeof *sin;
	} else if (inet_pton(AF_INET6, a.host.c_str(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) == 1) {
		auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
		sin6->sin6_family = family = AF_INET6;
		sin6->sin6_port = htons(a.port);
		len = sizeof *sin6;
	} else {
		fatalx("listen: %s is not a numeric address", a.host.c_str());
	}
	std::string name = family == AF_INET6 ? "[" + a.host + "]:" + std::to_string(a.port)
					      : a.host + ":" + std::to_string(a.port);
	UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	if (!fd) {
		if (!no_ipv6(ss, errno))
			fatal("socket for %s", name.c_str());
		return skip_without_ipv6(cfg, a, name);
	}
	int one = 1;
	setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (family == AF_INET6)
		setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	// Replies are small and often follow each other (pipelining): without
	// TCP_NODELAY, Nagle and delayed ACKs add 40 ms per reply. Each
	// accepted connection inherits it (Linux), so the smtp process makes
	// no call for it per connection.
	setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == -1) {
		if (!no_ipv6(ss, errno))
			bind_failed(cfg, a, name);
		return skip_without_ipv6(cfg, a, name);
	}
	if (listen(fd.get(), SOMAXCONN) == -1)
		fatal("listen %s", name.c_str());
	return Listener{std::move(fd), name, false};
}

// The directory of a socket must be root's and writable by root alone (or
// sticky, as /tmp): whoever could rename a file there could put their own
// socket in laimd's place, and take the mail or the commands meant for it.
void check_socket_dir(const std::string& path, const std::string& dir)
{
	struct stat st;
	if (stat(dir.c_str(), &st) == -1)
		fatal("socket %s: %s", path.c_str(), dir.c_str());
	if (st.st_uid != 0)
		fatalx("socket %s: its directory %s belongs to uid %u, not root: another socket could take its place",
		       path.c_str(), dir.c_str(), unsigned(st.st_uid));
	if (st.st_mode & (S_IWGRP | S_IWOTH) && !(st.st_mode & S_ISVTX))
		fatalx("socket %s: its directory %s is writable by group or others (mode %04o): another socket "
		       "could take its place",
		       path.c_str(), dir.c_str(), unsigned(st.st_mode & 07777));
}

}  // namespace

// The local submission and control sockets, reachable by every local user
// (0666, made so by the umask of the bind, not by a chmod of the path,
// which would follow what stands there by then); the serving process tells
// callers apart with SO_PEERCRED.
Listener listen_unix(const std::string& path)
{
	struct sockaddr_un sun = {};
	sun.sun_family = AF_UNIX;
	if (path.size() >= sizeof sun.sun_path)
		fatalx("socket %s: path too long", path.c_str());
	memcpy(sun.sun_path, path.c_str(), path.size());
	std::string dir = path.substr(0, path.rfind('/'));
	if (!dir.empty() && mkdir(dir.c_str(), 0755) == -1 && errno != EEXIST)
		fatal("mkdir %s", dir.c_str());
	check_socket_dir(path, dir.empty() ? "/" : dir);
	struct stat st;
	if (lstat(path.c_str(), &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			fatalx("socket %s: exists and is not a socket", path.c_str());
		unlink(path.c_str());
	}
	UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	if (!fd)
		fatal("socket %s", path.c_str());
	mode_t umask_before = umask(0111);
	int bound = bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun);
	umask(umask_before);
	if (bound == -1)
		fatal("bind %s", path.c_str());
	if (listen(fd.get(), SOMAXCONN) == -1)
		fatal("listen %s", path.c_str());
	return {std::move(fd), path, true};
}

std::vector<Listener> listen_all(const Config& cfg)
{
	std::vector<Listener> out;
	for (size_t i = 0; i < cfg.listen.size(); i++) {
		std::optional<Listener> l = listen_tcp(cfg, cfg.listen[i]);
		if (!l)
			continue;
		out.push_back(std::move(*l));
		out.back().listen_index = (int)i;
	}
	if (!cfg.socket.empty())
		out.push_back(listen_unix(cfg.socket));
	for (const Listener& l : out)
		log_info("listening on %s", l.name.c_str());
	return out;
}

// Resolved once at start, never while serving a client (design: no DNS
// in the mail path): config, then /etc/mailname, then the FQDN.
std::string resolve_hostname(const Config& cfg)
{
	if (!cfg.hostname.empty())
		return cfg.hostname;
	std::string name = read_mailname("/etc/mailname");
	return name.empty() ? host_fqdn() : name;
}

}  // namespace laim
