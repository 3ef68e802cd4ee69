/*
 * test_mem.c -- the in-process tier through the engine: the capacity and
 * byte bounds, W-TinyLFU eviction (unread entries go first, a scan does
 * not flush the popular ones, a loop larger than the cache still hits, the
 * window adapts to recency, stops growing where the workload needs no more
 * and comes back from the whole cache when the workload changes, a key
 * turned away that comes back is let in, a victim hit in the main area
 * keeps its place against a newcomer counted once more),
 * TTL on the injected clock and on the default
 * one (the ticker, also in a child of fork()), references that outlive
 * eviction, tables that grow under readers, and concurrent readers and
 * writers.
 */
#include <aside/aside.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif

/* cmocka needs the headers above */
#include <cmocka.h>

static _Atomic unsigned loads;
static size_t value_size = 16;

/* Values are the key repeated up to value_size bytes. */
static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)arg;
	(void)err;
	atomic_fetch_add(&loads, 1);
	char *buf = malloc(value_size);
	for (size_t i = 0; i < value_size; i++)
		buf[i] = key[i % klen];
	int rc = aside_value_new(key, klen, buf, value_size, out);
	free(buf);
	return rc;
}

static const aside_loader loader = {load, NULL, NULL};

static int64_t now_us = 1000000;
static int64_t clock_fn(void *ctx)
{
	(void)ctx;
	return now_us;
}

static aside_cache *open_cache(const char *url)
{
	aside_cache *c = NULL;
	aside_options o = {.clock = clock_fn};
	aside_error err;
	if (aside_cache_open_opts(url, &o, &c, &err) != ASIDE_OK)
		fail_msg("open %s: %s", url, err.message);
	loads = 0;
	value_size = 16;
	return c;
}

static int get(aside_cache *c, const char *key)
{
	aside_value *v;
	int rc = aside_cache_get(c, key, strlen(key), &loader, &v, NULL);
	if (rc == ASIDE_OK) {
		size_t klen;
		const char *k = aside_value_key(v, &klen);
		if (klen != strlen(key) || memcmp(k, key, klen) != 0)
			fail_msg("asked %s, got %.*s", key, (int)klen, k);
		aside_value_unref(v);
	}
	return rc;
}

static bool resident(aside_cache *c, const char *key)
{
	aside_value *v;
	if (aside_cache_peek(c, key, strlen(key), &v) != ASIDE_OK)
		return false;
	aside_value_unref(v);
	return true;
}

static int64_t entries(aside_cache *c)
{
	aside_metrics m;
	aside_cache_metrics(c, &m);
	return m.entries;
}

static void capacity_is_never_exceeded(void **state)
{
	(void)state;
	const int caps[] = {1, 3, 10, 100, 1000, 5000};
	for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
		char url[64];
		snprintf(url, sizeof(url), "mem://?capacity=%d", caps[k]);
		aside_cache *c = open_cache(url);
		for (int i = 0; i < caps[k] * 3; i++) {
			char key[32];
			snprintf(key, sizeof(key), "k:%d", i);
			assert_int_equal(get(c, key), ASIDE_OK);
			assert_true(entries(c) <= caps[k]);
		}
		/* Every shard filled up, so the cache holds exactly cap. */
		aside_metrics m;
		aside_cache_metrics(c, &m);
		assert_int_equal(m.entries + (int64_t)m.evictions, caps[k] * 3);
		aside_cache_close(c);
	}
}

static void policy_evicts_unread_entries_first(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=8");
	char key[16];
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "k:%d", i);
		get(c, key);
	}
	for (int i = 0; i < 4; i++) { /* read the first half again */
		snprintf(key, sizeof(key), "k:%d", i);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	assert_int_equal(loads, 8);
	for (int i = 8; i < 12; i++) { /* four newcomers */
		snprintf(key, sizeof(key), "k:%d", i);
		get(c, key);
	}
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "k:%d", i);
		if (!resident(c, key))
			fail_msg("%s was read recently but evicted", key);
	}
	/* The victims came from the unread: old entries 4-7 and newcomers. */
	int gone = 0;
	for (int i = 4; i < 12; i++) {
		snprintf(key, sizeof(key), "k:%d", i);
		gone += !resident(c, key);
	}
	assert_int_equal(gone, 4);
	assert_int_equal(entries(c), 8);
	aside_cache_close(c);
}

/* Reads key i of a set named by prefix; returns whether it was a hit. */
static bool read_hit(aside_cache *c, const char *prefix, int i)
{
	char key[32];
	int n = snprintf(key, sizeof(key), "%s:%d", prefix, i);
	assert_true(n > 0 && (size_t)n < sizeof(key));
	unsigned before = loads;
	assert_int_equal(get(c, key), ASIDE_OK);
	return loads == before;
}

static void scan_does_not_flush_popular_entries(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=200");
	for (int round = 0; round < 8; round++)
		for (int i = 0; i < 100; i++)
			read_hit(c, "hot", i);
	/* 2,000 keys read once each: a recency policy would keep only
	 * these, since they are the latest.  That is ten times the capacity,
	 * as long as the sketch remembers what was read (it halves every
	 * 10 x capacity reads).  A longer scan in which no popular key is
	 * read costs them protected's shelter (its hand demotes what goes
	 * unread) and they meet the scan on counts halved since: after
	 * 5,000, 79 to 97 of the 100 are left (docs/performance.md). */
	for (int i = 0; i < 2000; i++)
		read_hit(c, "scan", i);
	int kept = 0;
	for (int i = 0; i < 100; i++) {
		char key[32];
		snprintf(key, sizeof(key), "hot:%d", i);
		kept += resident(c, key);
	}
	if (kept < 95)
		fail_msg("a scan flushed the popular keys: %d of 100 kept",
			 kept);
	assert_true(entries(c) <= 200);
	aside_cache_close(c);
}

/*
 * Keys read twice keep their places against a flood of keys read once
 * (1,000 keys read twice at a capacity of 1,000, then 9,000 new keys read
 * once): a key read once must not be counted as often as one read
 * twice.  The sketch's counters are shared, and when every counter of a
 * key grew with every read of every key sharing it, enough of the flood's
 * keys were counted three times or more to be let in over some of them:
 * 7,844 to 7,892 of the 8 x 1,000 were kept (twelve processes).  Counted
 * conservatively, none are let in, and 990 are kept of each 1,000 (the
 * other 10 make room for the window).  Eight runs, each under other keys,
 * as if under eight hash seeds.
 */
static void keys_read_once_do_not_pass_keys_read_twice(void **state)
{
	(void)state;
	int kept = 0;
	for (int run = 0; run < 8; run++) {
		aside_cache *c = open_cache("mem://?capacity=1000");
		char twice[16], once[16];
		snprintf(twice, sizeof(twice), "twice%d", run);
		snprintf(once, sizeof(once), "once%d", run);
		for (int round = 0; round < 2; round++)
			for (int i = 0; i < 1000; i++)
				read_hit(c, twice, i);
		for (int i = 0; i < 9000; i++)
			read_hit(c, once, i);
		for (int i = 0; i < 1000; i++) {
			char key[32];
			snprintf(key, sizeof(key), "%s:%d", twice, i);
			kept += resident(c, key);
		}
		assert_true(entries(c) <= 1000);
		aside_cache_close(c);
	}
	if (kept < 8 * 988)
		fail_msg("%d of 8 x 1,000 keys read twice kept, where 8 x 990 "
			 "can be",
			 kept);
}

static void loop_larger_than_cache_still_hits(void **state)
{
	(void)state;
	/* LRU and CLOCK get no hit at all here: each key is evicted just
	 * before it comes round again. */
	aside_cache *c = open_cache("mem://?capacity=100");
	int hits = 0, reads = 0;
	for (int round = 0; round < 60; round++)
		for (int i = 0; i < 150; i++, reads++)
			hits += read_hit(c, "loop", i);
	double ratio = (double)hits / reads;
	if (ratio < 0.5)
		fail_msg("hit ratio %.3f on a loop of 150 keys in 100 places "
			 "(at best 0.66)",
			 ratio);
	aside_cache_close(c);
}

static void new_popular_keys_displace_old_ones(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	for (int round = 0; round < 20; round++)
		for (int i = 0; i < 100; i++)
			read_hit(c, "old", i);
	/* The workload moves on: popularity must age out of the sketch. */
	int hits = 0;
	for (int round = 0; round < 60; round++)
		for (int i = 0; i < 100; i++) {
			bool hit = read_hit(c, "new", i);
			hits += round >= 40 && hit;
		}
	if (hits < 1800)
		fail_msg("the new working set hits %d of its last 2000 reads",
			 hits);
	aside_cache_close(c);
}

/*
 * Bursts: key i is read at steps i, i + gap, i + 2 gap and i + 3 gap, then
 * never again, for `steps` steps.  The hit ratio of the reads from step
 * `from` on.
 */
static double read_bursts(aside_cache *c, const char *prefix, int steps,
			  int gap, int from)
{
	int hits = 0, reads = 0;
	for (int i = 0; i < steps; i++)
		for (int back = 0; back <= 3 * gap; back += gap) {
			if (i - back < 0)
				continue;
			bool hit = read_hit(c, prefix, i - back);
			if (i >= from) {
				hits += hit;
				reads++;
			}
		}
	return reads ? (double)hits / reads : 0;
}

/*
 * A cache of 500, set up by `setup` (if any), then bursts of `gap` for
 * 12,000 steps: the reads from step `from` on must hit at least `floor`
 * (LRU gets 0.75), within the capacity.
 *
 * These workloads can leave the policy, rarely, in a state it does not
 * leave: the window at nothing, nearly every read a miss, and the ghost of
 * turned-away keys forgetting each key before it comes back (about one
 * run in 4,000 with a fresh hash seed, docs/performance.md).  So a run
 * that falls short gets one more try on a fresh cache.  A policy that
 * does not serve the workload fails both.
 */
static void expect_bursts_served(bool (*setup)(aside_cache *),
				 const char *prefix, int gap, int from,
				 double floor)
{
	double ratio[2] = {-1, -1};
	for (int run = 0; run < 2; run++) {
		char p[32];
		snprintf(p, sizeof(p), "%s%d", prefix, run);
		aside_cache *c = open_cache("mem://?capacity=500");
		if (!setup || setup(c))
			ratio[run] = read_bursts(c, p, 12000, gap, from);
		assert_true(entries(c) <= 500);
		aside_cache_close(c);
		if (ratio[run] >= floor)
			return;
	}
	fail_msg("hit ratio %.3f, then %.3f on a fresh cache, from step %d, "
		 "where LRU gets 0.75 (-1: its setup fell short)",
		 ratio[0], ratio[1], from);
}

static void window_grows_for_recency(void **state)
{
	(void)state;
	/*
	 * Each key is read a few times in a burst shortly after it first
	 * appears, then never again; a fresh key has no history, so a
	 * filter with a 1% window turns most of them away.  The adaptive
	 * window should learn to keep them, as LRU does.
	 */
	aside_cache *c = open_cache("mem://?capacity=500");
	double ratio = read_bursts(c, "burst", 20000, 50, 0);
	/* Everything fits in 500 places by LRU: 3 hits in 4 reads. */
	if (ratio < 0.7)
		fail_msg("hit ratio %.3f where LRU gets 0.75", ratio);
	aside_cache_close(c);
}

/* 500 keys read once: a cache full of keys that never come back. */
static bool read_once(aside_cache *c)
{
	for (int i = 0; i < 500; i++)
		read_hit(c, "once", i);
	return true;
}

/*
 * A cache of 500 full of keys that never come back, then keys each read
 * four times, 100 steps apart: a window of about 400 entries keeps them
 * all (LRU hits 3 reads of 4).  The window must grow to that and stop
 * there.  Had it overshot to the whole cache it could not come back (with
 * no main area, no victim of main's ever returns to say so), and a whole
 * cache of CLOCK, which gives an entry read long ago a second lap as if it
 * were just read, hits about 0.62 here: a rule that grew the window in
 * proportion to the turned-away keys' lead did that (docs/performance.md).
 */
static void window_grows_for_bursts_and_stops(void **state)
{
	(void)state;
	expect_bursts_served(read_once, "four", 100, 6000, 0.72);
}

/*
 * A window that grew to the whole cache comes back when the workload
 * changes.  Bursts that need all of a cache of 500 as their window (each
 * key read four times, 124 steps apart) take it there; then comes a loop
 * of 1,000 keys, which only the frequency filter serves (it keeps about
 * half of them; LRU, or a window of the whole cache, keeps none, each key
 * evicted before it comes round again).  Once the window was the whole
 * cache, no ghost could see anything to bring it back.
 */
static void window_comes_back_when_the_workload_changes(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=500");
	for (int i = 0; i < 500; i++)
		read_hit(c, "once", i);
	read_bursts(c, "burst", 6000, 124, 6000);
	int hits = 0, reads = 0;
	for (int round = 0; round < 40; round++)
		for (int k = 0; k < 1000; k++) {
			bool hit = read_hit(c, "loop", k);
			if (round >= 30) {
				hits += hit;
				reads++;
			}
		}
	double ratio = (double)hits / reads;
	if (ratio < 0.3)
		fail_msg("the loop hits %.3f of its last 10 rounds, where the "
			 "filter keeps about half of it",
			 ratio);
	assert_true(entries(c) <= 500);
	aside_cache_close(c);
}

/*
 * Keys read four times, 75 steps apart, from a cold cache.  The first fill
 * lets everything in and promotes what was read during it, so protected
 * starts full of keys that are about to die; before protected had a hand
 * they stayed there for good, the few places left turned over too fast
 * for a key's next read, and the keys that came back told the window to
 * shrink: 0.00 to 0.04 where LRU gets 0.75.
 */
static void window_grows_for_bursts_from_a_cold_start(void **state)
{
	(void)state;
	expect_bursts_served(NULL, "cold", 75, 6000, 0.7);
}

/*
 * The same 90 steps apart, counted from the start.  The hand at its usual
 * pace (a step in 16 misses) left the first fill's keys in protected long
 * enough for the window to shrink to nothing, and with nearly every read a
 * miss the ghost of turned-away keys forgot each key before it came back:
 * 0.11 where LRU gets 0.75.  The collapse rule below now brings such a
 * shard back, but only after the loss: 0.69 to 0.70 over the whole run.
 * The hand's first lap, a step a miss, lets the fill's keys go in time:
 * 0.737.
 */
static void first_fill_gives_way_in_one_lap(void **state)
{
	(void)state;
	expect_bursts_served(NULL, "cold", 90, 0, 0.72);
}

/*
 * The same 124 steps apart, which needs all but a few places of the cache
 * as its window.  Even with the first lap the window shrinks before the
 * fill's keys are gone, and then, with nearly every read a miss, the ghost
 * of turned-away keys forgets each key before it comes back: nothing said
 * the window should grow again (0.11 where LRU gets 0.75).  A shard that
 * has collapsed so also hears the turned-away keys that ghost forgot: 0.64
 * to 0.66 in the second half.
 */
static void collapsed_shard_finds_its_way_back(void **state)
{
	(void)state;
	expect_bursts_served(NULL, "cold", 124, 6000, 0.6);
}

/*
 * A loop the filter serves (about half its reads hit), so that the test
 * knows protected was full of it; it too falls short now and then (2,795
 * hits once in 600 runs), and the run then counts as one that failed.
 */
static bool read_loop(aside_cache *c)
{
	int hits = 0;
	for (int round = 0; round < 40; round++)
		for (int k = 0; k < 1000; k++)
			hits += round >= 30 && read_hit(c, "loop", k);
	if (hits < 3000)
		print_message("the loop hits %d of its last 10,000 reads\n",
			      hits);
	return hits >= 3000;
}

/*
 * A cold cache of 500: 300 keys read twice (protected and probation hold
 * them), then keys read four times, 75 steps apart, for 3,000 steps, and
 * every 4th step one of the 300 again, in turn.  The hit ratio over all
 * of it.
 */
static double read_bursts_beside_warm_keys(const char *prefix)
{
	char warm[32], burst[32];
	snprintf(warm, sizeof(warm), "%s-warm", prefix);
	snprintf(burst, sizeof(burst), "%s-burst", prefix);
	aside_cache *c = open_cache("mem://?capacity=500");
	int hits = 0, reads = 0, next = 0;
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 300; i++, reads++)
			hits += read_hit(c, warm, i);
	for (int i = 0; i < 3000; i++) {
		for (int back = 0; back <= 3 * 75 && back <= i; back += 75) {
			hits += read_hit(c, burst, i - back);
			reads++;
		}
		if (i % 4 == 0) {
			hits += read_hit(c, warm, next++ % 300);
			reads++;
		}
	}
	assert_true(entries(c) <= 500);
	aside_cache_close(c);
	return (double)hits / reads;
}

/*
 * The workload above wants most of the cache as its window from the
 * start, and the 300 come back only after the window has squeezed them out
 * of the main area (as lirs-sprite does).  Climbing a step a return, the
 * window reached that share only after thousands of misses: 0.659, where
 * LRU gets 0.690; with the slow start (end_slow_start_locked), 0.672 to
 * 0.674 for 298 hash seeds of 300 (the same reads replayed by `aside
 * trace`).  In the other two, a victim of the main area came back before
 * the window had reached half the cache, the window went back, and the
 * run scored 0.660 and 0.661, as before the slow start.  So a run that
 * falls short gets one more try on a fresh cache, under other keys; a
 * policy without the slow start fails both.
 */
static void window_slow_start_keeps_what_recency_needs(void **state)
{
	(void)state;
	double first = read_bursts_beside_warm_keys("slow0");
	if (first >= 0.665)
		return;
	double second = read_bursts_beside_warm_keys("slow1");
	if (second < 0.665)
		fail_msg(
		    "hit ratio %.4f, then %.4f on a fresh cache, where LRU "
		    "gets 0.690",
		    first, second);
}

/*
 * A loop the filter serves, then keys read four times 100 steps apart.
 * The loop's keys fill protected and are never read again: they must give
 * way (protected's hand), or the bursts get what little is left (0.05
 * before the hand; LRU 0.75).
 */
static void protected_gives_way_when_its_keys_stop(void **state)
{
	(void)state;
	expect_bursts_served(read_loop, "four", 100, 6000, 0.7);
}

/*
 * The hit ratio of `reads` reads of a Zipf(theta) workload over `keys`
 * ranks (rank i drawn with weight (i + 1)^-theta by a fixed sequence) in a
 * fresh cache of `capacity` entries, which must never hold more.  Rank i
 * is key i; or, with `every` above 0, a new key comes every that many
 * reads and rank i is the key that came i keys before the newest
 * (popularity that fades as a key ages).
 */
static double popularity_hit_ratio(double theta, int keys, int every, int reads,
				   int capacity, int shards)
{
	double *cum = malloc((size_t)keys * sizeof(*cum)), total = 0;
	assert_non_null(cum);
	for (int i = 0; i < keys; i++)
		cum[i] = total += pow(i + 1, -theta);
	char url[64];
	if (shards > 0)
		snprintf(url, sizeof(url), "mem://?capacity=%d&shards=%d",
			 capacity, shards);
	else
		snprintf(url, sizeof(url), "mem://?capacity=%d", capacity);
	aside_cache *c = open_cache(url);
	uint64_t x = 88172645463325252ull;
	int hits = 0, newest = keys;
	for (int n = 0; n < reads; n++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		double u = (double)(x >> 11) / 9007199254740992.0 * total;
		int lo = 0, hi = keys - 1;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (cum[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (every > 0 && n % every == 0)
			newest++;
		hits += read_hit(c, "zipf", every > 0 ? newest - lo : lo);
	}
	free(cum);
	assert_true(entries(c) <= capacity);
	aside_cache_close(c);
	return (double)hits / reads;
}

/* The same, rank i always key i. */
static double zipf_hit_ratio(double theta, int keys, int reads, int capacity)
{
	return popularity_hit_ratio(theta, keys, 0, reads, capacity, 0);
}

/*
 * A Zipf workload (0.8 over 20,000 keys, 300,000 reads) at a capacity of
 * 500.  Its keys of middling rank are read less often than protected turns
 * over, and only the frequency filter keeps them.  Protected's hand must not
 * demote them faster than that: moving it every 4 misses did, and they
 * lost to newcomers in probation (0.356 where Caffeine 2.6.2 gets 0.377 on
 * the same kind of trace; every 16 misses, 0.377).
 */
static void zipf_keeps_its_middling_keys(void **state)
{
	(void)state;
	double ratio = zipf_hit_ratio(0.8, 20000, 300000, 500);
	if (ratio < 0.37)
		fail_msg("hit ratio %.4f, where Caffeine gets about 0.377",
			 ratio);
}

/*
 * Less skew over more keys (0.6 over 50,000, 300,000 reads, capacity 500):
 * the keys the cache should keep are read less often than even a step in
 * 16 misses laps protected, so the hand must slow down when what it sends
 * to probation is read again there.  At a fixed 16 it demoted them and
 * they lost to newcomers: 0.098, where Caffeine 2.6.2 gets 0.123 on the
 * same reads; now 0.123 to 0.124.
 */
static void zipf_of_low_skew_keeps_its_warm_keys(void **state)
{
	(void)state;
	double ratio = zipf_hit_ratio(0.6, 50000, 300000, 500);
	if (ratio < 0.115)
		fail_msg("hit ratio %.4f, where Caffeine gets 0.123", ratio);
}

/*
 * Zipf 0.7 over 20,000 keys at 4,000 entries (four shards), 300,000
 * reads: keys come back from far in both ghosts at steady rates, and
 * counting every return alike held the window at a few percent of each
 * shard, where 1% does better: 0.548, where Caffeine gets 0.551 on the
 * same reads.  Counting only the returns of keys that left lately while
 * the ghosts are contested: 0.552 to 0.553.
 */
static void zipf_keeps_its_window_small(void **state)
{
	(void)state;
	double ratio = zipf_hit_ratio(0.7, 20000, 300000, 4000);
	if (ratio < 0.5503)
		fail_msg("hit ratio %.4f, where Caffeine gets 0.551", ratio);
}

/*
 * Popularity that fades (600,000 reads at a capacity of 1,000, a new key
 * every 10, a read taking the key ranked by how lately it came, Zipf 1.0
 * over the newest 20,000): protected fills with keys that were hot and are
 * read less and less, and what the hand sends down is never read again.
 * At a floor of a step in 16 misses its lap was too slow to clear them:
 * 0.526 to 0.527; now 0.539 to 0.542, where LRU gets 0.543 and Caffeine
 * 2.6.2 0.376 on the same reads.
 */
static void fading_popularity_speeds_the_hand(void **state)
{
	(void)state;
	double ratio = popularity_hit_ratio(1.0, 20000, 10, 600000, 1000, 0);
	if (ratio < 0.533)
		fail_msg("hit ratio %.4f, where LRU gets 0.543", ratio);
}

/*
 * The same at 100,000 entries (Zipf 0.8 over the newest 300,000, a new key
 * every 3 reads, 1,000,000 reads), where the window must grow as fast for
 * its size as in a small cache: it moved one entry a return, the cache
 * turned over only a few times, and the window had not grown enough by the
 * end: 0.408 to 0.409.  With steps of 3 (window_step), 0.432 to 0.433,
 * whether the cache has its 64 shards or one; LRU gets 0.459 and Caffeine
 * 2.6.2 0.280 on the same reads.
 */
static void large_cache_window_keeps_pace(void **state)
{
	(void)state;
	double many = popularity_hit_ratio(0.8, 300000, 3, 1000000, 100000, 0);
	double one = popularity_hit_ratio(0.8, 300000, 3, 1000000, 100000, 1);
	if (many < 0.42 || one < 0.42)
		fail_msg("hit ratio %.4f (64 shards), %.4f (one), where LRU "
			 "gets 0.459",
			 many, one);
}

/* Reads key as often as n misses: loaded, then invalidated, n times. */
static void count_misses(aside_cache *c, const char *key, int n)
{
	for (int i = 0; i < n; i++) {
		assert_int_equal(get(c, key), ASIDE_OK);
		assert_int_equal(
		    aside_cache_invalidate(c, key, strlen(key), NULL),
		    ASIDE_OK);
	}
}

/*
 * One round of a key the filter turned away coming back: 99 entries read
 * three times each (counted three times, never hit) fill a cache of 100;
 * the key, seen once, loses to the first of them and is turned away; when
 * it comes back it is counted twice, still less than the next of them,
 * and is let in all the same.  Whether it is resident at the end.
 */
static bool turned_away_key_kept(const char *round)
{
	aside_cache *c = open_cache("mem://?capacity=100");
	char key[32];
	for (int i = 0; i < 99; i++) {
		snprintf(key, sizeof(key), "%s:m:%d", round, i);
		count_misses(c, key, 2);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	const char *order[] = {"c", "d", "c", "e", "f"};
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "%s:%s", round, order[i]);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	snprintf(key, sizeof(key), "%s:c", round);
	bool kept = resident(c, key);
	assert_true(entries(c) <= 100);
	aside_cache_close(c);
	return kept;
}

static void turned_away_key_is_let_in_when_it_returns(void **state)
{
	(void)state;
	/* Three rounds on different keys: a round can lose only if the
	 * sketch's four counters of a key all collide with others'. */
	int kept = 0;
	for (int r = 0; r < 3; r++) {
		char round[8];
		snprintf(round, sizeof(round), "r%d", r);
		kept += turned_away_key_kept(round);
	}
	if (kept < 2)
		fail_msg("a key turned away and back was turned away again in "
			 "%d of 3 rounds",
			 3 - kept);
}

/*
 * One round of a newcomer counted three times against main's victim,
 * counted twice: 100 entries fill a cache of 100, each counted twice,
 * either by two misses or, with hit_in_main, by a miss and a hit in the
 * cache (counted when the policy collects it, which promotes the entry).
 * Then the newcomer comes: the victim it meets was hit in the main area
 * and counts one more, a tie, or it was not.  Whether the newcomer is
 * resident after.
 */
static bool newcomer_let_in(const char *round, bool hit_in_main)
{
	aside_cache *c = open_cache("mem://?capacity=100");
	char key[32];
	snprintf(key, sizeof(key), "%s:new", round);
	count_misses(c, key, 2);
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "%s:m:%d", round, i);
		if (!hit_in_main)
			count_misses(c, key, 1);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	for (int i = 0; hit_in_main && i < 100; i++) {
		snprintf(key, sizeof(key), "%s:m:%d", round, i);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	snprintf(key, sizeof(key), "%s:new", round);
	assert_int_equal(get(c, key), ASIDE_OK);
	assert_int_equal(get(c, "next"), ASIDE_OK);
	bool in = resident(c, key);
	assert_true(entries(c) <= 100);
	aside_cache_close(c);
	return in;
}

static void victim_hit_in_main_keeps_its_place(void **state)
{
	(void)state;
	int kept = 0, let_in = 0;
	for (int r = 0; r < 3; r++) {
		char round[8];
		snprintf(round, sizeof(round), "r%d", r);
		kept += !newcomer_let_in(round, true);
		let_in += newcomer_let_in(round, false);
	}
	if (kept < 2)
		fail_msg("a newcomer counted once more took the place of a "
			 "victim hit in the main area in %d of 3 rounds",
			 3 - kept);
	if (let_in < 2)
		fail_msg("a newcomer counted once more was turned away by a "
			 "victim never hit in %d of 3 rounds",
			 3 - let_in);
}

static void byte_bound_is_respected(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=1000&max_bytes=20000");
	value_size = 1000;
	for (int i = 0; i < 200; i++) {
		char key[16];
		snprintf(key, sizeof(key), "b:%d", i);
		assert_int_equal(get(c, key), ASIDE_OK);
		/* each entry costs more than its 1000 bytes */
		assert_true(entries(c) < 20);
	}
	assert_true(entries(c) >= 10);
	aside_cache_close(c);
}

static void oversized_value_is_served_not_cached(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=10&max_bytes=4096");
	value_size = 8192;
	assert_int_equal(get(c, "big:1"), ASIDE_OK);
	assert_int_equal(entries(c), 0);
	aside_metrics m;
	aside_cache_metrics(c, &m);
	assert_int_equal(m.tier_errors, 1);
	aside_cache_close(c);
}

static size_t room_size;

/* A value whose head has room_size bytes of room, filled with the key. */
static int load_room(void *arg, const char *key, size_t klen, aside_value **out,
		     aside_error *err)
{
	(void)arg;
	(void)err;
	atomic_fetch_add(&loads, 1);
	int rc = aside_value_new_room(key, klen, key, klen, room_size, out);
	if (rc == ASIDE_OK) {
		size_t room;
		char *p = aside_value_room(*out, &room);
		for (size_t i = 0; p && i < room; i++)
			p[i] = key[i % klen];
	}
	return rc;
}

/* Heads of every size up to 2 MiB are kept and read back whole; a larger
 * one is served, not kept (the L1 names heads in its region: value.c). */
static void heads_of_every_size_are_kept_up_to_2_mib(void **state)
{
	(void)state;
	static const aside_loader room_loader = {load_room, NULL, NULL};
	static const size_t rooms[] = {
	    0, 24, 200, 300, 1000, 5000, 40000, 1000000, (2u << 20) - 1024};
	aside_cache *c = open_cache("mem://?capacity=100");
	for (size_t r = 0; r < sizeof(rooms) / sizeof(rooms[0]); r++) {
		char key[32];
		snprintf(key, sizeof(key), "room:%zu", rooms[r]);
		size_t klen = strlen(key);
		room_size = rooms[r];
		for (int round = 0; round < 2; round++) {
			aside_value *v;
			assert_int_equal(aside_cache_get(c, key, klen,
							 &room_loader, &v,
							 NULL),
					 ASIDE_OK);
			size_t room;
			const char *p = aside_value_room(v, &room);
			assert_true(room >= rooms[r]);
			for (size_t i = 0; i < rooms[r]; i++)
				if (p[i] != key[i % klen])
					fail_msg("room %zu: byte %zu is %d",
						 rooms[r], i, p[i]);
			aside_value_unref(v);
		}
		if (loads != r + 1)
			fail_msg("room %zu: %u loads for %zu keys", rooms[r],
				 loads, r + 1);
		assert_true(resident(c, key));
	}
	int64_t kept = entries(c);
	room_size = 3u << 20;
	aside_value *v;
	assert_int_equal(
	    aside_cache_get(c, "room:big", 8, &room_loader, &v, NULL),
	    ASIDE_OK);
	aside_value_unref(v);
	assert_false(resident(c, "room:big"));
	assert_int_equal(entries(c), kept);
	aside_metrics m;
	aside_cache_metrics(c, &m);
	assert_int_equal(m.tier_errors, 1);
	aside_cache_close(c);
}

static void expired_entries_are_misses(void **state)
{
	(void)state;
	aside_cache *c =
	    open_cache("mem://?capacity=10&ttl_ms=1000&jitter_pct=0");
	assert_int_equal(get(c, "t:1"), ASIDE_OK);
	now_us += 999999;
	assert_true(resident(c, "t:1"));
	now_us += 1;
	assert_false(resident(c, "t:1"));
	assert_int_equal(get(c, "t:1"), ASIDE_OK);
	assert_int_equal(loads, 2);
	aside_cache_close(c);
}

/*
 * Expired entries make room before live ones: a full cache whose short-TTL
 * half has expired takes as many new keys without losing a live one, and
 * keeps the new keys (an expired entry never wins a place against them).
 */
static void expired_entries_make_room_first(void **state)
{
	(void)state;
	aside_cache *c =
	    open_cache("mem://?capacity=100&ttl_ms=3600000&jitter_pct=0");
	assert_int_equal(aside_cache_set_ttl(c, "short", 1000, 0), ASIDE_OK);
	char key[32];
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 50; i++) {
			snprintf(key, sizeof(key), "long:%d", i);
			assert_int_equal(get(c, key), ASIDE_OK);
			snprintf(key, sizeof(key), "short:%d", i);
			assert_int_equal(get(c, key), ASIDE_OK);
		}
	assert_int_equal(entries(c), 100);
	now_us += 2000000; /* the short half expires */
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "new:%d", i);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	int live = 0, fresh = 0;
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "long:%d", i);
		live += resident(c, key);
		snprintf(key, sizeof(key), "new:%d", i);
		fresh += resident(c, key);
	}
	assert_int_equal(live, 50);
	assert_int_equal(fresh, 50);
	assert_true(entries(c) <= 100);
	aside_cache_close(c);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* The default clock goes through the ticker; an entry still expires. */
static void default_clock_expires_entries(void **state)
{
	(void)state;
	aside_cache *c = NULL;
	assert_int_equal(aside_cache_open("mem://?capacity=10&ttl_ms=40&"
					  "jitter_pct=0",
					  &c, NULL),
			 ASIDE_OK);
	loads = 0;
	assert_int_equal(get(c, "d:1"), ASIDE_OK);
	assert_true(resident(c, "d:1"));
	/* 40 ms, plus a tick of the coarse clock and the ticker's own. */
	sleep_ms(200);
	assert_false(resident(c, "d:1"));
	assert_int_equal(get(c, "d:1"), ASIDE_OK);
	assert_int_equal(loads, 2);

	/* A child of fork() has no ticker thread: it reads the clock itself,
	 * so its entries expire too. */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = get(c, "d:2") != ASIDE_OK || !resident(c, "d:2");
		/* A cache opened in the child starts the child's own
		 * ticker, and closing it stops that ticker cleanly.
		 * (ThreadSanitizer cannot start threads after a fork of a
		 * threaded process.) */
#ifndef TEST_TSAN
		aside_cache *c2 = NULL;
		bad |= aside_cache_open("mem://?capacity=10&ttl_ms=40&"
					"jitter_pct=0",
					&c2, NULL) != ASIDE_OK;
		bad |= c2 == NULL || get(c2, "d:3") != ASIDE_OK ||
		       !resident(c2, "d:3");
		sleep_ms(200);
		bad |= resident(c2, "d:3");
		aside_cache_close(c2);
#else
		sleep_ms(200);
#endif
		bad |= resident(c, "d:2");
		_exit(bad);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	aside_cache_close(c);
}

static _Atomic int usr1_taken;
static pthread_t usr1_thread;
static void on_usr1(int sig)
{
	(void)sig;
	usr1_thread = pthread_self();
	atomic_store(&usr1_taken, 1);
}

/*
 * The ticker, started while the application still takes SIGUSR1 on its
 * thread, blocks every signal: once the application blocks it too, a
 * SIGUSR1 for the process stays pending instead of running its handler on
 * the library's thread.
 */
static void library_threads_take_no_signals(void **state)
{
	(void)state;
	struct sigaction sa = {0}, old;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, &old);
	sigset_t usr1, was;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &usr1, &was);
	aside_cache *c = NULL;
	assert_int_equal(aside_cache_open("mem://?capacity=10", &c, NULL),
			 ASIDE_OK);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	atomic_store(&usr1_taken, 0);
	kill(getpid(), SIGUSR1);
	sleep_ms(100); /* the ticker wakes every few ms */
	assert_int_equal(atomic_load(&usr1_taken), 0);
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL); /* now it is ours */
	assert_int_equal(atomic_load(&usr1_taken), 1);
	assert_true(pthread_equal(usr1_thread, pthread_self()));
	pthread_sigmask(SIG_SETMASK, &was, NULL);
	sigaction(SIGUSR1, &old, NULL);
	aside_cache_close(c);
}

/* One shard's table grows from 8 slots to its largest; nothing is lost. */
static void table_grows_without_losing_entries(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=6000&shards=1");
	char key[32];
	for (int i = 0; i < 6000; i++) {
		snprintf(key, sizeof(key), "g:%d", i);
		assert_int_equal(get(c, key), ASIDE_OK);
	}
	assert_int_equal(entries(c), 6000);
	for (int i = 0; i < 6000; i++) {
		snprintf(key, sizeof(key), "g:%d", i);
		if (!resident(c, key))
			fail_msg("%s lost", key);
	}
	/* Removals shift entries back within the grown table. */
	for (int i = 0; i < 6000; i += 2) {
		snprintf(key, sizeof(key), "g:%d", i);
		assert_int_equal(
		    aside_cache_invalidate(c, key, strlen(key), NULL),
		    ASIDE_OK);
	}
	for (int i = 0; i < 6000; i++) {
		snprintf(key, sizeof(key), "g:%d", i);
		assert_int_equal(resident(c, key), i % 2 == 1);
	}
	assert_int_equal(loads, 6000);
	aside_cache_close(c);
}

/*
 * Keys whose slots carry the same tag and start from the same home slot:
 * the lookup picks one of the first two slots by tag alone, so each key
 * must still find its own entry (the third one only past them), before
 * and after the others go.
 */
static void keys_sharing_a_tag_find_their_own(void **state)
{
	(void)state;
	/* One shard of at most 8 entries: its table has 8 slots, so a home
	 * slot is the hash's low 3 bits and a tag its top 16. */
	enum { BITS = 19, WANT = 4 };
	uint32_t(*seen)[WANT] = calloc((size_t)1 << BITS, sizeof(*seen));
	uint8_t *n = calloc((size_t)1 << BITS, 1);
	assert_non_null(seen);
	assert_non_null(n);
	char keys[WANT][16];
	uint32_t found = UINT32_MAX;
	for (uint32_t i = 0; found == UINT32_MAX; i++) {
		char key[16];
		snprintf(key, sizeof(key), "t:%u", i);
		uint64_t h = aside_hash(key, strlen(key));
		uint32_t b = (uint32_t)(h >> 48) << 3 | (uint32_t)(h & 7);
		seen[b][n[b]++] = i;
		if (n[b] == WANT)
			found = b;
	}
	for (int k = 0; k < WANT; k++)
		snprintf(keys[k], sizeof(keys[k]), "t:%u", seen[found][k]);
	free(seen);
	free(n);

	aside_cache *c = open_cache("mem://?capacity=8&shards=1");
	for (int k = 0; k < WANT - 1; k++) /* the last is never stored */
		assert_int_equal(get(c, keys[k]), ASIDE_OK);
	assert_int_equal(loads, WANT - 1);
	for (int round = 0; round < 2; round++) {
		for (int k = 0; k < WANT - 1; k++) {
			if (!resident(c, keys[k]))
				fail_msg("%s not found", keys[k]);
			assert_int_equal(get(c, keys[k]), ASIDE_OK);
		}
		assert_false(resident(c, keys[WANT - 1]));
		assert_int_equal(loads, WANT - 1);
	}
	/* Each removal shifts the others back over the home slot. */
	for (int gone = 0; gone < WANT - 1; gone++) {
		assert_int_equal(aside_cache_invalidate(
				     c, keys[gone], strlen(keys[gone]), NULL),
				 ASIDE_OK);
		for (int k = 0; k < WANT; k++)
			if (resident(c, keys[k]) != (k > gone && k < WANT - 1))
				fail_msg("after %s went, %s is %s", keys[gone],
					 keys[k],
					 resident(c, keys[k]) ? "there"
							      : "gone");
	}
	aside_cache_close(c);
}

struct grower {
	aside_cache *c;
	_Atomic int done; /* keys [0, done) were filled */
	_Atomic bool finished;
	_Atomic int wrong;
	_Atomic long reads;
};

static void *read_filled(void *arg)
{
	struct grower *g = arg;
	unsigned r = 1;
	char key[32];
	while (!atomic_load(&g->finished)) {
		int done = atomic_load(&g->done);
		if (done == 0)
			continue;
		atomic_fetch_add(&g->reads, 1);
		r = r * 1103515245 + 12345;
		snprintf(key, sizeof(key), "r:%u", (r >> 8) % (unsigned)done);
		/* get() fails the test if the value is another key's. */
		if (get(g->c, key) != ASIDE_OK)
			atomic_fetch_add(&g->wrong, 1);
	}
	return NULL;
}

/* Lock-free readers during every growth of one shard's table. */
static void readers_while_the_table_grows(void **state)
{
	(void)state;
	struct grower g = {open_cache("mem://?capacity=50000&shards=1"), 0,
			   false, 0, 0};
	enum { T = 3 };
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		pthread_create(&th[i], NULL, read_filled, &g);
	char key[32];
	for (int i = 0; i < 50000; i++) {
		snprintf(key, sizeof(key), "r:%d", i);
		assert_int_equal(get(g.c, key), ASIDE_OK);
		atomic_store(&g.done, i + 1);
	}
	atomic_store(&g.finished, true);
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(g.wrong, 0);
	assert_int_equal(entries(g.c), 50000);
	/* A reader misses a filled key only while it probes a table that
	 * was just outgrown: rarely. */
	long missed = (long)loads - 50000;
	if (missed > g.reads / 100 + 100)
		fail_msg("%ld of %ld reads missed", missed, (long)g.reads);
	aside_cache_close(g.c);
}

static void held_value_outlives_eviction_and_close(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=1");
	aside_value *v;
	assert_int_equal(aside_cache_get(c, "h:1", 3, &loader, &v, NULL),
			 ASIDE_OK);
	assert_int_equal(get(c, "h:2"), ASIDE_OK); /* evicts h:1 */
	assert_false(resident(c, "h:1"));
	aside_cache_close(c);
	size_t len;
	const char *d = aside_value_data(v, &len);
	assert_int_equal(len, 16);
	assert_memory_equal(d, "h:1h:1h:1h:1h:1h", 16);
	aside_value_unref(v);
}

static void long_keys_work(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	char key[ASIDE_KEY_MAX + 1];
	memset(key, 'x', ASIDE_KEY_MAX);
	key[ASIDE_KEY_MAX] = '\0';
	assert_int_equal(get(c, key), ASIDE_OK);
	assert_int_equal(get(c, key), ASIDE_OK);
	assert_int_equal(loads, 1);
	key[ASIDE_KEY_MAX - 1] = 'y'; /* same length, same prefix */
	assert_int_equal(get(c, key), ASIDE_OK);
	assert_int_equal(loads, 2);
	aside_cache_close(c);
}

/*
 * Values of every shape keep their key, room and bytes while thousands of
 * others are made and freed around them: heads of one to four cache lines
 * and bodies of up to 16 KiB come from pools carved from mapped chunks,
 * larger ones from the heap.  Two threads at once, so that the pools'
 * locking runs under TSan too, then two more free what those made while
 * a third makes more.
 */
static void make_shape_key(char *key, size_t klen, int i)
{
	memset(key, 'a' + (i % 26), klen);
	memcpy(key, &i, sizeof(i) < klen ? sizeof(i) : klen);
}

enum { SHAPES = 4000 };

static void *shape_round(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	enum { N = SHAPES };
	static const size_t klens[] = {1,  8,  16,  24,
				       25, 40, 100, ASIDE_KEY_MAX};
	static const size_t rooms[] = {0, 8, 61, 64, 150, 300};
	aside_value **vs = calloc(N, sizeof(*vs));
	/* Bodies of every pool (up to 16 KiB), and past them now and then. */
	char key[ASIDE_KEY_MAX], data[17000];
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			if (vs[i] && (i + round) % 3 != 0)
				continue; /* kept from the last round */
			aside_value_unref(vs[i]);
			size_t klen = klens[(i + seed) % 8];
			size_t room = rooms[(i / 8 + seed) % 6];
			size_t len =
			    i % 61 == 0
				? (size_t)(i * 131 + round) % sizeof(data)
				: (size_t)(i * 7 + round) % 1400;
			make_shape_key(key, klen, i);
			memset(data, (char)i, len);
			assert_int_equal(aside_value_new_room(key, klen, data,
							      len, room,
							      &vs[i]),
					 ASIDE_OK);
			assert_int_equal((uintptr_t)vs[i] % 64, 0);
			size_t got_room;
			char *r = aside_value_room(vs[i], &got_room);
			assert_true(got_room >= room);
			for (size_t b = 0; b < got_room; b++)
				assert_int_equal(r[b], 0);
			if (got_room)
				memset(r, (char)(i + 1), got_room);
		}
		for (int i = 0; i < N; i++) {
			size_t klen, len, room;
			const char *k = aside_value_key(vs[i], &klen);
			const unsigned char *d = aside_value_data(vs[i], &len);
			const char *r = aside_value_room(vs[i], &room);
			assert_int_equal(klen, klens[(i + seed) % 8]);
			make_shape_key(key, klen, i);
			assert_memory_equal(k, key, klen);
			for (size_t b = 0; b < len; b++)
				assert_int_equal(d[b], (unsigned char)i);
			assert_int_equal(d[len], 0);
			for (size_t b = 0; b < room; b++)
				assert_int_equal(r[b], (char)(i + 1));
		}
	}
	return vs; /* the caller frees them */
}

/* Frees an array of values made by shape_round in another thread. */
static void *free_shapes(void *arg)
{
	aside_value **vs = arg;
	for (int i = 0; i < SHAPES; i++)
		aside_value_unref(vs[i]);
	free(vs);
	return NULL;
}

static void values_of_every_shape_keep_their_bytes(void **state)
{
	(void)state;
	pthread_t t, u;
	void *theirs;
	assert_int_equal(pthread_create(&t, NULL, shape_round, (void *)1), 0);
	void *mine = shape_round((void *)2);
	pthread_join(t, &theirs); /* its blocks go back to the pools */
	/* Freed by threads that did not make them, one of which has never
	 * taken a block, while this one makes more. */
	assert_int_equal(pthread_create(&t, NULL, free_shapes, theirs), 0);
	assert_int_equal(pthread_create(&u, NULL, free_shapes, mine), 0);
	void *again = shape_round((void *)3);
	pthread_join(t, NULL);
	pthread_join(u, NULL);
	free_shapes(again);
}

typedef struct worker {
	aside_cache *c;
	int id;
	_Atomic int *errors;
} worker;

static void *churn(void *arg)
{
	worker *w = arg;
	unsigned r = (unsigned)w->id * 2654435761u + 1;
	for (int n = 0; n < 20000; n++) {
		r = r * 1103515245 + 12345;
		char key[16];
		snprintf(key, sizeof(key), "c:%u", (r >> 8) % 300);
		if ((r >> 4) % 16 == 0) {
			aside_cache_invalidate(w->c, key, strlen(key), NULL);
		} else if (get(w->c, key) != ASIDE_OK) {
			atomic_fetch_add(w->errors, 1);
		}
	}
	return NULL;
}

static void concurrent_readers_and_writers(void **state)
{
	(void)state;
	aside_cache *c = open_cache("mem://?capacity=100");
	_Atomic int errors = 0;
	enum { T = 4 };
	pthread_t th[T];
	worker w[T];
	for (int i = 0; i < T; i++) {
		w[i] = (worker){c, i, &errors};
		pthread_create(&th[i], NULL, churn, &w[i]);
	}
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(errors, 0);
	assert_true(entries(c) <= 100);
	aside_metrics m;
	aside_cache_metrics(c, &m);
	assert_int_equal(m.hits + m.misses,
			 (uint64_t)T * 20000 - m.invalidations);
	aside_cache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(capacity_is_never_exceeded),
	    cmocka_unit_test(policy_evicts_unread_entries_first),
	    cmocka_unit_test(scan_does_not_flush_popular_entries),
	    cmocka_unit_test(keys_read_once_do_not_pass_keys_read_twice),
	    cmocka_unit_test(loop_larger_than_cache_still_hits),
	    cmocka_unit_test(new_popular_keys_displace_old_ones),
	    cmocka_unit_test(window_grows_for_recency),
	    cmocka_unit_test(window_grows_for_bursts_and_stops),
	    cmocka_unit_test(window_grows_for_bursts_from_a_cold_start),
	    cmocka_unit_test(window_slow_start_keeps_what_recency_needs),
	    cmocka_unit_test(first_fill_gives_way_in_one_lap),
	    cmocka_unit_test(collapsed_shard_finds_its_way_back),
	    cmocka_unit_test(protected_gives_way_when_its_keys_stop),
	    cmocka_unit_test(zipf_keeps_its_middling_keys),
	    cmocka_unit_test(zipf_of_low_skew_keeps_its_warm_keys),
	    cmocka_unit_test(zipf_keeps_its_window_small),
	    cmocka_unit_test(large_cache_window_keeps_pace),
	    cmocka_unit_test(fading_popularity_speeds_the_hand),
	    cmocka_unit_test(window_comes_back_when_the_workload_changes),
	    cmocka_unit_test(turned_away_key_is_let_in_when_it_returns),
	    cmocka_unit_test(victim_hit_in_main_keeps_its_place),
	    cmocka_unit_test(byte_bound_is_respected),
	    cmocka_unit_test(oversized_value_is_served_not_cached),
	    cmocka_unit_test(heads_of_every_size_are_kept_up_to_2_mib),
	    cmocka_unit_test(expired_entries_are_misses),
	    cmocka_unit_test(expired_entries_make_room_first),
	    cmocka_unit_test(default_clock_expires_entries),
	    cmocka_unit_test(library_threads_take_no_signals),
	    cmocka_unit_test(table_grows_without_losing_entries),
	    cmocka_unit_test(keys_sharing_a_tag_find_their_own),
	    cmocka_unit_test(readers_while_the_table_grows),
	    cmocka_unit_test(held_value_outlives_eviction_and_close),
	    cmocka_unit_test(long_keys_work),
	    cmocka_unit_test(values_of_every_shape_keep_their_bytes),
	    cmocka_unit_test(concurrent_readers_and_writers),
	};
	if (getenv("TEST_FILTER")) /* one test: TEST_FILTER=name */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
