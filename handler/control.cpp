// The control protocol, server side; see control.h.
#include "handler/control.h"

#include <exception>

#include "common/log.h"

namespace laim {

namespace {

constexpr uid_t ROOT_UID = 0;
constexpr size_t QUEUE_ID_LEN = 10;

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

// A field value as it may appear in a response line, escaped as the log
// escapes it (log_escape): tab, CR, LF and the other control characters
// become \t, \r, \n, \xNN, and so does every byte from 0x80 unless the
// value is UTF-8 without C1 controls or bidi overrides. No value can add
// a field or a line, and a peer's words quoted in a last error cannot
// drive the terminal that shows them.
std::string field(std::string_view s) { return log_escape(s); }

// A stats key must stay one word: spaces become '_' as well.
std::string stats_key(std::string_view s)
{
	std::string out = field(s);
	for (char& c : out)
		if (c == ' ')
			c = '_';
	return out;
}

std::string join_recipients(const std::vector<std::string>& rcpts)
{
	std::string out;
	for (const auto& r : rcpts) {
		if (!out.empty())
			out += ',';
		out += field(r);
	}
	return out;
}

// The first line of a failure reason (the .reason file may hold a full
// remote reply).
std::string_view first_line(std::string_view s)
{
	size_t nl = s.find_first_of("\r\n");
	return nl == std::string_view::npos ? s : s.substr(0, nl);
}

// A queue id as Spool::new_id makes them: 10 upper-case hex digits.
bool valid_queue_id(std::string_view id)
{
	if (id.size() != QUEUE_ID_LEN)
		return false;
	for (char c : id)
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
			return false;
	return true;
}

std::string err(std::string_view msg) { return "ERR " + field(msg) + "\n"; }

std::string show_queue(ControlTarget& t, uid_t uid)
{
	std::string out = "OK\n";
	for (const QueueItem& q : t.queue()) {
		// A user sees only what they submitted; root sees everything.
		if (uid != ROOT_UID && q.uid != uid)
			continue;
		out += field(q.id) + '\t' + std::to_string((long long)q.arrival) + '\t' +
		       std::to_string(q.size) + '\t' +
		       (q.uid ? std::to_string(*q.uid) : std::string("-")) + '\t' +
		       field(q.sender) + '\t' + join_recipients(q.recipients) + '\t' +
		       std::to_string(q.attempts) + '\t' + field(q.last_error) + '\n';
	}
	return out;
}

// A user counts only their own files (laim-drop leaves them the owner).
std::string show_offline(ControlTarget& t, uid_t uid)
{
	return "OK\n" + std::to_string(t.offline(uid == ROOT_UID ? std::nullopt : std::optional<uid_t>(uid))) + "\n";
}

// "" now, the list through later.
std::string show_failed(ControlTarget& t, ControlReply later)
{
	if (!later)
		return err("show failed: no way to answer later");
	t.failed([later](std::vector<FailedItem> items, std::string error) {
		if (!error.empty())
			return later(err(error));
		std::string out = "OK\n";
		for (const FailedItem& f : items)
			out += field(f.id) + '\t' + std::to_string((long long)f.arrival) + '\t' +
			       std::to_string(f.size) + '\t' + field(f.sender) + '\t' +
			       join_recipients(f.recipients) + '\t' + field(first_line(f.reason)) + '\n';
		later(out);
	});
	return "";
}

std::string show_stats(ControlTarget& t)
{
	std::string out = "OK\n";
	for (const auto& [key, value] : t.stats())
		out += stats_key(key) + ' ' + std::to_string(value) + '\n';
	return out;
}

std::string show_limits(ControlTarget& t)
{
	std::string out = "OK\n";
	for (const LimitItem& l : t.limits())
		out += field(l.key) + '\t' + field(l.who) + '\t' + std::to_string(l.count) + '\t' +
		       std::to_string(l.limit) + '\t' + std::to_string(l.window) + '\t' +
		       (l.per_recipient ? "recipient" : "message") + '\t' + std::to_string((long long)l.left) + '\t' +
		       std::to_string(l.refused) + '\t' + (l.held ? "yes" : "no") + '\t' + field(l.alert) + '\n';
	return out;
}

// "reset-limit KEY" for root; arg is everything after "reset-limit". The
// key is the rest of the line: a sender key's quoted local part may hold
// spaces ("sender:\"a b\"@host").
std::string reset_limit(ControlTarget& t, std::string_view arg)
{
	if (arg.size() < 2 || arg[0] != ' ')
		return err("usage: reset-limit KEY");
	std::string key(arg.substr(1));
	return t.reset_limit(key) ? "OK\n" : err("no rate limit window for " + key);
}

// "remove ID" for root; arg is everything after "remove".
std::string remove_message(ControlTarget& t, std::string_view arg)
{
	if (arg.size() < 2 || arg[0] != ' ' || arg.find(' ', 1) != std::string_view::npos)
		return err("usage: remove ID");
	std::string_view id = arg.substr(1);
	if (!valid_queue_id(id))
		return err("invalid queue id: " + std::string(id));
	if (std::string why = t.remove(std::string(id)); !why.empty())
		return err(why);
	return "OK\n";
}

// "test INSTANCE" for root: "" now, the verdict through later.
std::string test_instance(ControlTarget& t, std::string_view arg, ControlReply later)
{
	if (arg.size() < 2 || arg[0] != ' ' || arg.find(' ', 1) != std::string_view::npos || !later)
		return err("usage: test INSTANCE");
	std::string name(arg.substr(1));
	bool started = t.test(name, [name, later](bool ready, std::string what) {
		later(ready ? "OK\n" + field(name) + ": ready: " + field(what) + "\n"
			    : err(name + ": not ready: " + what));
	});
	return started ? "" : err("no handler instance " + name);
}

// Dispatches a well-formed request line (no newline, no control bytes).
std::string dispatch(std::string_view req, uid_t uid, ControlTarget& t, ControlReply later)
{
	bool root = uid == ROOT_UID;

	if (req == "show queue")
		return show_queue(t, uid);
	if (req == "show offline")
		return show_offline(t, uid);
	if (req == "flush") {
		t.flush(root ? std::nullopt : std::optional<uid_t>(uid));
		return "OK\n";
	}
	bool known = req == "show stats" || req == "show failed" || req == "show limits" || req == "reload aliases" ||
	             req == "remove" || req.starts_with("remove ") || req == "test" || req.starts_with("test ") ||
	             req == "reset-limit" || req.starts_with("reset-limit ");
	if (!known)
		return err("unknown command: " + std::string(req));
	// The rest is for root only; the arguments of a refused command are
	// not even looked at.
	if (!root)
		return err("permission denied");
	if (req == "show stats")
		return show_stats(t);
	if (req == "show failed")
		return show_failed(t, std::move(later));
	if (req == "show limits")
		return show_limits(t);
	if (req.starts_with("reset-limit"))
		return reset_limit(t, req.substr(11));
	if (req == "reload aliases") {
		std::string loaded;
		std::string error = t.reload_aliases(&loaded);
		return error.empty() ? "OK\n" + field(loaded) + "\n" : err(error);
	}
	if (req.starts_with("test"))
		return test_instance(t, req.substr(4), std::move(later));
	return remove_message(t, req.substr(6));
}

}  // namespace

std::string control_answer(std::string_view line, uid_t uid, ControlTarget& t, ControlReply later)
{
	if (line.ends_with('\n'))
		line.remove_suffix(1);
	if (line.size() >= CONTROL_MAX_LINE)
		return err("request too long");
	if (line.empty())
		return err("empty request");
	for (unsigned char c : line)
		if (is_control(c))
			return err("malformed request");
	try {
		return dispatch(line, uid, t, std::move(later));
	} catch (const std::exception& e) {
		return err(std::string("internal error: ") + e.what());
	}
}

}  // namespace laim
