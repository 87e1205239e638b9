// The root parent's key service: it reads each TLS listener's private key
// and keeps it; the smtp process, which never holds a key, sends each
// private-key operation of a handshake here (smtp/tls.cpp) and gets the
// result. Every request is checked (a key of the current or the previous
// load, sizes within the key's); a bad one gets a failure answer and a log
// line, never more: the parent does not trust the smtp process. It only
// signs: RSA key exchange, where it would decrypt for the smtp process
// (a padding oracle for whoever owns that process, and no forward
// secrecy), is not offered (smtp/tls.cpp), and the raw RSA operation of
// PSS signatures is done only on a block shaped as PSS encodes it.
#include "parent/keyserver.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <malloc.h>
#include <string.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>

#include "common/log.h"
#include "common/openssl_error.h"
#include "smtp/smtp.h"

namespace laim {

namespace {

constexpr size_t CHAIN_MAX = 12288;  // the PEM chain travels in one imsg
constexpr size_t DIGEST_MAX = 64;    // SHA-512, the largest digest ECDSA signs

// No passphrase prompt: an encrypted key is an error.
int no_passphrase(char*, int, int, void*) { return -1; }

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;

// The certificates of file a.cert, leaf first, written again as PEM: only
// certificates reach the smtp process, whatever else the file holds.
std::string read_chain(const std::string& cfg_file, const ListenAddress& a, X509Ptr* leaf)
{
	auto fail = [&](const std::string& why) {
		throw ConfigError(cfg_file, a.cert.line, a.name + ".cert", a.cert.path + ": " + why);
	};
	BioPtr in(BIO_new_file(a.cert.path.c_str(), "r"), BIO_free);
	if (!in)
		fail(strerror(errno));
	BioPtr out(BIO_new(BIO_s_mem()), BIO_free);
	for (int n = 0;; n++) {
		X509Ptr x(PEM_read_bio_X509(in.get(), nullptr, no_passphrase, nullptr), X509_free);
		if (!x) {
			unsigned long e = ERR_peek_last_error();
			if (n > 0 && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_clear_error();
				break;
			}
			fail(n == 0 ? "no PEM certificate: " + openssl_error() : openssl_error());
		}
		if (!PEM_write_bio_X509(out.get(), x.get()))
			fail(openssl_error());
		if (n == 0)
			*leaf = std::move(x);
	}
	char* p;
	long len = BIO_get_mem_data(out.get(), &p);
	if ((size_t)len > CHAIN_MAX)
		fail("the certificate chain is larger than " + std::to_string(CHAIN_MAX / 1024) + " KiB");
	return std::string(p, len);
}

// The key of file a.key, read by listen_secret_rule; its text is cleared.
std::shared_ptr<EVP_PKEY> read_key(const std::string& cfg_file, const ListenAddress& a, X509* leaf)
{
	auto fail = [&](const std::string& why) {
		throw ConfigError(cfg_file, a.key.line, a.name + ".key", why);
	};
	RootFileRule rule = listen_secret_rule;
	rule.what = "TLS key";
	std::string text;
	try {
		text = read_root_file(a.key.path, rule);
	} catch (const ConfigError& e) {
		fail(e.what());
	}
	BioPtr in(BIO_new_mem_buf(text.data(), (int)text.size()), BIO_free);
	std::shared_ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(in.get(), nullptr, no_passphrase, nullptr), EVP_PKEY_free);
	explicit_bzero(text.data(), text.size());
	if (!key)
		fail(a.key.path + ": no PEM private key without a passphrase: " + openssl_error());
	int type = EVP_PKEY_get_base_id(key.get());
	if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC)
		fail(a.key.path + ": a " + std::string(OBJ_nid2sn(type)) + " key; laim takes RSA and ECDSA keys");
	if (X509_check_private_key(leaf, key.get()) != 1) {
		ERR_clear_error();
		fail(a.key.path + ": does not match the certificate " + a.cert.path);
	}
	return key;
}

// MGF1 (RFC 8017 B.2.1) of seed with md: len bytes into mask.
bool mgf1(unsigned char* mask, size_t len, const unsigned char* seed, size_t seed_len, const EVP_MD* md)
{
	unsigned char block[EVP_MAX_MD_SIZE];
	unsigned char in[EVP_MAX_MD_SIZE + 4];
	memcpy(in, seed, seed_len);
	for (uint32_t counter = 0; len > 0; counter++) {
		for (int i = 0; i < 4; i++)
			in[seed_len + i] = (unsigned char)(counter >> (24 - 8 * i));
		unsigned int n;
		if (EVP_Digest(in, seed_len + 4, block, &n, md, nullptr) != 1)
			return false;
		size_t take = std::min(len, (size_t)n);
		memcpy(mask, block, take);
		mask += take;
		len -= take;
	}
	return true;
}

// Whether block, the input of a raw RSA operation with a key of bits, is an
// EMSA-PSS encoding (RFC 8017 9.1.1) as TLS makes it: SHA-256, -384 or -512,
// MGF1 with the same hash, a salt as long as the hash. The raw operation is
// also RSA's decryption; held to this shape, which a ciphertext has with a
// chance below 2^-128 however it is blinded, it only ever signs.
bool is_pss_encoding(const std::string& block, int bits)
{
	auto em = reinterpret_cast<const unsigned char*>(block.data());
	size_t em_len = block.size();
	int top_bits = (bits - 1) & 7;  // bits used in EM's first byte, 0 for all 8
	if (top_bits == 0) {
		if (em_len == 0 || em[0] != 0)
			return false;
		em++;
		em_len--;
	}
	if (em_len == 0 || em[em_len - 1] != 0xbc || (top_bits && (em[0] >> top_bits) != 0))
		return false;
	for (const EVP_MD* md : {EVP_sha256(), EVP_sha384(), EVP_sha512()}) {
		size_t h_len = (size_t)EVP_MD_get_size(md);
		if (em_len < 2 * h_len + 2 + 16)  // room for at least 16 zero bytes of padding
			continue;
		size_t db_len = em_len - h_len - 1;
		std::string db(db_len, '\0');
		auto d = reinterpret_cast<unsigned char*>(db.data());
		if (!mgf1(d, db_len, em + db_len, h_len, md))
			return false;
		for (size_t i = 0; i < db_len; i++)
			d[i] ^= em[i];
		if (top_bits)
			d[0] &= (unsigned char)(0xff >> (8 - top_bits));
		size_t one = db_len - h_len - 1;  // padding zeros, then 0x01, then the salt
		if (d[one] == 1 && std::all_of(d, d + one, [](unsigned char c) { return c == 0; }))
			return true;
	}
	return false;
}

// One operation of key on op.data into *out; false with *why.
bool key_operation(uint32_t type, EVP_PKEY* key, const KeyOpMsg& op, std::string* out, std::string* why)
{
	size_t size = (size_t)EVP_PKEY_get_size(key);
	bool rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
	if (rsa != (type != IMSG_T_ECDSA_SIGN)) {
		*why = "operation for another key type";
		return false;
	}
	if (op.data.empty() || op.data.size() > (rsa ? size : DIGEST_MAX)) {
		*why = "input of " + std::to_string(op.data.size()) + " bytes";
		return false;
	}
	int padding = (int)op.padding;
	if (rsa && padding != RSA_PKCS1_PADDING && padding != RSA_NO_PADDING) {
		*why = "padding " + std::to_string(op.padding);
		return false;
	}
	if (rsa && padding == RSA_NO_PADDING && !is_pss_encoding(op.data, EVP_PKEY_get_bits(key))) {
		*why = "a raw RSA operation on a block that is not a PSS signature's encoding";
		return false;
	}
	std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(key, nullptr),
									EVP_PKEY_CTX_free);
	out->resize(size);
	size_t len = size;
	auto in = reinterpret_cast<const unsigned char*>(op.data.data());
	auto buf = reinterpret_cast<unsigned char*>(out->data());
	bool ok = ctx && EVP_PKEY_sign_init(ctx.get()) == 1 &&
		  (!rsa || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), padding) == 1) &&
		  EVP_PKEY_sign(ctx.get(), buf, &len, in, op.data.size()) == 1;
	if (!ok) {
		*why = openssl_error();
		return false;
	}
	out->resize(len);
	return true;
}

// OpenSSL's allocator, clearing what it frees (keyserver_init).
void* clearing_malloc(size_t n, const char*, int) { return malloc(n); }

void clearing_free(void* p, const char*, int)
{
	if (!p)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void* clearing_realloc(void* p, size_t n, const char* file, int line)
{
	if (!p)
		return malloc(n);
	if (n == 0) {
		clearing_free(p, file, line);
		return nullptr;
	}
	void* q = malloc(n);
	if (q) {
		memcpy(q, p, std::min(n, malloc_usable_size(p)));
		clearing_free(p, file, line);
	}
	return q;
}

}  // namespace

void keyserver_init()
{
	if (CRYPTO_set_mem_functions(clearing_malloc, clearing_realloc, clearing_free) != 1)
		fatalx("OpenSSL allocated memory before laimd could make it clear what it frees");
}

TlsKeys tls_keys_load(const Config& cfg)
{
	static uint32_t next_id = 1;
	TlsKeys k;
	for (size_t i = 0; i < cfg.listen.size(); i++) {
		const ListenAddress& a = cfg.listen[i];
		if (a.tls == ListenAddress::Tls::None)
			continue;
		X509Ptr leaf(nullptr, X509_free);
		SmtpTls chain{(uint32_t)i, next_id++, read_chain(cfg.file, a, &leaf)};
		k.keys[chain.key_id] = read_key(cfg.file, a, leaf.get());
		try {
			tls_check_chain(chain.chain, k.keys[chain.key_id].get());
		} catch (const std::runtime_error& e) {
			throw ConfigError(cfg.file, a.cert.line, a.name + ".cert",
					  a.cert.path + ": the smtp process could not serve TLS with it: " + e.what());
		}
		k.chains.push_back(std::move(chain));
	}
	return k;
}

// A chain a reload read unchanged keeps its key id, and its key: the
// chain names the key (the same leaf, the same key), and the smtp
// process's context goes on with it.
void KeyServer::adopt(TlsKeys next)
{
	for (SmtpTls& c : next.chains)
		for (const SmtpTls& now : chains_)
			if (now.listen_index == c.listen_index && now.chain == c.chain) {
				next.keys.erase(c.key_id);
				c.key_id = now.key_id;
			}
	keys_.merge(next.keys);
	chains_ = std::move(next.chains);
	retire();
}

void KeyServer::sent_to_smtp(bool fresh)
{
	if (fresh)
		smtp_.clear();
	for (const SmtpTls& c : chains_)
		smtp_[c.listen_index].sent.push_back(c.key_id);
	retire();
}

// The smtp process's answer to the oldest chain sent for a listener: its
// context uses that chain's key, or still the one before when the chain
// did not load there. Any other key is a broken report, and changes nothing.
void KeyServer::key_in_use(const SmtpTls& report)
{
	auto it = smtp_.find(report.listen_index);
	if (it == smtp_.end() || it->second.sent.empty() ||
	    (report.key_id != it->second.sent.front() && report.key_id != it->second.now)) {
		log_warnx("key service: the smtp process reports key id %u on listen[%u], which it was not given",
			  report.key_id, report.listen_index);
		return;
	}
	InUse& l = it->second;
	l.sent.pop_front();
	if (report.key_id != l.now) {
		l.before = l.now;
		l.now = report.key_id;
	}
	retire();
}

// Frees every key that neither the last load nor the smtp process uses.
void KeyServer::retire()
{
	std::set<uint32_t> used;
	for (const SmtpTls& c : chains_)
		used.insert(c.key_id);
	for (const auto& [index, l] : smtp_) {
		used.insert({l.now, l.before});
		used.insert(l.sent.begin(), l.sent.end());
	}
	std::erase_if(keys_, [&used](const auto& k) { return !used.count(k.first); });
}

void KeyServer::answer(ImsgPeer& chan, const Imsg& m)
{
	if (m.type == IMSG_T_KEY_IN_USE) {
		key_in_use(payload<SmtpTls>(m));
		return;
	}
	KeyOpMsg op = payload<KeyOpMsg>(m);
	KeyResultMsg result;
	std::string why = "unknown key id " + std::to_string(op.key_id);
	auto it = keys_.find(op.key_id);
	if (it != keys_.end())
		result.ok = key_operation(m.type, it->second.get(), op, &result.data, &why);
	if (!result.ok)
		log_warnx("key service: refused %s from the smtp process: %s", imsg_name(m.type), why.c_str());
	chan.send(IMSG_K_RESULT, m.peerid, encode(result));
	explicit_bzero(op.data.data(), op.data.size());
}

void KeyServer::forget()
{
	chains_.clear();
	keys_.clear();
	smtp_.clear();
}

}  // namespace laim
