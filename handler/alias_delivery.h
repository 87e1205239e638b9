// The built-in instances that deliver alias targets: "|command" (run by
// the root parent as nobody under /bin/sh -c, the message on stdin: see
// parent/command.cpp) and "/file" (an mbox append). They exist only when
// alias_commands or alias_files is set, and route_find() sends those
// recipients to them whatever the routes say.
// Each target gets its own result, so one failing command never makes
// another run twice.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "handler/api/command.h"
#include "handler/api/handler.h"

namespace laim {

inline constexpr const char* ALIAS_FILE_INSTANCE = "alias:file";

// timeout: the queue's delivery_timeout; the parent kills a command a
// second before it (alias_command_timeout()), and with it whatever it
// left running in its process group.
std::unique_ptr<Handler> alias_command_handler(unsigned timeout);
std::unique_ptr<Handler> alias_file_handler();

}  // namespace laim
