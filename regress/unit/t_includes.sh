#!/bin/sh
# Every include points down. common/ is the bottom layer and includes
# nothing above it; the smtp and handler processes (smtp/, handler/) stand
# on it side by side and never include the parent or each other; the
# parent (parent/) sees only each child's entry point, plus the handler
# API that `laimd -n` uses to validate handler sections and the command
# service uses to read a pipe section (handler/api/handler.h, command.h). sendmail/ and
# ctl/ are programs of their own on common/, and so is mda/ (laim-mda). Lists every include that
# breaks this and fails.
set -u
top=${LAIM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$top" || exit 99

# includes DIR... : every quoted or bracketed project include under DIR,
# as FILE:LINE:TEXT.
includes() {
	grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<](common|smtp|handler|parent|sendmail|ctl|mda)/' \
		--include='*.h' --include='*.cpp' "$@"
}
# includes of DIR naming any of the folders in the pattern
naming() {
	grep -E "include[[:space:]]*[\"<]($1)/"
}

bad=$(
	includes common | naming 'smtp|handler|parent|sendmail|ctl|mda'
	includes smtp | naming 'handler|parent|sendmail|ctl|mda'
	includes handler | naming 'smtp|parent|sendmail|ctl|mda'
	includes parent | naming 'smtp|handler|sendmail|ctl|mda' |
		grep -vE '[\"<](smtp/smtp\.h|handler/handlerd\.h|handler/api/(handler|command)\.h)[\">]'
	includes sendmail | naming 'smtp|handler|parent|ctl|mda'
	includes ctl | naming 'smtp|handler|parent|sendmail|mda'
	includes mda | naming 'smtp|handler|parent|sendmail|ctl'
)
if [ -n "$bad" ]; then
	echo "includes that do not point down:"
	echo "$bad"
	exit 1
fi
echo "every include points down"
