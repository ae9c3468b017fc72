#!/usr/bin/env bash
# The seed scenario end to end on the built-in lab: traceroute without the
# tunnel, attach grebpf on r1 and r2 from the lab's own config, traceroute
# and ping through the tunnel interfaces, stats.
# Exits non-zero if the traceroutes are not the seed's.
set -euo pipefail
grebpf=${GREBPF:-bin/grebpf}

run() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
hops() { awk '$1 ~ /^[0-9]+$/ {print $2}' | paste -sd' '; }
expect() { # expect WHAT GOT WANT
	if [ "$2" != "$3" ]; then echo "demo: $1: got '$2', want '$3'" >&2; exit 1; fi
	echo "  ok: $1 is '$3'"
}

"$grebpf" lab down >/dev/null 2>&1 || true
trap '"$grebpf" lab down >/dev/null 2>&1 || true' EXIT

run "$grebpf" lab up --tunnel none
run ip netns exec lan1 traceroute -n -q 1 -w 1 -m 4 172.16.200.1 | tee /tmp/grebpf-demo.$$
expect "traceroute without the tunnel" "$(hops </tmp/grebpf-demo.$$)" "172.16.100.254 * * *"

# The lab's routers, as it defines them: one file, a part per router.
sites=$(mktemp --suffix .yaml)
trap '"$grebpf" lab down >/dev/null 2>&1 || true; rm -f "$sites"' EXIT
"$grebpf" lab config >"$sites"
run cat "$sites"
run "$grebpf" --netns r2 attach --config "$sites" --site r2
run "$grebpf" --netns r1 attach --config "$sites" --site r1
run ip netns exec lan1 traceroute -n -w 1 172.16.200.1 | tee /tmp/grebpf-demo.$$
expect "traceroute through grebpf" "$(hops </tmp/grebpf-demo.$$)" "172.16.100.254 192.168.1.2 172.16.200.1"
rm -f /tmp/grebpf-demo.$$

run ip netns exec lan1 ping -c 3 -i 0.2 172.16.200.1
run ip netns exec lan2 ping -c 2 -i 0.2 192.168.1.1
run ip -n r1 -s link show gre1
run "$grebpf" --netns r1 show
run "$grebpf" --netns r1 stats
run "$grebpf" --netns r2 stats
run "$grebpf" lab down
