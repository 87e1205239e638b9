// GMime, loaded on first use, in the handler process only, for every
// part of it that parses or writes MIME (Message, the forward handler).
// Linked into laimd, GMime and what it pulls in (GObject, GIO, GPGME,
// Assuan, libgpg-error, libidn2, libunistring, libmount, libblkid,
// libselinux, libffi) were mapped and relocated by all three processes at
// every start, for parses only the handler process makes: about 1.8 MiB
// of the tree's memory. The headers stay, for the types; every call goes
// through the table gm() returns. GLib itself stays linked (the imsg
// channel's GHmac), and g_free, g_utf8_* are called directly.
#pragma once

// The GMIME_PART(), GMIME_OBJECT() casts become plain C casts instead of
// calls into GObject, which laimd does not link; each of them follows a
// type check through the table (GMimeApi::is) or is an upcast.
#if defined(__G_TYPE_H__) && !defined(G_DISABLE_CAST_CHECKS)
#error "handler/api/gmime.h must come before any GObject header"
#endif
#ifndef G_DISABLE_CAST_CHECKS
#define G_DISABLE_CAST_CHECKS 1
#endif
#include <gmime/gmime.h>

namespace laim {

// Every GMime or GObject function laim calls, as F(prefix, name): the
// table's member is name, the library's symbol prefix##name.
#define LAIM_GMIME_CALLS(F) \
	F(g_, object_unref) \
	F(g_, type_check_instance_is_a) \
	F(g_mime_, part_get_type) \
	F(g_mime_, multipart_get_type) \
	F(, internet_address_mailbox_get_type) \
	F(g_mime_, stream_mem_new_with_buffer) \
	F(g_mime_, stream_mem_new_with_byte_array) \
	F(g_mime_, stream_filter_new) \
	F(g_mime_, stream_filter_add) \
	F(g_mime_, stream_flush) \
	F(g_mime_, filter_charset_new) \
	F(g_mime_, filter_dos2unix_new) \
	F(g_mime_, parser_new_with_stream) \
	F(g_mime_, parser_set_format) \
	F(g_mime_, parser_construct_message) \
	F(g_mime_, parser_options_new) \
	F(g_mime_, parser_options_set_fallback_charsets) \
	F(g_mime_, message_get_mime_part) \
	F(g_mime_, message_get_subject) \
	F(g_mime_, object_get_header_list) \
	F(g_mime_, object_get_content_type) \
	F(g_mime_, object_get_content_type_parameter) \
	F(g_mime_, object_get_content_disposition) \
	F(g_mime_, header_list_get_count) \
	F(g_mime_, header_list_get_header_at) \
	F(g_mime_, header_get_name) \
	F(g_mime_, header_get_raw_value) \
	F(g_mime_, header_get_offset) \
	F(g_mime_, content_type_is_type) \
	F(g_mime_, content_disposition_is_attachment) \
	F(g_mime_, multipart_get_count) \
	F(g_mime_, multipart_get_part) \
	F(g_mime_, part_get_content) \
	F(g_mime_, data_wrapper_write_to_stream) \
	F(g_mime_, utils_header_encode_text) \
	F(g_mime_, utils_unstructured_header_fold) \
	F(g_mime_, utils_structured_header_fold) \
	F(, internet_address_list_parse) \
	F(, internet_address_list_length) \
	F(, internet_address_list_get_address) \
	F(, internet_address_get_name) \
	F(, internet_address_set_charset) \
	F(, internet_address_to_string) \
	F(, internet_address_mailbox_new) \
	F(, internet_address_mailbox_get_idn_addr)

// The functions, typed as the headers declare them: gm().parser_new_with_stream(...).
struct GMimeApi {
#define LAIM_GMIME_MEMBER(prefix, name) decltype(&::prefix##name) name;
	LAIM_GMIME_CALLS(LAIM_GMIME_MEMBER)
#undef LAIM_GMIME_MEMBER
	// The parser options of every parse: 8-bit header text that is not
	// valid UTF-8 is taken as ISO-8859-1 rather than lost.
	GMimeParserOptions* options;

	// What GMIME_IS_PART(obj) and its kind ask, through the table:
	// is(obj, gm().part_get_type).
	bool is(const void* obj, GType (*type)()) const
	{
		return obj && type_check_instance_is_a(static_cast<GTypeInstance*>(const_cast<void*>(obj)), type());
	}
};

// Loads libgmime-3.0.so.0 and runs g_mime_init() once, whatever the
// thread. Throws std::runtime_error with dlopen's reason (it names the
// library) when it cannot be loaded: a delivery that parses is deferred,
// and the next call tries again.
const GMimeApi& gm();

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
			gm().object_unref(p);
	}
	T* get() const { return p; }
	explicit operator bool() const { return p != nullptr; }
};

}  // namespace laim
