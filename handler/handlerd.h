// The handler process: owns the spool, commits messages, runs handlers.
#pragma once

#include "common/fd.h"
#include "common/runtime.h"

namespace laim {

// Confines the process, then serves until SIGTERM; never returns.
// command_chan carries the delivery threads' requests to start commands
// (mailbox deliveries among them) to the parent.
[[noreturn]] void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan, UniqueFd command_chan);

}  // namespace laim
