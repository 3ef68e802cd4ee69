#!/bin/sh
# The synthetic rows of docs/performance.md in one command: workloads no
# shared trace shows (keys read a few times then never again, from a cold
# cache, after a scan or after a loop; Zipf popularity; Zipf beside a loop;
# popularity that fades), made by bench/models/phases.py,
# bench/models/zipf_trace.py and bench/models/mix_trace.py, each replayed RUNS
# times through `aside trace`, beside LRU and OPT (`aside trace --policy`)
# and Caffeine 2.6.2 from the peer (../shared/peers/caffeine/run hitratio)
# when it is there.
#   bench/run-synthetic.sh [BUILD_DIR] [RUNS]
#   ASIDE_PEER=0 bench/run-synthetic.sh ...      without the peer's column
#   ASIDE_PEER=PATH/run bench/run-synthetic.sh   the peer's script, when the
#                                                checkout is not beside it
set -eu
build=${1:-build-rel}
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
case ${ASIDE_PEER:-} in
0) peer= ;;
'') peer=$here/../../shared/peers/caffeine/run
    [ -x "$peer" ] || peer=$here/../../../shared/peers/caffeine/run
    [ -x "$peer" ] || peer= ;;
*) peer=$ASIDE_PEER
   [ -x "$peer" ] || {
	echo "run-synthetic: ASIDE_PEER=$peer is not executable" >&2
	exit 2
   } ;;
esac
command -v python3 >/dev/null 2>&1 || {
	echo "run-synthetic: needs python3 (scripts/bootstrap bench installs it)" >&2
	exit 2
}
[ -x "$build/aside" ] || {
	echo "run-synthetic: no $build/aside; build it first" >&2
	exit 2
}
dir=$(mktemp -d "${TMPDIR:-/tmp}/aside-synthetic.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $runs runs each${peer:+, peer beside}"
printf '%-34s %8s %8s %17s %8s %8s %8s\n' workload capacity mean range \
    caffeine lru opt
# name, capacity, how the trace is made (phases, zipf THETA, or mix KIND SEED)
while read -r name cap how; do
	t=$dir/$name.trace
	# shellcheck disable=SC2086 # $how is a list of phases, one word each
	case $how in
	zipf*) python3 "$here/models/zipf_trace.py" ${how#zipf } 100000 \
		   1000000 7 >"$t" ;;
	mix*) python3 "$here/models/mix_trace.py" ${how#mix } >"$t" ;;
	*) python3 "$here/models/phases.py" $how >"$t" ;;
	esac
	stats=$(i=0; while [ "$i" -lt "$runs" ]; do
		"$build/aside" trace --capacity "$cap" "$t" |
		    sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p'
		i=$((i + 1))
	done | awk '{ s += $1; if (NR == 1 || $1 < lo) lo = $1
		      if (NR == 1 || $1 > hi) hi = $1 }
		    END { printf "%8.4f %8.4f-%.4f", s / NR, lo, hi }')
	caf=-
	if [ -n "$peer" ]; then
		out=$(cd "$dir" && "$peer" hitratio "$t" "$cap" 2>/dev/null)
		caf=$(echo "$out" | awk '$1 == "caffeine" { print $2 }')
	fi
	lru=$("$build/aside" trace --policy lru --capacity "$cap" "$t" |
	    sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p')
	opt=$("$build/aside" trace --policy opt --capacity "$cap" "$t" |
	    sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p')
	printf '%-34s %8d %s %8s %8s %8s\n' "$name" "$cap" "$stats" \
	    "${caf:--}" "${lru:--}" "${opt:--}"
	rm -f "$t"
done <<EOF
bursts-G50-cold 500 bursts:12000:50
bursts-G75-cold 500 bursts:12000:75
bursts-G90-cold 500 bursts:12000:90
bursts-G100-cold 500 bursts:12000:100
bursts-G124-cold 500 bursts:12000:124
scan-then-bursts-G100 500 once:500 bursts:12000:100
loop-then-bursts-G100 500 loop:1000:40 bursts:12000:100
bursts-G124-then-loop 500 bursts:12000:124 loop:1000:50
loop-1000-at-500 500 loop:1000:50
zipf-0.6 1000 zipf 0.6
zipf-0.7 1000 zipf 0.7
zipf-0.8 1000 zipf 0.8
zipf-0.99 1000 zipf 0.99
zipf-1.2 1000 zipf 1.2
zipf-0.99-at-10000 10000 zipf 0.99
zipf-0.8-at-30000 30000 zipf 0.8
zloop-at-12000 12000 mix zloop 3
fresh-at-10000 10000 mix fresh 5
fresh-at-100000 100000 mix fresh 5
EOF
