/*
 * test_engine.c -- the engine's read and write paths: single-flight,
 * failure sharing, bounded waits, the two invalidation races, TTL policy,
 * related keys, corrupt entries and metrics.
 */
#include "../support/fake_repo.h"

#include <aside/aside.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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

/* A source of values: "<key>=<version>", with counters and a hold hook. */
typedef struct source {
	_Atomic unsigned loads;
	_Atomic int version;   /* what a load reads now */
	_Atomic int fail;      /* status a load returns, 0: none */
	_Atomic int not_found; /* loads find nothing */
	_Atomic int corrupt;   /* values carry no decodable form */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int hold; /* hold the next load after it has read */
	int held;
	int release;
} source;

static void source_init(source *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->version = 1;
}

static void source_fini(source *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

static void source_hold_next(source *s)
{
	pthread_mutex_lock(&s->lock);
	s->hold = 1;
	s->release = 0;
	pthread_mutex_unlock(&s->lock);
}

static void source_wait_held(source *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->held)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void source_release(source *s)
{
	pthread_mutex_lock(&s->lock);
	s->release = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static int src_load(void *arg, const char *key, size_t klen, aside_value **out,
		    aside_error *err)
{
	source *s = arg;
	atomic_fetch_add(&s->loads, 1);
	int version = atomic_load(&s->version);
	int not_found = atomic_load(&s->not_found); /* read as version is */
	pthread_mutex_lock(&s->lock);
	if (s->hold) {
		s->hold = 0;
		s->held = 1;
		pthread_cond_broadcast(&s->cond);
		while (!s->release)
			pthread_cond_wait(&s->cond, &s->lock);
		s->held = 0;
	}
	pthread_mutex_unlock(&s->lock);
	int fail = atomic_load(&s->fail);
	if (fail) {
		if (err) {
			err->code = fail;
			snprintf(err->message, sizeof(err->message),
				 "source is down");
		}
		return fail;
	}
	if (not_found)
		return ASIDE_NOT_FOUND;
	char buf[600];
	int n = snprintf(buf, sizeof(buf), "%.*s=%d", (int)klen, key, version);
	int rc = aside_value_new(key, klen, buf, (size_t)n, out);
	if (rc == ASIDE_OK && !atomic_load(&s->corrupt))
		aside_value_attach(*out, strdup(buf), free, (size_t)n + 1);
	return rc;
}

static int src_decode(void *arg, aside_value *v, aside_error *err)
{
	(void)arg;
	(void)err;
	size_t len;
	const char *d = aside_value_data(v, &len);
	if (len < 5 || strncmp(d, "GOOD:", 5) != 0)
		return ASIDE_ECORRUPT;
	aside_value_attach(v, strdup(d), free, len + 1);
	return ASIDE_OK;
}

/* The version a value carries. */
static int version_of(const aside_value *v)
{
	size_t len;
	const char *d = aside_value_data(v, &len);
	const char *eq = memrchr(d, '=', len);
	return eq ? atoi(eq + 1) : -1;
}

typedef struct fake_clock {
	_Atomic int64_t now_us;
} fake_clock;

static int64_t fake_now(void *ctx)
{
	return atomic_load(&((fake_clock *)ctx)->now_us);
}

typedef struct fixture {
	source src;
	aside_loader loader;
	aside_cache *cache;
	fake_clock clock;
} fixture;

static fixture *fixture_new(const char *url)
{
	fixture *f = calloc(1, sizeof(*f));
	source_init(&f->src);
	f->loader = (aside_loader){src_load, NULL, &f->src};
	f->clock.now_us = 1700000000000000;
	aside_options o = {.clock = fake_now, .clock_ctx = &f->clock};
	aside_error err;
	int rc = aside_cache_open_opts(url, &o, &f->cache, &err);
	if (rc != ASIDE_OK)
		fail_msg("open %s: %s", url, err.message);
	return f;
}

static void fixture_free(fixture *f)
{
	aside_cache_close(f->cache);
	source_fini(&f->src);
	free(f);
}

static int setup(void **state)
{
	*state = fixture_new("mem://?capacity=1000");
	return 0;
}

static int teardown(void **state)
{
	fixture_free(*state);
	return 0;
}

static int get_version(fixture *f, const char *key)
{
	aside_value *v = NULL;
	int rc =
	    aside_cache_get(f->cache, key, strlen(key), &f->loader, &v, NULL);
	if (rc != ASIDE_OK)
		return rc < 0 ? rc : -100 - rc;
	int ver = version_of(v);
	aside_value_unref(v);
	return ver;
}

static aside_metrics metrics(fixture *f)
{
	aside_metrics m;
	aside_cache_metrics(f->cache, &m);
	return m;
}

/* ---- basic read path --------------------------------------------------- */

static void get_miss_then_hit(void **state)
{
	fixture *f = *state;
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 1);
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.hits, 1);
	assert_int_equal(m.misses, 1);
	assert_int_equal(m.loads, 1);
	assert_int_equal(m.fills, 1);
	assert_int_equal(m.entries, 1);
}

static void not_found_is_not_cached(void **state)
{
	fixture *f = *state;
	f->src.not_found = 1;
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 2);
	aside_metrics m = metrics(f);
	assert_int_equal(m.not_found, 2);
	assert_int_equal(m.entries, 0);
}

static void bad_arguments_are_refused(void **state)
{
	fixture *f = *state;
	aside_value *v;
	aside_error err;
	char big[ASIDE_KEY_MAX + 2];
	memset(big, 'k', sizeof(big));
	assert_int_equal(aside_cache_get(f->cache, "", 0, &f->loader, &v, &err),
			 ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_get(f->cache, big, sizeof(big), &f->loader, &v, &err),
	    ASIDE_EINVAL);
	assert_int_equal(aside_cache_get(f->cache, "k", 1, NULL, &v, &err),
			 ASIDE_EINVAL);
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", 0, 0),
			 ASIDE_EINVAL);
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", 10, 101),
			 ASIDE_EINVAL);
	/* A TTL past what the clock can add up (it overflowed into an expiry
	 * of about now), and a namespace no key can have. */
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", INT64_MAX, 0),
			 ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_set_ttl(f->cache, "k", ASIDE_TTL_MAX_MS + 1, 0),
	    ASIDE_EINVAL);
	assert_int_equal(aside_cache_set_ttl(f->cache, "k:1", 1000, 0),
			 ASIDE_EINVAL);
	assert_int_equal(aside_cache_add_related(f->cache, "k:1", "all"),
			 ASIDE_EINVAL);
	/* The longest TTL is a long one, from now. */
	assert_int_equal(
	    aside_cache_set_ttl(f->cache, "k", ASIDE_TTL_MAX_MS, 10), ASIDE_OK);
	assert_int_equal(
	    aside_cache_get(f->cache, "k:1", 3, &f->loader, &v, &err),
	    ASIDE_OK);
	assert_true(aside_value_expires_at_us(v) >
		    atomic_load(&f->clock.now_us) +
			ASIDE_TTL_MAX_MS / 2 * 1000);
	aside_value_unref(v);
	assert_int_equal(
	    aside_cache_get(f->cache, "k:1", 3, &f->loader, &v, &err),
	    ASIDE_OK);
	aside_value_unref(v);
	assert_int_equal(f->src.loads, 1); /* a hit */
}

static void open_rejects_bad_urls(void **state)
{
	(void)state;
	const char *bad[] = {
	    "",
	    "memcached://x",
	    "mem://host",
	    "mem://?capacity=0",
	    "mem://?capacity=abc",
	    "mem://?capacity",
	    "mem://?bogus=1",
	    "mem://?jitter_pct=101",
	    "mem://?ttl_ms=-5",
	    "mem://?capacity=2147483648&shards=1", /* over 2^30 */
	    "mem://?stale_if_error_ms=0",
	    "redis://127.0.0.1:1?stale_if_error_ms=0",
	    "mem://?stale_while_revalidate_ms=0",
	    "redis://127.0.0.1:1?stale_while_revalidate_ms=0",
	    "mem://?stale_while_revalidate_ms=5&stale_while_revalidate_ms=5",
	    "mem://?capacity=10&capacity=10",
	    "mem://?ttl_ms=1000&capacity=10&ttl_ms=2000",
	    "redis://127.0.0.1:1?l1=10&pool=2&l1=20",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		aside_cache *c = NULL;
		aside_error err;
		aside_error_clear(&err);
		int rc = aside_cache_open(bad[i], &c, &err);
		if (rc != ASIDE_EURL)
			fail_msg("'%s' gave %d, want ASIDE_EURL", bad[i], rc);
		assert_null(c);
		assert_true(strlen(err.message) > 0);
	}
	/* Which of two values was meant is not guessed. */
	aside_cache *c = NULL;
	aside_error err;
	assert_int_equal(
	    aside_cache_open("mem://?capacity=10&capacity=20", &c, &err),
	    ASIDE_EURL);
	assert_string_equal(err.message, "option capacity given twice");
}

/* Messages and logs show URLs without their passwords. */
static void urls_are_shown_without_passwords(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"redis://:secret@host:6379/2", "redis://:***@host:6379/2"},
	    {"postgresql://u:pw@h:5432/db?sslmode=disable&password=x&a=b",
	     "postgresql://u:***@h:5432/db?sslmode=disable&password=***&a=b"},
	    {"postgres://h/db?password=x", "postgres://h/db?password=***"},
	    {"redis://:p@ss@host", "redis://:***@host"},
	    {"postgresql://user@host/db", "postgresql://user@host/db"},
	    {"redis://:@host", "redis://:@host"},
	    {"redis://host:6379?l1=10", "redis://host:6379?l1=10"},
	    {"mem://?capacity=10", "mem://?capacity=10"},
	    {"sqlite:/tmp/a:b@c.db", "sqlite:/tmp/a:b@c.db"},
	    {"", ""},
	};
	char buf[128];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(
		    aside_url_redact(cases[i][0], buf, sizeof(buf)),
		    cases[i][1]);
	char small[10];
	assert_string_equal(
	    aside_url_redact("redis://:secret@host", small, sizeof(small)),
	    "redis://:");
	assert_string_equal(aside_url_redact(NULL, buf, sizeof(buf)), "");
	/* An open that fails says which URL, without its password. */
	aside_cache *c = NULL;
	aside_error err;
	assert_int_equal(
	    aside_cache_open("redis://:topsecret@host:xx", &c, &err),
	    ASIDE_EURL);
	assert_non_null(strstr(err.message, "redis://:***@host:xx"));
	assert_null(strstr(err.message, "topsecret"));
}

/* ---- single-flight ----------------------------------------------------- */

typedef struct reader {
	fixture *f;
	const char *key;
	int result; /* version, or a negative status */
	aside_error err;
} reader;

static void *read_thread(void *arg)
{
	reader *r = arg;
	aside_value *v = NULL;
	int rc = aside_cache_get(r->f->cache, r->key, strlen(r->key),
				 &r->f->loader, &v, &r->err);
	r->result = rc == ASIDE_OK ? version_of(v) : rc < 0 ? rc : -100 - rc;
	aside_value_unref(v);
	return NULL;
}

/*
 * n readers of key (n <= 16) at once: the first leads a load held in the
 * source until the others wait for it; each one's result (a version, or
 * -100 - status) in results.
 */
static void read_behind_a_held_load(fixture *f, const char *key, int n,
				    int *results)
{
	pthread_t th[16];
	reader rd[16];
	source_hold_next(&f->src);
	for (int i = 0; i < n; i++) {
		rd[i] = (reader){f, key, 0, {0}};
		pthread_create(&th[i], NULL, read_thread, &rd[i]);
		if (i == 0)
			source_wait_held(&f->src);
	}
	assert_true(wait_for_waiters(f->cache, n - 1));
	source_release(&f->src);
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		results[i] = rd[i].result;
	}
}

static void get_coalesces_concurrent_misses(void **state)
{
	fixture *f = *state;
	enum { N = 10 };
	int results[N];
	read_behind_a_held_load(f, "k:7", N, results);
	for (int i = 0; i < N; i++)
		assert_int_equal(results[i], 1);
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.loads, 1);
	assert_int_equal(m.shared_loads, N - 1);
	assert_int_equal(m.misses, N);
	assert_int_equal(m.waiting, 0);
}

/* Reads k:0 .. k:7, all resident, n times; counts what was not a hit. */
struct hitter {
	fixture *f;
	int n, wrong;
};

static void *hit_thread(void *arg)
{
	struct hitter *h = arg;
	for (int i = 0; i < h->n; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k:%d", i % 8);
		h->wrong += get_version(h->f, key) != 1;
	}
	return NULL;
}

/*
 * More threads than a cache has counter stripes (each of the first 63 owns
 * one, the rest share the last): every hit is counted, from every thread,
 * and again once those threads have gone and others took their stripes.
 */
static void counters_add_up_past_the_stripes(void **state)
{
	fixture *f = *state;
	enum { N = 100, READS = 50000 };
	for (int i = 0; i < 8; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k:%d", i);
		assert_int_equal(get_version(f, key), 1);
	}
	for (int round = 0; round < 2; round++) {
		pthread_t th[N];
		struct hitter h[N];
		for (int i = 0; i < N; i++) {
			h[i] = (struct hitter){f, READS, 0};
			assert_int_equal(
			    pthread_create(&th[i], NULL, hit_thread, &h[i]), 0);
		}
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(h[i].wrong, 0);
		}
	}
	aside_metrics m = metrics(f);
	assert_int_equal(m.hits, 2 * N * READS);
	assert_int_equal(m.misses, 8);
	assert_int_equal(m.loads, 8);
}

static void loader_failure_is_shared_not_stampeded(void **state)
{
	fixture *f = *state;
	enum { N = 8 };
	pthread_t th[N];
	reader rd[N];
	f->src.fail = ASIDE_EDB;
	source_hold_next(&f->src);
	for (int i = 0; i < N; i++) {
		rd[i] = (reader){f, "k:9", 0, {0}};
		pthread_create(&th[i], NULL, read_thread, &rd[i]);
		if (i == 0)
			source_wait_held(&f->src);
	}
	assert_true(wait_for_waiters(f->cache, N - 1));
	source_release(&f->src);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(rd[i].result, ASIDE_EDB);
		assert_string_equal(rd[i].err.message, "source is down");
	}
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.load_errors, 1);
	assert_int_equal(m.entries, 0);
	/* An error is not cached: the next read tries again. */
	f->src.fail = 0;
	assert_int_equal(get_version(f, "k:9"), 1);
	assert_int_equal(f->src.loads, 2);
}

static void wait_for_a_load_is_bounded(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?wait_ms=50");
	source_hold_next(&f->src);
	pthread_t leader;
	reader r1 = {f, "k:1", 0, {0}};
	pthread_create(&leader, NULL, read_thread, &r1);
	source_wait_held(&f->src);
	/* The leader is stuck in the database; a second reader gives up. */
	reader r2 = {f, "k:1", 0, {0}};
	read_thread(&r2);
	assert_int_equal(r2.result, ASIDE_ETIMEDOUT);
	assert_int_equal(metrics(f).wait_timeouts, 1);
	source_release(&f->src);
	pthread_join(leader, NULL);
	assert_int_equal(r1.result, 1);
	assert_int_equal(f->src.loads, 1);
	fixture_free(f);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/*
 * A reader whose wait runs out while its process is stopped (SIGSTOP, a VM
 * paused, swapping) wakes long after its deadline, and so would its leader,
 * which could not run either: it waits once more, as long as it lost (up
 * to wait_ms), instead of failing the moment the process resumes.
 */
static void wait_that_overslept_is_given_its_time_again(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?wait_ms=100");
	source_hold_next(&f->src);
	pthread_t leader, joiner;
	reader r1 = {f, "k:1", 0, {0}}, r2 = {f, "k:1", 0, {0}};
	pthread_create(&leader, NULL, read_thread, &r1);
	source_wait_held(&f->src);
	pthread_create(&joiner, NULL, read_thread, &r2);
	while (metrics(f).waiting < 1)
		sleep_ms(1);
	/* A child stops this process for 300 ms, past the joiner's 100. */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct timespec ts = {0, 300 * 1000000L};
		kill(getppid(), SIGSTOP);
		nanosleep(&ts, NULL);
		kill(getppid(), SIGCONT);
		_exit(0);
	}
	int status;
	while (waitpid(child, &status, 0) < 0)
		;
	/* Resumed: the load ends 20 ms later. */
	sleep_ms(20);
	source_release(&f->src);
	pthread_join(leader, NULL);
	pthread_join(joiner, NULL);
	assert_int_equal(r1.result, 1);
	assert_int_equal(r2.result, 1);
	assert_int_equal(metrics(f).wait_timeouts, 0);
	assert_int_equal(f->src.loads, 1);
	fixture_free(f);
}

/* ---- the two invalidation races ---------------------------------------- */

static void read_after_invalidate_never_joins_older_load(void **state)
{
	fixture *f = *state;
	/* A reader starts loading version 1 and is held in the source. */
	source_hold_next(&f->src);
	pthread_t old;
	reader r1 = {f, "k:1", 0, {0}};
	pthread_create(&old, NULL, read_thread, &r1);
	source_wait_held(&f->src);
	/* A writer commits version 2, then invalidates. */
	f->src.version = 2;
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	/* A read that starts now must load afresh, not wait for the old one
	 * (which is still held: joining it would block this thread). */
	assert_int_equal(get_version(f, "k:1"), 2);
	assert_int_equal(f->src.loads, 2);
	source_release(&f->src);
	pthread_join(old, NULL);
	assert_int_equal(r1.result, 1); /* it began before the write */
	assert_int_equal(get_version(f, "k:1"), 2);
}

static void load_before_invalidate_never_stores(void **state)
{
	fixture *f = *state;
	source_hold_next(&f->src);
	pthread_t old;
	reader r1 = {f, "k:1", 0, {0}};
	pthread_create(&old, NULL, read_thread, &r1);
	source_wait_held(&f->src); /* it has read version 1 */
	f->src.version = 2;
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	source_release(&f->src);
	pthread_join(old, NULL);
	assert_int_equal(r1.result, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.fills_voided, 1);
	assert_int_equal(m.fills, 0);
	assert_int_equal(m.entries, 0);
	/* The stale version 1 was not stored: the next read loads 2. */
	assert_int_equal(get_version(f, "k:1"), 2);
	assert_int_equal(f->src.loads, 2);
}

typedef struct stress {
	fixture *f;
	_Atomic int versions[8]; /* what the source holds for key i */
	_Atomic int
	    completed[8]; /* latest version whose invalidation returned */
	_Atomic int stale;
	_Atomic int errors;
	_Atomic int stop;
	unsigned seed;
	/* Every third load fails, and entries expire (stale_if_error_ms,
	 * stale_while_revalidate_ms): readers may get errors, or expired
	 * copies, never a copy older than a completed write. */
	_Atomic int failing;
	_Atomic unsigned loads;
	/* Even versions are absences (the key deleted, or not yet created):
	 * loads find nothing, which negative_ttl_ms caches. */
	bool absences;
} stress;

/* A source whose value for key k:i is versions[i]. */
static int stress_load(void *arg, const char *key, size_t klen,
		       aside_value **out, aside_error *err)
{
	(void)err;
	stress *s = arg;
	int i = key[2] - '0';
	int ver = atomic_load(&s->versions[i]);
	if (atomic_load(&s->failing) && atomic_fetch_add(&s->loads, 1) % 3 == 0)
		return ASIDE_EDB;
	if (ver % 3 == 0)
		sched_yield(); /* widen the window between read and fill */
	if (s->absences && ver % 2 == 0)
		return ASIDE_NOT_FOUND;
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%.*s=%d", (int)klen, key, ver);
	return aside_value_new(key, klen, buf, (size_t)n, out);
}

static void *stress_writer(void *arg)
{
	stress *s = arg;
	for (int n = 0; n < 3000; n++) {
		/* With loads failing, k:6 and k:7 are never written: their
		 * entries only expire, and become stale copies. */
		int i = n % (atomic_load(&s->failing) ? 6 : 8);
		char key[4] = {'k', ':', (char)('0' + i), 0};
		int ver = atomic_fetch_add(&s->versions[i], 1) + 1;
		aside_cache_invalidate(s->f->cache, key, 3, NULL);
		if (atomic_load(&s->failing)) { /* past every TTL of 1 ms */
			atomic_fetch_add(&s->f->clock.now_us, 700);
			sched_yield(); /* and let the readers meet that */
		}
		/* versions only grow, so a max is what completed */
		int cur = atomic_load(&s->completed[i]);
		while (cur < ver && !atomic_compare_exchange_weak(
					&s->completed[i], &cur, ver))
			;
	}
	return NULL;
}

struct lent {
	const char *key;
	int floor;
	bool stale;
};

/* aside_read_fn: checks the lent value while it is lent. */
static void check_lent(void *arg, const aside_value *v)
{
	struct lent *l = arg;
	size_t klen;
	const char *k = aside_value_key(v, &klen);
	l->stale =
	    klen != 3 || memcmp(k, l->key, 3) != 0 || version_of(v) < l->floor;
}

/*
 * A read of k:i found nothing, having begun after version floor completed:
 * stale if that version is a row and no write has begun since (the source
 * held the row for the whole read).
 */
static void absent_read(stress *s, int i, int floor)
{
	if (floor % 2 == 1 && atomic_load(&s->versions[i]) == floor) {
		fprintf(stderr,
			"read k:%d after version %d completed, got "
			"not found\n",
			i, floor);
		atomic_fetch_add(&s->stale, 1);
	}
}

static void *stress_reader(void *arg)
{
	stress *s = arg;
	aside_loader ld = {stress_load, NULL, s};
	unsigned r = (unsigned)(uintptr_t)pthread_self();
	for (unsigned n = 0; !atomic_load(&s->stop); n++) {
		r = r * 1103515245 + 12345;
		int i = (int)((r >> 16) % 8);
		char key[4] = {'k', ':', (char)('0' + i), 0};
		int floor = atomic_load(&s->completed[i]);
		if (n % 2) { /* lent, no reference */
			struct lent l = {key, floor, false};
			int rc = aside_cache_read(s->f->cache, key, 3, &ld,
						  check_lent, &l, NULL);
			if (rc == ASIDE_NOT_FOUND && s->absences)
				absent_read(s, i, floor);
			else if (rc != ASIDE_OK && !atomic_load(&s->failing))
				atomic_fetch_add(&s->errors, 1);
			else if (rc == ASIDE_OK && l.stale)
				atomic_fetch_add(&s->stale, 1);
			continue;
		}
		aside_value *v;
		int rc = aside_cache_get(s->f->cache, key, 3, &ld, &v, NULL);
		if (rc == ASIDE_NOT_FOUND && s->absences) {
			absent_read(s, i, floor);
			continue;
		}
		if (rc != ASIDE_OK) {
			if (atomic_load(&s->failing))
				continue;
			fprintf(stderr, "get %s: %s\n", key,
				aside_status_name(rc));
			atomic_fetch_add(&s->errors, 1);
			continue;
		}
		size_t klen;
		const char *k = aside_value_key(v, &klen);
		if (klen != 3 || memcmp(k, key, 3) != 0 ||
		    version_of(v) < floor) {
			size_t dl;
			const char *d = aside_value_data(v, &dl);
			fprintf(stderr,
				"read %s after version %d completed, "
				"got %.*s\n",
				key, floor, (int)dl, d);
			atomic_fetch_add(&s->stale, 1);
		}
		aside_value_unref(v);
	}
	return NULL;
}

static void stress_run_with(const char *url, bool failing, bool absences)
{
	fixture *f = fixture_new(url);
	stress s;
	memset(&s, 0, sizeof(s));
	s.f = f;
	s.failing = failing;
	s.absences = absences;
	if (failing)
		assert_int_equal(aside_cache_set_ttl(f->cache, "k", 1, 0),
				 ASIDE_OK);
	pthread_t w[2], rd[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&rd[i], NULL, stress_reader, &s);
	for (int i = 0; i < 2; i++)
		pthread_create(&w[i], NULL, stress_writer, &s);
	for (int i = 0; i < 2; i++)
		pthread_join(w[i], NULL);
	atomic_store(&s.stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(rd[i], NULL);
	assert_int_equal(s.errors, 0);
	assert_int_equal(s.stale, 0);
	if (failing) /* how often the path ran: timing decides */
		printf("    %s: %llu expired copies served for failed "
		       "loads, %llu beside loads in progress\n",
		       url, (unsigned long long)metrics(f).stale_on_error,
		       (unsigned long long)metrics(f).stale_while_revalidate);
	atomic_store(&s.failing, 0);
	if (failing) /* past any breaker's wait: its probe now succeeds */
		atomic_fetch_add(&f->clock.now_us, 10 * 1000000);
	/* After the writers stop, the cache agrees with the source. */
	aside_loader ld = {stress_load, NULL, &s};
	for (int i = 0; i < 8; i++) {
		char key[4] = {'k', ':', (char)('0' + i), 0};
		aside_value *v;
		int rc = aside_cache_get(f->cache, key, 3, &ld, &v, NULL);
		if (absences && s.versions[i] % 2 == 0) {
			assert_int_equal(rc, ASIDE_NOT_FOUND);
			continue;
		}
		assert_int_equal(rc, ASIDE_OK);
		assert_int_equal(version_of(v), s.versions[i]);
		aside_value_unref(v);
	}
	if (absences)
		printf("    %s: %llu reads answered by a cached absence\n", url,
		       (unsigned long long)metrics(f).negative_hits);
	fixture_free(f);
}

static void stress_run(const char *url, bool failing)
{
	stress_run_with(url, failing, false);
}

static void readers_never_see_writes_undone(void **state)
{
	(void)state;
	stress_run("mem://?capacity=1000", false); /* no eviction */
	stress_run("mem://?capacity=4", false);	   /* constant eviction */
	/* loads failing, expired copies served in their place */
	stress_run("mem://?capacity=1000&stale_if_error_ms=60000", true);
	stress_run("mem://?capacity=4&stale_if_error_ms=60000", true);
	stress_run("mem://?capacity=1000&stale_if_error_ms=60000&breaker=2",
		   true);
	/* expired copies served to readers beside a load in progress */
	stress_run("mem://?capacity=1000&stale_while_revalidate_ms=60000",
		   true);
	stress_run("mem://?capacity=4&stale_while_revalidate_ms=60000&"
		   "stale_if_error_ms=30000",
		   true);
	/* keys deleted and created again, their absences cached */
	stress_run_with("mem://?capacity=1000&negative_ttl_ms=60000", false,
			true);
	stress_run_with("mem://?capacity=4&negative_ttl_ms=60000", false, true);
	stress_run_with("mem://?capacity=1000&negative_ttl_ms=60000&"
			"stale_while_revalidate_ms=60000&"
			"stale_if_error_ms=30000",
			true, true);
}

/* ---- TTL and namespaces ------------------------------------------------ */

static void ttl_expires_on_the_injected_clock(void **state)
{
	fixture *f = *state;
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", 1000, 0), ASIDE_OK);
	assert_int_equal(aside_cache_ttl_ms(f->cache, "k"), 1000);
	assert_int_equal(aside_cache_ttl_ms(f->cache, "other"), 3600 * 1000);
	assert_int_equal(get_version(f, "k:1"), 1);
	f->clock.now_us += 999 * 1000;
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 1);
	f->clock.now_us += 1000;
	f->src.version = 2;
	assert_int_equal(get_version(f, "k:1"), 2);
	assert_int_equal(f->src.loads, 2);
}

/* ttl_adapt=4: a key read often is kept up to 4 TTLs, a cold one one. */
static void ttl_adapts_to_how_often_a_key_is_read(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?ttl_adapt=4");
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", 1500, 0), ASIDE_OK);
	/* First loads: nothing counted yet, one TTL each. */
	assert_int_equal(get_version(f, "k:hot"), 1);
	assert_int_equal(get_version(f, "k:cold"), 1);
	for (int i = 0; i < 20; i++)
		assert_int_equal(get_version(f, "k:hot"), 1);
	f->clock.now_us += 1500 * 1000;
	assert_int_equal(get_version(f, "k:hot"), 1);
	assert_int_equal(get_version(f, "k:cold"), 1);
	assert_int_equal(f->src.loads, 4);
	/* Reloaded: the hot key's 20 reads (15 counted) earn it 4 TTLs, the
	 * cold key's one read 1 + 3/15 of a TTL (1.8 s). */
	f->clock.now_us += 1800 * 1000;
	assert_int_equal(get_version(f, "k:cold"), 1);
	assert_int_equal(f->src.loads, 5);
	assert_int_equal(get_version(f, "k:hot"), 1);
	assert_int_equal(f->src.loads, 5);
	f->clock.now_us += 4199 * 1000; /* 5.999 s after the reload */
	assert_int_equal(get_version(f, "k:hot"), 1);
	assert_int_equal(f->src.loads, 5);
	f->clock.now_us += 1000;
	assert_int_equal(get_version(f, "k:hot"), 1);
	assert_int_equal(f->src.loads, 6);
	fixture_free(f);
}

static void ttl_jitter_spreads_expiries(void **state)
{
	fixture *f = *state;
	assert_int_equal(aside_cache_set_ttl(f->cache, "j", 100000, 50),
			 ASIDE_OK);
	int64_t now = f->clock.now_us, lo = INT64_MAX, hi = 0;
	for (int i = 0; i < 200; i++) {
		char key[16];
		snprintf(key, sizeof(key), "j:%d", i);
		aside_value *v;
		assert_int_equal(aside_cache_get(f->cache, key, strlen(key),
						 &f->loader, &v, NULL),
				 ASIDE_OK);
		int64_t at = aside_value_expires_at_us(v);
		aside_value_unref(v);
		assert_true(at >= now + 50000 * 1000LL);
		assert_true(at <= now + 100000 * 1000LL);
		lo = at < lo ? at : lo;
		hi = at > hi ? at : hi;
	}
	/* 200 draws over 50 s: spread well beyond a second. */
	assert_true(hi - lo > 10 * 1000000LL);
}

static void default_ttl_is_one_hour(void **state)
{
	fixture *f = *state;
	assert_int_equal(aside_cache_ttl_ms(f->cache, "user"), 3600 * 1000);
	assert_int_equal(get_version(f, "user:1"), 1);
	f->clock.now_us += 3240LL * 1000000; /* 54 min: inside any jitter */
	assert_int_equal(get_version(f, "user:1"), 1);
	assert_int_equal(f->src.loads, 1);
	f->clock.now_us += 361LL * 1000000; /* past the hour */
	assert_int_equal(get_version(f, "user:1"), 1);
	assert_int_equal(f->src.loads, 2);
}

static void invalidate_removes_related_keys(void **state)
{
	fixture *f = *state;
	assert_int_equal(aside_cache_add_related(f->cache, "user", "users:all"),
			 ASIDE_OK);
	assert_int_equal(aside_cache_add_related(f->cache, "user", "users:all"),
			 ASIDE_OK);
	assert_int_equal(get_version(f, "users:all"), 1);
	assert_int_equal(get_version(f, "user:1"), 1);
	assert_int_equal(get_version(f, "user:2"), 1);
	assert_int_equal(aside_cache_invalidate(f->cache, "user:1", 6, NULL),
			 ASIDE_OK);
	aside_value *v;
	assert_int_equal(aside_cache_peek(f->cache, "users:all", 9, &v),
			 ASIDE_NOT_FOUND);
	assert_int_equal(aside_cache_peek(f->cache, "user:1", 6, &v),
			 ASIDE_NOT_FOUND);
	assert_int_equal(aside_cache_peek(f->cache, "user:2", 6, &v), ASIDE_OK);
	aside_value_unref(v);
	assert_int_equal(metrics(f).invalidations, 2);
}

/*
 * aside_cache_invalidate_late_many is each key's late invalidation, by
 * batches of 256: every key goes, a load in flight is not stored, and a
 * related key goes once for them all.
 */
static void late_many_invalidates_each_key_once(void **state)
{
	fixture *f = *state;
	enum { N = 300 }; /* two batches */
	assert_int_equal(aside_cache_add_related(f->cache, "user", "users:all"),
			 ASIDE_OK);
	static char names[N + 1][16];
	const char *keys[N];
	size_t klens[N];
	for (int i = 0; i <= N; i++) {
		snprintf(names[i], sizeof(names[i]), "user:%d", i + 1);
		assert_int_equal(get_version(f, names[i]), 1);
	}
	for (int i = 0; i < N; i++) {
		keys[i] = names[i];
		klens[i] = strlen(names[i]);
	}
	assert_int_equal(get_version(f, "users:all"), 1);
	/* The last key, in the second batch, has a load in flight that has
	 * read version 1. */
	assert_int_equal(
	    aside_cache_invalidate(f->cache, keys[N - 1], klens[N - 1], NULL),
	    ASIDE_OK);
	source_hold_next(&f->src);
	pthread_t old;
	reader r1 = {f, keys[N - 1], 0, {0}};
	pthread_create(&old, NULL, read_thread, &r1);
	source_wait_held(&f->src);
	uint64_t invals = metrics(f).invalidations;

	f->src.version = 2;
	assert_int_equal(
	    aside_cache_invalidate_late_many(f->cache, keys, klens, N, NULL),
	    ASIDE_OK);
	source_release(&f->src);
	pthread_join(old, NULL);
	assert_true(metrics(f).fills_voided >= 1);
	assert_int_equal(metrics(f).invalidations - invals, N + 1);
	aside_value *v;
	for (int i = 0; i < N - 1; i++)
		assert_int_equal(
		    aside_cache_peek(f->cache, keys[i], klens[i], &v),
		    ASIDE_NOT_FOUND);
	assert_int_equal(aside_cache_peek(f->cache, "users:all", 9, &v),
			 ASIDE_NOT_FOUND);
	/* Not named, so kept. */
	assert_int_equal(
	    aside_cache_peek(f->cache, names[N], strlen(names[N]), &v),
	    ASIDE_OK);
	aside_value_unref(v);
	/* The load in flight stored nothing old. */
	assert_int_equal(get_version(f, keys[N - 1]), 2);
	assert_int_equal(get_version(f, keys[0]), 2);

	/* Bad arguments change nothing. */
	size_t zero = 0;
	assert_int_equal(
	    aside_cache_invalidate_late_many(f->cache, keys, &zero, 1, NULL),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_invalidate_late_many(NULL, keys, klens, 1, NULL),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_invalidate_late_many(f->cache, NULL, NULL, 0, NULL),
	    ASIDE_OK);
	assert_int_equal(get_version(f, keys[0]), 2);
}

/* ---- corrupt entries --------------------------------------------------- */

static void undecodable_entry_is_dropped_and_reloaded(void **state)
{
	fixture *f = *state;
	f->loader.decode = src_decode;
	f->src.corrupt = 1; /* values come without a decoded form */
	assert_int_equal(get_version(f, "k:1"), 1);
	/* The hit finds no decoded form, decode refuses the bytes. */
	f->src.corrupt = 0;
	assert_int_equal(get_version(f, "k:1"), 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.corrupt, 1);
	assert_int_equal(f->src.loads, 2);
	assert_int_equal(m.hits, 0);
}

/* ---- metrics ----------------------------------------------------------- */

/* ---- stale copies for a load that fails (stale_if_error_ms) ------------ */

/* A key read once with a TTL of 1 s, in a cache that keeps stale copies
 * 10 s; the clock then 1 s past the expiry. */
static fixture *stale_fixture(const char *url)
{
	fixture *f = fixture_new(url);
	assert_int_equal(aside_cache_set_ttl(f->cache, "k", 1000, 0), ASIDE_OK);
	assert_int_equal(get_version(f, "k:1"), 1);
	f->clock.now_us += 2000 * 1000;
	return f;
}

static void stale_copy_served_when_the_load_fails(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?stale_if_error_ms=10000");
	atomic_store(&f->src.fail, ASIDE_EDB);
	/* The load fails: the expired copy, not the error. */
	assert_int_equal(get_version(f, "k:1"), 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.stale_on_error, 1);
	assert_int_equal(m.load_errors, 1);
	assert_int_equal(m.misses, 2); /* the first read's, and this one */
	assert_int_equal(f->src.loads, 2);
	/* Each read tries the source again, and the copy stays expired: the
	 * first load that succeeds replaces it. */
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 3);
	atomic_store(&f->src.fail, 0);
	f->src.version = 2;
	assert_int_equal(get_version(f, "k:1"), 2);
	assert_int_equal(get_version(f, "k:1"), 2);
	assert_int_equal(f->src.loads, 4);
	assert_int_equal(metrics(f).stale_on_error, 2);
	/* A key never read has no copy: the error. */
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:2"), ASIDE_EDB);
	fixture_free(f);
}

static void stale_copy_has_a_bounded_age(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?stale_if_error_ms=10000");
	atomic_store(&f->src.fail, ASIDE_EDB);
	/* 1 s past expiry above; 9.999 s is the last moment it is kept. */
	f->clock.now_us += 8999 * 1000;
	assert_int_equal(get_version(f, "k:1"), 1);
	f->clock.now_us += 1000;
	assert_int_equal(get_version(f, "k:1"), ASIDE_EDB);
	assert_int_equal(metrics(f).stale_on_error, 1);
	fixture_free(f);
}

static void stale_copy_never_outlives_a_write(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?stale_if_error_ms=10000");
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:1"), ASIDE_EDB);
	/* A row the source no longer has is not found, whatever is kept. */
	atomic_store(&f->src.fail, 0);
	assert_int_equal(get_version(f, "k:1"), 1);
	f->clock.now_us += 2000 * 1000;
	atomic_store(&f->src.not_found, 1);
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(metrics(f).stale_on_error, 0);
	fixture_free(f);
}

static void stale_copy_off_by_default(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://");
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:1"), ASIDE_EDB);
	assert_int_equal(metrics(f).stale_on_error, 0);
	fixture_free(f);
}

/* r: a reader of k:1 in a thread of its own, which holds the next load;
 * returns when that load is held. */
static void lead_held(fixture *f, pthread_t *th, reader *r)
{
	source_hold_next(&f->src);
	*r = (reader){f, "k:1", 0, {0}};
	pthread_create(th, NULL, read_thread, r);
	source_wait_held(&f->src);
}

/* A load that hangs: its waiters give up after wait_ms and take the copy. */
static void stale_copy_served_when_the_load_hangs(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?stale_if_error_ms=10000&wait_ms=50");
	f->src.version = 2; /* what the hanging load reads */
	pthread_t leader;
	reader r1;
	lead_held(f, &leader, &r1);
	reader r2 = {f, "k:1", 0, {0}};
	read_thread(&r2);
	assert_int_equal(r2.result, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.wait_timeouts, 1);
	assert_int_equal(m.stale_on_error, 1);
	source_release(&f->src);
	pthread_join(leader, NULL);
	assert_int_equal(r1.result, 2);
	assert_int_equal(get_version(f, "k:1"), 2);
	fixture_free(f);
}

/* ---- expired copies while another loads (stale_while_revalidate_ms) --- */

static void swr_serves_the_copy_while_one_loads(void **state)
{
	(void)state;
	/* Expired 1 s ago; copies served up to 10 s past expiry. */
	fixture *f = stale_fixture(
	    "mem://?stale_while_revalidate_ms=10000&wait_ms=2000");
	f->src.version = 2;
	pthread_t th;
	reader leader;
	lead_held(f, &th, &leader);
	/* Five readers come while the load runs: the expired copy each,
	 * at once, and the source asked once. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(get_version(f, "k:1"), 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.stale_while_revalidate, 5);
	assert_int_equal(m.waiting, 0);
	assert_int_equal(m.shared_loads, 0);
	assert_int_equal(m.wait_timeouts, 0);
	/* A key no one is loading: a plain miss, no copy involved. */
	assert_int_equal(get_version(f, "k:2"), 2);
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(leader.result, 2);
	/* The load's result replaces the copy. */
	assert_int_equal(get_version(f, "k:1"), 2);
	m = metrics(f);
	assert_int_equal(f->src.loads,
			 3); /* the fixture's, the leader's, k:2 */
	assert_int_equal(m.loads, 3);
	/* The five copies served are hits of the L1, as is the last read. */
	assert_int_equal(m.hits, 6);
	assert_int_equal(m.tier_hits[0], 6);
	assert_int_equal(m.misses, 3); /* the fixture's read, the leader, k:2 */
	assert_int_equal(m.loads + m.shared_loads + m.wait_timeouts, m.misses);
	assert_int_equal(m.stale_on_error, 0);
	char buf[16384];
	assert_true(aside_metrics_prometheus(&m, "aside", buf, sizeof(buf)) <
		    sizeof(buf));
	assert_non_null(
	    strstr(buf, "\naside_stale_while_revalidate_total 5\n"));
	fixture_free(f);
}

/* A copy expired longer ago than the bound: the reader waits, as without. */
static void swr_copy_has_a_bounded_age(void **state)
{
	(void)state;
	fixture *f =
	    stale_fixture("mem://?stale_while_revalidate_ms=10000&wait_ms=50");
	f->clock.now_us += 8999 * 1000; /* 9.999 s past expiry: still served */
	f->src.version = 2;
	pthread_t th;
	reader leader;
	lead_held(f, &th, &leader);
	assert_int_equal(get_version(f, "k:1"), 1);
	f->clock.now_us += 1000; /* 10 s: no longer */
	assert_int_equal(get_version(f, "k:1"), ASIDE_ETIMEDOUT);
	aside_metrics m = metrics(f);
	assert_int_equal(m.stale_while_revalidate, 1);
	assert_int_equal(m.wait_timeouts, 1);
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(leader.result, 2);
	fixture_free(f);
}

/* A write takes the copy with it: readers after it wait for the load. */
static void swr_copy_never_outlives_a_write(void **state)
{
	(void)state;
	fixture *f =
	    stale_fixture("mem://?stale_while_revalidate_ms=10000&wait_ms=50");
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	f->src.version = 2;
	pthread_t th;
	reader leader;
	lead_held(f, &th, &leader);
	assert_int_equal(get_version(f, "k:1"), ASIDE_ETIMEDOUT);
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(leader.result, 2);
	/* A write during a load: readers before it got the copy, readers
	 * after it neither the copy nor the load's result. */
	f->clock.now_us += 2000 * 1000; /* version 2 expired 1 s ago */
	lead_held(f, &th, &leader);
	assert_int_equal(get_version(f, "k:1"), 2); /* served the copy */
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	f->src.version = 3;
	assert_int_equal(get_version(f, "k:1"), 3); /* its own load */
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(metrics(f).stale_while_revalidate, 1);
	fixture_free(f);
}

/* Each bound keeps to its own use: a copy old enough for the one and not
 * the other is served for that one only. */
static void swr_and_stale_if_error_bounds_apart(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?stale_while_revalidate_ms=10000&"
				   "stale_if_error_ms=1500&wait_ms=2000");
	/* 1 s past expiry: a failed load gets the copy. */
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(metrics(f).stale_on_error, 1);
	/* 2 s past: beyond stale_if_error_ms, the error; but a reader
	 * beside a load in progress still gets the copy. */
	f->clock.now_us += 1000 * 1000;
	assert_int_equal(get_version(f, "k:1"), ASIDE_EDB);
	atomic_store(&f->src.fail, 0);
	f->src.version = 2;
	pthread_t th;
	reader leader;
	lead_held(f, &th, &leader);
	assert_int_equal(get_version(f, "k:1"), 1);
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(leader.result, 2);
	aside_metrics m = metrics(f);
	assert_int_equal(m.stale_on_error, 1);
	assert_int_equal(m.stale_while_revalidate, 1);
	fixture_free(f);
}

/* ---- cached absences (negative_ttl_ms) -------------------------------- */

static void count_call(void *arg, const aside_value *v)
{
	(void)v;
	(*(int *)arg)++;
}

static void absence_cached_for_negative_ttl(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?negative_ttl_ms=5000&jitter_pct=0");
	f->loader.decode = src_decode; /* an absence is never decoded */
	f->src.not_found = 1;
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 1);
	/* Read again, both ways: NOT_FOUND from the L1, no load, and the
	 * callback never called. */
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	int calls = 0;
	assert_int_equal(aside_cache_read(f->cache, "k:1", 3, &f->loader,
					  count_call, &calls, NULL),
			 ASIDE_NOT_FOUND);
	aside_loader plain = {src_load, NULL, &f->src}; /* the lent path */
	assert_int_equal(aside_cache_read(f->cache, "k:1", 3, &plain,
					  count_call, &calls, NULL),
			 ASIDE_NOT_FOUND);
	assert_int_equal(calls, 0);
	aside_value *v = (aside_value *)1;
	assert_int_equal(aside_cache_peek(f->cache, "k:1", 3, &v),
			 ASIDE_NOT_FOUND);
	assert_null(v);
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.loads, 1);
	assert_int_equal(m.not_found, 1);
	assert_int_equal(m.negative_hits, 4);
	assert_int_equal(m.hits, 4);
	assert_int_equal(m.tier_hits[0], 4);
	assert_int_equal(m.misses, 1);
	assert_int_equal(m.corrupt, 0);
	assert_int_equal(m.entries, 1);
	char buf[16384];
	assert_true(aside_metrics_prometheus(&m, "aside", buf, sizeof(buf)) <
		    sizeof(buf));
	assert_non_null(strstr(buf, "\naside_negative_hits_total 4\n"));
	/* Until negative_ttl_ms has passed, not after. */
	f->clock.now_us += 4999 * 1000;
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 1);
	f->clock.now_us += 1000;
	f->src.not_found = 0;
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 2);
	fixture_free(f);
}

/* A write (a create, say) ends the absence at once. */
static void absence_gone_after_a_write(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?negative_ttl_ms=60000");
	f->src.not_found = 1;
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	f->src.not_found = 0;
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK);
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 2);
	assert_int_equal(metrics(f).negative_hits, 0);
	fixture_free(f);
}

/* A load that found nothing before a write never stores its absence. */
static void absence_read_before_a_write_never_stored(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?negative_ttl_ms=60000");
	f->src.not_found = 1;
	pthread_t th;
	reader r1;
	lead_held(f, &th, &r1); /* it has found nothing */
	f->src.not_found = 0;	/* the row is created ... */
	assert_int_equal(aside_cache_invalidate(f->cache, "k:1", 3, NULL),
			 ASIDE_OK); /* ... and its key invalidated */
	source_release(&f->src);
	pthread_join(th, NULL);
	assert_int_equal(r1.result, -100 - ASIDE_NOT_FOUND);
	aside_metrics m = metrics(f);
	assert_int_equal(m.fills_voided, 1);
	assert_int_equal(m.entries, 0);
	assert_int_equal(get_version(f, "k:1"), 1);
	fixture_free(f);
}

/* Concurrent misses of a key that does not exist: one load, and every
 * reader NOT_FOUND (never the absence as an empty value). */
static void absence_is_shared_by_one_load(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?negative_ttl_ms=60000");
	f->src.not_found = 1;
	enum { N = 8 };
	int results[N];
	read_behind_a_held_load(f, "k:9", N, results);
	for (int i = 0; i < N; i++)
		assert_int_equal(results[i], -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.shared_loads, N - 1);
	assert_int_equal(m.negative_hits, 0);
	assert_int_equal(get_version(f, "k:9"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 1);
	fixture_free(f);
}

/* An expired absence is a copy like any other: with stale_if_error_ms, a
 * read whose load fails is answered NOT_FOUND from it, not the error. */
static void absence_kept_as_a_stale_copy(void **state)
{
	(void)state;
	fixture *f = fixture_new(
	    "mem://?negative_ttl_ms=1000&jitter_pct=0&stale_if_error_ms=10000");
	f->src.not_found = 1;
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	f->clock.now_us += 2000 * 1000;
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:1"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(metrics(f).stale_on_error, 1);
	/* A key never read: the error. */
	assert_int_equal(get_version(f, "k:2"), ASIDE_EDB);
	fixture_free(f);
}

/* 500 keys read four times, then a scan of 20,000 other keys (20 times the
 * L1), absent or not; how many of the 500 were evicted. */
static unsigned hot_keys_lost_to_a_scan(bool absent)
{
	fixture *f = fixture_new("mem://?capacity=1000&negative_ttl_ms=60000");
	char key[32];
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < 500; i++) {
			snprintf(key, sizeof(key), "k:%d", i);
			assert_int_equal(get_version(f, key), 1);
		}
	f->src.not_found = absent;
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "k:scan%d", i);
		assert_int_equal(get_version(f, key),
				 absent ? -100 - ASIDE_NOT_FOUND : 1);
	}
	f->src.not_found = 0;
	unsigned loads = f->src.loads;
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "k:%d", i);
		assert_int_equal(get_version(f, key), 1);
	}
	loads = f->src.loads - loads;
	fixture_free(f);
	return loads;
}

/* A scan of ids that do not exist fills the L1 with absences, which the
 * admission filter weighs as it weighs any new entry: the keys read often
 * stay (an LRU would lose all 500). */
static void absences_do_not_flush_the_hot_keys(void **state)
{
	(void)state;
	unsigned absent = hot_keys_lost_to_a_scan(true);
	unsigned present = hot_keys_lost_to_a_scan(false);
	printf("    of 500 hot keys, a scan of 20,000 absent ids evicted %u, "
	       "of 20,000 rows %u\n",
	       absent, present);
	assert_true(absent <= 100);
	assert_true(present <= 100);
}

static void negative_ttl_is_checked(void **state)
{
	(void)state;
	aside_cache *c = NULL;
	aside_error err;
	assert_int_equal(aside_cache_open("mem://?negative_ttl_ms=0", &c, &err),
			 ASIDE_EURL);
	assert_non_null(strstr(err.message, "negative_ttl_ms"));
	assert_int_equal(
	    aside_cache_open("mem://?negative_ttl_ms=1x", &c, &err),
	    ASIDE_EURL);
	assert_null(c);
}

/* ---- the loader's breaker (breaker=N) ---------------------------------- */

static void breaker_opens_probes_and_closes(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?breaker=3");
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:1"), ASIDE_EDB);
	assert_int_equal(get_version(f, "k:2"), ASIDE_EDB);
	assert_int_equal(metrics(f).breaker_open, 0);
	assert_int_equal(get_version(f, "k:3"), ASIDE_EDB);
	assert_int_equal(f->src.loads, 3);
	/* Open: refused, the source not asked. */
	aside_value *v = NULL;
	aside_error err;
	assert_int_equal(
	    aside_cache_get(f->cache, "k:4", 3, &f->loader, &v, &err),
	    ASIDE_EUNAVAILABLE);
	assert_non_null(strstr(err.message, "3 loads in a row"));
	assert_int_equal(f->src.loads, 3);
	aside_metrics m = metrics(f);
	assert_int_equal(m.breaker_open, 1);
	assert_int_equal(m.breaker_refusals, 1);
	assert_int_equal(m.misses, 4);
	/* 100 ms on: one probe, which fails; then 200 ms closed to loads. */
	f->clock.now_us += 100 * 1000;
	assert_int_equal(get_version(f, "k:5"), ASIDE_EDB);
	assert_int_equal(f->src.loads, 4);
	assert_int_equal(get_version(f, "k:5"), ASIDE_EUNAVAILABLE);
	f->clock.now_us += 199 * 1000;
	assert_int_equal(get_version(f, "k:5"), ASIDE_EUNAVAILABLE);
	assert_int_equal(f->src.loads, 4);
	/* The source is back: the next probe closes it. */
	f->clock.now_us += 1000;
	atomic_store(&f->src.fail, 0);
	assert_int_equal(get_version(f, "k:5"), 1);
	assert_int_equal(get_version(f, "k:6"), 1);
	assert_int_equal(f->src.loads, 6);
	assert_int_equal(metrics(f).breaker_open, 0);
	/* NOT_FOUND is an answer, not a failure. */
	atomic_store(&f->src.not_found, 1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(get_version(f, "k:7"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(metrics(f).breaker_open, 0);
	fixture_free(f);
}

/* While it refuses loads, expired copies are served (stale_if_error_ms). */
static void breaker_serves_expired_copies(void **state)
{
	(void)state;
	fixture *f = stale_fixture("mem://?breaker=1&stale_if_error_ms=60000");
	atomic_store(&f->src.fail, ASIDE_EDB);
	assert_int_equal(get_version(f, "k:2"), ASIDE_EDB); /* opens it */
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(get_version(f, "k:1"), 1);
	assert_int_equal(f->src.loads, 2); /* the first read's, and k:2's */
	aside_metrics m = metrics(f);
	assert_int_equal(m.breaker_refusals, 2);
	assert_int_equal(m.stale_on_error, 2);
	fixture_free(f);
}

/* ---- the Bloom gate ---------------------------------------------------- */

/* A fill that adds g:0 .. g:n-1, counting its runs; or fails. */
struct gate_src {
	int n;
	_Atomic int fills, fail; /* the gate's thread runs later fills */
};

static int gate_fill(void *arg, aside_cache *c, aside_error *err)
{
	struct gate_src *g = arg;
	g->fills++;
	int fail = atomic_load(&g->fail);
	if (fail) {
		snprintf(err->message, sizeof(err->message), "scan failed");
		return fail;
	}
	for (int i = 0; i < g->n; i++) {
		char key[32];
		int n = snprintf(key, sizeof(key), "g:%d", i);
		if (aside_cache_gate_add(c, key, (size_t)n) != ASIDE_OK)
			return ASIDE_EINTERNAL;
	}
	return ASIDE_OK;
}

static void gate_turns_away_keys_it_was_never_told_of(void **state)
{
	fixture *f = *state;
	struct gate_src g = {.n = 3};
	aside_error err;
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 0, gate_fill, &g, &err),
	    ASIDE_OK);
	assert_int_equal(g.fills, 1);
	assert_int_equal(get_version(f, "g:1"), 1);
	assert_int_equal(f->src.loads, 1);
	/* No load for a key the gate does not know. */
	assert_int_equal(get_version(f, "g:7"), -100 - ASIDE_NOT_FOUND);
	assert_int_equal(f->src.loads, 1);
	aside_metrics m = metrics(f);
	assert_int_equal(m.gate_rejects, 1);
	assert_int_equal(m.misses, 2);
	assert_int_equal(m.gate_fills, 1);
	assert_int_equal(m.gate_armed, 1);
	assert_true(m.gate_bytes >= 1000 * 10 / 8);
	/* Other namespaces are not gated; nor a bare "g". */
	assert_int_equal(get_version(f, "h:7"), 1);
	assert_int_equal(get_version(f, "g"), 1);
	assert_int_equal(f->src.loads, 3);
	/* A write invalidates the key: it gets through from then on. */
	assert_int_equal(aside_cache_invalidate(f->cache, "g:7", 3, NULL),
			 ASIDE_OK);
	assert_int_equal(get_version(f, "g:7"), 1);
	assert_int_equal(f->src.loads, 4);
	/* So does a key added by hand. */
	assert_int_equal(aside_cache_gate_add(f->cache, "g:8", 3), ASIDE_OK);
	assert_int_equal(get_version(f, "g:8"), 1);
	assert_int_equal(aside_cache_gate_add(f->cache, "h:8", 3),
			 ASIDE_EINVAL);
	/* One gate a cache. */
	assert_int_equal(
	    aside_cache_gate(f->cache, "h", 1000, 0, gate_fill, &g, &err),
	    ASIDE_EINVAL);
	assert_int_equal(metrics(f).gate_rejects, 1);
}

/* About 1% of absent keys get past a gate holding what it was sized for. */
static void gate_lets_few_absent_keys_through(void **state)
{
	fixture *f = *state;
	struct gate_src g = {.n = 20000};
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 20000, 0, gate_fill, &g, NULL),
	    ASIDE_OK);
	atomic_store(&f->src.not_found, 1);
	int through = 0;
	for (int i = 0; i < 20000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "g:%d", 1000000 + i);
		unsigned before = f->src.loads;
		assert_int_equal(get_version(f, key), -100 - ASIDE_NOT_FOUND);
		through += f->src.loads != before;
	}
	printf("    absent keys let through: %d of 20000\n", through);
	assert_true(through < 20000 * 2 / 100);
	assert_int_equal(metrics(f).gate_rejects, 20000 - (uint64_t)through);
}

/* Reads of g:from .. g:from+n-1 that the gate let through to a load. */
static int gate_through(fixture *f, int from, int n)
{
	int through = 0;
	for (int i = 0; i < n; i++) {
		char key[32];
		snprintf(key, sizeof(key), "g:%d", from + i);
		unsigned before = f->src.loads;
		assert_int_equal(get_version(f, key), -100 - ASIDE_NOT_FOUND);
		through += f->src.loads != before;
	}
	return through;
}

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/*
 * Runs a fill and waits for it: reads (which ask the gate's thread for a
 * fill once one is due) until a fill has ended.  None runs on return.
 */
static void gate_refill(fixture *f)
{
	uint64_t before = metrics(f).gate_fills;
	pause_ms(5);
	for (int i = 0; i < 5000 && metrics(f).gate_fills == before; i++) {
		char key[32];
		snprintf(key, sizeof(key), "g:%d", 5000000 + i);
		(void)get_version(f, key);
		pause_ms(1);
	}
	assert_true(metrics(f).gate_fills > before);
}

/* Invalidates g:from .. g:to-1, as writes that create or delete do. */
static void gate_write(fixture *f, int from, int to)
{
	for (int i = from; i < to; i++) {
		char key[32];
		int n = snprintf(key, sizeof(key), "g:%d", i);
		aside_cache_invalidate(f->cache, key, (size_t)n, NULL);
	}
}

/*
 * A fill that fails: the caller is told why, the gate turns no key away
 * until a fill succeeds (tried again about a second later), and that one
 * arms it.  A refill that fails later keeps the filter the gate has, with
 * the keys written meanwhile: nothing is turned away that exists.
 */
static void gate_whose_fill_fails_lets_everything_through(void **state)
{
	fixture *f = *state;
	struct gate_src g = {.n = 3, .fail = ASIDE_EDB};
	aside_error err;
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 1, gate_fill, &g, &err),
	    ASIDE_EDB);
	assert_string_equal(err.message, "scan failed");
	atomic_store(&f->src.not_found, 1);
	assert_int_equal(gate_through(f, 100, 50), 50);
	aside_metrics m = metrics(f);
	assert_int_equal(m.gate_rejects, 0);
	assert_int_equal(m.gate_armed, 0);
	assert_int_equal(atomic_load(&g.fills), 1); /* not again at once */
	atomic_store(&g.fail, 0);
	gate_refill(f);
	assert_int_equal(metrics(f).gate_armed, 1);
	assert_int_equal(gate_through(f, 100, 50), 0);

	atomic_store(&g.fail, ASIDE_EDB);
	int fills = atomic_load(&g.fills);
	gate_write(f, 500, 501); /* a key created */
	gate_refill(f);
	assert_true(atomic_load(&g.fills) > fills);
	m = metrics(f);
	assert_int_equal(m.gate_armed, 1);
	assert_int_equal(gate_through(f, 100, 50), 0);
	assert_int_equal(gate_through(f, 500, 1), 1);
	assert_int_equal(gate_through(f, 0, 3), 3);
}

/*
 * A gate whose keys outgrow its filter (twice what it was sized for, by
 * its count of adds) asks for a fill, refill_ms or not, and the fill
 * builds a filter sized for them: absent keys are turned away again.
 */
static void gate_grows_when_its_keys_outgrow_it(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?capacity=64");
	struct gate_src g = {.n = 1000};
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 0, gate_fill, &g, NULL),
	    ASIDE_OK);
	size_t small = metrics(f).gate_bytes;
	g.n = 21000; /* 20,000 rows created, each then invalidated */
	gate_write(f, 1000, 21000);
	atomic_store(&f->src.not_found, 1);
	gate_refill(f);
	int through = gate_through(f, 1000000, 2000);
	printf("    absent keys let through at 21x the keys expected: %d of "
	       "2000\n",
	       through);
	assert_true(through < 2000 * 3 / 100);
	assert_int_equal(metrics(f).gate_fills, 2);
	assert_true(metrics(f).gate_bytes >= (size_t)21000 * 10 / 8);
	assert_true(metrics(f).gate_bytes > small);
	/* Every key that exists still gets through. */
	atomic_store(&f->src.not_found, 0);
	for (int i = 0; i < 21000; i += 7) {
		char key[32];
		snprintf(key, sizeof(key), "g:%d", i);
		assert_true(get_version(f, key) >= 0);
	}
	fixture_free(f);
}

/*
 * Each fill builds a new filter from what exists: keys deleted since the
 * last fill are turned away after the next, and the filter shrinks back
 * to its first size (sized for what the filter before held: two fills).
 */
static void gate_forgets_deleted_keys_at_each_fill(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?capacity=64");
	struct gate_src g = {.n = 21000};
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 1, gate_fill, &g, NULL),
	    ASIDE_OK);
	size_t first = metrics(f).gate_bytes;
	atomic_store(&f->src.not_found, 1);
	gate_refill(f); /* sized for the 21,000 keys */
	assert_true(metrics(f).gate_bytes > first);
	g.n = 1000; /* 20,000 rows deleted, each then invalidated */
	gate_write(f, 1000, 21000);
	gate_refill(f);
	int through = gate_through(f, 1000, 20000);
	printf("    deleted keys let through after a fill: %d of 20000\n",
	       through);
	assert_true(through < 20000 * 3 / 100);
	gate_refill(f);
	assert_int_equal(metrics(f).gate_bytes, first);
	fixture_free(f);
}

static void gate_arguments_are_checked(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://");
	struct gate_src g = {0};
	aside_error err;
	assert_int_equal(
	    aside_cache_gate(f->cache, "a:b", 1000, 0, gate_fill, &g, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_gate(f->cache, "", 1000, 0, gate_fill, &g, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 0, 0, gate_fill, &g, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 0, NULL, &g, &err),
	    ASIDE_EINVAL);
	assert_int_equal(aside_cache_gate_add(f->cache, "g:1", 3),
			 ASIDE_EINVAL); /* no gate */
	fixture_free(f);
	/* Redis alone hears no other process's writes: no gate. */
	f = fixture_new("redis://127.0.0.1:1");
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 1000, 0, gate_fill, &g, &err),
	    ASIDE_EINVAL);
	assert_non_null(strstr(err.message, "l1=N"));
	fixture_free(f);
}

/*
 * Writers create keys (invalidate them, as a write does) while readers
 * read keys whose create has returned: the gate never turns one away.
 */
struct gate_stress {
	fixture *f;
	_Atomic int created; /* g:0 .. g:created-1 exist */
	_Atomic int stop, turned_away, reads, fills;
};

static int gate_stress_load(void *arg, const char *key, size_t klen,
			    aside_value **out, aside_error *err)
{
	(void)err;
	struct gate_stress *s = arg;
	char id[16] = {0}; /* the key is not NUL-terminated */
	memcpy(id, key + 2,
	       klen - 2 < sizeof(id) - 1 ? klen - 2 : sizeof(id) - 1);
	if (atoi(id) >= atomic_load(&s->created))
		return ASIDE_NOT_FOUND;
	return aside_value_new(key, klen, "x", 1, out);
}

static void *gate_creator(void *arg)
{
	struct gate_stress *s = arg;
	for (int i = 0; i < 4000; i++) {
		char key[32];
		int n = snprintf(key, sizeof(key), "g:%d", i);
		atomic_store(&s->created, i + 1); /* the row, then the key */
		aside_cache_invalidate(s->f->cache, key, (size_t)n, NULL);
		sched_yield(); /* readers in between */
		/* And for certain: every 64 creates, up to a second until the
		 * readers have read as many keys as were created.  On a busy
		 * machine the writer once made all 4,000 while the readers
		 * read 6 keys, and the gate was filled only once. */
		for (int k = 0;
		     i % 64 == 63 && k < 1000 && atomic_load(&s->reads) < i;
		     k++)
			usleep(1000);
	}
	return NULL;
}

static void *gate_reader(void *arg)
{
	struct gate_stress *s = arg;
	aside_loader ld = {gate_stress_load, NULL, s};
	unsigned r = (unsigned)(uintptr_t)pthread_self();
	while (!atomic_load(&s->stop)) {
		int done =
		    atomic_load(&s->created) - 1; /* its create returned
						     once the next began */
		if (done <= 0)
			continue;
		r = r * 1103515245 + 12345;
		char key[32];
		int n = snprintf(key, sizeof(key), "g:%d",
				 (int)((r >> 8) % (unsigned)done));
		aside_value *v;
		int rc =
		    aside_cache_get(s->f->cache, key, (size_t)n, &ld, &v, NULL);
		if (rc == ASIDE_OK)
			aside_value_unref(v);
		else
			atomic_fetch_add(&s->turned_away, 1);
		atomic_fetch_add(&s->reads, 1);
	}
	return NULL;
}

/* The writer and three readers, until the writer has created them all. */
static void gate_stress_run(struct gate_stress *s)
{
	pthread_t w, rd[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&rd[i], NULL, gate_reader, s);
	pthread_create(&w, NULL, gate_creator, s);
	pthread_join(w, NULL);
	atomic_store(&s->stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(rd[i], NULL);
}

static void gate_never_turns_away_a_created_key(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?capacity=64");
	struct gate_stress s = {.f = f};
	struct gate_src none = {0};
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 4000, 0, gate_fill, &none, NULL),
	    ASIDE_OK);
	gate_stress_run(&s);
	printf("    %d reads of created keys\n", atomic_load(&s.reads));
	assert_int_equal(atomic_load(&s.turned_away), 0);
	fixture_free(f);
}

/*
 * The same while fills run all along (refill_ms=1), each building a new
 * filter from what exists when it begins, grown from 100 keys expected:
 * a key created during a fill, which its scan may not see, must still be
 * in the filter that fill puts in place.
 */
static int gate_stress_fill(void *arg, aside_cache *c, aside_error *err)
{
	(void)err;
	struct gate_stress *s = arg;
	int n = atomic_load(&s->created); /* the scan's snapshot */
	for (int i = 0; i < n; i++) {
		char key[32];
		int len = snprintf(key, sizeof(key), "g:%d", i);
		if (aside_cache_gate_add(c, key, (size_t)len) != ASIDE_OK)
			return ASIDE_EINTERNAL;
		if (i % 64 == 0)
			sched_yield(); /* writes land during the scan */
	}
	atomic_fetch_add(&s->fills, 1);
	return ASIDE_OK;
}

static void gate_refilled_never_turns_away_a_created_key(void **state)
{
	(void)state;
	fixture *f = fixture_new("mem://?capacity=64");
	struct gate_stress s = {.f = f};
	assert_int_equal(
	    aside_cache_gate(f->cache, "g", 100, 1, gate_stress_fill, &s, NULL),
	    ASIDE_OK);
	gate_stress_run(&s);
	printf("    %d reads of created keys, %d fills\n",
	       atomic_load(&s.reads), atomic_load(&s.fills));
	assert_int_equal(atomic_load(&s.turned_away), 0);
	assert_true(atomic_load(&s.fills) > 1);
	/* A fill begun after the last create, sized for the 4,000 keys the
	 * filter holds (the first waits out one the readers asked for). */
	gate_refill(f);
	gate_refill(f);
	assert_true(metrics(f).gate_bytes >= (size_t)4000 * 10 / 8);
	fixture_free(f);
}

static void histogram_quantiles_are_close(void **state)
{
	(void)state;
	uint64_t h[ASIDE_HIST_BUCKETS] = {0};
	for (uint64_t us = 1; us <= 10000; us++)
		h[aside_hist_bucket(us)]++;
	double p50 = aside_hist_quantile(h, 0.5),
	       p99 = aside_hist_quantile(h, 0.99);
	assert_true(p50 > 5000 * 0.875 && p50 < 5000 * 1.125);
	assert_true(p99 > 9900 * 0.875 && p99 < 9900 * 1.125);
	for (int b = 1; b < ASIDE_HIST_BUCKETS; b++) {
		assert_true(aside_hist_bucket_low_us(b) >
			    aside_hist_bucket_low_us(b - 1));
		assert_int_equal(aside_hist_bucket(aside_hist_bucket_low_us(b)),
				 b);
	}
}

static void prometheus_text_has_the_counters(void **state)
{
	fixture *f = *state;
	get_version(f, "k:1");
	get_version(f, "k:1");
	get_version(f, "k:2");
	aside_metrics m = metrics(f);
	size_t need = aside_metrics_prometheus(&m, "aside", NULL, 0);
	char *buf = malloc(need + 1);
	assert_int_equal(aside_metrics_prometheus(&m, "aside", buf, need + 1),
			 need);
	assert_int_equal(strlen(buf), need);
	assert_non_null(strstr(buf, "aside_cache_hits_total{tier=\"1\","
				    "name=\"mem\"} 1\n"));
	assert_non_null(strstr(buf, "aside_cache_misses_total 2\n"));
	assert_non_null(strstr(buf, "aside_cache_tier_misses_total{tier=\"1\","
				    "name=\"mem\"} 2\n"));
	/* mem:// has no breaker: nothing skipped */
	assert_non_null(strstr(buf, "aside_cache_tier_skipped_total{tier=\"1\","
				    "name=\"mem\"} 0\n"));
	assert_non_null(strstr(buf, "aside_db_loads_total 2\n"));
	assert_non_null(strstr(buf, "aside_cache_entries 2\n"));
	assert_non_null(
	    strstr(buf, "aside_load_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(buf, "aside_load_duration_seconds_count 2\n"));
	/* A short buffer is filled, terminated, and the full size reported. */
	char small[64];
	assert_int_equal(
	    aside_metrics_prometheus(&m, "aside", small, sizeof(small)), need);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	free(buf);
}

static void status_table_names_every_code(void **state)
{
	(void)state;
	assert_int_equal(ASIDE_OK, 0);
	assert_true(ASIDE_NOT_FOUND > 0);
	assert_true(ASIDE_EDB < 0);
	assert_string_equal(aside_strerror(ASIDE_OK), "success");
	assert_string_equal(aside_status_name(ASIDE_EBADEMAIL),
			    "ASIDE_EBADEMAIL");
	assert_non_null(strstr(aside_strerror(ASIDE_EBADNAME), "UTF-8"));
	assert_string_equal(aside_strerror(-9999), "unknown status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(get_miss_then_hit, setup, teardown),
	    cmocka_unit_test_setup_teardown(not_found_is_not_cached, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(bad_arguments_are_refused, setup,
					    teardown),
	    cmocka_unit_test(open_rejects_bad_urls),
	    cmocka_unit_test(urls_are_shown_without_passwords),
	    cmocka_unit_test_setup_teardown(get_coalesces_concurrent_misses,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(counters_add_up_past_the_stripes,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(
		loader_failure_is_shared_not_stampeded, setup, teardown),
	    cmocka_unit_test(wait_for_a_load_is_bounded),
	    cmocka_unit_test(wait_that_overslept_is_given_its_time_again),
	    cmocka_unit_test_setup_teardown(
		read_after_invalidate_never_joins_older_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(load_before_invalidate_never_stores,
					    setup, teardown),
	    cmocka_unit_test(readers_never_see_writes_undone),
	    cmocka_unit_test_setup_teardown(ttl_expires_on_the_injected_clock,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(ttl_jitter_spreads_expiries, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(default_ttl_is_one_hour, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(late_many_invalidates_each_key_once,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(invalidate_removes_related_keys,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(
		undecodable_entry_is_dropped_and_reloaded, setup, teardown),
	    cmocka_unit_test(histogram_quantiles_are_close),
	    cmocka_unit_test_setup_teardown(prometheus_text_has_the_counters,
					    setup, teardown),
	    cmocka_unit_test(status_table_names_every_code),
	    cmocka_unit_test(stale_copy_served_when_the_load_fails),
	    cmocka_unit_test(stale_copy_has_a_bounded_age),
	    cmocka_unit_test(stale_copy_never_outlives_a_write),
	    cmocka_unit_test(stale_copy_off_by_default),
	    cmocka_unit_test(stale_copy_served_when_the_load_hangs),
	    cmocka_unit_test(swr_serves_the_copy_while_one_loads),
	    cmocka_unit_test(swr_copy_has_a_bounded_age),
	    cmocka_unit_test(swr_copy_never_outlives_a_write),
	    cmocka_unit_test(swr_and_stale_if_error_bounds_apart),
	    cmocka_unit_test_setup_teardown(
		gate_turns_away_keys_it_was_never_told_of, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		gate_whose_fill_fails_lets_everything_through, setup, teardown),
	    cmocka_unit_test_setup_teardown(gate_lets_few_absent_keys_through,
					    setup, teardown),
	    cmocka_unit_test(gate_grows_when_its_keys_outgrow_it),
	    cmocka_unit_test(gate_forgets_deleted_keys_at_each_fill),
	    cmocka_unit_test(gate_arguments_are_checked),
	    cmocka_unit_test(absence_cached_for_negative_ttl),
	    cmocka_unit_test(absence_gone_after_a_write),
	    cmocka_unit_test(absence_read_before_a_write_never_stored),
	    cmocka_unit_test(absence_is_shared_by_one_load),
	    cmocka_unit_test(absence_kept_as_a_stale_copy),
	    cmocka_unit_test(absences_do_not_flush_the_hot_keys),
	    cmocka_unit_test(negative_ttl_is_checked),
	    cmocka_unit_test(breaker_opens_probes_and_closes),
	    cmocka_unit_test(ttl_adapts_to_how_often_a_key_is_read),
	    cmocka_unit_test(breaker_serves_expired_copies),
	    cmocka_unit_test(gate_never_turns_away_a_created_key),
	    cmocka_unit_test(gate_refilled_never_turns_away_a_created_key),
	};
	if (getenv("TEST_FILTER")) /* one test: TEST_FILTER=name */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
