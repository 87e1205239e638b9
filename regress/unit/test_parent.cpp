// The root parent's own code, apart from a running laimd:
//  - child supervision: the restart back-off (parent/restart.cpp);
//  - what the parent accepts from its children, frame by frame over a real
//    SOCK_SEQPACKET socketpair with the validators its channels use: each
//    type valid, short, long, with and without an fd, and every other type;
//  - the command service (parent/command.cpp): the requests it refuses and
//    why, and the argv, user, groups and environment of the commands it
//    starts (pipe sections, alias commands, laim-mda for a mailbox), run
//    for real as nobody (so this test runs as root, as make check does).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/event_loop.h"
#include "common/imsg.h"
#include "common/proto.h"
#include "handler/api/command.h"
#include "parent/parent.h"

// Last: check.h defines a fail() macro.
#include <check.h>

using namespace laim;

namespace {

// ------------------------------------------------------------ helpers

std::pair<UniqueFd, UniqueFd> seqpacket_pair()
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

size_t open_fds()
{
	size_t n = 0;
	DIR* d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

// Sends rec as one record, with fd attached when fd >= 0 (SCM_RIGHTS).
void send_record(int sock, const std::string& rec, int fd)
{
	struct iovec iov = {const_cast<char*>(rec.data()), rec.size()};
	struct msghdr mh = {};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
	if (fd >= 0) {
		mh.msg_control = ctl;
		mh.msg_controllen = sizeof ctl;
		struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	ck_assert_int_eq(sendmsg(sock, &mh, 0), ssize_t(rec.size()));
}

// What the parent's end makes of one record sent by a child.
struct Received {
	ImsgChannel::Read read;
	ImsgError err = ImsgError::None;
	Imsg msg;
};

Received receive(const std::string& rec, bool with_fd, ImsgValidator valid)
{
	auto [child, parent] = seqpacket_pair();
	int fd = with_fd ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
	send_record(child.get(), rec, fd);
	if (fd >= 0)
		close(fd);
	ImsgChannel chan(std::move(parent), valid);
	Received r;
	r.read = chan.read(r.msg, &r.err);
	return r;
}

std::string record(uint32_t type, std::string_view payload)
{
	std::string rec;
	imsg_encode(type, 1, 2, payload, rec);
	return rec;
}

// ------------------------------------------------------------ supervision

START_TEST(restart_backoff_doubles_to_a_minute)
{
	unsigned backoff = 1;
	time_t t = 1000;
	// A child that dies at once, again and again.
	for (unsigned want : {1u, 2u, 4u, 8u, 16u, 32u, 60u, 60u, 60u}) {
		ck_assert_uint_eq(restart_delay(backoff, t, t + 1), want);
		t += want + 1;
	}
}
END_TEST

START_TEST(restart_backoff_resets_after_a_stable_run)
{
	unsigned backoff = 1;
	for (int i = 0; i < 5; i++)
		restart_delay(backoff, 0, 1);
	ck_assert_uint_eq(backoff, 32);
	// A run of exactly RESTART_STABLE seconds is still a quick death.
	ck_assert_uint_eq(restart_delay(backoff, 100, 100 + RESTART_STABLE), 32);
	// One second longer: back to 1 s, then doubling again.
	ck_assert_uint_eq(restart_delay(backoff, 200, 200 + RESTART_STABLE + 1), 1);
	ck_assert_uint_eq(restart_delay(backoff, 400, 401), 2);
	ck_assert_uint_eq(restart_delay(backoff, 500, 501), 4);
}
END_TEST

// ------------------------------------------------------------ what children send

// Every type the parent accepts from a child, on the channel that accepts
// it, with a valid payload and whether it carries an fd.
struct ChildType {
	const char* channel;
	ImsgValidator valid;
	uint32_t type;
	bool with_fd;
	std::string payload;
	// The payload decodes (and does not once cut or lengthened).
	std::function<bool(std::string_view)> decodes;
};

template <typename T>
std::function<bool(std::string_view)> decoder()
{
	return [](std::string_view p) {
		T m;
		return decode(p, m);
	};
}

std::vector<ChildType> child_types()
{
	return {
		{"child_to_parent", imsg_valid_child_to_parent, IMSG_C_PEER_ERROR, false,
		 encode(PeerErrorMsg{"malformed IMSG_S_RCPT", record(IMSG_S_RCPT, "bad")}), decoder<PeerErrorMsg>()},
		{"child_to_parent", imsg_valid_child_to_parent, IMSG_C_PEER_ERROR_FD, true,
		 encode(PeerErrorMsg{"unexpected or missing descriptor", record(IMSG_S_RCPT, "")}),
		 decoder<PeerErrorMsg>()},
		{"smtp_to_parent", imsg_valid_smtp_to_parent, IMSG_S_CLIENT_UID, true, encode(NoPayload{}),
		 decoder<NoPayload>()},
		{"command_request", imsg_valid_command_request, IMSG_H_COMMAND_RUN, true,
		 encode(CommandRunMsg{"lda", "0123456789", "a@b.example", {"r@c.example"}}), decoder<CommandRunMsg>()},
	};
}

// Each type alone on its channel: accepted whole, with the fd its type
// carries, and its payload decodes to what was sent.
START_TEST(child_frames_valid)
{
	for (const ChildType& t : child_types()) {
		size_t before = open_fds();
		{
			Received r = receive(record(t.type, t.payload), t.with_fd, t.valid);
			ck_assert_msg(r.read == ImsgChannel::Read::Message, "%s %s: refused (%s)", t.channel,
				      imsg_name(t.type), imsg_strerror(r.err));
			ck_assert_uint_eq(r.msg.type, t.type);
			ck_assert(r.msg.data == t.payload);
			ck_assert(bool(r.msg.fd) == t.with_fd);
			ck_assert_msg(t.decodes(r.msg.data), "%s: payload does not decode", imsg_name(t.type));
		}
		ck_assert_uint_eq(open_fds(), before);
	}
}
END_TEST

// A record cut anywhere, or one byte longer than its header says, or a
// payload over the limit: refused, and an fd that came with it closed.
START_TEST(child_frames_short_and_long)
{
	for (const ChildType& t : child_types()) {
		std::string rec = record(t.type, t.payload);
		size_t before = open_fds();
		for (size_t n = 1; n < rec.size(); n++) {
			Received r = receive(rec.substr(0, n), t.with_fd, t.valid);
			ck_assert_msg(r.read == ImsgChannel::Read::Error && r.err == ImsgError::Truncated,
				      "%s cut to %zu bytes: %s", imsg_name(t.type), n, imsg_strerror(r.err));
		}
		Received longer = receive(rec + "x", t.with_fd, t.valid);
		ck_assert_msg(longer.read == ImsgChannel::Read::Error && longer.err == ImsgError::Trailing,
			      "%s with a byte more: %s", imsg_name(t.type), imsg_strerror(longer.err));
		Received huge = receive(record(t.type, std::string(IMSG_MAX_PAYLOAD + 1, 'x')), t.with_fd, t.valid);
		ck_assert_msg(huge.read == ImsgChannel::Read::Error && huge.err == ImsgError::Oversized,
			      "%s over the payload limit: %s", imsg_name(t.type), imsg_strerror(huge.err));
		ck_assert_uint_eq(open_fds(), before);
	}
}
END_TEST

// A well-framed record whose payload is cut at any byte, or has a byte
// more: the frame passes, the payload does not decode.
START_TEST(child_payloads_short_and_long)
{
	for (const ChildType& t : child_types()) {
		for (size_t n = 0; n < t.payload.size(); n++)
			ck_assert_msg(!t.decodes(t.payload.substr(0, n)), "%s payload cut to %zu bytes decodes",
				      imsg_name(t.type), n);
		ck_assert_msg(!t.decodes(t.payload + "x"), "%s payload with a byte more decodes", imsg_name(t.type));
	}
}
END_TEST

// An fd where the type has none, or none where it needs one: BadFd, and
// the fd sent along is closed, not kept.
START_TEST(child_frames_fd_rules)
{
	for (const ChildType& t : child_types()) {
		size_t before = open_fds();
		Received r = receive(record(t.type, t.payload), !t.with_fd, t.valid);
		ck_assert_msg(r.read == ImsgChannel::Read::Error && r.err == ImsgError::BadFd, "%s %s an fd: %s",
			      imsg_name(t.type), t.with_fd ? "without" : "with", imsg_strerror(r.err));
		ck_assert_uint_eq(open_fds(), before);
	}
}
END_TEST

// On each of the parent's channels, and on the children's, every type but
// the channel's own is refused, with or without an fd (so a process's
// dispatch never sees a type its channel does not carry); the reply
// channel of a command takes nothing.
START_TEST(child_frames_other_types)
{
	struct Channel {
		ImsgValidator valid;
		std::vector<uint32_t> own;
	};
	Channel channels[] = {
		{imsg_valid_child_to_parent, {IMSG_C_PEER_ERROR, IMSG_C_PEER_ERROR_FD}},
		{imsg_valid_smtp_to_parent, {IMSG_S_AUTH, IMSG_S_CLIENT_UID, IMSG_C_PEER_ERROR, IMSG_C_PEER_ERROR_FD}},
		{imsg_valid_command_request, {IMSG_H_COMMAND_RUN}},
		{imsg_valid_key_request, {IMSG_T_RSA_PRIV_ENC, IMSG_T_ECDSA_SIGN, IMSG_T_KEY_IN_USE}},
		{imsg_valid_nothing, {}},
		{imsg_valid_parent_to_smtp,
		 {IMSG_P_SMTP_CONF, IMSG_P_HANDLER_CHANNEL, IMSG_P_SMTP_TLS, IMSG_P_AUTH, IMSG_P_CLIENT_UID}},
		{imsg_valid_parent_to_handler, {IMSG_P_HANDLER_CONF, IMSG_P_SMTP_CHANNEL}},
		{imsg_valid_smtp_to_handler,
		 {IMSG_S_MAIL, IMSG_S_RCPT, IMSG_S_DATA, IMSG_S_COMMIT, IMSG_S_ABORT, IMSG_S_MAIL_LOCAL}},
		{imsg_valid_handler_to_smtp, {IMSG_H_MAIL, IMSG_H_RCPT, IMSG_H_DATA_OK, IMSG_H_DATA_FAIL, IMSG_H_COMMIT}},
		{imsg_valid_command_reply, {IMSG_P_COMMAND_INPUT, IMSG_P_COMMAND_UNREAD, IMSG_P_COMMAND_OUTPUT,
					    IMSG_P_COMMAND_EXIT, IMSG_P_COMMAND_FAIL}},
		{imsg_valid_key_reply, {IMSG_K_RESULT}},
	};
	std::vector<uint32_t> types = {0, 5, 99, 299, 301, 399, 402, 403, 499, 506, 0xffffffffu};
	for (uint32_t base : {1u, 10u, 100u, 200u, 300u, 400u, 500u, 600u, 700u})
		for (uint32_t k = 0; k < 6; k++)
			types.push_back(base + k);
	for (const Channel& c : channels) {
		for (uint32_t type : types) {
			bool own = std::find(c.own.begin(), c.own.end(), type) != c.own.end();
			if (own)
				continue;
			for (bool fd : {false, true}) {
				Received r = receive(record(type, ""), fd, c.valid);
				ck_assert_msg(r.read == ImsgChannel::Read::Error && r.err == ImsgError::UnknownType,
					      "type %u%s accepted: %s", type, fd ? " with an fd" : "",
					      imsg_strerror(r.err));
			}
		}
	}
}
END_TEST

// ------------------------------------------------------------ the command service

const char* const CONFIG_FILE = "/etc/laim/test.yml";

Config command_config(const std::string& handlers, const std::string& extra = "")
{
	try {
		return config_parse("handlers:\n" + handlers + extra, CONFIG_FILE);
	} catch (const ConfigError& e) {
		ck_abort_msg("config: %s", e.what());
	}
	return {};
}

// A pipe section that prints its argv (one "[word]" each), its user and
// its environment, sorted.
const std::string PRINTER =
	"  show:\n"
	"    type: pipe\n"
	"    user: nobody\n"
	"    per_recipient: false\n"
	"    env: [\"LANG=C.UTF-8\"]\n"
	"    command: [/bin/sh, -c, 'printf \"[%s]\" \"$0\" \"$@\"; echo; id -un; env | sort', "
	"\"{queue_id}\", \"-f{sender}\", \"{recipient}\", \"to={user}+{extension}\"]\n"
	"  one:\n"
	"    type: pipe\n"
	"    user: nobody\n"
	"    command: [/bin/sh, -c, 'printf \"[%s]\" \"$@\"; echo; env | sort', sh, \"{recipient}\"]\n"
	"  bare:\n"
	"    type: pipe\n"
	"    user: nobody\n"
	"    command: [/bin/echo, \"{recipient}\"]\n"
	"  rooted:\n"
	"    type: pipe\n"
	"    user: root\n"                       // line 18
	"    command: [/bin/true]\n"
	"  quiet:\n"
	"    type: discard\n";

// What one request got on its reply channel: the frames, and the
// command's output and exit when it ran.
struct CommandRun {
	bool request_ok = false;
	std::vector<uint32_t> types;
	CommandFailMsg fail;
	std::string user, output;
	CommandExitMsg exit;
};

// Reads one frame of the reply channel, running the parent's loop meanwhile.
bool read_reply(ImsgChannel& handler_end, EventLoop& loop, Imsg& m)
{
	ImsgError err;
	for (int i = 0; i < 200; i++) {
		ImsgChannel::Read r = handler_end.read(m, &err);
		if (r == ImsgChannel::Read::Message)
			return true;
		ck_assert_msg(r == ImsgChannel::Read::Again, "reply channel: %s", imsg_strerror(err));
		loop.wait(25);
	}
	return false;
}

std::string read_all(int fd)
{
	std::string out;
	char buf[4096];
	for (ssize_t n; (n = read(fd, buf, sizeof buf)) != 0;) {
		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_int_gt(n, 0);
		out.append(buf, size_t(n));
	}
	return out;
}

// Sends req to a CommandService as the handler process would, in a laimd
// whose handler and smtp processes run as handler and smtp (root's uid
// unless given, which a command never has anyway); when the command
// starts, feeds it nothing, reads its output, reaps it as the parent does
// (waitid WNOWAIT, then reap) and reads its exit.
CommandRun run_command(const Config& cfg, const CommandRunMsg& req, const std::string* payload = nullptr,
		       const RunAs& handler = {}, const RunAs& smtp = {})
{
	EventLoop loop;
	CommandService service;
	Runtime rt;
	rt.cfg = cfg;
	rt.user = handler;
	rt.smtp_user = smtp;
	auto [handler_end, parent_end] = seqpacket_pair();
	Imsg m;
	m.type = IMSG_H_COMMAND_RUN;
	m.data = payload ? *payload : encode(req);
	m.fd = std::move(parent_end);
	CommandRun run;
	run.request_ok = service.request(rt, loop, m);
	if (!run.request_ok)
		return run;
	ImsgChannel reply(std::move(handler_end), imsg_valid_command_reply);
	Imsg f;
	ck_assert_msg(read_reply(reply, loop, f), "no reply to the command request");
	run.types.push_back(f.type);
	if (f.type == IMSG_P_COMMAND_FAIL) {
		ck_assert(decode(f.data, run.fail));
		ck_assert_int_eq(waitpid(-1, nullptr, WNOHANG), -1);  // nothing was started
		return run;
	}
	ck_assert_uint_eq(f.type, IMSG_P_COMMAND_INPUT);
	UniqueFd input = std::move(f.fd);
	input.reset();  // the command's stdin: empty
	ck_assert(read_reply(reply, loop, f));
	run.types.push_back(f.type);
	ck_assert_uint_eq(f.type, IMSG_P_COMMAND_UNREAD);
	ck_assert(read_reply(reply, loop, f));
	run.types.push_back(f.type);
	ck_assert_uint_eq(f.type, IMSG_P_COMMAND_OUTPUT);
	CommandStartedMsg started;
	ck_assert(decode(f.data, started));
	run.user = started.user;
	run.output = read_all(f.fd.get());
	siginfo_t si = {};
	ck_assert_int_eq(waitid(P_ALL, 0, &si, WEXITED | WNOWAIT), 0);
	ck_assert(service.reap(si.si_pid));
	ck_assert(read_reply(reply, loop, f));
	run.types.push_back(f.type);
	ck_assert_uint_eq(f.type, IMSG_P_COMMAND_EXIT);
	ck_assert(decode(f.data, run.exit));
	return run;
}

// The environment lines of an output, without what the shell adds.
std::vector<std::string> env_lines(const std::string& output, size_t skip)
{
	std::vector<std::string> lines;
	size_t pos = 0;
	for (size_t i = 0; i < skip; i++)
		pos = output.find('\n', pos) + 1;
	while (pos < output.size()) {
		size_t nl = output.find('\n', pos);
		std::string line = output.substr(pos, nl - pos);
		pos = nl == std::string::npos ? output.size() : nl + 1;
		if (!line.starts_with("PWD=") && !line.starts_with("SHLVL=") && !line.starts_with("_="))
			lines.push_back(line);
	}
	return lines;
}

std::string joined(const std::vector<std::string>& v)
{
	std::string out;
	for (const std::string& s : v)
		out += s + "\n";
	return out;
}

#define ck_assert_string_eq(a, b)                                   \
	do {                                                         \
		const std::string a_ = (a), b_ = (b);                \
		ck_assert_str_eq(a_.c_str(), b_.c_str());           \
	} while (0)

START_TEST(command_argv_user_and_environment)
{
	ck_assert_msg(geteuid() == 0, "the command service tests run as root (make check does)");
	struct passwd* pw = getpwnam("nobody");
	ck_assert_ptr_nonnull(pw);
	std::string home = pw->pw_dir, shell = *pw->pw_shell ? pw->pw_shell : "/bin/sh";
	Config cfg = command_config(PRINTER);

	// Two recipients, per_recipient false: {recipient}, {user} and
	// {extension} words once per recipient; no RECIPIENT variable.
	CommandRun r = run_command(cfg, {"show", "0123456789", "s@x.example", {"a+ext@y.example", "b@z.example"}});
	ck_assert(r.request_ok);
	ck_assert_string_eq(r.user, "nobody");
	std::string first = r.output.substr(0, r.output.find('\n'));
	ck_assert_string_eq(first, "[0123456789][-fs@x.example][a+ext@y.example][b@z.example][to=a+ext][to=b+]");
	ck_assert_string_eq(r.output.substr(first.size() + 1, 7), "nobody\n");
	ck_assert_string_eq(joined(env_lines(r.output, 2)),
			    "HOME=" + home + "\nLANG=C.UTF-8\nLOGNAME=nobody\nPATH=/usr/local/bin:/usr/bin:/bin\n"
			    "QUEUE_ID=0123456789\nSENDER=s@x.example\nSHELL=" + shell + "\nUSER=nobody\n");
	ck_assert(WIFEXITED(r.exit.status) && WEXITSTATUS(r.exit.status) == 0);
	ck_assert(!r.exit.timed_out);
	ck_assert_uint_eq(r.exit.timeout, 120);

	// One recipient: RECIPIENT is set; the null sender is an empty word.
	r = run_command(cfg, {"one", "ABCDEF0123", "", {"r@y.example"}});
	ck_assert_string_eq(r.output.substr(0, r.output.find('\n')), "[r@y.example]");
	ck_assert_string_eq(joined(env_lines(r.output, 1)),
			    "HOME=" + home + "\nLOGNAME=nobody\nPATH=/usr/local/bin:/usr/bin:/bin\n"
			    "QUEUE_ID=ABCDEF0123\nRECIPIENT=r@y.example\nSENDER=\nSHELL=" + shell + "\nUSER=nobody\n");

	// No shell: a value is one word, whatever it holds.
	r = run_command(cfg, {"bare", "0123456789", "s@x.example", {"\"$(id) ;x\"@y.example"}});
	ck_assert_string_eq(r.output, "\"$(id) ;x\"@y.example\n");
}
END_TEST

// An aliases file in a temporary directory of its own, which lists one
// command, "|/bin/echo listed ran"; both go at the end of the case.
struct ListedAliases {
	char dir[32] = "/tmp/laim-test-parent-XXXXXX";
	std::string path;
	ListedAliases()
	{
		ck_assert_ptr_nonnull(mkdtemp(dir));
		path = std::string(dir) + "/aliases";
		FILE* f = fopen(path.c_str(), "w");
		ck_assert_ptr_nonnull(f);
		fputs("listed: \"|/bin/echo listed ran\"\n", f);
		fclose(f);
	}
	~ListedAliases()
	{
		unlink(path.c_str());
		rmdir(dir);
	}
};

START_TEST(command_alias_targets)
{
	ck_assert_msg(geteuid() == 0, "the command service tests run as root (make check does)");
	ListedAliases listed;
	const std::string& aliases = listed.path;
	std::string extra = "aliases: " + aliases + "\nalias_commands: true\n";
	Config cfg = command_config("  x:\n    type: discard\n", extra);

	CommandRun r = run_command(cfg, {ALIAS_COMMAND_INSTANCE, "0123456789", "s@x.example", {"|/bin/echo listed ran"}});
	ck_assert_string_eq(r.user, ALIAS_COMMAND_USER);
	ck_assert_string_eq(r.output, "listed ran\n");
	ck_assert(WIFEXITED(r.exit.status) && WEXITSTATUS(r.exit.status) == 0);

	r = run_command(cfg, {ALIAS_COMMAND_INSTANCE, "0123456789", "s@x.example", {"|/bin/echo not listed"}});
	ck_assert_uint_eq(r.types.back(), IMSG_P_COMMAND_FAIL);
	ck_assert(r.fail.permanent);
	ck_assert_string_eq(r.fail.why, "|/bin/echo not listed is not a command that " + aliases +
						" lists (run newaliases)");

	Config off = command_config("  x:\n    type: discard\n", "aliases: " + aliases + "\n");
	r = run_command(off, {ALIAS_COMMAND_INSTANCE, "0123456789", "s@x.example", {"|/bin/echo listed ran"}});
	ck_assert(r.fail.permanent);
	ck_assert_string_eq(r.fail.why, "alias commands are not enabled (alias_commands)");
}
END_TEST

// A mailbox delivery: laim-mda (here a stand-in that prints what it got,
// through LAIM_MDA as the e2e cases set it) MAIL_DIR USER SECONDS, as the
// user, its group the real gid and, when only the mail directory's group
// may create files there, that group the effective one (the stand-in is
// sh -p, or dash would reset it), no supplementary group, and an empty
// environment.
START_TEST(command_mailbox_delivery)
{
	ck_assert_msg(geteuid() == 0, "the command service tests run as root (make check does)");
	char dir[] = "/tmp/laim-test-parent-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	chmod(dir, 0755);
	std::string mda = std::string(dir) + "/mda", mail_dir = std::string(dir) + "/mail";
	FILE* f = fopen(mda.c_str(), "w");
	ck_assert_ptr_nonnull(f);
	fputs("#!/bin/sh -p\nprintf '[%s]' \"$@\"; echo; id -un; id -rgn; id -gn; id -Gn; env | sort\n", f);
	fclose(f);
	chmod(mda.c_str(), 0755);
	ck_assert_int_eq(mkdir(mail_dir.c_str(), 02775), 0);
	struct group* mail = getgrnam("mail");
	ck_assert_ptr_nonnull(mail);
	ck_assert_int_eq(chown(mail_dir.c_str(), 0, mail->gr_gid), 0);
	chmod(mail_dir.c_str(), 02775);
	setenv("LAIM_MDA", mda.c_str(), 1);
	struct passwd* pw = getpwnam("nobody");
	ck_assert_ptr_nonnull(pw);
	struct group* primary = getgrgid(pw->pw_gid);
	ck_assert_ptr_nonnull(primary);
	std::string group = primary->gr_name;

	Config cfg = command_config("  x:\n    type: mbox\n", "mail_dir: " + mail_dir + "\ndelivery_timeout: 61\n");
	CommandRun r = run_command(cfg, {MAILBOX_INSTANCE, "0123456789", "s@x.example", {"nobody"}});
	ck_assert_string_eq(r.user, "nobody");
	// 61 s less a second for a command, four fifths of that to read and
	// lock, twice that before the parent kills laim-mda; no variable but
	// the PWD the shell sets itself.
	std::string head = "[" + mail_dir + "][nobody][48]\nnobody\n" + group + "\n";
	ck_assert_string_eq(r.output, head + "mail\n" + group + " mail\nPWD=/\n");
	ck_assert_uint_eq(r.exit.timeout, 120);

	// A mail directory the group may not write: the user's group alone.
	chmod(mail_dir.c_str(), 0755);
	r = run_command(cfg, {MAILBOX_INSTANCE, "0123456789", "s@x.example", {"nobody"}});
	ck_assert_string_eq(r.output, head + group + "\n" + group + "\nPWD=/\n");

	struct Row {
		std::vector<std::string> users;
		std::string why;
	};
	Row rows[] = {
		{{"nobody", "root"}, "a mailbox request names one user"},
		{{}, ""},  // no recipient: a malformed envelope
		{{"../etc/passwd"}, "mailbox: no such user \"../etc/passwd\""},
		{{"-nobody"}, "mailbox: no such user \"-nobody\""},
		{{"no-such-user-here"}, "mailbox: no such user \"no-such-user-here\""},
	};
	for (const Row& row : rows) {
		r = run_command(cfg, {MAILBOX_INSTANCE, "0123456789", "s@x.example", row.users});
		ck_assert_uint_eq(r.types.back(), IMSG_P_COMMAND_FAIL);
		ck_assert(r.fail.permanent);
		if (!row.why.empty())
			ck_assert_string_eq(r.fail.why, row.why);
	}
	unsetenv("LAIM_MDA");
	unlink(mda.c_str());
	rmdir(mail_dir.c_str());
	rmdir(dir);
}
END_TEST

// Requests the service refuses on the reply channel, each with its reason
// and whether a retry could help; nothing is started for any of them.
START_TEST(command_refusals)
{
	Config cfg = command_config(PRINTER);
	struct Row {
		CommandRunMsg req;
		bool permanent;
		std::string why;
	};
	const std::string malformed = "command: malformed envelope values";
	Row rows[] = {
		{{"show", "012345678", "s@x", {"r@y"}}, true, malformed},        // 9 digits
		{{"show", "0123456789a", "s@x", {"r@y"}}, true, malformed},      // 11
		{{"show", "abcdef0123", "s@x", {"r@y"}}, true, malformed},       // lower case
		{{"show", "0123456789", "s\n@x", {"r@y"}}, true, malformed},     // LF in a value
		{{"show", "0123456789", "s@x", {"r\x7f@y"}}, true, malformed},   // DEL
		{{"sh\tow", "0123456789", "s@x", {"r@y"}}, true, malformed},     // in the instance
		{{"show", "0123456789", "s@x", {}}, true, malformed},            // no recipient
		{{"show", "0123456789", std::string(1025, 's'), {"r@y"}}, true, malformed},
		{{"none", "0123456789", "s@x", {"r@y"}}, false,
		 "no pipe handler \"none\" in " + std::string(CONFIG_FILE)},
		{{"quiet", "0123456789", "s@x", {"r@y"}}, false,
		 "no pipe handler \"quiet\" in " + std::string(CONFIG_FILE)},
		// Temporary: a handler process with the config before a SIGHUP.
		{{"one", "0123456789", "s@x", {"a@y", "b@y"}}, false, "per_recipient: one recipient per command"},
		{{"rooted", "0123456789", "s@x", {"r@y"}}, false,
		 std::string(CONFIG_FILE) + ":18: handlers.rooted.user: \"root\" is root: a command never runs as root"},
		{{"bare", "0123456789", "s@x", {"-oQ/tmp@y"}}, true, ""},        // an option to the command
	};
	for (const Row& row : rows) {
		CommandRun r = run_command(cfg, row.req);
		ck_assert_msg(r.request_ok, "a well-formed request was a protocol error");
		ck_assert_msg(r.types.size() == 1 && r.types[0] == IMSG_P_COMMAND_FAIL,
			      "%s: not refused", row.req.instance.c_str());
		ck_assert_msg(r.fail.permanent == row.permanent, "%s: permanent %d, expected %d (%s)",
			      row.req.instance.c_str(), r.fail.permanent, row.permanent, r.fail.why.c_str());
		if (!row.why.empty())
			ck_assert_string_eq(r.fail.why, row.why);
	}
}
END_TEST

// A pipe or alias command whose user has the uid of laimd's handler or
// smtp process is refused, whatever the config check said at the load
// (the user database may have changed since): temporary, with the reason;
// nothing is started.
START_TEST(command_never_as_laims_own_uid)
{
	ck_assert_msg(geteuid() == 0, "the command service tests run as root (make check does)");
	ListedAliases listed;
	const std::string& aliases = listed.path;
	Config cfg = command_config(PRINTER, "aliases: " + aliases + "\nalias_commands: true\n");
	struct passwd* pw = getpwnam("nobody");
	ck_assert_ptr_nonnull(pw);
	RunAs nobody{"laimtest", pw->pw_uid, pw->pw_gid};
	const std::string pipe_why = "\"nobody\" has uid " + std::to_string(pw->pw_uid) + ", that of laimd's ";
	const std::string tail = " process (laimtest): a command never runs as laim's own processes do";
	for (const CommandRunMsg& req : {CommandRunMsg{"bare", "0123456789", "s@x.example", {"r@y.example"}},
					 CommandRunMsg{ALIAS_COMMAND_INSTANCE, "0123456789", "s@x.example",
						       {"|/bin/echo listed ran"}}}) {
		CommandRun r = run_command(cfg, req, nullptr, nobody);
		ck_assert_msg(r.types.size() == 1 && r.types[0] == IMSG_P_COMMAND_FAIL,
			      "%s: started as the handler process's uid", req.instance.c_str());
		ck_assert(!r.fail.permanent);
		ck_assert_string_eq(r.fail.why, pipe_why + "handler" + tail);
		r = run_command(cfg, req, nullptr, {}, nobody);
		ck_assert_msg(r.types.size() == 1 && r.types[0] == IMSG_P_COMMAND_FAIL,
			      "%s: started as the smtp process's uid", req.instance.c_str());
		ck_assert_string_eq(r.fail.why, pipe_why + "smtp" + tail);
	}
}
END_TEST

// A request that does not decode breaks the protocol: request() says so
// and the parent ends the handler process.
START_TEST(command_request_undecodable)
{
	Config cfg = command_config(PRINTER);
	std::string good = encode(CommandRunMsg{"show", "0123456789", "s@x", {"r@y"}});
	for (const std::string& bad : {good.substr(0, good.size() - 1), good + "x", std::string()})
		ck_assert(!run_command(cfg, {}, &bad).request_ok);
}
END_TEST

}  // namespace

int main()
{
	Suite* s = suite_create("parent");
	TCase* tc = tcase_create("supervision");
	tcase_add_test(tc, restart_backoff_doubles_to_a_minute);
	tcase_add_test(tc, restart_backoff_resets_after_a_stable_run);
	suite_add_tcase(s, tc);
	tc = tcase_create("child messages");
	tcase_add_test(tc, child_frames_valid);
	tcase_add_test(tc, child_frames_short_and_long);
	tcase_add_test(tc, child_payloads_short_and_long);
	tcase_add_test(tc, child_frames_fd_rules);
	tcase_add_test(tc, child_frames_other_types);
	suite_add_tcase(s, tc);
	tc = tcase_create("command service");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, command_argv_user_and_environment);
	tcase_add_test(tc, command_alias_targets);
	tcase_add_test(tc, command_mailbox_delivery);
	tcase_add_test(tc, command_refusals);
	tcase_add_test(tc, command_never_as_laims_own_uid);
	tcase_add_test(tc, command_request_undecodable);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
