// Message: the raw bytes of a received message plus the parsed view that
// handlers need (headers, decoded Subject, decoded text body). All MIME
// work is GMime's; laim only walks the tree GMime builds.
#include <openssl/evp.h>

#include <algorithm>
#include <mutex>
#include <sys/sendfile.h>
#include <sys/uio.h>

#include "common/fd.h"
#include "common/text.h"
#include "handler/api/gmime.h"
#include "handler/api/handler.h"
#include "handler/api/header_edit.h"

namespace laim {

// What the first use of any accessor computes, once, whatever the thread:
// a Message may be handed to several handler instances running in parallel.
struct Message::Parsed {
	std::once_flag once;
	std::vector<Header> headers;
	std::string subject;
	std::string text;
};

namespace {

// Collects one header list into (offset, Header) pairs.
void collect_headers(GMimeObject* obj, std::vector<std::pair<gint64, Header>>& out)
{
	if (!obj)
		return;
	const GMimeApi& g = gm();
	GMimeHeaderList* list = g.object_get_header_list(obj);
	int n = g.header_list_get_count(list);
	for (int i = 0; i < n; i++) {
		GMimeHeader* h = g.header_list_get_header_at(list, i);
		const char* name = g.header_get_name(h);
		const char* raw = g.header_get_raw_value(h);
		out.emplace_back(g.header_get_offset(h),
				 Header{name ? name : "", header_unfold(raw ? raw : "")});
	}
}

// GMime keeps the Content-* headers of the top level on the message's MIME
// part and the rest on the message; merge them back into file order.
std::vector<Header> message_headers(GMimeMessage* msg)
{
	std::vector<std::pair<gint64, Header>> all;
	collect_headers(GMIME_OBJECT(msg), all);
	collect_headers(gm().message_get_mime_part(msg), all);
	std::stable_sort(all.begin(), all.end(),
			 [](const auto& a, const auto& b) { return a.first < b.first; });
	std::vector<Header> out;
	out.reserve(all.size());
	for (auto& [offset, h] : all)
		out.push_back(std::move(h));
	return out;
}

bool is_attachment(GMimeObject* obj)
{
	GMimeContentDisposition* disp = gm().object_get_content_disposition(obj);
	return disp && gm().content_disposition_is_attachment(disp);
}

// Depth-first search through multiparts for the first text/plain leaf
// that is not an attachment. Attached messages (message/rfc822) are not
// entered: their text is not this message's text.
GMimePart* find_text_plain(GMimeObject* obj)
{
	const GMimeApi& g = gm();
	if (g.is(obj, g.multipart_get_type)) {
		GMimeMultipart* mp = GMIME_MULTIPART(obj);
		int n = g.multipart_get_count(mp);
		for (int i = 0; i < n; i++)
			if (GMimePart* p = find_text_plain(g.multipart_get_part(mp, i)))
				return p;
		return nullptr;
	}
	if (!g.is(obj, g.part_get_type) || is_attachment(obj))
		return nullptr;
	GMimeContentType* ct = g.object_get_content_type(obj);
	if (ct && g.content_type_is_type(ct, "text", "plain"))
		return GMIME_PART(obj);
	return nullptr;
}

// The part whose text the message carries: the first text/plain part,
// else a single-part text/* body (text/html, say).
GMimePart* find_text_part(GMimeMessage* msg)
{
	const GMimeApi& g = gm();
	GMimeObject* top = g.message_get_mime_part(msg);
	if (!top)
		return nullptr;
	if (GMimePart* p = find_text_plain(top))
		return p;
	if (g.is(top, g.part_get_type)) {
		GMimeContentType* ct = g.object_get_content_type(top);
		if (ct && g.content_type_is_type(ct, "text", "*"))
			return GMIME_PART(top);
	}
	return nullptr;
}

// Decodes a text part to UTF-8 through GMime's filters: the content
// transfer encoding (RFC 2045 6) is undone by the data wrapper, then the
// charset filter converts from the declared charset (RFC 2046 4.1.2) and
// dos2unix turns the CRLF of the wire into plain newlines. A part
// without a charset, or with one iconv does not know, is kept as is;
// whatever is still not valid UTF-8 is repaired with U+FFFD.
std::string decode_text(GMimePart* part)
{
	const GMimeApi& g = gm();
	GMimeDataWrapper* content = g.part_get_content(part);
	if (!content)
		return {};
	GByteArray* bytes = g_byte_array_new();
	GRef<GMimeStream> mem(g.stream_mem_new_with_byte_array(bytes));  // owns bytes
	GRef<GMimeStream> filtered(g.stream_filter_new(mem.get()));
	GMimeStreamFilter* sf = GMIME_STREAM_FILTER(filtered.get());

	const char* charset = g.object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
	if (charset && g_ascii_strcasecmp(charset, "utf-8") != 0 &&
	    g_ascii_strcasecmp(charset, "us-ascii") != 0) {
		if (GMimeFilter* f = g.filter_charset_new(charset, "UTF-8")) {
			g.stream_filter_add(sf, f);
			g.object_unref(f);
		}
	}
	GMimeFilter* d2u = g.filter_dos2unix_new(FALSE);
	g.stream_filter_add(sf, d2u);
	g.object_unref(d2u);

	if (g.data_wrapper_write_to_stream(content, filtered.get()) < 0)
		return {};
	g.stream_flush(filtered.get());

	const char* data = reinterpret_cast<const char*>(bytes->data);
	if (g_utf8_validate(data, bytes->len, nullptr))
		return std::string(data, bytes->len);
	gchar* valid = g_utf8_make_valid(data, bytes->len);
	std::string out(valid);
	g_free(valid);
	return out;
}

}  // namespace

Message::Message(std::string_view raw, int file, off_t offset)
	: raw_(raw), file_(file), offset_(offset), parsed_(std::make_unique<Parsed>())
{
}

// The bytes around the fields cut, as header_fields() (also the loop
// test's) finds them.
std::vector<std::string_view> Message::delivered_parts() const
{
	std::vector<std::string_view> parts;
	size_t end = 0, kept = 0;  // kept: where the bytes not yet in parts start
	for (const HeaderField& f : header_fields(raw_, &end)) {
		if (!header_name_is(f.name, "return-path") && !header_name_is(f.name, "content-length"))
			continue;
		if (f.begin > kept)
			parts.push_back(raw_.substr(kept, f.begin - kept));
		kept = f.end;
	}
	if (kept < raw_.size())
		parts.push_back(raw_.substr(kept));
	return parts;
}

namespace {

// Writes the parts with writev(2), one call when it takes them whole.
bool write_parts(int fd, const std::vector<std::string_view>& parts)
{
	std::vector<iovec> iov;
	for (std::string_view p : parts)
		if (!p.empty())
			iov.push_back({const_cast<char*>(p.data()), p.size()});
	for (size_t i = 0; i < iov.size();) {
		ssize_t n = writev(fd, iov.data() + i, static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX)));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? (errno = EIO, false) : false;
		for (size_t done = static_cast<size_t>(n); done > 0;) {
			size_t step = std::min(done, iov[i].iov_len);
			iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + step;
			iov[i].iov_len -= step;
			done -= step;
			i += iov[i].iov_len == 0;
		}
	}
	return true;
}

}  // namespace

// From memory in one writev(2), or each part with sendfile(2) from where
// it lies in the file.
bool Message::write_to(int fd, std::string_view prefix) const
{
	std::vector<std::string_view> parts = delivered_parts();
	if (file_ < 0) {
		parts.insert(parts.begin(), prefix);
		return write_parts(fd, parts);
	}
	if (!write_all(fd, prefix))
		return false;
	for (std::string_view part : parts) {
		off_t from = offset_ + (part.data() - raw_.data());
		for (size_t left = part.size(); left > 0;) {
			ssize_t n = sendfile(fd, file_, &from, left);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n == 0 ? (errno = EIO, false) : false;
			left -= static_cast<size_t>(n);
		}
	}
	return true;
}

Message::~Message() = default;

// Parses the message on first use: one GMime parse fills headers,
// subject and text, then every GMime object is released, so a Message
// holds no more than its results. When GMime cannot be loaded, the
// accessors throw what gm() threw.
const Message::Parsed& Message::parsed() const
{
	Parsed& p = *parsed_;
	std::call_once(p.once, [this, &p] {
		const GMimeApi& g = gm();
		GRef<GMimeStream> stream(g.stream_mem_new_with_buffer(raw_.data(), raw_.size()));
		GRef<GMimeParser> parser(g.parser_new_with_stream(stream.get()));
		g.parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
		GRef<GMimeMessage> msg(g.parser_construct_message(parser.get(), g.options));
		if (!msg)
			return;
		p.headers = message_headers(msg.get());
		// RFC 2047 decoding and charset conversion to UTF-8 by GMime.
		if (const char* s = g.message_get_subject(msg.get()))
			p.subject = s;
		if (GMimePart* part = find_text_part(msg.get()))
			p.text = decode_text(part);
	});
	return p;
}

const std::vector<Header>& Message::headers() const { return parsed().headers; }

std::optional<std::string> Message::header(std::string_view name) const
{
	for (const Header& h : parsed().headers)
		if (iequal(h.name, name))
			return h.value;
	return std::nullopt;
}

std::string Message::subject() const { return parsed().subject; }

std::string Message::text() const { return parsed().text; }

std::string base64(std::string_view s)
{
	std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
	int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
				reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
	out.resize(static_cast<size_t>(n));
	return out;
}

}  // namespace laim
