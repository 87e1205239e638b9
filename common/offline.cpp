// The offline spool file format; see offline.h.
#include "common/offline.h"

#include <stdexcept>

namespace laim {

namespace {

// Why a value may not go into an envelope, or nullptr when it may.
const char* bad_value(std::string_view v)
{
	if (v.size() > OFFLINE_MAX_VALUE)
		return "longer than 320 octets";
	if (v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
		return "holds CR, LF or NUL";
	return nullptr;
}

void put_netstring(std::string& out, std::string_view v)
{
	out += std::to_string(v.size());
	out += ':';
	out += v;
	out += ',';
}

// Reads the netstrings of a header in order, keeping the position.
class NetstringReader {
 public:
	explicit NetstringReader(std::string_view data) : data_(data) {}

	size_t pos() const { return pos_; }

	// The next netstring's value; `what` names it in errors.
	std::string_view next(const char* what)
	{
		size_t len = length(what);
		if (data_.size() - pos_ < len + 1)
			truncated(what);
		std::string_view v = data_.substr(pos_, len);
		pos_ += len;
		if (data_[pos_] != ',')
			fail(what, "does not end with ','");
		pos_++;
		if (const char* why = bad_value(v))
			fail(what, why);
		return v;
	}

 private:
	// "LENGTH:", decimal without leading zeros, at most OFFLINE_MAX_VALUE.
	size_t length(const char* what)
	{
		size_t start = pos_, len = 0;
		while (pos_ < data_.size() && data_[pos_] >= '0' && data_[pos_] <= '9') {
			len = len * 10 + size_t(data_[pos_] - '0');
			pos_++;
			if (len > OFFLINE_MAX_VALUE)
				fail(what, "is longer than 320 octets");
		}
		if (pos_ == data_.size())
			truncated(what);
		if (pos_ == start)
			fail(what, "has no length");
		if (data_[start] == '0' && pos_ - start > 1)
			fail(what, "length has a leading zero");
		if (data_[pos_] != ':')
			fail(what, "length is not followed by ':'");
		pos_++;
		return len;
	}

	[[noreturn]] void truncated(const char* what)
	{
		throw std::runtime_error(std::string("header truncated in the ") + what);
	}

	[[noreturn]] void fail(const char* what, const char* why)
	{
		throw std::runtime_error(std::string("the ") + what + " " + why);
	}

	std::string_view data_;
	size_t pos_ = 0;
};

// The recipient count: a decimal number 1..OFFLINE_MAX_RECIPIENTS
// without leading zeros.
size_t parse_count(std::string_view v)
{
	bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string_view::npos;
	if (!digits || v[0] == '0')
		throw std::runtime_error("bad recipient count \"" + std::string(v) + "\"");
	size_t n = 0;
	for (char c : v.substr(0, 5))
		n = n * 10 + size_t(c - '0');
	if (v.size() > 4 || n > OFFLINE_MAX_RECIPIENTS)
		throw std::runtime_error("too many recipients (" + std::string(v) + ")");
	return n;
}

}  // namespace

std::string offline_encode(const OfflineEnvelope& env)
{
	if (env.recipients.empty() || env.recipients.size() > OFFLINE_MAX_RECIPIENTS)
		throw std::invalid_argument("an offline envelope holds 1 to 1000 recipients");
	if (const char* why = bad_value(env.sender))
		throw std::invalid_argument(std::string("sender ") + why);
	std::string out(OFFLINE_MAGIC);
	put_netstring(out, env.sender);
	put_netstring(out, std::to_string(env.recipients.size()));
	for (const std::string& r : env.recipients) {
		if (r.empty())
			throw std::invalid_argument("empty recipient");
		if (const char* why = bad_value(r))
			throw std::invalid_argument("recipient " + std::string(why));
		put_netstring(out, r);
	}
	out += '\n';
	return out;
}

size_t offline_decode(std::string_view data, OfflineEnvelope& out)
{
	if (data.substr(0, OFFLINE_MAGIC.size()) != OFFLINE_MAGIC)
		throw std::runtime_error("not an offline file (bad magic)");
	// The limits on count and values keep a well-formed header far below
	// OFFLINE_MAX_HEADER; the cap still bounds what is ever scanned.
	std::string_view head = data.substr(OFFLINE_MAGIC.size(), OFFLINE_MAX_HEADER - OFFLINE_MAGIC.size());
	NetstringReader r(head);
	OfflineEnvelope env;
	env.sender = r.next("sender");
	size_t count = parse_count(r.next("recipient count"));
	env.recipients.reserve(count);
	for (size_t i = 0; i < count; i++) {
		std::string_view rcpt = r.next("recipient");
		if (rcpt.empty())
			throw std::runtime_error("empty recipient");
		env.recipients.emplace_back(rcpt);
	}
	if (r.pos() == head.size())
		throw std::runtime_error("header truncated before its final newline");
	if (head[r.pos()] != '\n')
		throw std::runtime_error("garbage after the recipients");
	out = std::move(env);
	return OFFLINE_MAGIC.size() + r.pos() + 1;
}

std::string offline_body_fault(std::string_view message)
{
	constexpr std::string_view special("\r\n\0", 3);
	for (size_t i = message.find_first_of(special); i != message.npos; i = message.find_first_of(special, i + 1)) {
		if (message[i] == '\0')
			return "NUL in the message at octet " + std::to_string(i);
		if (message[i] == '\r' && i + 1 < message.size() && message[i + 1] == '\n')
			i++;
		else
			return "bare CR or LF in the message at octet " + std::to_string(i);
	}
	return "";
}

}  // namespace laim
