#!/bin/sh
# aside demo, end to end: the seed's scenario on the embedded default, and
# a deleted user read twice (one query: the absence cached), a hot user's
# expiry (one load, the expired copy for the others), and the
# database failing (an expired copy, an error, the breaker, recovery).
#   tests/demo/run.sh ASIDE_BINARY
set -eu
aside=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$aside" demo >"$out"
cat "$out"
want() {
	if ! grep -q -- "$1" "$out"; then
		echo "demo: no line with: $1" >&2
		exit 1
	fi
}
want 'get 1 -> ASIDE_OK, Alice; database queries: 1$'
want 'database queries: 0; hit rate 50.00%$'
want '^  10 concurrent requests resulted in 1 DB query; 10 got Bob$'
want 'email alice@example.org; database queries: 1$'
want 'get 2 -> ASIDE_NOT_FOUND; again -> ASIDE_NOT_FOUND; database queries: 1$'
want '^  1 read answered by the cached absence'
want 'past; 10 concurrent requests resulted in 1 DB query; 10 got Erin$'
want 'get 4 -> ASIDE_OK, Carol (the expired copy'
want 'get 5 -> ASIDE_EDB: the database is down$'
want 'get 5 -> ASIDE_EUNAVAILABLE: the source failed 3 loads in a row'
want 'get 5 -> ASIDE_OK, Dave; database queries: 1$'
echo "demo: every step as expected"
