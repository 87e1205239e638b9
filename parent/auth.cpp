// The users and senders files of the auth listeners, and the password
// check the smtp process asks the parent for (parent/auth.h). Runs as
// root in the parent: the hashes never leave this process.
#include "parent/auth.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common/peer.h"

namespace laim {

namespace {

// The crypt(3) methods a users file may use: libxcrypt's yescrypt,
// sha512crypt, sha256crypt and bcrypt. DES, MD5 and the rest are refused.
constexpr std::string_view HASH_PREFIXES[] = {"$y$", "$6$", "$5$", "$2b$"};
// What one user's sender patterns may take in the AUTH answer (an imsg
// payload is at most 16 KiB).
constexpr size_t SENDERS_MAX = 8192;
// A user name or password longer than this cannot be a real one.
constexpr size_t CREDENTIAL_MAX = 512;

[[noreturn]] void fail(const std::string& file, int line, const std::string& what)
{
	throw ConfigError(file + ":" + std::to_string(line) + ": " + what);
}

// Calls fn(line number, line) for each line that is neither blank nor a
// comment.
template <typename Fn>
void each_line(std::string_view text, Fn fn)
{
	int n = 0;
	while (!text.empty()) {
		size_t nl = text.find('\n');
		std::string_view line = text.substr(0, nl);
		text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
		n++;
		size_t first = line.find_first_not_of(" \t");
		if (first == std::string_view::npos || line[first] == '#')
			continue;
		fn(n, line);
	}
}

// A user name: printable ASCII without white space or ':' (an address
// such as alice@example.org is fine).
bool valid_user(std::string_view u)
{
	return !u.empty() && u.size() <= 255 &&
	       std::all_of(u.begin(), u.end(), [](char c) { return c > 0x20 && c < 0x7f && c != ':'; });
}

// A hash of one of HASH_PREFIXES that libxcrypt can check, in crypt's
// alphabet: a setting ("$6$salt") without its checksum is none, since
// nothing could match it, nor a line of /etc/shadow (more fields).
bool valid_hash(const std::string& h)
{
	auto crypt_char = [](char c) {
		return isalnum(static_cast<unsigned char>(c)) || std::string_view("./$=,").find(c) != std::string_view::npos;
	};
	bool known = std::any_of(std::begin(HASH_PREFIXES), std::end(HASH_PREFIXES),
				 [&h](std::string_view p) { return h.starts_with(p); });
	size_t fields = std::count(h.begin(), h.end(), '$');
	if (!known || fields < (h.starts_with("$y$") ? 4u : 3u) || h.back() == '$' ||
	    !std::all_of(h.begin(), h.end(), crypt_char))
		return false;
	int st = crypt_checksalt(h.c_str());
	return st == CRYPT_SALT_OK || st == CRYPT_SALT_METHOD_LEGACY;
}

// A sender pattern: an address, "@domain" (any address there), or
// either with '*' standing for any characters ("alice+*@example.org",
// "*" for any sender). fnmatch(3)'s other special characters are
// refused, so that '*' is the only one it sees.
bool valid_sender_pattern(std::string_view p)
{
	return !p.empty() && p.size() <= 320 && std::all_of(p.begin(), p.end(), [](char c) {
		return c > 0x20 && c < 0x7f && c != '?' && c != '[' && c != '\\' && c != ',';
	});
}

// A hash's method and cost parameters, without salt or checksum
// ("$y$j9T$", "$6$", "$6$rounds=9999$", "$2b$05$"): the hashes of one
// setting take as long to check.
std::string cost_setting(const std::string& h)
{
	size_t second = h.find('$', 1);
	if (h.starts_with("$y$") || h.starts_with("$2b$") || h.compare(second + 1, 7, "rounds=") == 0)
		return h.substr(0, h.find('$', second + 1) + 1);
	return h.substr(0, second + 1);
}

// The CPU time one check against hash takes, in seconds.
double check_cost(const std::string& hash)
{
	struct crypt_data data = {};
	struct timespec a, b;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	crypt_rn("", hash.c_str(), &data, sizeof data);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	OPENSSL_cleanse(&data, sizeof data);
	return double(b.tv_sec - a.tv_sec) + double(b.tv_nsec - a.tv_nsec) / 1e9;
}

std::string_view trim(std::string_view s)
{
	size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
	return a == std::string_view::npos ? std::string_view() : s.substr(a, b - a + 1);
}

}  // namespace

// Lines "user:hash"; a user may appear once.
AuthTable AuthTable::parse_users(std::string_view text, const std::string& file)
{
	AuthTable t;
	each_line(text, [&](int n, std::string_view line) {
		size_t colon = line.find(':');
		if (colon == std::string_view::npos)
			fail(file, n, "expected user:hash");
		std::string_view user = line.substr(0, colon);
		std::string hash(line.substr(colon + 1));
		if (!valid_user(user))
			fail(file, n, "bad user name (printable ASCII without spaces or ':')");
		if (hash.ends_with('\r'))
			fail(file, n, "user " + std::string(user) +
					      ": the hash ends with a carriage return (a file with Windows line endings?)");
		if (hash.ends_with(' ') || hash.ends_with('\t'))
			fail(file, n, "user " + std::string(user) + ": a space after the hash");
		if (hash.starts_with(' ') || hash.starts_with('\t'))
			fail(file, n, "user " + std::string(user) + ": a space before the hash");
		if (!valid_hash(hash))
			fail(file, n, "user " + std::string(user) +
					      ": not a yescrypt ($y$), sha512crypt ($6$), sha256crypt ($5$) or "
					      "bcrypt ($2b$) hash; make one with mkpasswd -m yescrypt or openssl passwd -6");
		if (!t.users_.emplace(std::string(user), User{std::move(hash), {}}).second)
			fail(file, n, "user " + std::string(user) + " listed twice");
	});
	if (t.users_.empty())
		t.warnings_.push_back(file + ": no users: nobody can log in on its listener");
	t.pick_dummy(file);
	return t;
}

// An unknown user's password is checked against the hash that costs
// most to check, found by timing one check per cost setting: no known
// user's answer comes sooner than an unknown user's. Hashes of several
// settings still tell the users apart from each other: a warning.
void AuthTable::pick_dummy(const std::string& file)
{
	std::map<std::string, const std::string*> settings;  // one hash of each
	for (const auto& [name, u] : users_)
		settings.emplace(cost_setting(u.hash), &u.hash);
	double most = -1;
	for (const auto& [setting, hash] : settings) {
		double cost = check_cost(*hash);
		if (cost > most) {
			most = cost;
			dummy_ = *hash;
		}
	}
	if (settings.size() > 1) {
		std::string list;
		for (const auto& [setting, hash] : settings)
			list += (list.empty() ? "" : ", ") + setting;
		warnings_.push_back(file + ": hashes of " + std::to_string(settings.size()) + " settings (" + list +
				    "): a wrong password for one user answers faster than for another or for an "
				    "unknown user: make every hash with one method");
	}
}

// Lines "user: pattern, pattern, ..."; see valid_sender_pattern().
void AuthTable::parse_senders(std::string_view text, const std::string& file)
{
	senders_bound_ = true;
	std::map<std::string, int, std::less<>> seen;
	each_line(text, [&](int n, std::string_view line) {
		size_t colon = line.find(':');
		if (colon == std::string_view::npos)
			fail(file, n, "expected user: sender, sender, ...");
		std::string user(trim(line.substr(0, colon)));
		auto it = users_.find(user);
		if (it == users_.end())
			fail(file, n, "user " + user + " is not in the users file");
		if (!seen.emplace(user, n).second)
			fail(file, n, "user " + user + " listed twice");
		std::string_view list = line.substr(colon + 1);
		size_t total = 0;
		for (size_t start = 0, comma = 0; comma != std::string_view::npos; start = comma + 1) {
			comma = list.find(',', start);
			std::string_view p = trim(list.substr(start, comma - start));
			if (!valid_sender_pattern(p))
				fail(file, n, "user " + user + ": bad sender \"" + std::string(p) +
						      "\" (an address, @domain, or either with *)");
			total += p.size() + 1;
			if (total > SENDERS_MAX)
				fail(file, n, "user " + user + ": more than " + std::to_string(SENDERS_MAX) +
						      " bytes of senders");
			it->second.senders.push_back(p.front() == '@' ? "*" + std::string(p) : std::string(p));
		}
	});
}

bool AuthTable::check(const std::string& user, const std::string& password) const
{
	auto it = users_.find(user);
	const std::string& hash = it != users_.end() ? it->second.hash : dummy_;
	if (hash.empty())
		return false;
	struct crypt_data data = {};
	const char* out = crypt_rn(password.c_str(), hash.c_str(), &data, sizeof data);
	bool ok = out != nullptr && strlen(out) == hash.size() && CRYPTO_memcmp(out, hash.data(), hash.size()) == 0;
	OPENSSL_cleanse(&data, sizeof data);
	return ok && it != users_.end();
}

AuthResultMsg AuthTable::answer(const std::string& user, const std::string& password) const
{
	AuthResultMsg r;
	r.ok = password.find('\0') == std::string::npos && check(user, password);
	if (r.ok && senders_bound_) {
		r.bound = true;
		r.senders = users_.find(user)->second.senders;
	}
	return r;
}

void AuthTable::wipe()
{
	for (auto& [name, u] : users_)
		OPENSSL_cleanse(u.hash.data(), u.hash.size());
	OPENSSL_cleanse(dummy_.data(), dummy_.size());
	users_.clear();
	dummy_.clear();
}

namespace {

// Reads one file of listener a (by listen_secret_rule: owned by root, no
// access for group or others) and hands its text to parse; every error is put in
// the config's context: "CONFIG:LINE: listen[N].users: FILE:LINE: what".
template <typename Parse>
void read_listen_file(const Config& cfg, const ListenAddress& a, const char* key, const ListenFile& f,
		      const char* what, Parse parse)
{
	std::string text;
	try {
		RootFileRule rule = listen_secret_rule;
		rule.what = what;
		text = read_root_file(f.path, rule);
		parse(text);
	} catch (const ConfigError& e) {
		OPENSSL_cleanse(text.data(), text.size());
		throw ConfigError(cfg.file, f.line, a.name + "." + key, e.what());
	}
	OPENSSL_cleanse(text.data(), text.size());
}

}  // namespace

AuthService AuthService::load(const Config& cfg)
{
	AuthService s;
	for (size_t i = 0; i < cfg.listen.size(); i++) {
		const ListenAddress& a = cfg.listen[i];
		if (!a.auth_required)
			continue;
		AuthTable t;
		read_listen_file(cfg, a, "users", a.users, "users file",
				 [&](std::string_view text) { t = AuthTable::parse_users(text, a.users.path); });
		if (!a.senders.path.empty())
			read_listen_file(cfg, a, "senders", a.senders, "senders file",
					 [&](std::string_view text) { t.parse_senders(text, a.senders.path); });
		for (const std::string& w : t.warnings())
			if (std::find(s.warnings_.begin(), s.warnings_.end(), w) == s.warnings_.end())
				s.warnings_.push_back(w);
		s.tables_.emplace(uint32_t(i), std::move(t));
	}
	return s;
}

// The credentials are overwritten once checked, in the frame and in the
// decoded message.
bool AuthService::request(ImsgPeer& chan, Imsg& m) const
{
	AuthMsg req;
	bool ok = decode(m.data, req);
	OPENSSL_cleanse(m.data.data(), m.data.size());
	auto it = tables_.find(req.listener);
	if (!ok || it == tables_.end() || req.user.size() > CREDENTIAL_MAX || req.password.size() > CREDENTIAL_MAX) {
		OPENSSL_cleanse(req.password.data(), req.password.size());
		return false;
	}
	AuthResultMsg r = it->second.answer(req.user, req.password);
	OPENSSL_cleanse(req.password.data(), req.password.size());
	chan.send(IMSG_P_AUTH, m.peerid, encode(r));
	return true;
}

void AuthService::wipe()
{
	for (auto& [i, t] : tables_)
		t.wipe();
	tables_.clear();
}

}  // namespace laim
