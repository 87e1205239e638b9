// The oldest TLS version laim speaks, server (smtp/tls.cpp) and client
// (handler/api/smtp_client.cpp) alike.
#pragma once

#include <openssl/ssl.h>

namespace laim {

// TLS 1.2 at least: raises a context's minimum to 1.2, never lowers one
// that the system's OpenSSL policy (MinProtocol in openssl.cnf, read at
// SSL_CTX_new) set higher. False when OpenSSL refuses.
inline bool tls12_at_least(SSL_CTX* ctx)
{
	int min = SSL_CTX_get_min_proto_version(ctx);
	return (min != 0 && min >= TLS1_2_VERSION) || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1;
}

}  // namespace laim
