// GMime, set up once in the handler process for every part of it that
// parses or writes MIME (Message, the forward handler): g_mime_init() is
// not reentrant, and every parse shares one set of parser options.
#pragma once

#include <gmime/gmime.h>

namespace laim {

// Calls g_mime_init() once, whatever the thread; before any other GMime call.
void gmime_init_once();

// The parser options of every parse: 8-bit header text that is not valid
// UTF-8 is taken as ISO-8859-1 rather than lost.
GMimeParserOptions* gmime_parser_options();

// Owns one GObject reference.
template <typename T>
struct GRef {
	T* p = nullptr;
	explicit GRef(T* obj) : p(obj) {}
	GRef(const GRef&) = delete;
	GRef& operator=(const GRef&) = delete;
	~GRef()
	{
		if (p)
			g_object_unref(p);
	}
	T* get() const { return p; }
	explicit operator bool() const { return p != nullptr; }
};

}  // namespace laim
