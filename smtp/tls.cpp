// TLS in the smtp process (see tls.h). The private key stays with the root
// parent (parent/keyserver.cpp): each context's key is the certificate's
// public key with an RSA_METHOD or EC_KEY_METHOD whose private operations
// send the input to the parent over the key channel and wait for the
// result, as OpenSMTPD's ca.c does; the parent only signs. OpenSSL 3 calls such a key's methods
// ("foreign" legacy key, detected when it is assigned to its EVP_PKEY);
// those methods are deprecated API, hence OPENSSL_SUPPRESS_DEPRECATED in
// this file only.
#define OPENSSL_SUPPRESS_DEPRECATED

#include "smtp/tls.h"

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "common/imsg.h"
#include "common/log.h"
#include "common/openssl_error.h"
#include "common/tls_version.h"
#include "common/proto.h"
#include "smtp/smtp.h"

namespace laim {

namespace {

constexpr int KEY_TIMEOUT_MS = 5000;  // the parent answers at once; this is for a stuck one

std::unique_ptr<ImsgChannel> key_channel;
int rsa_index = -1;  // ex_data of the parent's key id on an RSA or EC_KEY
int ec_index = -1;
RSA_METHOD* rsa_method = nullptr;
EC_KEY_METHOD* ec_method = nullptr;

// One private-key operation by the parent: sends it on the key channel
// and waits for the answer (this client's handshake waits; OpenSMTPD's ca
// does the same). An answer to an earlier request that timed out is skipped.
bool parent_key_op(uint32_t type, uint32_t key_id, int padding, const unsigned char* in, int len, std::string* out)
{
	static uint32_t seq = 0;
	if (len < 0 || !key_channel)
		return false;
	key_channel->compose(type, ++seq, encode(KeyOpMsg{key_id, (uint32_t)padding, std::string((const char*)in, len)}));
	if (!key_channel->flush_wait(KEY_TIMEOUT_MS)) {
		log_warnx("key service: cannot reach the parent");
		return false;
	}
	int64_t deadline = monotonic_ms() + KEY_TIMEOUT_MS;
	Imsg m;
	ImsgError err = ImsgError::None;
	do {
		if (key_channel->read_wait(m, deadline, &err) != ImsgChannel::Read::Message) {
			log_warnx("key service: no answer from the parent (%s)", imsg_strerror(err));
			return false;
		}
	} while (m.peerid != seq);
	KeyResultMsg result;
	if (!decode(m.data, result) || !result.ok)
		return false;
	*out = std::move(result.data);
	return true;
}

// An RSA signature (PKCS#1 v1.5, or PSS encoded by OpenSSL and sent
// without padding) by the parent.
int rsa_priv_enc(int flen, const unsigned char* from, unsigned char* to, RSA* rsa, int padding)
{
	auto id = (uint32_t)(uintptr_t)RSA_get_ex_data(rsa, rsa_index);
	std::string out;
	if (!parent_key_op(IMSG_T_RSA_PRIV_ENC, id, padding, from, flen, &out) || out.size() > (size_t)RSA_size(rsa))
		return -1;
	memcpy(to, out.data(), out.size());
	return (int)out.size();
}

// The parent's DER signature of dgst.
bool ec_sign_der(const unsigned char* dgst, int dlen, EC_KEY* ec, std::string* der)
{
	auto id = (uint32_t)(uintptr_t)EC_KEY_get_ex_data(ec, ec_index);
	return parent_key_op(IMSG_T_ECDSA_SIGN, id, 0, dgst, dlen, der) && der->size() <= (size_t)ECDSA_size(ec);
}

int ec_sign(int, const unsigned char* dgst, int dlen, unsigned char* sig, unsigned int* siglen, const BIGNUM*,
	    const BIGNUM*, EC_KEY* ec)
{
	std::string der;
	*siglen = 0;
	if (!ec_sign_der(dgst, dlen, ec, &der))
		return 0;
	memcpy(sig, der.data(), der.size());
	*siglen = (unsigned)der.size();
	return 1;
}

ECDSA_SIG* ec_sign_sig(const unsigned char* dgst, int dlen, const BIGNUM*, const BIGNUM*, EC_KEY* ec)
{
	std::string der;
	if (!ec_sign_der(dgst, dlen, ec, &der))
		return nullptr;
	auto p = reinterpret_cast<const unsigned char*>(der.data());
	return d2i_ECDSA_SIG(nullptr, &p, (long)der.size());
}

// The leaf's public key, whose private operations go to the parent's key
// key_id. The method is set before the key is assigned to its EVP_PKEY,
// which is when OpenSSL decides that the key is foreign.
EVP_PKEY* parent_key(X509* leaf, uint32_t key_id)
{
	EVP_PKEY* pub = X509_get0_pubkey(leaf);
	std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> k(EVP_PKEY_new(), EVP_PKEY_free);
	if (!pub || !k)
		return nullptr;
	void* id = (void*)(uintptr_t)key_id;
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA) {
		RSA* rsa = RSAPublicKey_dup(EVP_PKEY_get0_RSA(pub));
		if (!rsa || !RSA_set_method(rsa, rsa_method) || !RSA_set_ex_data(rsa, rsa_index, id) ||
		    !EVP_PKEY_assign_RSA(k.get(), rsa)) {
			RSA_free(rsa);
			return nullptr;
		}
	} else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		EC_KEY* ec = EC_KEY_dup(EVP_PKEY_get0_EC_KEY(pub));
		if (!ec || !EC_KEY_set_method(ec, ec_method) || !EC_KEY_set_ex_data(ec, ec_index, id) ||
		    !EVP_PKEY_assign_EC_KEY(k.get(), ec)) {
			EC_KEY_free(ec);
			return nullptr;
		}
	} else {
		return nullptr;
	}
	return k.release();
}

// The certificates of chain into ctx: the first as the leaf, the rest as
// its chain; the leaf's key, or without it a stand-in whose private
// operations go to the parent's key key_id.
bool use_chain(SSL_CTX* ctx, const std::string& chain, uint32_t key_id, EVP_PKEY* key)
{
	std::unique_ptr<BIO, decltype(&BIO_free)> in(BIO_new_mem_buf(chain.data(), (int)chain.size()), BIO_free);
	X509* leaf = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr);
	std::unique_ptr<X509, decltype(&X509_free)> leaf_ref(leaf, X509_free);
	if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1)
		return false;
	while (X509* x = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr))
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			return false;
		}
	ERR_clear_error();  // the end of the chain
	std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> stand_in(key ? nullptr : parent_key(leaf, key_id),
								      EVP_PKEY_free);
	if (!key)
		key = stand_in.get();
	return key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
}

// OpenSSL's configuration (the system's security level and ciphers) and
// error strings, in the smtp process and in the parent's check alike.
bool init_openssl()
{
	return OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG | OPENSSL_INIT_LOAD_SSL_STRINGS |
					OPENSSL_INIT_LOAD_CRYPTO_STRINGS,
				nullptr) == 1;
}

// A handshake over memory of server_ctx with a client of OpenSSL's
// defaults but its TLS version, which is exactly version (not the system
// policy's range, which may leave it out): "" when it completes, else why
// it failed.
std::string test_handshake(SSL_CTX* server_ctx, int version)
{
	std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> client_ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
	if (!client_ctx || SSL_CTX_set_min_proto_version(client_ctx.get(), version) != 1 ||
	    SSL_CTX_set_max_proto_version(client_ctx.get(), version) != 1)
		return openssl_error();
	std::unique_ptr<SSL, decltype(&SSL_free)> client(SSL_new(client_ctx.get()), SSL_free);
	std::unique_ptr<SSL, decltype(&SSL_free)> server(SSL_new(server_ctx), SSL_free);
	BIO *client_bio, *server_bio;
	if (!client || !server || BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) != 1)
		return openssl_error();
	SSL_set_bio(client.get(), client_bio, client_bio);
	SSL_set_bio(server.get(), server_bio, server_bio);
	SSL_set_connect_state(client.get());
	SSL_set_accept_state(server.get());
	for (int flight = 0; flight < 8; flight++) {  // TLS 1.2 takes 4
		int c = SSL_do_handshake(client.get());
		if (c <= 0 && SSL_get_error(client.get(), c) != SSL_ERROR_WANT_READ)
			return "a client's side: " + openssl_error();
		int s = SSL_do_handshake(server.get());
		if (s <= 0 && SSL_get_error(server.get(), s) != SSL_ERROR_WANT_READ)
			return openssl_error();
		if (c == 1 && s == 1)
			return "";
	}
	return "the handshake does not end";
}

}  // namespace

void tls_init(UniqueFd key_chan)
{
	if (!init_openssl())
		fatalx("OpenSSL initialisation failed: %s", openssl_error().c_str());
	unsigned char seed[32];
	if (RAND_bytes(seed, sizeof seed) != 1)
		fatalx("OpenSSL's random generator: %s", openssl_error().c_str());
	rsa_index = RSA_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
	ec_index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
	rsa_method = RSA_meth_dup(RSA_get_default_method());
	ec_method = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
	if (rsa_index < 0 || ec_index < 0 || !rsa_method || !ec_method ||
	    !RSA_meth_set1_name(rsa_method, "laim parent key") || !RSA_meth_set_priv_enc(rsa_method, rsa_priv_enc))
		fatalx("OpenSSL key methods: %s", openssl_error().c_str());
	int (*sign_setup)(EC_KEY*, BN_CTX*, BIGNUM**, BIGNUM**) = nullptr;
	EC_KEY_METHOD_get_sign(EC_KEY_OpenSSL(), nullptr, &sign_setup, nullptr);
	EC_KEY_METHOD_set_sign(ec_method, ec_sign, sign_setup, ec_sign_sig);
	key_channel = std::make_unique<ImsgChannel>(std::move(key_chan), imsg_valid_key_reply);
}

void tls_report_key(uint32_t listen_index, uint32_t key_id)
{
	if (!key_channel)
		return;
	key_channel->compose(IMSG_T_KEY_IN_USE, 0, encode(SmtpTls{listen_index, key_id, ""}));
	if (!key_channel->flush_wait(KEY_TIMEOUT_MS))
		log_warnx("key service: cannot reach the parent");
}

TlsContext::TlsContext(const std::string& chain, uint32_t key_id) : TlsContext(chain, key_id, nullptr) {}

TlsContext::TlsContext(const std::string& chain, EVP_PKEY* key) : TlsContext(chain, 0, key) {}

TlsContext::TlsContext(const std::string& chain, uint32_t key_id, EVP_PKEY* key)
	: ctx_(SSL_CTX_new(TLS_server_method())), key_id_(key_id)
{
	ERR_clear_error();
	// OpenSSL's default ciphers but RSA key exchange: no forward secrecy,
	// and the parent would decrypt for this process (keyserver.cpp).
	bool ok = ctx_ && tls12_at_least(ctx_) &&
		  SSL_CTX_set_num_tickets(ctx_, 0) == 1 && SSL_CTX_set_cipher_list(ctx_, "DEFAULT:!kRSA") == 1;
	if (ok) {
		SSL_CTX_set_options(ctx_, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
		SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		ok = use_chain(ctx_, chain, key_id, key);
	}
	if (!ok) {
		std::string why = openssl_error();
		SSL_CTX_free(ctx_);
		throw std::runtime_error("TLS context: " + (why.empty() ? "bad certificate chain" : why));
	}
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

void tls_check_chain(const std::string& chain, EVP_PKEY* key)
{
	if (!init_openssl())
		throw std::runtime_error("OpenSSL initialisation failed: " + openssl_error());
	TlsContext ctx(chain, key);
	// Each version the context serves (0: no bound), by the system policy.
	int min = SSL_CTX_get_min_proto_version(ctx.get()), max = SSL_CTX_get_max_proto_version(ctx.get());
	for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
		if ((min != 0 && version < min) || (max != 0 && version > max))
			continue;
		std::string why = test_handshake(ctx.get(), version);
		if (!why.empty())
			throw std::runtime_error(std::string("a ") + (version == TLS1_2_VERSION ? "TLS 1.2" : "TLS 1.3") +
						 " handshake with it fails: " + why);
	}
}

TlsStream::TlsStream(SSL_CTX* ctx, int fd) : ssl_(SSL_new(ctx))
{
	if (!ssl_ || SSL_set_fd(ssl_, fd) != 1) {
		SSL_free(ssl_);
		throw std::runtime_error("SSL_new: " + openssl_error());
	}
	SSL_set_accept_state(ssl_);
}

// A finished handshake ends with close_notify, which clients expect.
TlsStream::~TlsStream()
{
	if (SSL_is_init_finished(ssl_))
		SSL_shutdown(ssl_);
	ERR_clear_error();
	SSL_free(ssl_);
}

TlsStream::Io TlsStream::handshake()
{
	ERR_clear_error();
	return result(SSL_do_handshake(ssl_));
}

TlsStream::Io TlsStream::read(char* buf, size_t len, size_t* n)
{
	ERR_clear_error();
	return result(SSL_read_ex(ssl_, buf, len, n));
}

TlsStream::Io TlsStream::write(const char* buf, size_t len, size_t* n)
{
	ERR_clear_error();
	return result(SSL_write_ex(ssl_, buf, len, n));
}

bool TlsStream::pending() const { return SSL_pending(ssl_) > 0; }

std::string TlsStream::describe() const
{
	return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

// What an OpenSSL call's return value r means for the event loop.
TlsStream::Io TlsStream::result(int r)
{
	if (r == 1) {
		wants_write_ = false;
		return Io::Done;
	}
	int e = SSL_get_error(ssl_, r);
	wants_write_ = e == SSL_ERROR_WANT_WRITE;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return Io::Again;
	if (e == SSL_ERROR_ZERO_RETURN)
		return Io::Closed;
	error_ = openssl_error();
	if (error_.empty())
		error_ = e == SSL_ERROR_SYSCALL && errno ? strerror(errno) : "connection closed";
	return Io::Failed;
}

}  // namespace laim
