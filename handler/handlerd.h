// The handler process: owns the spool, commits messages, runs handlers.
#pragma once

#include "common/fd.h"
#include "common/runtime.h"

namespace laim {

// Confines the process, then serves until SIGTERM; never returns.
// mailbox_chan carries the delivery threads' mailbox requests to the
// parent, command_chan their requests to start commands.
[[noreturn]] void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan, UniqueFd mailbox_chan,
				UniqueFd command_chan);

}  // namespace laim
