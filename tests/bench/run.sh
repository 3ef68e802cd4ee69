#!/bin/sh
# aside bench on a small input: every mode runs, the figures add up (the
# bench checks hits + misses = reads and loads = database reads itself and
# fails otherwise), and the CSV says what the table says.
#   run.sh ASIDE_BINARY
set -eu
aside=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "bench test: $*" >&2; exit 1; }

"$aside" bench --users 500 --duration-s 0.5 --threads 2 --csv "$tmp/csv" >"$tmp/out" 2>"$tmp/err" ||
	fail "exit $?: $(cat "$tmp/err")"
for m in nocache naive aside; do
	grep -q "^$m " "$tmp/out" || fail "no $m row in: $(cat "$tmp/out")"
	grep -q "^$m," "$tmp/csv/summary.csv" || fail "no $m row in summary.csv"
	grep -q "^$m,1," "$tmp/csv/series.csv" || fail "no $m series"
done
# The latency distribution ends at 1 for every mode.
for m in nocache naive aside; do
	tail_frac=$(grep "^$m," "$tmp/csv/latency.csv" | tail -n 1 | cut -d, -f3)
	[ "$tail_frac" = "1.000000" ] || fail "$m latency ends at $tail_frac"
done
# No cache: every read is a database read; no hits, no errors.
awk -F, '$1=="nocache" && ($7 != "0.0000" || $10 != 0) {exit 1}' "$tmp/csv/summary.csv" ||
	fail "nocache: $(grep nocache "$tmp/csv/summary.csv")"
# The caches hit, and make fewer database reads than no cache.
awk -F, 'NR>1 {r[$1]=$8; h[$1]=$7; e[$1]=$10}
	END {exit !(h["aside"] > 0.5 && h["naive"] > 0.5 && r["aside"] < r["nocache"] &&
	            e["aside"] == 0 && e["naive"] == 0)}' "$tmp/csv/summary.csv" ||
	fail "$(cat "$tmp/csv/summary.csv")"

# Stale reads: a write's number must never go back for a read that began
# after the write returned.  One user, half the operations writes, database
# reads slowed: the naive cache-aside stores rows its loads read before a
# write and serves them after it; aside must not, ever.
"$aside" bench --users 1 --read-pct 50 --threads 4 --db-delay-us 500 --duration-s 1 \
	--modes naive,aside --csv "$tmp/stale" >"$tmp/out" 2>"$tmp/err" ||
	fail "stale run: exit $?: $(cat "$tmp/err")"
awk -F, 'NR>1 {s[$1]=$11} END {exit !(s["naive"] > 0 && s["aside"] == 0)}' \
	"$tmp/stale/summary.csv" || fail "stale reads: $(cat "$tmp/stale/summary.csv")"

# Reads of ids no user has (--absent-pct): answered not found in every mode
# (no errors); with negative_ttl_ms aside reads the database less than half
# as often as the naive cache-aside, which caches no absence.
"$aside" bench --users 500 --absent-pct 30 --duration-s 0.5 --modes naive,aside \
	--cache 'mem://?negative_ttl_ms=60000' --csv "$tmp/absent" >"$tmp/out" 2>"$tmp/err" ||
	fail "absent run: exit $?: $(cat "$tmp/err")"
awk -F, 'NR>1 {r[$1]=$8; e[$1]=$10}
	END {exit !(r["aside"] * 2 < r["naive"] && e["aside"] == 0 && e["naive"] == 0)}' \
	"$tmp/absent/summary.csv" || fail "absent: $(cat "$tmp/absent/summary.csv")"

# --http drives a running aside serve (a private one on a free port).
"$aside" serve --listen 127.0.0.1:0 --db "sqlite:$tmp/serve.db" >"$tmp/serve.log" 2>&1 &
serve=$!
i=0
until url=$(sed -n 's/^aside serve: listening on \(http:[^ ]*\).*/\1/p' "$tmp/serve.log") &&
	[ -n "$url" ]; do
	i=$((i + 1))
	[ $i -lt 100 ] || { kill $serve; fail "aside serve did not start: $(cat "$tmp/serve.log")"; }
	sleep 0.1
done
"$aside" bench --http "$url" --users 50 --read-pct 80 --absent-pct 10 --threads 2 --duration-s 0.5 \
	--csv "$tmp/http" >"$tmp/out" 2>"$tmp/err" ||
	{ rc=$?; kill $serve; fail "http run: exit $rc: $(cat "$tmp/err")"; }
kill $serve
wait $serve || true
grep -q "^http " "$tmp/out" || fail "no http row in: $(cat "$tmp/out")"
awk -F, '$1=="http" && !($2 > 0 && $7 > 0.5 && $10 == 0 && $11 == 0 && $12 == "mem") {exit 1}' \
	"$tmp/http/summary.csv" || fail "http: $(cat "$tmp/http/summary.csv")"

# Hit ratio by tier: naive's map, aside's L1; none for no cache.  Over
# Redis with an L1 in front (when make test provides a Redis), two tiers
# whose shares add up to the hit ratio.
awk -F, 'NR>1 {t[$1]=$12; r[$1]=$13; h[$1]=$7}
	END {exit !(t["nocache"] == "" && t["naive"] == "map" && r["naive"] == h["naive"] &&
	            t["aside"] == "mem" && r["aside"] == h["aside"])}' "$tmp/csv/summary.csv" ||
	fail "by tier: $(cat "$tmp/csv/summary.csv")"
if [ -n "${ASIDE_TEST_REDIS_URL:-}" ]; then
	redis="$ASIDE_TEST_REDIS_URL/5" # this test's Redis database
	redis-cli -u "$redis" FLUSHDB >/dev/null
	"$aside" bench --users 2000 --duration-s 0.5 --threads 2 --modes aside \
		--cache "$redis?l1=200" --csv "$tmp/tiers" >"$tmp/out" 2>"$tmp/err" ||
		fail "two tiers: exit $?: $(cat "$tmp/err")"
	awk -F, '$1=="aside" {d = $13 + $15 - $7; if (d < 0) d = -d
		ok = $12 == "mem" && $14 == "redis" && $13 > 0 && $15 > 0 && d < 0.00015 && $11 == 0}
		END {exit !ok}' "$tmp/tiers/summary.csv" ||
		fail "two tiers: $(cat "$tmp/tiers/summary.csv")"
fi

# A trace drives it too, and bad options are refused.
seq 1 200 | gzip >"$tmp/t.gz"
"$aside" bench --users 100 --duration-s 0.3 --modes aside --trace "$tmp/t.gz" >/dev/null 2>&1 ||
	fail "trace run failed"
for bad in "--read-pct 101" "--read-pct abc" "--threads 0" "--theta 1.5"; do
	# shellcheck disable=SC2086
	if "$aside" bench $bad >/dev/null 2>&1; then fail "accepted $bad"; fi
done
# A trace with no keys, or a line that is not one, is refused (it once
# crashed on a division by zero, and took garbage for key 0).
: >"$tmp/empty.txt"
if "$aside" bench --users 10 --duration-s 0.2 --modes aside --trace "$tmp/empty.txt" 2>"$tmp/err"; then
	fail "ran on an empty trace"
fi
grep -q 'empty.txt: no keys' "$tmp/err" || fail "empty trace: $(cat "$tmp/err")"
printf '1\n2\nthree\n' >"$tmp/bad.txt"
if "$aside" bench --users 10 --duration-s 0.2 --modes aside --trace "$tmp/bad.txt" 2>"$tmp/err"; then
	fail "ran on a bad trace"
fi
grep -q 'bad.txt:3: not a key' "$tmp/err" || fail "bad trace: $(cat "$tmp/err")"
# Interrupted (Ctrl-C), it stops within a second, says so, exits 130 and
# removes its temporary database.
"$aside" bench --users 200 --duration-s 30 --modes aside >"$tmp/out" 2>"$tmp/err" &
pid=$!
sleep 2
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 130 ] || fail "interrupted: exit $rc: $(cat "$tmp/err")"
grep -q 'interrupted' "$tmp/err" || fail "interrupted: $(cat "$tmp/err")"
db=$(sed -n 's/.* users in sqlite:\(.*\)\/users.db.*/\1/p' "$tmp/err")
[ -n "$db" ] && [ ! -e "$db" ] || fail "interrupted: left '$db' behind"
# --modes takes the three names only.
if "$aside" bench --users 10 --duration-s 0.2 --modes aside,nocahce 2>"$tmp/err"; then
	fail "ran with a misspelt mode"
fi
grep -q "modes wants a list of nocache, naive and aside" "$tmp/err" || fail "modes: $(cat "$tmp/err")"
echo "bench test: ok"
