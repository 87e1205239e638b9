// file: appends each recipient's copy to an mbox file, under an fcntl
// write lock (the lock mutt, mailx and Postfix's local(8) take too; one
// held by another process defers the delivery).
//
//   handlers:
//     archive:
//       type: file
//       path: /var/mail/root    # absolute; created 0600 when missing
//
// A copy is the From_ line, Return-Path and Delivered-To, then the
// message without its own Return-Path and Content-Length, with CRLF
// turned into LF and mboxrd quoting (">From ", ">>From ", ...), then an
// empty line; a last line without its newline is ended first. A failed
// append is cut back off the file, so a reader never sees half a message.
// A message that already carries Delivered-To: for a recipient fails for
// that recipient as a mail forwarding loop (5.4.6).
#include "handler/api/handler.h"
#include "handler/api/mbox_format.h"

namespace laim {

namespace {

class FileHandler : public Handler {
 public:
	explicit FileHandler(HandlerOptions& o) : path_(o.path("path")) {}

	// One append for the recipients that are no loop.
	Results deliver(const Envelope& env, const Message& msg) override
	{
		std::vector<std::optional<Result>> loops;
		std::vector<std::string> to;
		for (const std::string& rcpt : env.recipients) {
			loops.push_back(delivered_to_loop(msg, rcpt));
			if (!loops.back())
				to.push_back(rcpt);
		}
		Result r = to.empty() ? Result::delivered() : mbox_deliver(path_, false, env, to, msg);
		if (r.status != Result::Status::Delivered)
			r.reason = "file: " + r.reason;
		std::vector<Result> each;
		for (const std::optional<Result>& loop : loops)
			each.push_back(loop ? *loop : r);
		return each;
	}

 private:
	std::string path_;
};

LAIM_HANDLER("file", FileHandler);

}  // namespace

}  // namespace laim
