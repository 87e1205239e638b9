// libFuzzer target: the reader of offline spool files (what laim-drop
// leaves in SPOOL/offline/ for laimd to import), which an unprivileged
// caller writes. Whatever offline_decode accepts keeps the format's
// limits, and encodes back to exactly the header it was read from, so
// the envelope imported is the one written and the message starts where
// the header ends.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "common/offline.h"

using namespace laim;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	std::string_view text(reinterpret_cast<const char*>(data), size);
	OfflineEnvelope env;
	size_t header;
	try {
		header = offline_decode(text, env);
	} catch (const std::runtime_error&) {
		return 0;
	}
	if (header > size || header > OFFLINE_MAX_HEADER || env.recipients.empty() ||
	    env.recipients.size() > OFFLINE_MAX_RECIPIENTS)
		abort();
	// Throws std::invalid_argument (and so crashes here) on a value the
	// decoder should have refused.
	if (offline_encode(env) != text.substr(0, header))
		abort();
	return 0;
}
