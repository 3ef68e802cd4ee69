#!/bin/sh
# The Caffeine peer's throughput harness run twice over, side by side: as
# shipped (keys 1..N, whose Long hash codes are the keys themselves, so the
# map's table is read in key order and the slots touched stay together), and
# with each key multiplied by an odd 64-bit constant before use (the same
# keys in number, their table slots spread as a real hash spreads them, as
# aside's string keys are).  The second is derived from the peer's own
# source by sed at run time, so the two differ in that one expression.
#   bench/run-peer-keys.sh [PAIRS]          default 3
set -eu
pairs=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/../../shared/peers/caffeine
[ -d "$peer" ] || peer=$here/../../../shared/peers/caffeine
[ -f "$peer/Throughput.java" ] || { echo "run-peer-keys: no peer at $peer" >&2; exit 2; }
"$peer/run" >/dev/null 2>&1 || true # installs the JDK and Caffeine if missing
cp=/usr/share/java/caffeine.jar
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$peer/Throughput.java" "$dir/"
sed -e 's/class Throughput/class ThroughputSpread/' \
    -e 's/c\.put(k, k)/c.put(k * 0x9E3779B97F4A7C15L, k)/' \
    -e 's/c\.getIfPresent(Math\.floorMod(s, (long) n) + 1)/c.getIfPresent((Math.floorMod(s, (long) n) + 1) * 0x9E3779B97F4A7C15L)/' \
    "$peer/Throughput.java" >"$dir/ThroughputSpread.java"
grep -q 'getIfPresent((Math' "$dir/ThroughputSpread.java" ||
    { echo "run-peer-keys: the peer's harness changed; update the sed" >&2; exit 2; }
javac -cp "$cp" -d "$dir" "$dir/Throughput.java" "$dir/ThroughputSpread.java"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, N=100000, 1 thread"
i=0
while [ "$i" -lt "$pairs" ]; do
	a=$(java -cp "$cp:$dir" Throughput 100000 1 | sed -n 's/.*: \([0-9.]*\) M.*/\1/p')
	b=$(java -cp "$cp:$dir" ThroughputSpread 100000 1 | sed -n 's/.*: \([0-9.]*\) M.*/\1/p')
	echo "pair $((i + 1)): keys 1..N $a, spread keys $b M gets/s; spread/shipped $(echo "$a $b" | awk '{printf "%.2f", $2 / $1}')"
	i=$((i + 1))
done
