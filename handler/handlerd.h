// The handler process: owns the spool, commits messages, runs handlers.
#pragma once

#include "common/fd.h"
#include "parent/parent.h"

namespace laim {

// Confines the process, then serves until SIGTERM; never returns.
[[noreturn]] void handler_main(Runtime& rt, UniqueFd parent_chan, UniqueFd smtp_chan);

}  // namespace laim
