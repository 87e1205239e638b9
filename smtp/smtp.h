// The smtp process: one epoll loop serving every SMTP session.
#pragma once

#include "common/fd.h"
#include "common/runtime.h"

namespace laim {

// Confines the process, then serves until SIGTERM; never returns.
// key_chan: the parent's key service, for the TLS listeners' keys.
[[noreturn]] void smtp_main(Runtime& rt, UniqueFd parent_chan, UniqueFd handler_chan, UniqueFd key_chan);

}  // namespace laim
