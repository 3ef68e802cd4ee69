#!/bin/bash
# aside check, harder than make test runs it: the check test's configurations
# (and a few combinations it does not run) over and over, in LOOPS loops side
# by side against the same servers.  Side by side, each run's fault injector
# also hits the other loops' runs (their PostgreSQL connections terminated,
# their Redis connections killed), so faults come more often and at moments
# no single run would choose: that is how the write reported done without
# its commit was found (docs/consistency.md).  Not part of make test.
#
#   scripts/with-services tests/check/soak.sh ASIDE_BINARY [LOOPS [CYCLES]]
#
# LOOPS defaults to 2, CYCLES (rounds of every configuration, per loop) to 4.
# With one loop, the configurations that pause, demote or fill Redis run too
# (side by side, one loop's pause would stall the others' runs past what
# they were told of).  Reports of runs that found something, or whose
# standard error holds a sanitizer's report, are kept in a directory named
# at the end.  A run that could not run (exit status 2: errors in a run
# without database faults, which another loop's faults cause) is counted,
# not failed.  Exit status: 0 nothing found, 1 findings or sanitizer reports.
set -u
aside=${1:?usage: soak.sh ASIDE_BINARY [LOOPS [CYCLES]]}
loops=${2:-2}
cycles=${3:-4}
if [ -z "${ASIDE_TEST_REDIS_URL:-}" ] || [ -z "${ASIDE_TEST_PG_URL:-}" ]; then
	echo "soak: needs ASIDE_TEST_REDIS_URL and ASIDE_TEST_PG_URL (scripts/with-services)" >&2
	exit 2
fi
r="$ASIDE_TEST_REDIS_URL/4"
configs=(
	"--cache $r --keys 6 --stall-ms 200"
	"--cache $r?l1=1000 --bound-ms 150 --keys 6 --stall-ms 200"
	"--cache $r?l1=1000 --bound-ms 150 --keys 2 --stall-ms 300 --load-delay-ms 50"
	"--cache $r --processes 2 --threads 12 --keys 1 --load-delay-ms 5 --inval-delay-ms 5"
	"--cache $r --keys 6 --redis-faults-ms 150"
	"--cache $r?l1=1000 --bound-ms 150 --keys 6 --redis-faults-ms 150"
	"--cache $r --keys 4 --load-delay-ms 30 --inval-delay-ms 0 --redis-faults-ms 300"
	"--cache $r --keys 4 --db-faults-ms 60"
	"--cache $r?l1=1000 --bound-ms 150 --keys 4 --db-faults-ms 60 --redis-faults-ms 150"
	"--cache $r?l1=1000 --bound-ms 150 --keys 4 --stall-ms 100 --db-faults-ms 60 --redis-faults-ms 150"
	"--cache $r?ttl_ms=20&stale_if_error_ms=60000 --keys 16 --db-faults-ms 60"
	"--cache $r?l1=1000&ttl_ms=20&stale_if_error_ms=60000 --bound-ms 150 --keys 16 --db-faults-ms 60"
	"--cache $r?ttl_ms=30&stale_while_revalidate_ms=5000 --keys 2 --load-delay-ms 20"
	"--cache $r?l1=1000&ttl_ms=30&stale_while_revalidate_ms=5000 --bound-ms 150 --keys 2 --load-delay-ms 20"
	"--cache $r?ttl_ms=30&stale_while_revalidate_ms=5000&stale_if_error_ms=60000 --keys 4 --db-faults-ms 40 --load-delay-ms 20"
	"--cache $r?negative_ttl_ms=60000 --absences --keys 4 --stall-ms 200"
	"--cache $r?l1=1000&negative_ttl_ms=60000 --bound-ms 150 --absences --keys 4 --stall-ms 200"
	"--cache $r?negative_ttl_ms=60000 --absences --keys 4 --load-delay-ms 30 --redis-faults-ms 150"
	"--cache $r?negative_ttl_ms=60000&ttl_ms=20&stale_if_error_ms=60000 --absences --keys 8 --db-faults-ms 40"
)
if [ "$loops" -eq 1 ]; then
	configs+=(
		"--cache $r --keys 6 --duration-s 3 --redis-faults-ms 600 --redis-pause-ms 300"
		"--cache $r?l1=1000 --bound-ms 150 --keys 6 --duration-s 4 --redis-faults-ms 300 --redis-demote-ms 300 --redis-full-ms 300"
		"--cache $r --keys 6 --duration-s 3 --redis-faults-ms 300 --redis-demote-ms 300"
	)
fi
keep=$(mktemp -d /tmp/aside-soak.XXXXXX)

# loop N: every configuration, CYCLES times; one line a run in $keep/loop.N
loop() {
	local n=$1 c i status out
	set -f # the URLs' '?' is no pattern
	for c in $(seq 1 "$cycles"); do
		for i in "${!configs[@]}"; do
			out="$keep/run.$n.$c.$i"
			# shellcheck disable=SC2086 # the configuration's words
			"$aside" check --db "$ASIDE_TEST_PG_URL" --processes 3 \
				--threads 6 --duration-s 2 ${configs[$i]} \
				>"$out" 2>"$out.err"
			status=$?
			if grep -qE 'Sanitizer|runtime error' "$out.err"; then
				echo "sanitizer $i" >>"$keep/loop.$n"
			elif [ $status -eq 1 ] || { [ $status -ne 2 ] &&
				! grep -q '^findings: 0 stale reads .*, 0 divergent keys$' "$out"; }; then
				echo "found $i" >>"$keep/loop.$n"
			elif [ $status -eq 2 ]; then
				echo "not-run $i" >>"$keep/loop.$n"
				rm -f "$out" "$out.err"
			else
				echo "ok $i" >>"$keep/loop.$n"
				rm -f "$out" "$out.err"
			fi
		done
	done
}

for n in $(seq 1 "$loops"); do
	loop "$n" &
done
wait
runs=$(cat "$keep"/loop.* | wc -l)
found=$(cat "$keep"/loop.* | grep -c '^found' || true)
san=$(cat "$keep"/loop.* | grep -c '^sanitizer' || true)
notrun=$(cat "$keep"/loop.* | grep -c '^not-run' || true)
echo "soak: $runs runs of ${#configs[@]} configurations in $loops loops side by side:" \
	"$found with findings, $san with sanitizer reports, $notrun could not run"
for f in "$keep"/run.*[0-9]; do
	[ -e "$f" ] || continue
	i=${f##*.}
	echo "  $f: ${configs[$i]}"
	grep -E 'stale read|^findings' "$f" | head -3 | sed 's/^/    /'
done
if [ "$found" -eq 0 ] && [ "$san" -eq 0 ]; then
	rm -rf "$keep"
	exit 0
fi
echo "soak: reports kept in $keep"
exit 1
