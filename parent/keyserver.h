// The TLS listeners' private keys, which only the root parent holds: the
// smtp process gets the certificate chains and asks the parent over its
// key channel for each private-key operation (OpenSMTPD's ca.c is the
// model; doc/architecture.md, "TLS").
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "common/config.h"
#include "common/peer.h"
#include "common/proto.h"

namespace laim {

// First thing in main(), before OpenSSL allocates anything: from then on
// OpenSSL clears every buffer it frees, so that no trace of a key (its PEM
// text, its DER) outlives its use in the parent, nor reaches a child by fork.
void keyserver_init();

// The chains and keys of a configuration's TLS listeners, as one load read them.
struct TlsKeys {
	std::vector<SmtpTls> chains;  // one per TLS listener
	std::map<uint32_t, std::shared_ptr<EVP_PKEY>> keys;  // by SmtpTls::key_id
};

// Reads the certificate chain and the key of every TLS listener of cfg and
// checks them (an RSA or ECDSA key that matches the leaf certificate, and
// that the smtp process can serve TLS with: tls_check_chain); ConfigError
// names file, line and key. Each key gets an id never used before.
TlsKeys tls_keys_load(const Config& cfg);

class KeyServer {
 public:
	// Serves next's keys from now on; those of the load before stay for the
	// handshakes in progress. An unchanged chain keeps its key id.
	void adopt(TlsKeys next);
	const std::vector<SmtpTls>& chains() const { return current_.chains; }
	// One request of the smtp process: answered with the result, or with a
	// failure (and a log line) for an unknown key or a size out of range.
	void answer(ImsgPeer& chan, const Imsg& m);
	// In a child just forked: frees every key, which clears its memory.
	void forget();

 private:
	TlsKeys current_, previous_;
};

}  // namespace laim
