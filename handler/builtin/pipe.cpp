// pipe: hands each message to a command on its stdin, as Postfix's
// pipe(8) and OpenSMTPD's "deliver to mda" do: an MDA such as Dovecot's
// dovecot-lda, a filter, a script that files or forwards mail.
//
//   handlers:
//     lda:
//       type: pipe
//       command: [/usr/lib/dovecot/dovecot-lda, -f, "{sender}", -a, "{recipient}"]
//       user: vmail            # the command runs as this user; never root
//       per_recipient: true    # a command per recipient; false: one for all
//                              # (for each batch of 8 KiB of addresses), and
//                              # a word holding {recipient}, {user} or
//                              # {extension} is repeated for each recipient
//       stdin: raw             # the message, LF line ends; mbox: From_ line,
//                              # Return-Path, Delivered-To, >From quoting
//       env: ["LANG=C.UTF-8"]  # NAME=value, besides PATH, HOME, USER, LOGNAME,
//                              # SHELL, SENDER, RECIPIENT and QUEUE_ID
//       timeout: 120           # seconds; then its process group is killed
//       workers: 4             # commands at once
//
// The command is an argv, no shell: {sender} (empty for the null sender),
// {recipient}, {user} (its local part before '+'), {extension} (after
// it) and {queue_id} are replaced inside words, never splitting them. The
// root parent starts it (parent/command.cpp) as the user, with the user's
// groups, a clean environment, the home as working directory, in a
// session of its own and without laim's confinement, so that setuid
// helpers work; this handler only names the instance and the envelope,
// writes the message into the command's stdin and reads its output. Exit
// 0 delivers; what other endings mean is command_result()'s
// (handler/api/command.h), as Postfix's pipe(8) reads them.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <utility>

#include "handler/api/command.h"
#include "handler/api/handler.h"
#include "handler/api/mbox_format.h"
#include "handler/command_client.h"

namespace laim {

namespace {

// Recipients per command with per_recipient: false: at most this many
// bytes of addresses, each counted with the 4-byte length it has in the
// request to the parent, which must fit in one imsg frame
// (IMSG_MAX_PAYLOAD, 16 KiB) with the instance, the queue id and the
// sender.
constexpr size_t BATCH_BYTES = 8192;
constexpr size_t BATCH_COST_EACH = 4;

class PipeHandler : public Handler {
 public:
	explicit PipeHandler(HandlerOptions& o) : name_(o.name()), spec_(read_command_spec(o)) {}

	// 550 for a recipient whose {recipient}, {user} or {extension} would
	// start an argument with '-', an option to the command (Postfix's
	// allow_min_user): the argv built as delivery builds it, which refuses
	// such a value, with the null sender (an empty {sender} leaves the
	// recipient's value first in its word) and a queue id like any other.
	RcptVerdict check_recipient(std::string_view rcpt) override
	{
		try {
			command_argv(spec_.argv, {"Q", "", {std::string(rcpt)}});
		} catch (const std::invalid_argument&) {
			return RcptVerdict::Reject;
		}
		return RcptVerdict::Accept;
	}

	Results deliver(const Envelope& env, const Message& msg) override;
	Result test() override;
	// Each call starts commands of its own and changes no shared state.
	unsigned default_workers() const override { return 4; }

 private:
	Result run(const Envelope& env, const std::vector<std::string>& rcpts, const Message& msg) const;

	std::string name_;
	CommandSpec spec_;
};

LAIM_HANDLER("pipe", PipeHandler);

// A command per recipient, or per batch of recipients that fits in a
// request; each result applies to the recipients its command had.
Results PipeHandler::deliver(const Envelope& env, const Message& msg)
{
	std::vector<Result> each;
	std::vector<std::string> batch;
	size_t bytes = 0;
	for (size_t i = 0; i < env.recipients.size(); i++) {
		batch.push_back(env.recipients[i]);
		bytes += env.recipients[i].size() + BATCH_COST_EACH;
		bool last = i + 1 == env.recipients.size();
		if (!last && !spec_.per_recipient &&
		    bytes + env.recipients[i + 1].size() + BATCH_COST_EACH <= BATCH_BYTES)
			continue;
		each.resize(i + 1, run(env, batch, msg));
		batch.clear();
		bytes = 0;
	}
	return each;
}

// The message on the command's stdin, raw or as an mbox copy (with
// Delivered-To when the command has one recipient, and then not run for
// a message that carries that Delivered-To already: a loop).
Result PipeHandler::run(const Envelope& env, const std::vector<std::string>& rcpts, const Message& msg) const
{
	if (spec_.mbox && rcpts.size() == 1) {
		if (std::optional<Result> loop = delivered_to_loop(msg, rcpts[0]))
			return *loop;
	}
	UniqueFd input = command_input_file();
	bool written = input && (spec_.mbox ? write_mbox_copy(input.get(), env, rcpts.size() == 1 ? rcpts[0] : "", msg)
					    : write_lf_text(input.get(), msg.raw()));
	if (!written)
		return Result::tempfail(std::string("pipe: the command's input: ") + strerror(errno));
	return command_run(name_, env, rcpts, input.get(), spec_.timeout, true);
}

// The program is there and executable by someone; the user was checked
// when the configuration was read.
Result PipeHandler::test()
{
	const std::string& program = spec_.argv[0];
	struct stat st;
	if (stat(program.c_str(), &st) != 0)
		return Result::tempfail("pipe: " + program + ": " + strerror(errno));
	if (!S_ISREG(st.st_mode) || !(st.st_mode & 0111))
		return Result::tempfail("pipe: " + program + " is not an executable file");
	return Result::delivered("pipe: " + program + " is executable; it runs as " + spec_.user);
}

}  // namespace

}  // namespace laim
