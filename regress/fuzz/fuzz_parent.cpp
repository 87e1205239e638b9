// libFuzzer target: what the root parent accepts from its children. A
// record (with an fd attached or not, chosen by the first byte) goes
// through each validator the parent's channels use (peer errors, the
// smtp process's AUTH requests, commands, mailbox deliveries among them,
// key operations) and, when it passes, its payload through the decoder
// the parent applies; a peer error report's forwarded frame then goes
// through the parent's judgment (judge_peer_report) for either child,
// with the report's fd: as it came (its MAC trailer made up, so it is
// unauthenticated) and with its trailer replaced by the key's true MAC
// (so the frame's rules are judged). Checks that a frame keeps its fd
// exactly when its type carries one, that no fd leaks, that the judgment
// leaves the fd open and ends the accused only for a frame with its MAC
// that sibling_frame_fault finds invalid, and that whatever decodes
// encodes back to the same fields.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/imsg.h"
#include "common/proto.h"

using namespace laim;

namespace {

// decode(encode(m)) gives m back, so the parent acts on what was sent.
template <typename T, typename Same>
void check_payload(const Imsg& m, Same same)
{
	T msg;
	if (!decode(m.data, msg))
		return;
	T again;
	if (!decode(encode(msg), again) || !same(msg, again))
		abort();
}

// The parent's judgment of a forwarded frame, as it came and sealed.
void judge_sealed(const std::string& frame, int fd, ImsgValidator receiver)
{
	static const ImsgMacKey key{};
	const std::string socket = "/run/laim/submit.sock";
	std::string fault;
	PeerReport raw = judge_peer_report(frame, fd, key, receiver, socket, &fault);
	std::string record = frame.substr(0, frame.size() - std::min(frame.size(), IMSG_MAC_SIZE));
	bool forged = frame.size() < IMSG_MAC_SIZE || frame.compare(record.size(), IMSG_MAC_SIZE,
								    imsg_mac(key, record, fd)) != 0;
	if (forged != (raw == PeerReport::Unauthenticated))
		abort();
	PeerReport sealed = judge_peer_report(record + imsg_mac(key, record, fd), fd, key, receiver, socket, &fault);
	bool invalid = !sibling_frame_fault(record, fd, receiver, socket).empty();
	if (sealed != (invalid ? PeerReport::Fault : PeerReport::Lie) || invalid == fault.empty())
		abort();
}

void check_message(const Imsg& m)
{
	switch (m.type) {
	case IMSG_C_PEER_ERROR:
	case IMSG_C_PEER_ERROR_FD: {
		check_payload<PeerErrorMsg>(m, [](auto& a, auto& b) { return a.what == b.what && a.frame == b.frame; });
		PeerErrorMsg report;
		if (!decode(m.data, report))
			break;
		for (ImsgValidator receiver : {imsg_valid_handler_to_smtp, imsg_valid_smtp_to_handler})
			judge_sealed(report.frame, m.fd.get(), receiver);
		if (m.fd && fcntl(m.fd.get(), F_GETFD) == -1)
			abort();
		break;
	}
	case IMSG_S_AUTH:
		check_payload<AuthMsg>(m, [](auto& a, auto& b) {
			return a.listener == b.listener && a.user == b.user && a.password == b.password;
		});
		break;
	case IMSG_H_COMMAND_RUN:
		check_payload<CommandRunMsg>(m, [](auto& a, auto& b) {
			return a.instance == b.instance && a.queue_id == b.queue_id && a.sender == b.sender &&
			       a.recipients == b.recipients;
		});
		break;
	case IMSG_T_KEY_IN_USE:
		check_payload<SmtpTls>(m, [](auto& a, auto& b) {
			return a.listen_index == b.listen_index && a.key_id == b.key_id && a.chain == b.chain;
		});
		break;
	case IMSG_T_RSA_PRIV_ENC:
	case IMSG_T_ECDSA_SIGN:
		check_payload<KeyOpMsg>(m, [](auto& a, auto& b) {
			return a.key_id == b.key_id && a.padding == b.padding && a.data == b.data;
		});
		break;
	}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	static const ImsgValidator validators[] = {imsg_valid_child_to_parent, imsg_valid_smtp_to_parent,
						   imsg_valid_command_request,
						   imsg_valid_key_request, imsg_valid_nothing};
	if (size < 1)
		return 0;
	bool with_fd = data[0] & 1;
	int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);  // the fd the next open gets
	close(lowest);
	for (ImsgValidator v : validators) {
		int fd = with_fd ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
		if (with_fd && fd < 0)
			abort();
		Imsg m;
		ImsgError e = imsg_decode(data + 1, size - 1, fd, v, m);
		if (e != ImsgError::None) {
			if (fd >= 0)
				close(fd);  // refused: the caller still owns it
			continue;
		}
		if (m.fd.get() != fd || !v(m.type).known || v(m.type).with_fd != with_fd)
			abort();
		check_message(m);
	}
	// Every fd opened above is closed again.
	int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (probe != lowest)
		abort();
	close(probe);
	return 0;
}
