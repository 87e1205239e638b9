// Unit tests of the parent's AUTH tables (parent/auth.cpp): the users and
// senders file parsers with their "FILE:LINE: what" errors, the crypt(3)
// check against hashes made here with crypt_gensalt_rn (yescrypt,
// sha512crypt, sha256crypt, bcrypt), and the answer's sender patterns;
// and the AuthMsg/AuthResultMsg payloads. Then whose a local TCP client
// is (parent/client_uid.cpp): clients connected as other users, on
// 127.0.0.1 and ::1, and ends that are gone. Run as root.
#include <arpa/inet.h>
#include <crypt.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <string>

#include "common/proto.h"
#include "common/fd.h"
#include "parent/auth.h"
#include "parent/client_uid.h"

// Last: check.h defines a "fail" macro that clashes with C++ headers.
#include <check.h>

using laim::AuthTable;
using laim::ConfigError;

namespace {

// A hash of password by the method of prefix ("$y$", "$6$", ...).
std::string make_hash(const char* prefix, const char* password)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	ck_assert_ptr_nonnull(crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting));
	struct crypt_data data = {};
	const char* h = crypt_rn(password, setting, &data, sizeof data);
	ck_assert_ptr_nonnull(h);
	return h;
}

std::string users_error(const std::string& text)
{
	try {
		AuthTable::parse_users(text, "users");
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

std::string senders_error(const std::string& users, const std::string& senders)
{
	try {
		AuthTable t = AuthTable::parse_users(users, "users");
		t.parse_senders(senders, "senders");
	} catch (const ConfigError& e) {
		return e.what();
	}
	return "(no error)";
}

// A listening socket on the loopback address of family (port 0), and its
// address.
laim::UniqueFd loopback_listener(int family, sockaddr_storage& addr)
{
	laim::UniqueFd l(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
	ck_assert(l);
	addr = {};
	socklen_t len;
	if (family == AF_INET) {
		auto& a = reinterpret_cast<sockaddr_in&>(addr);
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof a;
	} else {
		auto& a = reinterpret_cast<sockaddr_in6&>(addr);
		a.sin6_family = AF_INET6;
		a.sin6_addr = in6addr_loopback;
		len = sizeof a;
	}
	ck_assert_int_eq(bind(l.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
	ck_assert_int_eq(listen(l.get(), 4), 0);
	ck_assert_int_eq(getsockname(l.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
	return l;
}

// How the client's end is when tcp_client_uid() asks: open, reset (its
// socket gone), or closed (once the server's end answers its FIN, the
// kernel keeps it as an ownerless mini socket in FIN_WAIT2).
enum class ClientEnd { Open, Reset, Closed };

// What tcp_client_uid() says of the server's end of a connection that a
// child process made to the loopback address of family as uid.
std::optional<uid_t> client_uid_of(int family, uid_t uid, ClientEnd end = ClientEnd::Open)
{
	sockaddr_storage addr;
	laim::UniqueFd l = loopback_listener(family, addr);
	int ready[2], done[2];
	ck_assert(pipe(ready) == 0 && pipe(done) == 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char b = 0;
		int c = -1;
		close(done[1]);
		if (setuid(uid) == 0 && (c = socket(family, SOCK_STREAM, 0)) >= 0 &&
		    connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
			if (end == ClientEnd::Reset) {
				struct linger lg = {1, 0};
				setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			}
			if (end != ClientEnd::Open)
				close(c);
			(void)!write(ready[1], &b, 1);
			(void)!read(done[0], &b, 1);
		}
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	laim::UniqueFd conn(accept(l.get(), nullptr, nullptr));
	char b;
	ck_assert_int_eq(read(ready[0], &b, 1), 1);
	std::optional<uid_t> found = laim::tcp_client_uid(conn.get());
	// A closed end is still uid's while its FIN waits for the answer:
	// asked again until it is not, for a second at most.
	for (int i = 0; end == ClientEnd::Closed && found == uid && i < 100; i++) {
		usleep(10000);
		found = laim::tcp_client_uid(conn.get());
	}
	close(done[1]);
	close(ready[0]);
	waitpid(pid, nullptr, 0);
	return found;
}

}  // namespace

START_TEST(check_each_method)
{
	for (const char* prefix : {"$y$", "$6$", "$5$", "$2b$"}) {
		std::string text = "# submission users\n\nalice:" + make_hash(prefix, "right horse") + "\n";
		AuthTable t = AuthTable::parse_users(text, "users");
		ck_assert_msg(t.check("alice", "right horse"), "%s: the right password", prefix);
		ck_assert_msg(!t.check("alice", "right hors"), "%s: a wrong password", prefix);
		ck_assert_msg(!t.check("alice", ""), "%s: an empty password", prefix);
		ck_assert_msg(!t.check("bob", "right horse"), "%s: an unknown user with alice's password", prefix);
		ck_assert_msg(!t.check("Alice", "right horse"), "%s: names are case-sensitive", prefix);
	}
}
END_TEST

START_TEST(check_two_users)
{
	std::string text = "alice:" + make_hash("$y$", "a-pass") + "\nbob:" + make_hash("$6$", "b-pass") + "\n";
	AuthTable t = AuthTable::parse_users(text, "users");
	ck_assert_uint_eq(t.size(), 2);
	ck_assert(t.check("alice", "a-pass"));
	ck_assert(t.check("bob", "b-pass"));
	ck_assert(!t.check("alice", "b-pass"));
	ck_assert(!t.check("bob", "a-pass"));
	// A NUL in the password never reaches crypt: refused.
	ck_assert(!t.answer("bob", std::string("b-pass\0x", 8)).ok);
	t.wipe();
	ck_assert(!t.check("alice", "a-pass"));
}
END_TEST

// An unknown user costs a crypt too, against the costliest hash of the
// file: anna's sha512crypt (first by name) checks some 15 times faster
// than zoe's yescrypt, and the unknown user takes as long as zoe. CPU
// time, so that a busy machine does not blur it.
START_TEST(unknown_user_timing)
{
	AuthTable t = AuthTable::parse_users(
		"anna:" + make_hash("$6$", "a-pass") + "\nzoe:" + make_hash("$y$", "z-pass") + "\n", "users");
	auto time_of = [&t](const char* user) {
		std::clock_t t0 = std::clock();
		for (int i = 0; i < 5; i++)
			ck_assert(!t.check(user, "wrong"));
		return double(std::clock() - t0) / CLOCKS_PER_SEC;
	};
	double costliest = time_of("zoe"), unknown = time_of("nobody");
	ck_assert_msg(unknown > costliest / 2 && unknown < costliest * 4, "zoe %.4fs, an unknown user %.4fs",
		      costliest, unknown);
}
END_TEST

// Hashes of more than one method or cost, and a file without users, are
// warned about ("FILE: what"); one method and cost is not.
START_TEST(users_warnings)
{
	std::string y = make_hash("$y$", "x"), six = make_hash("$6$", "x");
	auto warnings = [](const std::string& text) {
		std::string all;
		AuthTable t = AuthTable::parse_users(text, "users");
		for (const std::string& w : t.warnings())
			all += w + "\n";
		return all;
	};
	std::string one = warnings("alice:" + y + "\nbob:" + make_hash("$y$", "y") + "\n");
	ck_assert_str_eq(one.c_str(), "");
	std::string mixed = warnings("alice:" + y + "\nbob:" + six + "\ncarol:" + y + "\n");
	ck_assert_str_eq(mixed.c_str(),
			 "users: hashes of 2 settings ($6$, $y$j9T$): a wrong password for one user answers faster "
			 "than for another or for an unknown user: make every hash with one method\n");
	// The same method at another cost.
	std::string w = warnings("alice:" + six + "\nbob:" + crypt("x", "$6$rounds=9999$saltsalt") + "\n");
	ck_assert_msg(w.find("users: hashes of 2 settings ($6$, $6$rounds=9999$)") == 0, "%s", w.c_str());
}
END_TEST

START_TEST(users_errors)
{
	std::string y = make_hash("$y$", "x");
	struct {
		std::string text, error;
	} rows[] = {
		{"alice\n", "users:1: expected user:hash"},
		{"# c\n\nalice:" + y + "\nalice:" + y + "\n", "users:4: user alice listed twice"},
		{"al ice:" + y + "\n", "users:1: bad user name (printable ASCII without spaces or ':')"},
		{":" + y + "\n", "users:1: bad user name"},
		{"alice:$1$abcdefgh$abcdefghijklmnopqrstuv\n", "users:1: user alice: not a yescrypt ($y$)"},
		{"alice:plaintext\n", "users:1: user alice: not a yescrypt"},
		{"alice:\n", "users:1: user alice: not a yescrypt"},
		{"alice:*\n", "users:1: user alice: not a yescrypt"},
		{"alice:$6$\n", "users:1: user alice: not a yescrypt"},
		{"alice:$6$saltsalt\n", "users:1: user alice: not a yescrypt"},
		{"alice:$y$j9T$saltsalt$\n", "users:1: user alice: not a yescrypt"},
		{"alice:" + y + " \n", "users:1: user alice: a space after the hash"},
		{"alice:" + y + "\t\n", "users:1: user alice: a space after the hash"},
		{"alice: " + y + "\n", "users:1: user alice: a space before the hash"},
		{"alice:" + y + "\r\n", "users:1: user alice: the hash ends with a carriage return (a file with Windows "
					"line endings?)"},
		{"# c\r\nalice:" + y + "\r\n", "users:2: user alice: the hash ends with a carriage return"},
		{"alice:" + y + ":19000:0:99999:7:::\n", "users:1: user alice: not a yescrypt"},
		{"alice:" + y + "\n\n  bob\n", "users:3: expected user:hash"},
	};
	for (const auto& r : rows) {
		std::string got = users_error(r.text);
		ck_assert_msg(got.compare(0, r.error.size(), r.error) == 0, "users file %s\ngot: %s\nexpected: %s...",
			      r.text.c_str(), got.c_str(), r.error.c_str());
	}
	ck_assert(users_error("") == "(no error)");
	ck_assert(users_error("# nobody yet\n") == "(no error)");
	// ... but a file without users is warned about.
	for (const char* text : {"", "# nobody yet\n\n"}) {
		AuthTable t = AuthTable::parse_users(text, "users");
		ck_assert_uint_eq(t.warnings().size(), 1);
		ck_assert_str_eq(t.warnings()[0].c_str(), "users: no users: nobody can log in on its listener");
	}
}
END_TEST

START_TEST(senders_errors)
{
	std::string users = "alice:" + make_hash("$6$", "x") + "\nbob:" + make_hash("$6$", "y") + "\n";
	struct {
		const char* text;
		const char* error;
	} rows[] = {
		{"alice alice@example.org\n", "senders:1: expected user: sender, sender, ..."},
		{"carol: carol@example.org\n", "senders:1: user carol is not in the users file"},
		{"# c\nalice: a@example.org\nalice: b@example.org\n", "senders:3: user alice listed twice"},
		{"alice:\n", "senders:1: user alice: bad sender \"\""},
		{"alice: a@example.org,\n", "senders:1: user alice: bad sender \"\""},
		{"alice: a@exa[m]ple.org\n", "senders:1: user alice: bad sender \"a@exa[m]ple.org\""},
		{"alice: a?@example.org\n", "senders:1: user alice: bad sender"},
		{"alice: a b@example.org\n", "senders:1: user alice: bad sender \"a b@example.org\""},
	};
	for (const auto& r : rows) {
		std::string got = senders_error(users, r.text);
		ck_assert_msg(got.compare(0, strlen(r.error), r.error) == 0, "senders file %s\ngot: %s\nexpected: %s...",
			      r.text, got.c_str(), r.error);
	}
	std::string many = "alice: ";
	for (int i = 0; i < 400; i++)
		many += "alice" + std::to_string(i) + "@example.org, ";
	many += "x@example.org\n";
	std::string e = senders_error(users, many);
	ck_assert_str_eq(e.c_str(), "senders:1: user alice: more than 8192 bytes of senders");
	e = senders_error(users, "alice: alice@example.org, alice+*@example.org\n\nbob: *\n");
	ck_assert_str_eq(e.c_str(), "(no error)");
}
END_TEST

// The answer: no senders without a senders file; with one, the user's
// patterns ("@domain" as "*@domain"), and none for a user it leaves out.
START_TEST(answer_senders)
{
	std::string users = "alice:" + make_hash("$5$", "a") + "\nbob:" + make_hash("$5$", "b") + "\n";
	AuthTable free = AuthTable::parse_users(users, "users");
	laim::AuthResultMsg r = free.answer("alice", "a");
	ck_assert(r.ok && !r.bound && r.senders.empty());
	ck_assert(!free.answer("alice", "b").ok);

	AuthTable bound = AuthTable::parse_users(users, "users");
	bound.parse_senders("alice: alice@example.org, @lists.example.org , alice+*@example.org\n", "senders");
	r = bound.answer("alice", "a");
	ck_assert(r.ok && r.bound);
	ck_assert_uint_eq(r.senders.size(), 3);
	ck_assert_str_eq(r.senders[0].c_str(), "alice@example.org");
	ck_assert_str_eq(r.senders[1].c_str(), "*@lists.example.org");
	ck_assert_str_eq(r.senders[2].c_str(), "alice+*@example.org");
	r = bound.answer("bob", "b");
	ck_assert(r.ok && r.bound && r.senders.empty());
	r = bound.answer("bob", "a");
	ck_assert(!r.ok && !r.bound && r.senders.empty());
}
END_TEST

START_TEST(auth_payloads)
{
	laim::AuthMsg a{2, "alice", std::string("pa\0ss", 5)}, a2;
	ck_assert(laim::decode(laim::encode(a), a2));
	ck_assert(a2.listener == 2 && a2.user == "alice" && a2.password == a.password);
	std::string enc = laim::encode(a);
	ck_assert(!laim::decode(enc.substr(0, enc.size() - 1), a2));
	ck_assert(!laim::decode(enc + "x", a2));

	laim::AuthResultMsg r{true, true, {"*@example.org", "alice@example.org"}}, r2;
	ck_assert(laim::decode(laim::encode(r), r2));
	ck_assert(r2.ok && r2.bound && r2.senders == r.senders);
	std::string renc = laim::encode(r);
	ck_assert(!laim::decode(renc.substr(0, renc.size() - 1), r2));
	// A forged count larger than the frame is refused, not reserved.
	laim::AuthResultMsg big{true, false, {}};
	std::string benc = laim::encode(big);
	benc[8] = '\xff';
	benc[9] = '\xff';
	ck_assert(!laim::decode(benc, r2));
	// ok and bound are booleans.
	std::string bad = renc;
	bad[0] = 2;
	ck_assert(!laim::decode(bad, r2));
}
END_TEST

START_TEST(client_uid_of_local_clients)
{
	ck_assert_uint_eq(getuid(), 0);
	std::optional<uid_t> u = client_uid_of(AF_INET, 65534);
	ck_assert_msg(u && *u == 65534, "127.0.0.1 as nobody: %d", u ? int(*u) : -1);
	u = client_uid_of(AF_INET6, 1);
	ck_assert_msg(u && *u == 1, "::1 as uid 1: %d", u ? int(*u) : -1);
	u = client_uid_of(AF_INET, 0);
	ck_assert_msg(u && *u == 0, "127.0.0.1 as root: %d", u ? int(*u) : -1);
}
END_TEST

// No uid for an end that is gone (reset) or closed, nor for what is no
// connection. The kernel names no owner for a closed end: uid 0, which
// must not count the client as root.
START_TEST(client_uid_unknown)
{
	ck_assert(!client_uid_of(AF_INET, 65534, ClientEnd::Reset));
	std::optional<uid_t> u = client_uid_of(AF_INET, 65534, ClientEnd::Closed);
	ck_assert_msg(!u, "a closed 127.0.0.1 end counts as uid %d", u ? int(*u) : -1);
	u = client_uid_of(AF_INET6, 65534, ClientEnd::Closed);
	ck_assert_msg(!u, "a closed ::1 end counts as uid %d", u ? int(*u) : -1);
	sockaddr_storage addr;
	laim::UniqueFd l = loopback_listener(AF_INET, addr);
	ck_assert(!laim::tcp_client_uid(l.get()));
	int pair[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
	ck_assert(!laim::tcp_client_uid(pair[0]));
	close(pair[0]);
	close(pair[1]);

	laim::ClientUidMsg m{true, 65534}, m2;
	ck_assert(laim::decode(laim::encode(m), m2) && m2.known && m2.uid == 65534);
	std::string enc = laim::encode(m);
	enc[0] = 2;
	ck_assert(!laim::decode(enc, m2));
	ck_assert(!laim::decode(laim::encode(m) + "x", m2));
}
END_TEST

int main()
{
	Suite* s = suite_create("auth");
	TCase* tc = tcase_create("auth");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, check_each_method);
	tcase_add_test(tc, check_two_users);
	tcase_add_test(tc, unknown_user_timing);
	tcase_add_test(tc, users_warnings);
	tcase_add_test(tc, users_errors);
	tcase_add_test(tc, senders_errors);
	tcase_add_test(tc, answer_senders);
	tcase_add_test(tc, auth_payloads);
	tcase_add_test(tc, client_uid_of_local_clients);
	tcase_add_test(tc, client_uid_unknown);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
