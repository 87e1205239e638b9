// mbox: delivers to each recipient's own mailbox, mail_dir/USER
// (/var/mail/USER), as Debian's MTAs do; `mail` and mutt read it there.
//
//   handlers:
//     local:
//       type: mbox
//
// The recipient's local part (after /etc/aliases) names the user; an
// unknown user, or an address at another domain than this host's, is
// refused at RCPT (550). The handler process cannot open
// other users' files, so the root parent opens the mailbox (creating it
// USER:mail 0660), refuses links and files not the user's, takes the
// fcntl lock and the dotlock, and passes the descriptor over; see
// parent/mailbox.cpp. The copy itself is written as the file handler's.
#include <pwd.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "handler/api/handler.h"
#include "handler/mailbox_client.h"
#include "handler/api/mbox_format.h"

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
		MailboxLease lease;
		Result r = mailbox_open(*user, &lease);
		if (r.status != Result::Status::Delivered)
			return r;
		return mbox_append(lease.fd.get(), "mailbox of " + *user, env, {rcpt}, msg);
	}
};

LAIM_HANDLER("mbox", MboxHandler);

}  // namespace

}  // namespace laim
