/*
 * test_inline.c -- aside_cache_read_inline (<aside/inline.h>): an L1 hit
 * answered in the caller, without a call into the library, exactly as the
 * library would answer it; everything else passed to aside_cache_read;
 * readers racing writers; a library that lays things out otherwise; an L1
 * over Redis (the real one of scripts/services), inline only while its
 * subscription confirms it.
 *
 * Linked with --wrap=aside_cache_read, so that every call the inline path
 * makes into the library is counted.
 */
#include <aside/inline.h>
#include <pthread.h>
#include <setjmp.h>
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

#include "../support/servers.h"

#if defined(__SANITIZE_ADDRESS__)
#define LIBRARY_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIBRARY_ASAN 1
#endif
#endif

/* ---- calls into the library -------------------------------------------- */

int __real_aside_cache_read(aside_cache *c, const char *key, size_t klen,
			    const aside_loader *loader, aside_read_fn fn,
			    void *arg, aside_error *err);
int __wrap_aside_cache_read(aside_cache *c, const char *key, size_t klen,
			    const aside_loader *loader, aside_read_fn fn,
			    void *arg, aside_error *err);

static _Thread_local unsigned calls; /* this thread's, into the library */

int __wrap_aside_cache_read(aside_cache *c, const char *key, size_t klen,
			    const aside_loader *loader, aside_read_fn fn,
			    void *arg, aside_error *err)
{
	calls++;
	return __real_aside_cache_read(c, key, klen, loader, fn, arg, err);
}

/* ---- a source: "<key>=<version>" --------------------------------------- */

typedef struct source {
	_Atomic unsigned loads;
	_Atomic int version;
	_Atomic int decodes;
	_Atomic int attach; /* a load attaches the decoded form itself */
	_Atomic int absent; /* a load finds nothing */
} source;

static int src_load(void *arg, const char *key, size_t klen, aside_value **out,
		    aside_error *err)
{
	(void)err;
	source *s = arg;
	atomic_fetch_add(&s->loads, 1);
	if (atomic_load(&s->absent))
		return ASIDE_NOT_FOUND;
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "%.*s=%d", (int)klen, key,
			 atomic_load(&s->version));
	int rc = aside_value_new(key, klen, buf, (size_t)n, out);
	if (rc == ASIDE_OK && atomic_load(&s->attach))
		aside_value_attach(*out, strdup(buf), free, (size_t)n + 1);
	return rc;
}

/* A decoding loader's decode: the bytes copied as the decoded form. */
static int src_decode(void *arg, aside_value *v, aside_error *err)
{
	(void)err;
	source *s = arg;
	atomic_fetch_add(&s->decodes, 1);
	size_t len;
	const char *d = aside_value_data(v, &len);
	char *copy = strndup(d, len);
	if (!copy)
		return ASIDE_ENOMEM;
	aside_value_attach(v, copy, free, len + 1);
	return ASIDE_OK;
}

struct seen {
	char data[64];
	size_t len;
	const void *obj;
	int n;
};

/* aside_read_fn: what the value holds, through the inline accessors,
 * checked against the library's. */
static void see(void *arg, const aside_value *v)
{
	struct seen *s = arg;
	size_t len, len2;
	const char *d = aside_value_data_inline(v, &len);
	assert_ptr_equal(d, aside_value_data(v, &len2));
	assert_int_equal(len, len2);
	assert_ptr_equal(aside_value_obj_inline(v), aside_value_obj(v));
	assert_true(len < sizeof(s->data));
	memcpy(s->data, d, len);
	s->data[len] = '\0';
	s->len = len;
	s->obj = aside_value_obj_inline(v);
	s->n++;
}

static aside_cache *open_cache(const char *url)
{
	aside_cache *c;
	aside_error err;
	if (aside_cache_open(url, &c, &err) != ASIDE_OK)
		fail_msg("open %s: %s", url, err.message);
	return c;
}

static struct aside__inline *published(aside_cache *c)
{
	return (struct aside__inline *)c;
}

static int read_inline(aside_cache *c, const char *key, aside_loader *ld,
		       struct seen *s)
{
	memset(s, 0, sizeof(*s));
	return aside_cache_read_inline(c, key, strlen(key), ld, see, s, NULL);
}

static aside_metrics metrics_of(aside_cache *c)
{
	aside_metrics m;
	aside_cache_metrics(c, &m);
	return m;
}

/* n reads of key: how many of them called in. */
static unsigned calls_in(aside_cache *c, const char *key, aside_loader *ld,
			 const char *want, int n)
{
	struct seen s;
	calls = 0;
	for (int i = 0; i < n; i++) {
		assert_int_equal(read_inline(c, key, ld, &s), ASIDE_OK);
		assert_string_equal(s.data, want);
	}
	return calls;
}

/* ---- tests ------------------------------------------------------------- */

/* Key i in one of three shapes: shorter than 8 bytes, 8 to 16, longer. */
static void key_of(char *key, size_t cap, int i)
{
	static const char *const shapes[] = {"%x", "user:%d",
					     "tenant:7:user:profile:%d"};
	snprintf(key, cap, shapes[i % 3], i);
}

/* n keys read once (misses, each calling in), then three times more: hits,
 * none calling in, every one counted. */
static void hits_in(const char *url, int n)
{
	aside_cache *c = open_cache(url);
#ifdef LIBRARY_ASAN
	/* Heads are malloc'd for the sanitizer: every read calls in. */
	assert_int_equal(published(c)->abi, 0);
#else
	assert_int_equal(published(c)->abi, ASIDE_INLINE_ABI);
	assert_int_equal(aside__inline_abi, ASIDE_INLINE_ABI);
#endif
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	char key[64];
	for (int i = 0; i < n; i++) {
		key_of(key, sizeof(key), i);
		calls = 0;
		assert_int_equal(read_inline(c, key, &ld, &s), ASIDE_OK);
		assert_int_equal(calls, 1);
		assert_int_equal(s.n, 1);
	}
	assert_int_equal(src.loads, (unsigned)n);
	aside_metrics m0 = metrics_of(c);
	calls = 0;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < n; i++) {
			key_of(key, sizeof(key), i);
			assert_int_equal(read_inline(c, key, &ld, &s),
					 ASIDE_OK);
			char want[80];
			snprintf(want, sizeof(want), "%s=0", key);
			assert_string_equal(s.data, want);
			assert_int_equal(s.n, 1);
		}
	}
#ifndef LIBRARY_ASAN
	assert_int_equal(calls, 0);
#endif
	aside_metrics m = metrics_of(c);
	assert_int_equal(src.loads, (unsigned)n);
	assert_int_equal(m.hits - m0.hits, 3 * n);
	assert_int_equal(m.tier_hits[0] - m0.tier_hits[0], 3 * n);
	assert_int_equal(m.misses, m0.misses);
	assert_int_equal(m.loads, m0.loads);
	aside_cache_close(c);
}

static void hit_makes_no_call_and_is_counted(void **state)
{
	(void)state;
	hits_in("mem://?capacity=1000", 200);	 /* one shard */
	hits_in("mem://?capacity=100000", 3000); /* 64 shards, tables grown */
	hits_in("mem://?capacity=4096&shards=16", 3000);
}

static void bad_arguments_go_to_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	aside_loader none = {NULL, NULL, NULL};
	struct seen s = {0};
	aside_error err;
	char big[ASIDE_KEY_MAX + 2];
	memset(big, 'k', sizeof(big));
	calls = 0;
	assert_int_equal(
	    aside_cache_read_inline(NULL, "k", 1, &ld, see, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_read_inline(c, NULL, 1, &ld, see, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(aside_cache_read_inline(c, "k", 0, &ld, see, &s, &err),
			 ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_read_inline(c, big, sizeof(big), &ld, see, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_read_inline(c, "k", 1, NULL, see, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_read_inline(c, "k", 1, &none, see, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(
	    aside_cache_read_inline(c, "k", 1, &ld, NULL, &s, &err),
	    ASIDE_EINVAL);
	assert_int_equal(calls, 7);
	assert_int_equal(s.n, 0);
	assert_int_equal(src.loads, 0);
	aside_cache_close(c);
}

/* A value not decoded yet, an invalidated key: the library's, and
 * answered as it answers them. */
static void what_the_hit_cannot_answer_goes_to_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=1000");
	source src = {0};
	aside_loader ld = {src_load, src_decode, &src};
	struct seen s;

	/* The first read loads (the load attaches the decoded form); the
	 * next is a hit with it. */
	src.attach = 1;
	calls = 0;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_int_equal(calls, 1);
	assert_non_null(s.obj);
	assert_string_equal((const char *)s.obj, "user:1=0");
	calls = 0;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_string_equal((const char *)s.obj, "user:1=0");
#ifndef LIBRARY_ASAN
	assert_int_equal(calls, 0);
#endif
	assert_int_equal(src.decodes, 0);

	/* A value cached without its decoded form, then read by a loader
	 * that decodes: the inline hit must not lend it undecoded. */
	src.attach = 0;
	aside_loader plain = {src_load, NULL, &src};
	assert_int_equal(read_inline(c, "user:2", &plain, &s), ASIDE_OK);
	assert_null(s.obj);
	calls = 0;
	assert_int_equal(read_inline(c, "user:2", &ld, &s), ASIDE_OK);
	assert_int_equal(calls, 1);
	assert_string_equal((const char *)s.obj, "user:2=0");
	assert_int_equal(src.decodes, 1);
	calls = 0;
	assert_int_equal(read_inline(c, "user:2", &ld, &s), ASIDE_OK);
	assert_string_equal((const char *)s.obj, "user:2=0");
#ifndef LIBRARY_ASAN
	assert_int_equal(calls, 0);
#endif
	assert_int_equal(src.decodes, 1);
	src.attach = 1;

	/* A write: the old value is never lent again. */
	atomic_store(&src.version, 1);
	assert_int_equal(aside_cache_invalidate(c, "user:1", 6, NULL),
			 ASIDE_OK);
	calls = 0;
	unsigned loads = src.loads;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_int_equal(calls, 1);
	assert_int_equal(src.loads, loads + 1);
	assert_string_equal(s.data, "user:1=1");
	calls = 0;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_string_equal(s.data, "user:1=1");
#ifndef LIBRARY_ASAN
	assert_int_equal(calls, 0);
#endif
	aside_cache_close(c);
}

/* A cached absence (negative_ttl_ms) sits in the table as a value does:
 * it is never lent. */
static void cached_absence_is_not_lent(void **state)
{
	(void)state;
	aside_cache *c =
	    open_cache("mem://?capacity=100&negative_ttl_ms=60000");
	source src = {.absent = 1};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	for (int i = 0; i < 3; i++) {
		calls = 0;
		assert_int_equal(read_inline(c, "user:1", &ld, &s),
				 ASIDE_NOT_FOUND);
		assert_int_equal(s.n, 0);
		assert_int_equal(calls, 1);
	}
	assert_int_equal(src.loads, 1);
	assert_int_equal(metrics_of(c).negative_hits, 2);
	aside_cache_close(c);
}

struct nested {
	aside_cache *c;
	aside_loader *ld;
	struct seen inner;
	int rc;
	unsigned calls;
};

static void read_within(void *arg, const aside_value *v)
{
	(void)v;
	struct nested *n = arg;
	unsigned before = calls;
	n->rc = read_inline(n->c, "user:2", n->ld, &n->inner);
	n->calls = calls - before;
}

static void nested_read_goes_to_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=1000");
	aside_cache *other = open_cache("mem://?capacity=1000");
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_int_equal(read_inline(other, "user:2", &ld, &s), ASIDE_OK);
	/* Inside a read of one cache, a read of another: the section is
	 * nested, which the library keeps count of. */
	struct nested n = {.c = other, .ld = &ld, .rc = -1};
	assert_int_equal(
	    aside_cache_read_inline(c, "user:1", 6, &ld, read_within, &n, NULL),
	    ASIDE_OK);
	assert_int_equal(n.rc, ASIDE_OK);
	assert_string_equal(n.inner.data, "user:2=0");
	assert_int_equal(n.calls, 1);
	aside_cache_close(other);
	aside_cache_close(c);
}

/* An expired entry is not lent: the hit reads the same clock the library
 * does, and the library reloads. */
static void expired_entry_goes_to_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=1000");
	assert_int_equal(aside_cache_set_ttl(c, "user", 20, 0), ASIDE_OK);
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	aside_value *v;
	assert_int_equal(aside_cache_get(c, "user:1", 6, &ld, &v, NULL),
			 ASIDE_OK);
	int64_t expires = aside_value_expires_at_us(v);
	aside_value_unref(v);
	assert_true(expires > 0);
	const struct aside__inline *d = published(c);
	/* Until the clock the hit reads has passed the expiry (a state
	 * waited for, not a time slept). */
	while (d->abi && atomic_load(d->now_us) < expires) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	/* Nothing published (a sanitized library): until the library says
	 * so itself. */
	aside_value *p = NULL;
	while (!d->abi && aside_cache_peek(c, "user:1", 6, &p) == ASIDE_OK) {
		aside_value_unref(p);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	atomic_store(&src.version, 1);
	calls = 0;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	assert_int_equal(calls, 1);
	assert_int_equal(src.loads, 2);
	assert_string_equal(s.data, "user:1=1");
	aside_cache_close(c);
}

/* A child of fork() has no ticker: its hits call in, and are right. */
static void fork_child_reads_through_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	source src = {.attach = 1};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int bad = 0;
		for (int i = 0; i < 3; i++) {
			calls = 0;
			memset(&s, 0, sizeof(s));
			int rc = aside_cache_read_inline(c, "user:1", 6, &ld,
							 see, &s, NULL);
			bad |= rc != ASIDE_OK || calls != 1 ||
			       strcmp(s.data, "user:1=0") != 0;
		}
		_exit(bad || src.loads != 1 ? 1 : 0);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	aside_cache_close(c);
}

static int64_t fixed_now(void *ctx)
{
	(void)ctx;
	return 1700000000000000;
}

/* A cache with its own clock publishes nothing: every read calls in. */
static void injected_clock_reads_go_to_the_library(void **state)
{
	(void)state;
	aside_options o = {.clock = fixed_now};
	aside_cache *c;
	assert_int_equal(
	    aside_cache_open_opts("mem://?capacity=100", &o, &c, NULL),
	    ASIDE_OK);
	assert_int_equal(published(c)->abi, 0);
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 5);
	assert_int_equal(src.loads, 1);
	assert_int_equal(metrics_of(c).hits, 4);
	aside_cache_close(c);
}

/* A library whose layouts are another ABI's: read as it answers. */
static void another_abi_is_never_read_inline(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	struct aside__inline *d = published(c);
	uint32_t abi = d->abi;
	d->abi = ASIDE_INLINE_ABI + 1;
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 5);
	assert_int_equal(src.loads, 1);
	d->abi = abi;
	aside_cache_close(c);
}

/* ---- an L1 over Redis, served while Redis confirms it ------------------- */

static int64_t coarse_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * The header's test of a bound, against a confirmation set by hand: a
 * cache of the L1 alone, published as if it sat over Redis.  Hits are
 * inline only while the confirmation is younger than the bound; past it,
 * or before any, every read is the library's (which, this L1 having no
 * bound of its own, serves it from the L1 all the same).
 */
static void unconfirmed_l1_goes_to_the_library(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	struct seen s;
	assert_int_equal(read_inline(c, "user:1", &ld, &s), ASIDE_OK);
	struct aside__inline *d = published(c);
	if (d->abi != ASIDE_INLINE_ABI) { /* a library built for ASan */
		aside_cache_close(c);
		skip();
	}
	assert_null(d->confirmed); /* no Redis: nothing to wait for */
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 0);
	_Atomic int64_t confirmed = 0;
	d->confirmed = &confirmed;
	d->bound_us = 100 * 1000;
	/* never confirmed */
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 5);
	/* confirmed just now */
	atomic_store(&confirmed, coarse_us());
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 0);
	/* confirmed longer ago than the bound */
	atomic_store(&confirmed, coarse_us() - 150 * 1000);
	assert_int_equal(calls_in(c, "user:1", &ld, "user:1=0", 5), 5);
	assert_int_equal(src.loads, 1);
	assert_int_equal(metrics_of(c).hits, 20);
	d->confirmed = NULL;
	aside_cache_close(c);
}

#define REDIS_DB 5 /* this program's Redis database */

/* Polls until c has applied n invalidations from other caches. */
static bool heard(aside_cache *c, uint64_t n)
{
	for (int i = 0; i < 2000; i++) {
		if (metrics_of(c).remote_invalidations >= n)
			return true;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return false;
}

#ifndef LIBRARY_ASAN
/* Reads key until ten in a row are inline (bounded: a slow machine may
 * take a while to confirm). */
static bool inline_again(aside_cache *c, const char *key, aside_loader *ld,
			 const char *want)
{
	for (int i = 0; i < 1000; i++) {
		if (calls_in(c, key, ld, want, 10) == 0)
			return true;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return false;
}
#endif

/*
 * Two caches with L1s on one Redis, as two processes: each publishes its
 * subscription's confirmation and the bound, hits inline once confirmed,
 * and a write through the other, once heard, is never answered from the
 * old entry.  (Reads past the bound while Redis is paused are checked
 * through user_service_get, which reads inline, in test_faults.)
 */
static void l1_over_redis_hits_inline(void **state)
{
	(void)state;
	char url[512];
	if (!test_redis_url(url, REDIS_DB, "l1=1000")) {
		if (getenv("ASIDE_TEST_REQUIRE_SERVERS"))
			fail_msg("Redis is required");
		skip();
	}
	assert_true(test_redis_flush(REDIS_DB));
	aside_cache *a = open_cache(url), *b = open_cache(url);
	struct aside__inline *d = published(a);
#ifdef LIBRARY_ASAN
	assert_int_equal(d->abi, 0);
#else
	assert_int_equal(d->abi, ASIDE_INLINE_ABI);
	assert_non_null(d->confirmed);
	assert_int_equal(d->bound_us, 100 * 1000); /* the default bound */
#endif
	source src = {0};
	aside_loader ld = {src_load, NULL, &src};
	assert_int_equal(calls_in(a, "user:1", &ld, "user:1=0", 1), 1);
#ifndef LIBRARY_ASAN
	assert_true(inline_again(a, "user:1", &ld, "user:1=0"));
#endif
	assert_int_equal(src.loads, 1);
	/* b writes the key: once a has heard it, its L1 no longer holds the
	 * old value, and a read, whichever path it takes, loads the new. */
	uint64_t before = metrics_of(a).remote_invalidations;
	atomic_store(&src.version, 1);
	assert_int_equal(aside_cache_invalidate(b, "user:1", 6, NULL),
			 ASIDE_OK);
	assert_true(heard(a, before + 1));
	calls_in(a, "user:1", &ld, "user:1=1", 1);
	assert_int_equal(src.loads, 2);
#ifndef LIBRARY_ASAN
	assert_true(inline_again(a, "user:1", &ld, "user:1=1"));
#endif
	assert_int_equal(src.loads, 2);
	aside_cache_close(b);
	aside_cache_close(a);

	/* With no bound, nothing is waited for: the L1 answers alone. */
	assert_non_null(test_redis_url(url, REDIS_DB, "l1=1000&l1_bound_ms=0"));
	a = open_cache(url);
	d = published(a);
	assert_null(d->confirmed);
	assert_int_equal(calls_in(a, "user:2", &ld, "user:2=1", 1), 1);
#ifndef LIBRARY_ASAN
	assert_int_equal(calls_in(a, "user:2", &ld, "user:2=1", 10), 0);
#endif
	aside_cache_close(a);
}

/* ---- readers racing writers -------------------------------------------- */

enum { KEYS = 8, READERS = 3, WRITES = 30000 };

typedef struct race {
	aside_cache *c;
	_Atomic int versions[KEYS];  /* what a load reads now */
	_Atomic int completed[KEYS]; /* writes whose invalidation returned */
	_Atomic int stop;
	_Atomic unsigned stale, errors;
	_Atomic unsigned long hits_inline;
} race;

static int race_load(void *arg, const char *key, size_t klen, aside_value **out,
		     aside_error *err)
{
	(void)err;
	race *r = arg;
	int ver = atomic_load(&r->versions[key[2] - '0']);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%.*s=%d", (int)klen, key, ver);
	return aside_value_new(key, klen, buf, (size_t)n, out);
}

struct lent {
	const char *key;
	int floor;
	bool stale;
};

static void check_lent(void *arg, const aside_value *v)
{
	struct lent *l = arg;
	size_t len;
	const char *d = aside_value_data_inline(v, &len);
	size_t klen;
	const char *k = aside_value_key(v, &klen);
	const char *eq = memchr(d, '=', len);
	l->stale = klen != 3 || memcmp(k, l->key, 3) != 0 || !eq ||
		   memcmp(d, l->key, 3) != 0 || atoi(eq + 1) < l->floor;
}

static void *race_writer(void *arg)
{
	race *r = arg;
	for (int n = 0; n < WRITES; n++) {
		int i = n % KEYS;
		char key[4] = {'k', ':', (char)('0' + i), 0};
		int ver = atomic_fetch_add(&r->versions[i], 1) + 1;
		aside_cache_invalidate(r->c, key, 3, NULL);
		int cur = atomic_load(&r->completed[i]);
		while (cur < ver && !atomic_compare_exchange_weak(
					&r->completed[i], &cur, ver))
			;
	}
	return NULL;
}

static void *race_reader(void *arg)
{
	race *r = arg;
	aside_loader ld = {race_load, NULL, r};
	unsigned x = (unsigned)(uintptr_t)pthread_self();
	unsigned long inline_hits = 0;
	while (!atomic_load(&r->stop)) {
		x = x * 1103515245 + 12345;
		int i = (int)((x >> 16) % KEYS);
		char key[4] = {'k', ':', (char)('0' + i), 0};
		struct lent l = {key, atomic_load(&r->completed[i]), false};
		unsigned before = calls;
		int rc = aside_cache_read_inline(r->c, key, 3, &ld, check_lent,
						 &l, NULL);
		if (rc != ASIDE_OK)
			atomic_fetch_add(&r->errors, 1);
		else if (l.stale)
			atomic_fetch_add(&r->stale, 1);
		inline_hits += calls == before;
	}
	atomic_fetch_add(&r->hits_inline, inline_hits);
	return NULL;
}

static void race_run(const char *url)
{
	race *r = calloc(1, sizeof(*r));
	r->c = open_cache(url);
	pthread_t w[2], rd[READERS];
	for (int i = 0; i < READERS; i++)
		pthread_create(&rd[i], NULL, race_reader, r);
	for (int i = 0; i < 2; i++)
		pthread_create(&w[i], NULL, race_writer, r);
	for (int i = 0; i < 2; i++)
		pthread_join(w[i], NULL);
	atomic_store(&r->stop, 1);
	for (int i = 0; i < READERS; i++)
		pthread_join(rd[i], NULL);
	assert_int_equal(r->errors, 0);
	assert_int_equal(r->stale, 0);
	printf("    %s: %lu hits inline\n", url, r->hits_inline);
	/* After the writers stop, every read agrees with the source. */
	aside_loader ld = {race_load, NULL, r};
	for (int i = 0; i < KEYS; i++) {
		char key[4] = {'k', ':', (char)('0' + i), 0};
		struct lent l = {key, atomic_load(&r->versions[i]), false};
		for (int n = 0; n < 2; n++) {
			assert_int_equal(
			    aside_cache_read_inline(r->c, key, 3, &ld,
						    check_lent, &l, NULL),
			    ASIDE_OK);
			assert_false(l.stale);
		}
	}
	aside_cache_close(r->c);
	free(r);
}

static void inline_readers_never_see_writes_undone(void **state)
{
	(void)state;
	race_run("mem://?capacity=1000");	 /* no eviction */
	race_run("mem://?capacity=4");		 /* constant eviction */
	race_run("mem://?capacity=64&shards=1"); /* one shard */
	race_run("mem://?capacity=4096&shards=4");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(hit_makes_no_call_and_is_counted),
	    cmocka_unit_test(bad_arguments_go_to_the_library),
	    cmocka_unit_test(what_the_hit_cannot_answer_goes_to_the_library),
	    cmocka_unit_test(cached_absence_is_not_lent),
	    cmocka_unit_test(nested_read_goes_to_the_library),
	    cmocka_unit_test(expired_entry_goes_to_the_library),
	    cmocka_unit_test(injected_clock_reads_go_to_the_library),
	    cmocka_unit_test(fork_child_reads_through_the_library),
	    cmocka_unit_test(another_abi_is_never_read_inline),
	    cmocka_unit_test(unconfirmed_l1_goes_to_the_library),
	    cmocka_unit_test(l1_over_redis_hits_inline),
	    cmocka_unit_test(inline_readers_never_see_writes_undone),
	};
	if (getenv("TEST_FILTER")) /* one test: TEST_FILTER=name */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
