// The handler process's end of the parent's command service (see
// parent/command.cpp): delivery threads ask the root parent to start the
// command of a pipe instance or of a "|command" alias target, naming the
// instance, the queue id and the envelope values, never a program; the
// parent answers with the command's pipes, and reports its end.
#pragma once

#include <string>
#include <vector>

#include "common/fd.h"
#include "handler/api/handler.h"

namespace laim {

// Called once in the handler process, before any delivery.
void command_client_init(UniqueFd chan);

// One run of instance's command for recipients of env's message, with
// input (a file, read from its start) as its stdin; the parent enforces
// the instance's time limit, timeout seconds. whole_input: exit 0 counts
// only when the command read all of its stdin (command_result()).
Result command_run(const std::string& instance, const Envelope& env, const std::vector<std::string>& recipients,
		   int input, unsigned timeout, bool whole_input);

// An unlinked memory file for a command's input.
UniqueFd command_input_file();

}  // namespace laim
