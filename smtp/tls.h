// TLS in the smtp process: STARTTLS and implicit TLS with OpenSSL, whose
// private-key operations go to the root parent over the key channel, so
// that this process never holds a key (doc/architecture.md, "TLS").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/fd.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct evp_pkey_st EVP_PKEY;

namespace laim {

// Before the chroot and the seccomp filter: OpenSSL's configuration,
// error strings and a seeded DRBG; key_channel is this process's end of
// the parent's key service.
void tls_init(UniqueFd key_channel);

// Tells the parent's key service which key listener listen_index's
// context uses (0: it has none), after each chain the parent sent: the
// parent retires a key only once no context here uses it.
void tls_report_key(uint32_t listen_index, uint32_t key_id);

// A listener's context: its certificate chain (PEM, leaf first), the
// parent's id for its key, TLS 1.2 or later, no session tickets, no
// renegotiation. Sessions hold a reference, so a replaced context lives
// on while they do. Throws std::runtime_error with OpenSSL's reason.
class TlsContext {
 public:
	TlsContext(const std::string& chain, uint32_t key_id);
	// The same context with the key itself, for the parent's check.
	TlsContext(const std::string& chain, EVP_PKEY* key);
	~TlsContext();
	TlsContext(const TlsContext&) = delete;
	TlsContext& operator=(const TlsContext&) = delete;
	SSL_CTX* get() const { return ctx_; }
	uint32_t key_id() const { return key_id_; }

 private:
	TlsContext(const std::string& chain, uint32_t key_id, EVP_PKEY* key);
	SSL_CTX* ctx_;
	uint32_t key_id_;
};

// One connection's TLS, over a non-blocking socket.
class TlsStream {
 public:
	enum class Io { Done, Again, Closed, Failed };
	TlsStream(SSL_CTX* ctx, int fd);
	~TlsStream();
	TlsStream(const TlsStream&) = delete;
	TlsStream& operator=(const TlsStream&) = delete;

	// The server side of the handshake; Again until it is done.
	Io handshake();
	// Like read(2) and write(2): the bytes moved in *n when Done.
	Io read(char* buf, size_t len, size_t* n);
	Io write(const char* buf, size_t len, size_t* n);
	// Decrypted bytes that wait in OpenSSL, which epoll does not see.
	bool pending() const;
	// Whether the last Again waits for the socket to take output.
	bool wants_write() const { return wants_write_; }
	// "TLSv1.3 TLS_AES_256_GCM_SHA384".
	std::string describe() const;
	// Why the last Failed happened.
	const std::string& error() const { return error_; }

 private:
	Io result(int r);

	SSL* ssl_;
	bool wants_write_ = false;
	std::string error_;
};

}  // namespace laim
