// mbox: delivers to each recipient's own mailbox, mail_dir/USER
// (/var/mail/USER), as Debian's MTAs do; `mail` and mutt read it there.
//
//   handlers:
//     local:
//       type: mbox
//
// The recipient's local part (after /etc/aliases) names the user; an
// unknown user, or an address at another domain than this host's, is
// refused at RCPT (550). The handler process never opens a mailbox: it
// asks the root parent for a mailbox delivery (a command the parent
// builds itself, handler/api/command.h's MAILBOX_INSTANCE), which runs
// laim-mda as the user (mda/mda.cpp: it creates the mailbox 0600,
// refuses links and files not the user's, takes the fcntl lock and the
// dotlock, appends and fsyncs, or cuts the mailbox back), and streams it
// the copy, written as the file handler's. laim-mda's exit status and
// its one line decide the result, as a pipe command's do. A message that
// already carries Delivered-To: for the recipient fails as a mail
// forwarding loop (5.4.6) before laim-mda is asked.
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "handler/api/command.h"
#include "handler/api/handler.h"
#include "handler/api/mbox_format.h"
#include "handler/command_client.h"

namespace laim {

namespace {

// The user a recipient's mail belongs to: its local part, or that in
// lower case (mail to "Root" reaches root, as with exim and Postfix).
std::optional<std::string> local_user(std::string_view rcpt)
{
	if (!is_local_address(rcpt))
		return std::nullopt;
	std::string local(local_part(rcpt));
	std::string lower = local;
	std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return tolower(c); });
	for (const std::string& name : {local, lower}) {
		struct passwd pw, *found = nullptr;
		char buf[4096];
		if (!name.empty() && getpwnam_r(name.c_str(), &pw, buf, sizeof buf, &found) == 0 && found)
			return std::string(found->pw_name);
	}
	return std::nullopt;
}

// The parent's time limit (twice delivery_timeout, parent/command.cpp)
// ends every mailbox delivery first; this only bounds the wait for its
// report.
constexpr unsigned MAILBOX_WAIT = 24 * 3600;
// laim-mda's stdin: the copy's length, 19 digits and a LF, then the copy.
constexpr off_t LENGTH_LINE = 20;

// The framed copy for rcpt's mailbox in a memory file, or null with errno.
UniqueFd framed_copy(const Envelope& env, const std::string& rcpt, const Message& msg)
{
	UniqueFd fd = command_input_file();
	if (!fd || lseek(fd.get(), LENGTH_LINE, SEEK_SET) != LENGTH_LINE || !write_mbox_copy(fd.get(), env, rcpt, msg))
		return UniqueFd();
	char line[32];
	int n = snprintf(line, sizeof line, "%019lld\n", (long long)(lseek(fd.get(), 0, SEEK_END) - LENGTH_LINE));
	if (n != LENGTH_LINE || pwrite(fd.get(), line, LENGTH_LINE, 0) != LENGTH_LINE)
		return UniqueFd();
	return fd;
}

class MboxHandler : public Handler {
 public:
	explicit MboxHandler(HandlerOptions&) {}

	RcptVerdict check_recipient(std::string_view rcpt) override
	{
		return local_user(rcpt) ? RcptVerdict::Accept : RcptVerdict::Reject;
	}

	// Each user's mailbox succeeds or fails on its own.
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::vector<Result> each;
		for (const std::string& rcpt : env.recipients) {
			if (std::optional<Result> loop = delivered_to_loop(msg, rcpt)) {
				each.push_back(*loop);
				continue;
			}
			each.push_back(deliver_one(rcpt, env, msg));
			if (each.back().status != Result::Status::Delivered)
				each.back().reason = "mbox: " + each.back().reason;
		}
		return each;
	}

 private:
	static Result deliver_one(const std::string& rcpt, const Envelope& env, const Message& msg)
	{
		std::optional<std::string> user = local_user(rcpt);
		if (!user)
			return Result::permfail("<" + rcpt + ">: not a local user");
		UniqueFd copy = framed_copy(env, rcpt, msg);
		if (!copy)
			return Result::tempfail(std::string("the copy for laim-mda: ") + strerror(errno));
		Result r = command_run(MAILBOX_INSTANCE, env, {*user}, copy.get(), MAILBOX_WAIT, true);
		if (r.reason.starts_with("command as "))
			r.reason.replace(0, 7, "laim-mda");  // "laim-mda as USER exited with ..."
		return r;
	}
};

LAIM_HANDLER("mbox", MboxHandler);

}  // namespace

}  // namespace laim
