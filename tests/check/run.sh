#!/bin/sh
# aside check in both modes against the real servers: aside must show no
# stale read and no divergent key; the naive cache-aside must show stale
# reads (the proof that the checker can fail).
#   run.sh ASIDE_BINARY
set -eu
aside=$1
fail() { echo "check test: $*" >&2; exit 1; }
if [ -z "${ASIDE_TEST_REDIS_URL:-}" ] || [ -z "${ASIDE_TEST_PG_URL:-}" ]; then
	[ -n "${ASIDE_TEST_REQUIRE_SERVERS:-}" ] && fail "Redis and PostgreSQL are required"
	echo "check test: skipped (no servers)"
	exit 0
fi
redis="$ASIDE_TEST_REDIS_URL/4"
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.authed"' EXIT

# run ARGS...: aside check on the test database; its report in $tmp (and
# printed), its exit status in $status.
run() {
	status=0
	"$aside" check --db "$ASIDE_TEST_PG_URL" "$@" >"$tmp" 2>/dev/null || status=$?
	cat "$tmp"
}
# clean NAME: the last run exited 0 and found nothing.
clean() {
	[ "$status" -eq 0 ] || fail "$1: exit $status"
	grep -q '^findings: 0 stale reads .*, 0 divergent keys$' "$tmp" || fail "$1: findings"
}
# saw NAME PATTERN WHAT: the last report has a line matching PATTERN.
saw() {
	grep -q "$2" "$tmp" || fail "$1: $3"
}

# aside, with stalls of whole processes; PostgreSQL's notices go to stderr.
run --cache "$redis" --processes 3 --threads 6 --keys 6 --duration-s 2 --stall-ms 200
clean "aside"
saw "aside" '^ops: [1-9][0-9]* reads, [1-9][0-9]* writes, 0 errors' "ops"

# aside with an L1 in each process: stale only within the stated bound
# (l1_bound_ms, 100 by default, plus up to two ticks of the coarse clock:
# 8 ms at 250 Hz, 20 ms at 100 Hz; 150 leaves room for both).
run --cache "$redis?l1=1000" --bound-ms 150 --processes 3 --threads 6 --keys 6 \
	--duration-s 2 --stall-ms 200
clean "aside with L1"

# Many readers on few keys, so that readers join loads that writes in other
# processes overtake (the races of docs/consistency.md's table): with an L1
# and long stalls, then without an L1 and with short delays.
run --cache "$redis?l1=1000" --bound-ms 150 --processes 3 --threads 6 --keys 2 \
	--duration-s 2 --stall-ms 300 --load-delay-ms 50
clean "aside, L1, 2 keys"
run --cache "$redis" --processes 2 --threads 12 --keys 1 --duration-s 2 \
	--load-delay-ms 5 --inval-delay-ms 5
clean "aside, 1 key"

# Redis faults: every 150 ms or so, every data connection or every
# subscription dropped (CLIENT KILL), or Redis paused (CLIENT PAUSE); with
# and without an L1.  Closed connections are replaced, owed invalidations
# delivered first: nothing stale, nothing divergent.
for cache in "$redis" "$redis?l1=1000"; do
	bound=0
	case $cache in *l1=*) bound=150 ;; esac
	run --cache "$cache" --bound-ms "$bound" --processes 3 --threads 6 --keys 6 \
		--duration-s 2 --redis-faults-ms 150
	clean "aside, Redis faults, $cache"
	saw "aside, Redis faults, $cache" '^faults: [1-9]' "none made"
done
# The same on few keys with slow loads, where readers join loads whose
# fills the faults make fail (the configuration that found those races).
run --cache "$redis" --processes 3 --threads 6 --keys 4 --duration-s 2 \
	--load-delay-ms 30 --inval-delay-ms 0 --redis-faults-ms 300
clean "aside, Redis faults, 4 keys"

# Redis paused past the command timeout (300 ms against 250): the commands
# held up fail, the breakers open, and writes meanwhile are owed; each
# process's prober has a ping waiting when the pause ends, and delivers
# before reading again (with the backoff doubling per failed command, and
# probes run by requests, this found thousands of stale reads).
run --cache "$redis" --processes 3 --threads 6 --keys 6 --duration-s 3 \
	--redis-faults-ms 600 --redis-pause-ms 300
clean "aside, long Redis pauses"
saw "aside, long Redis pauses" '^faults: .*, [1-9][0-9]* pauses' "none made"

# Redis demoted to a replica now and then (it serves reads and refuses
# writes): a write's refused invalidation must keep the old row from being
# served, and the other processes hear of it on their subscription.  And
# Redis full (it refuses tombstones and fills, and allows deletes).
run --cache "$redis?l1=1000" --bound-ms 150 --processes 3 --threads 6 --keys 6 \
	--duration-s 4 --redis-faults-ms 300 --redis-demote-ms 300 --redis-full-ms 300
clean "aside, Redis demoted or full"
saw "aside, Redis demoted or full" '^faults: .*, [1-9][0-9]* demotions, [1-9][0-9]* times full' \
	"none made"
# The same without an L1: a process hears the refusals all the same (it
# subscribes to them alone), rather than read the old row until one of its
# own writes is refused (3 runs in 5 found stale reads so).
run --cache "$redis" --processes 3 --threads 6 --keys 6 --duration-s 3 \
	--redis-faults-ms 300 --redis-demote-ms 300
clean "aside, no L1, Redis demoted"
saw "aside, no L1, Redis demoted" '^faults: .*, [1-9][0-9]* demotions' "none made"

# The database failing as well: every 60 ms or so the processes' connections
# to PostgreSQL are terminated (errors are expected then), with and without
# Redis faults and an L1.  A write whose owed invalidations cannot be read
# from the outbox must not stop the next ones from reaching Redis.
for cache in "$redis" "$redis?l1=1000"; do
	bound=0
	case $cache in *l1=*) bound=150 ;; esac
	for faults in 0 150; do
		what="aside, database faults, Redis faults $faults, $cache"
		run --cache "$cache" --bound-ms "$bound" --processes 3 --threads 6 \
			--keys 4 --duration-s 2 --db-faults-ms 60 --redis-faults-ms "$faults"
		clean "$what"
		saw "$what" '^database faults: [1-9][0-9]* rounds terminated [1-9]' "none made"
	done
done

# Expired copies while the database fails (stale_if_error_ms), from Redis
# alone and with an L1: a TTL of 20 ms and 16 keys, so that entries expire
# between writes and loads fail on them; a copy is never older than a write
# that completed before the read began.
for cache in "$redis?ttl_ms=20&stale_if_error_ms=60000" \
	"$redis?l1=1000&ttl_ms=20&stale_if_error_ms=60000"; do
	bound=0
	case $cache in *l1=*) bound=150 ;; esac
	what="aside, database faults, expired copies, $cache"
	run --cache "$cache" --bound-ms "$bound" --processes 3 --threads 6 \
		--keys 16 --duration-s 2 --db-faults-ms 60
	clean "$what"
	saw "$what" ' [1-9][0-9]* expired copies served' "no copy served"
done

# Expired copies served while another reader loads (stale_while_revalidate_ms),
# from Redis alone and with an L1: a TTL of 30 ms on 2 keys, so that readers
# of every process meet reloads; a copy is never older than a write that
# completed before the read began.
for cache in "$redis?ttl_ms=30&stale_while_revalidate_ms=5000" \
	"$redis?l1=1000&ttl_ms=30&stale_while_revalidate_ms=5000"; do
	bound=0
	case $cache in *l1=*) bound=150 ;; esac
	what="aside, expired copies beside loads, $cache"
	run --cache "$cache" --bound-ms "$bound" --processes 3 --threads 6 \
		--keys 2 --duration-s 2 --load-delay-ms 20
	clean "$what"
	saw "$what" ' [1-9][0-9]* beside another reader.s load' "no copy served"
done

# Cached absences (negative_ttl_ms), with rows deleted and created in turn
# (--absences: a row of an odd version reads as none): from Redis alone and
# with an L1, with stalls, then with Redis faults; a read never finds no row
# once a create completed before it began, and no absence outlives a create.
for cache in "$redis?negative_ttl_ms=60000" "$redis?l1=1000&negative_ttl_ms=60000"; do
	bound=0
	case $cache in *l1=*) bound=150 ;; esac
	what="aside, cached absences, $cache"
	run --cache "$cache" --bound-ms "$bound" --absences --processes 3 --threads 6 \
		--keys 4 --duration-s 2 --stall-ms 200
	clean "$what"
	saw "$what" '^absences: [1-9][0-9]* reads found no row, [1-9][0-9]* of them' \
		"no cached absence read"
done
what="aside, cached absences, Redis faults"
run --cache "$redis?negative_ttl_ms=60000" --absences --processes 3 --threads 6 \
	--keys 4 --duration-s 2 --load-delay-ms 30 --redis-faults-ms 150
clean "$what"
saw "$what" '^absences: [1-9][0-9]* reads found no row, [1-9][0-9]* of them' \
	"no cached absence read"

# Redis killed and restarted (empty) twice under the load, when the servers
# are this test's own: outages, reconnections and the outbox.
if [ -n "${ASIDE_TEST_SERVICES_DIR:-}" ]; then
	here=$(cd "$(dirname "$0")" && pwd)
	services=$here/../../scripts/services
	(for _ in 1 2; do
		sleep 0.5
		"$services" redis-kill "$ASIDE_TEST_SERVICES_DIR"
		sleep 0.2
		"$services" redis-start "$ASIDE_TEST_SERVICES_DIR"
	done) >/dev/null 2>&1 &
	restarts=$!
	run --cache "$redis" --processes 3 --threads 6 --keys 6 --duration-s 5
	wait "$restarts" || true
	redis-cli -u "$ASIDE_TEST_REDIS_URL" ping >/dev/null 2>&1 ||
		"$services" redis-start "$ASIDE_TEST_SERVICES_DIR"
	clean "aside, Redis restarted"
	saw "aside, Redis restarted" '^cache: [1-9]' "no outage seen"

	# Redis hung (SIGSTOP: connections are accepted, nothing is answered)
	# for 1.2 s, twice: every process's breaker opens, its writes are owed,
	# and its prober must have a ping waiting when Redis resumes, deliver,
	# and read Redis again.  (With processes stopped as well, a process
	# that had not yet seen the hang can have a read queued in Redis that
	# runs before the owed invalidations: docs/consistency.md, Limits.)
	pid=$(cat "$ASIDE_TEST_SERVICES_DIR/redis.pid")
	(for _ in 1 2; do
		sleep 0.7
		kill -STOP "$pid"
		sleep 1.2
		kill -CONT "$pid"
	done) >/dev/null 2>&1 &
	hangs=$!
	run --cache "$redis" --processes 3 --threads 6 --keys 6 --duration-s 5
	wait "$hangs" || true
	kill -CONT "$pid" 2>/dev/null || true
	clean "aside, Redis hung"
	saw "aside, Redis hung" '^cache: [1-9]' "no outage seen"

	# A Redis that asks for a password (percent-encoded in the URL): the
	# faults and the naive mode authenticate as the library does.
	redis-cli -u "$ASIDE_TEST_REDIS_URL" CONFIG SET requirepass 'pa%ss' >/dev/null
	authed=$(echo "$redis" | sed 's|^redis://|redis://:pa%25ss@|')
	run --cache "$authed" --processes 2 --threads 4 --keys 4 --duration-s 1 \
		--redis-faults-ms 150
	astatus=$status
	cp "$tmp" "$tmp.authed"
	run --naive --cache "$authed" --processes 2 --threads 4 --keys 4 --duration-s 1 \
		--load-delay-ms 50
	redis-cli -u "$ASIDE_TEST_REDIS_URL" -a 'pa%ss' --no-auth-warning \
		CONFIG SET requirepass '' >/dev/null
	[ "$astatus" -eq 0 ] || fail "aside, Redis password: exit $astatus"
	grep -q '^faults: [1-9].*, 0 not made$' "$tmp.authed" ||
		fail "aside, Redis password: faults not made"
	[ "$status" -eq 1 ] || fail "naive, Redis password: exit $status, expected 1"
	rm -f "$tmp.authed"

	# PostgreSQL restarted twice under the load (with an L1, and database
	# faults now and then, which also lets the check count errors).
	(for _ in 1 2; do
		sleep 1
		"$services" pg-restart "$ASIDE_TEST_SERVICES_DIR"
	done) >/dev/null 2>&1 &
	restarts=$!
	run --cache "$redis?l1=1000" --bound-ms 150 --processes 3 --threads 6 --keys 6 \
		--duration-s 5 --db-faults-ms 2000
	wait "$restarts" || true
	clean "aside, PostgreSQL restarted"
	saw "aside, PostgreSQL restarted" '^ops: .*, [1-9][0-9]* errors' "no outage seen"
fi

# The seed's cache-aside under the same races.
run --naive --cache "$redis" --processes 3 --threads 6 --keys 4 --duration-s 2 \
	--load-delay-ms 50
[ "$status" -eq 1 ] || fail "naive: exit $status, expected 1 (findings)"
saw "naive" '^findings: [1-9][0-9]* stale reads' "no stale read found"
echo "check test: ok"
