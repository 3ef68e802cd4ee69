/*
 * metrics.c -- per-thread counter stripes, the load-latency histogram and
 * the Prometheus text rendering.
 */
#include "internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

_Thread_local int aside__stripe_mine
    __attribute__((tls_model("initial-exec"))) = -1;

static pthread_mutex_t stripe_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t stripe_taken; /* bit i: stripe i has an owner; stripe_lock */
static pthread_key_t stripe_key;
static pthread_once_t stripe_once = PTHREAD_ONCE_INIT;

/* At thread exit: the stripe's counts stay, a later thread takes it over. */
static void stripe_release(void *arg)
{
	int i = (int)(intptr_t)arg - 1;
	pthread_mutex_lock(&stripe_lock);
	stripe_taken &= ~(1ull << i);
	pthread_mutex_unlock(&stripe_lock);
}

static void stripe_init(void)
{
	pthread_key_create(&stripe_key, stripe_release);
}

int aside__stripe_claim(void)
{
	pthread_once(&stripe_once, stripe_init);
	int shared = ASIDE__STRIPES - 1, i = shared;
	pthread_mutex_lock(&stripe_lock);
	for (int k = 0; k < shared; k++)
		if (!(stripe_taken & (1ull << k))) {
			stripe_taken |= 1ull << k;
			i = k;
			break;
		}
	pthread_mutex_unlock(&stripe_lock);
	if (i != shared &&
	    pthread_setspecific(stripe_key, (void *)(intptr_t)(i + 1)) != 0) {
		stripe_release((void *)(intptr_t)(i + 1));
		i = shared;
	}
	aside__stripe_mine = i;
	return i;
}

int aside_hist_bucket(uint64_t us)
{
	if (us < 8)
		return (int)us;
	int e = 63 - __builtin_clzll(us); /* 3 and up */
	int b = 8 + (e - 3) * 8 + (int)((us >> (e - 3)) & 7);
	return b < ASIDE_HIST_BUCKETS ? b : ASIDE_HIST_BUCKETS - 1;
}

uint64_t aside_hist_bucket_low_us(int b)
{
	if (b < 8)
		return (uint64_t)b;
	int e = (b - 8) / 8 + 3, sub = (b - 8) % 8;
	return (uint64_t)(8 + sub) << (e - 3);
}

double aside_hist_quantile(const uint64_t hist[ASIDE_HIST_BUCKETS], double q)
{
	uint64_t total = 0;
	for (int i = 0; i < ASIDE_HIST_BUCKETS; i++)
		total += hist[i];
	if (total == 0)
		return 0;
	double rank = q * (double)total, seen = 0;
	for (int i = 0; i < ASIDE_HIST_BUCKETS; i++) {
		if (hist[i] == 0)
			continue;
		if (seen + (double)hist[i] >= rank) {
			double lo = (double)aside_hist_bucket_low_us(i);
			if (i == ASIDE_HIST_BUCKETS - 1)
				return lo;
			double hi = (double)aside_hist_bucket_low_us(i + 1);
			return lo +
			       (hi - lo) * ((rank - seen) / (double)hist[i]);
		}
		seen += (double)hist[i];
	}
	return (double)aside_hist_bucket_low_us(ASIDE_HIST_BUCKETS - 1);
}

/* Appends to buf like snprintf, tracking the length the whole text needs. */
struct out {
	char *buf;
	size_t cap, len;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o,
						      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void counter(struct out *o, const char *prefix, const char *name,
		    const char *help, uint64_t v)
{
	put(o, "# HELP %s_%s %s\n# TYPE %s_%s counter\n%s_%s %llu\n", prefix,
	    name, help, prefix, name, prefix, name, (unsigned long long)v);
}

static void gauge(struct out *o, const char *prefix, const char *name,
		  const char *help, long long v)
{
	put(o, "# HELP %s_%s %s\n# TYPE %s_%s gauge\n%s_%s %lld\n", prefix,
	    name, help, prefix, name, prefix, name, v);
}

/* A counter with one series a tier, labelled with its number and name. */
static void tier_counter(struct out *o, const char *prefix, const char *name,
			 const char *help, const aside_metrics *m,
			 const uint64_t *v)
{
	put(o, "# HELP %s_%s %s\n# TYPE %s_%s counter\n", prefix, name, help,
	    prefix, name);
	for (int i = 0; i < m->ntiers; i++)
		put(o, "%s_%s{tier=\"%d\",name=\"%s\"} %llu\n", prefix, name,
		    i + 1, m->tier_names[i] ? m->tier_names[i] : "",
		    (unsigned long long)v[i]);
}

size_t aside_metrics_prometheus(const aside_metrics *m, const char *prefix,
				char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = '\0';
	if (!prefix || !*prefix)
		prefix = "aside";

	tier_counter(&o, prefix, "cache_hits_total",
		     "Reads served from a cache tier.", m, m->tier_hits);
	put(&o,
	    "# HELP %s_cache_tier_up 1 while a cache tier is usable, 0 while "
	    "it is down.\n# TYPE %s_cache_tier_up gauge\n",
	    prefix, prefix);
	for (int i = 0; i < m->ntiers; i++)
		put(&o, "%s_cache_tier_up{tier=\"%d\",name=\"%s\"} %d\n",
		    prefix, i + 1, m->tier_names[i] ? m->tier_names[i] : "",
		    m->tier_up[i]);
	tier_counter(&o, prefix, "cache_tier_skipped_total",
		     "Cache tier operations refused at once while the tier was "
		     "down (counted in tier errors too).",
		     m, m->tier_skipped);
	tier_counter(&o, prefix, "cache_tier_misses_total",
		     "Lookups a cache tier could not serve.", m,
		     m->tier_misses);
	counter(&o, prefix, "cache_misses_total",
		"Reads no cache tier could serve.", m->misses);
	counter(&o, prefix, "db_loads_total",
		"Loads run against the source (the database).", m->loads);
	counter(&o, prefix, "load_not_found_total", "Loads that found nothing.",
		m->not_found);
	counter(&o, prefix, "load_errors_total", "Loads that failed.",
		m->load_errors);
	counter(&o, prefix, "shared_loads_total",
		"Misses served by another reader's load (single-flight).",
		m->shared_loads);
	counter(&o, prefix, "wait_timeouts_total",
		"Misses that gave up waiting for another reader's load.",
		m->wait_timeouts);
	counter(&o, prefix, "fills_total", "Loaded values stored in the cache.",
		m->fills);
	counter(&o, prefix, "fills_voided_total",
		"Loaded values not stored because the key was invalidated "
		"during the load.",
		m->fills_voided);
	counter(&o, prefix, "invalidations_total", "Keys invalidated.",
		m->invalidations);
	counter(&o, prefix, "remote_invalidations_total",
		"Invalidations published by other caches and applied here.",
		m->remote_invalidations);
	counter(&o, prefix, "l1_flushes_total",
		"Times the in-process cache was emptied because invalidations "
		"may have been missed.",
		m->l1_flushes);
	counter(&o, prefix, "lease_waits_total",
		"Misses that waited for another process's load (its lease).",
		m->lease_waits);
	counter(&o, prefix, "fills_refused_total",
		"Loaded values the shared tier refused because a write voided "
		"the lease during the load.",
		m->fills_refused);
	counter(&o, prefix, "lease_timeouts_total",
		"Loads run without a lease after waiting too long for another "
		"process's.",
		m->lease_timeouts);
	counter(&o, prefix, "stale_served_total",
		"Stale copies served instead of waiting for another process's "
		"load (stale_ms).",
		m->stale_served);
	counter(&o, prefix, "stale_on_error_total",
		"Expired copies served because their load failed "
		"(stale_if_error_ms).",
		m->stale_on_error);
	counter(&o, prefix, "stale_while_revalidate_total",
		"Expired copies served instead of waiting for another "
		"reader's load (stale_while_revalidate_ms).",
		m->stale_while_revalidate);
	counter(&o, prefix, "negative_hits_total",
		"Reads answered not found by a cached absence, with no load "
		"(negative_ttl_ms).",
		m->negative_hits);
	counter(&o, prefix, "breaker_refusals_total",
		"Loads the source's breaker refused (breaker=N).",
		m->breaker_refusals);
	gauge(&o, prefix, "breaker_open",
	      "Whether the source's breaker refuses loads now.",
	      m->breaker_open);
	counter(&o, prefix, "gate_rejects_total",
		"Reads the Bloom gate answered not found, with no load.",
		m->gate_rejects);
	counter(&o, prefix, "gate_fills_total",
		"Times the Bloom gate was filled with every existing key.",
		m->gate_fills);
	gauge(&o, prefix, "gate_armed",
	      "Whether the Bloom gate answers for absent keys now (else it "
	      "lets every key through).",
	      m->gate_armed);
	counter(&o, prefix, "evictions_total",
		"Entries evicted by the in-process tier.", m->evictions);
	counter(&o, prefix, "corrupt_entries_total",
		"Cached entries that failed to decode.", m->corrupt);
	counter(&o, prefix, "tier_errors_total",
		"Cache tier operations that failed.", m->tier_errors);
	gauge(&o, prefix, "cache_entries", "Entries held in process.",
	      (long long)m->entries);

	put(&o,
	    "# HELP %s_load_duration_seconds Time a load took.\n"
	    "# TYPE %s_load_duration_seconds histogram\n",
	    prefix, prefix);
	/* Buckets at powers of two µs: "le" counts durations below 2^k µs. */
	uint64_t cum = 0;
	int b = 0;
	for (int k = 0; k <= 35; k++) {
		uint64_t bound = 1ull << k;
		while (b < ASIDE_HIST_BUCKETS &&
		       aside_hist_bucket_low_us(b) < bound)
			cum += m->load_hist[b++];
		put(&o, "%s_load_duration_seconds_bucket{le=\"%g\"} %llu\n",
		    prefix, (double)bound / 1e6, (unsigned long long)cum);
	}
	while (b < ASIDE_HIST_BUCKETS)
		cum += m->load_hist[b++];
	put(&o, "%s_load_duration_seconds_bucket{le=\"+Inf\"} %llu\n", prefix,
	    (unsigned long long)cum);
	put(&o, "%s_load_duration_seconds_sum %.6f\n", prefix,
	    (double)m->load_time_us_sum / 1e6);
	put(&o, "%s_load_duration_seconds_count %llu\n", prefix,
	    (unsigned long long)cum);
	return o.len;
}
