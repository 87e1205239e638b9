// The imsg payloads (common/proto.h): every type's encode/decode pair
// round-trips, and decode refuses a truncated payload, trailing bytes and
// an out-of-range status.
#include <check.h>

#include <string>

#include "common/config.h"
#include "common/proto.h"

using namespace laim;

namespace {

// decode(encode(in)) succeeds and encodes back to the same bytes (every
// field in the tests differs, so a field read into the wrong place shows);
// every shorter payload and one with a byte more are refused.
template <typename T>
T roundtrip(const T& in)
{
	std::string wire = encode(in);
	T out;
	ck_assert(decode(wire, out));
	ck_assert(encode(out) == wire);
	for (size_t n = 0; n < wire.size(); n++) {
		T cut;
		ck_assert_msg(!decode(std::string_view(wire).substr(0, n), cut), "%zu of %zu bytes accepted", n,
			      wire.size());
	}
	T longer;
	ck_assert(!decode(wire + '\0', longer));
	return out;
}

}  // namespace

START_TEST(parent_messages)
{
	Config cfg;
	cfg.ident = "laim test";
	cfg.data_size_limit = 1ULL << 40;
	cfg.enable_smtputf8 = false;
	cfg.timeout = 7;
	cfg.max_sessions = 9;
	cfg.greeting_delay = 11;
	cfg.hop_count_limit = 13;
	SmtpConf c = roundtrip(smtp_conf(cfg, "mx.example.org", {"192.0.2.1", "2001:db8::1"}));
	ck_assert_str_eq(c.hostname.c_str(), "mx.example.org");
	ck_assert_str_eq(c.ident.c_str(), "laim test");
	ck_assert(c.size_limit == 1ULL << 40 && !c.smtputf8);
	ck_assert(c.timeout == 7 && c.max_sessions == 9 && c.greeting_delay == 11 && c.hop_count_limit == 13);
	ck_assert(c.host_addresses == std::vector<std::string>({"192.0.2.1", "2001:db8::1"}));
	cfg.enable_smtputf8 = true;
	ck_assert(roundtrip(smtp_conf(cfg, "h", {})).smtputf8);

	ck_assert(roundtrip(HandlerConf{"/etc/laim/config.yml"}).file == "/etc/laim/config.yml");
	HandlerConfText t = roundtrip(HandlerConfText{"user: laim\n", std::string("\0\1secret", 8)});
	ck_assert(t.text == "user: laim\n" && t.secrets == std::string("\0\1secret", 8));
	ck_assert(roundtrip(PeerErrorMsg{"unexpected IMSG_S_MAIL"}).what == "unexpected IMSG_S_MAIL");
}
END_TEST

START_TEST(transaction_messages)
{
	MailMsg m = roundtrip(MailMsg{"a@example.org", "client.example.org", "127.0.0.1"});
	ck_assert_str_eq(m.sender.c_str(), "a@example.org");
	ck_assert_str_eq(m.helo.c_str(), "client.example.org");
	ck_assert_str_eq(m.client.c_str(), "127.0.0.1");
	ck_assert(roundtrip(MailMsg{"", "h", "local"}).sender.empty());

	ck_assert(roundtrip(RcptMsg{"root@localhost"}).rcpt == "root@localhost");
	ck_assert(roundtrip(CommitMsg{(1ULL << 33) + 5}).size == (1ULL << 33) + 5);
	DataOkMsg d = roundtrip(DataOkMsg{"0123456789", 1000, "alice"});
	ck_assert_str_eq(d.queue_id.c_str(), "0123456789");
	ck_assert_str_eq(d.user.c_str(), "alice");
	ck_assert(d.uid && *d.uid == 1000);
	d = roundtrip(DataOkMsg{"0123456789", 0, ""});
	ck_assert(d.uid && *d.uid == 0);
	ck_assert(!roundtrip(DataOkMsg{"0123456789", std::nullopt, ""}).uid);
	for (BackendStatus s : {BackendStatus::Ok, BackendStatus::Full, BackendStatus::Unavailable,
				BackendStatus::Reject, BackendStatus::Defer, BackendStatus::TooBig, BackendStatus::Error,
				BackendStatus::RateLimited, BackendStatus::TooMany})
		ck_assert(roundtrip(StatusMsg{s}).status == s);
	StatusMsg limited = roundtrip(StatusMsg{BackendStatus::RateLimited, "rate limit: 3 messages in 5 s"});
	ck_assert_str_eq(limited.text.c_str(), "rate limit: 3 messages in 5 s");
}
END_TEST

// A command request's recipients are counted; a count larger than the
// payload could hold is refused before anything is reserved for it.
START_TEST(command_messages)
{
	CommandRunMsg r = roundtrip(CommandRunMsg{"lda", "0123456789", "", {"a@example.org", "b+x@example.org"}});
	ck_assert(r.instance == "lda" && r.queue_id == "0123456789" && r.sender.empty());
	ck_assert(r.recipients == std::vector<std::string>({"a@example.org", "b+x@example.org"}));
	ck_assert(roundtrip(CommandRunMsg{"alias:command", "ABCDEF0123", "s@x", {}}).recipients.empty());
	std::string huge = ImsgWriter().str("lda").str("0123456789").str("").u32(0xffffffff).data();
	CommandRunMsg h;
	ck_assert(!decode(huge, h));

	ck_assert(roundtrip(CommandStartedMsg{"vmail"}).user == "vmail");
	CommandExitMsg e = roundtrip(CommandExitMsg{75 << 8, true, 120});
	ck_assert(e.status == 75 << 8 && e.timed_out && e.timeout == 120);
	ck_assert(!roundtrip(CommandExitMsg{9, false, 1}).timed_out);
	CommandFailMsg f = roundtrip(CommandFailMsg{true, "no such user"});
	ck_assert(f.permanent && f.why == "no such user");
	ck_assert(!roundtrip(CommandFailMsg{false, "busy"}).permanent);
	ck_assert(!decode(ImsgWriter().u32(9).u32(2).u32(1).data(), e));  // a boolean that is neither
	ck_assert(!decode(ImsgWriter().u32(2).str("why").data(), f));
}
END_TEST

// The TLS messages: a listener's new certificate chain for smtp, and the
// key server's operations and answers; ok is a boolean.
START_TEST(tls_messages)
{
	SmtpTls t = roundtrip(SmtpTls{3, 7, "-----BEGIN CERTIFICATE-----\n"});
	ck_assert(t.listen_index == 3 && t.key_id == 7 && t.chain == "-----BEGIN CERTIFICATE-----\n");
	KeyOpMsg k = roundtrip(KeyOpMsg{2, 6, std::string("\0digest", 7)});
	ck_assert(k.key_id == 2 && k.padding == 6 && k.data == std::string("\0digest", 7));
	KeyResultMsg r = roundtrip(KeyResultMsg{true, "signature"});
	ck_assert(r.ok && r.data == "signature");
	ck_assert(!roundtrip(KeyResultMsg{false, ""}).ok);
	ck_assert(!decode(ImsgWriter().u32(2).str("x").data(), r));
}
END_TEST

// The types that carry only their frame (and maybe an fd): nothing else.
START_TEST(empty_messages)
{
	NoPayload none;
	ck_assert(encode(none).empty());
	ck_assert(decode("", none));
	ck_assert(!decode(std::string(1, '\0'), none));
	ck_assert(!decode("x", none));
}
END_TEST

START_TEST(status_out_of_range)
{
	StatusMsg s;
	std::string past = ImsgWriter().u32(static_cast<uint32_t>(BackendStatus::TooMany) + 1).str("").data();
	ck_assert(!decode(past, s));
	// The text goes into a reply line: no CR, LF, control byte, 8-bit
	// byte, or more than STATUS_TEXT_MAX bytes.
	auto limited = [](std::string text) {
		return ImsgWriter().u32(static_cast<uint32_t>(BackendStatus::RateLimited)).str(text).data();
	};
	ck_assert(decode(limited(std::string(STATUS_TEXT_MAX, 'x')), s));
	for (std::string bad : {std::string("a\r\n250 ok"), std::string("a\tb"), std::string("caf\xc3\xa9"),
				std::string(1, '\0'), std::string(STATUS_TEXT_MAX + 1, 'x')})
		ck_assert(!decode(limited(bad), s));
}
END_TEST

// payload<T>() is how a dispatch decodes: a malformed payload or a type
// the channel does not serve is an ImsgProtocolError naming the type.
START_TEST(protocol_errors_name_the_type)
{
	Imsg m;
	m.type = IMSG_S_RCPT;
	m.data = encode(RcptMsg{"x"}) + "junk";
	try {
		payload<RcptMsg>(m);
		ck_abort_msg("trailing bytes accepted");
	} catch (const ImsgProtocolError& e) {
		ck_assert_str_eq(e.what(), "malformed IMSG_S_RCPT");
	}
	m.type = IMSG_P_SMTP_CONF;
	try {
		unexpected_imsg(m);
		ck_abort_msg("no exception");
	} catch (const ImsgProtocolError& e) {
		ck_assert_str_eq(e.what(), "unexpected IMSG_P_SMTP_CONF");
	}
	for (uint32_t t : {IMSG_P_SMTP_CONF, IMSG_P_HANDLER_CHANNEL, IMSG_P_HANDLER_CONF, IMSG_P_SMTP_CHANNEL,
			   IMSG_S_MAIL, IMSG_S_RCPT, IMSG_S_DATA, IMSG_S_COMMIT, IMSG_S_ABORT, IMSG_H_MAIL, IMSG_H_RCPT,
			   IMSG_H_DATA_OK, IMSG_H_DATA_FAIL, IMSG_H_COMMIT, IMSG_C_PEER_ERROR, IMSG_H_COMMAND_RUN,
			   IMSG_P_COMMAND_INPUT, IMSG_P_COMMAND_UNREAD, IMSG_P_COMMAND_OUTPUT, IMSG_P_COMMAND_EXIT,
			   IMSG_P_COMMAND_FAIL, IMSG_P_SMTP_TLS, IMSG_S_MAIL_LOCAL, IMSG_C_PEER_ERROR_FD,
			   IMSG_T_RSA_PRIV_ENC, IMSG_T_ECDSA_SIGN, IMSG_K_RESULT, IMSG_T_KEY_IN_USE, IMSG_S_AUTH, IMSG_P_AUTH,
			   IMSG_S_CLIENT_UID, IMSG_P_CLIENT_UID})
		ck_assert_msg(std::string(imsg_name(t)).rfind("IMSG_", 0) == 0, "type %u has no name", t);
}
END_TEST

int main()
{
	Suite* s = suite_create("proto");
	TCase* tc = tcase_create("payloads");
	tcase_add_test(tc, parent_messages);
	tcase_add_test(tc, transaction_messages);
	tcase_add_test(tc, command_messages);
	tcase_add_test(tc, tls_messages);
	tcase_add_test(tc, empty_messages);
	tcase_add_test(tc, status_out_of_range);
	tcase_add_test(tc, protocol_errors_name_the_type);
	suite_add_tcase(s, tc);
	SRunner* sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
