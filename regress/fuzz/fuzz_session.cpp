// libFuzzer target: arbitrary client bytes into an SMTP Session whose
// backend accepts everything at once, so every command, the data phase
// and the transaction ends are reachable. The input is fed in pieces of
// varying size (taken from the input itself) to exercise state carried
// across reads. Checks the session's invariants as it goes: bounded
// input buffer, well-formed replies, no control character in an accepted
// address (nor a bidi control or line separator), a HELO name that is a
// domain or an address literal, each transaction ending in exactly one
// commit or abort, and no smuggling: every committed message ended at a
// CRLF "." CRLF of the client's bytes that no earlier message used. With
// bit 0x40 of the first byte the session is on an auth: required listener
// under TLS, whose backend takes the password "pw" and binds the senders
// to *@example.org: no other sender may then reach MAIL.
//
// The session logs each refused message to stderr; run with
// -close_fd_mask=2 to silence that (sanitizer reports still show):
//   ./regress/fuzz/fuzz_session -close_fd_mask=2 -max_total_time=60
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include <strings.h>

#include "common/address.h"
#include "smtp/session.h"

using namespace laim;

namespace {

int devnull = -1;
std::string fed;          // the client's bytes given to the session so far
size_t unused_end = 0;    // where to look for the next message's CRLF "." CRLF

// No control character, and none of the code points that reorder or
// break displayed text (U+200E, U+200F, U+2028..U+202E, U+2066..U+2069).
void check_address(const std::string& a)
{
	for (unsigned char c : a)
		if (c < 0x20 || c == 0x7f)
			abort();
	for (size_t i = a.find("\xe2\x80"); i != std::string::npos; i = a.find("\xe2\x80", i + 1))
		if (i + 2 < a.size() && (a[i + 2] == '\x8e' || a[i + 2] == '\x8f' ||
					 (a[i + 2] >= '\xa8' && a[i + 2] <= '\xae')))
			abort();
	for (size_t i = a.find("\xe2\x81"); i != std::string::npos; i = a.find("\xe2\x81", i + 1))
		if (i + 2 < a.size() && a[i + 2] >= '\xa6' && a[i + 2] <= '\xa9')
			abort();
}

// What goes into Received: after "from" is a domain or an address literal.
void check_helo(const std::string& h)
{
	if (!valid_domain(h, false) && !valid_address_literal(h))
		abort();
}

// Where the first CRLF "." CRLF in fed at or after from finishes (the
// CRLF that ends the DATA line counts: an empty message); npos when there
// is none. Command lines too end at CRLF only, so a DATA line ending in a
// bare LF never starts a message.
size_t message_end(size_t from)
{
	size_t i = fed.find("\r\n.\r\n", from);
	return i == std::string::npos ? i : i + 5;
}

struct OkBackend : SessionBackend {
	int open_txn = 0;  // MAIL accepted, not yet committed or aborted
	bool auth = false;  // an auth: required listener
	void on_mail(Session& s, const std::string& sender) override
	{
		check_address(sender);
		check_helo(s.helo());
		if (auth && (s.auth_user().empty() ||
			     (!sender.empty() && (sender.size() < 12 ||
						  strcasecmp(sender.c_str() + sender.size() - 12, "@example.org") != 0))))
			abort();
		if (open_txn != 0)
			abort();
		open_txn++;
		s.mail_reply(BackendStatus::Ok);
	}
	void on_rcpt(Session& s, const std::string& rcpt) override
	{
		check_address(rcpt);
		if (rcpt.empty() || open_txn != 1)
			abort();
		s.rcpt_reply(BackendStatus::Ok);
	}
	void on_data(Session& s) override
	{
		if (open_txn != 1 || s.recipients().empty())
			abort();
		s.data_reply(BackendStatus::Ok, dup(devnull), "0123456789");
	}
	void on_commit(Session& s, uint64_t) override
	{
		if (open_txn-- != 1)
			abort();
		// The smuggling oracle: a message may end only at CRLF.CRLF.
		size_t end = message_end(unused_end);
		if (end == std::string::npos)
			abort();
		unused_end = end;
		s.commit_reply(BackendStatus::Ok);
	}
	void on_abort(Session&) override
	{
		if (open_txn-- != 1)
			abort();
	}
	void on_auth(Session& s, const std::string& user, const std::string& password) override
	{
		if (!auth || !s.auth_user().empty() || open_txn != 0)
			abort();
		s.auth_reply(password == "pw", true, {"*@example.org"});
		(void)user;
	}
};

// Every reply line is "DDD" then SP or "-", and output ends with CRLF.
void check_output(const std::string& out)
{
	size_t pos = 0;
	while (pos < out.size()) {
		size_t eol = out.find("\r\n", pos);
		if (eol == std::string::npos || eol - pos < 4)
			abort();
		for (size_t i = pos; i < pos + 3; i++)
			if (out[i] < '0' || out[i] > '9')
				abort();
		if (out[pos + 3] != ' ' && out[pos + 3] != '-')
			abort();
		pos = eol + 2;
	}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	if (devnull < 0) {
		devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (devnull < 0)
			abort();
	}
	static SmtpSettings settings = [] {
		SmtpSettings s;
		s.hostname = "fuzz.example";
		s.ident = "laim fuzz";
		s.size_limit = 4096;  // small limits, so fuzzing reaches them
		s.max_rcpts = 4;
		return s;
	}();
	OkBackend be;
	be.auth = size > 0 && (data[0] & 0x40);
	fed.clear();
	unused_end = 0;
	{
		Session s(be, settings, ClientInfo{"127.0.0.1", std::nullopt, "", false, 0, be.auth}, 1);
		if (be.auth)
			s.tls_started();
		s.greet();
		// The first byte chooses the piece size, so the same command text
		// is also tried split at every position.
		size_t piece = size > 0 ? (data[0] % 16) + 1 : 1;
		if (size > 0 && data[0] >= 0x80)
			piece = 4096;
		size_t off = size > 0 ? 1 : 0;
		while (off < size && !s.closing()) {
			auto [p, n] = s.input_space();
			if (n > 4096)
				abort();
			if (n == 0) {
				if (s.output().empty())
					abort();  // stalled with nothing to write: a hang
				check_output(s.output());
				s.output_consumed(s.output().size());
				continue;
			}
			n = std::min({n, piece, size - off});
			memcpy(p, data + off, n);
			fed.append(reinterpret_cast<const char*>(data + off), n);
			s.input_commit(n);
			off += n;
			if (s.waiting())
				abort();  // the backend always answers at once
		}
		check_output(s.output());
		s.output_consumed(s.output().size());
		s.shutdown();
		s.timeout();
		s.disconnected();
		check_output(s.output());
		if (!s.closing())
			abort();
	}
	if (be.open_txn != 0)
		abort();
	return 0;
}
