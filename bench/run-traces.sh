#!/bin/sh
# The L1 hit-ratio table of docs/performance.md in one command: every shared
# trace at the capacity of ../shared/traces/README.md, RUNS times each (hash
# seeds and the filter's random admission make runs differ), the mean and
# range against the better of Caffeine 2.6.2 and LRU, and OPT's figure
# (`aside trace --policy opt`) beside them.
#   [ASIDE_TRACES=DIR] bench/run-traces.sh [BUILD_DIR] [RUNS]
set -eu
build=${1:-build-rel}
runs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
# ASIDE_TRACES names the traces' directory when the checkout is not beside it.
traces=${ASIDE_TRACES:-$here/../../shared/traces}
[ -d "$traces" ] || traces=$here/../../../shared/traces
[ -d "$traces" ] || {
	echo "run-traces: no traces beside the checkout (../shared/traces); set ASIDE_TRACES" >&2
	exit 2
}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $runs runs each"
printf '%-18s %8s %8s %17s %8s %8s %8s %8s\n' trace capacity mean range bar margin met opt
# trace, capacity, Caffeine 2.6.2, LRU (../shared/traces/README.md)
fails=0
while read -r name cap caf lru; do
	ratios=$(i=0; while [ "$i" -lt "$runs" ]; do
		"$build/aside" trace --capacity "$cap" "$traces/$name.trace.gz" |
		    sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p'
		i=$((i + 1))
	done)
	opt=$("$build/aside" trace --policy opt --capacity "$cap" \
	    "$traces/$name.trace.gz" | sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p')
	line=$(echo "$ratios" | awk -v name="$name" -v cap="$cap" \
	    -v caf="$caf" -v lru="$lru" -v opt="$opt" '
		{ s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
		END {
			bar = caf > lru ? caf : lru; m = s / NR
			printf "%-18s %8d %8.4f %8.4f-%.4f %8.4f %+8.4f %8s %8.4f\n",
			    name, cap, m, lo, hi, bar, m - bar, (m >= bar ? "yes" : "NO"), opt
		}')
	echo "$line"
	case $line in *NO*) fails=$((fails + 1)) ;; esac
done <<EOF
cache2k-orm-night 8600 0.9278 0.9346
cache2k-web07 2000 0.5624 0.5550
cache2k-web12 1400 0.7064 0.6867
lirs-multi1 260 0.4806 0.4342
lirs-multi2 570 0.5149 0.3697
lirs-sprite 700 0.8037 0.8624
lirs-loop 500 0.4877 0.0000
lirs-2_pools 1000 0.5436 0.5442
EOF
echo "# below the bar: $fails trace(s)"
