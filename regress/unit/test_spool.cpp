// Unit tests of the spool: the header format, the commit steps, the
// strict loader, and what a restart finds.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

#include "handler/spool.h"

#include <check.h>
#undef fail  // Check's deprecated fail() macro would hide Spool::fail

using namespace laim;

// getrandom(2) for this program: the kernel's, unless a test sets the
// bytes that new_id() draws (then the rest of the pool is zeros).
static std::string g_random_prefix;

extern "C" ssize_t getrandom(void* buf, size_t len, unsigned int flags)
{
	if (g_random_prefix.empty())
		return syscall(SYS_getrandom, buf, len, flags);
	memset(buf, 0, len);
	memcpy(buf, g_random_prefix.data(), std::min(len, g_random_prefix.size()));
	return static_cast<ssize_t>(len);
}

namespace {

std::string g_tmp;    // per-test temporary directory
std::string g_spool;  // g_tmp/spool, made as the parent makes it

void setup()
{
	const char* base = getenv("TMPDIR");
	std::string templ = std::string(base && *base ? base : "/tmp") + "/laim-spool-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(templ.data()));
	g_tmp = templ;
	g_spool = g_tmp + "/spool";
	for (const char* sub : {"", "/incoming", "/queue", "/failed", "/free", "/offline"})
		ck_assert_int_eq(mkdir((g_spool + sub).c_str(), 0700), 0);
}

void teardown()
{
	std::error_code ec;
	std::filesystem::remove_all(g_tmp, ec);
}

std::string slurp(const std::string& path)
{
	std::ifstream in(path, std::ios::binary);
	ck_assert_msg(in.good(), "cannot read %s", path.c_str());
	std::ostringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

void spit(const std::string& path, std::string_view data)
{
	std::ofstream out(path, std::ios::binary | std::ios::trunc);
	out.write(data.data(), (std::streamsize)data.size());
	ck_assert_msg(out.good(), "cannot write %s", path.c_str());
}

bool exists(const std::string& path)
{
	struct stat st;
	return lstat(path.c_str(), &st) == 0;
}

size_t count_entries(const std::string& dir)
{
	size_t n = 0;
	for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir))
		n++;
	return n;
}

Envelope sample_env(const std::string& id)
{
	Envelope env;
	env.id = id;
	env.sender = "alice@example.org";
	env.recipients = {"root@host.lan", "\"Bob Smith\"@Example.ORG"};
	env.uid = 1000;
	env.client = "127.0.0.1";
	env.helo = "client.example.org";
	env.auth_user = "alice";
	env.arrival = 1700000000;
	return env;
}

void write_body(int fd, std::string_view body)
{
	ck_assert_int_eq(write(fd, body.data(), body.size()), (ssize_t)body.size());
}

// How far a commit got before it was cut off.
enum class Until { Sealed, Journaled, Finished };

// The commit's steps, as the handler process takes them before 250 for a
// small message (the file in the journal, through memory), a medium one
// (the file copied into the journal) or a large one (its own syncs), or
// a medium one alone, as in a group whose medium files are too many for
// the journal.
void commit(Spool& spool, const Envelope& env, std::string_view body, Until until = Until::Finished,
	    bool alone = false)
{
	Spool::Created created;
	UniqueFd fd = spool.create(env, &created);
	write_body(fd.get(), body);
	std::string content;
	size_t n = created.header_len + body.size();
	bool small = n <= Journal::INLINE_MAX, journaled = small || (!alone && n <= Journal::RECORD_MAX);
	if (small || !journaled)
		spool.seal(env.id, fd.get(), created, body.size(), small ? &content : nullptr);
	else
		spool.seal_in_journal(env.id, fd.get(), created, body.size());
	if (until == Until::Sealed)
		return;
	if (journaled) {
		if (small)
			spool.journal()->add(Journal::Commit, env.id, content);
		spool.journal()->write();
		spool.journal()->sync();
	} else {
		spool.sync_file(fd.get());
		spool.sync_queue_dir();
	}
	if (until == Until::Finished)
		spool.mark_committed(fd.get());
}

// The journal as a stop of the system leaves it: written in another boot.
void from_other_boot()
{
	std::string path = g_spool + "/journal";
	std::string data = slurp(path);
	ck_assert_uint_eq(data.size(), Journal::SIZE);
	ck_assert_int_ne(data[16], '\0');  // this boot's id is there
	data.replace(16, Journal::BOOT_ID_MAX, std::string(Journal::BOOT_ID_MAX, '\0').replace(0, 5, "other"));
	spit(path, data);
}

// The header's first lines as create() writes them, before the commit.
std::string header_start(const std::string& id)
{
	return "LAIM 1\nsum --------\nid " + id + "\n";
}

mode_t mode_of(const std::string& path)
{
	struct stat st;
	ck_assert_int_eq(stat(path.c_str(), &st), 0);
	return st.st_mode & 0777;
}

void check_same_envelope(const Envelope& got, const Envelope& want)
{
	ck_assert_str_eq(got.id.c_str(), want.id.c_str());
	ck_assert_str_eq(got.sender.c_str(), want.sender.c_str());
	ck_assert_uint_eq(got.recipients.size(), want.recipients.size());
	for (size_t i = 0; i < want.recipients.size(); i++)
		ck_assert_str_eq(got.recipients[i].c_str(), want.recipients[i].c_str());
	ck_assert(got.uid.has_value() == want.uid.has_value());
	if (want.uid)
		ck_assert_uint_eq(*got.uid, *want.uid);
	ck_assert_str_eq(got.client.c_str(), want.client.c_str());
	ck_assert_str_eq(got.helo.c_str(), want.helo.c_str());
	ck_assert_int_eq(got.arrival, want.arrival);
	ck_assert_str_eq(got.instance.c_str(), want.instance.c_str());
	ck_assert_str_eq(got.auth_user.c_str(), want.auth_user.c_str());
	ck_assert_str_eq(got.offline.c_str(), want.offline.c_str());
}

// what() of the SpoolError that load(id) throws; fails the test when it
// loads or throws anything else.
std::string load_error(const Spool& spool, const std::string& id)
{
	try {
		(void)spool.load(id);
	} catch (const SpoolError& e) {
		return e.what();
	}
	ck_abort_msg("load(%s) succeeded", id.c_str());
	return "";
}

}  // namespace

START_TEST(test_missing_dir)
{
	std::string nodir = g_tmp + "/nospool";
	try {
		Spool spool(nodir);
		ck_abort_msg("Spool on a missing directory succeeded");
	} catch (const std::system_error& e) {
		ck_assert_ptr_nonnull(strstr(e.what(), "nospool/queue"));
	}
}
END_TEST

START_TEST(test_new_id)
{
	Spool spool(g_spool);
	std::set<std::string> seen;
	for (int i = 0; i < 200; i++) {
		std::string id = spool.new_id();
		ck_assert_uint_eq(id.size(), 10);
		ck_assert_msg(id.find_first_not_of("0123456789ABCDEF") == std::string::npos, "bad id %s",
			      id.c_str());
		seen.insert(id);
	}
	ck_assert_uint_eq(seen.size(), 200);
}
END_TEST

// An id still in failed/, there at start or put there since, is drawn
// again: a new message must not share a failed one's id.
START_TEST(test_new_id_skips_failed)
{
	g_random_prefix = std::string("\x11\x22\x33\x44\x55\xaa\xbb\xcc\xdd\xee", 10);
	spit(g_spool + "/failed/1122334455", "x");
	{
		Spool spool(g_spool);
		std::string id = spool.new_id();
		ck_assert_msg(id == "AABBCCDDEE", "with failed/1122334455 there at start, new_id() gave %s", id.c_str());
	}
	ck_assert_int_eq(unlink((g_spool + "/failed/1122334455").c_str()), 0);
	Spool spool(g_spool);
	spool.fail("1122334455", "given up");
	std::string id = spool.new_id();
	ck_assert_msg(id == "AABBCCDDEE", "after fail(1122334455), new_id() gave %s", id.c_str());
	g_random_prefix.clear();
}
END_TEST

// The header is written byte for byte as spool.h documents, the fd is
// left after it, and the null sender is "sender " with an empty value.
START_TEST(test_header_format)
{
	Spool spool(g_spool);
	Envelope env;
	env.id = spool.new_id();
	env.sender = "";
	env.recipients = {"root"};
	env.client = "local";
	env.helo = "host.lan";
	env.arrival = 1700000001;
	const std::string want = header_start(env.id) +
				 "arrival 1700000001\nsender \nrcpt root\nclient local\nhelo host.lan\n\n";

	UniqueFd fd = spool.create(env);
	ck_assert_int_eq(lseek(fd.get(), 0, SEEK_CUR), (off_t)want.size());
	std::string queued = g_spool + "/queue/" + env.id;
	ck_assert(slurp(queued) == want);
	ck_assert_int_eq(mode_of(queued), 0700);  // pending

	// With a uid, its line sits between the recipients and client.
	Envelope env2 = env;
	env2.id = spool.new_id();
	env2.uid = 0;
	UniqueFd fd2 = spool.create(env2);
	const std::string want2 = header_start(env2.id) +
				  "arrival 1700000001\nsender \nrcpt root\nuid 0\nclient local\nhelo host.lan\n\n";
	ck_assert(slurp(g_spool + "/queue/" + env2.id) == want2);

	// A notice's instance comes last.
	Envelope env3 = env;
	env3.id = spool.new_id();
	env3.instance = "admin";
	UniqueFd fd3 = spool.create(env3);
	ck_assert(slurp(g_spool + "/queue/" + env3.id) ==
		  header_start(env3.id) +
			  "arrival 1700000001\nsender \nrcpt root\nclient local\nhelo host.lan\ninstance admin\n\n");

	// An authenticated user comes after helo.
	Envelope env4 = env;
	env4.id = spool.new_id();
	env4.auth_user = "alice@example.org";
	UniqueFd fd4 = spool.create(env4);
	ck_assert(slurp(g_spool + "/queue/" + env4.id) ==
		  header_start(env4.id) +
			  "arrival 1700000001\nsender \nrcpt root\nclient local\nhelo host.lan\nauth alice@example.org\n\n");
	env4.auth_user = "alice\nrcpt evil";
	env4.id = spool.new_id();
	try {
		(void)spool.create(env4);
		ck_abort_msg("an auth user with LF was written");
	} catch (const std::invalid_argument&) {
	}

	// create never reuses an existing queue file.
	try {
		(void)spool.create(env);
		ck_abort_msg("create over an existing queue file succeeded");
	} catch (const std::system_error& e) {
		ck_assert_int_eq(e.code().value(), EEXIST);
		ck_assert_ptr_nonnull(strstr(e.what(), queued.c_str()));
	}
}
END_TEST

// Message bodies come back byte for byte, whatever they hold: blank
// lines, a forged spool header, CR, NUL, nothing at all.
START_TEST(test_roundtrip)
{
	const std::string bodies[] = {
		"Subject: hello\n\nbody\n",
		"\n\n",
		"a\n\n\nb\n\n",
		"LAIM 1\nid X\n\nrcpt evil@example.org\n",
		std::string("bin\r\n\0\xff\r\n.\r\n", 10),
		"",
	};
	Spool spool(g_spool);
	for (const auto& body : bodies) {
		Envelope env = sample_env(spool.new_id());
		commit(spool, env, body);
		ck_assert_int_eq(mode_of(g_spool + "/queue/" + env.id), 0600);
		SpoolMessage msg = spool.load(env.id);
		check_same_envelope(msg.envelope, env);
		ck_assert_uint_eq(msg.body().size(), body.size());
		ck_assert(msg.body() == body);
	}
	// store(): the same commit in one call, from parts; a notice keeps
	// its instance, an offline import the name of its file.
	Envelope env = sample_env(spool.new_id());
	env.instance = "admin";
	ck_assert_uint_eq(spool.store(env, {"Subject: a\r\n", "\r\nbody\r\n"}), 20);
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + env.id), 0600);
	SpoolMessage msg = spool.load(env.id);
	check_same_envelope(msg.envelope, env);
	ck_assert(msg.body() == "Subject: a\r\n\r\nbody\r\n");
	Envelope imported = sample_env(spool.new_id());
	imported.offline = "1700000001.4242.0badf00d";
	spool.store(imported, {"Subject: b\r\n\r\n"});
	ck_assert(slurp(g_spool + "/queue/" + imported.id).find("\noffline 1700000001.4242.0badf00d\n\n") !=
		  std::string::npos);
	check_same_envelope(spool.load(imported.id).envelope, imported);
}
END_TEST

// load_envelope() reads the header alone, in growing steps: one longer
// than its first read, before a large message, in queue/ and in failed/,
// gives the envelope and the size that load() gives; a header without
// its blank line is refused as load() refuses it.
START_TEST(test_load_envelope)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	for (int i = 0; i < 400; i++)
		env.recipients.push_back("recipient" + std::to_string(i) + "@example.org");
	const std::string body = "Subject: big\n\n" + std::string(1 << 20, 'x');
	commit(spool, env, body);
	for (const char* sub : {"queue", "failed"}) {
		uint64_t size = 0;
		check_same_envelope(spool.load_envelope(env.id, sub, &size), env);
		ck_assert_uint_eq(size, body.size());
		if (!strcmp(sub, "queue"))
			spool.fail(env.id, "given up");
	}
	const std::string id = "ABCDEF0005";
	spit(g_spool + "/queue/" + id, "LAIM 1\nid " + id + "\narrival 5\nsender a@b\n" + std::string(20000, 'r'));
	uint64_t size = 0;
	try {
		spool.load_envelope(id, "queue", &size);
		ck_abort_msg("a header without its blank line loaded");
	} catch (const SpoolError& e) {
		ck_assert_msg(strstr(e.what(), "no blank line") != nullptr, "%s", e.what());
	}
}
END_TEST

// Reading a spool file (the seal, a delivery, the load at start) leaves
// its access time alone: on a relatime mount each first read after a
// change would write the inode.
START_TEST(test_read_keeps_atime)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	commit(spool, env, "read me\n");
	std::string path = g_spool + "/queue/" + env.id;
	struct timespec times[2] = {{1000, 0}, {0, UTIME_OMIT}};  // atime long before mtime
	ck_assert_int_eq(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
	ck_assert(spool.load(env.id).body() == "read me\n");
	struct stat st;
	ck_assert_int_eq(stat(path.c_str(), &st), 0);
	ck_assert_int_eq(st.st_atim.tv_sec, 1000);

	// The seal reads each new message, small (into its journal record)
	// and large (its sum), through create()'s descriptor.
	for (size_t size : {(size_t)8, (size_t)Journal::INLINE_MAX}) {
		Envelope e = sample_env(spool.new_id());
		Spool::Created created;
		UniqueFd fd = spool.create(e, &created);
		std::string body(size, 'x'), content;
		write_body(fd.get(), body);
		std::string p = g_spool + "/queue/" + e.id;
		ck_assert_int_eq(utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
		bool small = created.header_len + size <= Journal::INLINE_MAX;
		spool.seal(e.id, fd.get(), created, size, small ? &content : nullptr);
		ck_assert_int_eq(stat(p.c_str(), &st), 0);
		ck_assert_int_eq(st.st_atim.tv_sec, 1000);
	}
}
END_TEST

// The resident kB of this process's mappings of path (/proc/self/smaps).
long mapped_kb(const std::string& path)
{
	std::ifstream smaps("/proc/self/smaps");
	std::string line;
	bool in = false;
	long kb = 0;
	while (std::getline(smaps, line)) {
		std::string first = line.substr(0, line.find(' '));
		if (first.find_first_not_of("0123456789abcdef-") == std::string::npos)  // a mapping's first line
			in = line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0;
		else if (in && first == "Rss:")
			kb += std::atol(line.c_str() + 4);
	}
	return kb;
}

// A large message is mapped, its headers read in front of the mapping:
// reading them maps none of the file's pages (the kernel would map 64
// KiB or more around the first one touched), and the message reads the
// same across the seam.
START_TEST(test_mapped_message_headers)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	std::string body = "Subject: mapped\r\n\r\n";
	for (size_t i = 0; body.size() < 1024 * 1024; i++)
		body += std::to_string(i) + (i % 13 ? " " : "\r\n");
	commit(spool, env, body);
	std::string path = g_spool + "/queue/" + env.id;
	SpoolMessage msg = spool.load(env.id);
	ck_assert_int_ge(msg.file(), 0);  // mapped, not read
	ck_assert(msg.body().substr(0, 20) == "Subject: mapped\r\n\r\n0");
	ck_assert_int_eq(mapped_kb(path), 0);
	ck_assert(msg.body() == body);
	ck_assert_int_gt(mapped_kb(path), 0);
}
END_TEST

START_TEST(test_message_move)
{
	Spool spool(g_spool);
	Envelope a = sample_env(spool.new_id()), b = sample_env(spool.new_id());
	commit(spool, a, "first body\n");
	commit(spool, b, "second body\n");

	SpoolMessage m1 = spool.load(a.id);
	SpoolMessage m2(std::move(m1));
	ck_assert(m1.body().empty());
	ck_assert(m2.body() == "first body\n");
	ck_assert_str_eq(m2.envelope.id.c_str(), a.id.c_str());

	SpoolMessage m3 = spool.load(b.id);
	m3 = std::move(m2);  // unmaps b, takes a
	ck_assert(m3.body() == "first body\n");
	ck_assert(m2.body().empty());
	m3 = spool.load(b.id);
	ck_assert(m3.body() == "second body\n");
}
END_TEST

// create never replaces a committed message, even for a reused id, nor
// when it takes a recycled file.
START_TEST(test_create_noreplace)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	commit(spool, env, "original\n");
	Envelope other = sample_env(spool.new_id());
	commit(spool, other, "recycled\n");
	spool.remove(other.id);
	spool.checkpoint();  // other's file in free/ is reusable

	try {
		(void)spool.create(env);
		ck_abort_msg("create replaced an existing queue file");
	} catch (const std::system_error& e) {
		ck_assert_int_eq(e.code().value(), EEXIST);
		ck_assert_ptr_nonnull(strstr(e.what(), env.id.c_str()));
	}
	ck_assert(spool.load(env.id).body() == "original\n");
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + env.id), 0600);
}
END_TEST

START_TEST(test_sync_errors)
{
	Spool spool(g_spool);
	try {
		spool.sync_file(-1);
		ck_abort_msg("sync_file(-1) succeeded");
	} catch (const std::system_error& e) {
		ck_assert_int_eq(e.code().value(), EBADF);
	}
	spool.sync_queue_dir();  // a real directory fd: no error
}
END_TEST

START_TEST(test_discard)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	{
		UniqueFd fd = spool.create(env);
		write_body(fd.get(), "partial");
	}
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + env.id), 0700);
	spool.discard(env.id);
	ck_assert(!exists(g_spool + "/queue/" + env.id));
	spool.discard(env.id);  // already gone: no error
	ck_assert_uint_eq(spool.list_queue().size(), 0);
}
END_TEST

// incoming/ holds what an earlier laim was receiving when it stopped:
// removed at start, queue/ untouched.
START_TEST(test_clean_incoming)
{
	Spool spool(g_spool);
	Envelope kept = sample_env(spool.new_id());
	commit(spool, kept, "kept\n");
	spit(g_spool + "/incoming/" + spool.new_id(), header_start("0123456789") + "arrival 1\n");
	spit(g_spool + "/incoming/stray", "junk");
	ck_assert_uint_eq(count_entries(g_spool + "/incoming"), 2);

	ck_assert_uint_eq(spool.clean_incoming(), 2);
	ck_assert_uint_eq(count_entries(g_spool + "/incoming"), 0);
	ck_assert_uint_eq(spool.clean_incoming(), 0);
	auto ids = spool.list_queue();
	ck_assert_uint_eq(ids.size(), 1);
	ck_assert_str_eq(ids[0].c_str(), kept.id.c_str());
}
END_TEST

// Oldest mtime first, ties by id; foreign entries are skipped.
START_TEST(test_list_queue_order)
{
	Spool spool(g_spool);
	const struct {
		std::string id;
		time_t mtime;
	} files[] = {
		{"C000000000", 2000}, {"A000000000", 3000}, {"B000000000", 1000}, {"0000000001", 3000},
	};
	for (const auto& f : files) {
		commit(spool, sample_env(f.id), "x\n");
		struct timespec ts[2] = {{f.mtime, 0}, {f.mtime, 0}};
		ck_assert_int_eq(utimensat(AT_FDCWD, (g_spool + "/queue/" + f.id).c_str(), ts, 0), 0);
	}
	std::string q = g_spool + "/queue/";
	spit(q + "notanid", "x");
	spit(q + "0123456789AB", "x");
	spit(q + "ABCDEF012", "x");
	ck_assert_int_eq(mkdir((q + "ABCDEF0123").c_str(), 0700), 0);
	ck_assert_int_eq(symlink((q + "A000000000").c_str(), (q + "ABCDEF0124").c_str()), 0);

	auto ids = spool.list_queue();
	const char* want[] = {"B000000000", "C000000000", "0000000001", "A000000000"};
	ck_assert_uint_eq(ids.size(), 4);
	for (size_t i = 0; i < 4; i++)
		ck_assert_str_eq(ids[i].c_str(), want[i]);
	// A second listing sees the same (the directory is read from its start).
	ck_assert(spool.list_queue() == ids);
}
END_TEST

START_TEST(test_load_errors)
{
	Spool spool(g_spool);
	const std::string id = "ABCDEF0000";
	const std::string good_tail = "arrival 5\nsender a@b\nrcpt c@d\nclient local\nhelo h\n";
	const struct {
		std::string content;
		const char* why;
	} cases[] = {
		{"LAIM 1\nid " + id + "\narriv", "truncated"},
		{"LAIM 1\nid " + id + "\n" + good_tail, "no blank line"},
		{"LAIM 2\nid " + id + "\n" + good_tail + "\nbody", "bad magic"},
		{"id " + id + "\nLAIM 1\n" + good_tail + "\nbody", "bad magic"},
		{"\nLAIM 1\nid " + id + "\n" + good_tail + "\nbody", "bad magic"},
		{"LAIM 1\nid " + id + "\ncolor blue\n" + good_tail + "\nbody", "unknown key \"color\""},
		{"LAIM 1\nid ABCDEF0001\n" + good_tail + "\nbody", "does not match"},
		{"LAIM 1\nid " + id + "\nsender x@y\n" + good_tail + "\nbody", "duplicate sender"},
		{"LAIM 1\nid " + id + "\nid " + id + "\n" + good_tail + "\nbody", "duplicate id"},
		{"LAIM 1\nid " + id + "\nuid 1\nuid 2\n" + good_tail + "\nbody", "duplicate uid"},
		{"LAIM 1\nid " + id + "\ninstance a\ninstance b\n" + good_tail + "\nbody", "duplicate instance"},
		{"LAIM 1\nid " + id + "\ninstance \n" + good_tail + "\nbody", "instance: empty"},
		{"LAIM 1\nid " + id + "\noffline a\noffline b\n" + good_tail + "\nbody", "duplicate offline"},
		{"LAIM 1\nid " + id + "\noffline \n" + good_tail + "\nbody", "offline: empty"},
		{"LAIM 1\nid " + id + "\nauth a\nauth b\n" + good_tail + "\nbody", "duplicate auth"},
		{"LAIM 1\nid " + id + "\nauth \n" + good_tail + "\nbody", "auth: empty"},
		{"LAIM 1\nboot a\nboot a\nid " + id + "\n" + good_tail + "\nbody", "duplicate boot"},
		{"LAIM 1\nsum 00000000\nsum 00000000\nid " + id + "\n" + good_tail + "\nbody", "duplicate sum"},
		{"LAIM 1\nsum 0000000\nid " + id + "\n" + good_tail + "\nbody", "sum: not 8 hex digits"},
		{"LAIM 1\nid " + id + "\narrival 5\nsender a@b\nrcpt c@d\nhelo h\n\nbody", "missing client"},
		{"LAIM 1\nid " + id + "\narrival 5\nsender a@b\nrcpt c@d\nclient local\n\nbody", "missing helo"},
		{"LAIM 1\narrival 5\nsender a@b\nrcpt c@d\nclient local\nhelo h\n\nbody", "missing id"},
		{"LAIM 1\nid " + id + "\nsender a@b\nrcpt c@d\nclient local\nhelo h\n\nbody", "missing arrival"},
		{"LAIM 1\nid " + id + "\narrival 5\nrcpt c@d\nclient local\nhelo h\n\nbody", "missing sender"},
		{"LAIM 1\nid " + id + "\narrival 5\nsender a@b\nclient local\nhelo h\n\nbody", "no rcpt"},
		{"LAIM 1\nid " + id + "\narrival 12x\nsender a@b\nrcpt c@d\nclient local\nhelo h\n\n", "arrival: not an integer"},
		{"LAIM 1\nid " + id + "\nuid -1\n" + good_tail + "\n", "uid: not an integer"},
		{"LAIM 1\nid " + id + "\nhelo\n" + good_tail + "\n", "no value"},
		{"LAIM 1\nid " + id + "\n" + good_tail + "rcpt x\r\n\nbody", "CR or NUL"},
		{"", "empty file"},
	};
	for (const auto& c : cases) {
		spit(g_spool + "/queue/" + id, c.content);
		std::string err = load_error(spool, id);
		ck_assert_msg(err.rfind(id + ": ", 0) == 0, "error does not start with the id: %s", err.c_str());
		ck_assert_msg(err.find(c.why) != std::string::npos, "expected \"%s\", got \"%s\"", c.why,
			      err.c_str());
	}

	// The same content as the last good case does load: the cases above
	// fail for the reason they test, not for something else.
	spit(g_spool + "/queue/" + id, "LAIM 1\nid " + id + "\n" + good_tail + "\nbody");
	ck_assert(spool.load(id).body() == "body");

	// A symlink to a valid spool file is refused (O_NOFOLLOW).
	const std::string link_id = "ABCDEF0002";
	std::string target = g_tmp + "/elsewhere";
	spit(target, "LAIM 1\nid " + link_id + "\n" + good_tail + "\nbody");
	ck_assert_int_eq(symlink(target.c_str(), (g_spool + "/queue/" + link_id).c_str()), 0);
	ck_assert(load_error(spool, link_id).rfind(link_id + ": ", 0) == 0);

	// Missing file, directory, not an id at all.
	ck_assert(load_error(spool, "ABCDEF0003").rfind("ABCDEF0003: ", 0) == 0);
	ck_assert_int_eq(mkdir((g_spool + "/queue/ABCDEF0004").c_str(), 0700), 0);
	ck_assert(load_error(spool, "ABCDEF0004").find("ABCDEF0004: ") == 0);
	ck_assert(load_error(spool, "../queue/" + id).find("not a queue id") != std::string::npos);
}
END_TEST

// CR, LF or NUL in any envelope value could end the header early or forge
// a key: create refuses them before making any file.
START_TEST(test_create_refuses)
{
	Spool spool(g_spool);
	const std::string bad_chars[] = {"\r", "\n", std::string(1, '\0')};
	const char* fields[] = {"sender", "rcpt", "client", "helo", "instance", "offline"};
	for (const char* field : fields) {
		for (const auto& c : bad_chars) {
			Envelope env = sample_env(spool.new_id());
			std::string value = "x" + c + "rcpt evil@example.org";
			if (!strcmp(field, "sender"))
				env.sender = value;
			else if (!strcmp(field, "rcpt"))
				env.recipients.push_back(value);
			else if (!strcmp(field, "client"))
				env.client = value;
			else if (!strcmp(field, "helo"))
				env.helo = value;
			else if (!strcmp(field, "instance"))
				env.instance = value;
			else
				env.offline = value;
			try {
				(void)spool.create(env);
				ck_abort_msg("create accepted %s with char %d", field, c[0]);
			} catch (const std::invalid_argument& e) {
				ck_assert_msg(strstr(e.what(), field) != nullptr, "%s not named in: %s", field,
					      e.what());
			}
		}
	}
	Envelope env = sample_env(spool.new_id());
	env.recipients.clear();
	try {
		(void)spool.create(env);
		ck_abort_msg("create accepted an envelope without recipient");
	} catch (const std::invalid_argument& e) {
		ck_assert_ptr_nonnull(strstr(e.what(), "rcpt"));
	}
	env = sample_env("../queue/X");
	try {
		(void)spool.create(env);
		ck_abort_msg("create accepted a path as id");
	} catch (const std::invalid_argument& e) {
		ck_assert_ptr_nonnull(strstr(e.what(), "id"));
	}
	ck_assert_uint_eq(count_entries(g_spool + "/queue"), 0);
}
END_TEST

START_TEST(test_fail)
{
	Spool spool(g_spool);
	Envelope env = sample_env(spool.new_id());
	commit(spool, env, "undeliverable\n");
	std::string committed = slurp(g_spool + "/queue/" + env.id);

	spool.fail(env.id, "550 5.1.1 no such user");
	ck_assert(!exists(g_spool + "/queue/" + env.id));
	ck_assert_uint_eq(spool.list_queue().size(), 0);
	ck_assert(slurp(g_spool + "/failed/" + env.id) == committed);
	std::string reason = g_spool + "/failed/" + env.id + ".reason";
	ck_assert(slurp(reason) == "550 5.1.1 no such user\n");
	struct stat st;
	ck_assert_int_eq(stat(reason.c_str(), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);

	// A message that never reached queue/ still gets its reason recorded.
	std::string orphan = spool.new_id();
	spool.fail(orphan, "corrupt offline file");
	ck_assert(slurp(g_spool + "/failed/" + orphan + ".reason") == "corrupt offline file\n");
	ck_assert(!exists(g_spool + "/failed/" + orphan));
}
END_TEST

START_TEST(test_remove)
{
	Spool spool(g_spool);
	Envelope a = sample_env(spool.new_id()), b = sample_env(spool.new_id());
	commit(spool, a, "a\n");
	commit(spool, b, "b\n");
	spool.remove(a.id);
	auto ids = spool.list_queue();
	ck_assert_uint_eq(ids.size(), 1);
	ck_assert_str_eq(ids[0].c_str(), b.id.c_str());
	ck_assert(load_error(spool, a.id).rfind(a.id + ": ", 0) == 0);
	try {
		spool.remove(a.id);
		ck_abort_msg("second remove succeeded");
	} catch (const std::system_error& e) {
		ck_assert_int_eq(e.code().value(), ENOENT);
		ck_assert_ptr_nonnull(strstr(e.what(), a.id.c_str()));
	}
}
END_TEST

ino_t inode_of(const std::string& path)
{
	struct stat st;
	ck_assert_int_eq(lstat(path.c_str(), &st), 0);
	return st.st_ino;
}

// A removed message's file waits in free/ and is reused, its old bytes
// gone, only once an fsync of queue/ begun after its removal returned,
// and never by store(); a large one is not kept.
START_TEST(test_recycle)
{
	Spool spool(g_spool);
	Envelope old = sample_env(spool.new_id());
	commit(spool, old, std::string(3000, 'S'));
	ino_t ino = inode_of(g_spool + "/queue/" + old.id);
	spool.remove(old.id);
	ck_assert(!exists(g_spool + "/queue/" + old.id));
	ck_assert_uint_eq(inode_of(g_spool + "/free/" + old.id), ino);

	Envelope early = sample_env(spool.new_id());
	Spool::Created created;
	UniqueFd fd = spool.create(early, &created);
	ck_assert_msg(!created.recycled, "reused before queue/ was synced");
	ck_assert_uint_ne(inode_of(g_spool + "/queue/" + early.id), ino);
	spool.discard(early.id);

	spool.checkpoint();
	Envelope stored = sample_env(spool.new_id());
	spool.store(stored, {"an alert\n"});
	ck_assert_uint_ne(inode_of(g_spool + "/queue/" + stored.id), ino);
	ck_assert_uint_eq(inode_of(g_spool + "/free/" + old.id), ino);
	Envelope next = sample_env(spool.new_id());
	fd = spool.create(next, &created);
	ck_assert(created.recycled);
	ck_assert_uint_eq(inode_of(g_spool + "/queue/" + next.id), ino);
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + next.id), 0700);
	ck_assert(!exists(g_spool + "/free/" + old.id));
	std::string data = slurp(g_spool + "/queue/" + next.id);
	ck_assert_uint_eq(data.rfind(header_start(next.id), 0), 0);
	ck_assert_uint_eq(data.size(), created.header_len + 3000);
	ck_assert_uint_eq(data.find_first_not_of('\0', created.header_len), std::string::npos);

	Envelope big = sample_env(spool.new_id());
	commit(spool, big, std::string(Spool::RECYCLE_MAX_SIZE, 'B'));
	spool.remove(big.id);
	ck_assert(!exists(g_spool + "/free/" + big.id));

	// Half of free/ waiting for a barrier asks for a checkpoint.
	ck_assert(!spool.wants_checkpoint(0));
	for (size_t i = 1; i < Spool::MAX_FREE_FILES / 2; i++) {
		Envelope e = sample_env(spool.new_id());
		commit(spool, e, "x");
		spool.remove(e.id);
	}
	ck_assert(!spool.wants_checkpoint(0));
	Envelope last = sample_env(spool.new_id());
	commit(spool, last, "x");
	spool.remove(last.id);
	ck_assert(spool.wants_checkpoint(0));
	spool.checkpoint();
	ck_assert(!spool.wants_checkpoint(0));
	ck_assert(spool.wants_checkpoint(Journal::SIZE));  // a group the journal cannot hold
}
END_TEST

// A crash between 250 and delivery: what was committed survives a new
// Spool on the same directory, what was still being received goes.
START_TEST(test_recovery)
{
	Envelope committed, cut;
	{
		Spool spool(g_spool);
		committed = sample_env(spool.new_id());
		cut = sample_env(spool.new_id());
		commit(spool, committed, "survives\n");
		UniqueFd fd = spool.create(cut);
		write_body(fd.get(), "half a mess");
	}
	Spool spool(g_spool);
	spool.recover();
	ck_assert(!exists(g_spool + "/queue/" + cut.id));
	auto ids = spool.list_queue();
	ck_assert_uint_eq(ids.size(), 1);
	ck_assert_str_eq(ids[0].c_str(), committed.id.c_str());
	SpoolMessage msg = spool.load(ids[0]);
	check_same_envelope(msg.envelope, committed);
	ck_assert(msg.body() == "survives\n");
}
END_TEST

// What a start finds after a stop in the middle of commits, judged by
// the journal (Spool::recover): a message it holds is kept when whole and
// restored from it when torn or lost; a pending file it does not hold is
// removed (a medium one's record, copied from its file, as a small one's;
// a medium one synced on its own is judged as a large one);
// a removal it holds, or a file in failed/, is not undone; a
// large message (no record: synced on its own) still pending is kept when
// whole and goes to failed/ when not, and removed when it was never
// sealed (cut off in its DATA) or its header is not even readable. After the
// checkpoint the journal is empty, its old records stale.
START_TEST(test_journal_recovery)
{
	const std::string body = "Subject: cut off\r\n\r\nline\r\n";
	const std::string medium_body(2 * Journal::INLINE_MAX, 'M');
	Envelope done, cut, held, torn, lost, delivered, failed, medium, alone, large, large_whole, receiving, garbled;
	std::string torn_file, medium_file;
	{
		Spool spool(g_spool);
		for (Envelope* e :
		     {&done, &cut, &held, &torn, &lost, &delivered, &failed, &medium, &alone, &large, &large_whole, &receiving,
		      &garbled})
			*e = sample_env(spool.new_id());
		commit(spool, done, body);
		commit(spool, cut, body, Until::Sealed);
		commit(spool, held, body, Until::Journaled);
		commit(spool, torn, body);
		commit(spool, lost, body);
		commit(spool, delivered, body);
		commit(spool, failed, body);
		commit(spool, medium, medium_body, Until::Journaled);
		commit(spool, alone, medium_body, Until::Journaled, true);  // its 250 went before its mode reached the disk
		commit(spool, large, std::string(Journal::RECORD_MAX, 'L'), Until::Journaled);
		commit(spool, large_whole, std::string(Journal::RECORD_MAX, 'W'), Until::Journaled);
		UniqueFd in_data = spool.create(receiving);
		write_body(in_data.get(), std::string(Journal::INLINE_MAX, 'R'));
		UniqueFd zeroed = spool.create(garbled);
		write_body(zeroed.get(), std::string(Journal::INLINE_MAX, 'G'));
		ck_assert_int_eq(pwrite(zeroed.get(), std::string(64, '\0').data(), 64, 0), 64);  // its header never reached the disk
		ck_assert_int_eq(mode_of(g_spool + "/queue/" + done.id), 0600);
		ck_assert_int_eq(mode_of(g_spool + "/queue/" + held.id), 0700);
		torn_file = slurp(g_spool + "/queue/" + torn.id);
		medium_file = slurp(g_spool + "/queue/" + medium.id);
		for (const Envelope* e : {&torn, &medium, &large}) {
			std::string path = g_spool + "/queue/" + e->id;
			std::string data = slurp(path);
			data[data.size() - 3] = 'X';  // a block that never reached the disk
			spit(path, data);
		}
		ck_assert_int_eq(unlink((g_spool + "/queue/" + lost.id).c_str()), 0);
		spool.remove(delivered.id);
		spool.fail(failed.id, "refused");
	}
	from_other_boot();
	Spool spool(g_spool);
	ck_assert_uint_eq(spool.journal()->records().size(), 9);  // 6 small commits, a medium one, a removal, a failure
	spool.recover();
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + large_whole.id), 0600);
	ck_assert(spool.load(large_whole.id).body() == std::string(Journal::RECORD_MAX, 'W'));
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + medium.id), 0600);
	ck_assert(slurp(g_spool + "/queue/" + medium.id) == medium_file);
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + alone.id), 0600);
	ck_assert(spool.load(alone.id).body() == medium_body);
	for (const Envelope* e : {&done, &held, &torn, &lost}) {
		std::string path = g_spool + "/queue/" + e->id;
		ck_assert_msg(exists(path), "%s gone", e == &lost ? "lost" : e == &torn ? "torn" : "held");
		ck_assert_int_eq(mode_of(path), 0600);
		ck_assert(spool.load(e->id).body() == body);
	}
	ck_assert(slurp(g_spool + "/queue/" + torn.id) == torn_file);
	for (const Envelope* e : {&cut, &delivered, &failed, &large, &receiving, &garbled})
		ck_assert(!exists(g_spool + "/queue/" + e->id));
	ck_assert(!exists(g_spool + "/failed/" + receiving.id));
	ck_assert(!exists(g_spool + "/failed/" + garbled.id));
	ck_assert(exists(g_spool + "/failed/" + failed.id));
	ck_assert(exists(g_spool + "/failed/" + large.id));
	ck_assert_ptr_nonnull(strstr(slurp(g_spool + "/failed/" + large.id + ".reason").c_str(), "not whole"));
	// A sealed file's sum is the CRC-32 of its message.
	ck_assert_ptr_nonnull(strstr(slurp(g_spool + "/queue/" + done.id).c_str(), "\nsum b65348d3\n"));

	ck_assert_uint_eq(spool.journal()->records().size(), 0);
	Envelope next = sample_env(spool.new_id());
	commit(spool, next, body);
	from_other_boot();
	Spool again(g_spool);
	ck_assert_uint_eq(again.journal()->records().size(), 1);  // the older ones are stale
	ck_assert_str_eq(again.journal()->records()[0].id.c_str(), next.id.c_str());
}
END_TEST

// laimd ended, not the system (the journal is from this boot): the files
// are the truth. A pending file goes even when the journal holds it (its
// 250 never went out), and a file gone from queue/ stays gone.
START_TEST(test_journal_same_boot)
{
	const std::string body = "Subject: same boot\r\n\r\nline\r\n";
	Envelope done, held, gone;
	{
		Spool spool(g_spool);
		for (Envelope* e : {&done, &held, &gone})
			*e = sample_env(spool.new_id());
		commit(spool, done, body);
		commit(spool, held, body, Until::Journaled);
		commit(spool, gone, body);
		spool.discard(gone.id);  // as after a failed sync: its client got 451
	}
	Spool spool(g_spool);
	ck_assert_uint_eq(spool.journal()->records().size(), 3);
	ck_assert(spool.journal()->written_this_boot());
	spool.recover();
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + done.id), 0600);
	ck_assert(!exists(g_spool + "/queue/" + held.id));
	ck_assert(!exists(g_spool + "/queue/" + gone.id));
}
END_TEST

// A record cut short (its sum fails) ends the journal: the commit it was
// for never returned, so its pending file goes.
START_TEST(test_journal_torn_record)
{
	const std::string body = "Subject: torn\r\n\r\nline\r\n";
	Envelope first, second;
	{
		Spool spool(g_spool);
		first = sample_env(spool.new_id());
		second = sample_env(spool.new_id());
		commit(spool, first, body, Until::Journaled);
		commit(spool, second, body, Until::Journaled);
	}
	std::string journal = slurp(g_spool + "/journal");
	ck_assert_uint_eq(journal.size(), Journal::SIZE);
	size_t at = journal.find(second.id);
	ck_assert_uint_ne(at, std::string::npos);
	journal[at + Journal::RECORD_HEAD] ^= 1;  // a byte of its content
	spit(g_spool + "/journal", journal);
	from_other_boot();
	Spool spool(g_spool);
	ck_assert_uint_eq(spool.journal()->records().size(), 1);
	spool.recover();
	ck_assert_int_eq(mode_of(g_spool + "/queue/" + first.id), 0600);
	ck_assert(!exists(g_spool + "/queue/" + second.id));
}
END_TEST

// What recover() cannot judge stays as it is and does not stop the
// start: a directory with a queue id's name is ignored, and a message
// the journal holds that cannot be restored now (incoming/ gone) keeps
// its record for the next start, which restores it: no checkpoint
// empties the journal meanwhile.
START_TEST(test_recovery_leaves_what_it_cannot_judge)
{
	const std::string body = "Subject: later\r\n\r\nline\r\n";
	Envelope lost, whole;
	{
		Spool spool(g_spool);
		lost = sample_env(spool.new_id());
		whole = sample_env(spool.new_id());
		commit(spool, lost, body);
		commit(spool, whole, body, Until::Journaled);
	}
	ck_assert_int_eq(unlink((g_spool + "/queue/" + lost.id).c_str()), 0);
	ck_assert_int_eq(mkdir((g_spool + "/queue/0123456789").c_str(), 0700), 0);
	ck_assert_int_eq(rename((g_spool + "/incoming").c_str(), (g_spool + "/incoming.away").c_str()), 0);
	from_other_boot();
	{
		Spool spool(g_spool);
		spool.recover();
		ck_assert(!exists(g_spool + "/queue/" + lost.id));
		ck_assert_int_eq(mode_of(g_spool + "/queue/" + whole.id), 0600);
		ck_assert_uint_eq(spool.journal()->records().size(), 2);
		ck_assert(spool.unjudged(lost.id) && !spool.unjudged(whole.id));
		spool.checkpoint();  // as a busy run makes them: the journal is kept
		ck_assert_uint_eq(spool.journal()->records().size(), 2);
	}
	ck_assert(exists(g_spool + "/queue/0123456789"));
	ck_assert_int_eq(rename((g_spool + "/incoming.away").c_str(), (g_spool + "/incoming").c_str()), 0);
	Spool spool(g_spool);
	ck_assert_uint_eq(spool.journal()->records().size(), 2);
	spool.recover();
	ck_assert(spool.load(lost.id).body() == body);
	ck_assert_uint_eq(spool.journal()->records().size(), 0);
}
END_TEST

static Suite* spool_suite()
{
	Suite* s = suite_create("spool");
	TCase* tc = tcase_create("spool");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_missing_dir);
	tcase_add_test(tc, test_new_id);
	tcase_add_test(tc, test_new_id_skips_failed);
	tcase_add_test(tc, test_header_format);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_load_envelope);
	tcase_add_test(tc, test_message_move);
	tcase_add_test(tc, test_mapped_message_headers);
	tcase_add_test(tc, test_create_noreplace);
	tcase_add_test(tc, test_read_keeps_atime);
	tcase_add_test(tc, test_sync_errors);
	tcase_add_test(tc, test_discard);
	tcase_add_test(tc, test_clean_incoming);
	tcase_add_test(tc, test_list_queue_order);
	tcase_add_test(tc, test_load_errors);
	tcase_add_test(tc, test_create_refuses);
	tcase_add_test(tc, test_fail);
	tcase_add_test(tc, test_remove);
	tcase_add_test(tc, test_recycle);
	tcase_add_test(tc, test_recovery);
	tcase_add_test(tc, test_journal_recovery);
	tcase_add_test(tc, test_journal_torn_record);
	tcase_add_test(tc, test_journal_same_boot);
	tcase_add_test(tc, test_recovery_leaves_what_it_cannot_judge);
	suite_add_tcase(s, tc);
	return s;
}

int main()
{
	SRunner* sr = srunner_create(spool_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
