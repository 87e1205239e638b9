// libFuzzer target: the configuration loader (libyaml events to a
// YamlNode tree, then the validated Config) on arbitrary text, as the
// parent and the handler process parse /etc/laim/config.yml. Anything
// wrong must come out as a ConfigError that names the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/config.h"

using namespace laim;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	std::string_view text(reinterpret_cast<const char*>(data), size);
	try {
		Config cfg = config_parse(text, "fuzz.yml");
	} catch (const ConfigError& e) {
		if (std::string_view(e.what()).substr(0, 8) != "fuzz.yml")
			abort();  // an error an admin cannot place
	}
	return 0;
}
