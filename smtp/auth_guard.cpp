#include "smtp/auth_guard.h"

#include <arpa/inet.h>

#include <cstring>

namespace laim {

namespace {
const std::string THIS_HOST = "this host";
}

// The address itself, or for IPv6 its /64 prefix; every loopback
// address (127.0.0.0/8, ::1) and each of the host's own addresses is
// this host, its local users, one client that could otherwise take a new
// address for each ten guesses. (No IPv4-mapped address reaches here:
// every IPv6 listener is IPV6_V6ONLY, parent/listen.cpp.)
std::string AuthGuard::key(const std::string& address) const
{
	if (host_addresses_.count(address))
		return THIS_HOST;
	struct in_addr a4;
	if (inet_pton(AF_INET, address.c_str(), &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127 ? THIS_HOST : address;
	struct in6_addr a;
	if (inet_pton(AF_INET6, address.c_str(), &a) != 1)
		return address;
	if (IN6_IS_ADDR_LOOPBACK(&a))
		return THIS_HOST;
	memset(a.s6_addr + 8, 0, 8);
	char buf[INET6_ADDRSTRLEN];
	return inet_ntop(AF_INET6, &a, buf, sizeof buf) ? std::string(buf) + "/64" : address;
}

bool AuthGuard::this_host(const std::string& address) const
{
	return key(address) == THIS_HOST;
}

AuthGuard::Admit AuthGuard::admit(const std::string& address, time_t now) const
{
	std::string k = key(address);
	auto c = checking_.find(k);
	unsigned tries = c == checking_.end() ? 0 : c->second;
	auto it = by_address_.find(k);
	if (it != by_address_.end()) {
		const Failures& f = it->second;
		if (f.held_until > now)
			return Admit::Held;
		if (f.count > 0 && now - f.since < AUTH_GUARD_WINDOW)
			tries += f.count;
	}
	return tries < AUTH_GUARD_FAILURES ? Admit::Check : Admit::Wait;
}

void AuthGuard::checking(const std::string& address)
{
	checking_[key(address)]++;
}

void AuthGuard::checked(const std::string& address)
{
	auto c = checking_.find(key(address));
	if (c != checking_.end() && --c->second == 0)
		checking_.erase(c);
}

void AuthGuard::set_host_addresses(const std::vector<std::string>& addresses)
{
	host_addresses_ = std::unordered_set<std::string>(addresses.begin(), addresses.end());
}

bool AuthGuard::failed(const std::string& address, time_t now)
{
	std::string k = key(address);
	auto it = by_address_.find(k);
	if (it == by_address_.end()) {
		if (by_address_.size() >= AUTH_GUARD_ADDRESSES)
			forget_expired(now);
		if (by_address_.size() >= AUTH_GUARD_ADDRESSES)
			return false;  // that many guessing at once: each still ends at its session's limit
		it = by_address_.emplace(std::move(k), Failures{}).first;
	}
	Failures& f = it->second;
	if (f.count == 0 || now - f.since >= AUTH_GUARD_WINDOW)
		f = {0, now, f.held_until};
	if (++f.count < AUTH_GUARD_FAILURES)
		return false;
	f = {0, 0, now + AUTH_GUARD_HOLD};
	return true;
}

// Drops the addresses neither held nor with a failure in the window.
void AuthGuard::forget_expired(time_t now)
{
	std::erase_if(by_address_, [now](const auto& e) {
		const Failures& f = e.second;
		return f.held_until <= now && (f.count == 0 || now - f.since >= AUTH_GUARD_WINDOW);
	});
}

}  // namespace laim
