// SmtpClient: non-blocking sockets driven by poll() against a deadline,
// so that no peer can hold a worker longer than the step's timeout, and
// OpenSSL on the same socket once TLS starts.
#include "handler/api/smtp_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "common/fd.h"
#include "common/text.h"
#include "common/tls_version.h"

namespace laim {

namespace {

constexpr size_t MAX_LINE = 4096;        // longest reply line kept whole (RFC 5321 says 512)
constexpr size_t MAX_REPLY_LINES = 200;  // lines of one reply
constexpr size_t FLUSH_AT = 64 * 1024;   // data queued before it is written

// A point in time that every wait of one step counts down to; kind
// names it in the error when it passes.
class Deadline {
 public:
	explicit Deadline(int seconds, const char* kind = "timeout") : seconds_(seconds), kind_(kind)
	{
		clock_gettime(CLOCK_MONOTONIC, &end_);
		end_.tv_sec += seconds;
	}
	// Milliseconds left, at least 0.
	int left_ms() const
	{
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long ms = (end_.tv_sec - now.tv_sec) * 1000LL + (end_.tv_nsec - now.tv_nsec) / 1000000;
		return ms < 0 ? 0 : static_cast<int>(ms);
	}
	bool before(const Deadline& other) const
	{
		return end_.tv_sec != other.end_.tv_sec ? end_.tv_sec < other.end_.tv_sec
							: end_.tv_nsec < other.end_.tv_nsec;
	}
	// "timeout after 10 s"
	std::string passed() const { return std::string(kind_) + " after " + std::to_string(seconds_) + " s"; }

 private:
	struct timespec end_;
	int seconds_;
	const char* kind_;
};

// Waits until fd is ready for events; throws when the deadline passes.
void wait_ready(int fd, short events, const Deadline& deadline, const char* what)
{
	for (;;) {
		struct pollfd p = {fd, events, 0};
		int n = poll(&p, 1, deadline.left_ms());
		if (n > 0)
			return;
		if (n == 0)
			throw SmtpError(deadline.passed() + " " + what);
		if (errno != EINTR)
			throw SmtpError(std::string("poll: ") + strerror(errno));
	}
}

// The newest OpenSSL error as text, and clears the queue.
std::string openssl_error()
{
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	if (e == 0)
		return "connection closed";
	if (ERR_SYSTEM_ERROR(e))
		return strerror(ERR_GET_REASON(e));
	const char* reason = ERR_reason_error_string(e);
	return reason ? reason : "error " + std::to_string(e);
}

bool is_ip_address(const std::string& host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// "AB:CD:..." or "abcd...": the hex digits in upper case.
std::string hex_digits(std::string_view s)
{
	std::string out;
	for (char c : s)
		if (isxdigit(static_cast<unsigned char>(c)))
			out += static_cast<char>(toupper(static_cast<unsigned char>(c)));
	return out;
}

std::string certificate_sha256(X509* cert)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!X509_digest(cert, EVP_sha256(), md, &len))
		return "";
	static const char digits[] = "0123456789ABCDEF";
	std::string out;
	for (unsigned i = 0; i < len; i++) {
		out += digits[md[i] >> 4];
		out += digits[md[i] & 15];
	}
	return out;
}

// The enhanced status code (RFC 3463) that starts a reply's text: its class
// is the reply's first digit, then two numbers of 1 to 3 digits.
std::string enhanced_code(int code, const std::string& text)
{
	std::string word = text.substr(0, text.find(' '));
	size_t dot1 = word.find('.'), dot2 = word.find('.', dot1 == std::string::npos ? 0 : dot1 + 1);
	if (word.size() < 5 || word[0] != '0' + code / 100 || dot1 != 1 || dot2 == std::string::npos ||
	    dot2 - dot1 < 2 || dot2 - dot1 > 4 || word.size() - dot2 < 2 || word.size() - dot2 > 4)
		return "";
	for (size_t i = 2; i < word.size(); i++)
		if (i != dot2 && !isdigit(static_cast<unsigned char>(word[i])))
			return "";
	return word;
}

}  // namespace

std::string SmtpReply::text() const
{
	std::string out = std::to_string(code);
	for (size_t i = 0; i < lines.size(); i++) {
		out += i ? " / " : " ";
		out += lines[i];
	}
	return out;
}

// Only a 5xx fails for good: any other code where a 2xx, 4xx or 5xx
// belongs (a 354 to the message's end) is the server's error, deferred
// as the other protocol errors are.
Result SmtpReply::result(std::string_view what) const
{
	std::string why = std::string(what) + text();
	if (code >= 200 && code < 300)
		return Result::delivered(why);
	if (code >= 400 && code < 500)
		return Result::tempfail(why).with_code(enhanced);
	if (code >= 500 && code < 600)
		return Result::permfail(why).with_code(enhanced);
	return Result::tempfail(std::string(what) + "unexpected reply " + text());
}

std::optional<std::string> SmtpReply::extension(std::string_view keyword) const
{
	for (size_t i = 1; i < lines.size(); i++) {
		std::string_view line = lines[i];
		std::string_view word = line.substr(0, line.find(' '));
		if (!iequal(word, keyword))
			continue;
		return std::string(word.size() < line.size() ? line.substr(word.size() + 1) : "");
	}
	return std::nullopt;
}

struct SmtpClient::Impl {
	UniqueFd fd;
	SSL_CTX* ctx = nullptr;
	SSL* ssl = nullptr;
	std::string peer;     // "127.0.0.1:587" or the socket's path, for messages
	std::string in, out;  // read and not yet taken; queued and not yet sent
	std::string verified; // how the certificate was checked, for tls_summary()
	std::optional<Deadline> session;  // limit_session()'s

	~Impl()
	{
		if (ssl)
			SSL_free(ssl);
		if (ctx)
			SSL_CTX_free(ctx);
	}

	Deadline step(int timeout) const;
	void connected(int s, const sockaddr* addr, socklen_t len, const Deadline& deadline);
	SmtpReply reply(const Deadline& deadline);
	void fill(const Deadline& deadline);
	std::string read_line(const Deadline& deadline);
	void write_out(const Deadline& deadline);
	void handshake(const Deadline& deadline);
};

// The deadline of a step of timeout seconds: its own, or the session's
// when that comes first.
Deadline SmtpClient::Impl::step(int timeout) const
{
	Deadline own(timeout);
	return session && session->before(own) ? *session : own;
}

// Connects the non-blocking socket s; on success it becomes the connection.
void SmtpClient::Impl::connected(int s, const sockaddr* addr, socklen_t len, const Deadline& deadline)
{
	UniqueFd sock(s);
	if (s < 0)
		throw SmtpError("socket: " + std::string(strerror(errno)), errno);
	if (connect(s, addr, len) != 0) {
		// A unix socket whose listen queue is full refuses at once with
		// EAGAIN: no connection is in progress, none to wait for.
		if (errno == EAGAIN && addr->sa_family == AF_UNIX)
			throw SmtpError("connect to " + peer + ": the server's listen queue is full (" +
					strerror(errno) + ")", errno);
		if (errno != EINPROGRESS)
			throw SmtpError("connect to " + peer + ": " + strerror(errno), errno);
		wait_ready(s, POLLOUT, deadline, ("connecting to " + peer).c_str());
		int err = 0;
		socklen_t n = sizeof err;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &n);
		if (err)
			throw SmtpError("connect to " + peer + ": " + strerror(err), err);
	}
	fd = std::move(sock);
}

SmtpClient::SmtpClient() : impl_(std::make_unique<Impl>()) {}
SmtpClient::~SmtpClient() = default;

void SmtpClient::limit_session(int seconds)
{
	if (seconds > 0)
		impl_->session.emplace(seconds, "session timeout");
}

void SmtpClient::connect_unix(const std::string& path, int timeout)
{
	impl_->peer = path;
	struct sockaddr_un sun = {};
	sun.sun_family = AF_UNIX;
	if (path.size() >= sizeof sun.sun_path)
		throw SmtpError("socket path too long: " + path);
	memcpy(sun.sun_path, path.c_str(), path.size() + 1);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	impl_->connected(s, reinterpret_cast<sockaddr*>(&sun), sizeof sun, impl_->step(timeout));
}

// Tries each address of host in turn; the last error is the one thrown.
void SmtpClient::connect_tcp(const std::string& host, unsigned port, int timeout)
{
	impl_->peer = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
	Deadline deadline = impl_->step(timeout);
	struct addrinfo hints = {};
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	struct addrinfo* list = nullptr;
	int r = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
	if (r != 0)
		throw SmtpError("cannot resolve " + host + ": " + gai_strerror(r));
	std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(list, freeaddrinfo);
	for (addrinfo* a = list; a; a = a->ai_next) {
		try {
			int s = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
			impl_->connected(s, a->ai_addr, a->ai_addrlen, deadline);
			return;
		} catch (const SmtpError&) {
			if (!a->ai_next)
				throw;
		}
	}
}

// Reads what the peer has sent into `in`; throws at the deadline or when
// the peer closes.
void SmtpClient::Impl::fill(const Deadline& deadline)
{
	char buf[16384];
	for (;;) {
		ssize_t n;
		short want = POLLIN;
		if (ssl) {
			ERR_clear_error();
			int r = SSL_read(ssl, buf, sizeof buf);
			if (r > 0) {
				in.append(buf, static_cast<size_t>(r));
				return;
			}
			int e = SSL_get_error(ssl, r);
			if (e == SSL_ERROR_WANT_WRITE)
				want = POLLOUT;
			else if (e != SSL_ERROR_WANT_READ)
				throw SmtpError(peer + " closed the connection (" + openssl_error() + ")");
		} else {
			n = recv(fd.get(), buf, sizeof buf, 0);
			if (n > 0) {
				in.append(buf, static_cast<size_t>(n));
				return;
			}
			if (n == 0)
				throw SmtpError(peer + " closed the connection");
			if (errno != EAGAIN && errno != EINTR)
				throw SmtpError("reading from " + peer + ": " + strerror(errno));
		}
		wait_ready(fd.get(), want, deadline, ("waiting for " + peer).c_str());
	}
}

// One line without its CRLF. A line longer than MAX_LINE keeps its first
// MAX_LINE bytes and " [...]"; the rest is read and dropped up to its LF,
// within the deadline. Memory stays bounded, and a long reply is still
// the answer it is, however the peer's segments fall: failing it would
// defer, and so send again, a message the server has taken.
std::string SmtpClient::Impl::read_line(const Deadline& deadline)
{
	bool cut = false;
	size_t end;
	while ((end = in.find('\n')) == std::string::npos) {
		if (in.size() > MAX_LINE + 1) {  // more than the bytes kept and a CR
			in.resize(MAX_LINE);
			cut = true;
		}
		fill(deadline);
	}
	std::string line = in.substr(0, end);
	in.erase(0, end + 1);
	if (!line.empty() && line.back() == '\r')
		line.pop_back();
	if (cut || line.size() > MAX_LINE)
		line = line.substr(0, MAX_LINE) + " [...]";
	return line;
}

SmtpReply SmtpClient::read_reply(int timeout)
{
	return impl_->reply(impl_->step(timeout));
}

// Parses "250-text" / "250 text" lines until the last one.
SmtpReply SmtpClient::Impl::reply(const Deadline& deadline)
{
	SmtpReply reply;
	for (;;) {
		std::string line = read_line(deadline);
		bool digits = line.size() >= 3 && isdigit((unsigned char)line[0]) && isdigit((unsigned char)line[1]) &&
			      isdigit((unsigned char)line[2]);
		if (!digits || (line.size() > 3 && line[3] != ' ' && line[3] != '-'))
			throw SmtpError(peer + " sent a malformed reply: " + line.substr(0, 80));
		int code = std::stoi(line.substr(0, 3));
		if (reply.lines.empty())
			reply.code = code;
		else if (code != reply.code)
			throw SmtpError(peer + " changed the code inside a reply: " + line.substr(0, 80));
		reply.lines.push_back(line.size() > 4 ? line.substr(4) : "");
		if (line.size() <= 3 || line[3] == ' ')
			break;
		if (reply.lines.size() >= MAX_REPLY_LINES)
			throw SmtpError(peer + " sent a reply of more than " + std::to_string(MAX_REPLY_LINES) +
					" lines");
	}
	reply.enhanced = enhanced_code(reply.code, reply.lines[0]);
	return reply;
}

// read_reply() after the message's end, with its own timeout only: a
// failure says so, since the server may have taken the message, and the
// retry may make a copy.
SmtpReply SmtpClient::read_end_reply(int timeout)
{
	try {
		return impl_->reply(Deadline(timeout));
	} catch (const SmtpError& e) {
		throw SmtpError(std::string("after the end of the message (it may have been delivered): ") + e.what(),
				e.error);
	}
}

void SmtpClient::queue(std::string_view line)
{
	impl_->out.append(line);
	impl_->out += "\r\n";
}

// Writes all of `out`.
void SmtpClient::Impl::write_out(const Deadline& deadline)
{
	while (!out.empty()) {
		short want = POLLOUT;
		if (ssl) {
			ERR_clear_error();
			int r = SSL_write(ssl, out.data(), static_cast<int>(std::min<size_t>(out.size(), 1 << 20)));
			if (r > 0) {
				out.erase(0, static_cast<size_t>(r));
				continue;
			}
			int e = SSL_get_error(ssl, r);
			if (e == SSL_ERROR_WANT_READ)
				want = POLLIN;
			else if (e != SSL_ERROR_WANT_WRITE)
				throw SmtpError("writing to " + peer + ": " + openssl_error());
		} else {
			ssize_t n = send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL);
			if (n > 0) {
				out.erase(0, static_cast<size_t>(n));
				continue;
			}
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				throw SmtpError("writing to " + peer + ": " + strerror(errno));
		}
		wait_ready(fd.get(), want, deadline, ("sending to " + peer).c_str());
	}
}

void SmtpClient::flush(int timeout)
{
	impl_->write_out(impl_->step(timeout));
}

SmtpReply SmtpClient::command(std::string_view line, int timeout)
{
	queue(line);
	flush(timeout);
	return read_reply(timeout);
}

// A line that starts with "." gets another (RFC 5321 4.5.2) and a bare LF
// becomes CRLF; written out every FLUSH_AT bytes.
void SmtpClient::send_data(std::string_view message, int timeout)
{
	Deadline deadline = impl_->step(timeout);
	std::string& out = impl_->out;
	while (!message.empty()) {
		size_t nl = message.find('\n');
		std::string_view line = message.substr(0, nl);  // without its LF
		message.remove_prefix(nl == std::string_view::npos ? message.size() : nl + 1);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		if (!line.empty() && line[0] == '.')
			out += '.';
		out.append(line);
		out += "\r\n";
		if (out.size() >= FLUSH_AT)
			impl_->write_out(deadline);
	}
	out += ".\r\n";
	impl_->write_out(deadline);
}

// TLS 1.2 or later on the connection; verifies the chain and the name,
// or compares the certificate with a pin.
void SmtpClient::start_tls(const TlsPolicy& policy, int timeout)
{
	Impl& c = *impl_;
	c.in.clear();  // nothing sent before the handshake may count after it
	c.ctx = SSL_CTX_new(TLS_client_method());
	if (!c.ctx)
		throw SmtpError("TLS: " + openssl_error());
	if (!tls12_at_least(c.ctx))
		throw SmtpError("TLS: " + openssl_error());
	bool pinned = !policy.fingerprint.empty();
	if (!pinned) {
		int ok = policy.ca_file.empty() ? SSL_CTX_set_default_verify_paths(c.ctx)
						: SSL_CTX_load_verify_locations(c.ctx, policy.ca_file.c_str(), nullptr);
		if (!ok)
			throw SmtpError("TLS: cannot load the CA file " +
					(policy.ca_file.empty() ? std::string("store") : policy.ca_file) + ": " +
					openssl_error());
		SSL_CTX_set_verify(c.ctx, SSL_VERIFY_PEER, nullptr);
	}
	c.ssl = SSL_new(c.ctx);
	if (!c.ssl || !SSL_set_fd(c.ssl, c.fd.get()))
		throw SmtpError("TLS: " + openssl_error());
	bool address = is_ip_address(policy.host);
	if (!address)
		SSL_set_tlsext_host_name(c.ssl, policy.host.c_str());
	if (!pinned) {
		int ok = address ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl), policy.host.c_str())
				 : SSL_set1_host(c.ssl, policy.host.c_str());
		if (!ok)
			throw SmtpError("TLS: cannot check the name " + policy.host);
	}
	c.handshake(c.step(timeout));
	X509* cert = SSL_get1_peer_certificate(c.ssl);
	std::unique_ptr<X509, void (*)(X509*)> guard(cert, X509_free);
	if (!cert)
		throw SmtpError("TLS handshake with " + c.peer + ": no certificate");
	char name[256] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof name);
	if (pinned) {
		std::string seen = certificate_sha256(cert);
		if (seen != hex_digits(policy.fingerprint))
			throw SmtpError("TLS handshake with " + c.peer + ": certificate fingerprint " + seen +
					" does not match tls_fingerprint");
		c.verified = std::string("certificate CN=") + name + " matches tls_fingerprint";
	} else {
		c.verified = std::string("certificate CN=") + name + " verified for " + policy.host;
	}
}

void SmtpClient::Impl::handshake(const Deadline& deadline)
{
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(ssl);
		if (r == 1)
			return;
		int e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			wait_ready(fd.get(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline,
				   ("in the TLS handshake with " + peer).c_str());
			continue;
		}
		long v = SSL_get_verify_result(ssl);
		std::string why = v != X509_V_OK ? std::string("certificate verify failed: ") +
							   X509_verify_cert_error_string(v)
						 : openssl_error();
		throw SmtpError("TLS handshake with " + peer + ": " + why);
	}
}

bool SmtpClient::tls() const
{
	return impl_->ssl != nullptr;
}

std::string SmtpClient::tls_summary() const
{
	if (!impl_->ssl)
		return "no TLS";
	return std::string(SSL_get_version(impl_->ssl)) + " " + SSL_get_cipher_name(impl_->ssl) + ", " +
	       impl_->verified;
}

void SmtpClient::quit()
{
	if (!impl_->fd)
		return;
	try {
		impl_->out.clear();
		command("QUIT", 2);
	} catch (const SmtpError&) {
	}
	if (impl_->ssl)
		SSL_shutdown(impl_->ssl);
	impl_->fd.reset();
}

}  // namespace laim
