// Who submits over the local socket, from the kernel rather than from the
// smtp process's word: smtp passes the accepted connection with each local
// MAIL (IMSG_S_MAIL_LOCAL), and the handler process reads SO_PEERCRED
// itself, so a subverted smtp process cannot make mail look like root's
// (doc/architecture.md, "Channels and messages").
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace laim {

// The uid of the process at the other end of fd, when fd is a connected
// AF_UNIX stream socket whose own address is socket_path (a connection
// accepted on the submission socket). Anything else, a listening socket
// included (its SO_PEERCRED names whoever called listen(): root), gives
// nullopt and says why in *why.
std::optional<uid_t> submitter_uid(int fd, const std::string& socket_path, std::string* why);

}  // namespace laim
