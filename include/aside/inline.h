/*
 * inline.h -- an L1 hit compiled into the caller.
 *
 * aside_cache_read_inline is aside_cache_read, with the hit on an
 * in-process tier done here, in the caller's code, rather than behind a
 * call into the shared library: a hit then costs what it costs when the
 * library is linked statically with -flto, without the call, the checks a
 * call cannot skip and the registers it saves (docs/performance.md).
 * Anything else -- a miss, an expired entry, a value still to be decoded,
 * a cache without an L1, an L1 over Redis that Redis has not confirmed
 * within its bound -- is passed to aside_cache_read, which does the rest.
 *
 * The hit reads the library's layouts, and those are fixed by
 * ASIDE_INLINE_ABI.  A library that lays them out otherwise publishes
 * another number in every cache it opens, and a program compiled against
 * this header then calls the library for every read: an old program keeps
 * working with a new library, only without the shortcut.  What never
 * changes is where that number is: the first 32 bits of a cache, and
 * aside__inline_abi for the accessors.
 *
 * Nothing here but aside_cache_read_inline, aside_value_data_inline and
 * aside_value_obj_inline is API; the rest is what they need, named aside__
 * to say so.
 */
#ifndef ASIDE_INLINE_H
#define ASIDE_INLINE_H

#include <aside/aside.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#define ASIDE_INLINE_ABI 2

#ifdef __cplusplus
/* The layouts below are C (_Atomic); C++ calls the library. */
static inline int aside_cache_read_inline(aside_cache *c, const char *key,
					  size_t klen,
					  const aside_loader *loader,
					  aside_read_fn fn, void *arg,
					  aside_error *err)
{
	return aside_cache_read(c, key, klen, loader, fn, arg, err);
}
static inline const void *aside_value_data_inline(const aside_value *v,
						  size_t *len)
{
	return aside_value_data(v, len);
}
static inline void *aside_value_obj_inline(const aside_value *v)
{
	return aside_value_obj(v);
}
#else

/*
 * What a cache publishes at its start for the inline hit: the L1's tables
 * and where this thread's state lies.  abi is ASIDE_INLINE_ABI when the
 * rest may be used, 0 when every read must go through the library (no L1,
 * an injected clock, or a library built for AddressSanitizer).
 */
struct aside__inline {
	uint32_t abi;
	uint32_t shard_mask; /* the L1's shards, less one */
	const char *shards;  /* the first shard: struct aside__inline_shard */
	size_t shard_stride; /* bytes from one shard to the next */
	char *heads;	     /* a slot's head index counts 64-byte lines here */
	uint64_t hash_seed;
	const _Atomic int64_t *now_us; /* the clock's latest tick; 0: none */
	const _Atomic uint64_t *epoch; /* the read sections' epoch */
	const bool *need_fence;	       /* sections fence themselves */
	/* This thread's read section and counter stripe, as offsets from the
	 * thread pointer (the library's thread-locals are initial-exec). */
	ptrdiff_t reader_tp, stripe_tp;
	char *hits;	      /* the first stripe's L1 hit counter */
	size_t stripe_stride; /* bytes from one stripe's counter to the next */
	/* An L1 over Redis with a bound (l1_bound_ms) serves only while the
	 * invalidation subscription has confirmed, within bound_us, that it
	 * missed nothing: confirmed is that time (CLOCK_MONOTONIC_COARSE, in
	 * µs; 0: never).  NULL when the L1 answers on its own. */
	const _Atomic int64_t *confirmed;
	int64_t bound_us;
};

/* The start of an L1 shard: its current table of 32-bit slots. */
struct aside__inline_shard {
	_Atomic uint32_t *region; /* the table of n slots is at region + n */
	_Atomic uint32_t mask;	  /* n - 1 */
};

/*
 * A slot: the head's index (from bit 5), bits 48 to 51 of the key's hash
 * (bits 1 to 4), whether the head has a second line (bit 0); 0 when free.
 */
#define ASIDE__SLOT_TWO_LINES UINT32_C(1)
#define ASIDE__SLOT_TAG_SHIFT 47
#define ASIDE__SLOT_TAG_MASK UINT32_C(0x1e)
#define ASIDE__SLOT_INDEX_SHIFT 5
#define ASIDE__TOUCH_MAX 15

/* A value's head, the key after it. */
struct aside__inline_head {
	_Atomic uint32_t refs;
	_Atomic uint8_t linked; /* 1: in an L1 table, a value */
	_Atomic uint8_t touches;
	uint16_t klen;
	_Atomic int64_t l1_expires_us; /* 0: never */
	void *_Atomic obj;
	char *body;
	uint32_t len;
	uint32_t room;
};

/* A thread's read section. */
struct aside__inline_reader {
	_Atomic uint64_t epoch; /* 0: not in one */
	unsigned depth;
	bool registered;
};

#define ASIDE__STRIPE_SHARED 63 /* stripes from here on are shared */

#if defined(__SANITIZE_THREAD__)
#define ASIDE__INLINE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ASIDE__INLINE_TSAN 1
#endif
#endif

/*
 * aside_hash: 64 bits of a short key, 8 bytes at a time, each step a
 * 64x64->128 multiply folded in half.  The library hashes with this too.
 */
__extension__ typedef unsigned __int128 aside__u128;

static inline uint64_t aside__fold_mul(uint64_t a, uint64_t b)
{
	aside__u128 r = (aside__u128)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t aside__load64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t aside__load32(const char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/*
 * The tail is read with overlapping whole-word loads, never byte by byte:
 * a byte loop mispredicts whenever key lengths vary, and bytes stored to
 * then reloaded from the stack stall store forwarding.
 */
static inline uint64_t aside__hash_seeded(uint64_t seed, const char *key,
					  size_t klen)
{
	const uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
		       k2 = 0x8ebc6af09c88c6e3ull;
	uint64_t h = seed ^ (klen * k0), a, b;
	if (__builtin_expect(klen >= 8 && klen <= 16, 1)) {
		/* the common case first: keys such as "user:12345" */
		a = aside__load64(key);
		b = aside__load64(key + klen - 8);
	} else if (klen > 16) {
		const char *p = key;
		size_t n = klen;
		do {
			h = aside__fold_mul(aside__load64(p) ^ k1,
					    aside__load64(p + 8) ^ h);
			p += 16;
			n -= 16;
		} while (n > 16);
		a = aside__load64(key + klen - 16);
		b = aside__load64(key + klen - 8);
	} else if (klen >= 4) {
		a = aside__load32(key);
		b = aside__load32(key + klen - 4);
	} else if (klen > 0) {
		const unsigned char *u = (const unsigned char *)key;
		a = ((uint64_t)u[0] << 16) | ((uint64_t)u[klen >> 1] << 8) |
		    u[klen - 1];
		b = 0;
	} else {
		a = b = 0;
	}
	h = aside__fold_mul(a ^ k1, b ^ h ^ k2);
	return aside__fold_mul(h ^ k0, k1 ^ (h >> 29));
}

/* Whether the key after head v is key. */
static inline bool aside__inline_key_eq(const struct aside__inline_head *v,
					const char *key, size_t klen)
{
	if (v->klen != klen)
		return false;
	const char *k = (const char *)(v + 1);
	if (__builtin_expect(klen <= 16 && klen >= 8, 1)) {
		/* Two overlapping 8-byte compares, no call. */
		uint64_t a0, a1, b0, b1;
		memcpy(&a0, k, 8);
		memcpy(&b0, key, 8);
		memcpy(&a1, k + klen - 8, 8);
		memcpy(&b1, key + klen - 8, 8);
		return ((a0 ^ b0) | (a1 ^ b1)) == 0;
	}
	return memcmp(k, key, klen) == 0;
}

static inline const struct aside__inline_shard *
aside__inline_shard_of(const struct aside__inline *d, uint64_t hash)
{
	size_t i = (size_t)((hash >> 40) & d->shard_mask);
	return (const struct aside__inline_shard *)(d->shards +
						    i * d->shard_stride);
}

static inline struct aside__inline_head *
aside__inline_head_at(const struct aside__inline *d, uint32_t slot)
{
	size_t line = slot >> ASIDE__SLOT_INDEX_SHIFT;
	return (struct aside__inline_head *)(d->heads + line * 64);
}

/*
 * The hit: the head of key's live entry, touched for the policy as the
 * library touches it, or NULL for anything the library must decide.
 * Inside a read section.
 */
static inline const struct aside__inline_head *
aside__inline_find(const struct aside__inline *d, const char *key, size_t klen,
		   uint64_t hash, int64_t now)
{
	const struct aside__inline_shard *sh = aside__inline_shard_of(d, hash);
	uint32_t mask = atomic_load_explicit(&sh->mask, memory_order_acquire);
	_Atomic uint32_t *slots = sh->region + (size_t)mask + 1;
	const uint32_t tag = (uint32_t)(hash >> ASIDE__SLOT_TAG_SHIFT);
	for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
		uint32_t w =
		    atomic_load_explicit(&slots[i], memory_order_acquire);
		if (!w)
			return NULL;
		if ((w ^ tag) & ASIDE__SLOT_TAG_MASK)
			continue; /* another key's tag */
		struct aside__inline_head *v = aside__inline_head_at(d, w);
		if (w & ASIDE__SLOT_TWO_LINES)
			__builtin_prefetch((const char *)v + 64);
		if (!aside__inline_key_eq(v, key, klen))
			continue;
		/* A removed entry may linger in a slot loaded before its
		 * removal: `linked` tells.  Anything but a live value (a
		 * cached absence is 2) is the library's to answer. */
		if (atomic_load_explicit(&v->linked, memory_order_acquire) != 1)
			return NULL;
		int64_t at = atomic_load_explicit(&v->l1_expires_us,
						  memory_order_relaxed);
		if (at != 0 && now >= at)
			return NULL;
		uint8_t t =
		    atomic_load_explicit(&v->touches, memory_order_relaxed);
		if (__builtin_expect(t < ASIDE__TOUCH_MAX, 0))
			atomic_store_explicit(&v->touches, (uint8_t)(t + 1),
					      memory_order_relaxed);
		return v;
	}
}

/*
 * Whether the L1 may answer now: the library's own test (l1_trusted), on
 * the same clock.  The clock, and not the ticker's time, because a bound
 * is a promise: a ticker starved, or stopped with the process, would let
 * hits pass it.  A build that does not declare that clock (strict ISO C,
 * no POSIX) leaves such caches to the library.
 */
static inline bool aside__inline_trusted(const struct aside__inline *d)
{
	if (__builtin_expect(d->confirmed == NULL, 1))
		return true;
#ifdef CLOCK_MONOTONIC_COARSE
	int64_t at = atomic_load_explicit(d->confirmed, memory_order_acquire);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return at != 0 &&
	       (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - at <=
		   d->bound_us;
#else
	return false;
#endif
}

/* A read section begun (the reader outside one), and ended. */
static inline void aside__inline_begin(const struct aside__inline *d,
				       struct aside__inline_reader *r)
{
	r->depth = 1;
	uint64_t e = atomic_load_explicit(d->epoch, memory_order_acquire);
#ifdef ASIDE__INLINE_TSAN
	/* A full barrier ThreadSanitizer understands (it models no fences). */
	atomic_exchange_explicit(&r->epoch, e, memory_order_seq_cst);
#else
	atomic_store_explicit(&r->epoch, e, memory_order_relaxed);
	if (__builtin_expect(*d->need_fence, 0))
		atomic_thread_fence(memory_order_seq_cst);
	else
		atomic_signal_fence(memory_order_seq_cst); /* membarrier(2) */
#endif
}

static inline void aside__inline_end(struct aside__inline_reader *r)
{
	r->depth = 0;
	atomic_store_explicit(&r->epoch, 0, memory_order_release);
}

/* One more L1 hit in this thread's stripe: a plain add in its own, an
 * atomic one in the stripe the threads past the first 63 share. */
static inline void aside__inline_count(const struct aside__inline *d,
				       int stripe)
{
	_Atomic uint64_t *n =
	    (_Atomic uint64_t *)(d->hits + (size_t)stripe * d->stripe_stride);
	if (__builtin_expect(stripe < ASIDE__STRIPE_SHARED, 1))
		atomic_store_explicit(
		    n, atomic_load_explicit(n, memory_order_relaxed) + 1,
		    memory_order_relaxed);
	else
		atomic_fetch_add_explicit(n, 1, memory_order_relaxed);
}

/*
 * aside_cache_read (aside.h), with an L1 hit done inline when the cache
 * allows it.  The same arguments, results, counts and guarantees.
 */
static inline int aside_cache_read_inline(aside_cache *c, const char *key,
					  size_t klen,
					  const aside_loader *loader,
					  aside_read_fn fn, void *arg,
					  aside_error *err)
{
#if (defined(__x86_64__) || defined(__aarch64__)) && defined(__GNUC__)
	const struct aside__inline *d = (const struct aside__inline *)c;
	if (__builtin_expect(c != NULL && d->abi == ASIDE_INLINE_ABI &&
				 key != NULL && klen - 1 < ASIDE_KEY_MAX &&
				 loader != NULL && loader->load != NULL &&
				 fn != NULL,
			     1)) {
		char *tp = (char *)__builtin_thread_pointer();
		struct aside__inline_reader *r =
		    (struct aside__inline_reader *)(tp + d->reader_tp);
		int stripe = *(const int *)(tp + d->stripe_tp);
		int64_t now =
		    atomic_load_explicit(d->now_us, memory_order_relaxed);
		/* A thread's first read, a nested one, no clock yet, or an
		 * L1 not to be trusted now: the library's. */
		if (__builtin_expect(r->depth == 0 && r->registered &&
					 stripe >= 0 && now != 0 &&
					 aside__inline_trusted(d),
				     1)) {
			aside__inline_begin(d, r);
			uint64_t h =
			    aside__hash_seeded(d->hash_seed, key, klen);
			const struct aside__inline_head *v =
			    aside__inline_find(d, key, klen, h, now);
			/* A value a decoding loader wants decoded first
			 * goes the long way too. */
			if (__builtin_expect(v != NULL, 1) &&
			    (!loader->decode ||
			     atomic_load_explicit(&v->obj,
						  memory_order_acquire))) {
				/* Counted first, so that nothing but the
				 * section's end is kept across the call. */
				aside__inline_count(d, stripe);
				fn(arg, (const aside_value *)v);
				aside__inline_end(r);
				return ASIDE_OK;
			}
			aside__inline_end(r);
		}
	}
#endif
	return aside_cache_read(c, key, klen, loader, fn, arg, err);
}

/*
 * The library's ASIDE_INLINE_ABI: whether the accessors below may read a
 * value as this header lays it out (a value lent to aside_read_fn may come
 * from anywhere, not only from an inline hit).
 */
extern const unsigned aside__inline_abi;

/* A value's bytes begin this far into its body (the fields a hit does not
 * read come first). */
#define ASIDE__INLINE_COLD_BYTES 88
#define ASIDE__INLINE_BODY_ABSENT ((uintptr_t)1)

/* aside_value_data (aside.h), inline. */
static inline const void *aside_value_data_inline(const aside_value *v,
						  size_t *len)
{
	if (__builtin_expect(aside__inline_abi == ASIDE_INLINE_ABI, 1)) {
		const struct aside__inline_head *h =
		    (const struct aside__inline_head *)v;
		if (len)
			*len = h->len;
		return (const char *)((uintptr_t)h->body &
				      ~ASIDE__INLINE_BODY_ABSENT) +
		       ASIDE__INLINE_COLD_BYTES;
	}
	return aside_value_data(v, len);
}

/* aside_value_obj (aside.h), inline. */
static inline void *aside_value_obj_inline(const aside_value *v)
{
	if (__builtin_expect(aside__inline_abi == ASIDE_INLINE_ABI, 1))
		return atomic_load_explicit(
		    &((const struct aside__inline_head *)v)->obj,
		    memory_order_acquire);
	return aside_value_obj(v);
}

#endif /* __cplusplus */

#endif /* ASIDE_INLINE_H */
