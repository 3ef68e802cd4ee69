/*
 * mem.c -- the in-process tier (L1).
 *
 * Shards of open-addressed tables (linear probing, at most half full, sized
 * once from the capacity so they never grow).  Writers take their shard's
 * mutex; readers take no lock and, inside a read section (epoch.c), write
 * nothing shared: a removed value is freed only after every section that
 * might have seen it has ended.  A reader checks `linked` so that it never
 * returns an entry removed before its lookup.  Removal shifts later entries
 * back instead of leaving tombstones; a reader racing with a shift can miss
 * an entry that is there, which costs a load but never returns a wrong
 * value.
 *
 * Eviction is CLOCK (second chance) per shard, the slot array serving as the
 * ring: a hit sets the value's reference bit, the hand clears it, and an
 * entry found with the bit clear, or expired, is evicted.
 */
#include "../core/internal.h"

#include <pthread.h>
#include <stdlib.h>

struct shard {
	pthread_mutex_t lock;
	_Atomic(aside_value *) *slots;
	uint32_t mask;
	uint32_t cap;		/* entries */
	size_t max_bytes;	/* 0: unbounded */
	_Atomic uint32_t count; /* written under lock */
	size_t bytes;		/* guarded by lock */
	uint32_t hand;		/* guarded by lock */
	_Atomic uint64_t evictions;
} __attribute__((aligned(ASIDE__CACHELINE)));

struct mem {
	int64_t max_ttl_us; /* 0: entries live as long as their value */
	uint32_t nshards;   /* a power of two */
	struct shard *shards;
	_Atomic(aside_value *) *slots; /* every shard's slots, one allocation */
	size_t slots_bytes;
};

static inline struct shard *shard_of(struct mem *m, uint64_t hash)
{
	return &m->shards[(hash >> 40) & (m->nshards - 1)];
}

/* Past the time this L1 may serve it: its own expiry, or the L1's bound. */
static inline bool expired(const aside_value *v, int64_t now)
{
	int64_t at =
	    atomic_load_explicit(&v->l1_expires_us, memory_order_relaxed);
	return at != 0 && now >= at;
}

/*
 * Finds a fresh entry for key; call inside a read section.  The value
 * returned is protected by the section only: no reference is taken.
 */
static aside_value *lookup(struct mem *m, const char *key, size_t klen,
			   uint64_t hash, int64_t now)
{
	struct shard *sh = shard_of(m, hash);
	uint32_t i = (uint32_t)hash & sh->mask;
	for (uint32_t n = 0; n <= sh->mask; n++, i = (i + 1) & sh->mask) {
		aside_value *v =
		    atomic_load_explicit(&sh->slots[i], memory_order_acquire);
		if (!v)
			return NULL;
		if (atomic_load_explicit(&v->hash, memory_order_relaxed) !=
			hash ||
		    !aside__value_key_eq(v, key, klen))
			continue;
		/* A removed entry may linger in a slot a reader loaded
		 * before the removal; `linked` tells. */
		if (!atomic_load_explicit(&v->linked, memory_order_acquire))
			continue;
		if (expired(v, now))
			return NULL;
		if (!atomic_load_explicit(&v->visited, memory_order_relaxed))
			atomic_store_explicit(&v->visited, 1,
					      memory_order_relaxed);
		return v;
	}
	return NULL;
}

const aside_value *aside__mem_borrow(void *self, const char *key, size_t klen,
				     uint64_t hash, int64_t now)
{
	return lookup(self, key, klen, hash, now);
}

static int mem_get(void *self, const char *key, size_t klen, uint64_t hash,
		   int64_t now, aside_value **out, aside_error *err)
{
	(void)err;
	if (!aside__read_begin())
		return ASIDE_NOT_FOUND;
	aside_value *v = lookup(self, key, klen, hash, now);
	if (v && !aside__value_tryref(v))
		v = NULL; /* its last reference went while we looked */
	aside__read_end();
	if (!v)
		return ASIDE_NOT_FOUND;
	*out = v;
	return ASIDE_OK;
}

/* Finds key's slot; UINT32_MAX if absent.  Caller holds the lock. */
static uint32_t find_locked(struct shard *sh, const char *key, size_t klen,
			    uint64_t hash)
{
	uint32_t i = (uint32_t)hash & sh->mask;
	for (uint32_t n = 0; n <= sh->mask; n++, i = (i + 1) & sh->mask) {
		aside_value *v =
		    atomic_load_explicit(&sh->slots[i], memory_order_relaxed);
		if (!v)
			return UINT32_MAX;
		if (atomic_load_explicit(&v->hash, memory_order_relaxed) ==
			hash &&
		    aside__value_key_eq(v, key, klen))
			return i;
	}
	return UINT32_MAX;
}

/*
 * Empties slot i and shifts back the entries of its probe run that may now
 * sit earlier.  Drops the table's reference.  Caller holds the lock.
 */
static void remove_at_locked(struct shard *sh, uint32_t i)
{
	aside_value *gone =
	    atomic_load_explicit(&sh->slots[i], memory_order_relaxed);
	uint32_t j = i;
	for (;;) {
		j = (j + 1) & sh->mask;
		aside_value *q =
		    atomic_load_explicit(&sh->slots[j], memory_order_relaxed);
		if (!q)
			break;
		uint32_t home = (uint32_t)atomic_load_explicit(
				    &q->hash, memory_order_relaxed) &
				sh->mask;
		/* q may move to i unless its home lies in (i, j] (cyclically).
		 */
		bool stays =
		    i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			atomic_store_explicit(&sh->slots[i], q,
					      memory_order_release);
			i = j;
		}
	}
	atomic_store_explicit(&sh->slots[i], NULL, memory_order_release);
	atomic_store_explicit(&gone->linked, 0, memory_order_release);
	atomic_store_explicit(
	    &sh->count,
	    atomic_load_explicit(&sh->count, memory_order_relaxed) - 1,
	    memory_order_relaxed);
	sh->bytes -= aside__value_charge(gone);
	aside_value_unref(gone);
}

/* Evicts one entry by CLOCK; false if the shard is empty. */
static bool evict_one_locked(struct shard *sh, int64_t now)
{
	for (uint32_t n = 0; n <= 2 * (sh->mask + 1); n++) {
		uint32_t i = sh->hand;
		aside_value *v =
		    atomic_load_explicit(&sh->slots[i], memory_order_relaxed);
		if (!v) {
			sh->hand = (i + 1) & sh->mask;
			continue;
		}
		if (!expired(v, now) &&
		    atomic_load_explicit(&v->visited, memory_order_relaxed)) {
			atomic_store_explicit(&v->visited, 0,
					      memory_order_relaxed);
			sh->hand = (i + 1) & sh->mask;
			continue;
		}
		/* The hand stays: a shifted entry may now sit at i. */
		remove_at_locked(sh, i);
		atomic_fetch_add_explicit(&sh->evictions, 1,
					  memory_order_relaxed);
		return true;
	}
	return false;
}

static int mem_set(void *self, aside_value *v, uint64_t hash, int64_t now,
		   aside_error *err)
{
	struct shard *sh = shard_of(self, hash);
	size_t klen;
	const char *key = aside_value_key(v, &klen);
	size_t charge = aside__value_charge(v);
	if (sh->max_bytes && charge > sh->max_bytes)
		return aside__fail(err, ASIDE_ETOOBIG,
				   "value of %zu bytes exceeds the tier's "
				   "byte bound per shard (%zu)",
				   charge, sh->max_bytes);

	pthread_mutex_lock(&sh->lock);
	uint32_t at = find_locked(sh, key, klen, hash);
	if (at != UINT32_MAX)
		remove_at_locked(sh, at);
	while (atomic_load_explicit(&sh->count, memory_order_relaxed) >=
		   sh->cap ||
	       (sh->max_bytes && sh->bytes + charge > sh->max_bytes))
		if (!evict_one_locked(sh, now))
			break;
	uint32_t i = (uint32_t)hash & sh->mask;
	while (atomic_load_explicit(&sh->slots[i], memory_order_relaxed))
		i = (i + 1) & sh->mask;
	aside_value_ref(v);
	int64_t until = aside_value_expires_at_us(v);
	struct mem *m = self;
	if (m->max_ttl_us && (!until || until > now + m->max_ttl_us))
		until = now + m->max_ttl_us;
	atomic_store_explicit(&v->l1_expires_us, until, memory_order_relaxed);
	/*
	 * A newcomer starts unreferenced.  It lands in its hash slot, not
	 * behind the hand as in textbook CLOCK, so it may be examined before
	 * a full turn; the policy issue replaces this with a better scheme.
	 */
	atomic_store_explicit(&v->visited, 0, memory_order_relaxed);
	atomic_store_explicit(&aside__value_cold(v)->published, 1,
			      memory_order_release);
	atomic_store_explicit(&v->linked, 1, memory_order_relaxed);
	atomic_store_explicit(&sh->slots[i], v, memory_order_release);
	atomic_store_explicit(
	    &sh->count,
	    atomic_load_explicit(&sh->count, memory_order_relaxed) + 1,
	    memory_order_relaxed);
	sh->bytes += charge;
	pthread_mutex_unlock(&sh->lock);
	return ASIDE_OK;
}

static int mem_del(void *self, const char *key, size_t klen, uint64_t hash,
		   aside_error *err)
{
	(void)err;
	struct shard *sh = shard_of(self, hash);
	pthread_mutex_lock(&sh->lock);
	uint32_t at = find_locked(sh, key, klen, hash);
	if (at != UINT32_MAX)
		remove_at_locked(sh, at);
	pthread_mutex_unlock(&sh->lock);
	return ASIDE_OK;
}

void aside__mem_clear(void *self)
{
	struct mem *m = self;
	for (uint32_t s = 0; s < m->nshards; s++) {
		struct shard *sh = &m->shards[s];
		pthread_mutex_lock(&sh->lock);
		for (uint32_t i = 0; i <= sh->mask; i++) {
			aside_value *v = atomic_load_explicit(
			    &sh->slots[i], memory_order_relaxed);
			if (!v)
				continue;
			atomic_store_explicit(&sh->slots[i], NULL,
					      memory_order_release);
			atomic_store_explicit(&v->linked, 0,
					      memory_order_release);
			aside_value_unref(v);
		}
		atomic_store_explicit(&sh->count, 0, memory_order_relaxed);
		sh->bytes = 0;
		pthread_mutex_unlock(&sh->lock);
	}
}

static int64_t mem_count(void *self)
{
	struct mem *m = self;
	int64_t n = 0;
	for (uint32_t s = 0; s < m->nshards; s++)
		n += atomic_load_explicit(&m->shards[s].count,
					  memory_order_relaxed);
	return n;
}

static uint64_t mem_evictions(void *self)
{
	struct mem *m = self;
	uint64_t n = 0;
	for (uint32_t s = 0; s < m->nshards; s++)
		n += atomic_load_explicit(&m->shards[s].evictions,
					  memory_order_relaxed);
	return n;
}

static void mem_close(void *self)
{
	struct mem *m = self;
	if (!m)
		return;
	for (uint32_t s = 0; m->shards && s < m->nshards; s++) {
		struct shard *sh = &m->shards[s];
		for (uint32_t i = 0; sh->slots && i <= sh->mask; i++) {
			aside_value *v = atomic_load_explicit(
			    &sh->slots[i], memory_order_relaxed);
			if (v) {
				atomic_store_explicit(&v->linked, 0,
						      memory_order_relaxed);
				aside_value_unref(v);
			}
		}
		pthread_mutex_destroy(&sh->lock);
	}
	aside__table_free(m->slots, m->slots_bytes);
	free(m->shards);
	free(m);
}

static const aside_tier_ops mem_ops = {
    .version = ASIDE_TIER_OPS_VERSION,
    .name = "mem",
    .get = mem_get,
    .set = mem_set,
    .del = mem_del,
    .count = mem_count,
    .evictions = mem_evictions,
    .close = mem_close,
};

/* n is at most 2^31 (capacity is bounded by 2^30 entries a shard). */
static uint32_t pow2_at_least(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return (uint32_t)p;
}

/*
 * Opens an L1 of p->capacity entries (and p->max_bytes bytes when set).
 * Shards hold at least 256 entries each, up to 64 shards, so that CLOCK has
 * a useful window; the capacity is split exactly, never exceeded.
 */
int aside__mem_open(const aside__tier_params *p, aside_tier *out,
		    aside_error *err)
{
	uint64_t nshards = p->shards;
	if (!nshards) {
		nshards = 1;
		while (nshards < 64 && nshards * 2 * 256 <= p->capacity)
			nshards *= 2;
	}
	nshards = pow2_at_least(nshards);
	if (nshards > p->capacity)
		nshards = 1;
	struct mem *m = calloc(1, sizeof(*m));
	if (!m)
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	m->nshards = (uint32_t)nshards;
	m->max_ttl_us = (int64_t)p->max_ttl_ms * 1000;
	m->shards =
	    aligned_alloc(ASIDE__CACHELINE, nshards * sizeof(struct shard));
	if (!m->shards) {
		free(m);
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	memset(m->shards, 0, nshards * sizeof(struct shard));
	for (uint32_t s = 0; s < nshards; s++) {
		struct shard *sh = &m->shards[s];
		pthread_mutex_init(&sh->lock, NULL);
		sh->cap = (uint32_t)(p->capacity / nshards +
				     (s < p->capacity % nshards));
		sh->max_bytes = p->max_bytes ? p->max_bytes / nshards : 0;
	}
	/* Equal slot arrays (sized for the largest shard) in one allocation,
	 * so that huge pages can cover them all. */
	uint32_t nslots = pow2_at_least(2ull * m->shards[0].cap);
	if (nslots < 4)
		nslots = 4;
	m->slots_bytes = (size_t)nshards * nslots * sizeof(*m->slots);
	m->slots = aside__table_alloc(m->slots_bytes);
	if (!m->slots) {
		mem_close(m);
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	for (uint32_t s = 0; s < nshards; s++) {
		m->shards[s].mask = nslots - 1;
		m->shards[s].slots = m->slots + (size_t)s * nslots;
	}
	out->ops = &mem_ops;
	out->self = m;
	return ASIDE_OK;
}
