// "|command" and "/file" targets of /etc/aliases (see alias_delivery.h).
#include "handler/alias_delivery.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/fd.h"
#include "handler/api/mbox_format.h"
#include "handler/command_client.h"

namespace laim {

namespace {

// "|command": the root parent runs it (parent/command.cpp) as nobody,
// under /bin/sh -c, after checking that the aliases file lists it; this
// side writes the message to its stdin: Return-Path, then the message
// without its own Return-Path and Content-Length, with LF line ends
// (write_lf_copy()). A command need not read its input (Postfix's local(8)
// does not ask that either).
class CommandDelivery : public Handler {
 public:
	explicit CommandDelivery(unsigned timeout) : timeout_(timeout) {}

	// Each command is a delivery of its own: one that fails never makes
	// another run twice.
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::vector<Result> each;
		for (const std::string& rcpt : env.recipients)
			each.push_back(run(rcpt, env, msg));
		return each;
	}

 private:
	Result run(const std::string& rcpt, const Envelope& env, const Message& msg) const
	{
		UniqueFd input = command_input_file();
		if (!input || !write_lf_copy(input.get(), env, msg))
			return Result::tempfail(std::string("command: message copy: ") + strerror(errno));
		return command_run(ALIAS_COMMAND_INSTANCE, env, {rcpt}, input.get(), timeout_, false);
	}

	unsigned timeout_;
};

// "/file": an mbox append through no symbolic link, since a link in a
// directory others can write would redirect the laim user's write.
class FileDelivery : public Handler {
 public:
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::vector<Result> each;
		for (const std::string& path : env.recipients)
			each.push_back(mbox_deliver(path, true, env, {""}, msg));
		return each;
	}
};

}  // namespace

std::unique_ptr<Handler> alias_command_handler(unsigned timeout)
{
	return std::make_unique<CommandDelivery>(alias_command_timeout(timeout));
}

std::unique_ptr<Handler> alias_file_handler()
{
	return std::make_unique<FileDelivery>();
}

}  // namespace laim
