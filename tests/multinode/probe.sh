#!/usr/bin/env bash
# probe.sh: can this machine make the simulated nodes of setup.sh? Exits 0 if so; otherwise prints why
# not (one line, for a test's SKIP message) and exits 1: not root, no `ip` (iproute2) or no `ip netns`,
# no `unshare`, or unshare --net --uts --mount / ip netns add refused (an unprivileged container).
PATH="$PATH:/usr/sbin:/sbin"
no() {
    echo "$*"
    exit 1
}
[ "$(id -u)" -eq 0 ] || no "creating network namespaces needs root (run as root to test two nodes)"
command -v ip >/dev/null 2>&1 || no "'ip' (iproute2) is not installed"
ip netns list >/dev/null 2>&1 || no "this 'ip' has no 'netns' support"
command -v unshare >/dev/null 2>&1 || no "'unshare' (util-linux) is not installed"
msg=$(unshare --net --uts --mount true 2>&1) || no "unshare --net --uts --mount is refused here: $msg"
probe=husai-probe-$$
msg=$(ip netns add "$probe" 2>&1) || no "ip netns add is refused here: $msg"
ip netns del "$probe"
exit 0
