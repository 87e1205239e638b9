// The handler API. A handler is a C++ class compiled into laimd: it gets
// every message routed to one of its configured instances and says, for
// each recipient or for all at once, whether it was delivered. Adding one:
// write handler/builtin/TYPE.cpp with a class derived from laim::Handler
// and one LAIM_HANDLER("type", Class) line, add the file to
// HANDLER_BUILTINS in Makefile.am, rebuild. See README and
// doc/architecture.md ("The handler API").
#pragma once

#include <sys/types.h>

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/secrets.h"

namespace laim {

// Who sent the message and to whom it goes (for one handler instance: the
// recipients routed to it).
struct Envelope {
	std::string id;      // queue id, as in the 250 reply and every log line
	std::string sender;  // reverse-path without <>; empty for the null sender
	std::vector<std::string> recipients;
	std::optional<uid_t> uid;  // submitting uid, when known (local submission)
	std::string client;  // client address ("127.0.0.1", "::1", "local")
	std::string helo;    // HELO/EHLO name
	// The user the client authenticated as (SMTP AUTH on a submission
	// listener, checked by the parent against the listener's users
	// file); empty when the client did not authenticate.
	std::string auth_user;
	time_t arrival = 0;
	// Set only on laim's own notices (a rate limit's alert): the one
	// handler instance that gets the message, routes bypassed.
	std::string instance;
	// Set only on an offline import: the name of the file in offline/ it
	// came from, so that a file whose removal a crash cut off is not
	// imported again (handler/import.h).
	std::string offline;
};

struct Header {
	std::string name;   // as written
	std::string value;  // unfolded, not decoded, leading space removed
};

// The message as received (Received: header first). Parsing is lazy: the
// raw bytes cost nothing, headers/subject/text parse on first use (GMime).
class Message {
 public:
	// raw: the message's bytes; when they also lie in a file (file >= 0, at
	// offset), write_to() copies from there.
	explicit Message(std::string_view raw, int file = -1, off_t offset = 0);
	~Message();
	Message(const Message&) = delete;
	Message& operator=(const Message&) = delete;

	std::string_view raw() const { return raw_; }
	size_t size() const { return raw_.size(); }
	// What a final delivery, which adds its own Return-Path, writes of
	// the message: raw() without the Return-Path and Content-Length
	// fields of its header section (any case, folds included), which a
	// sender could forge (RFC 5321 4.4 lets final delivery remove
	// Return-Path; a false Content-Length cuts the message short in an
	// mbox reader). The pieces of raw() that remain, in order.
	std::vector<std::string_view> delivered_parts() const;
	// Writes prefix (the copy's own Return-Path and so on), then
	// delivered_parts(), to fd. A large message is copied in the kernel
	// (sendfile(2)) from the spool file, so that its pages never enter
	// the process. False with errno set.
	bool write_to(int fd, std::string_view prefix = {}) const;
	const std::vector<Header>& headers() const;
	// First header of that name (case-insensitive), unfolded, or nullopt.
	std::optional<std::string> header(std::string_view name) const;
	// Subject with RFC 2047 encoded-words decoded to UTF-8; "" when absent.
	std::string subject() const;
	// The first text/plain part (or a text/* body), transfer-decoded and
	// converted to UTF-8; "" when there is none.
	std::string text() const;

 private:
	struct Parsed;
	const Parsed& parsed() const;
	std::string_view raw_;
	int file_;
	off_t offset_;
	mutable std::unique_ptr<Parsed> parsed_;
};

// What a delivery came to, for one recipient or for all of a call's. A
// default-constructed Result is a temporary failure, so that a forgotten
// assignment can never read as delivered. An exception thrown by
// deliver() counts as a temporary failure with its message as reason.
struct Result {
	enum class Status { TempFail, PermFail, Delivered };
	Status status = Status::TempFail;
	std::string reason = "the handler gave no result";
	std::string code;          // enhanced status code the peer gave ("5.2.2"), or empty
	unsigned retry_after = 0;  // TempFail: seconds before the next try, when the
				   // peer said (HTTP 429 Retry-After, a rate limit)

	// reason, when given, is the peer's answer ("250 2.0.0 <alice> Saved").
	static Result delivered(std::string reason = "") { return {Status::Delivered, std::move(reason)}; }
	// The queue waits retry_after seconds, or its own back-off if that is later.
	static Result tempfail(std::string why, unsigned retry_after = 0)
	{
		return {Status::TempFail, std::move(why), "", retry_after};
	}
	static Result permfail(std::string why) { return {Status::PermFail, std::move(why)}; }
	// The same result with the peer's enhanced status code.
	Result with_code(std::string enhanced) &&
	{
		code = std::move(enhanced);
		return std::move(*this);
	}
};

// What deliver() returns: one Result for every recipient of the call (the
// one-result form, from a plain Result), or one per recipient in
// env.recipients order (from a vector), so that a peer that answers each
// recipient on its own (LMTP after DATA, an SMTP relay at RCPT) has each
// settled on its own: delivered ones are never delivered again.
class Results {
 public:
	Results(Result all) : each_{std::move(all)} {}  // NOLINT: implicit on purpose
	Results(std::vector<Result> each) : each_(std::move(each)), per_recipient_(true) {}  // NOLINT

	// Recipient i's result; a per-recipient list too short for i gives a
	// temporary failure, never a delivery.
	Result at(size_t i) const
	{
		if (!per_recipient_)
			return each_.at(0);
		if (i < each_.size())
			return each_[i];
		return Result::tempfail("the handler gave " + std::to_string(each_.size()) + " results for recipient " +
					std::to_string(i + 1));
	}
	bool per_recipient() const { return per_recipient_; }

 private:
	std::vector<Result> each_;
	bool per_recipient_ = false;
};

// A handler's verdict on one recipient at RCPT time.
enum class RcptVerdict { Accept, Reject /* 550 */, Defer /* 451 */ };

class Handler;

// Another instance of the config, named by an option and read with
// HandlerOptions::instance() (forward's relay:). Empty in the
// constructor; handlers_create() links it once every instance is built.
// It shares the ownership of that instance, so that a call in progress
// may go on using it after SIGHUP replaced both.
class InstanceLink {
 public:
	explicit InstanceLink(std::string name)
	    : name_(std::move(name)), slot_(std::make_shared<std::shared_ptr<Handler>>()) {}

	const std::string& name() const { return name_; }
	Handler* operator->() const { return slot_->get(); }
	void link(std::shared_ptr<Handler> h) const { *slot_ = std::move(h); }  // by handlers_create()

 private:
	std::string name_;
	std::shared_ptr<std::shared_ptr<Handler>> slot_;  // shared by the copies
};

// A handler instance's section of the config. Constructors read their
// options through this; each option read is marked used, and any key left
// unread is an "unknown key" error naming file, line and key. Values obey
// the same rules as the core keys (common/yaml_value.h, laim.yml(5)).
class HandlerOptions {
 public:
	// delivery_timeout: the queue's, for call_timeout(); 0 where the
	// options are only checked (no call is made).
	HandlerOptions(const HandlerSection& section, const std::string& file, Secrets* secrets = nullptr,
		       unsigned delivery_timeout = 0);

	const std::string& name() const { return section_.name; }
	const std::string& file() const { return file_; }
	// The time a handler whose call has many steps, each with a timeout
	// of its own, gives the whole call: a second less than the queue's
	// delivery_timeout, so that the handler's end, not the queue's
	// timeout, decides how the call went. 0: no limit.
	unsigned call_timeout() const { return delivery_timeout_ > 1 ? delivery_timeout_ - 1 : delivery_timeout_; }
	bool has(const char* key) const;
	// Missing key without a default is an error "missing required option".
	std::string string(const char* key, std::optional<std::string> def = std::nullopt);
	std::string path(const char* key, std::optional<std::string> def = std::nullopt);  // absolute
	long long integer(const char* key, std::optional<long long> def = std::nullopt,
			  long long min = 0, long long max = (1LL << 53));
	bool boolean(const char* key, std::optional<bool> def = std::nullopt);
	std::vector<std::string> strings(const char* key);  // a sequence of scalars; missing = empty
	// The bytes of the secret file the option names (an absolute path
	// that the root parent reads: see common/secrets.h). Errors name the
	// file, line, key and secret file, never the bytes.
	std::string secret(const char* key);
	// The instance that option key names, which must be of handler type
	// `type`: linked by handlers_create() once every instance is built,
	// which fails at the key's line when no instance has that name and
	// type (so laimd -n reports it).
	InstanceLink instance(const char* key, const char* type);
	struct Link {
		std::string key, type;
		InstanceLink link;
	};
	const std::vector<Link>& links() const { return links_; }
	// Throws ConfigError at the key's line (or the section's when absent).
	[[noreturn]] void fail(const char* key, const std::string& what) const;
	// Throws for the first key that no accessor read.
	void check_unused() const;

 private:
	const YamlNode* lookup(const char* key);
	const HandlerSection& section_;
	std::string file_;
	std::vector<std::string> used_;
	Secrets* secrets_;
	unsigned delivery_timeout_;
	std::vector<Link> links_;
};

// Base class of every handler. The constructor runs in the parent too
// (for `laimd -n` and SIGHUP validation), as root: it must only read its
// options and throw on bad ones, never touch files or the network. Work
// that needs I/O belongs in start(), test() or deliver(), which run in the
// unprivileged handler process. An instance has `workers` threads (the
// option, default default_workers()): with more than one, deliver() runs
// in several of them at once, so it must guard any state it changes.
class Handler {
 public:
	virtual ~Handler() = default;
	// Once in the handler process, before the first delivery.
	virtual void start() {}
	// Judge a recipient at RCPT time; the default accepts.
	virtual RcptVerdict check_recipient(std::string_view /*rcpt*/) { return RcptVerdict::Accept; }
	// Delivers msg to env.recipients (those routed to this instance).
	virtual Results deliver(const Envelope& env, const Message& msg) = 0;
	// `laimctl test INSTANCE`: checks that a delivery could succeed now
	// (connect, TLS, AUTH, a writable path) without sending anything.
	// Delivered means ready; the reason says what was checked.
	virtual Result test() { return Result::delivered("nothing to check for this handler type"); }
	// Threads an instance gets when its section sets no `workers:`: 1
	// where order or a lock serialises deliveries anyway.
	virtual unsigned default_workers() const { return 1; }
};

using HandlerFactory = std::unique_ptr<Handler> (*)(HandlerOptions&);

// Registry of handler classes by type name, filled by LAIM_HANDLER.
struct HandlerRegistration {
	HandlerRegistration(const char* type, HandlerFactory factory);
};
HandlerFactory handler_factory(std::string_view type);  // nullptr if unknown
std::vector<std::string> handler_types();

// True when rcpt has no domain or one of this host's names (the
// hostname, the FQDN, /etc/mailname, localhost): the recipients /etc/aliases
// applies to, and the only ones a local mailbox takes.
bool is_local_address(std::string_view rcpt);
// What comes before the last '@' of rcpt, or all of it when there is none.
inline std::string_view local_part(std::string_view rcpt)
{
	return rcpt.substr(0, rcpt.rfind('@'));
}
// This host's names (common/hostname.h's host_names(), as the parent
// resolved them at start). Set once by each process that asks
// is_local_address(), before any delivery thread starts.
void set_local_domains(std::vector<std::string> domains);
// This host's name: the `hostname` key as the parent resolved it at start
// (the first of the names above), for a HELO or a masqueraded sender;
// "localhost" before set_local_domains().
std::string host_name();
// s in base64 (RFC 4648), on one line: AUTH PLAIN, slimta's envelope headers.
std::string base64(std::string_view s);
// True when a and b reach the same final recipient: the same local part
// (in any case) when both are local, else the same address with the
// domain in any case. One copy goes to each final recipient that the
// routes send to the same handlers (handler/routes.h, add_recipient()).
bool same_recipient(std::string_view a, std::string_view b);

// Most threads one instance may have (the `workers:` option).
constexpr unsigned MAX_WORKERS = 64;

// A configured handler instance, as handlers_create() builds it.
struct ConfiguredHandler {
	std::string name;
	std::shared_ptr<Handler> handler;  // shared with the instances that link it
	unsigned workers = 1;  // the `workers:` option, else default_workers()
};

// Builds every handler instance of the config, then links the instances
// that options name (HandlerOptions::instance()); throws ConfigError on an
// unknown type or a handler's invalid option (a secret file too open, a
// linked instance missing included). Used by -n, at start and on SIGHUP
// (in the parent to validate and to read the secrets, which it then
// passes on).
std::vector<ConfiguredHandler> handlers_create(const Config& cfg, Secrets& secrets);

}  // namespace laim

#define LAIM_HANDLER_CAT2(a, b) a##b
#define LAIM_HANDLER_CAT(a, b) LAIM_HANDLER_CAT2(a, b)
// Registers Class under the config type name `type`.
#define LAIM_HANDLER(type, Class)                                                      \
	static const ::laim::HandlerRegistration LAIM_HANDLER_CAT(laim_handler_reg_, __LINE__)( \
		type, [](::laim::HandlerOptions& o) -> std::unique_ptr<::laim::Handler> {        \
			return std::make_unique<Class>(o);                                       \
		})
