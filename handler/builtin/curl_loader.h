// libcurl, loaded when the first webhook instance starts, in the handler
// process only. Linked into laimd, libcurl and the two dozen libraries it
// pulls in (GnuTLS, Kerberos, LDAP, SSH, RTMP, ...) were mapped and
// relocated by all three processes at every start, for a handler most
// configurations never use: about 4 MiB of the tree's memory.
#pragma once

#include <curl/curl.h>

#include <string>

namespace laim {

// The libcurl functions the webhook handler calls.
struct CurlApi {
	decltype(&curl_easy_init) easy_init;
	decltype(&curl_easy_setopt) easy_setopt;
	decltype(&curl_easy_perform) easy_perform;
	decltype(&curl_easy_getinfo) easy_getinfo;
	decltype(&curl_easy_cleanup) easy_cleanup;
	decltype(&curl_easy_strerror) easy_strerror;
	decltype(&curl_slist_append) slist_append;
	decltype(&curl_slist_free_all) slist_free_all;
};

// Loads libcurl once (any thread) and runs curl_global_init. Returns
// nullptr, with why in *error, when it cannot be loaded.
const CurlApi* curl_load(std::string* error);

}  // namespace laim
