/*
 * test_leases.c -- leases on the real Redis: caches opened separately stand
 * for separate processes (and, in the last test, real processes do).  A
 * cold read takes the lease and fills; a second cache waits for the holder
 * instead of loading; a write in another cache voids a lease so the old
 * row is never stored, and the holder reads again; a reader that joined a
 * load after another process's write, before hearing of it, gets the new
 * row when the message voids the load; a dead holder's lease
 * lapses; a lease held too long is waited out and the read loads anyway,
 * readers that joined during that wait get its load rather than a timeout,
 * and a reader that joined that load after a write reads again; a fill
 * older than a write's tombstone is refused (the version fence); a
 * tombstone's stale copy is not served past the expiry of the entry it was;
 * scripts
 * survive SCRIPT FLUSH; and P processes x T threads reading one cold key make
 * one load.
 */
#include "../support/servers.h"

#include <aside/aside.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka needs the headers above */
#include <cmocka.h>

#define REDIS_DB 3 /* this program's Redis database */

extern char **environ;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A source whose load can be held at a gate, and says what it returns. */
typedef struct source {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool gated, inside; /* hold loads at the gate; one is there */
	const char *value;  /* what a load returns; NULL: not found */
	_Atomic int loads;
	_Atomic int fail; /* a status loads fail with; 0: none */
} source;

static void source_init(source *s, const char *value)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->value = value;
}

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)err;
	source *s = arg;
	atomic_fetch_add(&s->loads, 1);
	pthread_mutex_lock(&s->lock);
	const char *value = s->value; /* read before the gate: the old row */
	s->inside = true;
	pthread_cond_broadcast(&s->cond);
	while (s->gated)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	if (atomic_load(&s->fail))
		return atomic_load(&s->fail);
	if (!value)
		return ASIDE_NOT_FOUND;
	return aside_value_new(key, klen, value, strlen(value), out);
}

static void wait_inside(source *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->inside)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void open_gate(source *s)
{
	pthread_mutex_lock(&s->lock);
	s->gated = false;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static aside_cache *open_cache(const char *query)
{
	char url[512];
	aside_error err;
	aside_cache *c;
	if (!test_redis_url(url, REDIS_DB, query))
		return NULL;
	if (aside_cache_open(url, &c, &err) != ASIDE_OK)
		fail_msg("open %s: %s", url, err.message);
	return c;
}

static int setup(void **state)
{
	char url[512];
	if (!test_redis_url(url, REDIS_DB, NULL)) {
		if (getenv("ASIDE_TEST_REQUIRE_SERVERS"))
			fail_msg("Redis is required");
		*state = NULL;
		return 0;
	}
	assert_true(test_redis_flush(REDIS_DB));
	*state = (void *)1;
	return 0;
}

#define NEED_SERVERS(state)                                                    \
	do {                                                                   \
		if (!*(state))                                                 \
			skip();                                                \
	} while (0)

static aside_metrics metrics(aside_cache *c)
{
	aside_metrics m;
	aside_cache_metrics(c, &m);
	return m;
}

/* Redis's answer to a one-key command, as text. */
static const char *redis1(const char *cmd, const char *key, char *out)
{
	const char *argv[] = {cmd, key};
	assert_true(test_redis_cmd(REDIS_DB, out, 256, 2, argv));
	return out;
}

/* Another process's lease on key, held by token for ms: taken, not filled. */
static void hold_lease(const char *key, const char *token, const char *ms)
{
	char lease[64];
	snprintf(lease, sizeof(lease), "{%s}|aside-lease", key);
	const char *argv[] = {"SET", lease, token, "PX", ms};
	assert_true(test_redis_cmd(REDIS_DB, NULL, 0, 5, argv));
}

/* Reads key through c with ld; the value's bytes as text into out. */
static int read_with(aside_cache *c, const aside_loader *ld, const char *key,
		     char *out)
{
	aside_value *v;
	int rc = aside_cache_get(c, key, strlen(key), ld, &v, NULL);
	if (rc == ASIDE_OK) {
		size_t len;
		const char *d = aside_value_data(v, &len);
		snprintf(out, 256, "%.*s", (int)len, d);
		aside_value_unref(v);
	}
	return rc;
}

static int read_key(aside_cache *c, source *s, const char *key, char *out)
{
	aside_loader ld = {load, NULL, s};
	return read_with(c, &ld, key, out);
}

static void cold_read_takes_the_lease_and_fills(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache(NULL);
	source s;
	source_init(&s, "v1");
	char got[256], r[256];
	assert_int_equal(read_key(c, &s, "lk:1", got), ASIDE_OK);
	assert_string_equal(got, "v1");
	assert_int_equal(s.loads, 1);
	assert_string_equal(redis1("EXISTS", "lk:1", r), "1");
	/* The fill ended the lease. */
	assert_string_equal(redis1("EXISTS", "{lk:1}|aside-lease", r), "0");
	/* A second cache (another process) is served by Redis. */
	aside_cache *c2 = open_cache(NULL);
	assert_int_equal(read_key(c2, &s, "lk:1", got), ASIDE_OK);
	assert_string_equal(got, "v1");
	assert_int_equal(s.loads, 1);
	aside_cache_close(c2);
	aside_cache_close(c);
}

typedef struct reader {
	aside_cache *c;
	source *s;
	const char *key;
	int rc;
	char got[256];
} reader;

static void *read_thread(void *arg)
{
	reader *r = arg;
	r->rc = read_key(r->c, r->s, r->key, r->got);
	return NULL;
}

static void second_cache_waits_for_the_holder(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache(NULL), *b = open_cache(NULL);
	source sa, sb;
	source_init(&sa, "from-a");
	source_init(&sb, "from-b");
	sa.gated = true;
	reader ra = {a, &sa, "lk:2", 0, ""}, rb = {b, &sb, "lk:2", 0, ""};
	pthread_t ta, tb;
	pthread_create(&ta, NULL, read_thread, &ra);
	wait_inside(&sa); /* a holds the lease and is loading */
	pthread_create(&tb, NULL, read_thread, &rb);
	/* b must be waiting, not loading: give it time to go wrong. */
	for (int i = 0; i < 100 && metrics(b).lease_waits == 0; i++)
		pause_ms(5);
	pause_ms(50);
	assert_int_equal(sb.loads, 0);
	open_gate(&sa);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(ra.rc, ASIDE_OK);
	assert_int_equal(rb.rc, ASIDE_OK);
	assert_string_equal(rb.got, "from-a");
	assert_int_equal(sa.loads + sb.loads, 1);
	aside_metrics mb = metrics(b);
	assert_int_equal(mb.lease_waits, 1);
	assert_int_equal(mb.tier_hits[0], 1);
	assert_int_equal(mb.loads, 0);
	aside_cache_close(a);
	aside_cache_close(b);
}

static void write_in_another_cache_voids_the_lease(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache(NULL), *b = open_cache(NULL);
	source s;
	source_init(&s, "old-row");
	s.gated = true;
	reader ra = {a, &s, "lk:3", 0, ""};
	pthread_t ta;
	pthread_create(&ta, NULL, read_thread, &ra);
	wait_inside(&s); /* a read the old row and is about to fill */
	/* b's writer commits the new row, then invalidates. */
	pthread_mutex_lock(&s.lock);
	s.value = "new-row";
	pthread_mutex_unlock(&s.lock);
	assert_int_equal(aside_cache_invalidate(b, "lk:3", 4, NULL), ASIDE_OK);
	open_gate(&s);
	pthread_join(ta, NULL);
	/* a's fill was refused: what it read may be older than the write,
	 * so it read again, and its reader got the new row, which is now
	 * what Redis holds. */
	assert_int_equal(ra.rc, ASIDE_OK);
	assert_string_equal(ra.got, "new-row");
	assert_int_equal(s.loads, 2);
	assert_int_equal(metrics(a).fills_refused, 1);
	char got[256];
	assert_int_equal(read_key(b, &s, "lk:3", got), ASIDE_OK);
	assert_string_equal(got, "new-row");
	assert_int_equal(s.loads, 2); /* from Redis */
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * A cache with an L1 hears of another process's write through the
 * subscription, some time after the write completed.  A reader that began
 * in between, and joined a load begun before the write, must not be handed
 * the old row when the invalidation then arrives and voids the load: it
 * began after the write, so the load reads again for it.
 */
static void late_joiner_of_a_voided_load_gets_the_new_row(void **state)
{
	NEED_SERVERS(state);
	aside_cache *b = open_cache("l1=1000");
	char got[256], out[256];
	/* A marker in b's L1 only: once its invalidation, published after
	 * the key's, has been applied, so has the key's. */
	source sm;
	source_init(&sm, "marker");
	assert_int_equal(read_key(b, &sm, "lk:m", got), ASIDE_OK);
	redis1("DEL", "lk:m", out);
	assert_int_equal(metrics(b).entries, 1);

	source s;
	source_init(&s, "old-row");
	s.gated = true;
	reader r1 = {b, &s, "lk:j", 0, ""}, r2 = {b, &s, "lk:j", 0, ""};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, read_thread, &r1);
	wait_inside(&s); /* r1 leads: it holds the lease, read the old row */

	/* Another process writes: the new row, then the key and its lease
	 * go from Redis.  Its message is not out yet. */
	pthread_mutex_lock(&s.lock);
	s.value = "new-row";
	pthread_mutex_unlock(&s.lock);
	redis1("DEL", "lk:j", out);
	redis1("DEL", "{lk:j}|aside-lease", out);

	/* r2 begins after the write and joins r1's load. */
	pthread_create(&t2, NULL, read_thread, &r2);
	while (metrics(b).waiting < 1)
		pause_ms(1);

	/* The write's message arrives, then the marker's. */
	const char *pub[] = {"PUBLISH", "aside:invalidate:3", "elsewhere lk:j"};
	assert_true(test_redis_cmd(REDIS_DB, out, sizeof(out), 3, pub));
	pub[2] = "elsewhere lk:m";
	assert_true(test_redis_cmd(REDIS_DB, out, sizeof(out), 3, pub));
	while (metrics(b).entries != 0)
		pause_ms(1);

	open_gate(&s);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(r2.rc, ASIDE_OK);
	assert_string_equal(r2.got, "new-row");
	assert_int_equal(r1.rc, ASIDE_OK);
	assert_int_equal(s.loads, 2);
	/* Voided, the load stored nothing: the next read loads afresh. */
	assert_int_equal(read_key(b, &s, "lk:j", got), ASIDE_OK);
	assert_string_equal(got, "new-row");
	aside_cache_close(b);
}

static void late_invalidation_revalidates_a_load(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache(NULL);
	source s;
	source_init(&s, "old-row");
	s.gated = true;
	reader r1 = {c, &s, "lk:late", 0, ""}, r2 = {c, &s, "lk:late", 0, ""};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, read_thread, &r1);
	wait_inside(&s); /* r1 leads: it holds the lease, read the old row */

	/* A write completes whose invalidation did not reach Redis (it is
	 * owed): the lease stands, and no message comes. */
	pthread_mutex_lock(&s.lock);
	s.value = "new-row";
	pthread_mutex_unlock(&s.lock);

	/* r2 begins after the write and joins r1's load; then the owed
	 * invalidation is delivered, late, in this process. */
	pthread_create(&t2, NULL, read_thread, &r2);
	while (metrics(c).waiting < 1)
		pause_ms(1);
	assert_int_equal(aside_cache_invalidate_late(c, "lk:late", 7, 0, NULL),
			 ASIDE_OK);

	/* The load is voided, but not by a write completing now: r2 must
	 * get the new row (r1 began before the write: either will do). */
	open_gate(&s);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(r1.rc, ASIDE_OK);
	assert_int_equal(r2.rc, ASIDE_OK);
	assert_string_equal(r2.got, "new-row");
	assert_int_equal(s.loads, 2);
	aside_cache_close(c);
}

static void dead_holders_lease_lapses(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache(NULL);
	/* A holder that took the lease and died: it lapses in 300 ms. */
	hold_lease("lk:4", "dead", "300");
	source s;
	source_init(&s, "v4");
	char got[256], r[256];
	double t0 = now_s();
	assert_int_equal(read_key(c, &s, "lk:4", got), ASIDE_OK);
	double dt = now_s() - t0;
	assert_string_equal(got, "v4");
	if (dt < 0.2 || dt > 2.0)
		fail_msg("waited %.3f s for a lease that lapses in 0.3 s", dt);
	assert_int_equal(s.loads, 1);
	assert_int_equal(metrics(c).lease_waits, 1);
	/* It took the lapsed lease and filled. */
	assert_string_equal(redis1("EXISTS", "lk:4", r), "1");
	aside_cache_close(c);
}

static void lease_held_too_long_is_waited_out(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache("wait_ms=200");
	hold_lease("lk:5", "slow", "10000");
	source s;
	source_init(&s, "v5");
	char got[256], r[256];
	double t0 = now_s();
	assert_int_equal(read_key(c, &s, "lk:5", got), ASIDE_OK);
	double dt = now_s() - t0;
	if (dt < 0.1 || dt > 2.0)
		fail_msg("waited %.3f s with wait_ms=200", dt);
	assert_string_equal(got, "v5");
	aside_metrics m = metrics(c);
	assert_int_equal(m.lease_timeouts, 1);
	assert_int_equal(m.loads, 1);
	/* Without the lease it stores nothing shared; the holder's lease
	 * is untouched. */
	assert_string_equal(redis1("EXISTS", "lk:5", r), "0");
	assert_string_equal(redis1("GET", "{lk:5}|aside-lease", r), "slow");
	aside_cache_close(c);
}

/*
 * The load a lease timeout leaves (no lease, so no fill to validate it) is
 * still checked for its joiners: one that began after a write in another
 * process completed during the load gets a read made after it joined.
 */
static void joiner_of_a_lease_timeout_load_gets_the_new_row(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache("wait_ms=200"), *b = open_cache(NULL);
	hold_lease("lk:6", "slow", "10000");
	source s;
	source_init(&s, "old-row");
	s.gated = true;
	reader r1 = {c, &s, "lk:6", 0, ""}, r2 = {c, &s, "lk:6", 0, ""};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, read_thread, &r1);
	wait_inside(&s); /* r1 waited the lease out, and read the old row */
	assert_int_equal(metrics(c).lease_timeouts, 1);

	/* Another process writes, and its write completes. */
	pthread_mutex_lock(&s.lock);
	s.value = "new-row";
	pthread_mutex_unlock(&s.lock);
	assert_int_equal(aside_cache_invalidate(b, "lk:6", 4, NULL), ASIDE_OK);

	/* r2 begins after the write and joins r1's load. */
	pthread_create(&t2, NULL, read_thread, &r2);
	while (metrics(c).waiting < 1)
		pause_ms(1);
	open_gate(&s);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(r1.rc, ASIDE_OK);
	assert_int_equal(r2.rc, ASIDE_OK);
	assert_string_equal(r2.got, "new-row");
	/* The second read went straight to the source: one lease wait. */
	assert_int_equal(s.loads, 2);
	assert_int_equal(metrics(c).lease_timeouts, 1);
	aside_cache_close(c);
	aside_cache_close(b);
}

/*
 * Readers that join a load while its leader waits out another process's
 * lease wait for the load that follows, not only for wait_ms from when they
 * joined: a lease held by a process that died, or hung, does not turn every
 * reader of the key but one into a timeout.
 */
static void joiners_of_a_lease_wait_get_the_load(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache("wait_ms=400");
	hold_lease("lk:9", "hung", "10000");
	source s;
	source_init(&s, "v9");
	s.gated = true;
	reader r[3];
	pthread_t t[3];
	r[0] = (reader){c, &s, "lk:9", 0, ""};
	pthread_create(&t[0], NULL, read_thread, &r[0]);
	while (metrics(c).lease_waits < 1)
		pause_ms(1);
	/* The leader waits on the lease; two more readers join it. */
	for (int i = 1; i < 3; i++) {
		r[i] = (reader){c, &s, "lk:9", 0, ""};
		pthread_create(&t[i], NULL, read_thread, &r[i]);
	}
	while (metrics(c).waiting < 2)
		pause_ms(1);
	double joined = now_s();
	wait_inside(&s); /* the lease waited out, the leader loads */
	double begun = now_s();
	/* The load takes 200 ms: past the joiners' first 400 ms. */
	pause_ms(200);
	if (now_s() - joined < 0.45)
		fail_msg("the load began %.3f s after the joiners joined, and "
			 "ends before their first 400 ms are up",
			 begun - joined);
	open_gate(&s);
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(r[i].rc, ASIDE_OK);
		assert_string_equal(r[i].got, "v9");
	}
	aside_metrics m = metrics(c);
	assert_int_equal(m.loads, 1);
	assert_int_equal(m.shared_loads, 2);
	assert_int_equal(m.wait_timeouts, 0);
	assert_int_equal(m.lease_timeouts, 1);
	aside_cache_close(c);
}

static void nothing_to_store_gives_the_lease_up(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache(NULL);
	source s;
	source_init(&s, NULL); /* the row does not exist */
	char got[256], r[256];
	assert_int_equal(read_key(c, &s, "lk:6", got), ASIDE_NOT_FOUND);
	assert_string_equal(redis1("EXISTS", "{lk:6}|aside-lease", r), "0");
	/* So another cache asks at once, without waiting for a lapse. */
	aside_cache *c2 = open_cache(NULL);
	double t0 = now_s();
	assert_int_equal(read_key(c2, &s, "lk:6", got), ASIDE_NOT_FOUND);
	assert_true(now_s() - t0 < 0.5);
	assert_int_equal(metrics(c2).lease_waits, 0);
	aside_cache_close(c2);
	aside_cache_close(c);
}

/* A source whose successive loads return the versions in `seq`. */
struct versioned {
	const int64_t *seq;
	_Atomic int calls;
};

static int versioned_load(void *arg, const char *key, size_t klen,
			  aside_value **out, aside_error *err)
{
	(void)err;
	struct versioned *src = arg;
	int64_t version = src->seq[atomic_fetch_add(&src->calls, 1)];
	char body[32];
	int n = snprintf(body, sizeof(body), "v%lld", (long long)version);
	int rc = aside_value_new(key, klen, body, (size_t)n, out);
	if (rc == ASIDE_OK)
		aside_value_set_version(*out, version);
	return rc;
}

static int read_versioned(aside_cache *c, struct versioned *src,
			  const char *key, char *got)
{
	aside_loader ld = {versioned_load, NULL, src};
	return read_with(c, &ld, key, got);
}

static void fill_older_than_a_tombstone_is_refused(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache(NULL), *b = open_cache(NULL);
	/* b's write made the row version 6. */
	assert_int_equal(aside_cache_invalidate_version(b, "lk:9", 4, 6, NULL),
			 ASIDE_OK);
	/* a's first load reads a replica that has not caught up (version
	 * 5), with a lease granted after the write: the lease alone would
	 * let it store. */
	static const int64_t seq[] = {5, 6};
	struct versioned src = {seq, 0};
	char got[256];
	assert_int_equal(read_versioned(a, &src, "lk:9", got), ASIDE_OK);
	assert_string_equal(got, "v6");
	assert_int_equal(src.calls, 2);
	assert_int_equal(metrics(a).fills_refused, 1);
	/* What Redis holds now is version 6, served to another cache. */
	aside_cache *c = open_cache(NULL);
	static const int64_t none[] = {99};
	struct versioned never = {none, 0};
	assert_int_equal(read_versioned(c, &never, "lk:9", got), ASIDE_OK);
	assert_string_equal(got, "v6");
	assert_int_equal(never.calls, 0);
	aside_cache_close(c);
	aside_cache_close(a);
	aside_cache_close(b);
}

static void newer_tombstone_is_kept(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache(NULL);
	/* Two writes' invalidations arrive out of order. */
	assert_int_equal(aside_cache_invalidate_version(a, "lk:10", 5, 8, NULL),
			 ASIDE_OK);
	assert_int_equal(aside_cache_invalidate_version(a, "lk:10", 5, 7, NULL),
			 ASIDE_OK);
	aside_value *v;
	assert_int_equal(aside_cache_peek(a, "lk:10", 5, &v),
			 ASIDE_NOT_FOUND); /* a tombstone is a miss */
	static const int64_t seq[] = {7, 8};
	struct versioned src = {seq, 0};
	char got[256];
	assert_int_equal(read_versioned(a, &src, "lk:10", got), ASIDE_OK);
	assert_string_equal(got, "v8");
	assert_int_equal(metrics(a).fills_refused, 1);
	aside_cache_close(a);
}

static void stale_copy_instead_of_waiting(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("stale_ms=5000"),
		    *b = open_cache("stale_ms=5000"),
		    *c = open_cache("stale_ms=5000");
	source old;
	source_init(&old, "old-row");
	char got[256];
	assert_int_equal(read_key(a, &old, "lk:12", got), ASIDE_OK);
	/* b's write: the tombstone keeps the old entry as a stale copy. */
	assert_int_equal(aside_cache_invalidate(b, "lk:12", 5, NULL), ASIDE_OK);
	/* c loads the new row and holds the lease meanwhile. */
	source fresh;
	source_init(&fresh, "new-row");
	fresh.gated = true;
	reader rc = {c, &fresh, "lk:12", 0, ""};
	pthread_t t;
	pthread_create(&t, NULL, read_thread, &rc);
	wait_inside(&fresh);
	/* a takes the stale copy at once rather than wait for c. */
	source unused;
	source_init(&unused, "never");
	double t0 = now_s();
	assert_int_equal(read_key(a, &unused, "lk:12", got), ASIDE_OK);
	assert_true(now_s() - t0 < 0.5);
	assert_string_equal(got, "old-row");
	assert_int_equal(unused.loads, 0);
	assert_int_equal(metrics(a).stale_served, 1);
	open_gate(&fresh);
	pthread_join(t, NULL);
	assert_string_equal(rc.got, "new-row");
	/* The stale copy was not stored: a's next read is the new row. */
	assert_int_equal(read_key(a, &unused, "lk:12", got), ASIDE_OK);
	assert_string_equal(got, "new-row");
	assert_int_equal(unused.loads, 0);
	aside_cache_close(a);
	aside_cache_close(b);
	aside_cache_close(c);
}

/*
 * Two caches (two processes) opened with query, namespace ns at a TTL of
 * 100 ms in both; key read through *a from a source returning "row-1",
 * then left to expire.
 */
static void read_then_expire(const char *query, const char *ns, const char *key,
			     aside_cache **a, aside_cache **b, source *s)
{
	*a = open_cache(query);
	*b = open_cache(query);
	assert_int_equal(aside_cache_set_ttl(*a, ns, 100, 0), ASIDE_OK);
	assert_int_equal(aside_cache_set_ttl(*b, ns, 100, 0), ASIDE_OK);
	source_init(s, "row-1");
	char got[256];
	assert_int_equal(read_key(*a, s, key, got), ASIDE_OK);
	pause_ms(250); /* past the TTL, in the L1 and in Redis */
}

/* Another process reloading key, holding its lease at the source's gate. */
typedef struct holder {
	source src;
	reader rd;
	pthread_t t;
} holder;

static void holder_start(holder *h, aside_cache *c, const char *key,
			 const char *row)
{
	source_init(&h->src, row);
	h->src.gated = true;
	h->rd = (reader){c, &h->src, key, 0, ""};
	pthread_create(&h->t, NULL, read_thread, &h->rd);
	wait_inside(&h->src);
}

/*
 * a reads key while h holds its lease: it must wait for h's load (no stale
 * copy served, no load of its own) and get h's row.  Lets h finish.
 */
static void reader_waits_for(aside_cache *a, holder *h, const char *key)
{
	source unused;
	source_init(&unused, "never");
	uint64_t served = metrics(a).stale_served;
	uint64_t waits = metrics(a).lease_waits;
	reader ra = {a, &unused, key, 0, ""};
	pthread_t ta;
	pthread_create(&ta, NULL, read_thread, &ra);
	for (int i = 0; i < 100 && metrics(a).lease_waits == waits; i++)
		pause_ms(5);
	pause_ms(50);
	assert_int_equal(metrics(a).lease_waits, waits + 1);
	assert_int_equal(metrics(a).stale_served, served);
	open_gate(&h->src);
	pthread_join(h->t, NULL);
	pthread_join(ta, NULL);
	assert_int_equal(h->rd.rc, ASIDE_OK);
	assert_int_equal(ra.rc, ASIDE_OK);
	assert_string_equal(ra.got, h->src.value);
	assert_int_equal(metrics(a).stale_served, served);
	assert_int_equal(unused.loads, 0);
}

/*
 * a reads key while h, in a itself, reloads it: it must join h's load and
 * wait for it (no copy served, no load of its own), and get h's row.  Lets
 * h finish.
 */
static void joiner_waits_for(aside_cache *a, holder *h, const char *key)
{
	source unused;
	source_init(&unused, "never");
	reader ra = {a, &unused, key, 0, ""};
	pthread_t ta;
	pthread_create(&ta, NULL, read_thread, &ra);
	for (int i = 0; i < 200 && metrics(a).waiting == 0; i++)
		pause_ms(5);
	assert_int_equal(metrics(a).waiting, 1);
	open_gate(&h->src);
	pthread_join(h->t, NULL);
	pthread_join(ta, NULL);
	assert_int_equal(ra.rc, ASIDE_OK);
	assert_string_equal(ra.got, h->src.value);
	assert_int_equal(unused.loads, 0);
}

/*
 * A stale copy is served for stale_ms after the write that left it, not for
 * as long as its tombstone lasts (tomb_ms, 60 s here): past that, a reader
 * that finds another process loading waits for it.  A second write keeps
 * the first one's end: the copy is older than both.
 */
static void stale_copy_only_for_stale_ms(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("stale_ms=300"),
		    *b = open_cache("stale_ms=300");
	char got[256], r[256];
	for (int second_write = 0; second_write < 2; second_write++) {
		const char *key = second_write ? "lk:14" : "lk:13";
		source old;
		source_init(&old, "old-row");
		assert_int_equal(read_key(a, &old, key, got), ASIDE_OK);
		assert_int_equal(aside_cache_invalidate(b, key, 5, NULL),
				 ASIDE_OK);
		assert_true(atol(redis1("PTTL", key, r)) > 59000);
		if (second_write) {
			pause_ms(200);
			assert_int_equal(
			    aside_cache_invalidate(a, key, 5, NULL), ASIDE_OK);
		}
		holder h;
		holder_start(&h, b, key, "new-row");
		if (!second_write) {
			/* Within stale_ms: the copy, at once. */
			source unused;
			source_init(&unused, "never");
			uint64_t served = metrics(a).stale_served;
			assert_int_equal(read_key(a, &unused, key, got),
					 ASIDE_OK);
			assert_string_equal(got, "old-row");
			assert_int_equal(metrics(a).stale_served, served + 1);
		}
		/* Past it (300 ms after the first write): a waits. */
		pause_ms(second_write ? 150 : 400);
		reader_waits_for(a, &h, key);
	}
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * A tombstone's stale copy keeps the expiry of the entry it was: with
 * stale_if_error_ms Redis still holds an entry past its TTL, and a write
 * then must not hand readers that waited for a reload a copy older than
 * the TTL allows (stale_ms excuses the write, not the age).  The reader
 * waits for the reload instead.
 */
static void stale_copy_keeps_its_expiry(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source old;
	read_then_expire("stale_ms=5000&stale_if_error_ms=60000", "sx", "sx:1",
			 &a, &b, &old);
	char r[256];
	assert_string_equal(redis1("EXISTS", "sx:1", r), "1"); /* kept */
	assert_int_equal(aside_cache_invalidate(b, "sx:1", 4, NULL), ASIDE_OK);
	/* b reloads and holds the lease meanwhile; a finds it and a
	 * tombstone holding the expired entry: it waits rather than take
	 * that copy. */
	holder h;
	holder_start(&h, b, "sx:1", "row-2");
	reader_waits_for(a, &h, "sx:1");
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * The database fails once a key has expired in both tiers
 * (stale_if_error_ms): the L1's expired copy is served; another process,
 * whose L1 never held the key, is served the copy Redis kept; and a write
 * in that other process removes both, so that no copy is served after it.
 */
static void stale_copy_when_the_database_fails(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("l1=100&stale_if_error_ms=60000", "se", "se:1", &a, &b,
			 &s);
	char got[256], r[256];
	/* Redis keeps the entry for the copy: 100 ms + 60 s at the fill. */
	assert_string_equal(redis1("EXISTS", "se:1", r), "1");
	long pttl = atol(redis1("PTTL", "se:1", r));
	assert_true(pttl > 59000 && pttl <= 60100);
	atomic_store(&s.fail, ASIDE_EDB);
	got[0] = '\0';
	assert_int_equal(read_key(a, &s, "se:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(metrics(a).stale_on_error, 1);
	assert_int_equal(s.loads, 2);
	got[0] = '\0';
	assert_int_equal(read_key(b, &s, "se:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(metrics(b).stale_on_error, 1);
	assert_int_equal(s.loads, 3);
	/* b's write deletes Redis's copy, and reaches a's L1 through Redis:
	 * no copy after it. */
	assert_int_equal(aside_cache_invalidate(b, "se:1", 4, NULL), ASIDE_OK);
	assert_int_equal(read_key(b, &s, "se:1", got), ASIDE_EDB);
	int rc = ASIDE_OK;
	for (int i = 0; i < 200 && rc == ASIDE_OK; i++) {
		rc = read_key(a, &s, "se:1", got);
		if (rc == ASIDE_OK)
			pause_ms(10);
	}
	assert_int_equal(rc, ASIDE_EDB);
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * stale_while_revalidate_ms over Redis, with an L1: a reader beside a
 * reload in its own process gets the L1's expired copy at once; after a
 * write in another process has reached the L1, a reader beside the next
 * reload gets no copy and waits for it.
 */
static void swr_copy_heeds_other_processes_writes(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("l1=100&stale_while_revalidate_ms=60000", "sw", "sw:1",
			 &a, &b, &s);
	source unused;
	source_init(&unused, "never");
	char got[256];
	holder h;
	holder_start(&h, a, "sw:1", "row-2");
	assert_int_equal(read_key(a, &unused, "sw:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(metrics(a).stale_while_revalidate, 1);
	open_gate(&h.src);
	pthread_join(h.t, NULL);
	assert_int_equal(h.rd.rc, ASIDE_OK);
	assert_string_equal(h.rd.got, "row-2");

	/* row-2 expires in a's L1 (and in Redis); b writes. */
	pause_ms(250);
	uint64_t heard = metrics(a).remote_invalidations;
	assert_int_equal(aside_cache_invalidate(b, "sw:1", 4, NULL), ASIDE_OK);
	for (int i = 0; i < 200 && metrics(a).remote_invalidations == heard;
	     i++)
		pause_ms(10);
	assert_true(metrics(a).remote_invalidations > heard);
	holder_start(&h, a, "sw:1", "row-3");
	joiner_waits_for(a, &h, "sw:1");
	assert_int_equal(metrics(a).stale_while_revalidate, 1);
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * stale_while_revalidate_ms over Redis alone: while another process holds
 * the lease of an expired key, a reader is served the entry Redis keeps past
 * its expiry, at once; not after a write, and not past the bound by the
 * reader's clock (Redis keeping the entry longer for stale_if_error_ms).
 * Readers of the process that reloads wait for it.
 */
static void swr_copy_from_redis_while_another_loads(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("stale_while_revalidate_ms=60000", "sr", "sr:1", &a,
			 &b, &s);
	char got[256], r[256];
	long pttl = atol(redis1("PTTL", "sr:1", r));
	assert_true(pttl > 59000 && pttl <= 60100); /* 100 ms + 60 s */
	source unused;
	source_init(&unused, "never");
	holder h;
	holder_start(&h, b, "sr:1", "row-2");
	aside_metrics m0 = metrics(a);
	assert_int_equal(read_key(a, &unused, "sr:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	aside_metrics m1 = metrics(a);
	assert_int_equal(m1.stale_while_revalidate, 1);
	assert_int_equal(m1.tier_hits[0], m0.tier_hits[0] + 1);
	assert_int_equal(m1.lease_waits, m0.lease_waits);
	assert_int_equal(m1.stale_served, 0);
	open_gate(&h.src);
	pthread_join(h.t, NULL);
	assert_string_equal(h.rd.got, "row-2");
	assert_int_equal(read_key(a, &unused, "sr:1", got), ASIDE_OK);
	assert_string_equal(got, "row-2");

	/* row-2 expires; b writes: no copy for a beside the next reload. */
	pause_ms(250);
	assert_int_equal(aside_cache_invalidate(b, "sr:1", 4, NULL), ASIDE_OK);
	holder_start(&h, b, "sr:1", "row-3");
	reader_waits_for(a, &h, "sr:1");
	assert_int_equal(metrics(a).stale_while_revalidate, 1);

	/* Readers of the process that reloads, without an L1, wait for it
	 * (docs/design.md, read path, step 8). */
	pause_ms(250); /* row-3 expired */
	holder_start(&h, a, "sr:1", "row-4");
	joiner_waits_for(a, &h, "sr:1");
	assert_int_equal(metrics(a).stale_while_revalidate, 1);
	aside_cache_close(a);
	aside_cache_close(b);

	/* Redis keeps the entry 60 s (stale_if_error_ms), but 150 ms past
	 * its expiry it is past stale_while_revalidate_ms: a waits. */
	read_then_expire(
	    "stale_if_error_ms=60000&stale_while_revalidate_ms=100", "sb",
	    "sb:1", &a, &b, &s);
	assert_string_equal(redis1("EXISTS", "sb:1", r), "1");
	holder_start(&h, b, "sb:1", "row-2");
	reader_waits_for(a, &h, "sb:1");
	assert_int_equal(metrics(a).stale_while_revalidate, 0);
	aside_cache_close(a);
	aside_cache_close(b);
}

/* A decode that waits at the source's gate while it is shut. */
static int held_decode(void *arg, aside_value *v, aside_error *err)
{
	(void)v;
	(void)err;
	source *s = arg;
	pthread_mutex_lock(&s->lock);
	s->inside = true;
	pthread_cond_broadcast(&s->cond);
	while (s->gated)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return ASIDE_OK;
}

typedef struct decoding_reader {
	aside_cache *c;
	aside_loader ld;
	int rc;
	char got[256];
} decoding_reader;

static void *decoding_read_thread(void *arg)
{
	decoding_reader *r = arg;
	r->rc = read_with(r->c, &r->ld, "sv:1", r->got);
	return NULL;
}

/*
 * An expired entry Redis handed a flight's leader (another process holding
 * the lease) was current when it was read, and no later: a reader that
 * joins the flight after a write completed meanwhile must not get it.  The
 * leader is held in its decode of the copy while the write completes and
 * the reader joins.
 */
static void swr_copy_not_for_readers_after_a_write(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("stale_while_revalidate_ms=60000", "sv", "sv:1", &a,
			 &b, &s);
	holder h;
	holder_start(&h, b, "sv:1", "row-2");
	source ls;
	source_init(&ls, "row-3");
	ls.gated = true;
	decoding_reader lead = {a, {load, held_decode, &ls}, 0, ""};
	pthread_t tl;
	pthread_create(&tl, NULL, decoding_read_thread, &lead);
	wait_inside(&ls); /* the leader has the copy, and decodes it */
	assert_int_equal(aside_cache_invalidate(b, "sv:1", 4, NULL), ASIDE_OK);
	source rs;
	source_init(&rs, "row-3");
	decoding_reader late = {a, {load, NULL, &rs}, 0, ""};
	pthread_t tr;
	pthread_create(&tr, NULL, decoding_read_thread, &late);
	for (int i = 0; i < 200 && metrics(a).waiting == 0; i++)
		pause_ms(5);
	assert_int_equal(metrics(a).waiting, 1);
	open_gate(&ls);
	pthread_join(tl, NULL);
	pthread_join(tr, NULL);
	assert_int_equal(late.rc, ASIDE_OK);
	assert_string_equal(late.got, "row-3");
	assert_int_equal(rs.loads, 0);
	open_gate(&h.src);
	pthread_join(h.t, NULL);
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * Redis alone (no L1) keeps expired entries for stale_if_error_ms: every
 * process is served the copy while loads fail, none once the row is gone,
 * and the first load that succeeds replaces it.
 */
static void redis_keeps_copies_without_an_l1(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("stale_if_error_ms=60000", "rk", "rk:1", &a, &b, &s);
	char got[256];
	atomic_store(&s.fail, ASIDE_EDB);
	for (int i = 0; i < 2; i++) {
		aside_cache *c = i ? b : a;
		got[0] = '\0';
		assert_int_equal(read_key(c, &s, "rk:1", got), ASIDE_OK);
		assert_string_equal(got, "row-1");
		assert_int_equal(metrics(c).stale_on_error, 1);
		assert_int_equal(metrics(c).load_errors, 1);
	}
	assert_int_equal(s.loads, 3);
	/* A key with no copy: the error. */
	assert_int_equal(read_key(a, &s, "rk:2", got), ASIDE_EDB);
	/* The row is gone (NOT_FOUND is an answer, not a failure). */
	atomic_store(&s.fail, 0);
	s.value = NULL;
	assert_int_equal(read_key(b, &s, "rk:1", got), ASIDE_NOT_FOUND);
	assert_int_equal(metrics(b).stale_on_error, 1);
	/* Back: loaded and stored fresh; the copy is not served again. */
	s.value = "row-2";
	assert_int_equal(read_key(a, &s, "rk:1", got), ASIDE_OK);
	assert_string_equal(got, "row-2");
	assert_int_equal(read_key(b, &s, "rk:1", got), ASIDE_OK);
	assert_string_equal(got, "row-2");
	assert_int_equal(s.loads, 6);
	assert_int_equal(metrics(a).stale_on_error, 1);
	aside_cache_close(a);
	aside_cache_close(b);
}

/*
 * A write that lands while the reader holding the lease loads: the lease
 * is voided, so when the load then fails the copy handed with the lease is
 * not served: it is older than a write that completed before the read
 * returned.
 */
static void copy_not_served_after_a_write_during_the_load(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a, *b;
	source s;
	read_then_expire("stale_if_error_ms=60000", "wd", "wd:1", &a, &b, &s);
	s.gated = true;
	s.inside = false; /* set by the first load */
	atomic_store(&s.fail, ASIDE_EDB);
	reader rd = {a, &s, "wd:1", 0, ""};
	pthread_t t;
	pthread_create(&t, NULL, read_thread, &rd);
	wait_inside(&s);
	assert_int_equal(aside_cache_invalidate(b, "wd:1", 4, NULL), ASIDE_OK);
	open_gate(&s);
	pthread_join(t, NULL);
	assert_int_equal(rd.rc, ASIDE_EDB);
	assert_int_equal(metrics(a).stale_on_error, 0);
	aside_cache_close(a);
	aside_cache_close(b);
}

/* The cache's clock, shifted ahead of Redis's by `shift_us`. */
static _Atomic int64_t shift_us;
static int64_t shifted_clock(void *ctx)
{
	(void)ctx;
	return aside_clock_default(NULL) + atomic_load(&shift_us);
}

/*
 * Expiry goes by the reading cache's clock, not Redis's: an entry past its
 * expiry there is a miss (the lease script compares), and a copy past its
 * bound there is not served, though Redis still holds it.
 */
static void copies_keep_to_the_readers_clock(void **state)
{
	NEED_SERVERS(state);
	char url[512];
	assert_true(test_redis_url(url, REDIS_DB, "stale_if_error_ms=1000"));
	aside_options o = {.clock = shifted_clock};
	aside_cache *a;
	aside_error err;
	atomic_store(&shift_us, 0);
	if (aside_cache_open_opts(url, &o, &a, &err) != ASIDE_OK)
		fail_msg("open: %s", err.message);
	assert_int_equal(aside_cache_set_ttl(a, "ck", 60000, 0), ASIDE_OK);
	source s;
	source_init(&s, "row-1");
	char got[256];
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_OK);
	atomic_store(&s.fail, ASIDE_EDB);
	/* Fresh by the cache's clock: a hit. */
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_OK);
	assert_int_equal(s.loads, 1);
	/* 0.5 s past its expiry: a miss, and the copy is served. */
	atomic_store(&shift_us, 60500000);
	got[0] = '\0';
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(s.loads, 2);
	assert_int_equal(metrics(a).stale_on_error, 1);
	/* 5 s past: beyond the 1-s bound, though Redis still holds it. */
	atomic_store(&shift_us, 65000000);
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_EDB);
	assert_int_equal(s.loads, 3);
	assert_int_equal(metrics(a).stale_on_error, 1);
	/* With the database back, the expired entry is reloaded and
	 * stored again under the lease. */
	atomic_store(&s.fail, 0);
	s.value = "row-2";
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_OK);
	assert_string_equal(got, "row-2");
	assert_int_equal(read_key(a, &s, "ck:1", got), ASIDE_OK);
	assert_int_equal(s.loads, 4);
	aside_cache_close(a);
}

static int no_keys(void *arg, aside_cache *c, aside_error *err)
{
	(void)arg;
	(void)c;
	(void)err;
	return ASIDE_OK;
}

/* A write in one process opens the other's gate to the key. */
static void gate_hears_other_processes_writes(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("l1=100"), *b = open_cache("l1=100");
	assert_int_equal(
	    aside_cache_gate(a, "gk", 1000, 0, no_keys, NULL, NULL), ASIDE_OK);
	source s;
	source_init(&s, "row");
	char got[256];
	/* Until a fill ran, and while the L1 may not be read, the gate lets
	 * keys through: wait for it to shut. */
	for (int i = 0; i < 400 && !metrics(a).gate_armed; i++) {
		read_key(a, &s, "gk:4", got);
		pause_ms(5);
	}
	int loads = s.loads;
	assert_int_equal(read_key(a, &s, "gk:5", got), ASIDE_NOT_FOUND);
	assert_int_equal(s.loads, loads);
	assert_int_equal(aside_cache_invalidate(b, "gk:5", 4, NULL), ASIDE_OK);
	int rc = ASIDE_NOT_FOUND;
	for (int i = 0; i < 400 && rc != ASIDE_OK; i++) {
		rc = read_key(a, &s, "gk:5", got);
		if (rc != ASIDE_OK)
			pause_ms(5);
	}
	assert_int_equal(rc, ASIDE_OK);
	assert_string_equal(got, "row");
	aside_cache_close(a);
	aside_cache_close(b);
}

static long cached_scripts(void)
{
	char info[4096];
	const char *argv[] = {"INFO", "memory"};
	assert_true(test_redis_cmd(REDIS_DB, info, sizeof(info), 2, argv));
	const char *p = strstr(info, "number_of_cached_scripts:");
	assert_non_null(p);
	return strtol(p + strlen("number_of_cached_scripts:"), NULL, 10);
}

/*
 * negative_ttl_ms over Redis: an absence found by one process is stored
 * (kind 2) and answers the others without a load; another process's write
 * ends it, in Redis and in the L1s that hear of it; an entry of a kind
 * this build does not know is corrupt, dropped and loaded afresh.
 */
static void absence_shared_through_redis(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("negative_ttl_ms=60000");
	aside_cache *b = open_cache("negative_ttl_ms=60000&l1=100");
	source sa, sb;
	source_init(&sa, NULL);
	source_init(&sb, "never");
	char got[256], r[256];
	assert_int_equal(read_key(a, &sa, "ab:1", got), ASIDE_NOT_FOUND);
	assert_int_equal(sa.loads, 1);
	assert_string_equal(redis1("STRLEN", "ab:1", r), "25");
	const char *range[] = {"GETRANGE", "ab:1", "24", "24"};
	assert_true(test_redis_cmd(REDIS_DB, r, sizeof(r), 4, range));
	assert_int_equal(r[0], 2);
	/* b: from Redis, then from its L1; never its own load. */
	assert_int_equal(read_key(b, &sb, "ab:1", got), ASIDE_NOT_FOUND);
	assert_int_equal(read_key(b, &sb, "ab:1", got), ASIDE_NOT_FOUND);
	assert_int_equal(sb.loads, 0);
	aside_metrics m = metrics(b);
	assert_int_equal(m.negative_hits, 2);
	assert_int_equal(m.tier_hits[1], 1);
	assert_int_equal(m.tier_hits[0], 1);
	assert_int_equal(m.loads, 0);
	/* a creates the row: the absence goes, in Redis and in b's L1. */
	sa.value = "row-1";
	sb.value = "row-1";
	uint64_t heard = metrics(b).remote_invalidations;
	assert_int_equal(aside_cache_invalidate(a, "ab:1", 4, NULL), ASIDE_OK);
	for (int i = 0; i < 200 && metrics(b).remote_invalidations == heard;
	     i++)
		pause_ms(10);
	assert_true(metrics(b).remote_invalidations > heard);
	assert_int_equal(read_key(b, &sb, "ab:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(read_key(a, &sa, "ab:1", got), ASIDE_OK);
	assert_string_equal(got, "row-1");
	assert_int_equal(sa.loads + sb.loads, 2);

	/* A kind this build does not know: corrupt, dropped, loaded. */
	sa.value = NULL;
	assert_int_equal(read_key(a, &sa, "ab:2", got), ASIDE_NOT_FOUND);
	const char *kind3[] = {"SETRANGE", "ab:2", "24", "\x03"};
	assert_true(test_redis_cmd(REDIS_DB, NULL, 0, 4, kind3));
	sa.value = "row-2";
	assert_int_equal(read_key(a, &sa, "ab:2", got), ASIDE_OK);
	assert_string_equal(got, "row-2");
	assert_int_equal(metrics(a).corrupt, 1);
	aside_cache_close(a);
	aside_cache_close(b);
}

/* The lease race with an absence: a load that found nothing before
 * another process created the row never stores the absence. */
static void absence_read_before_another_write_is_refused(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("negative_ttl_ms=60000");
	aside_cache *b = open_cache("negative_ttl_ms=60000");
	source s;
	source_init(&s, NULL);
	s.gated = true;
	reader ra = {a, &s, "ab:3", 0, ""};
	pthread_t ta;
	pthread_create(&ta, NULL, read_thread, &ra);
	wait_inside(&s); /* a found nothing and is about to fill */
	pthread_mutex_lock(&s.lock);
	s.value = "created";
	pthread_mutex_unlock(&s.lock);
	assert_int_equal(aside_cache_invalidate(b, "ab:3", 4, NULL), ASIDE_OK);
	open_gate(&s);
	pthread_join(ta, NULL);
	/* Refused, read again: the row. */
	assert_int_equal(ra.rc, ASIDE_OK);
	assert_string_equal(ra.got, "created");
	assert_int_equal(metrics(a).fills_refused, 1);
	char got[256];
	assert_int_equal(read_key(b, &s, "ab:3", got), ASIDE_OK);
	assert_string_equal(got, "created");
	assert_int_equal(s.loads, 2);
	aside_cache_close(a);
	aside_cache_close(b);
}

/* A delete's tombstone, then a read that finds nothing: the absence is
 * stored (no older row), takes the tombstone's version, and the fence
 * still refuses an older row once the absence has expired. */
static void absence_after_a_delete_keeps_the_fence(void **state)
{
	NEED_SERVERS(state);
	aside_cache *a = open_cache("negative_ttl_ms=300&jitter_pct=0");
	aside_cache *b = open_cache(NULL);
	assert_int_equal(aside_cache_invalidate_version(b, "ab:4", 4, 7, NULL),
			 ASIDE_OK);
	source s;
	source_init(&s, NULL);
	char got[256], r[256];
	assert_int_equal(read_key(a, &s, "ab:4", got), ASIDE_NOT_FOUND);
	assert_int_equal(read_key(a, &s, "ab:4", got), ASIDE_NOT_FOUND);
	assert_int_equal(s.loads, 1); /* stored, not refused and read again */
	aside_metrics m = metrics(a);
	assert_int_equal(m.fills_refused, 0);
	assert_int_equal(m.negative_hits, 1);
	/* The version's last byte (big-endian), and the kind. */
	const char *range[] = {"GETRANGE", "ab:4", "23", "24"};
	assert_true(test_redis_cmd(REDIS_DB, r, sizeof(r), 4, range));
	assert_int_equal(r[0], 7);
	assert_int_equal(r[1], 2); /* an absence */
	/* Expired: a replica behind the delete (version 6) is refused. */
	pause_ms(400);
	static const int64_t seq[] = {6, 8};
	struct versioned src = {seq, 0};
	assert_int_equal(read_versioned(a, &src, "ab:4", got), ASIDE_OK);
	assert_string_equal(got, "v8");
	assert_int_equal(metrics(a).fills_refused, 1);
	aside_cache_close(a);
	aside_cache_close(b);
}

static void scripts_come_back_after_a_flush(void **state)
{
	NEED_SERVERS(state);
	aside_cache *c = open_cache(NULL);
	source s;
	source_init(&s, "v7");
	char got[256];
	assert_int_equal(read_key(c, &s, "lk:7", got), ASIDE_OK);
	const char *argv[] = {"SCRIPT", "FLUSH"};
	assert_true(test_redis_cmd(REDIS_DB, NULL, 0, 2, argv));
	assert_int_equal(cached_scripts(), 0);
	/* EVALSHA now answers NOSCRIPT: the scripts are sent again. */
	assert_int_equal(read_key(c, &s, "lk:8", got), ASIDE_OK);
	assert_int_equal(aside_cache_invalidate(c, "lk:7", 4, NULL), ASIDE_OK);
	assert_int_equal(read_key(c, &s, "lk:7", got), ASIDE_OK);
	assert_int_equal(s.loads, 3);
	assert_true(cached_scripts() >= 3);
	assert_int_equal(metrics(c).tier_errors, 0);
	aside_cache_close(c);
}

/* ---- processes ---------------------------------------------------------- */

enum { PROCS = 4, THREADS = 16 };

/* In a child: the load counts itself in Redis, then takes 100 ms. */
static int counted_load(void *arg, const char *key, size_t klen,
			aside_value **out, aside_error *err)
{
	(void)arg;
	(void)err;
	const char *argv[] = {"INCR", "lk:loads"};
	if (!test_redis_cmd(REDIS_DB, NULL, 0, 2, argv))
		return ASIDE_EDB;
	pause_ms(100);
	return aside_value_new(key, klen, "hot", 3, out);
}

static aside_cache *child_cache;
static pthread_barrier_t child_barrier;
static _Atomic int child_errors;

static void *child_thread(void *arg)
{
	(void)arg;
	aside_loader ld = {counted_load, NULL, NULL};
	pthread_barrier_wait(&child_barrier);
	aside_value *v;
	if (aside_cache_get(child_cache, "lk:hot", 6, &ld, &v, NULL) !=
	    ASIDE_OK) {
		atomic_fetch_add(&child_errors, 1);
		return NULL;
	}
	size_t len;
	const char *d = aside_value_data(v, &len);
	if (len != 3 || memcmp(d, "hot", 3) != 0)
		atomic_fetch_add(&child_errors, 1);
	aside_value_unref(v);
	return NULL;
}

/* A child process: T threads read one cold key once "lk:go" is set. */
static int child_main(void)
{
	child_cache = open_cache("l1=100");
	if (!child_cache)
		return 2;
	pthread_barrier_init(&child_barrier, NULL, THREADS);
	pthread_t th[THREADS];
	const char *ready[] = {"INCR", "lk:ready"};
	test_redis_cmd(REDIS_DB, NULL, 0, 2, ready);
	char go[64] = "0";
	const char *get[] = {"EXISTS", "lk:go"};
	for (int i = 0; i < 5000 && strcmp(go, "1") != 0; i++) {
		test_redis_cmd(REDIS_DB, go, sizeof(go), 2, get);
		if (strcmp(go, "1") != 0)
			pause_ms(1);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, child_thread, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	aside_cache_close(child_cache);
	return atomic_load(&child_errors) ? 1 : 0;
}

static void processes_and_threads_make_one_load(void **state)
{
	NEED_SERVERS(state);
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	pid_t pid[PROCS];
	for (int p = 0; p < PROCS; p++) {
		char *argv[] = {self, "--child", NULL};
		assert_int_equal(
		    posix_spawn(&pid[p], self, NULL, NULL, argv, environ), 0);
	}
	/* Start them together, once every one has its cache open. */
	char ready[64] = "0";
	const char *get[] = {"GET", "lk:ready"};
	for (int i = 0; i < 10000 && atoi(ready) < PROCS; i++) {
		test_redis_cmd(REDIS_DB, ready, sizeof(ready), 2, get);
		pause_ms(1);
	}
	assert_int_equal(atoi(ready), PROCS);
	const char *go[] = {"SET", "lk:go", "1"};
	assert_true(test_redis_cmd(REDIS_DB, NULL, 0, 3, go));
	for (int p = 0; p < PROCS; p++) {
		int status;
		assert_int_equal(waitpid(pid[p], &status, 0), pid[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	char loads[64];
	const char *count[] = {"GET", "lk:loads"};
	assert_true(test_redis_cmd(REDIS_DB, loads, sizeof(loads), 2, count));
	printf("%d processes x %d threads on one cold key: %s database "
	       "load(s)\n",
	       PROCS, THREADS, loads);
	assert_string_equal(loads, "1");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--child") == 0)
		return child_main();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(cold_read_takes_the_lease_and_fills, setup),
	    cmocka_unit_test_setup(second_cache_waits_for_the_holder, setup),
	    cmocka_unit_test_setup(write_in_another_cache_voids_the_lease,
				   setup),
	    cmocka_unit_test_setup(
		late_joiner_of_a_voided_load_gets_the_new_row, setup),
	    cmocka_unit_test_setup(late_invalidation_revalidates_a_load, setup),
	    cmocka_unit_test_setup(dead_holders_lease_lapses, setup),
	    cmocka_unit_test_setup(lease_held_too_long_is_waited_out, setup),
	    cmocka_unit_test_setup(
		joiner_of_a_lease_timeout_load_gets_the_new_row, setup),
	    cmocka_unit_test_setup(joiners_of_a_lease_wait_get_the_load, setup),
	    cmocka_unit_test_setup(nothing_to_store_gives_the_lease_up, setup),
	    cmocka_unit_test_setup(fill_older_than_a_tombstone_is_refused,
				   setup),
	    cmocka_unit_test_setup(newer_tombstone_is_kept, setup),
	    cmocka_unit_test_setup(stale_copy_instead_of_waiting, setup),
	    cmocka_unit_test_setup(stale_copy_only_for_stale_ms, setup),
	    cmocka_unit_test_setup(stale_copy_keeps_its_expiry, setup),
	    cmocka_unit_test_setup(stale_copy_when_the_database_fails, setup),
	    cmocka_unit_test_setup(swr_copy_heeds_other_processes_writes,
				   setup),
	    cmocka_unit_test_setup(swr_copy_from_redis_while_another_loads,
				   setup),
	    cmocka_unit_test_setup(swr_copy_not_for_readers_after_a_write,
				   setup),
	    cmocka_unit_test_setup(redis_keeps_copies_without_an_l1, setup),
	    cmocka_unit_test_setup(
		copy_not_served_after_a_write_during_the_load, setup),
	    cmocka_unit_test_setup(copies_keep_to_the_readers_clock, setup),
	    cmocka_unit_test_setup(gate_hears_other_processes_writes, setup),
	    cmocka_unit_test_setup(absence_shared_through_redis, setup),
	    cmocka_unit_test_setup(absence_after_a_delete_keeps_the_fence,
				   setup),
	    cmocka_unit_test_setup(absence_read_before_another_write_is_refused,
				   setup),
	    cmocka_unit_test_setup(scripts_come_back_after_a_flush, setup),
	    cmocka_unit_test_setup(processes_and_threads_make_one_load, setup),
	};
	if (getenv("TEST_FILTER")) /* one test: TEST_FILTER=name */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
