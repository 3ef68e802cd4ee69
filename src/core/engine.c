/*
 * engine.c -- the cache engine: tiers, the read path with single-flight
 * loads, invalidation, namespace TTL policy and metrics.
 *
 * Single-flight and invalidation share one protocol (docs/design.md):
 *   - a reader that misses L1 joins the flight of its key, or starts one;
 *     only the starter (the leader) reads the lower tiers and loads;
 *   - invalidation marks the key as being invalidated and its flights void,
 *     so readers arriving afterwards start a new flight; it waits while a
 *     leader is storing (every invalidation does, not only the first), then
 *     deletes the key from the tiers, shared ones first, and unmarks it; a
 *     flight started while the key is marked is void from birth, as it may
 *     have read the old value from a tier not yet cleaned;
 *   - the leader stores its result only if the flight is not void, and says
 *     so (`filling`) under the same lock; it never does I/O under the lock.
 * Hence a load begun before an invalidation never stores afterwards, and a
 * read begun after an invalidation returned never joins an older load.  An
 * invalidation heard from another cache (through Redis) runs the same
 * protocol on this cache's L1 alone.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FLIGHT_SHARDS 64
#define READ_ROUNDS 4 /* source reads a flight may make for its readers */
/* A waiter that wakes this late after its deadline was not running. */
#define OVERSLEPT_US 20000

struct flight {
	struct flight *next; /* in its shard's list while linked */
	uint64_t hash;
	char *key;
	size_t klen;
	pthread_cond_t cond; /* signalled when done, or filling ends */
	/* Guarded by the shard lock: */
	int refs;
	bool linked, done, voided, filling, sealed;
	/* Voided by another process's write, heard of after it completed:
	 * its result is then good only for readers it is validated for. */
	bool voided_elsewhere;
	unsigned started; /* source reads begun by the leader */
	unsigned wanted;  /* the read the latest joiner needs (1-based) */
	int status;
	int source; /* tier index that served it, or -1 for the loader */
	bool stale; /* result: the L1's expired copy, the load having failed */
	aside_value *result;
	aside_error err;
	/* When the leader's latest load from the source began (monotonic
	 * microseconds; 0: none yet).  Its joiners wait up to wait_ms from
	 * then, so that a leader that first waited out another process's
	 * lease does not leave them to time out while it loads. */
	_Atomic int64_t load_began_us;
};

/* An invalidation between its first step and its last delete. */
struct inval {
	struct inval *next;
	uint64_t hash;
	char *key;
	size_t klen;
	int count; /* invalidations of this key in progress */
};

struct flight_shard {
	pthread_mutex_t lock;
	struct flight *head;
	struct inval *invals;
} __attribute__((aligned(ASIDE__CACHELINE)));

struct ns_policy {
	struct ns_policy *next;
	char *name;
	int64_t ttl_ms;
	int jitter_pct;
	char **related;
	size_t nrelated;
};

struct aside_cache {
	/* First, where <aside/inline.h> finds it: what a hit compiled into
	 * the caller reads (publish_inline).  Read-only once open. */
	struct aside__inline inl;
	aside_tier
	    tiers[ASIDE_TIERS_MAX]; /* the in-process one first, if any */
	int ntiers;
	void *l1;    /* tiers[0].self when it is the mem tier, else NULL */
	bool leases; /* a tier is shared with other processes, with leases */
	bool serve_stale; /* take a stale copy rather than wait for a lease */
	/* The L1 keeps expired entries as stale copies: for a load that fails
	 * up to error_keep_us past their expiry (stale_if_error_ms), and for
	 * a reader that finds another loading the key up to swr_us
	 * (stale_while_revalidate_ms); 0: not served so. */
	int64_t error_keep_us, swr_us;
	/* A load that finds nothing is cached as an absence this long
	 * (negative_ttl_ms); 0: not cached. */
	int64_t negative_us;
	/* L1 over Redis: served only while the invalidation subscription
	 * confirmed within l1_bound_us that it missed nothing. */
	_Atomic int64_t *confirmed;
	int64_t l1_bound_us;
	/* aside_cache_on_reconnect's hook; guarded by hook_lock, which
	 * it runs under. */
	pthread_mutex_t hook_lock;
	int (*reconnect_fn)(void *arg);
	void *reconnect_arg;
	aside_clock_fn clock;
	void *clock_ctx;
	unsigned ticker; /* the default clock through the ticker; 0: not */
	aside_log_fn log;
	void *log_ctx;
	int64_t wait_ms;
	int64_t default_ttl_ms;
	int default_jitter_pct;

	pthread_mutex_t ns_lock;
	struct ns_policy *ns; /* guarded by ns_lock */
	_Atomic int64_t waiting;

	/* The loader's breaker (breaker=N): after N loads in a row fail, no
	 * load runs until open_until (the cache's clock), then one probe;
	 * its failure doubles the wait, up to BREAKER_MAX_US. */
	unsigned breaker_n; /* 0: off */
	unsigned ttl_adapt; /* the TTL of a hot key, at most, in TTLs; 0: off */
	_Atomic unsigned load_fails;
	_Atomic int64_t breaker_until; /* 0: closed */
	_Atomic int64_t breaker_wait_us;
	_Atomic bool breaker_probing;

	/* The Bloom gate (aside_cache_gate); NULL: none.  Set once, then
	 * replaced by each fill's new filter (gate_fill).  Readers use it
	 * inside a read section; writers, under gate_lock. */
	struct aside__gate *_Atomic gate;
	pthread_mutex_t gate_lock;
	/* The filter a fill is building: writes go to it too.  gate_lock. */
	struct aside__gate *gate_next;
	/* The filter last replaced, until no reader can see it.  gate_lock. */
	struct aside__gate *gate_dead;
	uint64_t gate_dead_grace;
	bool gate_outgrown; /* a fill was asked for, as the gate's is full */
	/* The thread that runs the fills readers ask for (gate_ask): a
	 * fill scans every key, which no request should wait for. */
	pthread_t gate_thread;
	bool gate_thread_started;
	pthread_cond_t gate_cond; /* gate_lock; signals gate_asked, _stop */
	bool gate_asked, gate_stop;
	char *gate_ns; /* keys "ns:..." are gated; set once, with gate */
	size_t gate_nslen;
	uint64_t gate_expected; /* as given; the filters are sized for more */
	aside_gate_fill_fn gate_fill;
	void *gate_arg;
	int64_t gate_refill_us; /* 0: only after a possible loss */
	/* Every key that exists has been added (a fill ran, and no write
	 * can have been missed since it began). */
	_Atomic bool gate_armed;
	_Atomic bool gate_filling;    /* a fill is asked for or runs */
	_Atomic uint64_t gate_gen;    /* bumped when writes may be missed */
	_Atomic int64_t gate_next_us; /* next fill (monotonic µs) */

	struct flight_shard flights[FLIGHT_SHARDS];
	struct aside__stripe stripes[ASIDE__STRIPES];
};

_Static_assert(offsetof(struct aside_cache, inl) == 0,
	       "a cache starts with what <aside/inline.h> reads");
_Static_assert(ASIDE__STRIPE_SHARED == ASIDE__STRIPES - 1,
	       "the last stripe is the shared one");

/*
 * What a hit compiled into the caller needs (<aside/inline.h>), for a cache
 * with an L1 on the default clock (through the ticker); over Redis with a
 * bound, also where the confirmation is kept and the bound, which the
 * header tests as l1_trusted does.  Otherwise abi stays 0 and every read
 * calls in.
 */
static void publish_inline(aside_cache *c)
{
	struct aside__inline *d = &c->inl;
	if (!c->l1 || !c->ticker)
		return;
	aside__mem_inline(c->l1, d);
	if (!d->heads)
		return;
	char *tp = __builtin_thread_pointer();
	d->hash_seed = aside__hash_seed;
	d->now_us = &aside__ticked_us;
	d->epoch = &aside__epoch;
	d->need_fence = &aside__need_fence;
	d->reader_tp = (char *)&aside__me - tp;
	d->stripe_tp = (char *)&aside__stripe_mine - tp;
	d->hits = (char *)&c->stripes[0].c[ASIDE__C_tier_hit0];
	d->stripe_stride = sizeof(c->stripes[0]);
	d->confirmed = c->confirmed;
	d->bound_us = c->l1_bound_us;
	d->abi = ASIDE_INLINE_ABI;
}

static bool has_leases(const aside_tier *t)
{
	return t->ops->version >= 2 && t->ops->lease_get && t->ops->lease_end;
}

/* The cache's time: the ticker's when it runs (ticker.c). */
static inline int64_t now_of(const aside_cache *c)
{
	if (__builtin_expect(c->ticker, 1)) {
		int64_t t = atomic_load_explicit(&aside__ticked_us,
						 memory_order_relaxed);
		if (__builtin_expect(t != 0, 1))
			return t;
	}
	return c->clock(c->clock_ctx);
}

/*
 * Whether the L1 may serve now: always, unless it sits over Redis with a
 * bound, and the invalidation subscription has not confirmed within the
 * bound that it missed nothing (a stalled or starved process, a lost
 * connection, Redis down).  Then reads go past it, to the shared tier.
 * <aside/inline.h> makes the same test (aside__inline_trusted), on the
 * same clock: a change here is a change of ASIDE_INLINE_ABI.
 */
static inline bool l1_trusted(const aside_cache *c)
{
	if (__builtin_expect(!c->confirmed, 1))
		return true;
	int64_t at = atomic_load_explicit(c->confirmed, memory_order_acquire);
	return at && aside__mono_coarse_us() - at <= c->l1_bound_us;
}

/* ---- opening ----------------------------------------------------------- */

struct open_params {
	bool redis;
	aside__tier_params l1; /* capacity 0: no in-process tier */
	aside__redis_params r;
	uint64_t ttl_ms, jitter_pct, wait_ms, l1_bound_ms, breaker, ttl_adapt;
	uint64_t error_keep_ms, swr_ms, negative_ttl_ms;
	uint32_t seen; /* options given, by their place in param's table */
};

static int param(void *ctx, const char *k, size_t klen, const char *v,
		 size_t vlen, aside_error *err)
{
	struct open_params *p = ctx;
	struct {
		const char *name;
		uint64_t *dst, min, max;
		int scheme; /* 0 both, 1 mem, 2 redis */
	} known[] = {
	    {"capacity", &p->l1.capacity, 1, 1ull << 30, 1},
	    {"max_bytes", &p->l1.max_bytes, 1, UINT64_MAX >> 1, 1},
	    {"shards", &p->l1.shards, 1, 1024, 1},
	    {"l1", &p->l1.capacity, 1, 1ull << 30, 2},
	    {"l1_max_bytes", &p->l1.max_bytes, 1, UINT64_MAX >> 1, 2},
	    {"l1_ttl_ms", &p->l1.max_ttl_ms, 1, 100ull * 365 * 86400 * 1000, 2},
	    {"connect_timeout_ms", &p->r.connect_timeout_ms, 1, 60000, 2},
	    {"timeout_ms", &p->r.timeout_ms, 1, 60000, 2},
	    {"pool", &p->r.pool, 1, 1024, 2},
	    {"lease_ms", &p->r.lease_ms, 10, 3600 * 1000, 2},
	    {"tomb_ms", &p->r.tomb_ms, 1, 86400 * 1000, 2},
	    {"stale_ms", &p->r.stale_ms, 0, 86400 * 1000, 2},
	    {"l1_bound_ms", &p->l1_bound_ms, 0, 3600 * 1000, 2},
	    {"stale_if_error_ms", &p->error_keep_ms, 1, 365ull * 86400 * 1000,
	     0},
	    {"stale_while_revalidate_ms", &p->swr_ms, 1, 365ull * 86400 * 1000,
	     0},
	    {"negative_ttl_ms", &p->negative_ttl_ms, 1,
	     (uint64_t)ASIDE_TTL_MAX_MS, 0},
	    {"breaker", &p->breaker, 1, 1000000, 0},
	    {"ttl_adapt", &p->ttl_adapt, 2, 100, 0},
	    {"ttl_ms", &p->ttl_ms, 1, (uint64_t)ASIDE_TTL_MAX_MS, 0},
	    {"jitter_pct", &p->jitter_pct, 0, 100, 0},
	    {"wait_ms", &p->wait_ms, 1, 3600 * 1000, 0},
	};
	_Static_assert(sizeof(known) / sizeof(known[0]) <= 32,
		       "seen has a bit for each option");
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strlen(known[i].name) != klen ||
		    memcmp(known[i].name, k, klen) != 0 ||
		    (known[i].scheme && known[i].scheme != 1 + p->redis))
			continue;
		/* Given twice, which one was meant is a guess: refused. */
		if (p->seen & (UINT32_C(1) << i))
			return aside__fail(err, ASIDE_EURL,
					   "option %s given twice",
					   known[i].name);
		p->seen |= UINT32_C(1) << i;
		if (!aside__parse_u64(v, vlen, known[i].min, known[i].max,
				      known[i].dst))
			return aside__fail(
			    err, ASIDE_EURL,
			    "option %s=%.*s: expected an integer in "
			    "[%llu, %llu]",
			    known[i].name, (int)vlen, v,
			    (unsigned long long)known[i].min,
			    (unsigned long long)known[i].max);
		return ASIDE_OK;
	}
	return aside__fail(err, ASIDE_EURL, "unknown option '%.*s' for %s",
			   (int)klen, k, p->redis ? "redis://" : "mem://");
}

static int hexval(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* Copies a percent-encoded URL part; false if it does not fit or is bad. */
static bool url_part(char *dst, size_t cap, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return false;
			int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= cap)
			return false;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return true;
}

/* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], up to the '?'; url: as shown */
static int parse_redis_authority(const char *url, const char *s, size_t n,
				 aside__redis_params *r, aside_error *err)
{
	const char *at = memchr(s, '@', n);
	if (at) {
		const char *colon = memchr(s, ':', (size_t)(at - s));
		if (!colon ||
		    !url_part(r->user, sizeof(r->user), s,
			      (size_t)(colon - s)) ||
		    !url_part(r->password, sizeof(r->password), colon + 1,
			      (size_t)(at - colon - 1)))
			return aside__fail(err, ASIDE_EURL,
					   "redis URL '%s': expected "
					   "redis://[USER]:PASSWORD@HOST",
					   url);
		n -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	const char *slash = memchr(s, '/', n);
	size_t hostport = slash ? (size_t)(slash - s) : n;
	if (slash &&
	    !aside__parse_u64(slash + 1, n - hostport - 1, 0, 15, &r->db))
		return aside__fail(err, ASIDE_EURL,
				   "redis URL '%s': the database must be a "
				   "number 0-15",
				   url);
	const char *colon = memchr(s, ':', hostport);
	size_t hlen = colon ? (size_t)(colon - s) : hostport;
	if (colon && !aside__parse_u64(colon + 1, hostport - hlen - 1, 1, 65535,
				       &r->port))
		return aside__fail(err, ASIDE_EURL, "redis URL '%s': bad port",
				   url);
	if (hlen == 0 || !url_part(r->host, sizeof(r->host), s, hlen))
		return aside__fail(err, ASIDE_EURL, "redis URL '%s': no host",
				   url);
	return ASIDE_OK;
}

static int invalidate_one(aside_cache *c, const char *key, size_t klen,
			  bool local_only, bool late, int64_t version,
			  aside_error *err);
static struct aside__stripe *stripe(aside_cache *c);

/* From the Redis listener: another cache invalidated key. */
static void heard(void *ctx, const char *key, size_t klen)
{
	if (klen > 0 && klen <= ASIDE_KEY_MAX)
		invalidate_one(ctx, key, klen, true, true, 0, NULL);
}

/*
 * A shared tier is back (from its prober): the application delivers what it
 * owes it.  The hook runs under hook_lock, so that removing it waits for it.
 */
static int back(void *ctx)
{
	aside_cache *c = ctx;
	pthread_mutex_lock(&c->hook_lock);
	int rc = c->reconnect_fn ? c->reconnect_fn(c->reconnect_arg) : ASIDE_OK;
	pthread_mutex_unlock(&c->hook_lock);
	return rc;
}

void aside_cache_on_reconnect(aside_cache *c, int (*fn)(void *arg), void *arg)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->hook_lock);
	c->reconnect_fn = fn;
	c->reconnect_arg = arg;
	pthread_mutex_unlock(&c->hook_lock);
}

int aside_cache_shared(const aside_cache *c)
{
	return c && c->leases;
}

/* From the Redis listener: invalidations may have been missed. */
static void deaf(void *ctx)
{
	aside_cache *c = ctx;
	/* Creates among them: the gate lets everything through until a
	 * fill begun after this has run (gate_ready). */
	atomic_fetch_add(&c->gate_gen, 1);
	atomic_store(&c->gate_armed, false);
	atomic_store(&c->gate_next_us, 0);
	aside__mem_clear(c->l1);
	aside__count(stripe(c), ASIDE__C_l1_flushes, 1);
}

int aside_cache_open(const char *url, aside_cache **out, aside_error *err)
{
	return aside_cache_open_opts(url, NULL, out, err);
}

int aside_cache_open_opts(const char *url, const aside_options *opts,
			  aside_cache **out, aside_error *err)
{
	if (!url || !out)
		return aside__fail(err, ASIDE_EINVAL, "no URL");
	*out = NULL;
	struct open_params p = {
	    .r = {.port = 6379,
		  .connect_timeout_ms = 250,
		  .timeout_ms = 250,
		  .pool = 16,
		  .lease_ms = 5000,
		  .tomb_ms = 60000},
	    .ttl_ms = 3600 * 1000,
	    .jitter_pct = 10,
	    .wait_ms = 5000,
	    .l1_bound_ms = 100,
	};
	const char *rest, *query;
	bool redis_l1 = false;
	int rc;
	char shown[256]; /* the URL as messages show it: no password */
	aside_url_redact(url, shown, sizeof(shown));
	if (strncmp(url, "mem://", 6) == 0) {
		rest = url + 6;
		p.l1.capacity = 100000;
		if (*rest && *rest != '?')
			return aside__fail(err, ASIDE_EURL,
					   "mem:// takes no host or path: '%s'",
					   shown);
		query = *rest ? rest + 1 : rest;
	} else if (strncmp(url, "redis://", 8) == 0) {
		p.redis = true;
		rest = url + 8;
		const char *q = strchr(rest, '?');
		size_t n = q ? (size_t)(q - rest) : strlen(rest);
		rc = parse_redis_authority(shown, rest, n, &p.r, err);
		if (rc != ASIDE_OK)
			return rc;
		query = q ? q + 1 : "";
		redis_l1 = true;
	} else {
		return aside__fail(err, ASIDE_EURL,
				   "unsupported cache URL '%s' (expected "
				   "mem://[?capacity=N] or "
				   "redis://HOST:PORT[?l1=N])",
				   shown);
	}
	rc = aside__parse_query(query, param, &p, err);
	if (rc != ASIDE_OK)
		return rc;
	/* Expired copies are kept by the L1 and by Redis alike. */
	p.r.keep_ms = p.error_keep_ms;
	p.r.swr_ms = p.swr_ms;
	p.l1.stale_ms = p.error_keep_ms > p.swr_ms ? p.error_keep_ms : p.swr_ms;
	if (redis_l1 && p.l1.capacity && !p.l1.max_ttl_ms)
		p.l1.max_ttl_ms =
		    60000; /* a lost invalidation heals in 1 min */

	aside_cache *c = aligned_alloc(ASIDE__CACHELINE, sizeof(*c));
	if (!c)
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	memset(c, 0, sizeof(*c));
	c->clock = opts && opts->clock ? opts->clock : aside_clock_default;
	c->clock_ctx = opts ? opts->clock_ctx : NULL;
	if (c->clock == aside_clock_default)
		c->ticker = aside__ticker_hold();
	c->log = opts ? opts->log : NULL;
	c->log_ctx = opts ? opts->log_ctx : NULL;
	c->wait_ms = (int64_t)p.wait_ms;
	c->swr_us = (int64_t)p.swr_ms * 1000;
	c->negative_us = (int64_t)p.negative_ttl_ms * 1000;
	c->breaker_n = (unsigned)p.breaker;
	c->ttl_adapt = (unsigned)p.ttl_adapt;
	c->default_ttl_ms = (int64_t)p.ttl_ms;
	c->default_jitter_pct = (int)p.jitter_pct;
	pthread_mutex_init(&c->ns_lock, NULL);
	pthread_mutex_init(&c->gate_lock, NULL);
	pthread_cond_init(&c->gate_cond, NULL);
	pthread_mutex_init(&c->hook_lock, NULL);
	for (int i = 0; i < FLIGHT_SHARDS; i++)
		pthread_mutex_init(&c->flights[i].lock, NULL);

	if (p.l1.capacity) {
		rc = aside__mem_open(&p.l1, &c->tiers[c->ntiers], err);
		if (rc != ASIDE_OK)
			goto fail;
		c->l1 = c->tiers[c->ntiers++].self;
		c->error_keep_us = (int64_t)p.error_keep_ms * 1000;
	}
	if (p.redis) {
		p.r.log = c->log;
		p.r.log_ctx = c->log_ctx;
		p.r.clock = c->clock;
		p.r.clock_ctx = c->clock_ctx;
		rc = aside__redis_open(&p.r, &c->tiers[c->ntiers], err);
		if (rc != ASIDE_OK)
			goto fail;
		c->ntiers++;
		void *redis = c->tiers[c->ntiers - 1].self;
		aside__redis_on_back(redis, back, c);
		c->serve_stale = p.r.stale_ms > 0;
		if (c->l1 && p.l1_bound_ms) {
			c->confirmed = aside__redis_confirmed(redis);
			c->l1_bound_us = (int64_t)p.l1_bound_ms * 1000;
		}
		/* Without an L1, only Redis refusing writes is heard. */
		rc = c->l1 ? aside__redis_listen(redis, heard, deaf, c,
						 (int64_t)p.l1_bound_ms * 1000,
						 err)
			   : aside__redis_listen(redis, NULL, NULL, c, 0, err);
		if (rc != ASIDE_OK)
			goto fail;
	}
	for (int i = 0; i < c->ntiers; i++)
		c->leases |= has_leases(&c->tiers[i]);
	publish_inline(c);
	*out = c;
	return ASIDE_OK;
fail:
	aside_cache_close(c);
	return rc;
}

void aside_cache_close(aside_cache *c)
{
	if (!c)
		return;
	if (c->gate_thread_started) { /* its fill uses the tiers */
		pthread_mutex_lock(&c->gate_lock);
		c->gate_stop = true;
		pthread_cond_signal(&c->gate_cond);
		pthread_mutex_unlock(&c->gate_lock);
		pthread_join(c->gate_thread, NULL);
	}
	/* Shared tiers first: Redis's listener writes into the L1. */
	for (int i = c->ntiers - 1; i >= 0; i--)
		c->tiers[i].ops->close(c->tiers[i].self);
	while (c->ns) {
		struct ns_policy *n = c->ns;
		c->ns = n->next;
		for (size_t i = 0; i < n->nrelated; i++)
			free(n->related[i]);
		free(n->related);
		free(n->name);
		free(n);
	}
	aside__gate_free(atomic_load(&c->gate));
	aside__gate_free(c->gate_next);
	aside__gate_free(c->gate_dead);
	free(c->gate_ns);
	pthread_cond_destroy(&c->gate_cond);
	pthread_mutex_destroy(&c->gate_lock);
	pthread_mutex_destroy(&c->ns_lock);
	pthread_mutex_destroy(&c->hook_lock);
	for (int i = 0; i < FLIGHT_SHARDS; i++)
		pthread_mutex_destroy(&c->flights[i].lock);
	aside__ticker_release(c->ticker);
	free(c);
}

/* ---- namespaces -------------------------------------------------------- */

static size_t ns_len(const char *key, size_t klen)
{
	const char *colon = memchr(key, ':', klen);
	return colon ? (size_t)(colon - key) : klen;
}

static struct ns_policy *ns_find_locked(aside_cache *c, const char *ns,
					size_t len)
{
	for (struct ns_policy *n = c->ns; n; n = n->next)
		if (strlen(n->name) == len && memcmp(n->name, ns, len) == 0)
			return n;
	return NULL;
}

static struct ns_policy *ns_get_locked(aside_cache *c, const char *ns)
{
	struct ns_policy *n = ns_find_locked(c, ns, strlen(ns));
	if (n)
		return n;
	n = calloc(1, sizeof(*n));
	if (!n || !(n->name = strdup(ns))) {
		free(n);
		return NULL;
	}
	n->ttl_ms = 0; /* 0: the cache's default */
	n->jitter_pct = -1;
	n->next = c->ns;
	c->ns = n;
	return n;
}

int aside_cache_set_ttl(aside_cache *c, const char *ns, int64_t ttl_ms,
			int jitter_pct)
{
	if (!ns || strchr(ns, ':') || ttl_ms <= 0 ||
	    ttl_ms > ASIDE_TTL_MAX_MS || jitter_pct < 0 || jitter_pct > 100)
		return ASIDE_EINVAL;
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *n = ns_get_locked(c, ns);
	if (n) {
		n->ttl_ms = ttl_ms;
		n->jitter_pct = jitter_pct;
	}
	pthread_mutex_unlock(&c->ns_lock);
	return n ? ASIDE_OK : ASIDE_ENOMEM;
}

int64_t aside_cache_ttl_ms(aside_cache *c, const char *ns)
{
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *n = ns ? ns_find_locked(c, ns, strlen(ns)) : NULL;
	int64_t ttl = n && n->ttl_ms ? n->ttl_ms : c->default_ttl_ms;
	pthread_mutex_unlock(&c->ns_lock);
	return ttl;
}

int aside_cache_add_related(aside_cache *c, const char *ns, const char *key)
{
	if (!ns || strchr(ns, ':') || !key || !*key ||
	    strlen(key) > ASIDE_KEY_MAX)
		return ASIDE_EINVAL;
	int rc = ASIDE_ENOMEM;
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *n = ns_get_locked(c, ns);
	if (n) {
		rc = ASIDE_OK;
		for (size_t i = 0; i < n->nrelated; i++)
			if (strcmp(n->related[i], key) == 0)
				goto out;
		char **r = realloc(n->related, (n->nrelated + 1) * sizeof(*r));
		char *k = strdup(key);
		if (r)
			n->related = r;
		if (!r || !k) {
			free(k);
			rc = ASIDE_ENOMEM;
			goto out;
		}
		n->related[n->nrelated++] = k;
	}
out:
	pthread_mutex_unlock(&c->ns_lock);
	return rc;
}

/* ttl_us less a random share of up to jitter percent of it. */
static int64_t jitter_us(int64_t ttl_us, int jitter)
{
	int64_t span = ttl_us / 100 * jitter;
	if (span > 0)
		ttl_us -= (int64_t)(aside__rand() % (uint64_t)(span + 1));
	return ttl_us;
}

/*
 * When a value loaded now expires: the namespace's TTL, longer for a key
 * read often (ttl_adapt=M: up to M times, in proportion to the L1's count
 * of its reads, 0 to 15), less the jitter.
 */
static int64_t expiry_for(aside_cache *c, const char *key, size_t klen,
			  uint64_t hash, int64_t now_us)
{
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *n = ns_find_locked(c, key, ns_len(key, klen));
	int64_t ttl_ms = n && n->ttl_ms ? n->ttl_ms : c->default_ttl_ms;
	int jitter =
	    n && n->jitter_pct >= 0 ? n->jitter_pct : c->default_jitter_pct;
	pthread_mutex_unlock(&c->ns_lock);
	int64_t ttl_us = ttl_ms * 1000;
	if (c->ttl_adapt > 1 && c->l1) {
		unsigned f = aside__mem_frequency(c->l1, key, klen, hash);
		ttl_us += ttl_us / 15 * (int64_t)f * (c->ttl_adapt - 1);
	}
	return now_us + jitter_us(ttl_us, jitter);
}

/* A cached absence's lifetime: negative_ttl_ms, with key's jitter. */
static int64_t jittered(aside_cache *c, const char *key, size_t klen,
			int64_t ttl_us)
{
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *n = ns_find_locked(c, key, ns_len(key, klen));
	int jitter =
	    n && n->jitter_pct >= 0 ? n->jitter_pct : c->default_jitter_pct;
	pthread_mutex_unlock(&c->ns_lock);
	return jitter_us(ttl_us, jitter);
}

/* ---- flights ----------------------------------------------------------- */

static struct flight_shard *flight_shard(aside_cache *c, uint64_t hash)
{
	return &c->flights[(hash >> 52) % FLIGHT_SHARDS];
}

/*
 * The flight a reader may join: linked, not voided, and still without a
 * result.  A flight that has its result is sealed: a write may have
 * completed, in another process, after the result was read, and a reader
 * that starts after that write must not be handed it.  One that joins
 * before the seal is safe: if a write completes before the leader seals,
 * the leader's fill comes after the write's invalidation and is refused,
 * and the leader reads again for everyone.
 */
static struct flight *flight_find_locked(struct flight_shard *sh, uint64_t hash,
					 const char *key, size_t klen)
{
	for (struct flight *f = sh->head; f; f = f->next)
		if (!f->voided && !f->sealed && f->started < READ_ROUNDS &&
		    f->hash == hash && f->klen == klen &&
		    memcmp(f->key, key, klen) == 0)
			return f;
	return NULL;
}

static void flight_unlink_locked(struct flight_shard *sh, struct flight *f)
{
	if (!f->linked)
		return;
	for (struct flight **pp = &sh->head; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	f->linked = false;
}

static void flight_unref_locked(struct flight *f)
{
	if (--f->refs > 0)
		return;
	pthread_cond_destroy(&f->cond);
	aside_value_unref(f->result);
	free(f->key);
	free(f);
}

static struct flight *flight_new(uint64_t hash, const char *key, size_t klen)
{
	struct flight *f = calloc(1, sizeof(*f));
	if (!f || !(f->key = malloc(klen))) {
		free(f);
		return NULL;
	}
	memcpy(f->key, key, klen);
	f->klen = klen;
	f->hash = hash;
	f->source = -1;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
	return f;
}

static struct inval **inval_find_locked(struct flight_shard *sh, uint64_t hash,
					const char *key, size_t klen)
{
	struct inval **pp;
	for (pp = &sh->invals; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == hash && (*pp)->klen == klen &&
		    memcmp((*pp)->key, key, klen) == 0)
			break;
	return pp;
}

static bool inval_active_locked(struct flight_shard *sh, uint64_t hash,
				const char *key, size_t klen)
{
	return sh->invals && *inval_find_locked(sh, hash, key, klen);
}

static struct timespec deadline_after_ms(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* ---- the read path ----------------------------------------------------- */

static struct aside__stripe *stripe(aside_cache *c)
{
	return &c->stripes[aside__stripe_index()];
}

/* Whether v is usable as the loader wants it: decoded, or needing none. */
static bool decodes(const aside_loader *ld, aside_value *v)
{
	return !ld->decode || aside_value_obj(v) || aside__value_absent(v) ||
	       ld->decode(ld->arg, v, NULL) == ASIDE_OK;
}

/*
 * Gives a value read from tier i its decoded form.  On failure the entry is
 * corrupt: it is counted and deleted from that tier.
 */
static int decode_or_drop(aside_cache *c, int i, const aside_loader *ld,
			  aside_value *v, uint64_t hash)
{
	if (!ld || !ld->decode || aside_value_obj(v) || aside__value_absent(v))
		return ASIDE_OK;
	aside_error derr;
	if (ld->decode(ld->arg, v, &derr) == ASIDE_OK)
		return ASIDE_OK;
	aside__count(stripe(c), ASIDE__C_corrupt, 1);
	size_t klen;
	const char *key = aside_value_key(v, &klen);
	if (c->log)
		c->log(c->log_ctx, ASIDE_LOG_WARN,
		       "corrupt cache entry dropped");
	c->tiers[i].ops->del(c->tiers[i].self, key, klen, hash, NULL);
	return ASIDE_ECORRUPT;
}

/* A hit of tier i, of a value or of a cached absence. */
static inline void count_hit(struct aside__stripe *st, int i,
			     const aside_value *v)
{
	aside__count(st, ASIDE__C_tier_hit0 + i, 1);
	if (__builtin_expect(v && aside__value_absent(v), 0))
		aside__count(st, ASIDE__C_negative_hits, 1);
}

/*
 * count_hit for an L1 hit handed out as a counted reference.  The head
 * says whether the value is a cached absence, but the cold part says it
 * too, on the line of the bytes: a loader without decode has callers that
 * read the bytes next, and asking there starts that cache miss inside this
 * call, before the caller's unref (a locked instruction, which waits for
 * it) rather than after the return.  Callers reading the bytes measured 5
 * to 10% slower when the miss was left to them; callers of a decoding
 * loader read the decoded object in the head and never need the line, and
 * their hits run twice as fast without it (docs/performance.md).
 */
static inline void count_l1_hit(struct aside__stripe *st,
				const aside_loader *ld, const aside_value *v)
{
	aside__count(st, ASIDE__C_tier_hit0, 1);
	if (__builtin_expect(ld->decode ? aside__value_absent(v)
					: aside__value_absent_cold(v),
			     0))
		aside__count(st, ASIDE__C_negative_hits, 1);
}

/* Looks key up in tiers [from, to); the index of the tier that hit. */
static int tiers_get(aside_cache *c, int from, int to, const char *key,
		     size_t klen, uint64_t hash, int64_t now,
		     const aside_loader *ld, aside_value **out)
{
	for (int i = from; i < to; i++) {
		aside_value *v = NULL;
		int rc = c->tiers[i].ops->get(c->tiers[i].self, key, klen, hash,
					      now, &v, NULL);
		if (rc == ASIDE_OK) {
			if (decode_or_drop(c, i, ld, v, hash) == ASIDE_OK) {
				*out = v;
				return i;
			}
			aside_value_unref(v);
		} else if (rc == ASIDE_NOT_FOUND) {
			aside__count(stripe(c), ASIDE__C_tier_miss0 + i, 1);
		} else if (rc == ASIDE_ECORRUPT) {
			/* Not a value of ours: drop it, and load afresh. */
			aside__count(stripe(c), ASIDE__C_corrupt, 1);
			c->tiers[i].ops->del(c->tiers[i].self, key, klen, hash,
					     NULL);
		} else if (rc < 0) {
			/* A failing tier is a miss; the read goes on below. */
			aside__count(stripe(c), ASIDE__C_tier_errors, 1);
		}
	}
	return -1;
}

/* Sleeps about us microseconds (drawn from [us/2, us]), so waiters spread. */
static void nap_us(int64_t us)
{
	us = us / 2 + (int64_t)(aside__rand() % (uint64_t)(us / 2 + 1));
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

#define LEASE_NAP_MIN_US 500
#define LEASE_STALE 100	  /* lease_lookup: a stale copy, to serve only */
#define LEASE_TIMEOUT 101 /* lease_lookup: held too long by another */
/* lease_lookup: an entry past its expiry (stale_while_revalidate_ms), to
 * serve only, and only to readers who began before it was read */
#define LEASE_EXPIRED 102
#define LEASE_NAP_MAX_US 32000

/*
 * Asks a shared tier with leases: the value (ASIDE_OK), a lease to load
 * and fill (ASIDE_LEASED, *token set, and in *kept the key's expired entry
 * if the tier keeps one, or NULL), or nothing to be had (a miss, an
 * error, or another process's lease held past wait_ms).  While another
 * reader, in any process, holds the lease, this one waits with jittered
 * backoff and asks again: P processes missing one key make one load.
 */
static int lease_lookup(aside_cache *c, int i, struct flight *f, int64_t now,
			const aside_loader *ld, aside_value **out,
			uint64_t *token, aside_value **kept)
{
	struct aside__stripe *st = stripe(c);
	const aside_tier *t = &c->tiers[i];
	int64_t deadline = aside__mono_us() + c->wait_ms * 1000;
	int64_t nap = LEASE_NAP_MIN_US;
	bool waited = false;
	for (int corrupt = 0, n = 0;; n++) {
		aside_value *v = NULL;
		/* A plain read first: a hit then costs what a GET does; only a
		 * miss runs the lease script. */
		int rc = n == 0 ? t->ops->get(t->self, f->key, f->klen, f->hash,
					      now, &v, NULL)
				: ASIDE_NOT_FOUND;
		if (rc == ASIDE_NOT_FOUND)
			rc = t->ops->lease_get(t->self, f->key, f->klen,
					       f->hash, now, &v, token, NULL);
		if (rc == ASIDE_OK) {
			if (decode_or_drop(c, i, ld, v, f->hash) == ASIDE_OK) {
				*out = v;
				return ASIDE_OK;
			}
			aside_value_unref(v);
			rc = ASIDE_ECORRUPT;
		} else if (rc == ASIDE_ECORRUPT) {
			aside__count(st, ASIDE__C_corrupt, 1);
			t->ops->del(t->self, f->key, f->klen, f->hash, NULL);
		}
		if (rc == ASIDE_ECORRUPT && ++corrupt < 3)
			continue; /* dropped: ask again for a lease */
		if (rc == ASIDE_LEASED || rc == ASIDE_NOT_FOUND) {
			aside__count(st, ASIDE__C_tier_miss0 + i, 1);
			if (rc == ASIDE_LEASED)
				*kept = v;
			else
				aside_value_unref(v);
			return rc;
		}
		if (rc != ASIDE_BUSY) {
			aside__count(st, ASIDE__C_tier_errors, 1);
			return rc < 0 ? rc : ASIDE_ECACHE;
		}
		/* A copy to serve rather than wait: the entry past its
		 * expiry (stale_while_revalidate_ms), which carries that
		 * expiry, or a tombstone's copy of the entry a write replaced
		 * (stale_ms), which does not. */
		bool expired_copy = v && aside_value_expires_at_us(v) != 0;
		if (v && (expired_copy ? c->swr_us > 0 : c->serve_stale) &&
		    decodes(ld, v)) {
			/* The caller takes staleness over waiting. */
			aside__count(st,
				     expired_copy
					 ? ASIDE__C_stale_while_revalidate
					 : ASIDE__C_stale_served,
				     1);
			*out = v;
			return expired_copy ? LEASE_EXPIRED : LEASE_STALE;
		}
		aside_value_unref(v);
		if (!waited) {
			waited = true;
			aside__count(st, ASIDE__C_lease_waits, 1);
		}
		if (aside__mono_us() + nap > deadline) {
			/* The holder is slow or gone: load without a lease
			 * (and fill nothing shared). */
			aside__count(st, ASIDE__C_tier_miss0 + i, 1);
			aside__count(st, ASIDE__C_lease_timeouts, 1);
			return LEASE_TIMEOUT;
		}
		nap_us(nap);
		nap = nap * 2 > LEASE_NAP_MAX_US ? LEASE_NAP_MAX_US : nap * 2;
		now = now_of(c);
	}
}

/* Runs the load of a flight this thread leads, stores it, wakes waiters. */
/* Runs the loader for a flight; its status, the value in *out. */
#define BREAKER_MIN_US 100000
#define BREAKER_MAX_US 5000000

/*
 * Whether the breaker lets this load run: closed, or open past its time
 * and this is the one probe.  *probe says which.
 */
static bool breaker_lets(aside_cache *c, int64_t now, bool *probe)
{
	*probe = false;
	int64_t until = atomic_load(&c->breaker_until);
	if (!c->breaker_n || until == 0)
		return true;
	bool no = false;
	if (now < until ||
	    !atomic_compare_exchange_strong(&c->breaker_probing, &no, true))
		return false;
	*probe = true;
	return true;
}

/* A load's outcome, for the breaker: rc < 0 failed. */
static void breaker_heard(aside_cache *c, int rc, bool probe)
{
	if (!c->breaker_n)
		return;
	int64_t now = now_of(c);
	if (rc >= 0) {
		atomic_store(&c->load_fails, 0);
		if (probe || atomic_load(&c->breaker_until)) {
			atomic_store(&c->breaker_until, 0);
			atomic_store(&c->breaker_wait_us, 0);
			if (c->log)
				c->log(c->log_ctx, ASIDE_LOG_INFO,
				       "the source answers again: loads run");
		}
	} else if (probe ||
		   atomic_fetch_add(&c->load_fails, 1) + 1 == c->breaker_n) {
		int64_t wait = atomic_load(&c->breaker_wait_us);
		wait = wait ? wait * 2 : BREAKER_MIN_US;
		if (wait > BREAKER_MAX_US)
			wait = BREAKER_MAX_US;
		atomic_store(&c->breaker_wait_us, wait);
		atomic_store(&c->breaker_until, now + wait);
		if (c->log && !probe) {
			char msg[128];
			snprintf(msg, sizeof(msg),
				 "the source failed %u loads in a row: no "
				 "load runs for %lld ms, then one probe",
				 c->breaker_n, (long long)(wait / 1000));
			c->log(c->log_ctx, ASIDE_LOG_WARN, msg);
		}
	}
	if (probe)
		atomic_store(&c->breaker_probing, false);
}

static int run_load(aside_cache *c, struct flight *f, const aside_loader *ld,
		    int64_t now, aside_value **out, aside_error *lerr)
{
	struct aside__stripe *st = stripe(c);
	aside_value *v = NULL;
	bool probe;
	if (!breaker_lets(c, now, &probe)) {
		aside__count(st, ASIDE__C_breaker_refusals, 1);
		*out = NULL;
		return aside__fail(
		    lerr, ASIDE_EUNAVAILABLE,
		    "the source failed %u loads in a row: "
		    "not asked again before %lld ms from now",
		    c->breaker_n,
		    (long long)((atomic_load(&c->breaker_until) - now + 999) /
				1000));
	}
	int64_t t0 = aside__mono_us();
	atomic_store_explicit(&f->load_began_us, t0, memory_order_relaxed);
	int rc = ld->load(ld->arg, f->key, f->klen, &v, lerr);
	uint64_t dt = (uint64_t)(aside__mono_us() - t0);
	aside__count(st, ASIDE__C_loads, 1);
	aside__count(st, ASIDE__C_load_time_us_sum, dt);
	aside__count_hist(st, aside_hist_bucket(dt));
	if (rc == ASIDE_OK && !v)
		rc = ASIDE_EINTERNAL;
	breaker_heard(c, rc, probe);
	if (rc == ASIDE_OK) {
		aside__count(st, ASIDE__C_load_ok, 1);
		aside__value_set_expiry(
		    v, expiry_for(c, f->key, f->klen, f->hash, now));
		atomic_store_explicit(&aside__value_cold(v)->load_us,
				      dt > UINT32_MAX ? UINT32_MAX
						      : (uint32_t)dt,
				      memory_order_relaxed);
		*out = v;
		return rc;
	}
	aside_value_unref(v);
	*out = NULL;
	if (rc == ASIDE_NOT_FOUND) {
		aside__count(st, ASIDE__C_not_found, 1);
		/* negative_ttl_ms: the absence is cached like a value (filled,
		 * fenced and invalidated as one), and read as NOT_FOUND. */
		if (c->negative_us &&
		    aside__value_new_absent(f->key, f->klen, &v) == ASIDE_OK) {
			aside__value_set_expiry(
			    v,
			    now + jittered(c, f->key, f->klen, c->negative_us));
			*out = v;
			return ASIDE_OK;
		}
	} else {
		if (rc > 0)
			rc = ASIDE_EINTERNAL;
		aside__count(st, ASIDE__C_load_errors, 1);
		if (lerr->code == 0)
			aside__error_set(lerr, rc, NULL);
	}
	return rc;
}

/*
 * Fills the tiers above the source, lowest first.  A shared tier without
 * this flight's lease is left alone (another reader's fill, or a write,
 * owns it).  False if the leased tier refused the fill because a write
 * voided the lease, or failed: the tiers above are then not filled either.
 */
static bool fill_tiers(aside_cache *c, struct flight *f, aside_value *v,
		       int source, int leased, uint64_t token, int64_t now)
{
	struct aside__stripe *st = stripe(c);
	int top = source >= 0 ? source : c->ntiers;
	for (int i = top - 1; i >= 0; i--) {
		const aside_tier *t = &c->tiers[i];
		int sr;
		if (i == leased)
			sr = t->ops->lease_end(t->self, f->key, f->klen,
					       f->hash, v, now, token, NULL);
		else if (has_leases(t))
			continue;
		else
			sr = t->ops->set(t->self, v, f->hash, now, NULL);
		if (sr == ASIDE_STALE) {
			aside__count(st, ASIDE__C_fills_refused, 1);
			return false;
		}
		if (sr < 0) {
			aside__count(st, ASIDE__C_tier_errors, 1);
			/* A lease's fill that failed proves nothing (the
			 * tier may have stored it or not, its lease voided
			 * or not): validated only by a read again, and
			 * stored nowhere below meanwhile. */
			if (i == leased)
				return false;
		}
	}
	return true;
}

/*
 * The L1's expired copy of key, expired less than max_age_us ago (the
 * cache's error_keep_us or swr_us), with a reference; false if there is
 * none to serve: none kept, none decodable, or the L1 not trusted now.
 */
static bool stale_copy(aside_cache *c, const char *key, size_t klen,
		       uint64_t hash, const aside_loader *ld,
		       int64_t max_age_us, aside_value **out)
{
	aside_value *v = NULL;
	if (max_age_us <= 0 || !l1_trusted(c) ||
	    aside__mem_stale(c->l1, key, klen, hash, now_of(c), max_age_us,
			     &v) != ASIDE_OK)
		return false;
	if (decode_or_drop(c, 0, ld, v, hash) != ASIDE_OK) {
		aside_value_unref(v);
		return false;
	}
	*out = v;
	return true;
}

/*
 * Runs the load of a flight this thread leads, stores it, wakes waiters.
 *
 * With a shared tier (leases), a result must also be fresh for readers in
 * this process that joined while it was being read: a write in another
 * process may have completed after the read and before they began.  So a
 * result is handed out only once it is *validated* after every joiner
 * joined: a fill (or the giving up of a lease) that the shared tier
 * accepts proves no write voided the lease since it was granted, which was
 * before the load read the source; a value read from the shared tier is
 * valid for the readers that had joined before the read was sent.  Else
 * the leader reads again, for everyone (at most READ_ROUNDS reads); the
 * flight is sealed once a result is in hand, so that later readers start a
 * flight of their own.
 */
static void lead(aside_cache *c, struct flight_shard *sh, struct flight *f,
		 const aside_loader *ld)
{
	struct aside__stripe *st = stripe(c);
	aside_value *v = NULL;
	aside_error lerr;
	int rc, source;
	/* A lease held too long by another reader was waited out once, or
	 * the shared tier failed: the reads after that go to the source
	 * directly, not through another wait, and no lease validates them. */
	bool no_lease = false;
	/* The shared tier's expired entry, handed with the lease: served if
	 * the load fails and giving the lease up proves that no write voided
	 * it since (kept_ok). */
	aside_value *kept = NULL;
	bool kept_ok = false;
	for (;;) {
		aside_error_clear(&lerr);
		aside_value_unref(kept);
		kept = NULL;
		kept_ok = false;
		int64_t now = now_of(c);
		int leased = -1; /* the tier whose lease this flight holds */
		uint64_t token = 0;
		bool stale = false; /* v is a stale copy: serve, never store */
		/* v is an expired entry (LEASE_EXPIRED): current when it was
		 * read, so, like a hit, not for readers who joined after. */
		bool expired = false;
		/* A load no lease will validate: after a lease was waited
		 * out, every round's, as no lease is asked for again. */
		bool unleased = no_lease;
		pthread_mutex_lock(&sh->lock);
		unsigned round = ++f->started;
		pthread_mutex_unlock(&sh->lock);

		source = -1;
		for (int i = c->l1 ? 1 : 0; i < c->ntiers && source < 0; i++) {
			if (!has_leases(&c->tiers[i])) {
				if (tiers_get(c, i, i + 1, f->key, f->klen,
					      f->hash, now, ld, &v) == i)
					source = i;
				continue;
			}
			if (no_lease)
				continue;
			aside_value *copy = NULL;
			int lr =
			    lease_lookup(c, i, f, now, ld, &v, &token, &copy);
			stale |= lr == LEASE_STALE || lr == LEASE_EXPIRED;
			expired |= lr == LEASE_EXPIRED;
			if (lr == ASIDE_LEASED && leased < 0) {
				kept = copy;
				copy = NULL;
			}
			aside_value_unref(copy);
			if (lr == ASIDE_OK || lr == LEASE_STALE ||
			    lr == LEASE_EXPIRED)
				source = i;
			else if (lr == ASIDE_LEASED && leased < 0)
				leased = i;
			else if (lr == LEASE_TIMEOUT || lr < 0)
				/* No lease will validate this load (the holder
				 * was waited out, or the tier failed), nor the
				 * next rounds' (read directly): each is valid
				 * only for readers who joined before it began,
				 * up to READ_ROUNDS reads. */
				no_lease = unleased = true;
		}
		if (source < 0) {
			/* The source is read from now on, after every reader
			 * that has joined (some maybe while another's lease
			 * was waited out): this read serves them all. */
			pthread_mutex_lock(&sh->lock);
			if (f->wanted > round)
				f->wanted = round;
			pthread_mutex_unlock(&sh->lock);
			rc = run_load(c, f, ld, now, &v, &lerr);
		} else {
			rc = ASIDE_OK;
		}

		bool fill = false, voided, elsewhere, fresh;
		pthread_mutex_lock(&sh->lock);
		f->sealed = c->leases;
		voided = f->voided;
		elsewhere = f->voided_elsewhere;
		fresh = f->wanted <= round; /* no one joined during the read */
		if (v) {
			fill = !voided && !stale;
			f->filling = fill;
		}
		pthread_mutex_unlock(&sh->lock);
		if (v && !stale)
			aside__count(
			    st, fill ? ASIDE__C_fills : ASIDE__C_fills_voided,
			    1);
		bool valid;
		if (leased >= 0 && !fill) {
			/* Nothing to store: let another reader have the
			 * lease now rather than when it lapses. */
			const aside_tier *t = &c->tiers[leased];
			int sr =
			    t->ops->lease_end(t->self, f->key, f->klen, f->hash,
					      NULL, now, token, NULL);
			if (sr < 0)
				aside__count(st, ASIDE__C_tier_errors, 1);
			/* Unknown when the tier failed: read again. */
			valid = sr >= 0 && sr != ASIDE_STALE;
			kept_ok = sr == ASIDE_OK;
		} else if (fill) {
			valid =
			    fill_tiers(c, f, v, source, leased, token, now) &&
			    (leased >= 0 || (source < 0 && !unleased) || fresh);
		} else {
			valid = (source < 0 && !unleased) || fresh ||
				(stale && !expired);
		}
		/*
		 * A voided flight stores nothing.  Voided by a write here, its
		 * result is good for its readers: they joined before the
		 * invalidation returned, so before the write completed.
		 * Voided by a write in another process, heard of through the
		 * subscription some time after it completed, it may have
		 * readers that began after that write: they get only a
		 * result validated for them.
		 */
		if (valid || (voided && !elsewhere) || round >= READ_ROUNDS ||
		    (rc < 0 && rc != ASIDE_ECORRUPT))
			break;
		/* Read again, for every waiter. */
		pthread_mutex_lock(&sh->lock);
		f->filling = false;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&sh->lock);
		aside_value_unref(v);
		v = NULL;
	}

	/* The load failed: the L1's expired copy, if it keeps one, else the
	 * shared tier's.  That one was the key's entry when the lease was
	 * granted, and the lease was still this flight's when given up, so
	 * no write in any process completed in between; and the flight was
	 * sealed before, so every reader of it began before that. */
	aside_value *old = NULL;
	if (rc < 0 && !stale_copy(c, f->key, f->klen, f->hash, ld,
				  c->error_keep_us, &old)) {
		old = NULL;
		if (kept && kept_ok && decodes(ld, kept)) {
			old = kept;
			kept = NULL;
		}
	}
	aside_value_unref(kept);

	pthread_mutex_lock(&sh->lock);
	/* Not once a write voided the flight: the copy predates the write,
	 * and a reader may have joined after it. */
	if (old && !f->voided) {
		rc = ASIDE_OK;
		v = old;
		old = NULL;
		f->stale = true;
	}
	f->filling = false;
	f->done = true;
	f->status = rc;
	f->source = source;
	f->result = v;
	f->err = lerr;
	flight_unlink_locked(sh, f);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&sh->lock);
	aside_value_unref(old);
}

/* ---- the Bloom gate ---------------------------------------------------- */

#define GATE_RETRY_US 1000000 /* after a fill that failed */

static bool gate_covers(const aside_cache *c, const char *key, size_t klen)
{
	return klen > c->gate_nslen && key[c->gate_nslen] == ':' &&
	       memcmp(key, c->gate_ns, c->gate_nslen) == 0;
}

/*
 * Adds a key that may exist now (a write, or the application's word) to
 * the gate, and to the filter a fill is building.  False if the key is
 * not gated.
 */
static bool gate_hear(aside_cache *c, const char *key, size_t klen,
		      uint64_t hash)
{
	if (!atomic_load_explicit(&c->gate, memory_order_acquire) ||
	    !gate_covers(c, key, klen))
		return false;
	pthread_mutex_lock(&c->gate_lock);
	struct aside__gate *g = atomic_load(&c->gate);
	aside__gate_add(g, hash);
	if (c->gate_next)
		aside__gate_add(c->gate_next, hash);
	else if (!c->gate_outgrown && aside__gate_overfull(g)) {
		/* Outgrown (or much rewritten): the next reader fills a
		 * larger one, whatever refill_ms says; once a filter (a
		 * fill that fails is tried again at its own pace). */
		c->gate_outgrown = true;
		atomic_store(&c->gate_next_us, 0);
	}
	pthread_mutex_unlock(&c->gate_lock);
	return true;
}

/*
 * Runs the application's fill, which adds every key that exists, into a
 * new filter sized for the keys the last fill found (a quarter more, and
 * never less than expected), which then replaces the gate's: so the gate
 * grows with the keys, and forgets the deleted ones at each fill.  While
 * the fill runs, writes go to both filters (gate_hear).  No key that
 * exists is missed: a row the fill's scan did not see was committed after
 * the scan began, so after the new filter was in place, and its write's
 * invalidation, which follows the commit, added it there.  The filter
 * replaced is freed once no reader can be looking at it; while the one
 * before it still waits for that, the fill adds to the gate in place.
 *
 * The gate is armed only if no write can have been missed since the fill
 * began (no deaf() meanwhile).  The caller has set gate_filling, which
 * this clears: one fill at a time.
 */
static int gate_fill_run(aside_cache *c, aside_error *err)
{
	uint64_t gen = atomic_load(&c->gate_gen);
	int64_t t0 = aside__mono_us();
	pthread_mutex_lock(&c->gate_lock);
	struct aside__gate *cur = atomic_load(&c->gate), *next = NULL;
	if (c->gate_dead && aside__grace_done(c->gate_dead_grace)) {
		aside__gate_free(c->gate_dead);
		c->gate_dead = NULL;
	}
	if (!c->gate_dead) {
		uint64_t keys = aside__gate_keys(cur);
		keys += keys / 4;
		next = aside__gate_new(
		    keys > c->gate_expected ? keys : c->gate_expected);
		c->gate_next = next; /* NULL if out of memory: in place */
	}
	pthread_mutex_unlock(&c->gate_lock);

	aside_error ferr;
	aside_error_clear(&ferr);
	int rc = c->gate_fill(c->gate_arg, c, &ferr);
	bool missed = atomic_load(&c->gate_gen) != gen;
	pthread_mutex_lock(&c->gate_lock);
	c->gate_next = NULL;
	if (next && rc == ASIDE_OK && !missed) {
		atomic_store_explicit(&c->gate, next, memory_order_release);
		c->gate_outgrown = false;
		c->gate_dead = cur;
		c->gate_dead_grace = aside__grace_start();
		next = NULL;
	}
	pthread_mutex_unlock(&c->gate_lock);
	aside__gate_free(next); /* not used: no reader ever saw it */
	if (rc == ASIDE_OK && missed) {
		atomic_store(&c->gate_next_us, 0); /* missed some: again */
	} else if (rc == ASIDE_OK) {
		atomic_store(&c->gate_armed, true);
		atomic_store(&c->gate_next_us, c->gate_refill_us
						   ? t0 + c->gate_refill_us
						   : INT64_MAX);
	} else {
		atomic_store(&c->gate_next_us, t0 + GATE_RETRY_US);
		if (c->log)
			c->log(c->log_ctx, ASIDE_LOG_WARN,
			       "the gate's fill failed; it lets every key "
			       "through until a fill succeeds");
		if (err)
			*err = ferr;
		if (rc > 0)
			rc = ASIDE_EINTERNAL;
	}
	/* Counted once its filter is in place, for those who wait on it. */
	aside__count(stripe(c), ASIDE__C_gate_fills, 1);
	atomic_store(&c->gate_filling, false);
	return rc;
}

/* Runs a fill now, in the caller; ASIDE_OK at once if one runs. */
static int gate_fill(aside_cache *c, aside_error *err)
{
	bool no = false;
	if (!atomic_compare_exchange_strong(&c->gate_filling, &no, true))
		return ASIDE_OK;
	return gate_fill_run(c, err);
}

/* The gate's thread: runs the fills asked for, until the cache closes. */
static void *gate_loop(void *arg)
{
	aside_cache *c = arg;
	pthread_mutex_lock(&c->gate_lock);
	while (!c->gate_stop) {
		if (!c->gate_asked) {
			pthread_cond_wait(&c->gate_cond, &c->gate_lock);
			continue;
		}
		c->gate_asked = false;
		pthread_mutex_unlock(&c->gate_lock);
		gate_fill_run(c, NULL);
		pthread_mutex_lock(&c->gate_lock);
	}
	pthread_mutex_unlock(&c->gate_lock);
	return NULL;
}

/* A fill is due: the gate's thread runs it (a reader does not wait). */
static void gate_ask(aside_cache *c)
{
	bool no = false;
	if (atomic_load_explicit(&c->gate_filling, memory_order_relaxed) ||
	    !atomic_compare_exchange_strong(&c->gate_filling, &no, true))
		return; /* asked already, or running */
	pthread_mutex_lock(&c->gate_lock);
	c->gate_asked = true;
	pthread_cond_signal(&c->gate_cond);
	pthread_mutex_unlock(&c->gate_lock);
}

/*
 * Whether the gate says key certainly does not exist.  Only while it is
 * armed, and, over a shared tier, only while the subscription that brings
 * other processes' writes has confirmed it missed nothing (l1_trusted).
 * A reader that finds a fill due asks the gate's thread for it.
 */
static bool gate_shuts(aside_cache *c, const char *key, size_t klen,
		       uint64_t hash)
{
	if (!atomic_load_explicit(&c->gate, memory_order_acquire) ||
	    !gate_covers(c, key, klen) || !l1_trusted(c))
		return false;
	if (aside__mono_us() >= atomic_load(&c->gate_next_us))
		gate_ask(c);
	if (!atomic_load(&c->gate_armed) || !aside__read_begin())
		return false;
	/* In a read section: a filter replaced meanwhile stays whole. */
	bool shut = !aside__gate_maybe(
	    atomic_load_explicit(&c->gate, memory_order_acquire), hash);
	aside__read_end();
	return shut;
}

int aside_cache_gate(aside_cache *c, const char *ns, uint64_t expected_keys,
		     int64_t refill_ms, aside_gate_fill_fn fill, void *arg,
		     aside_error *err)
{
	if (!c || !ns || !*ns || strchr(ns, ':') || !fill ||
	    expected_keys == 0 || expected_keys > (1ull << 34) || refill_ms < 0)
		return aside__fail(err, ASIDE_EINVAL,
				   "aside_cache_gate: bad arguments");
	if (c->leases && !c->l1)
		return aside__fail(err, ASIDE_EINVAL,
				   "a gate over a shared tier needs its L1 "
				   "(l1=N): other processes' writes reach the "
				   "gate through the L1's subscription");
	/* The first filter stays empty and unarmed: the first fill builds
	 * the one that is used. */
	struct aside__gate *g = aside__gate_new(1);
	char *copy = strdup(ns);
	if (!g || !copy) {
		aside__gate_free(g);
		free(copy);
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	/* The fields first, then the gate that readers load (acquire). */
	pthread_mutex_lock(&c->ns_lock);
	bool taken = atomic_load(&c->gate) != NULL, started = false;
	if (!taken && aside__thread_start(&c->gate_thread, gate_loop, c) == 0) {
		started = c->gate_thread_started = true;
		c->gate_ns = copy;
		c->gate_nslen = strlen(copy);
		c->gate_expected = expected_keys;
		c->gate_fill = fill;
		c->gate_arg = arg;
		c->gate_refill_us = refill_ms * 1000;
		atomic_store(&c->gate_next_us, 0);
		atomic_store_explicit(&c->gate, g, memory_order_release);
	}
	pthread_mutex_unlock(&c->ns_lock);
	if (!started) {
		aside__gate_free(g);
		free(copy);
		return taken ? aside__fail(err, ASIDE_EINVAL,
					   "the cache has a gate already")
			     : aside__fail(err, ASIDE_ENOMEM,
					   "cannot start the gate's thread");
	}
	/* Over Redis, not before the subscription confirms: a fill begun
	 * earlier could miss a write heard by no one.  The first reader
	 * after that fills it. */
	return l1_trusted(c) ? gate_fill(c, err) : ASIDE_OK;
}

int aside_cache_gate_add(aside_cache *c, const char *key, size_t klen)
{
	if (!c || !key || klen == 0 || klen > ASIDE_KEY_MAX)
		return ASIDE_EINVAL;
	return gate_hear(c, key, klen, aside_hash(key, klen)) ? ASIDE_OK
							      : ASIDE_EINVAL;
}

int aside_cache_peek(aside_cache *c, const char *key, size_t klen,
		     aside_value **out)
{
	if (!c || !key || klen == 0 || klen > ASIDE_KEY_MAX || !out)
		return ASIDE_EINVAL;
	uint64_t hash = aside_hash(key, klen);
	int64_t now = now_of(c);
	struct aside__stripe *st = stripe(c);
	int i = tiers_get(c, c->l1 && !l1_trusted(c) ? 1 : 0, c->ntiers, key,
			  klen, hash, now, NULL, out);
	if (i >= 0) {
		count_hit(st, i, *out);
		if (!aside__value_absent(*out))
			return ASIDE_OK;
		aside_value_unref(*out);
		*out = NULL;
		return ASIDE_NOT_FOUND;
	}
	aside__count(st, ASIDE__C_misses, 1);
	return ASIDE_NOT_FOUND;
}

static int cache_get(aside_cache *c, const char *key, size_t klen,
		     const aside_loader *ld, aside_value **out,
		     aside_error *err);

/* A cached absence is the loader's NOT_FOUND, read from a tier. */
int aside_cache_get(aside_cache *c, const char *key, size_t klen,
		    const aside_loader *ld, aside_value **out, aside_error *err)
{
	int rc = cache_get(c, key, klen, ld, out, err);
	if (rc == ASIDE_OK && __builtin_expect(aside__value_absent(*out), 0)) {
		aside_value_unref(*out);
		*out = NULL;
		return ASIDE_NOT_FOUND;
	}
	return rc;
}

static int cache_get(aside_cache *c, const char *key, size_t klen,
		     const aside_loader *ld, aside_value **out,
		     aside_error *err)
{
	if (!c || !key || klen == 0 || klen > ASIDE_KEY_MAX || !out || !ld ||
	    !ld->load)
		return aside__fail(err, ASIDE_EINVAL,
				   "aside_cache_get: bad arguments");
	uint64_t hash = aside_hash(key, klen);
	int64_t now = now_of(c);
	struct aside__stripe *st = stripe(c);

	/* L1: the fast path, no lock. */
	aside_value *v;
	const aside_tier *l1 = c->l1 && l1_trusted(c) ? &c->tiers[0] : NULL;
	int l1rc = l1 ? l1->ops->get(l1->self, key, klen, hash, now, &v, NULL)
		      : ASIDE_NOT_FOUND;
	if (c->l1 && l1rc != ASIDE_OK)
		aside__count(st, ASIDE__C_tier_miss0, 1);
	if (l1 && l1rc == ASIDE_OK) {
		if ((!ld->decode ||
		     atomic_load_explicit(&v->obj, memory_order_acquire)) ||
		    decode_or_drop(c, 0, ld, v, hash) == ASIDE_OK) {
			count_l1_hit(st, ld, v);
			*out = v;
			return ASIDE_OK;
		}
		aside_value_unref(v);
	}

	if (gate_shuts(c, key, klen, hash)) {
		aside__count(st, ASIDE__C_misses, 1);
		aside__count(st, ASIDE__C_gate_rejects, 1);
		return ASIDE_NOT_FOUND;
	}

	struct flight_shard *sh = flight_shard(c, hash);
	pthread_mutex_lock(&sh->lock);
	struct flight *f = flight_find_locked(sh, hash, key, klen);
	if (!f) {
		/* A flight may have filled L1 and finished since our miss. */
		if (l1 && l1->ops->get(l1->self, key, klen, hash, now, &v,
				       NULL) == ASIDE_OK) {
			pthread_mutex_unlock(&sh->lock);
			count_hit(st, 0, v);
			*out = v;
			return ASIDE_OK;
		}
		f = flight_new(hash, key, klen);
		if (!f) {
			pthread_mutex_unlock(&sh->lock);
			aside__count(st, ASIDE__C_misses, 1);
			return aside__fail(err, ASIDE_ENOMEM, "out of memory");
		}
		f->refs = 1;
		f->wanted = 1;
		if (inval_active_locked(sh, hash, key, klen)) {
			/* The tiers may still hold what is being invalidated:
			 * load for this reader alone, and store nothing. */
			f->voided = true;
		} else {
			f->linked = true;
			f->next = sh->head;
			sh->head = f;
		}
		pthread_mutex_unlock(&sh->lock);

		lead(c, sh, f, ld);

		pthread_mutex_lock(&sh->lock);
	} else {
		f->refs++;
		/* stale_while_revalidate_ms: another reader is loading the
		 * key, and the L1 has its expired copy; served that rather
		 * than wait, unless a write voided the load (and the copy
		 * with it).  Looked up without the lock: a decode may be
		 * slow. */
		if (c->swr_us && c->l1 && !f->voided) {
			pthread_mutex_unlock(&sh->lock);
			bool got =
			    stale_copy(c, key, klen, hash, ld, c->swr_us, out);
			pthread_mutex_lock(&sh->lock);
			if (got) {
				flight_unref_locked(f);
				pthread_mutex_unlock(&sh->lock);
				count_hit(st, 0, *out);
				aside__count(
				    st, ASIDE__C_stale_while_revalidate, 1);
				return ASIDE_OK;
			}
		}
		/* Served by a read that begins after this reader did. */
		if (f->wanted < f->started + 1)
			f->wanted = f->started + 1;
		atomic_fetch_add_explicit(&c->waiting, 1, memory_order_relaxed);
		const int64_t wait_us = c->wait_ms * 1000;
		int64_t since = aside__mono_us(), due = since + wait_us;
		bool graced = false;
		struct timespec until = deadline_after_ms(c->wait_ms);
		while (!f->done) {
			if (pthread_cond_timedwait(&f->cond, &sh->lock,
						   &until) != ETIMEDOUT ||
			    f->done)
				continue;
			int64_t t = aside__mono_us();
			int64_t began = atomic_load_explicit(
			    &f->load_began_us, memory_order_relaxed);
			if (began > since && began + wait_us > t) {
				/* Up to wait_ms from when the load began:
				 * the leader began it after this reader
				 * joined (it waited out another's lease). */
				since = began;
				due = began + wait_us;
			} else if (!graced && t - due > OVERSLEPT_US) {
				/* Woken long after its time ran out: the
				 * process was stopped or starved, and the
				 * leader with it.  Once, as long again as was
				 * lost, up to wait_ms. */
				graced = true;
				due =
				    t + (t - due < wait_us ? t - due : wait_us);
			} else {
				break;
			}
			until = deadline_after_ms((due - t + 999) / 1000);
		}
		atomic_fetch_sub_explicit(&c->waiting, 1, memory_order_relaxed);
		if (!f->done) {
			bool voided = f->voided;
			flight_unref_locked(f);
			pthread_mutex_unlock(&sh->lock);
			aside__count(st, ASIDE__C_misses, 1);
			aside__count(st, ASIDE__C_wait_timeouts, 1);
			/* A load that hangs fails its waiters as one that
			 * errs would: the L1's expired copy, if it keeps one
			 * and no write voided the flight. */
			if (!voided && stale_copy(c, key, klen, hash, ld,
						  c->error_keep_us, out)) {
				aside__count(st, ASIDE__C_stale_on_error, 1);
				return ASIDE_OK;
			}
			return aside__fail(
			    err, ASIDE_ETIMEDOUT,
			    "waited %lld ms for another reader's load",
			    (long long)c->wait_ms);
		}
		if (f->source < 0)
			aside__count(st, ASIDE__C_shared_loads, 1);
	}

	int rc = f->status;
	*out = f->result ? aside_value_ref(f->result) : NULL;
	if (rc < 0 && err)
		*err = f->err;
	int source = f->source;
	bool stale = f->stale;
	flight_unref_locked(f);
	pthread_mutex_unlock(&sh->lock);
	if (stale)
		aside__count(st, ASIDE__C_stale_on_error, 1);
	if (source >= 0) {
		count_hit(st, source, *out);
	} else {
		aside__count(st, ASIDE__C_misses, 1);
	}
	return rc;
}

/* aside_cache_read when the value is not lent from L1: a reference. */
static __attribute__((noinline)) int
read_referenced(aside_cache *c, const char *key, size_t klen,
		const aside_loader *ld, aside_read_fn fn, void *arg,
		aside_error *err)
{
	aside_value *v = NULL;
	int rc = aside_cache_get(c, key, klen, ld, &v, err);
	if (rc == ASIDE_OK) {
		fn(arg, v);
		aside_value_unref(v);
	}
	return rc;
}

/*
 * The hit path that matters most: kept to what a lent L1 hit needs, with
 * everything else out of line, so that it is short enough for the CPU to
 * overlap one hit's cache misses with the next one's.
 */
int aside_cache_read(aside_cache *c, const char *key, size_t klen,
		     const aside_loader *ld, aside_read_fn fn, void *arg,
		     aside_error *err)
{
	if (__builtin_expect(!c || !key || klen - 1 >= ASIDE_KEY_MAX || !fn ||
				 !ld || !ld->load,
			     0))
		return aside__fail(err, ASIDE_EINVAL,
				   "aside_cache_read: bad arguments");
	if (c->l1 && l1_trusted(c) && aside__read_begin()) {
		const aside_value *v = aside__mem_borrow(
		    c->l1, key, klen, aside__hash(key, klen), now_of(c));
		/* A value that still needs decoding goes the long way. */
		if (__builtin_expect(v != NULL, 1) &&
		    (!ld->decode ||
		     atomic_load_explicit(&v->obj, memory_order_acquire))) {
			/* Counted first, so that nothing but the section's
			 * end needs keeping across the callback. */
			aside__count(stripe(c), ASIDE__C_tier_hit0, 1);
			fn(arg, v);
			aside__read_end();
			return ASIDE_OK;
		}
		aside__read_end();
	}
	return read_referenced(c, key, klen, ld, fn, arg, err);
}

/* ---- the write path ---------------------------------------------------- */

/* The first half of an invalidation: the key marked, its flights voided. */
static int inval_begin(aside_cache *c, const char *key, size_t klen,
		       uint64_t hash, bool late, aside_error *err)
{
	/* A write may have made the key exist: the gate lets it through
	 * from now on, before the write returns. */
	gate_hear(c, key, klen, hash);
	struct flight_shard *sh = flight_shard(c, hash);
	struct inval *mark = calloc(1, sizeof(*mark));
	if (mark && !(mark->key = malloc(klen))) {
		free(mark);
		mark = NULL;
	}
	if (!mark)
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	memcpy(mark->key, key, klen);
	mark->klen = klen;
	mark->hash = hash;

	pthread_mutex_lock(&sh->lock);
	struct inval **pp = inval_find_locked(sh, hash, key, klen);
	if (*pp) {
		(*pp)->count++;
		free(mark->key);
		free(mark);
	} else {
		mark->count = 1;
		mark->next = sh->invals;
		sh->invals = mark;
	}
again:
	for (struct flight *f = sh->head, *next; f; f = next) {
		next = f->next;
		if (f->hash != hash || f->klen != klen ||
		    memcmp(f->key, key, klen) != 0)
			continue;
		f->voided = true;
		f->voided_elsewhere |= late;
		if (!f->filling) {
			flight_unlink_locked(sh, f);
			continue;
		}
		f->refs++;
		while (f->filling)
			pthread_cond_wait(&f->cond, &sh->lock);
		flight_unref_locked(f);
		goto again; /* the list may have changed while we waited */
	}
	pthread_mutex_unlock(&sh->lock);
	return ASIDE_OK;
}

/* The last half: the mark taken off, once the last delete is done. */
static void inval_end(aside_cache *c, const char *key, size_t klen,
		      uint64_t hash)
{
	struct flight_shard *sh = flight_shard(c, hash);
	pthread_mutex_lock(&sh->lock);
	struct inval **pp = inval_find_locked(sh, hash, key, klen);
	struct inval *done = NULL;
	if (*pp && --(*pp)->count == 0) {
		done = *pp;
		*pp = done->next;
	}
	pthread_mutex_unlock(&sh->lock);
	if (done) {
		free(done->key);
		free(done);
	}
}

/* A tier's error: counted, and kept if it is the first. */
static void tier_failed(aside_cache *c, int trc, const aside_error *terr,
			int *rc, aside_error *err)
{
	aside__count(stripe(c), ASIDE__C_tier_errors, 1);
	if (*rc == ASIDE_OK) {
		*rc = trc;
		if (err)
			*err = *terr;
	}
}

/*
 * Invalidates one key; see the protocol at the top of this file.  The key
 * is marked as being invalidated until its last delete is done, so that a
 * flight starting meanwhile (which could read the old value from a tier not
 * yet cleaned) never stores.  Every flight already there is voided; one
 * that is storing stays linked until it is done, so that each invalidation
 * arriving meanwhile, not just the first, waits for the store before it
 * deletes.
 */
static int invalidate_one(aside_cache *c, const char *key, size_t klen,
			  bool local_only, bool late, int64_t version,
			  aside_error *err)
{
	uint64_t hash = aside_hash(key, klen);
	int rc = inval_begin(c, key, klen, hash, late, err);
	if (rc != ASIDE_OK)
		return rc;

	/* Shared tiers first: an in-process tier refilled meanwhile could
	 * only be refilled from them.  Local only: another cache has done the
	 * shared ones and told us. */
	for (int i = local_only ? (c->l1 ? 0 : -1) : c->ntiers - 1; i >= 0;
	     i--) {
		aside_error terr;
		const aside_tier *t = &c->tiers[i];
		int trc =
		    version > 0 && t->ops->version >= 2 && t->ops->tombstone
			? t->ops->tombstone(t->self, key, klen, hash, version,
					    &terr)
			: t->ops->del(t->self, key, klen, hash, &terr);
		if (trc < 0)
			tier_failed(c, trc, &terr, &rc, err);
	}
	aside__count(stripe(c),
		     local_only ? ASIDE__C_remote_invalidations
				: ASIDE__C_invalidations,
		     1);
	inval_end(c, key, klen, hash);
	return rc;
}

#define INVAL_BATCH 256 /* keys a tier's del_many gets at once */

/* invalidate_one of n <= INVAL_BATCH keys (late, version 0) together. */
static int invalidate_batch(aside_cache *c, const char *const *keys,
			    const size_t *klens, size_t n, aside_error *err)
{
	uint64_t hashes[INVAL_BATCH];
	size_t begun = 0;
	int rc = ASIDE_OK;
	for (; begun < n; begun++) {
		hashes[begun] = aside_hash(keys[begun], klens[begun]);
		rc = inval_begin(c, keys[begun], klens[begun], hashes[begun],
				 true, err);
		if (rc != ASIDE_OK)
			break;
	}
	/* Shared tiers first, as above. */
	for (int i = c->ntiers - 1; i >= 0 && begun; i--) {
		aside_error terr;
		const aside_tier *t = &c->tiers[i];
		if (t->ops->version >= 4 && t->ops->del_many) {
			int trc = t->ops->del_many(t->self, keys, klens, hashes,
						   begun, &terr);
			if (trc < 0)
				tier_failed(c, trc, &terr, &rc, err);
			continue;
		}
		for (size_t k = 0; k < begun; k++) {
			int trc = t->ops->del(t->self, keys[k], klens[k],
					      hashes[k], &terr);
			if (trc < 0)
				tier_failed(c, trc, &terr, &rc, err);
		}
	}
	aside__count(stripe(c), ASIDE__C_invalidations, begun);
	for (size_t k = 0; k < begun; k++)
		inval_end(c, keys[k], klens[k], hashes[k]);
	return rc;
}

/* Adds s to the set of n strings (growing it); ASIDE_OK or ASIDE_ENOMEM. */
static int add_once(char ***set, size_t *n, size_t *cap, const char *s)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*set)[i], s))
			return ASIDE_OK;
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		char **grown = realloc(*set, ncap * sizeof(**set));
		if (!grown)
			return ASIDE_ENOMEM;
		*set = grown;
		*cap = ncap;
	}
	if (!((*set)[*n] = strdup(s)))
		return ASIDE_ENOMEM;
	(*n)++;
	return ASIDE_OK;
}

/* Adds the keys related to key's namespace to the set, copied out so that
 * no lock is held across tiers.  ASIDE_OK or ASIDE_ENOMEM. */
static int add_related(aside_cache *c, const char *key, size_t klen,
		       char ***set, size_t *n, size_t *cap)
{
	int rc = ASIDE_OK;
	pthread_mutex_lock(&c->ns_lock);
	struct ns_policy *ns = ns_find_locked(c, key, ns_len(key, klen));
	for (size_t j = 0; ns && j < ns->nrelated && rc == ASIDE_OK; j++)
		rc = add_once(set, n, cap, ns->related[j]);
	pthread_mutex_unlock(&c->ns_lock);
	return rc;
}

/* Invalidates the n related keys and frees them; rc: the caller's so far,
 * returned unless it is ASIDE_OK and one of them fails. */
static int invalidate_related(aside_cache *c, char **set, size_t n, bool late,
			      int rc, aside_error *err)
{
	for (size_t i = 0; i < n; i++) {
		int r = invalidate_one(c, set[i], strlen(set[i]), false, late,
				       0, rc == ASIDE_OK ? err : NULL);
		if (rc == ASIDE_OK)
			rc = r;
		free(set[i]);
	}
	free(set);
	return rc;
}

int aside_cache_invalidate_late_many(aside_cache *c, const char *const *keys,
				     const size_t *klens, size_t n,
				     aside_error *err)
{
	if (!c || (n && (!keys || !klens)))
		return aside__fail(err, ASIDE_EINVAL,
				   "aside_cache_invalidate_late_many: bad "
				   "arguments");
	for (size_t i = 0; i < n; i++)
		if (!keys[i] || klens[i] == 0 || klens[i] > ASIDE_KEY_MAX)
			return aside__fail(err, ASIDE_EINVAL,
					   "aside_cache_invalidate_late_many: "
					   "bad key %zu",
					   i);
	char **related = NULL; /* each once for them all */
	size_t nrel = 0, cap = 0;
	int rc = ASIDE_OK;
	for (size_t i = 0; i < n && rc == ASIDE_OK; i++)
		rc = add_related(c, keys[i], klens[i], &related, &nrel, &cap);
	if (rc != ASIDE_OK)
		aside__fail(err, rc, "out of memory");
	for (size_t at = 0; at < n; at += INVAL_BATCH) {
		size_t m = n - at < INVAL_BATCH ? n - at : INVAL_BATCH;
		int r = invalidate_batch(c, keys + at, klens + at, m,
					 rc == ASIDE_OK ? err : NULL);
		if (rc == ASIDE_OK)
			rc = r;
	}
	return invalidate_related(c, related, nrel, true, rc, err);
}

int aside_cache_invalidate(aside_cache *c, const char *key, size_t klen,
			   aside_error *err)
{
	return aside_cache_invalidate_version(c, key, klen, 0, err);
}

/* Invalidates key and its related keys; late: see aside_cache_invalidate_late.
 */
static int invalidate_with_related(aside_cache *c, const char *key, size_t klen,
				   bool late, int64_t version, aside_error *err)
{
	if (!c || !key || klen == 0 || klen > ASIDE_KEY_MAX || version < 0)
		return aside__fail(err, ASIDE_EINVAL,
				   "aside_cache_invalidate: bad arguments");
	int rc = invalidate_one(c, key, klen, false, late, version, err);
	char **related = NULL;
	size_t n = 0, cap = 0;
	if (add_related(c, key, klen, &related, &n, &cap) != ASIDE_OK &&
	    rc == ASIDE_OK)
		rc = aside__fail(err, ASIDE_ENOMEM, "out of memory");
	return invalidate_related(c, related, n, late, rc, err);
}

int aside_cache_invalidate_version(aside_cache *c, const char *key, size_t klen,
				   int64_t version, aside_error *err)
{
	return invalidate_with_related(c, key, klen, false, version, err);
}

int aside_cache_invalidate_late(aside_cache *c, const char *key, size_t klen,
				int64_t version, aside_error *err)
{
	return invalidate_with_related(c, key, klen, true, version, err);
}

/* ---- metrics ----------------------------------------------------------- */

void aside_cache_metrics(aside_cache *c, aside_metrics *m)
{
	uint64_t sum[ASIDE__NCOUNTERS] = {0};
	memset(m, 0, sizeof(*m));
	for (int s = 0; s < ASIDE__STRIPES; s++) {
		for (int i = 0; i < ASIDE__NCOUNTERS; i++)
			sum[i] += atomic_load_explicit(&c->stripes[s].c[i],
						       memory_order_relaxed);
		for (int b = 0; b < ASIDE_HIST_BUCKETS; b++)
			m->load_hist[b] += atomic_load_explicit(
			    &c->stripes[s].hist[b], memory_order_relaxed);
	}
	m->ntiers = c->ntiers;
	for (int i = 0; i < c->ntiers; i++) {
		m->tier_hits[i] = sum[ASIDE__C_tier_hit0 + i];
		m->tier_misses[i] = sum[ASIDE__C_tier_miss0 + i];
		m->hits += m->tier_hits[i];
		m->tier_names[i] = c->tiers[i].ops->name;
		m->tier_up[i] = c->tiers[i].ops->up
				    ? c->tiers[i].ops->up(c->tiers[i].self)
				    : 1;
		if (c->tiers[i].ops->evictions)
			m->evictions +=
			    c->tiers[i].ops->evictions(c->tiers[i].self);
		if (c->tiers[i].ops->version >= 3 && c->tiers[i].ops->skipped)
			m->tier_skipped[i] =
			    c->tiers[i].ops->skipped(c->tiers[i].self);
	}
	m->misses = sum[ASIDE__C_misses];
	m->loads = sum[ASIDE__C_loads];
	m->load_ok = sum[ASIDE__C_load_ok];
	m->not_found = sum[ASIDE__C_not_found];
	m->load_errors = sum[ASIDE__C_load_errors];
	m->shared_loads = sum[ASIDE__C_shared_loads];
	m->wait_timeouts = sum[ASIDE__C_wait_timeouts];
	m->fills = sum[ASIDE__C_fills];
	m->fills_voided = sum[ASIDE__C_fills_voided];
	m->invalidations = sum[ASIDE__C_invalidations];
	m->remote_invalidations = sum[ASIDE__C_remote_invalidations];
	m->l1_flushes = sum[ASIDE__C_l1_flushes];
	m->lease_waits = sum[ASIDE__C_lease_waits];
	m->fills_refused = sum[ASIDE__C_fills_refused];
	m->lease_timeouts = sum[ASIDE__C_lease_timeouts];
	m->stale_served = sum[ASIDE__C_stale_served];
	m->stale_on_error = sum[ASIDE__C_stale_on_error];
	m->stale_while_revalidate = sum[ASIDE__C_stale_while_revalidate];
	m->negative_hits = sum[ASIDE__C_negative_hits];
	m->breaker_refusals = sum[ASIDE__C_breaker_refusals];
	m->breaker_open = c->breaker_n && atomic_load(&c->breaker_until) != 0;
	m->gate_rejects = sum[ASIDE__C_gate_rejects];
	m->gate_fills = sum[ASIDE__C_gate_fills];
	pthread_mutex_lock(&c->gate_lock);
	struct aside__gate *g = atomic_load(&c->gate);
	m->gate_armed = g && atomic_load(&c->gate_armed);
	m->gate_bytes = g ? aside__gate_bytes(g) : 0;
	pthread_mutex_unlock(&c->gate_lock);
	m->corrupt = sum[ASIDE__C_corrupt];
	m->tier_errors = sum[ASIDE__C_tier_errors];
	m->load_time_us_sum = sum[ASIDE__C_load_time_us_sum];
	m->load_p50_us = aside_hist_quantile(m->load_hist, 0.50);
	m->load_p99_us = aside_hist_quantile(m->load_hist, 0.99);
	m->entries = c->l1 ? c->tiers[0].ops->count(c->l1) : 0;
	m->waiting = atomic_load_explicit(&c->waiting, memory_order_relaxed);
}
