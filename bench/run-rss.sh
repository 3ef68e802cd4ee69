#!/bin/sh
# The memory of a long-running `aside serve`: an SQLite database of USERS
# users in a temporary directory, an L1 of CAPACITY entries (a quarter of
# them by default), and ROUNDS rounds of `aside bench --http` (95% reads, a
# Zipf(0.3) popularity, so that the L1 keeps evicting), the server's
# resident memory printed after each round.  Values that live in the L1
# until evicted must not fragment the heap: the figure should level off
# after a few rounds, not climb (docs/operations.md, Sizing).
#   bench/run-rss.sh [BUILD_DIR] [ROUNDS] [SECONDS] [USERS] [CAPACITY]
set -eu
build=${1:-build-rel}
rounds=${2:-16}
secs=${3:-15}
users=${4:-200000}
cap=${5:-$((users / 4))}
[ -x "$build/aside" ] || {
	echo "run-rss: no $build/aside; build it first" >&2
	exit 2
}
dir=$(mktemp -d "${TMPDIR:-/tmp}/aside-rss.XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$build/aside" serve --db "sqlite:$dir/users.db" \
    --cache "mem://?capacity=$cap" --listen 127.0.0.1:0 \
    >"$dir/serve.out" 2>"$dir/serve.err" &
pid=$!
url=
for _ in $(seq 1 50); do
	url=$(sed -n 's|.*listening on \(http://[0-9.:]*\).*|\1|p' "$dir/serve.out")
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || {
	echo "run-rss: aside serve did not start:" >&2
	cat "$dir/serve.err" >&2
	exit 1
}
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $users users, L1 of $cap, $rounds rounds of $secs s"
echo "# round  rss_kib  ops/s"
# The first round also creates the users.
i=1
while [ "$i" -le "$rounds" ]; do
	ops=$("$build/aside" bench --http "$url" --users "$users" --theta 0.3 \
	    --duration-s "$secs" --threads 2 2>&1 |
	    awk '$1 == "http" { print $2 }')
	echo "$i $(rss) ${ops:--}"
	i=$((i + 1))
done
