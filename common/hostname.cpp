#include "common/hostname.h"

#include <netdb.h>
#include <pwd.h>
#include <unistd.h>

#include <strings.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <string_view>

#include "common/address.h"

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
	return valid_domain(name, true) ? std::string(name) : "";
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
			return strcasecmp(o.c_str(), name.c_str()) == 0;
		});
		if (!name.empty() && !seen)
			out.push_back(name);
	}
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
