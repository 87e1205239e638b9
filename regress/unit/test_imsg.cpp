// imsg codec: strict framing, payload reader, fd passing over a real
// SOCK_SEQPACKET socketpair.
#include <check.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/imsg.h"
#include "common/proto.h"

using namespace laim;

namespace {

ImsgTypeInfo accept_1_nofd_2_fd(uint32_t t)
{
	if (t == 1)
		return {true, false};
	if (t == 2)
		return {true, true};
	return {};
}

std::string frame(uint32_t type, uint32_t len, std::string_view payload)
{
	std::string out;
	imsg_encode(type, 7, 99, payload, out);
	memcpy(&out[4], &len, sizeof len);  // override len to forge frames
	return out;
}

ImsgError decode(const std::string& rec, int fd = -1)
{
	Imsg m;
	return imsg_decode(reinterpret_cast<const uint8_t*>(rec.data()), rec.size(), fd, accept_1_nofd_2_fd, m);
}

std::pair<ImsgChannel, ImsgChannel> pair()
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	return {ImsgChannel(UniqueFd(sv[0]), accept_1_nofd_2_fd), ImsgChannel(UniqueFd(sv[1]), accept_1_nofd_2_fd)};
}

}  // namespace

START_TEST(decode_valid)
{
	std::string rec;
	imsg_encode(1, 42, 1234, "hello", rec);
	ck_assert_uint_eq(rec.size(), IMSG_HEADER_SIZE + 5);
	Imsg m;
	ck_assert(imsg_decode(reinterpret_cast<const uint8_t*>(rec.data()), rec.size(), -1, accept_1_nofd_2_fd, m) ==
		  ImsgError::None);
	ck_assert_uint_eq(m.type, 1);
	ck_assert_uint_eq(m.peerid, 42);
	ck_assert_uint_eq(m.pid, 1234);
	ck_assert_str_eq(m.data.c_str(), "hello");
}
END_TEST

START_TEST(decode_truncated)
{
	std::string rec;
	imsg_encode(1, 0, 0, "hello", rec);
	// shorter than a header
	ck_assert(decode(rec.substr(0, 10)) == ImsgError::Truncated);
	ck_assert(decode("") == ImsgError::Truncated);
	// header promises more than the record holds
	ck_assert(decode(rec.substr(0, rec.size() - 1)) == ImsgError::Truncated);
	// len smaller than a header
	ck_assert(decode(frame(1, 8, "")) == ImsgError::Truncated);
}
END_TEST

START_TEST(decode_trailing)
{
	std::string rec;
	imsg_encode(1, 0, 0, "hello", rec);
	ck_assert(decode(rec + "x") == ImsgError::Trailing);
	ck_assert(decode(frame(1, IMSG_HEADER_SIZE, "abc")) == ImsgError::Trailing);
}
END_TEST

START_TEST(decode_oversized)
{
	std::string big(IMSG_MAX_PAYLOAD + 1, 'a');
	std::string rec;
	imsg_encode(1, 0, 0, big, rec);
	ck_assert(decode(rec) == ImsgError::Oversized);
	ck_assert(decode(frame(1, 0xffffffffu, "")) == ImsgError::Oversized);
	std::string max(IMSG_MAX_PAYLOAD, 'a');
	imsg_encode(1, 0, 0, max, rec);
	ck_assert(decode(rec) == ImsgError::None);
}
END_TEST

START_TEST(decode_type_and_fd_rules)
{
	std::string rec;
	imsg_encode(3, 0, 0, "", rec);
	ck_assert(decode(rec) == ImsgError::UnknownType);
	imsg_encode(2, 0, 0, "", rec);
	ck_assert(decode(rec) == ImsgError::BadFd);  // type 2 needs an fd
	int fd = open("/dev/null", O_RDONLY);
	imsg_encode(1, 0, 0, "", rec);
	ck_assert(decode(rec, fd) == ImsgError::BadFd);  // type 1 must not carry one
	close(fd);
}
END_TEST

START_TEST(reader_strict)
{
	ImsgWriter w;
	w.u32(5).str("abc").u64(1ULL << 40);
	uint32_t a;
	uint64_t c;
	std::string b;
	ImsgReader r(w.data());
	ck_assert(r.u32(a) && r.str(b) && r.u64(c) && r.done());
	ck_assert_uint_eq(a, 5);
	ck_assert_str_eq(b.c_str(), "abc");
	ck_assert(c == (1ULL << 40));

	std::string with_junk = w.data() + "z";
	ImsgReader trailing(with_junk);
	ck_assert(trailing.u32(a) && trailing.str(b) && trailing.u64(c));
	ck_assert(!trailing.done());

	ImsgReader truncated(std::string_view(w.data()).substr(0, 9));
	ck_assert(truncated.u32(a));
	ck_assert(!truncated.str(b));
	ck_assert(!truncated.ok());

	// a string length beyond the payload
	ImsgWriter liar;
	liar.u32(1000);
	ImsgReader r2(liar.data());
	ck_assert(!r2.str(b));
}
END_TEST

START_TEST(channel_roundtrip_with_fd)
{
	auto [a, b] = pair();
	int fd = open("/dev/null", O_RDONLY);
	struct stat want;
	fstat(fd, &want);
	a.compose(1, 11, "first");
	a.compose(2, 12, "second", fd);
	ck_assert(a.flush());
	ck_assert(!a.pending());

	Imsg m;
	ImsgError err;
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Message);
	ck_assert_uint_eq(m.type, 1);
	ck_assert_uint_eq(m.peerid, 11);
	ck_assert_str_eq(m.data.c_str(), "first");
	ck_assert(!m.fd);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Message);
	ck_assert_uint_eq(m.type, 2);
	ck_assert(m.fd);
	struct stat got;
	fstat(m.fd.get(), &got);
	ck_assert(got.st_ino == want.st_ino && got.st_dev == want.st_dev);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Again);
}
END_TEST

// More frames than one sendmmsg or recvmmsg takes, every third with a
// descriptor: they arrive whole, in order, each with its own descriptor,
// and the end of the stream is Closed, not a bad record.
START_TEST(channel_batches_keep_order_and_fds)
{
	auto [a, b] = pair();
	b.read_in_batches();
	constexpr int N = 40;
	struct stat want[N];
	for (int i = 0; i < N; i++) {
		int fd = i % 3 ? -1 : open("/dev/null", O_RDONLY);
		if (fd >= 0)
			fstat(fd, &want[i]);
		a.compose(fd < 0 ? 1 : 2, static_cast<uint32_t>(i), "frame " + std::to_string(i), fd);
	}
	ck_assert(a.flush());
	ck_assert(!a.pending());
	Imsg m;
	ImsgError err;
	for (int i = 0; i < N; i++) {
		ck_assert(b.read(m, &err) == ImsgChannel::Read::Message);
		ck_assert_uint_eq(m.peerid, static_cast<uint32_t>(i));
		std::string want_data = "frame " + std::to_string(i);
		ck_assert_str_eq(m.data.c_str(), want_data.c_str());
		ck_assert(static_cast<bool>(m.fd) == (i % 3 == 0));
		if (m.fd) {
			struct stat got;
			fstat(m.fd.get(), &got);
			ck_assert(got.st_ino == want[i].st_ino && got.st_dev == want[i].st_dev);
		}
	}
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Again);
	a.compose(1, 0, "last");
	ck_assert(a.flush());
	{ ImsgChannel gone = std::move(a); }  // closes a's end after its last frame
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Message);
	ck_assert_str_eq(m.data.c_str(), "last");
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Closed);
}
END_TEST

// A bad record among good ones in one batch is refused on its own: those
// before it are read, and it is what take_refused() returns.
START_TEST(channel_batch_refuses_bad_record)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	ImsgChannel b(UniqueFd(sv[1]), accept_1_nofd_2_fd);
	b.read_in_batches();
	std::string good, bad = frame(1, 8, "x");
	imsg_encode(1, 5, 0, "good", good);
	ck_assert(send(sv[0], good.data(), good.size(), 0) > 0);
	ck_assert(send(sv[0], bad.data(), bad.size(), 0) > 0);
	Imsg m;
	ImsgError err;
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Message);
	ck_assert_str_eq(m.data.c_str(), "good");
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Error);
	ck_assert(err == ImsgError::Truncated);
	ck_assert(b.take_refused().record == bad);
	close(sv[0]);
}
END_TEST

START_TEST(channel_rejects_forged_records)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	ImsgChannel b(UniqueFd(sv[1]), accept_1_nofd_2_fd);
	Imsg m;
	ImsgError err;
	std::string rec;
	imsg_encode(1, 0, 0, "hello", rec);
	std::string trailing = rec + "junk";
	ck_assert(send(sv[0], trailing.data(), trailing.size(), 0) > 0);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Error);
	ck_assert(err == ImsgError::Trailing);
	ck_assert(send(sv[0], rec.data(), 5, 0) == 5);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Error);
	ck_assert(err == ImsgError::Truncated);
	std::string huge(IMSG_HEADER_SIZE + IMSG_MAX_PAYLOAD + 100, 'x');
	imsg_encode(1, 0, 0, std::string(IMSG_MAX_PAYLOAD + 100, 'x'), huge);
	ck_assert(send(sv[0], huge.data(), huge.size(), 0) > 0);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Error);
	ck_assert(err == ImsgError::Oversized);
	close(sv[0]);
	ck_assert(b.read(m, &err) == ImsgChannel::Read::Closed);
}
END_TEST

START_TEST(protocol_validators_separate_peers)
{
	// The handler never takes a parent's message from the smtp side.
	ck_assert(!imsg_valid_smtp_to_handler(IMSG_P_HANDLER_CONF).known);
	ck_assert(imsg_valid_parent_to_handler(IMSG_P_HANDLER_CONF).known);
	ck_assert(!imsg_valid_handler_to_smtp(IMSG_P_HANDLER_CHANNEL).known);
	ck_assert(imsg_valid_handler_to_smtp(IMSG_H_DATA_OK).with_fd);
	ck_assert(!imsg_valid_smtp_to_handler(IMSG_S_COMMIT).with_fd);
	ck_assert(!imsg_valid_child_to_parent(IMSG_S_MAIL).known);
	ck_assert(imsg_valid_child_to_parent(IMSG_C_PEER_ERROR).known);
	ck_assert(!imsg_valid_smtp_to_handler(IMSG_C_PEER_ERROR).known);
}
END_TEST

int main()
{
	Suite* s = suite_create("imsg");
	TCase* tc = tcase_create("codec");
	tcase_add_test(tc, decode_valid);
	tcase_add_test(tc, decode_truncated);
	tcase_add_test(tc, decode_trailing);
	tcase_add_test(tc, decode_oversized);
	tcase_add_test(tc, decode_type_and_fd_rules);
	tcase_add_test(tc, reader_strict);
	tcase_add_test(tc, channel_roundtrip_with_fd);
	tcase_add_test(tc, channel_batches_keep_order_and_fds);
	tcase_add_test(tc, channel_batch_refuses_bad_record);
	tcase_add_test(tc, channel_rejects_forged_records);
	tcase_add_test(tc, protocol_validators_separate_peers);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
