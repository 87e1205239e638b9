#include "common/imsg.h"

#include <glib.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <utility>

#include "common/log.h"

namespace laim {

namespace {
struct Header {
	uint32_t type, len, peerid, pid;
};
static_assert(sizeof(Header) == IMSG_HEADER_SIZE);
}  // namespace

const char* imsg_strerror(ImsgError e)
{
	switch (e) {
	case ImsgError::None: return "no error";
	case ImsgError::Truncated: return "truncated frame";
	case ImsgError::Oversized: return "oversized frame";
	case ImsgError::Trailing: return "trailing bytes after frame";
	case ImsgError::UnknownType: return "unknown message type";
	case ImsgError::BadFd: return "unexpected or missing descriptor";
	}
	return "unknown error";
}

ImsgError imsg_decode(const uint8_t* rec, size_t n, int fd, ImsgValidator valid, Imsg& out)
{
	if (n < IMSG_HEADER_SIZE)
		return ImsgError::Truncated;
	Header h;
	memcpy(&h, rec, sizeof h);
	if (h.len < IMSG_HEADER_SIZE || h.len > IMSG_HEADER_SIZE + IMSG_MAX_PAYLOAD ||
	    n > IMSG_HEADER_SIZE + IMSG_MAX_PAYLOAD)
		return h.len < IMSG_HEADER_SIZE ? ImsgError::Truncated : ImsgError::Oversized;
	if (n < h.len)
		return ImsgError::Truncated;
	if (n > h.len)
		return ImsgError::Trailing;
	ImsgTypeInfo info = valid(h.type);
	if (!info.known)
		return ImsgError::UnknownType;
	if (info.with_fd != (fd >= 0))
		return ImsgError::BadFd;
	out.type = h.type;
	out.peerid = h.peerid;
	out.pid = h.pid;
	out.data.assign(reinterpret_cast<const char*>(rec) + IMSG_HEADER_SIZE, n - IMSG_HEADER_SIZE);
	out.fd.reset(fd);
	return ImsgError::None;
}

void imsg_encode(uint32_t type, uint32_t peerid, uint32_t pid, std::string_view payload, std::string& out)
{
	Header h{type, static_cast<uint32_t>(IMSG_HEADER_SIZE + payload.size()), peerid, pid};
	out.assign(reinterpret_cast<const char*>(&h), sizeof h);
	out.append(payload);
}

void ImsgMac::set_key(const ImsgMacKey& key)
{
	if (keyed_)
		g_hmac_unref(keyed_);
	keyed_ = g_hmac_new(G_CHECKSUM_SHA256, key.data(), key.size());
	if (!keyed_)
		fatalx("HMAC-SHA256: no GHmac");
}

ImsgMac::~ImsgMac()
{
	if (keyed_)
		g_hmac_unref(keyed_);
}

void ImsgMac::append(std::string_view record, int fd, std::string& out)
{
	struct stat st = {};
	uint64_t id[3] = {fd >= 0, 0, 0};
	if (fd >= 0 && fstat(fd, &st) == 0) {
		id[1] = st.st_dev;
		id[2] = st.st_ino;
	}
	GHmac* h = g_hmac_copy(keyed_);
	g_hmac_update(h, reinterpret_cast<const guchar*>(record.data()), static_cast<gssize>(record.size()));
	g_hmac_update(h, reinterpret_cast<const guchar*>(id), sizeof id);
	guint8 md[32];
	gsize n = sizeof md;
	g_hmac_get_digest(h, md, &n);
	g_hmac_unref(h);
	out.append(reinterpret_cast<const char*>(md), IMSG_MAC_SIZE);
}

std::string imsg_mac(const ImsgMacKey& key, std::string_view record, int fd)
{
	std::string mac;
	ImsgMac(key).append(record, fd, mac);
	return mac;
}

constexpr size_t RECORD_MAX = IMSG_HEADER_SIZE + IMSG_MAX_PAYLOAD + IMSG_MAC_SIZE;
constexpr size_t RECORD_CONTROL = CMSG_SPACE(sizeof(int) * 4);

// Up to READ_BATCH records from one recvmmsg, with their descriptors. The
// buffers are allocated once and not cleared: only the pages a record
// fills are ever touched.
struct ImsgChannel::Batch {
	std::unique_ptr<uint8_t[]> bufs{new uint8_t[READ_BATCH * RECORD_MAX]};  // new[] leaves them unwritten
	alignas(struct cmsghdr) char control[READ_BATCH][RECORD_CONTROL];
	struct mmsghdr hdrs[READ_BATCH];
	struct iovec iov[READ_BATCH];
	std::vector<UniqueFd> fds[READ_BATCH];
	unsigned count = 0, next = 0;
};

ImsgChannel::ImsgChannel(UniqueFd fd, ImsgValidator valid) : fd_(std::move(fd)), valid_(valid) {}

ImsgChannel::ImsgChannel(ImsgChannel&& o) noexcept
	: fd_(std::move(o.fd_)), valid_(o.valid_), out_(std::move(o.out_)), refused_(std::move(o.refused_)),
	  mac_(std::move(o.mac_)), last_mac_(std::move(o.last_mac_)), batch_(std::exchange(o.batch_, nullptr))
{
}

ImsgChannel::~ImsgChannel()
{
	delete batch_;
}

void ImsgChannel::seal_with(const ImsgMacKey& key)
{
	mac_.set_key(key);
}

void ImsgChannel::compose(uint32_t type, uint32_t peerid, std::string_view payload, int fd)
{
	Frame f;
	imsg_encode(type, peerid, static_cast<uint32_t>(process_id()), payload, f.bytes);
	if (mac_)
		mac_.append(f.bytes, fd, f.bytes);
	f.fd.reset(fd);
	out_.push_back(std::move(f));
}

// Fills mh to send a frame's bytes, and fd (if not -1) in cbuf.
static void frame_msghdr(std::string& bytes, int fd, struct msghdr& mh, struct iovec& iov, char* cbuf)
{
	iov = {bytes.data(), bytes.size()};
	mh = {};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd < 0)
		return;
	memset(cbuf, 0, CMSG_SPACE(sizeof(int)));
	mh.msg_control = cbuf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int));
	struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
}

bool ImsgChannel::flush()
{
	while (!out_.empty()) {
		struct mmsghdr mm[SEND_BATCH];
		struct iovec iov[SEND_BATCH];
		alignas(struct cmsghdr) char cbuf[SEND_BATCH][CMSG_SPACE(sizeof(int))];
		size_t k = std::min(out_.size(), SEND_BATCH);
		for (size_t i = 0; i < k; i++)
			frame_msghdr(out_[i].bytes, out_[i].fd.get(), mm[i].msg_hdr, iov[i], cbuf[i]);
		// One frame alone goes by sendmsg: the processes whose seccomp
		// filter has no sendmmsg only ever send one at a time.
		int n = k == 1 ? (sendmsg(fd_.get(), &mm[0].msg_hdr, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -1 : 1)
			       : sendmmsg(fd_.get(), mm, static_cast<unsigned>(k), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS;
		}
		out_.erase(out_.begin(), out_.begin() + n);
		if (static_cast<size_t>(n) < k)
			return true;  // the socket is full: the rest waits for room
	}
	return true;
}

bool ImsgChannel::flush_wait(int timeout_ms)
{
	while (pending()) {
		if (!flush())
			return false;
		struct pollfd p = {fd_.get(), POLLOUT, 0};
		if (pending() && poll(&p, 1, timeout_ms) <= 0)
			return false;
	}
	return true;
}

ImsgChannel::Read ImsgChannel::read_wait(Imsg& msg, int64_t deadline, ImsgError* err)
{
	for (;;) {
		Read r = read(msg, err);
		if (r != Read::Again)
			return r;
		int64_t left = deadline - monotonic_ms();
		struct pollfd p = {fd_.get(), POLLIN, 0};
		if (left <= 0 || poll(&p, 1, static_cast<int>(left)) == 0)
			return Read::Again;
	}
}

// Every descriptor that came with a record, so that none leaks whatever
// happens next.
static std::vector<UniqueFd> received_fds(struct msghdr& mh)
{
	std::vector<UniqueFd> fds;
	for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			fds.emplace_back(fd);
		}
	}
	return fds;
}

ImsgChannel::Read ImsgChannel::read(Imsg& msg, ImsgError* err)
{
	if (batch_)
		return read_batched(msg, err);
	uint8_t buf[RECORD_MAX];
	struct iovec iov = {buf, sizeof buf};
	alignas(struct cmsghdr) char cbuf[RECORD_CONTROL];
	struct msghdr mh = {};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof cbuf;
	ssize_t n;
	do
		n = recvmsg(fd_.get(), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? Read::Again : Read::Error;
	if (n == 0)
		return Read::Closed;
	std::vector<UniqueFd> fds = received_fds(mh);
	return take(buf, static_cast<size_t>(n), mh.msg_flags, fds, msg, err);
}

void ImsgChannel::read_in_batches()
{
	if (!batch_)
		batch_ = new Batch;
}

ImsgChannel::Read ImsgChannel::read_batched(Imsg& msg, ImsgError* err)
{
	Batch& b = *batch_;
	if (b.next == b.count) {
		b.next = b.count = 0;
		for (unsigned i = 0; i < READ_BATCH; i++) {
			b.iov[i] = {b.bufs.get() + i * RECORD_MAX, RECORD_MAX};
			b.hdrs[i] = {};
			b.hdrs[i].msg_hdr.msg_iov = &b.iov[i];
			b.hdrs[i].msg_hdr.msg_iovlen = 1;
			b.hdrs[i].msg_hdr.msg_control = b.control[i];
			b.hdrs[i].msg_hdr.msg_controllen = sizeof b.control[i];
		}
		int n;
		do
			n = recvmmsg(fd_.get(), b.hdrs, READ_BATCH, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, nullptr);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? Read::Again : Read::Error;
		b.count = static_cast<unsigned>(n);
		for (unsigned i = 0; i < b.count; i++)
			b.fds[i] = received_fds(b.hdrs[i].msg_hdr);
	}
	unsigned i = b.next++;
	// An empty record is the end of the stream (as recvmsg's 0): past it
	// recvmmsg fills every slot with one.
	if (b.hdrs[i].msg_len == 0) {
		b.next = b.count;
		return Read::Closed;
	}
	return take(b.bufs.get() + i * RECORD_MAX, b.hdrs[i].msg_len, b.hdrs[i].msg_hdr.msg_flags, b.fds[i], msg, err);
}

// Judges one record as it came (n bytes, recvmsg's flags, its descriptors).
ImsgChannel::Read ImsgChannel::take(const uint8_t* buf, size_t n, int flags, std::vector<UniqueFd>& fds,
				    Imsg& msg, ImsgError* err)
{
	ImsgError e;
	if (flags & MSG_TRUNC)
		e = ImsgError::Oversized;
	else if ((flags & MSG_CTRUNC) || fds.size() > 1)
		e = ImsgError::BadFd;
	else if (mac_ && n < IMSG_HEADER_SIZE + IMSG_MAC_SIZE)
		e = ImsgError::Truncated;  // no room for a header and the MAC
	else {
		int fd = fds.empty() ? -1 : fds[0].get();
		size_t len = n - (mac_ ? IMSG_MAC_SIZE : 0);
		last_mac_.assign(reinterpret_cast<const char*>(buf) + len, n - len);
		e = imsg_decode(buf, len, fd, valid_, msg);
		if (e == ImsgError::None && fd >= 0)
			fds[0].release();
	}
	if (e != ImsgError::None) {
		refused_.record.assign(reinterpret_cast<const char*>(buf), std::min(n, RECORD_MAX));
		refused_.fd = fds.empty() ? UniqueFd() : std::move(fds[0]);
	}
	fds.clear();
	if (err)
		*err = e;
	return e == ImsgError::None ? Read::Message : Read::Error;
}

ImsgWriter& ImsgWriter::u32(uint32_t v)
{
	buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
	return *this;
}

ImsgWriter& ImsgWriter::u64(uint64_t v)
{
	buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
	return *this;
}

ImsgWriter& ImsgWriter::str(std::string_view s)
{
	u32(static_cast<uint32_t>(s.size()));
	buf_.append(s);
	return *this;
}

bool ImsgReader::take(void* p, size_t n)
{
	if (!ok_ || d_.size() < n)
		return ok_ = false;
	memcpy(p, d_.data(), n);
	d_.remove_prefix(n);
	return true;
}

bool ImsgReader::u32(uint32_t& v) { return take(&v, sizeof v); }
bool ImsgReader::u64(uint64_t& v) { return take(&v, sizeof v); }

bool ImsgReader::str(std::string& s)
{
	uint32_t n;
	if (!u32(n) || d_.size() < n)
		return ok_ = false;
	s.assign(d_.data(), n);
	d_.remove_prefix(n);
	return true;
}

}  // namespace laim
