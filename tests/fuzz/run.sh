#!/bin/sh
# Builds the fuzz target with clang (libFuzzer, ASan, UBSan) and runs it.
#   tests/fuzz/run.sh [SECONDS]
set -eu
secs=${1:-60}
top=$(cd "$(dirname "$0")/../.." && pwd)
out=$top/build-fuzz
mkdir -p "$out/corpus"
# every source of libaside (a list would go stale as files are added), and
# the codec
# (redis.c is #included by the target, which fuzzes its entry decoder)
srcs="$(echo "$top"/src/core/*.c "$top"/src/tiers/mem.c) $top/service/user_codec.c"
# seeds: a good user, a partial one, times, URLs
printf '\000{"id":1,"name":"Ann","email":"ann@example.com","created_at":"2025-01-02T03:04:05.123456Z"}' >"$out/corpus/user"
printf '\000{"name":"A","email":"a@b.c"}' >"$out/corpus/partial"
printf '\000{"id":7,"name":"B\\u00e9","email":"b@c.d","created_at":"1970-01-01T00:00:00Z","version":1}' >"$out/corpus/versioned"
printf '\0012025-11-24T17:30:00+01:30' >"$out/corpus/time"
printf '\002mem://?capacity=10&ttl_ms=5' >"$out/corpus/url"
# a format-2 entry: "ASD2", expiry 0, load time 0, version 7, a value
printf '\003ASD2\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\007\000{"id":1}' >"$out/corpus/entry"
# a format-1 entry whose expiry is far in the past (negative): once made
# a kept copy's age check overflow
printf '\003ASD1\000\000\000\377\000\000\001\200\007\000{\000' >"$out/corpus/old-entry"
# shellcheck disable=SC2086
# shellcheck disable=SC2046,SC2086 # flags and sources, one word each
clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -I"$top/include" \
	"$top/tests/fuzz/fuzz_inputs.c" $srcs \
	$(pkg-config --cflags --libs jansson hiredis) -lpthread -o "$out/fuzz_inputs"
"$out/fuzz_inputs" -max_total_time="$secs" -max_len=4096 "$out/corpus"
