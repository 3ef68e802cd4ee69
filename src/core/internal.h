/*
 * internal.h -- what the files of libaside share and nothing outside sees.
 * Names here start with aside__.
 */
#ifndef ASIDE_INTERNAL_H
#define ASIDE_INTERNAL_H

#include <aside/aside.h>
#include <aside/inline.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* Nothing declared here leaves the library: no symbol to clash with, and
 * the hit path reaches these variables directly, not through the GOT. */
#pragma GCC visibility push(hidden)

#define ASIDE__CACHELINE 64

/*
 * A value is two allocations.  Its *head* is what an L1 hit reads:
 *
 *   [struct aside_value][key][room]        a whole number of cache lines
 *
 * the header, the key and the room (a decoded form stored inline), carved
 * back to back from pools of a few sizes (value.c), so that the heads of
 * many entries sit densely: a hit at 100,000 entries costs what the pages
 * and lines it touches cost, and sparse heads touch more of both.  Its
 * *body* holds what a hit does not read, or reads only at the caller's
 * wish:
 *
 *   [struct aside__value_cold][bytes][NUL]
 */
struct aside_value {
	_Atomic uint32_t refs;
	_Atomic uint8_t linked; /* in an L1 table; written under its lock */
	/* Hits since the L1's policy last looked, saturating at 15: the only
	 * thing a lock-free reader writes, and only while it is below 15. */
	_Atomic uint8_t touches;
	uint16_t klen;
	/* When the L1 holding it stops serving it: the value's expiry, or
	 * sooner when the L1 bounds how long it may keep an entry. */
	_Atomic int64_t l1_expires_us;
	_Atomic(void *) obj; /* the decoded form: in the room, or malloc'd */
	char *body; /* the cold part, then the bytes; see ASIDE__BODY_ABSENT */
	uint32_t len;  /* bytes */
	uint32_t room; /* room bytes, a multiple of 8 */
};

struct aside__value_cold {
	uint64_t hash; /* of the key */
	_Atomic int64_t expires_at_us;
	void (*_Atomic obj_free)(void *); /* NULL when obj is in the room */
	_Atomic size_t obj_bytes;
	_Atomic uint32_t load_us;
	_Atomic uint8_t published;     /* was ever in an L1 table */
	struct aside_value *next_free; /* in a retire list */
	/* The L1 policy's bookkeeping, guarded by the L1 shard's lock (a
	 * value is in at most one L1 table at a time). */
	struct aside_value *lru_prev, *lru_next;
	size_t charged; /* bytes charged against the shard's byte bound */
	uint8_t segment;
	/* The policy's marks on it (MARK_* in mem.c): its key came back
	 * lately after the filter turned it away, so it is let into the main
	 * area at its next contest; protected's hand sent it to probation. */
	uint8_t marks;
	/* Hit while in the main area: as a victim it counts one more. */
	uint8_t proven;
	/* The same as the body's ASIDE__BODY_ABSENT bit, for a reader about
	 * to read the bytes anyway (see cache_get). */
	uint8_t absent;
	/* The head's index (aside__head_index), kept for its free; under
	 * AddressSanitizer the only record of it.  In padding: the cold
	 * fields stay 88 bytes. */
	uint32_t head_index;
	_Atomic int64_t version; /* of the source row; 0: none */
};

#define ASIDE__ALIGN8(n) (((n) + 7) & ~(size_t)7)

static inline const char *aside__value_keyp(const aside_value *v)
{
	return (const char *)(v + 1);
}

static inline char *aside__value_roomp(const aside_value *v)
{
	return (char *)(v + 1) + ASIDE__ALIGN8(v->klen);
}

/*
 * A cached absence (negative_ttl_ms): the loader found nothing.  No bytes,
 * never decoded; a read that finds it answers ASIDE_NOT_FOUND.  It is
 * marked in the lowest bit of `body` (a body is at least 16-byte aligned),
 * set before the value is shared and never changed, so that a hit can tell
 * an absence from the head alone: a flag in the cold part only cost every
 * aside_cache_get hit one more cache miss, on the body's line (cache_get's
 * count_l1_hit says when it still asks the cold part's copy).
 */
#define ASIDE__BODY_ABSENT ((uintptr_t)1)

static inline struct aside__value_cold *aside__value_cold(const aside_value *v)
{
	return (struct aside__value_cold *)((uintptr_t)v->body &
					    ~ASIDE__BODY_ABSENT);
}

static inline const char *aside__value_bytes(const aside_value *v)
{
	return (const char *)aside__value_cold(v) +
	       sizeof(struct aside__value_cold);
}

static inline uint64_t aside__value_hash(const aside_value *v)
{
	return aside__value_cold(v)->hash;
}

/* The head's size: whole cache lines. */
static inline size_t aside__value_head_size(size_t klen, size_t room)
{
	size_t n = sizeof(aside_value) + ASIDE__ALIGN8(klen) + room;
	return (n + ASIDE__CACHELINE - 1) & ~(size_t)(ASIDE__CACHELINE - 1);
}

/*
 * Heads live in one region of address space reserved at the first value
 * (value.c), so that an L1 slot names one in ASIDE__HEAD_INDEX_BITS bits:
 * its index in cache lines from the region's start, 0 for none.  A head
 * outside the region (larger than 2 MiB, or the region spent or never
 * granted) has index 0, and an L1 does not keep it.  The base is written
 * once, before any head exists.
 *
 * Under AddressSanitizer each head is malloc'd instead, so that it checks
 * every head as it checks any object (bounds, use after free, leaks), and
 * an index names a head through a table of them (value.c).
 */
#define ASIDE__HEAD_INDEX_BITS 27
#define ASIDE__HEADS_MIN_BYTES ((size_t)256 << 20) /* the least region */
#if defined(__SANITIZE_ADDRESS__)
#define ASIDE__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASIDE__ASAN 1
#endif
#endif
/* Reserves the region if not yet done; false if the system refused it. */
bool aside__heads_reserved(void);

#ifdef ASIDE__ASAN
extern aside_value **aside__head_table;

static inline uint32_t aside__head_index(const aside_value *v)
{
	return aside__value_cold(v)->head_index;
}

static inline aside_value *aside__head_at(uint32_t index)
{
	return aside__head_table[index];
}
#else
extern char *aside__heads_base;
extern size_t aside__heads_bytes;

static inline uint32_t aside__head_index(const aside_value *v)
{
	uintptr_t off = (uintptr_t)v - (uintptr_t)aside__heads_base;
	return aside__heads_base && off < aside__heads_bytes
		   ? (uint32_t)(off / ASIDE__CACHELINE)
		   : 0;
}

static inline aside_value *aside__head_at(uint32_t index)
{
	return (aside_value *)(aside__heads_base +
			       (size_t)index * ASIDE__CACHELINE);
}
#endif

static inline size_t aside__value_body_size(size_t len)
{
	return sizeof(struct aside__value_cold) + len + 1;
}

/* The comparison an inline hit makes (<aside/inline.h>), on the same head:
 * value.c asserts the two layouts agree. */
static inline bool aside__value_key_eq(const aside_value *v, const char *key,
				       size_t klen)
{
	return aside__inline_key_eq((const struct aside__inline_head *)v, key,
				    klen);
}

/*
 * Read sections (epoch.c).  Inside one, a value reached through an L1 table
 * is not freed, even if it is removed meanwhile; a section must be short
 * and never block.  Sections nest.  begin returns false if this thread
 * could not register (out of memory): it must then not read L1 at all.
 */
struct aside__reader {
	_Atomic uint64_t epoch;	    /* 0: not in a section */
	unsigned depth;		    /* owner only */
	bool registered;	    /* owner only */
	struct aside__reader *next; /* guarded by the registry lock */
} __attribute__((aligned(ASIDE__CACHELINE)));

extern _Atomic uint64_t aside__epoch;
extern _Thread_local struct aside__reader aside__me
    __attribute__((tls_model("initial-exec")));
extern bool aside__need_fence; /* no membarrier(2): readers fence */
void aside__reader_register(void);

#if defined(__SANITIZE_THREAD__)
#define ASIDE__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ASIDE__TSAN 1
#endif
#endif

static inline bool aside__read_begin(void)
{
	struct aside__reader *r = &aside__me;
	if (__builtin_expect(r->depth++ > 0, 0))
		return true;
	if (__builtin_expect(!r->registered, 0)) {
		aside__reader_register();
		if (!r->registered) {
			r->depth--;
			return false;
		}
	}
	uint64_t e = atomic_load_explicit(&aside__epoch, memory_order_acquire);
#ifdef ASIDE__TSAN
	/* A full barrier ThreadSanitizer understands (it models no fences). */
	atomic_exchange_explicit(&r->epoch, e, memory_order_seq_cst);
#else
	atomic_store_explicit(&r->epoch, e, memory_order_relaxed);
	if (__builtin_expect(aside__need_fence, 0))
		atomic_thread_fence(memory_order_seq_cst);
	else
		atomic_signal_fence(
		    memory_order_seq_cst); /* membarrier does the rest */
#endif
	return true;
}

static inline void aside__read_end(void)
{
	struct aside__reader *r = &aside__me;
	if (__builtin_expect(--r->depth == 0, 1))
		atomic_store_explicit(&r->epoch, 0, memory_order_release);
}

/* Hands a value no one references any more to the reclaimer. */
void aside__retire(aside_value *v);
/* Frees a value now (no reader can reach it). */
void aside__value_free(aside_value *v);
/* Frees what has passed its grace period (tests, cache close). */
void aside__reclaim(void);
/*
 * For memory other than values that lock-free readers reach inside a read
 * section: after unlinking it, aside__grace_start; it may be freed once
 * aside__grace_done says every section that might have seen it has ended.
 */
uint64_t aside__grace_start(void);
bool aside__grace_done(uint64_t grace);

/* A reference on a value seen in a section; false if it is being freed. */
static inline bool aside__value_tryref(aside_value *v)
{
	uint32_t n = atomic_load_explicit(&v->refs, memory_order_relaxed);
	do {
		if (n == 0)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(
	    &v->refs, &n, n + 1, memory_order_acquire, memory_order_relaxed));
	return true;
}

/* Bytes a value is charged against a byte bound. */
static inline size_t aside__value_charge(const aside_value *v)
{
	return aside__value_head_size(v->klen, v->room) +
	       aside__value_body_size(v->len) +
	       atomic_load_explicit(&aside__value_cold(v)->obj_bytes,
				    memory_order_relaxed);
}

static inline bool aside__value_absent(const aside_value *v)
{
	return ((uintptr_t)v->body & ASIDE__BODY_ABSENT) != 0;
}

/* The same answer, read from the cold part, on the line of the bytes. */
static inline bool aside__value_absent_cold(const aside_value *v)
{
	return aside__value_cold(v)->absent != 0;
}

/* A new cached absence of key (no bytes), with one reference. */
int aside__value_new_absent(const char *key, size_t klen, aside_value **out);

/* `linked` of a value in an L1 table: a value, or a cached absence, which
 * a lent read (aside__mem_borrow) passes by. */
#define ASIDE__LINKED 1
#define ASIDE__LINKED_ABSENT 2

static inline void aside__value_set_expiry(aside_value *v, int64_t at_us)
{
	atomic_store_explicit(&aside__value_cold(v)->expires_at_us, at_us,
			      memory_order_relaxed);
}

/*
 * Zeroed memory for a large table (mmap: pages are committed as they are
 * touched), on transparent huge pages when the system allows it (random
 * reads over a big table otherwise miss the TLB on nearly every access).
 * Free with aside__table_free and the same size.
 */
void *aside__table_alloc(size_t bytes);
/*
 * The same on small pages, for a table that is written all over at random
 * long before it is full (the policy's sketch and ghosts): on huge pages
 * each first touch would commit and clear 2 MiB, and a cache of 10^8
 * entries held 1.2 GB and ran 6 to 20 times slower through its first
 * 50,000 reads (docs/performance.md).  Free with aside__table_free.
 */
void *aside__sparse_alloc(size_t bytes);
void aside__table_free(void *p, size_t bytes);

/* errors */
void aside__error_set(aside_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int aside__fail(aside_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The default clock's time as the ticker last read it (ticker.c); 0 when no
 * ticker runs.  hold returns what release takes back (0: not held).
 */
extern _Atomic int64_t aside__ticked_us;
unsigned aside__ticker_hold(void);
void aside__ticker_release(unsigned held);

/* monotonic µs, for durations and waits (never the injectable clock) */
int64_t aside__mono_us(void);

/*
 * aside_hash, inline for the hit path (its body is in <aside/inline.h>, which
 * an inline hit compiles into the caller): written here because no
 * Debian-packaged library offers a fast seeded hash for short byte strings;
 * keys are at most ASIDE_KEY_MAX bytes.  The seed is drawn once per process
 * so that a client cannot pick keys that collide in every process.
 */
extern uint64_t aside__hash_seed;

static inline uint64_t aside__hash(const char *key, size_t klen)
{
	return aside__hash_seeded(aside__hash_seed, key, klen);
}

/* monotonic µs at the kernel tick's resolution (cheap: no clock read) */
int64_t aside__mono_coarse_us(void);

/* pthread_create, with every signal blocked in the new thread */
int aside__thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* a per-thread xorshift generator */
uint64_t aside__rand(void);

/* URL query parameters: "a=1&b=2".  Calls fn for each pair; stops on error. */
typedef int (*aside__param_fn)(void *ctx, const char *k, size_t klen,
			       const char *v, size_t vlen, aside_error *err);
int aside__parse_query(const char *q, aside__param_fn fn, void *ctx,
		       aside_error *err);
/* Parses an unsigned decimal in [min, max]; false if it is not one. */
bool aside__parse_u64(const char *s, size_t len, uint64_t min, uint64_t max,
		      uint64_t *out);

/* Tiers known to aside_cache_open. */
typedef struct aside__tier_params {
	uint64_t capacity;   /* entries */
	uint64_t max_bytes;  /* 0: no byte bound */
	uint64_t shards;     /* 0: chosen from capacity */
	uint64_t max_ttl_ms; /* 0: none; else no entry is kept longer */
	/* How long an entry is kept past its expiry as a stale copy, for a
	 * load that fails or a reader that would wait for another's load
	 * (aside__mem_stale); 0: dropped on sight. */
	uint64_t stale_ms;
} aside__tier_params;
int aside__mem_open(const aside__tier_params *p, aside_tier *out,
		    aside_error *err);
typedef struct aside__redis_params {
	char host[256];
	char user[256]; /* an ACL user (Redis 6 and later); "": the default */
	char password[256];
	uint64_t port, db, connect_timeout_ms, timeout_ms, pool, lease_ms;
	uint64_t tomb_ms, stale_ms;
	/* Entries kept this long past their expiry, handed with a lease to
	 * a reader whose load may fail (stale_if_error_ms); 0: none. */
	uint64_t keep_ms;
	/* Entries kept this long past their expiry too (the longer of the
	 * two), handed to a reader who finds another's lease on the key
	 * (stale_while_revalidate_ms); 0: none. */
	uint64_t swr_ms;
	aside_log_fn log;
	void *log_ctx;
	/* The cache's clock: a stale copy is served up to stale_ms after
	 * the write that left it, by this clock. */
	aside_clock_fn clock;
	void *clock_ctx;
} aside__redis_params;
int aside__redis_open(const aside__redis_params *p, aside_tier *out,
		      aside_error *err);

/* Empties the mem tier (its L1 can no longer be trusted). */
void aside__mem_clear(void *self);

/*
 * Listens for invalidations other caches publish on the Redis tier: a
 * thread calls key(ctx, key, klen) for each, and lost(ctx) whenever some
 * may have been missed (the subscription dropped, or was just restored).
 * It also hears Redis refusing any cache's writes, and stops reading Redis
 * then.  With key and lost NULL (a cache without an L1), it hears only
 * that.  Stopped by closing the tier.
 */
int aside__redis_listen(void *self, void (*key)(void *, const char *, size_t),
			void (*lost)(void *), void *ctx, int64_t confirm_us,
			aside_error *err);
/*
 * When the listener last confirmed it had applied every invalidation
 * published before (aside__mono_coarse_us time; 0: never): it pings Redis
 * through its subscription every confirm_us / 4, and a ping's answer comes
 * after every message published before the ping was sent.
 */
_Atomic int64_t *aside__redis_confirmed(void *self);
/*
 * Sets what runs when the tier comes back after an outage, before it is
 * used again (see aside_cache_on_reconnect).
 */
void aside__redis_on_back(void *self, int (*fn)(void *), void *ctx);

/* A fresh entry of the mem tier, without a reference: inside a section.
 * NULL for a cached absence too (the caller reads it the long way). */
const aside_value *aside__mem_borrow(void *self, const char *key, size_t klen,
				     uint64_t hash, int64_t now);
/* Fills the L1's part of a cache's struct aside__inline: its shards and
 * the heads' region (NULL when heads are not in one). */
void aside__mem_inline(void *self, struct aside__inline *d);
/*
 * An entry of the mem tier past its expiry, by less than max_age_us, and
 * still kept as a stale copy (stale_ms), with a reference; ASIDE_NOT_FOUND
 * if there is none.
 */
int aside__mem_stale(void *self, const char *key, size_t klen, uint64_t hash,
		     int64_t now, int64_t max_age_us, aside_value **out);
/* How often key was read lately, 0 to 15: the L1's sketch, and the hits
 * its entry holds that the policy has not collected yet. */
unsigned aside__mem_frequency(void *self, const char *key, size_t klen,
			      uint64_t hash);

/* The Bloom gate's filter (gate.c), sized for `expected` keys. */
struct aside__gate;
struct aside__gate *aside__gate_new(uint64_t expected);
void aside__gate_free(struct aside__gate *g);
size_t aside__gate_bytes(const struct aside__gate *g);
void aside__gate_add(struct aside__gate *g, uint64_t hash);
/* How many adds it had (at least the distinct keys it holds). */
uint64_t aside__gate_keys(const struct aside__gate *g);
/* Holding twice the keys it was sized for, by that count. */
bool aside__gate_overfull(const struct aside__gate *g);
bool aside__gate_maybe(const struct aside__gate *g, uint64_t hash);

/* Metrics: counters striped per thread so that a hit touches no shared line. */
/* clang-format off: one counter a line; the formatter reflows it each pass */
#define ASIDE__COUNTERS(X)                                                     \
	X(misses)                                                              \
	X(tier_hit0)                                                           \
	X(tier_hit1)                                                           \
	X(tier_hit2)                                                           \
	X(tier_hit3)                                                           \
	X(tier_miss0)                                                          \
	X(tier_miss1)                                                          \
	X(tier_miss2)                                                          \
	X(tier_miss3)                                                          \
	X(loads)                                                               \
	X(load_ok)                                                             \
	X(not_found)                                                           \
	X(load_errors)                                                         \
	X(shared_loads)                                                        \
	X(wait_timeouts)                                                       \
	X(fills)                                                               \
	X(fills_voided)                                                        \
	X(invalidations)                                                       \
	X(remote_invalidations)                                                \
	X(l1_flushes)                                                          \
	X(lease_waits)                                                         \
	X(fills_refused)                                                       \
	X(lease_timeouts)                                                      \
	X(stale_served)                                                        \
	X(stale_on_error)                                                      \
	X(stale_while_revalidate)                                              \
	X(negative_hits)                                                       \
	X(gate_rejects)                                                        \
	X(breaker_refusals)                                                    \
	X(gate_fills)                                                          \
	X(corrupt)                                                             \
	X(tier_errors)                                                         \
	X(load_time_us_sum)
/* clang-format on */

enum {
#define ASIDE__CENUM(n) ASIDE__C_##n,
	ASIDE__COUNTERS(ASIDE__CENUM)
#undef ASIDE__CENUM
	    ASIDE__NCOUNTERS
};

#define ASIDE__STRIPES 64
struct aside__stripe {
	_Atomic uint64_t c[ASIDE__NCOUNTERS];
	_Atomic uint64_t hist[ASIDE_HIST_BUCKETS];
} __attribute__((aligned(ASIDE__CACHELINE)));

/*
 * A thread owns one stripe of every cache while it lives (the first
 * ASIDE__STRIPES - 1 threads do; later ones share the last, atomically), so
 * a counter is bumped with a plain load and store, no locked instruction.
 */
extern _Thread_local int aside__stripe_mine
    __attribute__((tls_model("initial-exec"))); /* -1 until assigned */
int aside__stripe_claim(void);

static inline unsigned aside__stripe_index(void)
{
	int i = aside__stripe_mine;
	return (unsigned)(__builtin_expect(i >= 0, 1) ? i
						      : aside__stripe_claim());
}

static inline void aside__count(struct aside__stripe *s, int counter,
				uint64_t n)
{
	if (__builtin_expect(
		s != NULL && aside__stripe_mine < ASIDE__STRIPES - 1, 1)) {
		/* The owner is the only writer: no read-modify-write needed. */
		atomic_store_explicit(
		    &s->c[counter],
		    atomic_load_explicit(&s->c[counter], memory_order_relaxed) +
			n,
		    memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&s->c[counter], n,
					  memory_order_relaxed);
	}
}

static inline void aside__count_hist(struct aside__stripe *s, int bucket)
{
	if (aside__stripe_mine < ASIDE__STRIPES - 1)
		atomic_store_explicit(
		    &s->hist[bucket],
		    atomic_load_explicit(&s->hist[bucket],
					 memory_order_relaxed) +
			1,
		    memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&s->hist[bucket], 1,
					  memory_order_relaxed);
}

#pragma GCC visibility pop

#endif /* ASIDE_INTERNAL_H */
