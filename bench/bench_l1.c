/*
 * bench_l1.c -- the cost of an L1 hit, measured the way the Caffeine peer
 * measures getIfPresent (../shared/peers/caffeine/Throughput.java): N
 * resident keys, uniform random reads by xorshift, T threads, S seconds
 * each, after a warm-up round.
 *
 *   bench_l1 [engine|inline|ref|bare|lean|service] [N] [T] [S]
 *
 * engine   aside_cache_read on a hit, metrics on: the value is lent to a
 *          callback, no reference taken
 * inline   the same through aside_cache_read_inline (<aside/inline.h>):
 *          the hit compiled into this loop (what user_service_get uses)
 * ref      aside_cache_get on a hit: a counted reference, then unref
 * bare     a hash probe plus an atomic reference, nothing else
 * lean     the same probe without the reference: a plain hash lookup
 * service  user_service_get on a hit: key formatting, engine, struct copy
 *
 * BENCH_URL=URL opens that cache in place of mem://?capacity=2N, e.g. an
 * L1 over Redis (redis://HOST:PORT?l1=200000, whose hits are served only
 * while Redis confirms the L1, l1_bound_ms).
 *
 * BENCH_PAD=40 or 80 adds that many register-only instructions (x86-64)
 * after each read, independent of it: what they cost says whether a read
 * is bound by memory or by how many reads the CPU's instruction window
 * holds at once (docs/performance.md).
 */
#include <aside/inline.h>
#include <aside/users.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

enum { M_ENGINE, M_REF, M_BARE, M_LEAN, M_SERVICE, M_INLINE };
static int mode, pad;
static long nkeys = 100000;
static double seconds = 5;
static aside_cache *cache;
static user_service *svc;

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)arg;
	(void)err;
	return aside_value_new(key, klen, key, klen, out);
}
static const aside_loader loader = {load, NULL, NULL};

static int64_t fixed_clock(void *ctx)
{
	(void)ctx;
	return 1764000000000000;
}

/* What a reader does with a lent value: look at it. */
static void touch(void *arg, const aside_value *v)
{
	size_t len;
	aside_value_data(v, &len);
	*(long *)arg += len > 0;
}

/* The same, with the accessor compiled in too. */
static void touch_inline(void *arg, const aside_value *v)
{
	size_t len;
	aside_value_data_inline(v, &len);
	*(long *)arg += len > 0;
}

/* The bare table: open addressing over the same keys, refcounted entries. */
struct bare_entry {
	_Atomic unsigned refs;
	size_t klen;
	char key[24];
};
static struct bare_entry **bare;
static size_t bare_mask;

/* n groups of four adds, on registers no read uses. */
#if defined(__x86_64__)
#define PAD_ADDS(n)                                                            \
	__asm__ volatile(".rept " #n "\n\t"                                    \
			 "add $1, %%r8\n\tadd $1, %%r9\n\t"                    \
			 "add $1, %%r10\n\tadd $1, %%r11\n\t.endr" ::          \
			     : "r8", "r9", "r10", "r11", "cc")
#else
#define PAD_ADDS(n) ((void)0)
#endif

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
	int id;
	double rate;
	long hits;
};

/*
 * One thread's rounds, for mode m (a constant where it is inlined, so that
 * each mode's loop is its own, with nothing to dispatch on, as the peer's
 * loop has nothing: every global it uses is read once, before the loop).
 */
static inline __attribute__((always_inline)) void loop(struct worker *w, int m)
{
	aside_cache *const c = cache;
	user_service *const sv = svc;
	struct bare_entry **const table = bare;
	const size_t tmask = bare_mask;
	const uint64_t n = (uint64_t)nkeys;
	const int padding = pad;
	const double secs = seconds;
	uint64_t s = (uint64_t)w->id * 7919 + 1;
	long ops = 0, hits = 0;
	double t0 = now_s(), t;
	user u;
	do {
		for (int j = 0; j < 1024; j++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			uint64_t k = s % n;
			char key[16] __attribute__((aligned(8)));
			size_t klen = make_key(k, key);
			if (m == M_SERVICE) {
				hits += user_service_get(sv, (int64_t)k + 1,
							 &u) == ASIDE_OK;
			} else if (m == M_ENGINE) {
				if (aside_cache_read(c, key, klen, &loader,
						     touch, &hits,
						     NULL) != ASIDE_OK)
					hits = -(1L << 40);
			} else if (m == M_INLINE) {
				if (aside_cache_read_inline(
					c, key, klen, &loader, touch_inline,
					&hits, NULL) != ASIDE_OK)
					hits = -(1L << 40);
			} else if (m == M_REF) {
				aside_value *v;
				if (aside_cache_get(c, key, klen, &loader, &v,
						    NULL) == ASIDE_OK) {
					hits++;
					aside_value_unref(v);
				}
			} else {
				uint64_t h = aside_hash(key, klen);
				for (size_t i = h & tmask;;
				     i = (i + 1) & tmask) {
					struct bare_entry *e = table[i];
					if (!e)
						break;
					if (e->klen == klen &&
					    !memcmp(e->key, key, klen)) {
						if (m == M_BARE)
							atomic_fetch_add(
							    &e->refs, 1);
						hits++;
						if (m == M_BARE)
							atomic_fetch_sub(
							    &e->refs, 1);
						break;
					}
				}
			}
			if (__builtin_expect(padding != 0, 0)) {
				if (padding == 40)
					PAD_ADDS(10);
				else
					PAD_ADDS(20);
			}
		}
		ops += 1024;
		t = now_s();
	} while (t - t0 < secs);
	w->rate = (double)ops / (t - t0);
	w->hits = hits;
}

static void *run(void *arg)
{
	switch (mode) {
	case M_ENGINE:
		loop(arg, M_ENGINE);
		break;
	case M_REF:
		loop(arg, M_REF);
		break;
	case M_SERVICE:
		loop(arg, M_SERVICE);
		break;
	case M_INLINE:
		loop(arg, M_INLINE);
		break;
	case M_BARE:
		loop(arg, M_BARE);
		break;
	default:
		loop(arg, M_LEAN);
		break;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "engine";
	static const char *const names[] = {"engine", "ref",	 "bare",
					    "lean",   "service", "inline"};
	nkeys = argc > 2 ? atol(argv[2]) : 100000;
	int threads = argc > 3 ? atoi(argv[3]) : 1;
	seconds = argc > 4 ? atof(argv[4]) : 5;
	pad = getenv("BENCH_PAD") ? atoi(getenv("BENCH_PAD")) : 0;
	for (mode = 0; mode <= M_INLINE && strcmp(name, names[mode]); mode++)
		;
	if (mode > M_INLINE || (pad != 0 && pad != 40 && pad != 80) ||
	    nkeys < 1 || nkeys > 0xffffffffL || threads < 1 || threads > 64) {
		fprintf(
		    stderr,
		    "usage: bench_l1 [engine|inline|ref|bare|lean|service] [N] "
		    "[THREADS] [SECONDS]\n");
		return 2;
	}

	char url[512];
	if (getenv("BENCH_URL"))
		snprintf(url, sizeof(url), "%s", getenv("BENCH_URL"));
	else
		snprintf(url, sizeof(url), "mem://?capacity=%ld",
			 (long)(nkeys * (getenv("BENCH_CAP")
					     ? atof(getenv("BENCH_CAP"))
					     : 2.0)));
	aside_error err;
	aside_options opts = {0};
	if (getenv("BENCH_FIXED_CLOCK"))
		opts.clock = fixed_clock;
	if (aside_cache_open_opts(url, &opts, &cache, &err) != ASIDE_OK) {
		fprintf(stderr, "bench_l1: %s\n", err.message);
		return 1;
	}
	if (mode == M_SERVICE) {
		svc = user_service_new((user_repo){&synth_ops, NULL}, cache);
		user u;
		for (long k = 0; k < nkeys; k++)
			user_service_get(svc, k + 1, &u);
	} else if (mode == M_ENGINE || mode == M_REF || mode == M_INLINE) {
		for (long k = 0; k < nkeys; k++) {
			char key[16];
			size_t klen = make_key((uint64_t)k, key);
			aside_value *v;
			aside_cache_get(cache, key, klen, &loader, &v, NULL);
			aside_value_unref(v);
		}
	} else {
		size_t n = 1;
		while (n < (size_t)nkeys * 2)
			n <<= 1;
		bare_mask = n - 1;
		bare = calloc(n, sizeof(*bare));
		for (long k = 0; k < nkeys; k++) {
			struct bare_entry *e = calloc(1, sizeof(*e));
			e->refs = 1;
			e->klen = make_key((uint64_t)k, e->key);
			size_t i = aside_hash(e->key, e->klen) & bare_mask;
			while (bare[i])
				i = (i + 1) & bare_mask;
			bare[i] = e;
		}
	}

	for (int round = 0; round < 2; round++) { /* round 0 warms up */
		pthread_t th[64];
		struct worker w[64];
		for (int i = 0; i < threads; i++) {
			w[i] = (struct worker){.id = i};
			pthread_create(&th[i], NULL, run, &w[i]);
		}
		for (int i = 0; i < threads; i++)
			pthread_join(th[i], NULL);
		if (round == 0)
			continue;
		for (int i = 0; i < threads; i++) {
			printf("aside-%s N=%ld T=%d thread %d: %.1f M gets/s\n",
			       name, nkeys, threads, i, w[i].rate / 1e6);
			if (w[i].hits == 0) {
				fprintf(stderr, "bench_l1: no hits\n");
				return 1;
			}
		}
	}
	aside_metrics m;
	aside_cache_metrics(cache, &m);
	if (mode != M_BARE && mode != M_LEAN)
		printf("  hits %llu misses %llu entries %lld\n",
		       (unsigned long long)m.hits, (unsigned long long)m.misses,
		       (long long)m.entries);
	user_service_free(svc);
	aside_cache_close(cache);
	return 0;
}
