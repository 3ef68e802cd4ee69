#!/bin/sh
# The L1 hit benchmarks of docs/performance.md, side by side with Caffeine
# on the same machine: 100,000 resident keys, 1 and 2 threads, 5 s each.
#   bench/run-l1.sh BUILD_DIR [SECONDS]
set -eu
build=${1:-build-rel}
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/../../shared/peers/caffeine/run
[ -x "$peer" ] || peer=$here/../../../shared/peers/caffeine/run
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(nproc) CPUs"
for t in 1 2; do
	for mode in engine ref service; do
		"$build/bench/bench_l1" "$mode" 100000 "$t" "$secs" | grep 'M gets/s'
	done
	if [ -x "$peer" ]; then
		(cd /tmp && "$peer" throughput 100000 "$t" 2>/dev/null | grep 'M gets/s')
	fi
done
