// GMime by dlopen (gmime.h says why).
#include "handler/api/gmime.h"

#include "handler/api/dl.h"

#include <mutex>
#include <stdexcept>
#include <string>

namespace laim {

namespace {

// The SONAME of Debian's libgmime-3.0-0; the package depends on it.
constexpr const char* LIBGMIME = "libgmime-3.0.so.0";

// Fills api from an open handle; false and *error at the first symbol
// missing. dlsym on GMime's handle also finds GObject's functions, in the
// libraries it depends on.
bool resolve(void* lib, GMimeApi& api, std::string* error)
{
#define LAIM_GMIME_RESOLVE(prefix, name) &&dl_function(lib, LIBGMIME, api.name, #prefix #name, error)
	return true LAIM_GMIME_CALLS(LAIM_GMIME_RESOLVE);
#undef LAIM_GMIME_RESOLVE
}

// Loads the library and sets GMime up; false and *error when it cannot.
bool load(GMimeApi& api, std::string* error)
{
	void* lib = dlopen(LIBGMIME, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		*error = dlerror();
		return false;
	}
	decltype(&g_mime_init) init;
	if (!dl_function(lib, LIBGMIME, init, "g_mime_init", error) || !resolve(lib, api, error))
		return false;
	init();
	api.options = api.parser_options_new();
	static const char* fallback[] = {"UTF-8", "ISO-8859-1", nullptr};
	api.parser_options_set_fallback_charsets(api.options, fallback);
	return true;
}

}  // namespace

const GMimeApi& gm()
{
	static std::once_flag once;
	static GMimeApi api;
	// A throw leaves once unset: the next call tries again, so that
	// installing the library is enough for the deferred mail to go.
	std::call_once(once, [] {
		std::string why;
		if (!load(api, &why))
			throw std::runtime_error("cannot load GMime: " + why);
	});
	return api;
}

}  // namespace laim
