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
// message with CRLF turned into LF and mboxrd quoting (">From ",
// ">>From ", ...), then an empty line; a last line without its newline is
// ended first. A failed append is cut back off
// the file, so a reader never sees half a message.
#include "handler/api/handler.h"
#include "handler/api/mbox_format.h"

namespace laim {

namespace {

class FileHandler : public Handler {
 public:
	explicit FileHandler(HandlerOptions& o) : path_(o.path("path")) {}

	Results deliver(const Envelope& env, const Message& msg) override
	{
		Result r = mbox_deliver(path_, false, env, env.recipients, msg);
		if (r.status != Result::Status::Delivered)
			r.reason = "file: " + r.reason;
		return r;
	}

 private:
	std::string path_;
};

LAIM_HANDLER("file", FileHandler);

}  // namespace

}  // namespace laim
