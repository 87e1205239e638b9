// libFuzzer target: the imsg frame decoder and payload reader on
// arbitrary records, with every validator laim uses.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/imsg.h"
#include "common/proto.h"

using namespace laim;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	static const ImsgValidator validators[] = {imsg_valid_parent_to_smtp, imsg_valid_parent_to_handler,
						   imsg_valid_handler_to_smtp, imsg_valid_smtp_to_handler, imsg_valid_key_reply};
	for (ImsgValidator v : validators) {
		Imsg m;
		if (imsg_decode(data, size, -1, v, m) != ImsgError::None)
			continue;
		// Walk the payload the way the receivers do.
		ImsgReader r(m.data);
		std::string s;
		uint32_t u;
		uint64_t q;
		while (r.ok() && !r.done() && (r.str(s) || r.u32(u) || r.u64(q)))
			;
	}
	return 0;
}
