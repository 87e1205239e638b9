// libcurl by dlopen (curl_loader.h says why).
#include "handler/builtin/curl_loader.h"

#include "handler/api/dl.h"

#include <mutex>

namespace laim {

namespace {

// The SONAME Debian's libcurl4 and libcurl4-openssl-dev ship; the
// package depends on it.
constexpr const char* LIBCURL = "libcurl.so.4";

// Fills api from an open handle; false and *error at the first symbol missing.
bool resolve(void* lib, CurlApi& api, std::string* error)
{
	auto get = [&](auto& fn, const char* name) { return dl_function(lib, LIBCURL, fn, name, error); };
	return get(api.easy_init, "curl_easy_init") && get(api.easy_setopt, "curl_easy_setopt") &&
	       get(api.easy_perform, "curl_easy_perform") && get(api.easy_getinfo, "curl_easy_getinfo") &&
	       get(api.easy_cleanup, "curl_easy_cleanup") && get(api.easy_strerror, "curl_easy_strerror") &&
	       get(api.slist_append, "curl_slist_append") && get(api.slist_free_all, "curl_slist_free_all");
}

}  // namespace

const CurlApi* curl_load(std::string* error)
{
	static std::once_flag once;
	static CurlApi api;
	static bool loaded = false;
	static std::string why;
	std::call_once(once, [] {
		void* lib = dlopen(LIBCURL, RTLD_NOW | RTLD_LOCAL);
		if (!lib) {
			why = dlerror();
			return;
		}
		decltype(&curl_global_init) global_init;
		if (!dl_function(lib, LIBCURL, global_init, "curl_global_init", &why))
			return;
		if (resolve(lib, api, &why) && global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK)
			loaded = true;
		else if (why.empty())
			why = "curl_global_init failed";
	});
	if (!loaded)
		*error = why;
	return loaded ? &api : nullptr;
}

}  // namespace laim
