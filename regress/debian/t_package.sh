#!/bin/bash
# The Debian package end to end, as a new user of a Debian 12 machine gets
# it: build the .deb from this source tree, replace exim (the usual
# default MTA) with it, start laimd the way laim.service does, and let
# Debian's own cron, sudo and mail(1) send mail to root's mailbox; then
# purge the package and check that nothing is left behind.
#
# It changes the machine (packages, users), so it is not part of `make
# check`; .ci/run runs it after ./bootstrap check. An existing spool,
# /var/lib/laim and root's mailbox are moved aside for the run and put
# back after it, so the postinst's and laimd's modes are checked on ones
# they create.
# As root:
#   regress/debian/t_package.sh
# It needs only the Debian archive and sends nothing off this machine.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
start_time=$(date +%s)
passed=0
failed=0
work=""

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8
APT_INSTALL="apt-get install -y -q -o Dpkg::Use-Pty=0"

DROP=/usr/libexec/laim/laim-drop
SPOOL=/var/spool/laim
LIB=/var/lib/laim
MBOX=/var/mail/root
TESTUSER=laimpkgtest
CRON_FILE=/etc/cron.d/laim-pkgtest
SUDOERS_FILE=/etc/sudoers.d/laim-pkgtest
POLICY=/usr/sbin/policy-rc.d
# Short, so that it survives in the Subject column of mail's header list.
marker="lp$(date +%j%H%M%S)"

ok() {
	passed=$((passed + 1))
	echo "ok $passed - $*"
}

fail() {
	failed=$((failed + 1))
	echo "FAIL - $*"
	exit 1
}

# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

say() { echo "# $*"; }

# wait_for SECONDS COMMAND...: polls the command every second, bounded.
wait_for() {
	local limit=$1 i=0
	shift
	while ! "$@"; do
		i=$((i + 1))
		[ "$i" -lt "$limit" ] || return 1
		sleep 1
	done
}

in_mbox() { [ -f "$MBOX" ] && grep -qF -- "$1" "$MBOX"; }

mbox_count() {
	if [ -f "$MBOX" ]; then grep -cF -- "$1" "$MBOX" || true; else echo 0; fi
}

pkg_status() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || echo "un"; }
installed() { case "$(pkg_status "$1")" in ii*) return 0 ;; *) return 1 ;; esac; }

# check_spool WHO: the spool's modes as doc/architecture.md has them.
check_spool() {
	check "$1 $SPOOL laim:laimdrop 0710" test "$(stat -c '%U:%G %a' "$SPOOL")" = "laim:laimdrop 710"
	for d in incoming queue failed; do
		check "$1 $SPOOL/$d laim 0700" test "$(stat -c '%U %a' "$SPOOL/$d")" = "laim 700"
	done
	check "$1 $SPOOL/offline laim:laimdrop 1730" test "$(stat -c '%U:%G %a' "$SPOOL/offline")" = "laim:laimdrop 1730"
}

# ------------------------------------------------------------ clean-up
laimd_pid=""
stub_pid=""
cron_started=""
policy_saved=""
hosts_saved=""
pam_saved=""
mailname_existed=""
SPOOL_SAVED=/var/spool/.t_package-saved-spool
MBOX_SAVED=/var/mail/.t_package-saved-root
LIB_SAVED=/var/lib/.t_package-saved-laim
spool_saved=""
mbox_saved=""
lib_saved=""
aside=""
laim_user_before=""
drop_group_before=""

# set_aside: the spool, /var/lib/laim and root's mailbox of the machine
# go out of the way (a rename, same file system), so the test starts
# without them.
set_aside() {
	if [ -e "$SPOOL" ]; then
		[ ! -e "$SPOOL_SAVED" ] || fail "$SPOOL_SAVED exists: an earlier run did not finish; put it back by hand"
		mv "$SPOOL" "$SPOOL_SAVED"
		spool_saved=yes
		say "$SPOOL moved aside to $SPOOL_SAVED for the test"
	fi
	if [ -e "$LIB" ]; then
		[ ! -e "$LIB_SAVED" ] || fail "$LIB_SAVED exists: an earlier run did not finish; put it back by hand"
		mv "$LIB" "$LIB_SAVED"
		lib_saved=yes
		say "$LIB moved aside to $LIB_SAVED for the test"
	fi
	if [ -e "$MBOX" ]; then
		[ ! -e "$MBOX_SAVED" ] || fail "$MBOX_SAVED exists: an earlier run did not finish; put it back by hand"
		mv "$MBOX" "$MBOX_SAVED"
		mbox_saved=yes
		say "$MBOX moved aside to $MBOX_SAVED for the test"
	fi
	aside=yes
}

# restore_aside: the test's spool (when the package is still installed)
# and mailbox go, the machine's come back.
restore_aside() {
	[ -n "$aside" ] || return 0
	[ -e "$SPOOL" ] && mv "$SPOOL" "$work/spool-of-the-test"
	[ -n "$spool_saved" ] && mv "$SPOOL_SAVED" "$SPOOL" && say "$SPOOL put back"
	[ -e "$LIB" ] && mv "$LIB" "$work/lib-of-the-test"
	[ -n "$lib_saved" ] && mv "$LIB_SAVED" "$LIB" && say "$LIB put back"
	[ -e "$MBOX" ] && mv "$MBOX" "$work/mbox-of-the-test"
	[ -n "$mbox_saved" ] && mv "$MBOX_SAVED" "$MBOX" && say "$MBOX put back"
}

cleanup() {
	local rc=$?
	set +e
	[ -n "$laimd_pid" ] && stop_laimd
	if [ -n "$cron_started" ] && [ -f /run/crond.pid ]; then
		kill "$(cat /run/crond.pid)" 2>/dev/null
	fi
	[ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null && wait "$stub_pid" 2>/dev/null
	rm -f "$CRON_FILE" "$SUDOERS_FILE"
	getent passwd "$TESTUSER" >/dev/null && userdel -r "$TESTUSER" 2>/dev/null
	if [ -n "$pam_saved" ]; then cp -p "$pam_saved" /etc/pam.d/cron; fi
	if [ "$policy_saved" = none ]; then rm -f "$POLICY"; elif [ -n "$policy_saved" ]; then cp -p "$policy_saved" "$POLICY"; fi
	if [ -n "$hosts_saved" ]; then cat "$hosts_saved" >/etc/hosts; fi
	[ "$mailname_existed" = no ] && ! installed laim && rm -f /etc/mailname
	restore_aside
	# Accounts that were here before (a developer's laimdrop), as they
	# were; the package's purge removed them.
	if [ -n "$drop_group_before" ] && ! getent group laimdrop >/dev/null; then
		groupadd --system --gid "$drop_group_before" laimdrop 2>/dev/null || groupadd --system laimdrop
	fi
	for before in $laim_user_before; do  # USER:UID:GID
		u=${before%%:*}
		ids=${before#*:}
		uid=${ids%:*}
		gid=${ids#*:}
		getent passwd "$u" >/dev/null && continue
		getent group "$gid" >/dev/null || groupadd --system --gid "$gid" "$u" 2>/dev/null
		useradd --system --uid "$uid" --gid "$gid" --home-dir /nonexistent --no-create-home \
			--shell /usr/sbin/nologin "$u" 2>/dev/null ||
			useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$u"
	done
	if [ -n "$work" ]; then
		if [ "$rc" = 0 ]; then rm -rf "$work"; else echo "# left for inspection: $work"; fi
	fi
	echo "# run time: $(($(date +%s) - start_time)) s"
	if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
	echo "$passed passed, $failed failed"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "t_package.sh must run as root (it installs packages)"
work=$(mktemp -d /tmp/laim-pkgtest.XXXXXX)
chmod 0755 "$work"

# ------------------------------------------------------------ the machine
for u in laim laim-smtp; do
	getent passwd "$u" >/dev/null && laim_user_before="$laim_user_before $u:$(id -u "$u"):$(id -g "$u")"
done
getent group laimdrop >/dev/null && drop_group_before=$(getent group laimdrop | cut -d: -f3)
if installed laim; then
	say "purging a laim package left from an earlier run"
	apt-get purge -y -q laim >"$work/apt-purge-old.log" 2>&1 || fail "purge of an old laim package"
fi
if [ -e /etc/mailname ]; then mailname_existed=yes; else mailname_existed=no; fi
set_aside
check "no $SPOOL before the install" test ! -e "$SPOOL"
check "no $LIB before the install" test ! -e "$LIB"
check "no $MBOX before the install" test ! -e "$MBOX"

# Services stay down during the installs: exim must never bind port 25,
# and laimd is started below the way systemd would.
if [ -e "$POLICY" ]; then
	policy_saved="$work/policy-rc.d.orig"
	cp -p "$POLICY" "$policy_saved"
else
	policy_saved=none
fi
printf '#!/bin/sh\n# laim t_package.sh: no service starts during the test\nexit 101\n' >"$POLICY"
chmod 0755 "$POLICY"

# The postinsts of exim and laim ask for the FQDN: it must come from
# /etc/hosts, never from a DNS server.
host=$(hostname)
if ! awk -v h="$host" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == h) f = 1 } END { exit !f }' /etc/hosts; then
	hosts_saved="$work/hosts.orig"
	cp -p /etc/hosts "$hosts_saved"
	echo "127.0.1.1 $host" >>/etc/hosts
	say "added '127.0.1.1 $host' to /etc/hosts for the test"
fi
check "the host name $host resolves from /etc/hosts" sh -c "getent hosts '$host' >/dev/null"

say "apt-get update"
apt-get update -q >"$work/apt-update.log" 2>&1 || { tail -20 "$work/apt-update.log"; fail "apt-get update"; }
say "installing the build tools"
$APT_INSTALL --no-install-recommends build-essential dpkg-dev debhelper fakeroot lintian git \
	python3 systemd man-db >"$work/apt-tools.log" 2>&1 ||
	{ tail -20 "$work/apt-tools.log"; fail "install the build tools"; }

# ------------------------------------------------------------ 1. build
# A pristine copy: the files git knows plus new ones it does not ignore,
# so build/ and run/ of ./bootstrap stay out.
mkdir "$work/laim"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$src" ls-files -z -co --exclude-standard |
		(cd "$src" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$work/laim"
else
	tar -C "$src" --exclude=./build --exclude=./run -cf - . | tar -xf - -C "$work/laim"
fi
check "source copied to $work/laim" test -f "$work/laim/debian/control"

say "installing the build dependencies (apt-get build-dep)"
(cd "$work/laim" && apt-get build-dep -y -q ./) >"$work/apt-builddep.log" 2>&1 ||
	{ tail -20 "$work/apt-builddep.log"; fail "apt-get build-dep"; }
check "build dependencies satisfied" sh -c "cd '$work/laim' && dpkg-checkbuilddeps"

say "dpkg-buildpackage -us -uc -b"
build_start=$(date +%s)
if ! (cd "$work/laim" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	tail -60 "$work/build.log"
	fail "dpkg-buildpackage -us -uc -b"
fi
ok "dpkg-buildpackage -us -uc -b ($(($(date +%s) - build_start)) s)"
deb=$(ls "$work"/laim_*_*.deb)
check "built $(basename "$deb")" test -f "$deb"
check "built the -dbgsym package" sh -c "ls '$work'/laim-dbgsym_*.deb >/dev/null"

say "dpkg-deb -c $(basename "$deb")"
dpkg-deb -c "$deb" | tee "$work/contents" | sed 's/^/#   /'
for f in ./usr/sbin/laimd ./usr/sbin/laimctl ./usr/sbin/sendmail ./usr/lib/sendmail ./usr/bin/mailq \
	./usr/bin/newaliases ./usr/sbin/newaliases ./etc/laim/config.yml ./lib/systemd/system/laim.service \
	./usr/share/man/man8/laimd.8.gz ./usr/share/man/man5/laim.yml.5.gz ./usr/share/man/man8/sendmail.8.gz \
	./usr/share/man/man8/laimctl.8.gz ./usr/share/doc/laim/examples/forward.yml ./usr/share/doc/laim/examples/lmtp.yml \
	./usr/share/doc/laim/examples/pipe.yml \
	./usr/share/doc/laim/examples/smarthost.yml ./usr/share/doc/laim/examples/webhook.yml; do
	check "the package has $f" grep -qE " $f( -> .*)?$" "$work/contents"
done
check "laim-drop is root:root 0755 in the package" \
	grep -qE '^-rwxr-xr-x root/root .* ./usr/libexec/laim/laim-drop$' "$work/contents"
check "laim-mda is root:root 0755 in the package" \
	grep -qE '^-rwxr-xr-x root/root .* ./usr/libexec/laim/laim-mda$' "$work/contents"
check "config.yml is root:root 0600 in the package" \
	grep -qE '^-rw------- root/root .* ./etc/laim/config.yml$' "$work/contents"
dpkg-deb -f "$deb" Provides Conflicts Replaces Depends | sed 's/^/#   /'
for f in Provides Conflicts Replaces; do
	check "$f: mail-transport-agent" sh -c "dpkg-deb -f '$deb' $f | grep -qx 'mail-transport-agent'"
done
check "Depends on adduser and the shared libraries" sh -c "dpkg-deb -f '$deb' Depends | grep -q 'adduser' && dpkg-deb -f '$deb' Depends | grep -q 'libc6'"
# laimd loads these two with dlopen (handler/builtin/curl_loader.h,
# handler/api/gmime.h): shlibs does not see them in laimd.
for lib in libcurl4 libgmime-3.0-0; do
	check "Depends on $lib" sh -c "dpkg-deb -f '$deb' Depends | grep -qE '(^|, )$lib( |,|\$)'"
done

say "lintian"
lintian "$work"/laim_*.changes >"$work/lintian.log" 2>&1 || true
sed 's/^/#   /' "$work/lintian.log"
say "lintian summary: $(grep -c '^E:' "$work/lintian.log" || true) errors, $(grep -c '^W:' "$work/lintian.log" || true) warnings"
check "lintian reports no errors" sh -c "! grep -q '^E:' '$work/lintian.log'"

# ------------------------------------------------------------ exim, then laim
say "installing exim4-daemon-light, the usual default MTA"
$APT_INSTALL exim4-daemon-light >"$work/apt-exim.log" 2>&1 || { tail -20 "$work/apt-exim.log"; fail "install exim4-daemon-light"; }
check "exim4-daemon-light is installed" installed exim4-daemon-light
check "/usr/sbin/sendmail is exim's" sh -c "dpkg -S /usr/sbin/sendmail | grep -q '^exim4-daemon-light:'"

say "apt-get install $deb"
$APT_INSTALL "$deb" >"$work/apt-laim.log" 2>&1 || { tail -30 "$work/apt-laim.log"; fail "install the laim package"; }
grep -E '^(Removing|Setting up laim|Unpacking laim)' "$work/apt-laim.log" | sed 's/^/#   /'
check "laim is installed" installed laim
check "exim4-daemon-light was removed" sh -c "! dpkg-query -W -f='\${db:Status-Abbrev}' exim4-daemon-light 2>/dev/null | grep -q '^ii'"
check "/usr/sbin/exim4 is gone" test ! -e /usr/sbin/exim4
check "/usr/sbin/sendmail is laim's" sh -c "dpkg -S /usr/sbin/sendmail | grep -q '^laim:'"
check "/usr/lib/sendmail leads to laim's sendmail" test "$(readlink -f /usr/lib/sendmail)" = /usr/sbin/sendmail
for l in /usr/bin/mailq /usr/bin/newaliases /usr/sbin/newaliases; do
	check "$l leads to sendmail" test "$(readlink -f "$l")" = /usr/sbin/sendmail
done
check "the system user laim exists" sh -c "getent passwd laim | grep -q ':/usr/sbin/nologin$'"
check "the system user laim-smtp exists" sh -c "getent passwd laim-smtp | grep -q ':/usr/sbin/nologin$'"
check "laim and laim-smtp have their own uids and groups" \
	sh -c "[ \$(id -u laim) != \$(id -u laim-smtp) ] && [ \$(id -gn laim) = laim ] && [ \$(id -gn laim-smtp) = laim-smtp ]"
check "the group laimdrop exists" sh -c "getent group laimdrop >/dev/null"
check "laim-drop is root:laimdrop 2755" test "$(stat -c '%U:%G %a' "$DROP")" = "root:laimdrop 2755"
check "laim-drop's mode is a dpkg-statoverride" sh -c "dpkg-statoverride --list '$DROP' | grep -qx 'root laimdrop 2755 $DROP'"
check "/etc/laim/config.yml is root:root 0600" test "$(stat -c '%U:%G %a' /etc/laim/config.yml)" = "root:root 600"
check "/etc/laim/config.yml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' laim | grep -q ' /etc/laim/config.yml '"
check "the default route delivers to the users' mailboxes" grep -qE '^ +type: mbox' /etc/laim/config.yml
check "/etc/mailname exists" test -s /etc/mailname
say "/etc/mailname: $(cat /etc/mailname)"
check_spool "postinst created"
check "postinst created $LIB laim:laim 0750" test "$(stat -c '%U:%G %a' "$LIB")" = "laim:laim 750"
check "laim.service is enabled" test -L /etc/systemd/system/multi-user.target.wants/laim.service
for m in laimd.8 laim.yml.5 sendmail.8 laimctl.8; do
	check "man ${m##*.} ${m%.*} finds the page" sh -c "man -w '${m##*.}' '${m%.*}' >/dev/null"
done

say "systemd-analyze verify laim.service"
if systemd-analyze verify /lib/systemd/system/laim.service >"$work/verify.log" 2>&1 && [ ! -s "$work/verify.log" ]; then
	ok "systemd-analyze verify laim.service"
else
	sed 's/^/#   /' "$work/verify.log"
	fail "systemd-analyze verify laim.service"
fi
say "$(systemd-analyze security --offline=true /lib/systemd/system/laim.service 2>&1 | tail -1)"
# laimd(8): a stop takes at most 60 + 60 + 10 s; systemd must not cut it.
check "laim.service waits 130 s or more for laimd to stop" sh -c \
	"sed -n 's/^TimeoutStopSec=\([0-9]*\)s\$/\1/p' /lib/systemd/system/laim.service | awk '\$1 >= 130 { f = 1 } END { exit !f }'"

# The admin's edits survive a reinstall.
echo "# t_package.sh $marker" >>/etc/laim/config.yml
dpkg -i "$deb" >"$work/dpkg-reinstall.log" 2>&1 || { tail -20 "$work/dpkg-reinstall.log"; fail "dpkg -i again"; }
check "reinstalling keeps an edited config.yml" grep -qF "$marker" /etc/laim/config.yml
check "reinstalling keeps laim-drop setgid" test "$(stat -c '%U:%G %a' "$DROP")" = "root:laimdrop 2755"

# A config.yml that laimd -n refuses fails the configure step before
# debhelper restarts laimd: dpkg reports it, with laimd -n's message,
# and a running laimd is left alone (nothing runs at this point).
cp -p /etc/laim/config.yml "$work/config.good"
echo "no_such_key_$marker: 1" >>/etc/laim/config.yml
if dpkg -i "$deb" >"$work/dpkg-broken.log" 2>&1; then
	fail "dpkg -i fails while laimd -n refuses config.yml"
fi
ok "dpkg -i fails while laimd -n refuses config.yml"
grep -F 'laim' "$work/dpkg-broken.log" | sed 's/^/#   /'
check "dpkg -i shows laimd -n's message" grep -qF "no_such_key_$marker" "$work/dpkg-broken.log"
check "dpkg -i says laimd was not restarted" grep -qF "laimd was not restarted" "$work/dpkg-broken.log"
cp -p "$work/config.good" /etc/laim/config.yml
dpkg -i "$deb" >"$work/dpkg-fixed.log" 2>&1 || { tail -20 "$work/dpkg-fixed.log"; fail "dpkg -i with config.yml fixed"; }
check "laim is configured again once config.yml is fixed" installed laim

# ------------------------------------------------------------ 2. laimd as the unit runs it
# A stand-in for systemd's sockets: the notify socket (READY=1) and, when
# no syslog daemon provides one, /dev/log, so laimd's log is kept.
cat >"$work/sdstub.py" <<'EOF'
import os, select, signal, socket, sys
work = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
socks = {}
def bind(path, log):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    socks[s.fileno()] = (s, open(log, "ab", buffering=0))
bind(os.path.join(work, "notify.sock"), os.path.join(work, "notify.log"))
own_devlog = not os.path.exists("/dev/log")
if own_devlog:
    bind("/dev/log", os.path.join(work, "syslog.log"))
try:
    while True:
        for fd in select.select(list(socks), [], [])[0]:
            s, out = socks[fd]
            out.write(s.recv(65536).rstrip(b"\n") + b"\n")
finally:
    if own_devlog:
        os.unlink("/dev/log")
EOF
devlog_before=no
[ -e /dev/log ] && devlog_before=yes
python3 "$work/sdstub.py" "$work" &
stub_pid=$!
wait_for 10 test -S "$work/notify.sock" || fail "the notify socket stand-in started"
[ "$devlog_before" = yes ] || wait_for 10 test -S /dev/log || fail "the /dev/log stand-in started"

ready_count() { grep -c '^READY=1' "$work/notify.log" 2>/dev/null || true; }
ready_above() { [ "$(ready_count)" -gt "$1" ]; }

# start_laimd: RuntimeDirectory=laim, ExecStartPre, ExecStart with
# NOTIFY_SOCKET, then the wait for READY=1 (Type=notify).
start_laimd() {
	local before
	before=$(ready_count)
	mkdir -p /run/laim
	chown root:root /run/laim
	chmod 0755 /run/laim
	/usr/sbin/laimd -n >"$work/laimd-n.log" 2>&1 || { cat "$work/laimd-n.log"; fail "ExecStartPre laimd -n"; }
	NOTIFY_SOCKET="$work/notify.sock" /usr/sbin/laimd >>"$work/laimd.out" 2>&1 </dev/null &
	laimd_pid=$!
	if ! wait_for 30 ready_above "$before"; then
		tail -20 "$work/syslog.log" "$work/laimd.out" 2>/dev/null
		fail "laimd reported READY=1 within 30 s"
	fi
	kill -0 "$laimd_pid" 2>/dev/null || fail "laimd is running after READY=1"
}

# stop_laimd: SIGTERM as systemctl stop sends it (KillMode=mixed), a
# bounded wait, then /run/laim goes (RuntimeDirectoryPreserve=restart).
stop_laimd() {
	local pid=$laimd_pid i=0 status=0
	laimd_pid=""
	kill -TERM "$pid" 2>/dev/null || return 1
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 60 ]; then
			kill -KILL "$pid" 2>/dev/null
			echo "FAIL - laimd did not stop within 30 s of SIGTERM"
			return 1
		fi
		sleep 0.5
	done
	wait "$pid" || status=$?
	rm -rf /run/laim
	return "$status"
}

start_laimd
ok "laimd started as ExecStart does and reported READY=1 (pid $laimd_pid)"
check "laimd listens on /run/laim/submit.sock" test -S /run/laim/submit.sock
check_spool "laimd keeps"
check "laimd: smtp runs as laim-smtp, laimd: handler as laim" \
	sh -c "ps -o args= -u laim-smtp | grep -q '^laimd: smtp' && ps -o args= -u laim | grep -q '^laimd: handler'"

# ------------------------------------------------------------ 3. Debian's cron, sudo and mail
say "installing cron, sudo and bsd-mailx"
$APT_INSTALL cron sudo bsd-mailx >"$work/apt-clients.log" 2>&1 ||
	{ tail -20 "$work/apt-clients.log"; fail "install cron, sudo and bsd-mailx"; }
check "cron, sudo and bsd-mailx are installed" sh -c "dpkg-query -W -f='\${db:Status-Abbrev}\n' cron sudo bsd-mailx | grep -vc '^ii' | grep -qx 0"
check "laim is still the MTA (no exim pulled back in)" sh -c "dpkg -S /usr/sbin/sendmail | grep -q '^laim:'"

getent passwd "$TESTUSER" >/dev/null || useradd --create-home --shell /bin/sh "$TESTUSER"

# cron: a job that prints, mailed to root by cron through sendmail.
say "cron: a job that prints $marker, MAILTO=root"
if ! (echo 0 >/proc/self/loginuid) 2>/dev/null; then
	pam_saved="$work/pam.d-cron.orig"
	cp -p /etc/pam.d/cron "$pam_saved"
	sed -i 's/^\(session[[:space:]]\+required[[:space:]]\+pam_loginuid\.so\)/# \1  # t_package.sh: loginuid cannot be set here/' /etc/pam.d/cron
	say "ADJUSTMENT: this machine refuses to set the login uid, so pam_loginuid is off in /etc/pam.d/cron for the test"
fi
printf 'MAILTO=root\n* * * * * root echo "cron output %s"\n' "$marker" >"$CRON_FILE"
chmod 0644 "$CRON_FILE"
if [ -f /run/crond.pid ] && kill -0 "$(cat /run/crond.pid)" 2>/dev/null; then
	say "cron is already running (pid $(cat /run/crond.pid)); it reads $CRON_FILE within a minute"
else
	check "Debian's cron daemon started" /usr/sbin/cron
	cron_started=yes
fi
cron_start=$(date +%s)
if wait_for 130 in_mbox "cron output $marker"; then
	ok "cron's mail reached $MBOX after $(($(date +%s) - cron_start)) s"
else
	tail -20 "$work/syslog.log" 2>/dev/null
	fail "cron's mail reached $MBOX within 130 s"
fi
rm -f "$CRON_FILE"

# sudo with mail_always: mails root about every use.
say "sudo: mail_always"
printf 'Defaults mail_always\nDefaults mailto="root"\n%s ALL=(root) NOPASSWD: /usr/bin/true\n' "$TESTUSER" >"$SUDOERS_FILE"
chmod 0440 "$SUDOERS_FILE"
check "visudo accepts the drop-in" visudo -cqf "$SUDOERS_FILE"
sudo_before=$(mbox_count "COMMAND=/usr/bin/true")
check "sudo -n /usr/bin/true as $TESTUSER" runuser -u "$TESTUSER" -- sudo -n /usr/bin/true
if wait_for 30 sh -c "[ \$(grep -cF 'COMMAND=/usr/bin/true' '$MBOX' 2>/dev/null) -gt $sudo_before ]"; then
	ok "sudo's SECURITY information mail reached $MBOX"
else
	fail "sudo's mail reached $MBOX within 30 s"
fi
check "it is sudo's SECURITY information mail" grep -qF "SECURITY information for" "$MBOX"
rm -f "$SUDOERS_FILE"

# mail(1) as a normal user.
say "mail -s subj root, as $TESTUSER"
check "mail -s exits 0" runuser -u "$TESTUSER" -- sh -c "echo 'mailx body $marker' | mail -s 'mailx $marker' root"
if wait_for 30 in_mbox "mailx body $marker"; then ok "mail(1)'s message reached $MBOX"; else fail "mail(1)'s message reached $MBOX within 30 s"; fi

# sendmail while laimd is stopped: stored in offline/, delivered at start.
say "sendmail while laimd is stopped"
stop_laimd || fail "laimd stopped on SIGTERM with status 0"
ok "laimd stopped on SIGTERM with status 0"
offline_before=$(find "$SPOOL/offline" -type f | wc -l)
printf 'Subject: offline %s\n\noffline body %s\n' "$marker" "$marker" >"$work/offline.msg"
chmod 0644 "$work/offline.msg"
check "sendmail root exits 0 with laimd down" runuser -u "$TESTUSER" -- sh -c "/usr/sbin/sendmail root <'$work/offline.msg'"
check "the message waits in $SPOOL/offline" test "$(find "$SPOOL/offline" -type f | wc -l)" -gt "$offline_before"
check "it is not delivered yet" sh -c "! grep -qF 'offline body $marker' '$MBOX'"
# laim.yml(5)'s Maildir place: a maildir handler in $LIB delivers.
cat >/etc/laim/config.yml <<EOF
handlers:
  local:
    type: mbox
  box:
    type: maildir
    path: $LIB/Maildir
routes:
  - match: "pkgtest-maildir@*"
    handlers: [box]
  - match: "*"
    handlers: [local]
EOF
start_laimd
ok "laimd started again"
if wait_for 30 in_mbox "offline body $marker"; then ok "the offline message reached $MBOX"; else fail "the offline message reached $MBOX within 30 s"; fi
check "$SPOOL/offline is empty again" wait_for 10 sh -c "[ -z \"\$(find '$SPOOL/offline' -type f)\" ]"
check "sendmail pkgtest-maildir exits 0" sh -c "printf 'Subject: maildir %s\n\nmaildir body %s\n' '$marker' '$marker' | /usr/sbin/sendmail pkgtest-maildir"
check "the message reached the Maildir $LIB/Maildir" wait_for 30 sh -c "grep -qF 'maildir body $marker' '$LIB'/Maildir/new/* 2>/dev/null"
check "mailq exits 0" sh -c "/usr/bin/mailq >'$work/mailq' 2>&1"
sed 's/^/#   /' "$work/mailq"
check "laimctl show stats exits 0" sh -c "/usr/sbin/laimctl show stats >'$work/stats' 2>&1"
sed 's/^/#   /' "$work/stats"

# The mailbox is one that Debian's mail reader reads: bsd-mailx lists
# the headers of every message (f *), and x leaves the file as it was.
printf 'f *\nx\n' | mail -N -f "$MBOX" >"$work/mail-H" 2>&1 || true
tail -n 8 "$work/mail-H" | sed 's/^/#   /'
check "mail -f $MBOX lists the cron mail" grep -qF "Cron <root@" "$work/mail-H"
check "mail -f $MBOX lists the mail(1) message" grep -qF "mailx $marker" "$work/mail-H"
check "mail -f $MBOX lists the offline message" grep -qF "offline $marker" "$work/mail-H"
check "mail -f $MBOX lists sudo's mail" grep -qF "SECURITY information" "$work/mail-H"
check "$MBOX was created root:mail 0600" test "$(stat -c '%U:%G %a' "$MBOX")" = "root:mail 600"

# Python's mailbox module splits the file as mail readers do: each test
# message is there once (cron's job may have run more than once). The
# cron mail is shown as delivered.
cat >"$work/mbox.py" <<'EOF'
import mailbox, sys
path, marker, show = sys.argv[1:4]
found = {"cron output": 0, "mailx body": 0, "offline body": 0}
for msg in mailbox.mbox(path):
    text = msg.as_string()
    for what in found:
        if what + " " + marker in text:
            found[what] += 1
            if what == "cron output" and found[what] == 1:
                with open(show, "w") as out:
                    out.write("From " + msg.get_from() + "\n" + text.rstrip("\n") + "\n")
print("# messages found:", found)
sys.exit(0 if found["cron output"] >= 1 and found["mailx body"] == 1 and found["offline body"] == 1 else 1)
EOF
check "$MBOX parses as mbox with each test message once" python3 "$work/mbox.py" "$MBOX" "$marker" "$work/cron-mail"
say "the cron mail as delivered:"
sed 's/^/#   /' "$work/cron-mail"

if [ -n "$cron_started" ] && [ -f /run/crond.pid ]; then
	kill "$(cat /run/crond.pid)" 2>/dev/null || true
	cron_started=""
fi

# ------------------------------------------------------------ 4. remove and purge
# Removed while a laimd started by hand still runs: its sockets stay.
say "apt-get remove laim, laimd still running"
apt-get remove -y -q laim >"$work/apt-remove.log" 2>&1 || { tail -20 "$work/apt-remove.log"; fail "apt-get remove laim"; }
check "laim is removed" sh -c "dpkg-query -W -f='\${db:Status-Abbrev}' laim | grep -q '^rc'"
check "the running laimd keeps /run/laim/submit.sock" test -S /run/laim/submit.sock
stop_laimd || fail "laimd stopped on SIGTERM with status 0"
ok "laimd stopped"

# The Maildir holds delivered mail, which a purge leaves: it goes first,
# as README.Debian says.
rm -rf "$LIB/Maildir"
say "apt-get purge laim"
apt-get purge -y -q laim >"$work/apt-purge.log" 2>&1 || { tail -20 "$work/apt-purge.log"; fail "apt-get purge laim"; }
grep -E '^(Removing|Purging)' "$work/apt-purge.log" | sed 's/^/#   /'
check "dpkg no longer knows laim" sh -c "! dpkg-query -W -f='\${db:Status-Abbrev}' laim 2>/dev/null | grep -q '[a-z]'"
for p in /etc/laim $SPOOL $LIB /run/laim /usr/libexec/laim /usr/sbin/laimd /usr/sbin/laimctl /usr/sbin/sendmail \
	/usr/lib/sendmail /usr/bin/mailq /lib/systemd/system/laim.service \
	/etc/systemd/system/multi-user.target.wants/laim.service; do
	check "$p is gone" test ! -e "$p" -a ! -L "$p"
done
check "the user laim is gone" sh -c "! getent passwd laim"
check "the group laim is gone" sh -c "! getent group laim"
check "the user laim-smtp is gone" sh -c "! getent passwd laim-smtp"
check "the group laim-smtp is gone" sh -c "! getent group laim-smtp"
check "the group laimdrop is gone" sh -c "! getent group laimdrop"
check "no statoverride for laim-drop" sh -c "! dpkg-statoverride --list '$DROP' >/dev/null"
check "/etc/mailname stays (other packages use it)" test -s /etc/mailname
# Anything else named after laim, but for the mailboxes, man-db's cache
# of formatted pages (its daily job expires those) and /var/tmp.
find /etc /var /usr /lib /run /opt -xdev \( -name laim -o -name 'laim[-._]*' -o -name 'laimd*' -o -name 'laimctl*' \) \
	-not -path '/var/cache/man/*' -not -path '/var/mail/*' -not -path '/var/tmp/*' >"$work/leftovers" 2>/dev/null || true
sed 's/^/#   left: /' "$work/leftovers"
check "no file named after laim is left" test ! -s "$work/leftovers"
check "no laimd process is left" sh -c "! ls -l /proc/[0-9]*/exe 2>/dev/null | grep -q ' /usr/sbin/laimd'"
