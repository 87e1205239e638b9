#!/bin/sh
# The README's "Writing a handler" example (handler/builtin/chat.cpp, a
# per-recipient handler) is what it claims: under 40 lines, and it
# compiles against the handler API as it is now, with the tree's
# warnings as errors. Its two "your code" calls, post() and reachable(),
# are declared here; the rest is the README's text as a reader would
# copy it.
set -u
top=${LAIM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cxx=${LAIM_CXX:-g++ -std=c++20}
tmp=$(mktemp -d /tmp/laim-readme-XXXXXX) || exit 99
trap 'rm -rf "$tmp"' EXIT

# The indented block after "Write handler/builtin/chat.cpp:", unindented.
awk '
	/Write handler\/builtin\/chat\.cpp:$/ { on = 1; next }
	on && /^$/ && !seen { next }
	on && /^    / { seen = 1; print substr($0, 5); next }
	on && seen && /^$/ { print; next }
	on && seen { exit }
' "$top/README" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' >"$tmp/chat.cpp"

lines=$(wc -l <"$tmp/chat.cpp")
if [ "$lines" -eq 0 ]; then
	echo "README: no example after \"Write handler/builtin/chat.cpp:\""
	exit 1
fi
grep -q 'std::vector<laim::Result>' "$tmp/chat.cpp" || {
	echo "README: the example does not return one result per recipient"
	exit 1
}
if [ "$lines" -ge 40 ]; then
	echo "README: the handler example has $lines lines, not under 40"
	exit 1
fi

cat >"$tmp/example.cpp" <<'EOF'
#include <string>
#include <string_view>
// The README's "your code".
int post(const std::string& url, const std::string& token, std::string_view channel, const std::string& text);
bool reachable(const std::string& url);
#include "chat.cpp"
EOF
if ! $cxx -Wall -Wextra -Wno-missing-field-initializers -Werror -I"$top" -c -o "$tmp/example.o" "$tmp/example.cpp"; then
	echo "README: the handler example does not compile"
	exit 1
fi
echo "README's handler example: $lines lines, compiles"
