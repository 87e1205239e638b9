// The smtp process: one epoll loop serving every SMTP session.
#pragma once

#include <string>

#include "common/fd.h"
#include "common/runtime.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace laim {

// Confines the process, then serves until SIGTERM; never returns.
// key_chan: the parent's key service, for the TLS listeners' keys.
[[noreturn]] void smtp_main(Runtime& rt, UniqueFd parent_chan, UniqueFd handler_chan, UniqueFd key_chan);

// The parent's check of a listener's chain (PEM, leaf first) and key, at
// each load (smtp/tls.cpp): a context made as this process makes it,
// which refuses, say, a key or a signature below OpenSSL's security
// level, then a handshake with a client of OpenSSL's defaults at TLS 1.2
// and at TLS 1.3 (each that the context serves, by OpenSSL's system
// policy), which fails on, say, a curve outside the groups offered.
// Throws std::runtime_error with OpenSSL's reason.
void tls_check_chain(const std::string& chain, EVP_PKEY* key);

}  // namespace laim
