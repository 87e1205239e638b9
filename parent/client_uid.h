// Whose a TCP client from this host is: the AUTH guard (smtp/auth_guard.h)
// counts the failures of this host's clients by the uid that owns the
// client's socket, not by address, since every local user can send from
// any loopback address. The smtp process cannot ask the kernel (its
// seccomp policy has no netlink), so it passes the parent a copy of the
// connection (IMSG_S_CLIENT_UID) and gets the uid back.
#pragma once

#include <sys/types.h>

#include <optional>

#include "common/proto.h"

namespace laim {

class ImsgPeer;

// The uid that owns the socket at the far end of conn, a TCP connection
// between two addresses of this host: the kernel's answer to an inet_diag
// lookup of that end by its address and port (sock_diag(7)). Nothing when
// the far end is not on this host, or is gone.
std::optional<uid_t> tcp_client_uid(int conn);

// Answers one IMSG_S_CLIENT_UID on chan; false when its descriptor is not
// a connected TCP socket (a protocol error).
bool answer_client_uid(ImsgPeer& chan, const Imsg& m);

}  // namespace laim
