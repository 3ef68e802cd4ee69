#!/bin/sh
# The L1 hit benchmarks of docs/performance.md, side by side with Caffeine
# on the same machine: 100,000 resident keys, 1 and 2 threads.
#   bench/run-l1.sh BUILD_DIR [SECONDS]          each mode, then the peer
#   bench/run-l1.sh BUILD_DIR SECONDS PAIRS      PAIRS interleaved rounds of
#       engine, inline, service and the peer on one thread, with the
#       engine/peer and inline/peer ratios of each round and their medians:
#       on a machine whose memory speed drifts (a shared VM), only runs side
#       by side compare
# ASIDE_BENCH=bench_l1_lto measures the engine and service as a program
# linked with -flto against the static libraries does (the hit path inlined
# into the caller, as the peer's JIT inlines its own)
# ASIDE_PIN=CPU runs the rounds' programs pinned to that CPU (taskset): the
# peer's JVM then keeps its maintenance thread on the reader's CPU too, and
# neither process migrates (docs/performance.md: the peer measures up to
# 1.6x faster so)
set -eu
build=${1:-build-rel}
secs=${2:-5}
pairs=${3:-0}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/../../shared/peers/caffeine/run
[ -x "$peer" ] || peer=$here/../../../shared/peers/caffeine/run
rate() { sed -n 's/.*: \([0-9.]*\) M gets\/s.*/\1/p' | head -1; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(nproc) CPUs"
bench=${ASIDE_BENCH:-bench_l1}
echo "# $bench"
pin=
if [ -n "${ASIDE_PIN:-}" ]; then
	pin="taskset -c $ASIDE_PIN"
	echo "# pinned to CPU $ASIDE_PIN"
fi
if [ "$pairs" -gt 0 ]; then
	[ -x "$peer" ] || { echo "run-l1: no peer at $peer" >&2; exit 2; }
	i=0 ratios= iratios=
	while [ "$i" -lt "$pairs" ]; do
		e=$($pin "$build/bench/$bench" engine 100000 1 "$secs" | rate)
		n=$($pin "$build/bench/$bench" inline 100000 1 "$secs" | rate)
		s=$($pin "$build/bench/$bench" service 100000 1 "$secs" | rate)
		c=$(cd /tmp && $pin "$peer" throughput 100000 1 2>/dev/null | rate)
		r=$(echo "$e $c" | awk '{printf "%.2f", $1 / $2}')
		q=$(echo "$n $c" | awk '{printf "%.2f", $1 / $2}')
		echo "round $((i + 1)): engine $e, inline $n, service $s, caffeine $c M gets/s; engine/caffeine $r, inline/caffeine $q"
		ratios="$ratios $r"
		iratios="$iratios $q"
		i=$((i + 1))
	done
	median() {
		echo "$2" | tr ' ' '\n' | grep . | sort -n |
		    awk -v what="$1" '{r[NR] = $1} END {printf "median %s/caffeine over %d rounds: %.2f\n", what, NR, r[int((NR + 1) / 2)]}'
	}
	median engine "$ratios"
	median inline "$iratios"
	exit 0
fi
for t in 1 2; do
	for mode in engine inline ref service; do
		"$build/bench/$bench" "$mode" 100000 "$t" "$secs" | grep 'M gets/s'
	done
	if [ -x "$peer" ]; then
		(cd /tmp && "$peer" throughput 100000 "$t" 2>/dev/null | grep 'M gets/s')
	fi
done
