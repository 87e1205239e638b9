// SmtpClient: the client side of SMTP (RFC 5321) and LMTP (RFC 2033) for
// the handlers that pass mail on (lmtp, smarthost). One connection, over
// TCP or a unix socket, optionally TLS verified with OpenSSL; replies are
// read whole (multi-line, each line cut at 4096 bytes); the message goes
// out dot-stuffed. Blocking, with a deadline on every step and, when set,
// on the whole session, so that it runs on a handler's worker thread.
// Every failure throws SmtpError, whose text says what failed (and, for
// connection errors, carries errno so that a handler can say what to fix).
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "handler/api/handler.h"

namespace laim {

struct SmtpError : std::runtime_error {
	SmtpError(const std::string& what, int err = 0) : std::runtime_error(what), error(err) {}
	int error;  // errno of a failed connect(), else 0
};

// One reply, as the server wrote it.
struct SmtpReply {
	int code = 0;
	std::string enhanced;            // "5.2.2" when the first line starts with one, else ""
	std::vector<std::string> lines;  // each line's text after "250-" / "250 "

	// The reply verbatim on one line: "552 5.2.2 <carol> Quota exceeded",
	// the lines of a multi-line reply joined by " / ".
	std::string text() const;
	// A 2xx: what MAIL, RCPT, EHLO and LHLO must get (a 3xx there is
	// the server's error).
	bool ok() const { return code >= 200 && code < 300; }
	// 2xx delivered, 4xx tempfail, 5xx permfail, anything else tempfail
	// ("unexpected reply 354 ..."); the reason is text() prefixed by what
	// (e.g. "RCPT: "), and the code is the enhanced status code when the
	// server gave one.
	Result result(std::string_view what = {}) const;
	// The parameters of an EHLO/LHLO keyword ("AUTH" -> "PLAIN LOGIN",
	// "PIPELINING" -> ""), or nullopt when the reply does not offer it.
	std::optional<std::string> extension(std::string_view keyword) const;
};

// How to verify the server's certificate.
struct TlsPolicy {
	std::string host;         // the name (or address) to check and, for a name, send as SNI
	std::string ca_file;      // PEM file of trusted CAs; empty: the system store
	std::string fingerprint;  // optional SHA-256 pin (hex, colons optional): the
				  // certificate must match it, whatever its chain
};

class SmtpClient {
 public:
	SmtpClient();
	~SmtpClient();
	SmtpClient(const SmtpClient&) = delete;
	SmtpClient& operator=(const SmtpClient&) = delete;

	// Every later step ends within seconds from now, whatever its own
	// timeout (0: no such limit), so that a slow server cannot make the
	// steps of one session add up to more than the handler's call may
	// take. Not read_end_reply(): the server may have taken the message,
	// and giving up on its answer would send it again. A step it cuts
	// throws "session timeout after N s waiting for ...".
	void limit_session(int seconds);
	// Connect within timeout seconds; SmtpError with errno on failure.
	void connect_unix(const std::string& path, int timeout);
	void connect_tcp(const std::string& host, unsigned port, int timeout);
	// TLS on the open connection (implicit TLS right after connecting,
	// or after a 220 to STARTTLS): TLS 1.2 at least, the certificate
	// verified as policy says. Throws "TLS handshake with HOST: certificate
	// verify failed: self-signed certificate" and the like.
	void start_tls(const TlsPolicy& policy, int timeout);
	bool tls() const;
	// "TLSv1.3 TLS_AES_256_GCM_SHA384, certificate CN=localhost verified"
	std::string tls_summary() const;

	// Reads one whole reply within timeout seconds. A line longer than
	// 4096 bytes keeps its first 4096 and " [...]"; the rest is dropped.
	SmtpReply read_reply(int timeout);
	// read_reply() for the reply to the message's end: its errors start
	// "after the end of the message (it may have been delivered): ".
	SmtpReply read_end_reply(int timeout);
	// Queues a command line (CRLF added); flush() sends what is queued.
	// Pipelined commands are queued, flushed once, then their replies read.
	void queue(std::string_view line);
	void flush(int timeout);
	// queue + flush + read_reply.
	SmtpReply command(std::string_view line, int timeout);
	// The message after a 354 (or LMTP's), dot-stuffed, with a final CRLF
	// if it lacks one, then ".": flushed, the reply not read.
	void send_data(std::string_view message, int timeout);
	// Sends QUIT and closes without waiting long for the answer; never throws.
	void quit();

 private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
};

}  // namespace laim
