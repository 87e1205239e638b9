// The TLS listeners' private keys, which only the root parent holds: the
// smtp process gets the certificate chains and asks the parent over its
// key channel for each private-key operation (OpenSMTPD's ca.c is the
// model; doc/architecture.md, "TLS").
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <deque>
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
	// Serves next's keys from now on. An unchanged chain keeps its key id.
	// A key of a load before stays while a context of the smtp process
	// uses it, or the one it replaced does (handshakes in progress).
	void adopt(TlsKeys next);
	const std::vector<SmtpTls>& chains() const { return chains_; }
	// The smtp process is given chains(): at its fork (fresh: the keys of
	// the process before are no longer used) or at a reload. Their keys
	// stay at least until it reports which key each listener uses.
	void sent_to_smtp(bool fresh);
	// One request of the smtp process: answered with the result, or with a
	// failure (and a log line) for an unknown key or a size out of range;
	// or its report of the key a listener's context uses after a chain
	// sent, which retires the keys no context uses any more.
	void answer(ImsgPeer& chan, const Imsg& m);
	// In a child just forked: frees every key, which clears its memory.
	void forget();

 private:
	// A listener's keys in the smtp process: its context's, the one it
	// replaced, those of the chains sent and not yet reported on.
	struct InUse {
		uint32_t now = 0, before = 0;
		std::deque<uint32_t> sent;
	};
	void key_in_use(const SmtpTls& report);
	void retire();

	std::vector<SmtpTls> chains_;  // of the last load
	std::map<uint32_t, std::shared_ptr<EVP_PKEY>> keys_;  // by id: the last load's and those still in use
	std::map<uint32_t, InUse> smtp_;  // by listen index
};

}  // namespace laim
