#!/bin/sh
# What stale_while_revalidate_ms changes when hot keys expire: aside bench
# on a few hot users with a short TTL and a slow database, with and without
# it, ROUNDS times each, alternating (docs/performance.md).
#   bench/run-swr.sh [BUILD_DIR] [ROUNDS] [SECONDS] [DB_DELAY_US]
# Per run: throughput, the waiters per load, the hit ratio (an expired copy
# served counts as a hit), and the share of requests that took 256 us or
# more (from latency.csv): in this workload, requests that waited for the
# database, their own load or another reader's.
set -eu
build=${1:-build-rel}
rounds=${2:-3}
secs=${3:-8}
delay=${4:-2000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT INT TERM
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs; 1000 users, TTL 1 s," \
	"16 threads, 100% reads, database +$delay us, $secs s a run"
printf '%-6s %-5s %10s %12s %9s %14s\n' round swr "ops/s" "waiters/load" \
	"hit ratio" "slow (>=256us)"
i=1
while [ "$i" -le "$rounds" ]; do
	for swr in 0 1000; do
		url='mem://?ttl_ms=1000'
		[ "$swr" -eq 0 ] || url="$url&stale_while_revalidate_ms=$swr"
		rm -rf "$out/csv"
		"$build/aside" bench --users 1000 --modes aside --read-pct 100 \
			--threads 16 --duration-s "$secs" --db-delay-us "$delay" \
			--cache "$url" --csv "$out/csv" >/dev/null 2>&1
		awk -F, -v r="$i" -v s="$swr" '
			FNR == 1 { next }
			FILENAME ~ /summary/ { ops = $3; w = $9; h = $7 }
			FILENAME ~ /latency/ && $2 < 256 { below = $3 }
			END { printf "%-6s %-5s %10d %12s %9s %14.6f\n",
				r, s, ops, w, h, 1 - below }' \
			"$out/csv/summary.csv" "$out/csv/latency.csv"
	done
	i=$((i + 1))
done
