#include "handler/import.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include "common/address.h"
#include "common/fd.h"
#include "common/hop_count.h"
#include "common/hostname.h"
#include "common/log.h"
#include "common/offline.h"

namespace laim {

namespace {

// A read-only mapping of one offline file, unmapped on every path.
struct Mapping {
	void* p = MAP_FAILED;
	size_t len = 0;
	~Mapping()
	{
		if (p != MAP_FAILED)
			munmap(p, len);
	}
};

// "Sun, 22 Nov 2026 02:24:26 +0000" for the Received: header.
std::string rfc5322_now()
{
	char buf[64];
	time_t t = time(nullptr);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	return buf;
}

}  // namespace

OfflineImport::OfflineImport(Spool& spool, std::string hostname, gid_t drop_gid, RateLimiter& limits)
	: spool_(spool), hostname_(std::move(hostname)), drop_gid_(drop_gid), limits_(limits)
{
}

std::vector<Imported> OfflineImport::run(size_t room, uint64_t size_limit, uint32_t hop_limit,
					 const std::vector<Route>& routes, const Expand& expand)
{
	std::vector<Imported> out;
	bool removed = remove_imported();
	if (room > 0)
		import_some(room, size_limit, hop_limit, routes, expand, out);
	// A removal not yet on disk could come back at a stop of the system,
	// after its message was delivered and removed: imported once more.
	if (removed || !out.empty())
		sync_offline();
	return out;
}

// Up to room files of offline/ into out, oldest name first.
void OfflineImport::import_some(size_t room, uint64_t size_limit, uint32_t hop_limit,
				const std::vector<Route>& routes, const Expand& expand, std::vector<Imported>& out)
{
	std::vector<std::string> names;
	if (!not_imported(names)) {
		log_warn("%s/offline", spool_.dir().c_str());
		return;
	}
	// laim-drop's names begin with the time: the oldest go first.
	std::sort(names.begin(), names.end());
	std::map<std::string, Envelope> was_held;
	was_held.swap(held_);
	next_release_ = 0;
	time_t now = time(nullptr);
	for (const std::string& name : names) {
		if (out.size() >= room)
			break;
		auto h = was_held.find(name);
		if (h != was_held.end() && held(name, h->second, now))
			continue;
		Imported m;
		if (import_one(name, size_limit, hop_limit, routes, expand, m))
			out.push_back(std::move(m));
	}
}

// The files of imported_ go from offline/ (gone already: forgotten);
// one that cannot be removed is tried again at the next run. True when
// any was removed.
bool OfflineImport::remove_imported()
{
	bool removed = false;
	for (auto it = imported_.begin(); it != imported_.end();) {
		const auto& [name, id] = *it;
		std::string path = spool_.dir() + "/offline/" + name;
		if (unlink(path.c_str()) == 0) {
			log_warnx("offline/%s: imported before as %s: removed, not imported again", name.c_str(), id.c_str());
			removed = true;
		} else if (errno != ENOENT) {
			log_warn("%s: imported as %s, not removed (tried again, never imported again)", path.c_str(),
				 id.c_str());
			++it;
			continue;
		}
		it = imported_.erase(it);
	}
	return removed;
}

void OfflineImport::sync_offline()
{
	std::string dir = spool_.dir() + "/offline";
	if (int err = fsync_dir(dir.c_str()))
		log_warnx("fsync %s: %s (a stop of the system could bring back the files just imported)", dir.c_str(),
			  strerror(err));
}

// Whether a file from who waits for its rate limit's window: it is
// remembered, so that it is not read again before the window allows.
bool OfflineImport::held(const std::string& name, const Envelope& who, time_t now)
{
	time_t until = limits_.hold(who, now);
	if (!until)
		return false;
	held_[name] = who;
	if (!next_release_ || until < next_release_)
		next_release_ = until;
	return true;
}

// One offline file: checked, copied into a fresh spool file with a
// Received: header, committed, and only then removed from offline/.
bool OfflineImport::import_one(const std::string& name, uint64_t size_limit, uint32_t hop_limit,
			       const std::vector<Route>& routes, const Expand& expand, Imported& out)
{
	Envelope& env = out.env;
	std::string path = spool_.dir() + "/offline/" + name;
	UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
	struct stat st;
	if (!fd || fstat(fd.get(), &st) == -1) {
		if (errno == ENOENT)
			return false;  // gone meanwhile
		if (!postpone(name, "open"))
			refuse(name, std::string("cannot open: ") + strerror(errno));
		return false;
	}
	std::string user = login_name(st.st_uid);
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
		return refuse(name, "not a regular file with one link"), false;
	if (st.st_gid != drop_gid_)
		return refuse(name, "not created by laim-drop (group " + std::to_string(st.st_gid) + ")"), false;
	if (user.empty())
		return refuse(name, "owner uid " + std::to_string(st.st_uid) + " is not a user"), false;
	if (st.st_size == 0)
		return refuse(name, "empty file"), false;
	if (name.find_first_of("\r\n") != std::string::npos)
		return refuse(name, "CR or LF in the file name"), false;  // it goes into the spool header
	if (admits && !admits(st.st_uid))
		return false;

	Mapping m;
	m.len = static_cast<size_t>(st.st_size);
	m.p = mmap(nullptr, m.len, PROT_READ, MAP_PRIVATE, fd.get(), 0);
	if (m.p == MAP_FAILED) {
		if (!postpone(name, "mmap"))
			refuse(name, std::string("mmap: ") + strerror(errno));
		return false;
	}
	std::string_view data(static_cast<const char*>(m.p), m.len);
	OfflineEnvelope oe;
	size_t hdr;
	try {
		hdr = offline_decode(data, oe);
	} catch (const std::exception& e) {
		return refuse(name, std::string("malformed: ") + e.what()), false;
	}
	std::string_view body = data.substr(hdr);
	if (!oe.sender.empty() && !valid_mailbox(oe.sender, true))
		return refuse(name, "bad sender <" + oe.sender + ">"), false;
	auto refused = [&](const char* code, const std::string& why) {
		return refuse_and_tell(name, oe, st.st_mtime, body, code, why);
	};
	if (size_limit && body.size() > size_limit)
		return refused("5.3.4", "message of " + std::to_string(body.size()) + " bytes exceeds data_size_limit");
	if (std::string fault = offline_body_fault(body); !fault.empty())
		return refused("5.6.0", fault);
	// The same mail loop check as the smtp process's at the end of DATA.
	HopCounter hops;
	hops.feed(body);
	if (hops.hops() > hop_limit)
		return refused("5.4.6", hop_count_fault(hops.hops(), hop_limit));
	for (const std::string& r : oe.recipients) {
		if (!valid_mailbox(r, true))
			return refused("5.1.3", "bad recipient <" + r + ">");
		Expanded x = expand(r);
		if (x.status == BackendStatus::Defer || x.status == BackendStatus::TooMany) {
			log_warnx("offline/%s: cannot import now: recipient <%s> deferred", name.c_str(), r.c_str());
			return false;
		}
		for (std::string& a : x.addresses)
			add_recipient(routes, env.recipients, std::move(a));
	}
	if (env.recipients.empty())
		return refused("5.1.1", "no recipients left after alias expansion");

	env.sender = oe.sender;
	env.uid = st.st_uid;
	env.client = "local";
	env.helo = "localhost";
	env.arrival = st.st_mtime;
	env.offline = name;
	time_t now = time(nullptr);
	if (held(name, env, now))
		return false;
	RateLimiter::Ticket ticket = limits_.reserve(env, now);
	try {
		env.id = spool_.new_id();
		std::string received = "Received: from local uid " + std::to_string(st.st_uid) + " (" +
				       comment_name(user) + ")\r\n\tby " + hostname_ + " (laim) with local-offline id " +
				       env.id + "; " + rfc5322_now() + "\r\n";
		out.size = spool_.store(env, {received, body});  // durable before the original goes
	} catch (const std::exception& e) {
		log_warnx("offline/%s: cannot import now: %s", name.c_str(), e.what());
		limits_.release(ticket);
		return false;
	}
	log_info("%s: from=<%s>, size=%zu, nrcpt=%zu, client=local, uid=%u, offline=%s", env.id.c_str(),
		 env.sender.c_str(), body.size(), env.recipients.size(), (unsigned)st.st_uid, name.c_str());
	if (unlink(path.c_str()) == -1)
		imported_before(name, env.id);  // removed at the next run
	if (!ticket.windows.empty())
		limits_.count(ticket, env, message_subject(body));
	return true;
}

// A shortage of descriptors or memory (errno) is no fault of the file:
// it stays in offline/ for a later look. True when that is the case.
bool OfflineImport::postpone(const std::string& name, const char* what)
{
	int err = errno;
	if (err != EMFILE && err != ENFILE && err != ENOMEM && err != EAGAIN)
		return false;
	log_warnx("offline/%s: cannot import now: %s: %s", name.c_str(), what, strerror(err));
	return true;
}

// Counted by their owner, the caller of laim-drop; a name whose message
// is in queue/ already is not counted twice.
size_t OfflineImport::waiting(std::optional<uid_t> owner) const
{
	std::string dir = spool_.dir() + "/offline/";
	std::vector<std::string> names;
	if (!not_imported(names))
		throw std::runtime_error(dir + ": " + strerror(errno));
	size_t n = 0;
	for (const std::string& name : names) {
		struct stat st;
		n += fstatat(AT_FDCWD, (dir + name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		     (!owner || st.st_uid == *owner);
	}
	return n;
}

// The entries of offline/ not imported before, into names; false (errno
// set) when offline/ cannot be read.
bool OfflineImport::not_imported(std::vector<std::string>& names) const
{
	DIR* d = opendir((spool_.dir() + "/offline").c_str());
	if (!d)
		return false;
	while (struct dirent* e = readdir(d))
		if (e->d_name[0] != '.' && !imported_.count(e->d_name))
			names.push_back(e->d_name);
	closedir(d);
	return true;
}

// Only a regular file is read for its envelope: a planted symlink is not
// followed, a FIFO cannot block the handler.
std::vector<CtlFailedEntry> OfflineImport::refused() const
{
	std::vector<CtlFailedEntry> out;
	std::string dir = spool_.dir() + "/failed/";
	DIR* d = opendir(dir.c_str());
	if (!d)
		return out;
	while (struct dirent* de = readdir(d)) {
		std::string name = de->d_name;
		bool reason_file = name.size() > 7 && name.compare(name.size() - 7, 7, ".reason") == 0;
		struct stat st;
		if (name.rfind("offline.", 0) != 0 || reason_file ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			continue;
		CtlFailedEntry f;
		f.id = name;
		f.arrival = st.st_mtime;
		f.reason = spool_.reason(name);
		if (!S_ISREG(st.st_mode)) {
			out.push_back(std::move(f));
			continue;
		}
		f.size = static_cast<uint64_t>(st.st_size);
		std::string head(std::min<size_t>(f.size, 1 << 20), '\0');  // the envelope is at the start
		std::ifstream file(dir + name, std::ios::binary);
		OfflineEnvelope oe;
		try {
			if (file.read(head.data(), static_cast<std::streamsize>(head.size()))) {
				offline_decode(head, oe);
				f.sender = oe.sender;
				f.recipients = oe.recipients;
			}
		} catch (const std::exception&) {
			// not a file laim-drop made: the reason says so
		}
		out.push_back(std::move(f));
	}
	closedir(d);
	return out;
}

// A file laimd will not import is kept for the administrator in failed/,
// with its reason beside it (laimctl show failed lists both). False when
// it could not be moved there.
bool OfflineImport::refuse(const std::string& name, const std::string& why)
{
	std::string from = spool_.dir() + "/offline/" + name;
	std::string to = spool_.dir() + "/failed/offline." + name;
	try {
		spool_.write_reason("offline." + name, why);
	} catch (const std::exception& e) {
		log_warnx("offline/%s: %s", name.c_str(), e.what());
	}
	if (rename(from.c_str(), to.c_str()) == -1) {
		log_warn("offline/%s: refused (%s), and cannot move it to failed/", name.c_str(), why.c_str());
		return false;
	}
	log_warnx("offline/%s: refused (%s): moved to failed/offline.%s", name.c_str(), why.c_str(), name.c_str());
	return true;
}

// A refusal of a file whose envelope was read: its sender is told, once
// the file is in failed/ (left in offline/, it is refused again at each
// look, and would be told each time). Always false: nothing imported.
bool OfflineImport::refuse_and_tell(const std::string& name, const OfflineEnvelope& oe, time_t arrival,
				    std::string_view body, const char* code, const std::string& why)
{
	if (!refuse(name, why) || !tell_sender)
		return false;
	Envelope env;
	env.id = "offline." + name;  // as failed/ and laimctl show failed name it
	env.sender = oe.sender;
	env.arrival = arrival;
	std::vector<std::string> failures;
	for (const std::string& r : oe.recipients)
		failures.push_back("<" + r + ">: " + code + " refused from offline/: " + why);
	tell_sender(env, failures, body);
	return false;
}

}  // namespace laim
