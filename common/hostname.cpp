#include "common/hostname.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <string_view>

#include "common/address.h"
#include "common/log.h"
#include "common/text.h"

namespace laim {

std::string read_mailname(const char* path)
{
	std::ifstream f(path);
	std::string line;
	if (!f || !std::getline(f, line))
		return "";
	std::string_view name = line;
	while (!name.empty() && (name.front() == ' ' || name.front() == '\t'))
		name.remove_prefix(1);
	while (!name.empty() && (name.back() == ' ' || name.back() == '\t' || name.back() == '\r'))
		name.remove_suffix(1);
	return valid_host_name(name) ? std::string(name) : "";
}

namespace {

// gethostname(), canonicalized through the resolver when it has no dot.
std::string resolve_fqdn()
{
	char host[HOST_NAME_MAX + 1] = {};
	if (gethostname(host, sizeof host - 1) == -1 || host[0] == '\0')
		return "localhost";
	std::string name = host;
	if (name.find('.') != std::string::npos)
		return name;
	addrinfo hints{};
	hints.ai_flags = AI_CANONNAME;
	hints.ai_socktype = SOCK_STREAM;
	addrinfo* res = nullptr;
	if (getaddrinfo(host, nullptr, &hints, &res) == 0 && res) {
		if (res->ai_canonname && valid_domain(res->ai_canonname, false))
			name = res->ai_canonname;
		freeaddrinfo(res);
	}
	return name;
}

}  // namespace

std::string host_fqdn()
{
	static const std::string fqdn = resolve_fqdn();
	return fqdn;
}

std::vector<std::string> host_names(const std::string& hostname)
{
	std::vector<std::string> out;
	char host[HOST_NAME_MAX + 1] = {};
	if (gethostname(host, sizeof host - 1) == -1)
		host[0] = '\0';
	for (const std::string& name : {hostname, std::string(host), host_fqdn(), read_mailname("/etc/mailname"),
					 std::string("localhost"), std::string("localhost.localdomain")}) {
		bool seen = std::any_of(out.begin(), out.end(), [&](const std::string& o) {
			return iequal(o, name);
		});
		if (!name.empty() && !seen)
			out.push_back(name);
	}
	return out;
}

std::vector<std::string> host_addresses()
{
	std::vector<std::string> out;
	struct ifaddrs* ifs;
	if (getifaddrs(&ifs) == -1) {
		log_warn("getifaddrs: this host's addresses");
		return out;
	}
	for (struct ifaddrs* i = ifs; i; i = i->ifa_next) {
		char buf[INET6_ADDRSTRLEN];
		const void* a = nullptr;
		if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
			a = &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr;
		else if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET6)
			a = &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr;
		if (a && inet_ntop(i->ifa_addr->sa_family, a, buf, sizeof buf) &&
		    std::find(out.begin(), out.end(), buf) == out.end())
			out.emplace_back(buf);
	}
	freeifaddrs(ifs);
	return out;
}

std::string login_name(uid_t uid)
{
	struct passwd pw, *res = nullptr;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) != 0 || !res)
		return "";
	return pw.pw_name;
}

}  // namespace laim
