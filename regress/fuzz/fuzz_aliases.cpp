// libFuzzer target: the aliases(5) parser and expansion. The input is
// the aliases file (in a memfd, read through /proc/self/fd as the loader
// reads a path), in both syntaxes; then the names it defines, root and
// postmaster are expanded. Checks expansion's promises: at most
// ALIASES_MAX_ADDRESSES addresses, no duplicate, and no command or file
// delivery when none is permitted.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "common/aliases.h"

using namespace laim;

namespace {

void check_expansion(const Aliases& a, std::string_view name)
{
	Aliases::Expansion x = a.expand(name);
	if (x.addresses.size() > ALIASES_MAX_ADDRESSES)
		abort();
	std::set<std::string> seen(x.addresses.begin(), x.addresses.end());
	if (seen.size() != x.addresses.size())
		abort();
	if (std::any_of(x.addresses.begin(), x.addresses.end(), alias_delivery))
		abort();  // a command or file with neither permitted
}

// The first name of each line that looks like "name:", for expansion.
std::set<std::string> names_in(std::string_view text)
{
	std::set<std::string> out{"root", "postmaster"};
	size_t pos = 0;
	while (pos < text.size() && out.size() < 16) {
		size_t eol = text.find('\n', pos);
		std::string_view line = text.substr(pos, eol == std::string_view::npos ? eol : eol - pos);
		size_t colon = line.find(':');
		// A recipient that looks like "|command" or "/file" is refused
		// before expansion (alias_delivery()), so it is not tried here.
		if (colon != std::string_view::npos && colon > 0 && !alias_delivery(line.substr(0, colon)))
			out.emplace(line.substr(0, colon));
		if (eol == std::string_view::npos)
			break;
		pos = eol + 1;
	}
	return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	int fd = memfd_create("aliases", MFD_CLOEXEC);
	// Root's and writable by nobody else (when fuzzed as root), so that
	// only the permission (none given) keeps commands and files out.
	if (fd < 0 || fchmod(fd, 0644) == -1 || write(fd, data, size) != static_cast<ssize_t>(size))
		abort();
	std::string path = "/proc/self/fd/" + std::to_string(fd);
	std::string_view text(reinterpret_cast<const char*>(data), size);
	for (AliasesSyntax syntax : {AliasesSyntax::Aliases, AliasesSyntax::ForwardMap}) {
		std::vector<std::string> errors;
		Aliases a = Aliases::load(path, &errors, syntax);
		for (const std::string& name : names_in(text))
			check_expansion(a, name);
	}
	close(fd);
	return 0;
}
