// The built-in instances that deliver alias targets: "|command" (run by
// /bin/sh as the laim user, the message on stdin) and "/file" (an mbox
// append). They exist only when alias_commands or alias_files is set, and
// route_find() sends those recipients to them whatever the routes say.
// Each target gets its own result, so one failing command never makes
// another run twice.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "handler/api/handler.h"

namespace laim {

inline constexpr const char* ALIAS_COMMAND_INSTANCE = "alias:command";
inline constexpr const char* ALIAS_FILE_INSTANCE = "alias:file";

// user: the laim user's name, for LOGNAME and USER; timeout: the queue's
// delivery_timeout (a command is killed a second before it). When the
// shell exits, whatever it left running in its session is killed too.
std::unique_ptr<Handler> alias_command_handler(const std::string& user, unsigned timeout);
std::unique_ptr<Handler> alias_file_handler();

}  // namespace laim
