// forward: forwards mail to other addresses, as emailtunnel's
// SMTPForwarder and Postfix's virtual aliases do. Each recipient is
// translated through a map in aliases syntax, its local part the name:
//
//   # /etc/laim/forward.map
//   admin: alice@example.com
//   all:   alice@example.com, bob@example.net
//   old:                            # no target: its mail is dropped
//
// A name the map does not know gets 550 5.1.1 at RCPT, a map that cannot
// be read (or has an error) 451 4.3.0; the map is read again when the
// file changes. The translated message goes to a smarthost instance of
// the same config (relay:), which relays it with its TLS and AUTH; each
// target's answer settles it, and a recipient is delivered when all of
// its targets are (see deliver()). On the way the message may get a
// Subject: prefix, an envelope sender of this forwarder's (an address,
// or SRS so that SPF passes), and, for a sender whose domain publishes a
// DMARC policy p=reject, a From: of this forwarder's with the original
// address in Reply-To:. A message that already passed this host more
// than loop_limit times fails as a mail loop.
//
//   handlers:
//     lists:
//       type: forward
//       map: /etc/laim/forward.map      # absolute; read as the laim user
//       relay: relay                    # a smarthost instance of this config
//       subject_prefix: "[lists]"       # optional; added once
//       mail_from: srs                  # optional: an address, or srs; default:
//                                       # the sender as it came (null stays null)
//       srs_secret: /etc/laim/srs.secret  # with srs: root:root 0600, the key
//                                       # postsrsd reverses bounces with
//       srs_domain: fwd.example.org     # with srs; default: the hostname key
//       from_rewrite: dmarc             # off (default) | dmarc; needs mail_from
//       loop_limit: 5                   # this host's Received:/Delivered-To: lines
//       workers: 4
//     relay:
//       type: smarthost
//       host: smtp.example.org
//       credentials: /etc/laim/relay.secret
//   routes:
//     - match: "*@lists.example.org"
//       handlers: [lists]
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <resolv.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "common/address.h"
#include "common/aliases.h"
#include "common/log.h"
#include "handler/api/gmime.h"
#include "handler/api/handler.h"
#include "handler/api/header_edit.h"

namespace laim {

namespace {

bool is_ascii(std::string_view s)
{
	return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// The map file, read again when it changes: its inode, size, mtime or
// ctime (a chmod counts, so that a map made unreadable is noticed).
// Shared by check_recipient() in the main thread and the workers.
class ForwardMap {
 public:
	ForwardMap(std::string instance, std::string path) : instance_(std::move(instance)), path_(std::move(path)) {}
	// The map as the file now is; throws std::runtime_error saying why
	// when it cannot be read or has an error (logged once per change).
	std::shared_ptr<const Aliases> get();
	const std::string& path() const { return path_; }

 private:
	bool same_file(const struct stat& st) const;
	void load(const struct stat& st);
	void set_error(std::string error);

	std::mutex mutex_;
	std::string instance_, path_;
	bool read_ = false;
	struct stat seen_ {};
	std::shared_ptr<const Aliases> map_;
	std::string error_;  // why map_ is not usable, else ""
};

bool ForwardMap::same_file(const struct stat& st) const
{
	auto same = [](const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; };
	return read_ && st.st_dev == seen_.st_dev && st.st_ino == seen_.st_ino && st.st_size == seen_.st_size &&
	       same(st.st_mtim, seen_.st_mtim) && same(st.st_ctim, seen_.st_ctim);
}

// Why the map is not usable ("" when it is), logged when that changes.
void ForwardMap::set_error(std::string error)
{
	if (!error.empty() && error != error_)
		log_warnx("handler %s: %s; its recipients get 451 until it is fixed", instance_.c_str(), error.c_str());
	error_ = std::move(error);
}

// Reads the file (stat first, so that a change while it is read is seen
// at the next use); the first error, and how many more, say why not.
void ForwardMap::load(const struct stat& st)
{
	std::vector<std::string> errors;
	auto map = std::make_shared<const Aliases>(Aliases::load(path_, &errors, AliasesSyntax::ForwardMap));
	read_ = true;
	seen_ = st;
	map_ = errors.empty() ? map : nullptr;
	if (errors.empty()) {
		log_info("handler %s: forward map %s read: %zu names", instance_.c_str(), path_.c_str(), map->size());
		set_error("");
	} else {
		std::string more = " (and " + std::to_string(errors.size() - 1) + " more errors)";
		set_error("forward map " + errors[0] + (errors.size() > 1 ? more : ""));
	}
}

std::shared_ptr<const Aliases> ForwardMap::get()
{
	std::lock_guard<std::mutex> lock(mutex_);
	struct stat st;
	if (stat(path_.c_str(), &st) != 0) {
		read_ = false;
		map_ = nullptr;
		set_error("forward map " + path_ + ": " + strerror(errno));
	} else if (!same_file(st)) {
		load(st);
	}
	if (!map_)
		throw std::runtime_error(error_);
	return map_;
}

// What earlier calls settled of a message's targets (delivered, or failed
// for good), so that a recipient retried because one of its targets was
// deferred is not sent again to the others. In memory and process-wide,
// so it outlives an instance that SIGHUP replaced; after a restart of
// laimd those targets get the message again (at least once).
class SettledTargets {
 public:
	static SettledTargets& instance()
	{
		static SettledTargets s;
		return s;
	}
	// The results settled for (instance, queue id), by target.
	std::map<std::string, Result> get(const std::string& key);
	void put(const std::string& key, std::map<std::string, Result> settled);

 private:
	struct Entry {
		std::map<std::string, Result> settled;
		time_t updated = 0;
	};
	std::mutex mutex_;
	std::map<std::string, Entry> entries_;
};

std::map<std::string, Result> SettledTargets::get(const std::string& key)
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto it = entries_.find(key);
	return it == entries_.end() ? std::map<std::string, Result>{} : it->second.settled;
}

// An empty map forgets the message. Entries of messages that left the
// queue some other way (laimctl remove, max_queue_age) go after 8 days.
void SettledTargets::put(const std::string& key, std::map<std::string, Result> settled)
{
	std::lock_guard<std::mutex> lock(mutex_);
	time_t now = time(nullptr);
	std::erase_if(entries_, [now](const auto& e) { return now - e.second.updated > 8 * 86400; });
	if (settled.empty())
		entries_.erase(key);
	else
		entries_[key] = {std::move(settled), now};
}

// The TXT records at name, each one string (its character-strings
// joined, RFC 7208 3.3); none when the name or the type does not exist.
// Throws when the lookup fails for now (no answer, SERVFAIL).
std::vector<std::string> txt_records(const std::string& name)
{
	struct __res_state rs {};
	if (res_ninit(&rs) != 0)
		throw std::runtime_error("DNS: the resolver cannot start (/etc/resolv.conf)");
	unsigned char answer[4096];
	int n = res_nquery(&rs, name.c_str(), ns_c_in, ns_t_txt, answer, sizeof answer);
	int herr = rs.res_h_errno;
	res_nclose(&rs);
	if (n < 0 && (herr == HOST_NOT_FOUND || herr == NO_DATA))
		return {};
	ns_msg msg;
	if (n < 0 || ns_initparse(answer, n, &msg) != 0)
		throw std::runtime_error("DMARC lookup of " + name + ": " + hstrerror(herr));
	std::vector<std::string> records;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		ns_rr rr;
		if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_txt)
			continue;
		std::string& text = records.emplace_back();
		const unsigned char* p = ns_rr_rdata(rr);
		for (const unsigned char* end = p + ns_rr_rdlen(rr); p < end && p + 1 + *p <= end; p += 1 + *p)
			text.append(reinterpret_cast<const char*>(p + 1), *p);
	}
	return records;
}

// RFC 7489 6.3: the p= tag of DOMAIN's DMARC record (the one TXT record
// at _dmarc.DOMAIN whose first tag is v=DMARC1), in lower case; "" when
// there is none, or several. Throws when the lookup fails for now.
std::string dmarc_policy(const std::string& domain)
{
	std::vector<std::string> records = txt_records("_dmarc." + domain);
	std::erase_if(records, [](const std::string& r) {
		bool first = r.starts_with("v=DMARC1") && (r.size() == 8 || r[8] == ';' || r[8] == ' ' || r[8] == '\t');
		return !first;
	});
	if (records.size() != 1)
		return "";
	for (size_t pos = 0; pos < records[0].size();) {
		size_t semi = std::min(records[0].find(';', pos), records[0].size());
		std::string tag = records[0].substr(pos, semi - pos);
		std::erase_if(tag, [](char c) { return c == ' ' || c == '\t'; });
		std::transform(tag.begin(), tag.end(), tag.begin(), [](unsigned char c) { return tolower(c); });
		if (tag.starts_with("p="))
			return tag.substr(2);
		pos = semi + 1;
	}
	return "";
}

// The first mailbox of an address header's value: its display name
// (decoded, UTF-8) and address (the domain in IDNA form), or nullopt.
std::optional<std::pair<std::string, std::string>> first_mailbox(const std::string& value)
{
	const GMimeApi& g = gm();
	GRef<InternetAddressList> list(g.internet_address_list_parse(g.options, value.c_str()));
	if (!list || g.internet_address_list_length(list.get()) < 1)
		return std::nullopt;
	InternetAddress* a = g.internet_address_list_get_address(list.get(), 0);
	if (!g.is(a, g.internet_address_mailbox_get_type))
		return std::nullopt;
	const char* name = g.internet_address_get_name(a);
	const char* addr = g.internet_address_mailbox_get_idn_addr(INTERNET_ADDRESS_MAILBOX(a));
	if (!addr || !strchr(addr, '@'))
		return std::nullopt;
	return std::make_pair(std::string(name ? name : ""), std::string(addr));
}

// "name" <address>, the name RFC 2047-encoded (UTF-8) when it is not ASCII.
std::string format_mailbox(const std::string& name, const std::string& address)
{
	const GMimeApi& g = gm();
	GRef<InternetAddress> ia(g.internet_address_mailbox_new(name.c_str(), address.c_str()));
	g.internet_address_set_charset(ia.get(), "utf-8");
	char* s = g.internet_address_to_string(ia.get(), nullptr, TRUE);
	std::string out(s);
	g_free(s);
	return out;
}

// A header field as GMime folded it (g_free()d here), with CRLF line ends.
std::string crlf_field(char* folded)
{
	std::string out;
	for (const char* p = folded; *p; p++)
		out += *p == '\n' ? std::string("\r\n") : std::string(1, *p);
	g_free(folded);
	if (!out.ends_with("\r\n"))
		out += "\r\n";
	return out;
}

// "Subject: TEXT" encoded (RFC 2047, UTF-8 words only where needed) and
// folded by GMime, with CRLF line ends.
std::string encoded_subject(const std::string& text)
{
	const GMimeApi& g = gm();
	char* enc = g.utils_header_encode_text(nullptr, text.c_str(), "utf-8");
	std::string field = std::string("Subject: ") + enc;
	g_free(enc);
	return crlf_field(g.utils_unstructured_header_fold(g.options, nullptr, field.c_str()));
}

// The value of a From: of name and address, encoded and folded, without
// its CRLF: a long name on one line went past RFC 5322's 998 octets.
std::string folded_from(const std::string& name, const std::string& address)
{
	const GMimeApi& g = gm();
	std::string field = "From: " + format_mailbox(name, address);
	std::string out = crlf_field(g.utils_structured_header_fold(g.options, nullptr, field.c_str()));
	return out.substr(6, out.size() - 8);
}

// msg with prefix and a space before its subject (decoded: what the
// subject says), added once: not when the subject holds the prefix already
// (a reply's "Re: [list] ..."). A subject with encoded words (RFC 2047), or
// a prefix that is not ASCII, is decoded, prefixed and encoded again;
// otherwise the prefix goes before the value as written. A message
// without Subject: gets one. Every other byte stays. False: no change.
bool prefix_subject(std::string_view msg, const std::string& decoded, const std::string& prefix, std::string* out)
{
	if (decoded.find(prefix) != std::string::npos)
		return false;
	size_t end = 0;
	std::vector<HeaderField> fields = header_fields(msg, &end);
	auto f = std::find_if(fields.begin(), fields.end(),
			      [](const HeaderField& h) { return header_name_is(h.name, "subject"); });
	size_t begin = f == fields.end() ? end : f->begin, stop = f == fields.end() ? end : f->end;
	std::string field;
	std::string_view value = msg.substr(begin, stop - begin);
	value.remove_prefix(std::min(value.find(':') + 1, value.size()));
	value.remove_prefix(std::min(value.find_first_not_of(" \t"), value.size()));
	if (!decoded.empty() && is_ascii(prefix) && value.find("=?") == std::string_view::npos)
		field = "Subject: " + prefix + " " + std::string(value);
	else
		field = encoded_subject(decoded.empty() ? prefix : prefix + " " + decoded);
	out->clear();
	out->reserve(msg.size() + field.size());
	out->append(msg.substr(0, begin)).append(field).append(msg.substr(stop));
	return true;
}

// Days since the epoch, mod 1024, in two characters of base32: the SRS
// time stamp (Mail::SRS, libsrs2).
std::string srs_timestamp(time_t now)
{
	static const char base32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	long days = static_cast<long>(now / 86400) % 1024;
	return {base32[(days >> 5) & 31], base32[days & 31]};
}

// True when a Received: value names this host after "by" (laim's own
// "by HOSTNAME (laim)", and any other MTA's here).
bool received_here(const std::string& value)
{
	std::string v = " " + value;
	std::replace(v.begin(), v.end(), '\t', ' ');
	for (size_t by = 0; (by = v.find(" by ", by)) != std::string::npos; by += 4) {
		std::string host = v.substr(by + 4, v.find_first_of(" ;", by + 4) - (by + 4));
		if (!host.empty() && is_local_address("@" + host))
			return true;
	}
	return false;
}

class Forward : public Handler {
 public:
	explicit Forward(HandlerOptions& o);

	RcptVerdict check_recipient(std::string_view rcpt) override;
	Results deliver(const Envelope& env, const Message& msg) override;
	Result test() override;
	// The map is shared under a lock; each call has its own relay session.
	unsigned default_workers() const override { return 4; }

 private:
	enum class Sender { Keep, Address, Srs };
	// What a call forwards: the targets, each once, and each recipient's.
	struct Plan {
		std::vector<std::string> targets;
		std::vector<std::vector<size_t>> of;  // recipient -> indices in targets
		std::vector<bool> unknown;            // recipient -> not in the map (any more)
	};

	std::string loop_check(const Message& msg) const;
	Plan translate(const Aliases& map, const Envelope& env) const;
	std::string srs(const std::string& address) const;
	std::string sender(const std::string& original) const;
	bool edit(const Message& msg, std::string* out) const;
	bool rewrite_dmarc(std::string_view msg, const Message& parsed, std::string* out) const;
	std::map<std::string, Result> relay(const Envelope& env, const Message& msg, const Plan& plan,
					    const std::map<std::string, Result>& settled) const;
	Result combine(const Plan& plan, size_t rcpt, const std::map<std::string, Result>& results) const;

	std::string name_;
	ForwardMap map_;
	InstanceLink relay_;
	std::string prefix_;
	Sender sender_ = Sender::Keep;
	std::string mail_from_, srs_secret_, srs_domain_;
	bool dmarc_;
	long long loop_limit_;
};

LAIM_HANDLER("forward", Forward);

Forward::Forward(HandlerOptions& o)
    : name_(o.name()),
      map_(o.name(), o.path("map")),
      relay_(o.instance("relay", "smarthost")),
      prefix_(o.string("subject_prefix", "")),
      mail_from_(o.string("mail_from", "")),
      loop_limit_(o.integer("loop_limit", 5, 1, 1000))
{
	std::string rewrite = o.string("from_rewrite", "off");
	if (rewrite != "off" && rewrite != "dmarc")
		o.fail("from_rewrite", "expected off or dmarc, got \"" + rewrite + "\"");
	dmarc_ = rewrite == "dmarc";
	if (o.has("subject_prefix") && (prefix_.empty() || prefix_.find_first_of("\r\n") != std::string::npos))
		o.fail("subject_prefix", "expected one line of text");
	if (mail_from_ == "srs") {
		sender_ = Sender::Srs;
		srs_secret_ = o.secret("srs_secret");
		srs_domain_ = o.string("srs_domain", "");
		if (o.has("srs_domain") && !valid_domain(srs_domain_, false))
			o.fail("srs_domain", "expected a domain, got \"" + srs_domain_ + "\"");
		if (srs_secret_.size() < 16)
			o.fail("srs_secret", o.path("srs_secret") + ": expected a secret of 16 bytes or more");
	} else if (!mail_from_.empty()) {
		if (!valid_mailbox(mail_from_, false, false))
			o.fail("mail_from", "expected an address (user@domain) or srs, got \"" + mail_from_ + "\"");
		sender_ = Sender::Address;
	}
	for (const char* key : {"srs_secret", "srs_domain"})
		if (sender_ != Sender::Srs && o.has(key))
			o.fail(key, "has no use without mail_from: srs");
	if (dmarc_ && sender_ == Sender::Keep)
		o.fail("from_rewrite", "dmarc needs mail_from (an address or srs): the From: it writes is "
				       "an address of this forwarder's");
}

RcptVerdict Forward::check_recipient(std::string_view rcpt)
{
	try {
		if (map_.get()->defines(local_part(rcpt)))
			return RcptVerdict::Accept;
	} catch (const std::runtime_error&) {
		return RcptVerdict::Defer;  // the map logged why
	}
	log_info("handler %s: <%.*s> refused: not in the forward map %s", name_.c_str(), static_cast<int>(rcpt.size()),
		 rcpt.data(), map_.path().c_str());
	return RcptVerdict::Reject;
}

// "" or why the message is a mail loop: it carries more than loop_limit
// Received: lines of this host and Delivered-To: lines with an address
// of this host.
std::string Forward::loop_check(const Message& msg) const
{
	long long hops = 0;
	for (const Header& h : msg.headers()) {
		std::string_view to = h.value;
		if (to.starts_with('<') && to.ends_with('>'))
			to = to.substr(1, to.size() - 2);
		if (header_name_is(h.name, "delivered-to"))
			hops += is_local_address(to);
		else if (header_name_is(h.name, "received"))
			hops += received_here(h.value);
	}
	if (hops <= loop_limit_)
		return "";
	return "mail loop: the message passed this host " + std::to_string(hops) + " times (Received:, Delivered-To:), "
	       "more than loop_limit " + std::to_string(loop_limit_);
}

// Each recipient's targets in the map, each target once in the call.
Forward::Plan Forward::translate(const Aliases& map, const Envelope& env) const
{
	Plan plan;
	for (const std::string& rcpt : env.recipients) {
		std::vector<size_t>& mine = plan.of.emplace_back();
		plan.unknown.push_back(!map.defines(local_part(rcpt)));  // the map changed since RCPT
		if (plan.unknown.back())
			continue;
		for (std::string& t : map.expand(local_part(rcpt)).addresses) {
			auto same = [&t](const std::string& x) { return same_recipient(x, t); };
			auto it = std::find_if(plan.targets.begin(), plan.targets.end(), same);
			mine.push_back(static_cast<size_t>(it - plan.targets.begin()));
			if (it == plan.targets.end())
				plan.targets.push_back(std::move(t));
		}
	}
	return plan;
}

// SRS0=HHHH=TT=domain=local@srs_domain, as Mail::SRS and postsrsd write
// it: TT the day (srs_timestamp()), HHHH the first four characters of
// base64(HMAC-SHA1(srs_secret, lower case of TT, domain and local)), so
// that the domain's SRS reverser, holding the same secret, takes back a
// bounce to it and no other. local is the local part's text (unquoted,
// as Postfix hands it to postsrsd); the new local part is quoted as a
// whole when it is no Dot-string ("SRS0=HHHH=TT=domain=john doe"@...).
std::string Forward::srs(const std::string& address) const
{
	size_t at = address.rfind('@');
	std::string local = local_part_text(std::string_view(address).substr(0, at));
	std::string domain = at == std::string::npos ? host_name() : address.substr(at + 1);
	std::string tt = srs_timestamp(time(nullptr));
	std::string data = tt + domain + local;
	std::transform(data.begin(), data.end(), data.begin(), [](unsigned char c) { return tolower(c); });
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	HMAC(EVP_sha1(), srs_secret_.data(), static_cast<int>(srs_secret_.size()),
	     reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
	std::string hash = base64(std::string_view(reinterpret_cast<const char*>(mac), len)).substr(0, 4);
	return quote_local_part("SRS0=" + hash + "=" + tt + "=" + domain + "=" + local) + "@" +
	       (srs_domain_.empty() ? host_name() : srs_domain_);
}

// The envelope sender the relay gets; the null sender stays null.
std::string Forward::sender(const std::string& original) const
{
	if (original.empty() || sender_ == Sender::Keep)
		return original;
	return sender_ == Sender::Address ? mail_from_ : srs(original);
}

// from_rewrite: dmarc: when the From: address's domain publishes p=reject,
// From: becomes "original name" <this forwarder's address> (mail_from, or
// the From: address in SRS form), the original goes to Reply-To: (unless
// there is one) and X-Original-From:. Throws when the lookup fails for now.
bool Forward::rewrite_dmarc(std::string_view raw, const Message& msg, std::string* out) const
{
	std::optional<std::string> from = msg.header("From");
	auto mailbox = from ? first_mailbox(*from) : std::nullopt;
	if (!mailbox)
		return false;
	const auto& [name, address] = *mailbox;
	std::string domain = address.substr(address.rfind('@') + 1);
	if (!valid_domain(domain, false) || dmarc_policy(domain) != "reject")
		return false;
	std::string ours = sender_ == Sender::Address ? mail_from_ : srs(address);
	return rewrite_from(raw, folded_from(name.empty() ? address : name, ours), false, out);
}

// The message as forwarded: subject prefix and From: rewrite applied.
// False when it goes as it came.
bool Forward::edit(const Message& msg, std::string* out) const
{
	std::string prefixed;
	std::string_view data = msg.raw();
	bool changed = !prefix_.empty() && prefix_subject(data, msg.subject(), prefix_, &prefixed);
	if (changed)
		data = prefixed;
	if (dmarc_ && rewrite_dmarc(data, msg, out))
		return true;
	if (changed)
		*out = std::move(prefixed);
	return changed;
}

// One relay call for the targets not settled before; each target's result.
std::map<std::string, Result> Forward::relay(const Envelope& env, const Message& msg, const Plan& plan,
					     const std::map<std::string, Result>& settled) const
{
	Envelope out = env;
	out.recipients.clear();
	for (const std::string& t : plan.targets)
		if (!settled.count(t))
			out.recipients.push_back(t);
	std::map<std::string, Result> results = settled;
	if (out.recipients.empty())
		return results;
	out.sender = sender(env.sender);
	std::string edited;
	bool changed = edit(msg, &edited);
	Message forwarded(changed ? std::string_view(edited) : msg.raw());
	Results r = relay_->deliver(out, changed ? forwarded : msg);
	for (size_t i = 0; i < out.recipients.size(); i++)
		results[out.recipients[i]] = r.at(i);
	return results;
}

// A recipient's result from its targets': deferred while any is, else
// failed when any failed, else delivered (no target: dropped). The
// reason names each target with its answer.
Result Forward::combine(const Plan& plan, size_t rcpt, const std::map<std::string, Result>& results) const
{
	if (plan.unknown[rcpt])
		return Result::permfail("not in the forward map " + map_.path()).with_code("5.1.1");
	if (plan.of[rcpt].empty())
		return Result::delivered("dropped: the forward map lists no target");
	Result out = Result::delivered();
	out.reason.clear();
	std::string done;
	for (size_t t : plan.of[rcpt]) {
		const std::string& target = plan.targets[t];
		const Result& r = results.at(target);
		std::string part = "<" + target + ">: " + (r.reason.empty() ? "delivered" : r.reason);
		if (r.status == Result::Status::Delivered) {
			done += (done.empty() ? "" : "; ") + part;
			continue;
		}
		bool worse = r.status < out.status;
		if (worse)
			out = Result{r.status, "", r.code, 0};
		if (r.status == out.status) {
			out.reason += (out.reason.empty() ? "" : "; ") + part;
			out.retry_after = std::max(out.retry_after, r.retry_after);
		}
	}
	if (out.status == Result::Status::Delivered)
		out.reason = "forwarded to " + done;
	else if (!done.empty())
		out.reason += " (delivered: " + done + ")";
	return out;
}

// Loop check, translation, one relay call for the targets not settled
// before, then each recipient's result from its targets'. A target is
// settled once delivered or failed: a recipient deferred for one of its
// targets is retried for that one alone.
Results Forward::deliver(const Envelope& env, const Message& msg)
{
	if (std::string loop = loop_check(msg); !loop.empty())
		return Result::permfail(loop).with_code("5.4.6");
	Plan plan = translate(*map_.get(), env);
	std::string key = name_ + " " + env.id;
	std::map<std::string, Result> results = relay(env, msg, plan, SettledTargets::instance().get(key));
	std::vector<Result> each;
	bool open = false;
	for (size_t i = 0; i < env.recipients.size(); i++) {
		each.push_back(combine(plan, i, results));
		open |= each.back().status == Result::Status::TempFail;
	}
	std::erase_if(results, [](const auto& r) { return r.second.status == Result::Status::TempFail; });
	SettledTargets::instance().put(key, open ? std::move(results) : std::map<std::string, Result>{});
	return each;
}

// laimctl test: the map can be read, and the relay is ready.
Result Forward::test()
{
	std::shared_ptr<const Aliases> map;
	try {
		map = map_.get();
	} catch (const std::runtime_error& e) {
		return Result::tempfail(e.what());
	}
	Result r = relay_->test();
	r.reason = "forward map " + map_.path() + ": " + std::to_string(map->size()) + " names; relay " +
		   relay_.name() + ": " + r.reason;
	return r;
}

}  // namespace

}  // namespace laim
