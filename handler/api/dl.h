// The functions of a library the handler process loads with dlopen
// rather than links (handler/api/gmime.h, handler/builtin/curl_loader.h
// say why): each into a table member typed with decltype.
#pragma once

#include <dlfcn.h>

#include <string>

namespace laim {

// Sets fn to the function name of lib, the handle of soname; false, with
// "SONAME has no NAME" in *error, when it has none.
template <typename Fn>
bool dl_function(void* lib, const char* soname, Fn& fn, const char* name, std::string* error)
{
	fn = reinterpret_cast<Fn>(dlsym(lib, name));
	if (!fn)
		*error = std::string(soname) + " has no " + name;
	return fn != nullptr;
}

}  // namespace laim
