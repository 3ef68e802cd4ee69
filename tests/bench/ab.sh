#!/bin/sh
# bench_ab on a small input: every mode loads a build twice, reads every key,
# and prints each side's rate and B/A; a directory without the libraries is
# refused.
#   ab.sh BENCH_AB BUILD_DIR
set -eu
ab=$1
build=$2
fail() { echo "bench_ab test: $*" >&2; exit 1; }
for mode in engine service ref get obj; do
	out=$("$ab" "$mode" "$build" "$build" 2000 0.6 0.1) || fail "$mode: exit $?: $out"
	echo "$out"
	echo "$out" | grep -Eq "^bench_ab $mode N=2000: A [0-9.]+ M/s \(.*\), B [0-9.]+ M/s \(.*\), B/A [0-9.]+$" ||
	    fail "$mode: got: $out"
done
if out=$("$ab" engine "$build" /nonexistent 1000 0.2 2>&1); then
	fail "a directory without libaside-users.so was accepted: $out"
fi
echo "$out" | grep -q "nonexistent" || fail "no reason given: $out"
echo "bench_ab: ok"
