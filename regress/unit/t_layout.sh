#!/bin/sh
# handler/ holds three things: the handler process (handler/*), the API
# handlers are written against (handler/api/), and the built-in handlers
# (handler/builtin/), each in a file named after its config type. The API
# never reaches into the process. And a document a source file cites is in
# the tree. Lists what breaks this and fails.
set -u
top=${LAIM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$top" || exit 99

bad=$(
	# LAIM_HANDLER("type", ...) outside handler/builtin/TYPE.cpp (the
	# suite's own handlers in regress/ aside)
	grep -rnE '^LAIM_HANDLER\("' --include='*.cpp' common smtp handler parent sendmail ctl mda |
		while IFS= read -r hit; do
			file=${hit%%:*}
			type=$(printf '%s\n' "$hit" | sed -E 's/.*LAIM_HANDLER\("([^"]*)".*/\1/')
			[ "$file" = "handler/builtin/$type.cpp" ] ||
				echo "$hit: type $type belongs in handler/builtin/$type.cpp"
		done
	# the API including the process's own files
	grep -rnE '#[[:space:]]*include[[:space:]]*"handler/[a-z_]+\.h"' handler/api |
		sed 's/$/: the API includes the handler process/'
	# documents cited that the tree does not have
	grep -rnoE '[A-Za-z0-9_/.-]+\.md\b' --include='*.cpp' --include='*.h' \
		common smtp handler parent sendmail ctl mda |
		while IFS= read -r hit; do
			doc=${hit##*:}
			[ -f "$doc" ] || echo "$hit: no such document in the tree"
		done
)
if [ -n "$bad" ]; then
	echo "layout broken:"
	echo "$bad"
	exit 1
fi
echo "handler/ is process, api/ and builtin/ by type; every cited document is in the tree"
