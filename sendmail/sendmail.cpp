// sendmail(8) for laim: the system's mail submission command, also
// installed as mailq (-bp) and newaliases (-bi).
//
// The message on stdin is prepared (headers added, Bcc removed under -t,
// line ends made CRLF) into an unlinked temporary file, then submitted to
// laimd over its unix socket with SMTP. When laimd cannot be reached or
// answers with a temporary failure, the same file goes to the setgid
// laim-drop, which stores it in the spool's offline/ directory for laimd
// to import later. Exit status (sysexits.h): 0 once the message is
// stored, 64 usage, 65 data error, 67 a recipient refused, 69 laimd
// refused or is not there for -bp/-q, 74 reading the message or writing
// the output failed, 75 not even laim-drop could store it
// (or a -bs session ended without the 221 to QUIT).
#include "config.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "common/address.h"
#include "common/aliases.h"
#include "common/clock.h"
#include "common/ctl.h"
#include "common/fd.h"
#include "common/offline.h"
#include "sendmail/sendmail.h"

#ifndef LAIM_DROP
#define LAIM_DROP "/usr/libexec/laim/laim-drop"
#endif

using namespace laim;
using namespace laim::sendmail;

namespace {

std::string progname = "sendmail";

std::string random_hex(size_t bytes)
{
	unsigned char b[16] = {};
	bytes = std::min(bytes, sizeof b);
	if (getrandom(b, bytes, 0) != ssize_t(bytes)) {
		// Uniqueness only (Message-ID): time and pid already differ.
		for (size_t i = 0; i < bytes; i++)
			b[i] = static_cast<unsigned char>(rand());
	}
	static const char hex[] = "0123456789abcdef";
	std::string s;
	for (size_t i = 0; i < bytes; i++) {
		s += hex[b[i] >> 4];
		s += hex[b[i] & 15];
	}
	return s;
}

// An unlinked file for the prepared message, so that SMTP and laim-drop
// can both stream it and memory stays small: O_TMPFILE in $TMPDIR or
// /tmp, else a file unlinked at once, else (last resort) memory.
UniqueFd temp_file()
{
	std::vector<std::string> dirs;
	if (const char* t = getenv("TMPDIR"); t && *t)
		dirs.emplace_back(t);
	dirs.emplace_back("/tmp");
	int err = 0;
	for (const std::string& d : dirs) {
		UniqueFd fd(open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
		if (fd)
			return fd;
		std::string path = d + "/sendmail.XXXXXX";
		fd.reset(mkostemp(path.data(), O_CLOEXEC));
		if (fd) {
			unlink(path.c_str());
			return fd;
		}
		err = errno;
	}
	UniqueFd fd(memfd_create("sendmail", MFD_CLOEXEC));
	if (fd)
		return fd;
	throw Failure(EX_TEMPFAIL, std::string("cannot create a temporary file: ") + strerror(err));
}

// The caller, from the password database.
struct Caller {
	bool known = false;
	std::string login, gecos;
};

Caller caller()
{
	Caller c;
	if (struct passwd* pw = getpwuid(getuid())) {
		c.known = true;
		c.login = pw->pw_name;
		c.gecos = pw->pw_gecos ? pw->pw_gecos : "";
	}
	return c;
}

// login@domain, the default sender and From: address.
std::string login_address(const Caller& c, const std::string& domain)
{
	if (!c.known)
		throw Failure(EX_NOUSER, "cannot find the login name of uid " + std::to_string(getuid()) +
				       ": give a sender with -f");
	std::string a = qualify(c.login, domain);
	if (!valid_mailbox(a, true, false))
		throw Failure(EX_NOUSER, "the login name \"" + c.login + "\" is not a valid address: give a sender with -f");
	return a;
}

// A memory file holding the first len bytes of fd: where the message
// goes on when the temporary file's file system is full.
UniqueFd copy_to_memory(int fd, uint64_t len)
{
	UniqueFd mem(memfd_create("sendmail", MFD_CLOEXEC));
	char buf[64 * 1024];
	for (uint64_t off = 0; mem && off < len;) {
		ssize_t n = pread(fd, buf, std::min<uint64_t>(sizeof buf, len - off), static_cast<off_t>(off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || !write_all(mem.get(), std::string_view(buf, size_t(n))))
			return UniqueFd();
		off += static_cast<uint64_t>(n);
	}
	return mem;
}

// Reads stdin through a MessagePreparer into fd; the preparer, finished,
// has the -t recipients and what the message holds. A full /tmp (where
// cron's mail waits when the disk fills) moves the message to memory:
// fd is then a memory file.
MessagePreparer prepare(const Options& o, HeaderFacts facts, UniqueFd& fd)
{
	auto sink = [&fd, written = uint64_t{0}](std::string_view s) mutable {
		if (!write_all(fd.get(), s)) {
			int err = errno;
			UniqueFd mem = err == ENOSPC || err == EDQUOT || err == EFBIG ? copy_to_memory(fd.get(), written)
										    : UniqueFd();
			if (!mem || !write_all(mem.get(), s))
				throw Failure(EX_TEMPFAIL, std::string("cannot write the message to a temporary file: ") +
								   strerror(err));
			fd = std::move(mem);
		}
		written += s.size();
	};
	MessagePreparer prep(o.ignore_dots, o.extract_recipients, std::move(facts), sink);
	char buf[64 * 1024];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			throw Failure(EX_IOERR, std::string("reading the message: ") + strerror(errno));
		if (n == 0 || !prep.feed(std::string_view(buf, size_t(n))))
			break;
	}
	prep.finish();
	return prep;
}

// Hands the prepared message to laim-drop; its exit status is ours.
int offline_drop_once(const std::string& sender, const std::vector<std::string>& rcpts, int fd,
		      const std::string& why, bool verbose)
{
	const char* env = getenv("LAIM_DROP");
	std::string path = env && *env ? env : LAIM_DROP;
	if (verbose)
		fprintf(stderr, "%s: %s: handing the message to %s\n", progname.c_str(), why.c_str(), path.c_str());
	std::vector<const char*> argv = {"laim-drop", "-f", sender.c_str(), "--"};
	for (const std::string& r : rcpts)
		argv.push_back(r.c_str());
	argv.push_back(nullptr);
	// laim-drop gets an empty environment; a test build passes on its
	// seam, the spool of the laimd under test (see drop.cpp).
	std::vector<const char*> envp;
#ifdef LAIM_TEST_SEAMS
	const char* test_spool = getenv("LAIM_TEST_SPOOL_DIR");
	std::string test_env = std::string("LAIM_TEST_SPOOL_DIR=") + (test_spool ? test_spool : "");
	if (test_spool)
		envp.push_back(test_env.c_str());
#endif
	envp.push_back(nullptr);
	fflush(stderr);

	pid_t pid = fork();
	if (pid < 0)
		throw Failure(EX_TEMPFAIL, std::string("cannot store the message: fork: ") + strerror(errno));
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		if (lseek(fd, 0, SEEK_SET) == 0 && dup2(fd, STDIN_FILENO) == STDIN_FILENO)
			execve(path.c_str(), const_cast<char* const*>(argv.data()),
			       const_cast<char* const*>(envp.data()));
		dprintf(STDERR_FILENO, "%s: cannot store the message: %s: %s (laimd: %s)\n", progname.c_str(),
			path.c_str(), strerror(errno), why.c_str());
		_exit(EX_TEMPFAIL);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			throw Failure(EX_TEMPFAIL, std::string("waiting for laim-drop: ") + strerror(errno));
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	throw Failure(EX_TEMPFAIL, "cannot store the message: laim-drop killed by signal " +
				   std::to_string(WTERMSIG(status)));
}

// laim-drop takes at most OFFLINE_MAX_RECIPIENTS a file: as many files as
// that needs, for the recipients from first on.
int offline_drop(const std::string& sender, const std::vector<std::string>& rcpts, size_t first, int fd,
		 const std::string& why, bool verbose)
{
	for (size_t i = first; i < rcpts.size(); i += OFFLINE_MAX_RECIPIENTS) {
		auto from = rcpts.begin() + static_cast<ptrdiff_t>(i);
		auto to = rcpts.begin() + static_cast<ptrdiff_t>(std::min(rcpts.size(), i + OFFLINE_MAX_RECIPIENTS));
		int st = offline_drop_once(sender, std::vector<std::string>(from, to), fd, why, verbose);
		if (st != EX_OK)
			return st;
	}
	return EX_OK;
}

// The default mode: one message from stdin.
int deliver(const Options& o)
{
	gmime_init_once();
	std::string domain = mailname();
	Caller me = caller();
	std::string sender = o.sender ? parse_sender(*o.sender, domain) : login_address(me, domain);
	std::vector<std::string> rcpts;
	for (const std::string& a : o.recipients)
		add_address_list(a, domain, "recipient \"" + a + "\"", EX_USAGE, rcpts);
	if (rcpts.empty() && !o.extract_recipients)
		throw Failure(EX_DATAERR, "no recipients");

	// From: is the -f address, or the caller (for the null sender too);
	// named by -F or the GECOS. A null sender's message with a From: of
	// its own (a bounce, a vacation reply) needs no login name.
	HeaderFacts facts;
	facts.from_address = sender;
	if (sender.empty()) {
		try {
			facts.from_address = login_address(me, domain);
		} catch (const Failure& f) {
			facts.from_error = std::string("the message has no From: header, and ") + f.what();
		}
	}
	facts.from_name = o.full_name ? *o.full_name : gecos_name(me.gecos, me.login);
	facts.domain = domain;
	facts.now = time(nullptr);
	facts.pid = getpid();
	facts.random = random_hex(8);

	UniqueFd tmp = temp_file();
	MessagePreparer prep = prepare(o, std::move(facts), tmp);
	for (const std::string& r : prep.recipients())
		if (std::find(rcpts.begin(), rcpts.end(), r) == rcpts.end())
			rcpts.push_back(r);
	if (rcpts.empty())
		throw Failure(EX_DATAERR, "no recipients");

	Submission s;
	s.socket_path = submit_socket_path();
	s.sender = sender;
	s.recipients = rcpts;
	s.eight_bit = prep.eight_bit();
	s.message_fd = tmp.get();
	s.verbose = o.verbose;
	try {
		smtp_submit(s);
		return EX_OK;
	} catch (const TemporaryFailure& t) {
		// Those laimd has taken the message for are not given it twice.
		return offline_drop(sender, rcpts, s.submitted, tmp.get(), t.what(), o.verbose);
	}
}

// -bs: what laimd sent, to the client. A stdout that takes nothing (its
// reader gone) is our output's error, not laimd's: EX_IOERR.
void write_stdout(std::string_view s)
{
	if (!write_all(STDOUT_FILENO, s))
		throw Failure(EX_IOERR, std::string("writing to standard output: ") + strerror(errno));
}

// Copies laimd's greeting to stdout. The client's input is relayed only
// after it: laimd drops a client that talks first (RFC 5321 3.1), and a
// script piped into -bs has written all its commands already.
void relay_greeting(int sock)
{
	std::string buf;
	char b[4096];
	for (;;) {
		pollfd p{sock, POLLIN, 0};
		int n = poll(&p, 1, LAIMD_TIMEOUT * 1000);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			throw Failure(EX_TEMPFAIL, "no greeting from laimd within " + std::to_string(LAIMD_TIMEOUT) +
							   " seconds");
		ssize_t r = read(sock, b, sizeof b);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			throw Failure(EX_TEMPFAIL, "laimd closed the connection before its greeting");
		write_stdout(std::string_view(b, size_t(r)));
		buf.append(b, size_t(r));
		// The greeting ends with a line "220 ..." (not "220-...").
		for (size_t start = 0, lf; (lf = buf.find('\n', start)) != std::string::npos; start = lf + 1)
			if (lf - start < 4 || buf[start + 3] != '-')
				return;
		if (buf.size() > 64 * 1024)
			throw Failure(EX_PROTOCOL, "laimd sent an endless greeting");
	}
}

// -bs: copies stdin to laimd's socket and its replies to stdout, so the
// client speaks SMTP to laimd itself (and laimd sees our uid); SmtpRelay
// makes bare LFs CRLF and holds the input after DATA until its reply.
// Both directions move at once, the socket non-blocking: laimd stops
// reading a client that reads none of its replies, so a long pipelined
// input must have its replies taken while it goes on, or both sides wait
// for each other for ever. laimd that owes a reply, or takes none of
// our input, for LAIMD_TIMEOUT seconds ends the session (as sendmail's
// own submission waits no longer); a silent client is laimd's to time
// out. The session went well when it ended with the 221 to QUIT.
int relay_smtp()
{
	UniqueFd sock;
	try {
		sock = connect_unix(submit_socket_path());
	} catch (const TemporaryFailure& t) {
		printf("421 4.3.0 Mail system not available, try again later\r\n");
		fflush(stdout);
		throw Failure(EX_TEMPFAIL, t.what());
	}
	relay_greeting(sock.get());
	int flags = fcntl(sock.get(), F_GETFL);
	if (flags < 0 || fcntl(sock.get(), F_SETFL, flags | O_NONBLOCK) < 0)
		throw Failure(EX_OSERR, std::string("fcntl on laimd's socket: ") + strerror(errno));
	SmtpRelay relay;
	char in[16 * 1024], buf[16 * 1024];
	size_t in_start = 0, in_end = 0;  // stdin read, not yet taken by the relay
	bool reading = true;
	std::string out;  // for laimd: written up to out_start
	size_t out_start = 0;
	int64_t quiet_since = monotonic_ms();  // laimd's last move, or when we began to wait for one
	for (;;) {
		if (out_start == out.size() && in_start < in_end && !relay.held()) {
			out.clear();
			out_start = 0;
			in_start += relay.from_client(std::string_view(in + in_start, in_end - in_start), out);
		}
		bool writing = out_start < out.size();
		int64_t now = monotonic_ms();
		int wait = -1;
		if (!writing && !relay.awaits_reply()) {
			quiet_since = now;
		} else {
			int64_t left = quiet_since + LAIMD_TIMEOUT * 1000LL - now;
			if (left <= 0)
				throw Failure(EX_TEMPFAIL, "no answer from laimd within " + std::to_string(LAIMD_TIMEOUT) +
								   " seconds");
			wait = static_cast<int>(left);
		}
		bool more = reading && in_start == in_end && !writing;
		pollfd p[2] = {{more ? STDIN_FILENO : -1, POLLIN, 0},
			       {sock.get(), static_cast<short>(writing ? POLLIN | POLLOUT : POLLIN), 0}};
		if (poll(p, 2, wait) < 0) {
			if (errno == EINTR)
				continue;
			throw Failure(EX_OSERR, std::string("poll: ") + strerror(errno));
		}
		if (p[0].revents) {
			ssize_t n = read(STDIN_FILENO, in, sizeof in);
			if (n < 0 && errno == EINTR)
				continue;
			in_start = 0;
			in_end = n > 0 ? size_t(n) : 0;
			if (n <= 0) {
				shutdown(sock.get(), SHUT_WR);
				reading = false;
			}
		}
		if (writing && (p[1].revents & (POLLOUT | POLLERR))) {
			ssize_t n = write(sock.get(), out.data() + out_start, out.size() - out_start);
			if (n > 0) {
				out_start += size_t(n);
				quiet_since = monotonic_ms();
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				// laimd is gone: its last words are read below.
				out_start = out.size();
				in_start = in_end = 0;
				reading = false;
			}
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(sock.get(), buf, sizeof buf);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				break;
			quiet_since = monotonic_ms();
			relay.from_laimd(std::string_view(buf, size_t(n)));
			write_stdout(std::string_view(buf, size_t(n)));
		}
	}
	if (relay.last_code() == 221)
		return EX_OK;
	if (relay.last_code() == 421)
		throw Failure(EX_TEMPFAIL, "laimd ended the session (421)");
	throw Failure(EX_TEMPFAIL, "the session ended without QUIT");
}

// One control request; laimd not running is EX_UNAVAILABLE.
std::vector<std::string> control(const std::string& command)
{
	try {
		return ctl_request(ctl_socket_path(), command);
	} catch (const std::system_error& e) {
		throw Failure(EX_UNAVAILABLE, std::string("laimd is not running (") + e.what() + ")");
	} catch (const std::runtime_error& e) {
		throw Failure(EX_UNAVAILABLE, std::string("laimd: ") + e.what());
	}
}

// How many of the caller's messages (all, for root) wait in offline/:
// 0, with a warning, when laimd cannot say (one older than this command).
size_t offline_waiting()
{
	try {
		std::vector<std::string> n = control("show offline");
		if (n.size() == 1 && !n[0].empty() && n[0].size() < 10 &&
		    n[0].find_first_not_of("0123456789") == std::string::npos)
			return std::stoul(n[0]);
		fprintf(stderr, "%s: laimd: a malformed answer to show offline\n", progname.c_str());
	} catch (const Failure& f) {
		fprintf(stderr, "%s: cannot count the messages in offline/: %s\n", progname.c_str(), f.what());
	}
	return 0;
}

// -bp, mailq: the queue in the traditional layout, and the messages that
// laim-drop stored in offline/ while laimd could not take them.
int list_queue()
{
	std::vector<std::string> lines = control("show queue");
	size_t offline = offline_waiting();
	try {
		fputs(format_mailq(lines, offline).c_str(), stdout);
	} catch (const std::runtime_error& e) {
		throw Failure(EX_PROTOCOL, std::string("laimd: ") + e.what());
	}
	return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}

// -bi, newaliases: root has laimd re-read its aliases file (aliases: of
// laim.yml, which this command cannot read) and prints what laimd says it
// read, "PATH: N aliases". Without a running laimd, or for another user
// (who may not ask for a reload), it checks $LAIM_ALIASES or /etc/aliases.
int new_aliases()
{
	if (getuid() == 0) {
		try {
			std::vector<std::string> loaded = ctl_request(ctl_socket_path(), "reload aliases");
			for (const std::string& line : loaded)
				printf("%s\n", line.c_str());
			return EX_OK;
		} catch (const std::system_error& e) {
			fprintf(stderr, "%s: laimd is not running; it reads its aliases file when it starts\n",
				progname.c_str());
		} catch (const std::runtime_error& e) {
			fprintf(stderr, "%s: laimd: %s\n", progname.c_str(), e.what());
			return EX_DATAERR;
		}
	}
	const char* env = getenv("LAIM_ALIASES");
	std::string path = env && *env ? env : "/etc/aliases";
	std::vector<std::string> errors;
	Aliases aliases = Aliases::load(path, &errors);
	for (const std::string& e : errors)
		fprintf(stderr, "%s: %s\n", progname.c_str(), e.c_str());
	if (!errors.empty())
		return EX_DATAERR;
	printf("%s: %zu aliases\n", path.c_str(), aliases.size());
	if (getuid() != 0) {
		fprintf(stderr, "%s: only root can make laimd re-read its aliases file\n", progname.c_str());
		return EX_NOPERM;
	}
	return EX_OK;
}

int run(int argc, char** argv)
{
	std::vector<std::string> args(argv + 1, argv + argc);
	Options o = parse_options(argv[0], args);
	switch (o.mode) {
	case Mode::ListQueue:
		return list_queue();
	case Mode::Flush:
		control("flush");
		return EX_OK;
	case Mode::NewAliases:
		return new_aliases();
	case Mode::SmtpRelay:
		return relay_smtp();
	case Mode::Deliver:
		break;
	}
	return deliver(o);
}

}  // namespace

int main(int argc, char** argv)
{
	if (argc < 1 || argv[0] == nullptr)
		return EX_USAGE;
	std::string_view a0 = argv[0];
	if (size_t slash = a0.rfind('/'); slash != std::string_view::npos)
		a0.remove_prefix(slash + 1);
	if (!a0.empty())
		progname = a0;
	open_std_fds();
	signal(SIGPIPE, SIG_IGN);
	try {
		return run(argc, argv);
	} catch (const Failure& f) {
		fprintf(stderr, "%s: %s\n", progname.c_str(), f.what());
		return f.code();
	} catch (const std::exception& e) {
		fprintf(stderr, "%s: %s\n", progname.c_str(), e.what());
		return EX_SOFTWARE;
	}
}
