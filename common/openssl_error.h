// OpenSSL's own words for what failed, for the parent's key service
// (parent/keyserver.cpp) and the smtp process's TLS (smtp/tls.cpp).
#pragma once

#include <openssl/err.h>

#include <string>

namespace laim {

// The first error in this thread's OpenSSL queue as text ("" when there
// is none); the queue is emptied.
inline std::string openssl_error()
{
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	if (e == 0)
		return "";
	char buf[256];
	ERR_error_string_n(e, buf, sizeof buf);
	return buf;
}

}  // namespace laim
