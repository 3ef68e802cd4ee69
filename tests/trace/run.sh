#!/bin/sh
# aside trace on small inputs: figures that do not depend on the policy, and
# the reference policies' exact figures.
#   run.sh ASIDE_BINARY
set -eu
aside=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "trace test: $*" >&2; exit 1; }

# 10 distinct keys read 5 times each: with room for all, 40 of 50 hit.
for _ in 1 2 3 4 5; do seq 1 10; done >"$tmp/t.txt"
out=$("$aside" trace --capacity 100 "$tmp/t.txt")
echo "$out" | grep -q 'events=50 capacity=100 hit_ratio=0.8000 evictions=0' || fail "got: $out"

# gzip gives the same figures as plain text.
gzip -c "$tmp/t.txt" >"$tmp/t.txt.gz"
gz=$("$aside" trace --capacity 100 "$tmp/t.txt.gz" | sed 's/trace=[^ ]*//; s/ [0-9.]*s$//')
plain=$(echo "$out" | sed 's/trace=[^ ]*//; s/ [0-9.]*s$//')
[ "$gz" = "$plain" ] || fail "gzip gave '$gz', plain '$plain'"

# A capacity of 1 on alternating keys never hits, and evicts every time.
for i in $(seq 1 100); do echo $((i % 2)); done >"$tmp/alt.txt"
out=$("$aside" trace --capacity 1 "$tmp/alt.txt")
echo "$out" | grep -q 'events=100 capacity=1 hit_ratio=0.0000 evictions=99' || fail "got: $out"

# Capacity is never exceeded: evictions = distinct insertions - capacity.
seq 1 1000 >"$tmp/scan.txt"
out=$("$aside" trace --capacity 100 "$tmp/scan.txt")
echo "$out" | grep -q 'hit_ratio=0.0000 evictions=900' || fail "got: $out"

# Bad input is an error that names the line.
printf '1\n2\nthree\n' >"$tmp/bad.txt"
if "$aside" trace --capacity 10 "$tmp/bad.txt" 2>"$tmp/err"; then fail "accepted a bad line"; fi
grep -q 'bad.txt:3: not a key' "$tmp/err" || fail "error was: $(cat "$tmp/err")"
for bad in '-1' ' 3' '+3' '3 4' '18446744073709551616' '0x10'; do
	printf '1\n%s\n' "$bad" >"$tmp/bad2.txt"
	if "$aside" trace --capacity 10 "$tmp/bad2.txt" 2>"$tmp/err"; then fail "accepted '$bad'"; fi
	grep -q "bad2.txt:2: not a key" "$tmp/err" || fail "for '$bad' the error was: $(cat "$tmp/err")"
done
# Binary garbage is shown printable, never as raw bytes.
printf '\001\033[31m\n' >"$tmp/bin.txt"
"$aside" trace --capacity 10 "$tmp/bin.txt" 2>"$tmp/err" && fail "accepted binary garbage"
grep -q "'??\[31m'" "$tmp/err" || fail "binary shown as: $(cat "$tmp/err")"
# Blank lines are skipped; CRLF line ends, the largest key and a last line
# without its newline are keys.
printf '1\n\n18446744073709551615\r\n\r\n1' >"$tmp/ok.txt"
out=$("$aside" trace --capacity 10 "$tmp/ok.txt")
echo "$out" | grep -q 'events=3 capacity=10 hit_ratio=0.3333' || fail "got: $out"
"$aside" trace --capacity 10 "$tmp/missing.txt" 2>/dev/null && fail "accepted a missing file"
# A capacity out of the tier's range is refused by the option itself, with
# the range it takes.
if "$aside" trace --capacity 2147483648 "$tmp/t.txt" 2>"$tmp/err"; then fail "accepted 2^31"; fi
grep -q 'capacity wants a whole number in \[1, 1073741824\]' "$tmp/err" || fail "error was: $(cat "$tmp/err")"
# Under a limit on address space, the L1's region of heads is reserved
# smaller (1.5 GB: 1 GiB) and works; below what it needs at least (256 MiB),
# opening the L1 fails with a message that says so.  Not under a sanitizer,
# whose runtime reserves far more address space than any such limit, nor
# where the shell has no `ulimit -v` (dash and bash have it).
# shellcheck disable=SC3045
if ! ldd "$aside" 2>/dev/null | grep -q 'libasan\|libtsan' &&
	(ulimit -v) >/dev/null 2>&1; then
	# shellcheck disable=SC3045
	out=$(ulimit -v 1500000 && "$aside" trace --capacity 100 "$tmp/t.txt") ||
		fail "under ulimit -v 1500000: $out"
	echo "$out" | grep -q 'hit_ratio=0.8000' || fail "under ulimit -v 1500000: $out"
	# shellcheck disable=SC3045
	if (ulimit -v 200000 && "$aside" trace --capacity 100 "$tmp/t.txt") 2>"$tmp/err"; then
		fail "ran in 200 MB of address space"
	fi
	grep -q 'refused the address space an L1 keeps its values in' "$tmp/err" ||
		fail "under ulimit -v 200000 the error was: $(cat "$tmp/err")"
fi
# The reference policies (--policy lru, opt).  A loop of three keys at a
# capacity of two: LRU never hits, evicting on every miss after the first
# two; OPT, evicting the resident read again furthest ahead, hits at reads
# 4, 6 and 8 (1, 3, 2) and evicts at reads 3, 5, 7 and 9.
printf '1\n2\n3\n1\n2\n3\n1\n2\n3\n' >"$tmp/loop3.txt"
out=$("$aside" trace --policy lru --capacity 2 "$tmp/loop3.txt")
echo "$out" | grep -q 'events=9 capacity=2 hit_ratio=0.0000 evictions=7 policy=lru' || fail "lru got: $out"
out=$("$aside" trace --policy opt --capacity 2 "$tmp/loop3.txt")
echo "$out" | grep -q 'events=9 capacity=2 hit_ratio=0.3333 evictions=4 policy=opt' || fail "opt got: $out"
# With room for every key, each policy misses only a key's first read.
for p in lru opt; do
	out=$("$aside" trace --policy $p --capacity 100 "$tmp/t.txt")
	echo "$out" | grep -q "events=50 capacity=100 hit_ratio=0.8000 evictions=0 policy=$p" || fail "$p got: $out"
done
# A read moves a key to LRU's young end: 1 2 1 3 1 at a capacity of two
# evicts 2, not 1 (first in, first out would), and hits twice.
printf '1\n2\n1\n3\n1\n' >"$tmp/order.txt"
out=$("$aside" trace --policy lru --capacity 2 "$tmp/order.txt")
echo "$out" | grep -q 'hit_ratio=0.4000 evictions=1' || fail "lru's order got: $out"
# A capacity of one: LRU hits only a key read twice in a row.
printf '5\n5\n6\n5\n5\n5\n' >"$tmp/one.txt"
out=$("$aside" trace --policy lru --capacity 1 "$tmp/one.txt")
echo "$out" | grep -q 'hit_ratio=0.5000 evictions=2' || fail "lru at 1 got: $out"
# On a skewed trace (a fixed seed): no policy beats OPT, and LRU at twice
# the capacity hits at least as often as at the capacity (LRU's inclusion
# property: its larger cache always holds what the smaller one does).
awk 'BEGIN { srand(7); for (i = 0; i < 20000; i++) print int(rand() ^ 3 * 2000) }' >"$tmp/skew.txt"
ratio() { "$aside" trace "$@" "$tmp/skew.txt" | sed -n 's/.*hit_ratio=\([0-9.]*\).*/\1/p'; }
opt=$(ratio --policy opt --capacity 100)
lru=$(ratio --policy lru --capacity 100)
lru2=$(ratio --policy lru --capacity 200)
l1=$(ratio --capacity 100)
awk -v o="$opt" -v l="$lru" -v l2="$lru2" -v a="$l1" 'BEGIN {
	exit !(o >= l && o >= a && l2 >= l && o > 0 && l > 0) }' ||
	fail "skewed trace: opt $opt, lru $lru, lru at 200 $lru2, the L1 $l1"
# Bad input and a bad policy name are errors.
if "$aside" trace --policy opt --capacity 10 "$tmp/bad.txt" 2>"$tmp/err"; then fail "opt accepted a bad line"; fi
grep -q 'bad.txt:3: not a key' "$tmp/err" || fail "opt's error was: $(cat "$tmp/err")"
if "$aside" trace --policy lfu --capacity 10 "$tmp/t.txt" 2>"$tmp/err"; then fail "accepted --policy lfu"; fi
grep -q "policy wants aside, lru or opt, not 'lfu'" "$tmp/err" || fail "bad policy's error was: $(cat "$tmp/err")"
if "$aside" trace --policy lru --shards 2 --capacity 10 "$tmp/t.txt" 2>"$tmp/err"; then fail "lru took --shards"; fi
grep -q "shards is the cache's; lru is not sharded" "$tmp/err" || fail "lru's --shards error was: $(cat "$tmp/err")"
out=$("$aside" trace --policy aside --capacity 100 "$tmp/t.txt")
echo "$out" | grep -q 'hit_ratio=0.8000 evictions=0 policy=w-tinylfu' || fail "--policy aside got: $out"
"$aside" trace --policy lru --capacity 10 "$tmp/missing.txt" 2>/dev/null && fail "lru accepted a missing file"
echo "trace test: ok"
