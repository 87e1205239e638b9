// The uid behind a local TCP client, for the AUTH guard (parent/client_uid.h).
#include "parent/client_uid.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>

#include "common/fd.h"
#include "common/peer.h"

namespace laim {

namespace {

// The inet_diag request that names the socket bound to peer and connected
// to local: the client's end of the connection the server holds as
// (local, peer).
bool client_end(const sockaddr_storage& local, const sockaddr_storage& peer, inet_diag_req_v2& r)
{
	auto name = [&r](uint16_t peer_port, const void* peer_addr, uint16_t local_port, const void* local_addr,
			 size_t len) {
		r.id.idiag_sport = peer_port;
		r.id.idiag_dport = local_port;
		memcpy(r.id.idiag_src, peer_addr, len);
		memcpy(r.id.idiag_dst, local_addr, len);
	};
	r.sdiag_family = local.ss_family;
	r.sdiag_protocol = IPPROTO_TCP;
	r.idiag_states = ~0u;
	r.id.idiag_cookie[0] = r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (local.ss_family != peer.ss_family)
		return false;
	if (local.ss_family == AF_INET) {
		auto& l = reinterpret_cast<const sockaddr_in&>(local);
		auto& p = reinterpret_cast<const sockaddr_in&>(peer);
		name(p.sin_port, &p.sin_addr, l.sin_port, &l.sin_addr, sizeof l.sin_addr);
	} else if (local.ss_family == AF_INET6) {
		auto& l = reinterpret_cast<const sockaddr_in6&>(local);
		auto& p = reinterpret_cast<const sockaddr_in6&>(peer);
		name(p.sin6_port, &p.sin6_addr, l.sin6_port, &l.sin6_addr, sizeof l.sin6_addr);
	} else {
		return false;
	}
	return true;
}

}  // namespace

std::optional<uid_t> tcp_client_uid(int conn)
{
	sockaddr_storage local = {}, peer = {};
	socklen_t local_len = sizeof local, peer_len = sizeof peer;
	struct {
		nlmsghdr nlh;
		inet_diag_req_v2 r;
	} req = {};
	if (getsockname(conn, reinterpret_cast<sockaddr*>(&local), &local_len) == -1 ||
	    getpeername(conn, reinterpret_cast<sockaddr*>(&peer), &peer_len) == -1 || !client_end(local, peer, req.r))
		return std::nullopt;
	req.nlh.nlmsg_len = sizeof req;
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	UniqueFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
	sockaddr_nl kernel = {};
	kernel.nl_family = AF_NETLINK;
	if (!nl || sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) == -1)
		return std::nullopt;
	// One answer: the socket, or an error (ENOENT when it is gone, or
	// when the address is another host's and no socket here has it).
	alignas(nlmsghdr) char buf[1024];
	ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
	auto* h = reinterpret_cast<nlmsghdr*>(buf);
	if (n < 0 || !NLMSG_OK(h, static_cast<size_t>(n)) || h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
		return std::nullopt;
	// What is no longer (or not yet) a socket with an owner has neither
	// inode nor uid, and the kernel says uid 0 for it: an end its process
	// closed, once its FIN is answered (a mini socket in FIN_WAIT2 or
	// TIME_WAIT), or a connection request. Not root's.
	auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
	if ((m->idiag_inode == 0 && m->idiag_uid == 0) || m->idiag_state == TCP_LISTEN)
		return std::nullopt;
	return m->idiag_uid;
}

bool answer_client_uid(ImsgPeer& chan, const Imsg& m)
{
	NoPayload none;
	int type = 0, protocol = 0, listening = 1;
	socklen_t len = sizeof type;
	if (!decode(m.data, none) || getsockopt(m.fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
	    (len = sizeof protocol, getsockopt(m.fd.get(), SOL_SOCKET, SO_PROTOCOL, &protocol, &len)) == -1 ||
	    (len = sizeof listening, getsockopt(m.fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) == -1 ||
	    type != SOCK_STREAM || protocol != IPPROTO_TCP || listening)
		return false;
	std::optional<uid_t> uid = tcp_client_uid(m.fd.get());
	chan.send(IMSG_P_CLIENT_UID, m.peerid, encode(ClientUidMsg{uid.has_value(), uid.value_or(0)}));
	return true;
}

}  // namespace laim
