// webhook: posts each message to an HTTPS endpoint with libcurl, in one
// of three bodies:
//   slack   Slack's chat.postMessage ({"channel", "text"}): the host, the
//           subject, sender -> recipients and the first max_text
//           characters of the message's text, with a mark
//           "[truncated, N bytes, queue id Q]" when it was cut (N: the
//           whole text's size). Slack answers most errors with HTTP 200
//           and {"ok":false,"error":E}: E is a permanent failure, except
//           the transient ones (ratelimited, internal_error, ...).
//   json    one object: client, date, from, host, id, message_id, size,
//           subject, text (the first max_text characters), to[],
//           truncated, uid and user (null when the sender's uid is
//           unknown); keys sorted, no spaces, as nlohmann's dump() writes.
//   rfc822  the message as queued (Received: first), Content-Type
//           message/rfc822, with the envelope in the request's
//           X-Envelope-Sender (empty for the null sender) and
//           X-Envelope-Recipient headers (base64, one per recipient) and
//           X-Ehlo, as slimta's HTTP relay sends it.
// One POST per call and one result for all its recipients: the endpoint
// takes the message once (json's to[], slack's text, rfc822's headers
// name them all), so there is no recipient that could succeed alone.
// 2xx is delivered; 408, 429, 5xx and every transport error (DNS,
// connect, TLS, timeout) are deferred, with Retry-After honoured; any
// other status fails with the status line and the body's first line.
// The certificate is always verified (ca_file: the only CAs trusted);
// no redirect is followed, no proxy taken from the environment, no other
// scheme spoken, and at most 64 KiB of an answer read.
//
//   handlers:
//     slack:
//       type: webhook
//       url: https://slack.com/api/chat.postMessage   # http:// only with allow_http
//       format: slack                  # slack, json (default) or rfc822
//       channel: "#alerts"             # slack only, and required there
//       token_file: /etc/laim/slack.token   # root 0600; sent as Authorization: Bearer
//       #token: xoxb-...               # inline instead of token_file (not both)
//       #headers: ["X-Team: ops"]      # more request headers, "Name: value"
//       #ca_file: /etc/laim/ca.pem     # trust only these CAs (default: the system's)
//       #allow_http: false
//       timeout: 10                    # seconds for the whole request
//       max_text: 3000                 # characters of the text sent
//       workers: 4                     # requests at once
#include <config.h>

#include <glib.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "common/hostname.h"
#include "common/log.h"
#include "common/tls_version.h"
#include "handler/api/handler.h"
#include "handler/builtin/curl_loader.h"

namespace laim {

namespace {

enum class Format { Slack, Json, Rfc822 };

constexpr size_t MAX_ANSWER = 64 * 1024;      // bytes of an answer's body kept
constexpr long MAX_RETRY_AFTER = 24 * 3600;   // a longer Retry-After is cut to this
constexpr size_t MAX_REASON_LINE = 200;       // characters of the body in a reason

// libcurl, once the first instance started (curl_loader.h); nullptr
// with why in libcurl_error when it could not be loaded.
const CurlApi* libcurl = nullptr;
std::string libcurl_error = "libcurl is loaded when the handler process starts the instance";

struct CurlFree {
	void operator()(CURL* c) const { libcurl->easy_cleanup(c); }
	void operator()(curl_slist* l) const { libcurl->slist_free_all(l); }
};
using Curl = std::unique_ptr<CURL, CurlFree>;
using CurlList = std::unique_ptr<curl_slist, CurlFree>;

// libcurl's OpenSSL context, before its handshake: TLS 1.2 at least,
// above OpenSSL's system policy (common/tls_version.h). CURLOPT_SSLVERSION
// of TLSv1_2 would set 1.2 outright, below a policy of 1.3.
CURLcode tls_floor(CURL*, void* ssl_ctx, void*)
{
	return tls12_at_least(static_cast<SSL_CTX*>(ssl_ctx)) ? CURLE_OK : CURLE_SSL_CONNECT_ERROR;
}

// The length in bytes of text's first max characters (UTF-8), so that a
// cut never splits a character.
size_t utf8_prefix(std::string_view text, size_t max)
{
	size_t chars = 0;
	for (size_t i = 0; i < text.size(); i++)
		if ((text[i] & 0xC0) != 0x80 && chars++ == max)
			return i;
	return text.size();
}

// The first line of an answer's body, at most MAX_REASON_LINE characters.
std::string first_line(std::string_view body)
{
	std::string_view line = body.substr(0, body.find_first_of("\r\n"));
	return std::string(line.substr(0, utf8_prefix(line, MAX_REASON_LINE)));
}

// Slack's text must have &, < and > escaped; nothing else.
std::string slack_escape(std::string_view s)
{
	std::string out;
	for (char c : s) {
		if (c == '&')
			out += "&amp;";
		else if (c == '<')
			out += "&lt;";
		else if (c == '>')
			out += "&gt;";
		else
			out += c;
	}
	return out;
}

std::string join(const std::vector<std::string>& list, const char* sep)
{
	std::string out;
	for (const std::string& s : list)
		out += (out.empty() ? "" : sep) + s;
	return out;
}

// Slack errors that go away by themselves (Slack's API documentation).
bool slack_transient(const std::string& error)
{
	for (const char* e : {"ratelimited", "internal_error", "fatal_error", "request_timeout", "service_unavailable"})
		if (error == e)
			return true;
	return false;
}

// What the peer answered to one request.
struct Answer {
	long status = 0;
	std::string status_line;  // "HTTP/1.1 503 Service Unavailable", CRLF removed
	std::string body;         // at most MAX_ANSWER bytes
	bool cut = false;         // the body was longer: its transfer was stopped
	std::string broken;       // why the body broke off after the status came, or ""
	unsigned retry_after = 0;

	// "HTTP 503 Service Unavailable" (HTTP/2 has no reason phrase).
	std::string status_text() const
	{
		size_t sp = status_line.find(' ');
		return sp == std::string::npos ? "HTTP " + std::to_string(status) : "HTTP " + status_line.substr(sp + 1);
	}
};

// libcurl's header callback: keeps the last status line (a 100 Continue
// would come before the final one), without its line end or the space
// that curl writes after an HTTP/2 status.
size_t on_header(char* data, size_t size, size_t n, void* user)
{
	std::string_view line(data, size * n);
	if (line.starts_with("HTTP/"))
		static_cast<Answer*>(user)->status_line = line.substr(0, line.find_last_not_of(" \r\n") + 1);
	return size * n;
}

// libcurl's write callback: keeps MAX_ANSWER bytes, then stops the
// transfer (an endless answer must not hold a worker until the timeout).
size_t on_body(char* data, size_t size, size_t n, void* user)
{
	Answer* a = static_cast<Answer*>(user);
	size_t len = size * n;
	if (a->body.size() + len > MAX_ANSWER) {
		a->body.append(data, MAX_ANSWER - a->body.size());
		a->cut = true;
		return 0;
	}
	a->body.append(data, len);
	return len;
}

class WebhookHandler : public Handler {
 public:
	explicit WebhookHandler(HandlerOptions& o);

	void start() override;
	Results deliver(const Envelope& env, const Message& msg) override;
	Result test() override;
	// Each call has its own connection and keeps no state.
	unsigned default_workers() const override { return 4; }

 private:
	void read_url(HandlerOptions& o);
	void read_token(HandlerOptions& o);
	void read_headers(HandlerOptions& o);
	Curl easy(char* errbuf) const;
	CurlList request_headers(const Envelope& env) const;
	std::string slack_body(const Envelope& env, const Message& msg) const;
	std::string json_body(const Envelope& env, const Message& msg) const;
	Result post(std::string_view body, curl_slist* headers) const;
	Result judge(const Answer& a) const;
	static Result judge_slack(const Answer& a);

	std::string url_, host_port_;
	bool https_ = true;
	Format format_ = Format::Json;
	std::string channel_, token_, ca_file_;
	std::vector<std::string> headers_;
	long timeout_;
	size_t max_text_;
	std::string host_;  // host_name(), from start()
};

LAIM_HANDLER("webhook", WebhookHandler);

WebhookHandler::WebhookHandler(HandlerOptions& o)
    : ca_file_(o.has("ca_file") ? o.path("ca_file") : ""),
      timeout_(static_cast<long>(o.integer("timeout", 10, 1, 3600))),
      max_text_(static_cast<size_t>(o.integer("max_text", 3000, 1, 1 << 20)))
{
	read_url(o);
	std::string format = o.string("format", "json");
	if (format == "slack")
		format_ = Format::Slack;
	else if (format == "rfc822")
		format_ = Format::Rfc822;
	else if (format != "json")
		o.fail("format", "expected slack, json or rfc822, got \"" + format + "\"");
	if (format_ == Format::Slack)
		channel_ = o.string("channel");
	else if (o.has("channel"))
		o.fail("channel", "only format slack has a channel");
	read_token(o);
	if (format_ == Format::Slack && token_.empty())
		o.fail("format", "format slack needs token or token_file (Slack's bot token)");
	read_headers(o);
}

// https://, or http:// with allow_http; split by GLib's URI parser here
// (the parent checks it for laimd -n without loading libcurl), parsed
// again by libcurl, which sends it. Errors never quote the URL: a
// webhook's URL may hold its secret.
void WebhookHandler::read_url(HandlerOptions& o)
{
	url_ = o.string("url");
	bool allow_http = o.boolean("allow_http", false);
	gchar* scheme = nullptr;
	gchar* host = nullptr;
	gint port = -1;
	if (!g_uri_split_network(url_.c_str(), G_URI_FLAGS_NONE, &scheme, &host, &port, nullptr))
		o.fail("url", "not a valid URL (expected https://HOST/PATH)");
	std::unique_ptr<gchar, decltype(&g_free)> scheme_owned(scheme, g_free), host_owned(host, g_free);
	https_ = std::string_view(scheme) == "https";
	if (!https_ && std::string_view(scheme) != "http")
		o.fail("url", "expected an https:// URL, got scheme \"" + std::string(scheme) + "\"");
	if (!https_ && !allow_http)
		o.fail("url", "http:// sends the message in clear: use https://, or set allow_http: true");
	if (!host || !*host)
		o.fail("url", "no host in the URL");
	std::string h = strchr(host, ':') ? "[" + std::string(host) + "]" : host;
	host_port_ = h + ":" + std::to_string(port != -1 ? port : https_ ? 443 : 80);
}

// token: (inline) or token_file: (a root-only secret file), not both; it
// becomes a header line, so it must hold no control character.
void WebhookHandler::read_token(HandlerOptions& o)
{
	if (o.has("token") && o.has("token_file"))
		o.fail("token_file", "give token or token_file, not both");
	const char* key = o.has("token_file") ? "token_file" : "token";
	if (!o.has(key))
		return;
	token_ = key == std::string_view("token") ? o.string(key) : o.secret(key);
	if (token_.empty())
		o.fail(key, "the token is empty");
	for (unsigned char c : token_)
		if (c < 0x20 || c == 0x7f)
			o.fail(key, "the token holds a control character or a line break");
}

// "Name: value" lines; the handler's own headers cannot be replaced.
// Errors quote no value, which may be a secret.
void WebhookHandler::read_headers(HandlerOptions& o)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";
	headers_ = o.strings("headers");
	for (size_t i = 0; i < headers_.size(); i++) {
		const std::string& h = headers_[i];
		size_t colon = h.find(':');
		std::string name = h.substr(0, colon);
		bool valid = !name.empty() && colon != std::string::npos;
		for (unsigned char c : name)
			valid = valid && (isalnum(c) || strchr(tchar, c));
		if (!valid)
			o.fail("headers", "entry " + std::to_string(i + 1) + " is not \"Name: value\" with a token as name");
		for (unsigned char c : h)
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				o.fail("headers", "header " + name + " holds a control character");
		for (const char* own : {"Host", "Content-Type", "Content-Length", "Transfer-Encoding", "Expect", "Connection"})
			if (strcasecmp(name.c_str(), own) == 0)
				o.fail("headers", "header " + name + " is set by the handler");
		if (!token_.empty() && strcasecmp(name.c_str(), "Authorization") == 0)
			o.fail("headers", "header Authorization is set by token or token_file");
	}
}

void WebhookHandler::start()
{
	if (!libcurl && !(libcurl = curl_load(&libcurl_error)))
		throw std::runtime_error("cannot load libcurl: " + libcurl_error);
	host_ = host_name();
}

// A handle with what every request shares: the URL, its one scheme, TLS
// verification, the timeouts; errors are written to errbuf.
Curl WebhookHandler::easy(char* errbuf) const
{
	Curl c(libcurl->easy_init());
	if (!c)
		return c;
	CURL* h = c.get();
	errbuf[0] = '\0';
	libcurl->easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	libcurl->easy_setopt(h, CURLOPT_URL, url_.c_str());
#if LIBCURL_VERSION_NUM >= 0x075500
	libcurl->easy_setopt(h, CURLOPT_PROTOCOLS_STR, https_ ? "https" : "http");
#else
	libcurl->easy_setopt(h, CURLOPT_PROTOCOLS, https_ ? CURLPROTO_HTTPS : CURLPROTO_HTTP);
#endif
	libcurl->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	libcurl->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	// A libcurl of another TLS library takes no OpenSSL callback: it gets
	// the floor its own way.
	if (libcurl->easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, tls_floor) != CURLE_OK)
		libcurl->easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (!ca_file_.empty()) {
		libcurl->easy_setopt(h, CURLOPT_CAINFO, ca_file_.c_str());
		libcurl->easy_setopt(h, CURLOPT_CAPATH, nullptr);
	}
	libcurl->easy_setopt(h, CURLOPT_PROXY, "");  // none, whatever the environment says
	libcurl->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	libcurl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM among the worker threads
	libcurl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout_);
	libcurl->easy_setopt(h, CURLOPT_TIMEOUT, timeout_);
	libcurl->easy_setopt(h, CURLOPT_USERAGENT, "laim/" PACKAGE_VERSION);
	return c;
}

CurlList WebhookHandler::request_headers(const Envelope& env) const
{
	std::vector<std::string> lines = {"Expect:"};  // no 100-continue round trip
	if (format_ == Format::Rfc822) {
		lines.push_back("Content-Type: message/rfc822");
		// curl drops a header with nothing after the colon; "Name;" sends it empty.
		lines.push_back(env.sender.empty() ? "X-Envelope-Sender;" : "X-Envelope-Sender: " + base64(env.sender));
		for (const std::string& rcpt : env.recipients)
			lines.push_back("X-Envelope-Recipient: " + base64(rcpt));
		lines.push_back("X-Ehlo: " + host_);
	} else {
		lines.push_back("Content-Type: application/json; charset=utf-8");
	}
	if (!token_.empty())
		lines.push_back("Authorization: Bearer " + token_);
	lines.insert(lines.end(), headers_.begin(), headers_.end());
	curl_slist* list = nullptr;
	for (const std::string& l : lines) {
		curl_slist* more = libcurl->slist_append(list, l.c_str());
		if (!more) {
			libcurl->slist_free_all(list);
			throw std::bad_alloc();
		}
		list = more;
	}
	return CurlList(list);
}

// "[host] subject", "sender → recipients", a blank line, the text. The
// subject is printable_text: a decoded subject holding a line feed would
// otherwise forge the "sender → recipients" line.
std::string WebhookHandler::slack_body(const Envelope& env, const Message& msg) const
{
	std::string subject = printable_text(msg.subject()), text = msg.text();
	size_t keep = utf8_prefix(text, max_text_);
	std::string out = "[" + host_ + "] " + (subject.empty() ? "(no subject)" : subject) + "\n" +
			  (env.sender.empty() ? "<>" : env.sender) + " \xe2\x86\x92 " + join(env.recipients, ", ");
	if (!text.empty())
		out += "\n\n" + text.substr(0, keep);
	if (keep < text.size())
		out += "\n[truncated, " + std::to_string(text.size()) + " bytes, queue id " + env.id + "]";
	nlohmann::json body = {{"channel", channel_}, {"text", slack_escape(out)}};
	return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string WebhookHandler::json_body(const Envelope& env, const Message& msg) const
{
	std::string text = msg.text();
	size_t keep = utf8_prefix(text, max_text_);
	auto header = [&msg](const char* name) -> nlohmann::json {
		std::optional<std::string> v = msg.header(name);
		return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
	};
	std::string user = env.uid ? login_name(*env.uid) : "";
	nlohmann::json body = {
		{"id", env.id},
		{"host", host_},
		{"from", env.sender},
		{"to", env.recipients},
		{"subject", msg.subject()},
		{"date", header("Date")},
		{"message_id", header("Message-ID")},
		{"uid", env.uid ? nlohmann::json(*env.uid) : nlohmann::json(nullptr)},
		{"user", user.empty() ? nlohmann::json(nullptr) : nlohmann::json(user)},
		{"client", env.client},
		{"size", msg.size()},
		{"text", text.substr(0, keep)},
		{"truncated", keep < text.size()},
	};
	return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Results WebhookHandler::deliver(const Envelope& env, const Message& msg)
{
	if (!libcurl)
		return Result::tempfail("webhook: cannot load libcurl: " + libcurl_error);
	CurlList headers = request_headers(env);
	switch (format_) {
	case Format::Slack:
		return post(slack_body(env, msg), headers.get());
	case Format::Json:
		return post(json_body(env, msg), headers.get());
	case Format::Rfc822:
		break;
	}
	return post(msg.raw(), headers.get());
}

// One POST of body (not copied: it must live until the answer is in).
Result WebhookHandler::post(std::string_view body, curl_slist* headers) const
{
	char errbuf[CURL_ERROR_SIZE];
	Curl c = easy(errbuf);
	if (!c)
		return Result::tempfail("webhook: curl_easy_init failed");
	Answer a;
	CURL* h = c.get();
	libcurl->easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	libcurl->easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
	libcurl->easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
	libcurl->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	libcurl->easy_setopt(h, CURLOPT_HEADERDATA, &a);
	libcurl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	libcurl->easy_setopt(h, CURLOPT_WRITEDATA, &a);
	CURLcode rc = libcurl->easy_perform(h);
	if (rc == CURLE_WRITE_ERROR && a.cut)
		rc = CURLE_OK;  // the status is in; the rest of the body is not needed
	libcurl->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
	if (rc != CURLE_OK) {
		std::string error = errbuf[0] ? errbuf : libcurl->easy_strerror(rc);
		// A 2xx that came whole is the endpoint's acceptance, whatever
		// became of its body: posting again would make a duplicate.
		if (a.status < 200 || a.status >= 300)
			return Result::tempfail(error);
		a.broken = error;
	}
	curl_off_t retry_after = 0;
	libcurl->easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry_after);  // seconds or an HTTP-date
	a.retry_after = static_cast<unsigned>(std::clamp<curl_off_t>(retry_after, 0, MAX_RETRY_AFTER));
	return judge(a);
}

// 2xx delivered; 408, 429 and 5xx deferred; the rest failed for good.
Result WebhookHandler::judge(const Answer& a) const
{
	if (a.status >= 200 && a.status < 300 && format_ == Format::Slack)
		return judge_slack(a);
	if (a.status >= 200 && a.status < 300)
		return Result::delivered(a.status_text() + (a.broken.empty() ? "" : " (its body broke off: " + a.broken + ")"));
	std::string line = first_line(a.body);
	std::string why = a.status_text() + (line.empty() ? "" : ": " + line);
	if (a.status == 408 || a.status == 429 || a.status >= 500)
		return Result::tempfail(why, a.retry_after);
	return Result::permfail(why);
}

// Whether a body starts as Slack's acceptance does: {"ok":true, then
// a comma or the end of the object, white space allowed between.
bool starts_ok_true(std::string_view s)
{
	size_t i = 0;
	auto skip = [&] {
		while (i < s.size() && isspace(static_cast<unsigned char>(s[i])))
			i++;
	};
	for (std::string_view token : {"{", "\"ok\"", ":", "true"}) {
		skip();
		if (s.substr(i, token.size()) != token)
			return false;
		i += token.size();
	}
	skip();
	return i < s.size() && (s[i] == ',' || s[i] == '}');
}

// Slack's own verdict, in the body of its HTTP 200. A body cut at
// MAX_ANSWER or broken off (chat.postMessage echoes the message, which
// may be long) still gives it when it starts as Slack's do, {"ok":true.
Result WebhookHandler::judge_slack(const Answer& a)
{
	nlohmann::json j = nlohmann::json::parse(a.body, nullptr, false);
	if (!j.is_object() && (a.cut || !a.broken.empty()) && starts_ok_true(a.body))
		return Result::delivered(a.status_text());
	if (!j.is_object() || !j.contains("ok") || !j["ok"].is_boolean())
		return Result::tempfail(a.status_text() + " without Slack's answer: " + first_line(a.body));
	if (j["ok"].get<bool>())
		return Result::delivered(a.status_text());
	auto e = j.find("error");
	std::string error = e != j.end() && e->is_string() ? e->get<std::string>() : "no error given";
	if (slack_transient(error))
		return Result::tempfail("slack: " + error, a.retry_after);
	return Result::permfail("slack: " + error);
}

// Connects and completes the TLS handshake with the certificate
// verified, as a delivery would, then closes: no request is sent, so
// the token and the endpoint's answer are not checked.
Result WebhookHandler::test()
{
	if (!libcurl)
		return Result::tempfail("webhook: cannot load libcurl: " + libcurl_error);
	char errbuf[CURL_ERROR_SIZE];
	Curl c = easy(errbuf);
	if (!c)
		return Result::tempfail("webhook: curl_easy_init failed");
	libcurl->easy_setopt(c.get(), CURLOPT_CONNECT_ONLY, 1L);
	CURLcode rc = libcurl->easy_perform(c.get());
	if (rc != CURLE_OK)
		return Result::tempfail("webhook: " + host_port_ + ": " + (errbuf[0] ? errbuf : libcurl->easy_strerror(rc)));
	char* ip = nullptr;
	libcurl->easy_getinfo(c.get(), CURLINFO_PRIMARY_IP, &ip);
	return Result::delivered("webhook: connected to " + host_port_ + " (" + (ip ? ip : "?") + ")" +
				 (https_ ? ", certificate verified" : ", plain http") + "; nothing sent");
}

}  // namespace

}  // namespace laim
