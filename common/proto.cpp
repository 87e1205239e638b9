// The payloads of laim's imsg types: one encode/decode pair each.
#include "common/proto.h"

#include <openssl/crypto.h>

#include <algorithm>

#include "common/config.h"
#include "common/submitter.h"

namespace laim {

namespace {

// A status travels as its u32 value; a value past the enum's last is refused.
template <typename Enum>
bool status(ImsgReader& r, Enum& out, Enum last)
{
	uint32_t v;
	if (!r.u32(v) || v > static_cast<uint32_t>(last))
		return false;
	out = static_cast<Enum>(v);
	return true;
}

// A list of strings: its count, then each. The count is checked against
// the frame's size, so that a forged one cannot make the reader reserve
// more than the frame holds (each string takes at least its length).
void put_strs(ImsgWriter& w, const std::vector<std::string>& v)
{
	w.u32(static_cast<uint32_t>(v.size()));
	for (const std::string& s : v)
		w.str(s);
}

bool get_strs(ImsgReader& r, std::string_view data, std::vector<std::string>& v)
{
	uint32_t n;
	if (!r.u32(n) || n > data.size() / 4)
		return false;
	v.assign(n, "");
	for (std::string& s : v)
		if (!r.str(s))
			return false;
	return true;
}

// The payloads that are one string.
std::string encode_str(std::string_view v) { return ImsgWriter().str(v).data(); }

bool decode_str(std::string_view data, std::string& v)
{
	ImsgReader r(data);
	return r.str(v) && r.done();
}

}  // namespace

const char* imsg_name(uint32_t type)
{
	switch (type) {
	case IMSG_P_SMTP_CONF: return "IMSG_P_SMTP_CONF";
	case IMSG_P_HANDLER_CHANNEL: return "IMSG_P_HANDLER_CHANNEL";
	case IMSG_P_HANDLER_CONF: return "IMSG_P_HANDLER_CONF";
	case IMSG_P_SMTP_CHANNEL: return "IMSG_P_SMTP_CHANNEL";
	case IMSG_S_MAIL: return "IMSG_S_MAIL";
	case IMSG_S_RCPT: return "IMSG_S_RCPT";
	case IMSG_S_DATA: return "IMSG_S_DATA";
	case IMSG_S_COMMIT: return "IMSG_S_COMMIT";
	case IMSG_S_ABORT: return "IMSG_S_ABORT";
	case IMSG_S_MAIL_LOCAL: return "IMSG_S_MAIL_LOCAL";
	case IMSG_H_MAIL: return "IMSG_H_MAIL";
	case IMSG_H_RCPT: return "IMSG_H_RCPT";
	case IMSG_H_DATA_OK: return "IMSG_H_DATA_OK";
	case IMSG_H_DATA_FAIL: return "IMSG_H_DATA_FAIL";
	case IMSG_H_COMMIT: return "IMSG_H_COMMIT";
	case IMSG_C_PEER_ERROR: return "IMSG_C_PEER_ERROR";
	case IMSG_C_PEER_ERROR_FD: return "IMSG_C_PEER_ERROR_FD";
	case IMSG_H_COMMAND_RUN: return "IMSG_H_COMMAND_RUN";
	case IMSG_P_COMMAND_INPUT: return "IMSG_P_COMMAND_INPUT";
	case IMSG_P_COMMAND_UNREAD: return "IMSG_P_COMMAND_UNREAD";
	case IMSG_P_COMMAND_OUTPUT: return "IMSG_P_COMMAND_OUTPUT";
	case IMSG_P_COMMAND_EXIT: return "IMSG_P_COMMAND_EXIT";
	case IMSG_P_COMMAND_FAIL: return "IMSG_P_COMMAND_FAIL";
	case IMSG_P_SMTP_TLS: return "IMSG_P_SMTP_TLS";
	case IMSG_T_RSA_PRIV_ENC: return "IMSG_T_RSA_PRIV_ENC";
	case IMSG_T_ECDSA_SIGN: return "IMSG_T_ECDSA_SIGN";
	case IMSG_K_RESULT: return "IMSG_K_RESULT";
	case IMSG_T_KEY_IN_USE: return "IMSG_T_KEY_IN_USE";
	case IMSG_S_AUTH: return "IMSG_S_AUTH";
	case IMSG_P_AUTH: return "IMSG_P_AUTH";
	case IMSG_S_CLIENT_UID: return "IMSG_S_CLIENT_UID";
	case IMSG_P_CLIENT_UID: return "IMSG_P_CLIENT_UID";
	}
	return "an unknown imsg type";
}

void unexpected_imsg(const Imsg& m)
{
	throw ImsgProtocolError(std::string("unexpected ") + imsg_name(m.type));
}

SmtpConf smtp_conf(const Config& cfg, const std::string& hostname, const std::vector<std::string>& host_addresses)
{
	return {hostname, cfg.ident, cfg.data_size_limit, cfg.hop_count_limit, cfg.enable_smtputf8,
		cfg.timeout, cfg.max_sessions, cfg.greeting_delay, host_addresses};
}

std::string encode(const SmtpConf& m)
{
	ImsgWriter w;
	w.str(m.hostname).str(m.ident).u64(m.size_limit).u32(m.hop_count_limit).u32(m.smtputf8)
		.u32(m.timeout).u32(m.max_sessions).u32(m.greeting_delay);
	put_strs(w, m.host_addresses);
	return w.data();
}

bool decode(std::string_view data, SmtpConf& m)
{
	ImsgReader r(data);
	uint32_t utf8;
	if (!(r.str(m.hostname) && r.str(m.ident) && r.u64(m.size_limit) && r.u32(m.hop_count_limit) &&
	      r.u32(utf8) && r.u32(m.timeout) && r.u32(m.max_sessions) && r.u32(m.greeting_delay) &&
	      get_strs(r, data, m.host_addresses)))
		return false;
	m.smtputf8 = utf8 != 0;
	return r.done();
}

std::string encode(const HandlerConf& m) { return encode_str(m.file); }

bool decode(std::string_view data, HandlerConf& m) { return decode_str(data, m.file); }

std::string encode(const HandlerConfText& m) { return ImsgWriter().str(m.text).str(m.secrets).data(); }

bool decode(std::string_view data, HandlerConfText& m)
{
	ImsgReader r(data);
	return r.str(m.text) && r.str(m.secrets) && r.done();
}

std::string encode(const MailMsg& m)
{
	return ImsgWriter().str(m.sender).str(m.helo).str(m.client).str(m.auth_user).data();
}

bool decode(std::string_view data, MailMsg& m)
{
	ImsgReader r(data);
	return r.str(m.sender) && r.str(m.helo) && r.str(m.client) && r.str(m.auth_user) && r.done();
}

std::string encode(const RcptMsg& m) { return encode_str(m.rcpt); }

bool decode(std::string_view data, RcptMsg& m) { return decode_str(data, m.rcpt); }

std::string encode(const CommitMsg& m) { return ImsgWriter().u64(m.size).data(); }

bool decode(std::string_view data, CommitMsg& m)
{
	ImsgReader r(data);
	return r.u64(m.size) && r.done();
}

std::string encode(const StatusMsg& m)
{
	return ImsgWriter().u32(static_cast<uint32_t>(m.status)).str(m.text).data();
}

bool decode(std::string_view data, StatusMsg& m)
{
	ImsgReader r(data);
	if (!status(r, m.status, BackendStatus::TooMany) || !r.str(m.text) || !r.done())
		return false;
	return m.text.size() <= STATUS_TEXT_MAX &&
	       std::all_of(m.text.begin(), m.text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

std::string encode(const DataOkMsg& m)
{
	return ImsgWriter().str(m.queue_id).u32(m.uid.has_value()).u32(m.uid.value_or(0)).str(m.user).data();
}

bool decode(std::string_view data, DataOkMsg& m)
{
	ImsgReader r(data);
	uint32_t has_uid, uid;
	if (!(r.str(m.queue_id) && r.u32(has_uid) && r.u32(uid) && r.str(m.user) && r.done()) || has_uid > 1)
		return false;
	m.uid.reset();
	if (has_uid)
		m.uid = uid;
	return true;
}

std::string encode(const PeerErrorMsg& m) { return ImsgWriter().str(m.what).str(m.frame).data(); }

bool decode(std::string_view data, PeerErrorMsg& m)
{
	ImsgReader r(data);
	return r.str(m.what) && r.str(m.frame) && r.done() && m.what.size() <= PEER_ERROR_WHAT_MAX &&
	       m.frame.size() <= PEER_ERROR_FRAME_MAX;
}

std::string encode(const CommandRunMsg& m)
{
	ImsgWriter w;
	w.str(m.instance).str(m.queue_id).str(m.sender);
	put_strs(w, m.recipients);
	return w.data();
}

bool decode(std::string_view data, CommandRunMsg& m)
{
	ImsgReader r(data);
	return r.str(m.instance) && r.str(m.queue_id) && r.str(m.sender) && get_strs(r, data, m.recipients) &&
	       r.done();
}

std::string encode(const CommandStartedMsg& m) { return encode_str(m.user); }

bool decode(std::string_view data, CommandStartedMsg& m) { return decode_str(data, m.user); }

std::string encode(const CommandExitMsg& m)
{
	return ImsgWriter().u32(m.status).u32(m.timed_out).u32(m.timeout).data();
}

bool decode(std::string_view data, CommandExitMsg& m)
{
	ImsgReader r(data);
	uint32_t timed_out;
	if (!(r.u32(m.status) && r.u32(timed_out) && r.u32(m.timeout) && r.done()) || timed_out > 1)
		return false;
	m.timed_out = timed_out;
	return true;
}

std::string encode(const CommandFailMsg& m) { return ImsgWriter().u32(m.permanent).str(m.why).data(); }

bool decode(std::string_view data, CommandFailMsg& m)
{
	ImsgReader r(data);
	uint32_t permanent;
	if (!(r.u32(permanent) && r.str(m.why) && r.done()) || permanent > 1)
		return false;
	m.permanent = permanent;
	return true;
}

std::string encode(const AuthMsg& m) { return ImsgWriter().u32(m.listener).str(m.user).str(m.password).data(); }

bool decode(std::string_view data, AuthMsg& m)
{
	ImsgReader r(data);
	return r.u32(m.listener) && r.str(m.user) && r.str(m.password) && r.done();
}

std::string encode(const AuthResultMsg& m)
{
	ImsgWriter w;
	w.u32(m.ok).u32(m.bound);
	put_strs(w, m.senders);
	return w.data();
}

bool decode(std::string_view data, AuthResultMsg& m)
{
	ImsgReader r(data);
	uint32_t ok, bound;
	if (!(r.u32(ok) && r.u32(bound)) || ok > 1 || bound > 1 || !get_strs(r, data, m.senders))
		return false;
	m.ok = ok;
	m.bound = bound;
	return r.done();
}

std::string encode(const ClientUidMsg& m) { return ImsgWriter().u32(m.known).u32(m.uid).data(); }

bool decode(std::string_view data, ClientUidMsg& m)
{
	ImsgReader r(data);
	uint32_t known;
	if (!(r.u32(known) && r.u32(m.uid)) || known > 1)
		return false;
	m.known = known;
	return r.done();
}

namespace {

template <typename T>
bool decodes(std::string_view data)
{
	T m;
	return decode(data, m);
}

// Whether a sibling frame's payload decodes as its receiver decodes it
// (handler/intake.cpp, smtp/smtp.cpp).
bool sibling_payload_decodes(const Imsg& m)
{
	switch (m.type) {
	case IMSG_S_MAIL: case IMSG_S_MAIL_LOCAL: return decodes<MailMsg>(m.data);
	case IMSG_S_RCPT: return decodes<RcptMsg>(m.data);
	case IMSG_S_DATA: case IMSG_S_ABORT: return decodes<NoPayload>(m.data);
	case IMSG_S_COMMIT: return decodes<CommitMsg>(m.data);
	case IMSG_H_MAIL: case IMSG_H_RCPT: case IMSG_H_DATA_FAIL: case IMSG_H_COMMIT:
		return decodes<StatusMsg>(m.data);
	case IMSG_H_DATA_OK: return decodes<DataOkMsg>(m.data);
	default: return false;
	}
}

}  // namespace

std::string sibling_frame_fault(std::string_view frame, int fd, ImsgValidator valid, const std::string& socket_path)
{
	Imsg m;
	ImsgError e = imsg_decode(reinterpret_cast<const uint8_t*>(frame.data()), frame.size(), fd, valid, m);
	if (e != ImsgError::None)
		return imsg_strerror(e);
	m.fd.release();  // the caller's
	if (!sibling_payload_decodes(m))
		return std::string("malformed ") + imsg_name(m.type);
	std::string why;
	if (m.type == IMSG_S_MAIL_LOCAL && !submitter_uid(fd, socket_path, &why))
		return "IMSG_S_MAIL_LOCAL with " + why;
	return "";
}

PeerReport judge_peer_report(std::string_view frame, int fd, const ImsgMacKey& sender_key, ImsgValidator valid,
			     const std::string& socket_path, std::string* fault)
{
	if (frame.size() < IMSG_MAC_SIZE)
		return PeerReport::Unauthenticated;
	std::string_view record = frame.substr(0, frame.size() - IMSG_MAC_SIZE);
	std::string mac = imsg_mac(sender_key, record, fd);
	if (CRYPTO_memcmp(mac.data(), frame.data() + record.size(), IMSG_MAC_SIZE) != 0)
		return PeerReport::Unauthenticated;
	*fault = sibling_frame_fault(record, fd, valid, socket_path);
	return fault->empty() ? PeerReport::Lie : PeerReport::Fault;
}

std::string encode(const NoPayload&) { return ""; }

bool decode(std::string_view data, NoPayload&) { return data.empty(); }

std::string encode(const SmtpTls& m)
{
	return ImsgWriter().u32(m.listen_index).u32(m.key_id).str(m.chain).data();
}

bool decode(std::string_view data, SmtpTls& m)
{
	ImsgReader r(data);
	return r.u32(m.listen_index) && r.u32(m.key_id) && r.str(m.chain) && r.done();
}

std::string encode(const KeyOpMsg& m) { return ImsgWriter().u32(m.key_id).u32(m.padding).str(m.data).data(); }

bool decode(std::string_view data, KeyOpMsg& m)
{
	ImsgReader r(data);
	return r.u32(m.key_id) && r.u32(m.padding) && r.str(m.data) && r.done();
}

std::string encode(const KeyResultMsg& m) { return ImsgWriter().u32(m.ok).str(m.data).data(); }

bool decode(std::string_view data, KeyResultMsg& m)
{
	ImsgReader r(data);
	uint32_t ok = 0;
	if (!(r.u32(ok) && r.str(m.data) && r.done()) || ok > 1)
		return false;
	m.ok = ok == 1;
	return true;
}

}  // namespace laim
