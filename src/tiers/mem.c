/*
 * mem.c -- the in-process tier (L1).
 *
 * Shards of open-addressed tables (linear probing, at most three quarters
 * full).  A slot, 32 bits, names a value's head by its index in the heads'
 * region (value.c) and holds four bits of its key's hash, so a probe passes
 * over most other keys' slots without touching their values.  A shard's table
 * starts small and doubles as the shard fills, up to the size its capacity
 * needs: a table the size of what is cached stays in the CPU's caches,
 * where one sized for the capacity would not (a hit's cost at 100,000 keys
 * is mostly the misses on its table and its value; docs/performance.md).
 * Every table a shard will ever have is carved from one region reserved at
 * open, the table of n slots at offset n: a reader that loaded the old
 * size keeps probing the old table, which the writer no longer changes
 * (a value removed since is unlinked, which the reader checks).  Old tables
 * are not given back: together they are smaller than the current one.
 * Writers take their shard's
 * mutex; readers take no lock and, inside a read section (epoch.c), write
 * nothing shared but the entry's own `touches` byte: a removed value is
 * freed only after every section that might have seen it has ended.  A
 * reader checks `linked` so that it never returns an entry removed before
 * its lookup.  Removal shifts later entries back instead of leaving
 * tombstones; a reader racing with a shift can miss an entry that is there,
 * which costs a load but never returns a wrong value.
 *
 * Eviction is W-TinyLFU with an adaptive window, per shard:
 *
 *   - a newcomer enters the *window*, a small recency queue;
 *   - an entry pushed out of the window is a *candidate* for the main area,
 *     a segmented LRU (*probation*, then *protected* once hit again); it is
 *     admitted only if it has been used more often than the main area's
 *     victim, by a count-min sketch of 4-bit counters that every access
 *     feeds (conservatively: sketch_add) and that halves itself every
 *     10 x capacity accesses (so the counts follow what is popular now),
 *     a victim that was hit while in the main area counting one more: a
 *     count says how often a key was used, not whether it was used since
 *     it was let in, and a resident that was keeps its place against a
 *     newcomer counted once more;
 *   - a candidate whose key the filter turned away lately and which came
 *     back since (the first ghost below) is admitted whatever the counts:
 *     keys that recur at a period longer than the window are counted no
 *     more often than the victims they meet, and such a return shows the
 *     reuse (both rules: lirs-multi2 +0.013, orm-night +0.004;
 *     docs/performance.md);
 *   - protected keeps an entry only while it is read: a hand visits its old
 *     end every 1 to 128 misses, and once more whenever a victim of the
 *     main area comes back, and sends what was read since its last visit
 *     to the young end and the rest down to probation, where it meets
 *     newcomers on its counts.  Without it, what protected held when
 *     promotions stopped (a loop that ended, the keys of a first fill)
 *     stayed for good, and a workload of fresh keys read a few times each
 *     had only what was left.  Its first lap, when the shard first evicts,
 *     takes a step every miss: the keys read while the shard filled were
 *     all promoted at that moment, and the starting pace would leave the
 *     dead ones there for sixteen times protected's size in misses
 *     (hand_step_locked).  Its pace adapts to what it sends down: an
 *     entry read again in probation slows it, one evicted from there
 *     unread speeds it up (hand_heard_locked);
 *   - the window's share of the capacity adapts, per shard, starting at 1%.
 *     Two ghosts (hashes only, a quarter of the shard's capacity each)
 *     remember the candidates the filter turned away lately and the main
 *     area's latest victims.  A miss on a key in the first says a larger
 *     window would have kept it: the window grows by one entry.  A miss on
 *     a key in the second says a larger main area would have: it shrinks
 *     by one (in a cache of 65,536 entries or more, by up to four while
 *     the ghosts are not contested: window_step).  This is ARC's rule
 *     applied to W-TinyLFU's two areas: a recency-friendly workload grows
 *     the window towards plain LRU, a frequency-friendly one (a scan, a
 *     loop) keeps it small.  While both ghosts speak at like rates, only
 *     returns of keys that left lately move it, as the worth of one entry
 *     more on either side is told by the keys just past each edge
 *     (return_step_locked).  Until main's ghost first speaks, each return
 *     grows the window in proportion to itself, as TCP's slow start does
 *     (end_slow_start_locked says when it keeps what that gave).  A share
 *     above the start that no ghost speaks for over as many misses as the
 *     shard holds gives up an eighth of its lead (relax_window_locked): a
 *     window of the whole shard leaves no ghost anything to see.  A hill
 *     climber on the hit ratio of samples of 10 x capacity requests was
 *     measured first: it tied on most traces and lost clearly on the loop
 *     and on sprite (docs/performance.md), because a sample's hit ratio
 *     moves more with the workload's phases than with the window;
 *   - a shard that has collapsed (nearly every read a miss, no ghost
 *     speaking, the window small: collapsed_locked) also hears the keys
 *     turned away before those its first ghost still holds, from a third
 *     ghost of half the shard, and grows its window on them.
 *
 * Readers do not reorder the queues: they only count hits in the entry
 * (`touches`, saturating at 15, written only while below it).  The policy
 * applies them when an entry reaches the old end of its queue: a touched
 * entry has its hits added to the sketch and goes back to the new end (a
 * probation entry is promoted to protected), so each queue is a CLOCK
 * approximation of LRU and every hit costs the policy O(1), paid by the
 * writer that later meets the entry.  Admission and eviction are O(1)
 * amortized.
 *
 * Per entry of capacity, beyond the value itself, once the shard is full:
 * 1.33 to 2.67 slots of the table (5 to 11 bytes) and less again for the
 * smaller tables it outgrew, the queue links, segment and charge in the value's
 * cold fields (32 bytes), the sketch (8 to 16 bytes: 16 counters, a word
 * per entry rounded up to a power of two per shard) and the ghosts (three
 * rings of hashes and stamps, of a quarter, a quarter and a half of the
 * capacity, 12 bytes, and their sets of slots, 8 to 16 bytes): 87 bytes at
 * most.
 */
#include "../core/internal.h"

#include <pthread.h>
#include <stdlib.h>

enum { WINDOW, PROBATION, PROTECTED, NSEGMENTS };

#define TOUCH_MAX ASIDE__TOUCH_MAX
#define SKETCH_MAX 15
#define WINDOW_START_PCT 1 /* the window's share of a new shard */
/* Protected's hand moves once per hand_pace misses, HAND_START at first,
 * then between HAND_MIN and HAND_MAX: HAND_SLOWER more for each entry it
 * sent down that was read again, a sixteenth less (at least one) for each
 * one evicted unread. */
#define HAND_START 16
#define HAND_MIN 1
#define HAND_MAX 128
#define HAND_SLOWER 16
/* The policy's marks on an entry (its `marks`). */
#define MARK_TURNED_AWAY 1 /* let in at its next contest (admit) */
#define MARK_DEMOTED 2	   /* sent down to probation by protected's hand */
/* A ghost's return moves the window, when the two are contested, only if
 * its key left within this share of the shard (percent) ... */
#define NEAR_PCT 3
/* ... and they are contested while each spoke within this share of the
 * shard in misses of the other (percent), and the rarer speaks at least
 * 3 times for every 5 of the other's (return_step_locked). */
#define CONTEST_PCT 10
/* While they are not, a return moves it by one entry for every
 * WINDOW_STEP_PER entries of the whole cache's capacity, at least one and
 * at most WINDOW_STEP_MAX (window_step). */
#define WINDOW_STEP_PER 32768
#define WINDOW_STEP_MAX 4
/* Slow start: until main's ghost first speaks, or for the shard's first
 * SLOW_START_CAPS times its capacity in misses, a turned-away key's
 * return grows the window by 1 + window / SLOW_START_GROWTH entries
 * (adapt_locked). */
#define SLOW_START_GROWTH 6
#define SLOW_START_CAPS 2

/* A queue, old end first.  Guarded by its shard's lock. */
struct queue {
	aside_value *old, *young;
	uint32_t n;
};

/*
 * A count-min sketch of 4-bit counters: 16 to a word, a word per entry of
 * capacity (a power of two), 4 rows.  A key's row i counter sits in word
 * h_i, at nibble 4i + (2 bits of h_i), so the rows never share a counter.
 * Updated conservatively (sketch_add).
 */
struct sketch {
	uint64_t *words;
	uint32_t mask;
	uint32_t adds;	 /* since the last halving */
	uint32_t period; /* halve every this many adds */
};

/*
 * A ghost: the hashes of the last `size` keys that left by one door, oldest
 * overwritten first, each stamped with its door's clock when it left, and
 * a set of the ring's slots still remembered, for lookups by key (open
 * addressing on the key's hash, twice as many slots; a slot's index + 1,
 * 0 free).  Guarded by its shard's lock.
 */
struct ghost {
	uint64_t *ring; /* may still name a key that came back */
	uint32_t *stamp;
	uint32_t *set;
	uint32_t size, head, smask;
};

/*
 * A slot, 32 bits: the index of a value's head in the heads' region
 * (aside__head_index) in the top 27, four bits of its key's hash below
 * them, so that a probe passes over most other keys' slots without
 * touching their values, and in the lowest bit whether the head has a
 * second line: a reader that finds its key's tag asks for that line at
 * once, so that it arrives with the first rather than after it
 * (user_service_get's struct lies mostly there).  0 when free.  Half the
 * bytes of a 64-bit address and tag: at 100,000 entries the tables are
 * 1 MiB rather than 2, which the CPU's caches hold (docs/performance.md).
 */
#define TWO_LINES ASIDE__SLOT_TWO_LINES
#define TAG_SHIFT ASIDE__SLOT_TAG_SHIFT /* hash bits 48 to 51, at 1 to 4 */
#define TAG_MASK ASIDE__SLOT_TAG_MASK
#define INDEX_SHIFT ASIDE__SLOT_INDEX_SHIFT
#define TABLE_MIN 8 /* slots in a shard's first table */

static inline uint32_t slot_make(const aside_value *v, uint64_t hash)
{
	bool two = aside__value_head_size(v->klen, v->room) > ASIDE__CACHELINE;
	return aside__head_index(v) << INDEX_SHIFT |
	       ((uint32_t)(hash >> TAG_SHIFT) & TAG_MASK) |
	       (two ? TWO_LINES : 0);
}

/* Whether slot w holds another key than one of this hash (it may hold
 * another key even when this says no: the key itself tells). */
static inline bool slot_other(uint32_t w, uint64_t hash)
{
	return ((w ^ (uint32_t)(hash >> TAG_SHIFT)) & TAG_MASK) != 0;
}

static inline aside_value *slot_value(uint32_t w)
{
	return w ? aside__head_at(w >> INDEX_SHIFT) : NULL;
}

/* The second line of v's head, if slot w says it has one. */
static inline void prefetch_head(const aside_value *v, uint32_t w)
{
	if (w & TWO_LINES)
		__builtin_prefetch((const char *)v + ASIDE__CACHELINE);
}

struct shard {
	/* The table of n slots is at region + n; mask is n - 1 for the
	 * current one (written under lock, read by lock-free readers).
	 * First, as struct aside__inline_shard says (<aside/inline.h>). */
	_Atomic uint32_t *region;
	_Atomic uint32_t mask;
	pthread_mutex_t lock;
	uint32_t max_mask;
	uint32_t cap;	  /* entries */
	size_t max_bytes; /* 0: unbounded */
	int64_t stale_us; /* kept this long past expiry (aside__mem_stale) */
	_Atomic uint32_t count; /* written under lock */
	size_t bytes;		/* guarded by lock */
	struct queue q[NSEGMENTS];
	uint32_t window_cap, protected_cap; /* guarded by lock */
	uint32_t window_step; /* window_step: entries a return moves it */
	struct sketch sk;
	/* Candidates the filter turned away, and main's victims; and the
	 * turned-away keys the first has forgotten, heard only once the
	 * shard has collapsed (collapsed_locked). */
	struct ghost rejected, evicted, forgotten;
	/* Since either ghost last spoke: misses (a key in neither), and
	 * reads collected from the entries (take_touches).  And misses since
	 * the shard opened. */
	uint64_t silent_misses, silent_reads, misses;
	/* Victims of the main area so far: the clock of the ghost of them. */
	uint32_t main_evicted;
	/* Per ghost (rejected, evicted): how often it spoke lately (a
	 * running average, 1024 a return), and the miss of its last return. */
	uint32_t return_rate[2];
	uint64_t returned_at[2];
	uint32_t hand;	    /* misses since protected's hand last moved */
	uint32_t hand_pace; /* HAND_MIN to HAND_MAX */
	/* Steps left in the hand's first lap, one a miss; set when the shard
	 * first evicts (hand_step_locked). */
	uint32_t first_lap;
	/* While the window's slow start lasts, the turned-away keys' returns
	 * it heard (end_slow_start_locked). */
	bool slow_start;
	uint32_t slow_returns;
	_Atomic uint64_t evictions; /* written under lock */
} __attribute__((aligned(ASIDE__CACHELINE)));

struct mem {
	int64_t max_ttl_us; /* 0: entries live as long as their value */
	uint32_t nshards;   /* a power of two */
	struct shard *shards;
	_Atomic uint32_t *regions; /* every shard's tables, one allocation */
	size_t regions_bytes;
	uint64_t *sketch_words; /* every shard's sketch, one allocation */
	size_t sketch_bytes;
	uint64_t *ghost_words; /* every shard's ghosts, one allocation */
	size_t ghost_bytes;
};

static inline struct shard *shard_of(struct mem *m, uint64_t hash)
{
	return &m->shards[(hash >> 40) & (m->nshards - 1)];
}

static inline _Atomic uint32_t *table_of(const struct shard *sh, uint32_t mask)
{
	return sh->region + (size_t)mask + 1;
}

/* The current table's mask, for a writer (who holds the lock). */
static inline uint32_t mask_locked(const struct shard *sh)
{
	return atomic_load_explicit(&sh->mask, memory_order_relaxed);
}

/* Past the time this L1 may serve it: its own expiry, or the L1's bound. */
static inline bool expired(const aside_value *v, int64_t now)
{
	int64_t at =
	    atomic_load_explicit(&v->l1_expires_us, memory_order_relaxed);
	return at != 0 && now >= at;
}

/*
 * Past the time this L1 keeps it at all: its expiry, and then as long
 * again as a stale copy is kept (stale_ms).  The policy drops such an
 * entry on sight; one that is only expired waits for its turn, as a
 * stale copy that a failed load may still serve.
 */
static inline bool dead(const struct shard *sh, const aside_value *v,
			int64_t now)
{
	int64_t at =
	    atomic_load_explicit(&v->l1_expires_us, memory_order_relaxed);
	return at != 0 && now >= at && now - at >= sh->stale_us;
}

/* ---- the sketch --------------------------------------------------------- */

static inline uint64_t row_hash(uint64_t h, unsigned i)
{
	static const uint64_t seed[4] = {
	    0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull,
	    0xd6e8feb86659fd93ull};
	h = (h ^ (h >> 29)) * seed[i];
	return h ^ (h >> 32);
}

/* Where a key's four counters are (word and shift), and the least of them. */
static unsigned sketch_cells(const struct sketch *sk, uint64_t hash,
			     uint64_t *word[4], unsigned shift[4])
{
	unsigned est = SKETCH_MAX;
	for (unsigned i = 0; i < 4; i++) {
		uint64_t h = row_hash(hash, i);
		shift[i] = (4 * i + (unsigned)(h >> 62)) * 4;
		word[i] = &sk->words[h & sk->mask];
		unsigned c = (unsigned)(*word[i] >> shift[i]) & 15;
		if (c < est)
			est = c;
	}
	return est;
}

static unsigned sketch_estimate(const struct sketch *sk, uint64_t hash)
{
	uint64_t *word[4];
	unsigned shift[4];
	return sketch_cells(sk, hash, word, shift);
}

/* Halves every counter: popularity decays, so the sketch follows change. */
static void sketch_age(struct sketch *sk)
{
	for (uint32_t w = 0; w <= sk->mask; w++)
		sk->words[w] = (sk->words[w] >> 1) & 0x7777777777777777ull;
	sk->adds /= 2;
}

/*
 * Counts n accesses of a key, conservatively (Estan and Varghese's
 * update): the estimate grows by n, up to 15, and each of the key's
 * counters is raised to it if below, rather than each growing by n.  A
 * counter shared with another key then grows only as far as this key's
 * own count needs, so keys read rarely inflate the counts of others less.
 * With plain updates the short LIRS traces hung on the hash's seed: in
 * lirs-multi2 a loop of keys read five times won or lost its contests as
 * collisions fell, and one process in four to seven scored below Caffeine's
 * 0.5149 (down to 0.5045; mean 0.5155); now none of 300 do (0.5153 to
 * 0.5183, mean 0.5169), and lirs-multi1 gains 0.003, with the same
 * memory.  It costs a loop's first passes: the ties take longer to settle
 * which half of a loop of twice the capacity stays (docs/performance.md).
 */
static void sketch_add(struct sketch *sk, uint64_t hash, unsigned n)
{
	if (n == 0)
		return;
	uint64_t *word[4];
	unsigned shift[4];
	unsigned to = sketch_cells(sk, hash, word, shift) + n;
	if (to > SKETCH_MAX)
		to = SKETCH_MAX;
	for (unsigned i = 0; i < 4; i++)
		if (((unsigned)(*word[i] >> shift[i]) & 15) < to)
			*word[i] = (*word[i] & ~(15ull << shift[i])) |
				   ((uint64_t)to << shift[i]);
	sk->adds += n;
	if (sk->adds >= sk->period)
		sketch_age(sk);
}

/* ---- ghosts -------------------------------------------------------------- */

static inline uint64_t ghost_key(uint64_t hash)
{
	return hash | 1; /* never 0, the free mark */
}

static inline uint32_t ghost_home(const struct ghost *g, uint64_t k)
{
	return (uint32_t)(k >> 17) & g->smask;
}

/* Frees set slot i, shifting back the rest of its run, as the table does. */
static void ghost_set_free(struct ghost *g, uint32_t i)
{
	for (uint32_t j = i;;) {
		j = (j + 1) & g->smask;
		if (g->set[j] == 0)
			break;
		uint32_t home = ghost_home(g, g->ring[g->set[j] - 1]);
		bool stays =
		    i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			g->set[i] = g->set[j];
			i = j;
		}
	}
	g->set[i] = 0;
}

/*
 * Remembers hash, stamped with clock, forgetting the oldest key if g is
 * full.  Returns the key forgotten (a ghost key, not a hash), 0 if none
 * was still there.
 */
static uint64_t ghost_add(struct ghost *g, uint64_t hash, uint32_t clock)
{
	if (g->size == 0)
		return 0;
	uint64_t k = ghost_key(hash), forgot = 0;
	uint32_t r = g->head;
	if (g->ring[r]) {
		/*
		 * The key the slot names is forgotten, from this slot or, if
		 * it came back and left again since, from its later one: a
		 * key that keeps passing this door is remembered only as long
		 * as its earliest leaving the ring still holds.  That damps
		 * what a loop's keys tell, which come back and leave on every
		 * pass (lirs-loop at 1,000 entries: 0.964 with each leaving
		 * remembered in full, 0.967 so, as before the stamps; 10 runs).
		 * A key has at most one entry in the sets of the three ghosts
		 * (it is taken out of the one it is in when it comes back,
		 * before it can leave again), but two keys whose hashes differ
		 * only in the lowest bit share a ghost key: the slot being
		 * overwritten goes first all the same, so that no entry of the
		 * set is ever left naming a slot that holds another key.
		 */
		uint64_t old = g->ring[r];
		uint32_t at = UINT32_MAX; /* where in the set */
		for (uint32_t i = ghost_home(g, old); g->set[i];
		     i = (i + 1) & g->smask) {
			if (g->set[i] == r + 1) {
				at = i; /* this slot itself: never leave it */
				break;
			}
			if (at == UINT32_MAX && g->ring[g->set[i] - 1] == old)
				at = i;
		}
		if (at != UINT32_MAX) {
			ghost_set_free(g, at);
			forgot = old;
		}
	}
	g->ring[r] = k;
	g->stamp[r] = clock;
	g->head = r + 1 == g->size ? 0 : r + 1;
	uint32_t i = ghost_home(g, k);
	while (g->set[i])
		i = (i + 1) & g->smask;
	g->set[i] = r + 1;
	return forgot;
}

/*
 * Whether the key left by this door lately; it is forgotten if so, and
 * *clock (if not NULL) set to its stamp.
 */
static bool ghost_take(struct ghost *g, uint64_t hash, uint32_t *clock)
{
	if (g->size == 0)
		return false;
	uint64_t k = ghost_key(hash);
	for (uint32_t i = ghost_home(g, k); g->set[i]; i = (i + 1) & g->smask) {
		uint32_t r = g->set[i] - 1;
		if (g->ring[r] == k) {
			if (clock)
				*clock = g->stamp[r];
			ghost_set_free(g, i);
			return true;
		}
	}
	return false;
}

/* ---- queues ------------------------------------------------------------- */

static inline struct aside__value_cold *node(const aside_value *v)
{
	return aside__value_cold(v);
}

static void queue_push(struct shard *sh, unsigned seg, aside_value *v)
{
	struct queue *q = &sh->q[seg];
	struct aside__value_cold *n = node(v);
	n->segment = (uint8_t)seg;
	n->lru_next = NULL;
	n->lru_prev = q->young;
	if (q->young)
		node(q->young)->lru_next = v;
	else
		q->old = v;
	q->young = v;
	q->n++;
}

static void queue_unlink(struct shard *sh, aside_value *v)
{
	struct aside__value_cold *n = node(v);
	struct queue *q = &sh->q[n->segment];
	if (n->lru_prev)
		node(n->lru_prev)->lru_next = n->lru_next;
	else
		q->old = n->lru_next;
	if (n->lru_next)
		node(n->lru_next)->lru_prev = n->lru_prev;
	else
		q->young = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
	q->n--;
}

/* Takes the hits readers left on v, adding them to the sketch. */
static unsigned take_touches(struct shard *sh, aside_value *v)
{
	unsigned t =
	    atomic_exchange_explicit(&v->touches, 0, memory_order_relaxed);
	sketch_add(&sh->sk, aside__value_hash(v), t);
	sh->silent_reads += t;
	return t;
}

/* ---- the table ---------------------------------------------------------- */

/*
 * Finds a fresh entry for key; call inside a read section.  The value
 * returned is protected by the section only: no reference is taken.  With
 * lend (aside__mem_borrow), a cached absence is not returned either: the
 * caller reads it the long way.
 */
static inline aside_value *lookup(struct mem *m, const char *key, size_t klen,
				  uint64_t hash, int64_t now, bool lend)
{
	struct shard *sh = shard_of(m, hash);
	uint32_t mask = atomic_load_explicit(&sh->mask, memory_order_acquire);
	_Atomic uint32_t *slots = table_of(sh, mask);
	/* A table is never full: a probe ends at a free slot. */
	for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
		uint32_t w =
		    atomic_load_explicit(&slots[i], memory_order_acquire);
		if (!w)
			return NULL;
		if (slot_other(w, hash))
			continue; /* another key's tag */
		aside_value *v = slot_value(w);
		prefetch_head(v, w);
		if (!aside__value_key_eq(v, key, klen))
			continue;
		/* A removed entry may linger in a slot a reader loaded
		 * before the removal; `linked` tells. */
		uint8_t linked =
		    atomic_load_explicit(&v->linked, memory_order_acquire);
		if (lend ? linked != ASIDE__LINKED : !linked) {
			if (!linked)
				continue;
			return NULL;
		}
		if (expired(v, now))
			return NULL;
		uint8_t t =
		    atomic_load_explicit(&v->touches, memory_order_relaxed);
		if (__builtin_expect(t < TOUCH_MAX, 0))
			atomic_store_explicit(&v->touches, (uint8_t)(t + 1),
					      memory_order_relaxed);
		return v;
	}
}

const aside_value *aside__mem_borrow(void *self, const char *key, size_t klen,
				     uint64_t hash, int64_t now)
{
	return lookup(self, key, klen, hash, now, true);
}

/*
 * The L1's part of what a cache publishes for hits compiled into the caller
 * (<aside/inline.h>): the shards, fixed from open to close, and the heads'
 * region, fixed once reserved.  The layouts it names are pinned here.
 */
_Static_assert(offsetof(struct shard, region) ==
		       offsetof(struct aside__inline_shard, region) &&
		   offsetof(struct shard, mask) ==
		       offsetof(struct aside__inline_shard, mask),
	       "a shard starts as <aside/inline.h> says");
_Static_assert(INDEX_SHIFT + ASIDE__HEAD_INDEX_BITS == 32 &&
		   ASIDE__CACHELINE == 64,
	       "a slot's index counts 64-byte lines");

void aside__mem_inline(void *self, struct aside__inline *d)
{
	struct mem *m = self;
	d->shard_mask = m->nshards - 1;
	d->shards = (const char *)m->shards;
	d->shard_stride = sizeof(struct shard);
#ifdef ASIDE__ASAN
	d->heads = NULL; /* heads are malloc'd: no inline hits */
#else
	d->heads = aside__heads_base;
#endif
}

int aside__mem_stale(void *self, const char *key, size_t klen, uint64_t hash,
		     int64_t now, int64_t max_age_us, aside_value **out)
{
	struct shard *sh = shard_of(self, hash);
	if (sh->stale_us == 0 || !aside__read_begin())
		return ASIDE_NOT_FOUND;
	uint32_t mask = atomic_load_explicit(&sh->mask, memory_order_acquire);
	_Atomic uint32_t *slots = table_of(sh, mask);
	aside_value *v = NULL;
	for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
		uint32_t w =
		    atomic_load_explicit(&slots[i], memory_order_acquire);
		if (!w)
			break;
		aside_value *e = slot_value(w);
		if (slot_other(w, hash) || !aside__value_key_eq(e, key, klen) ||
		    !atomic_load_explicit(&e->linked, memory_order_acquire))
			continue;
		int64_t at = atomic_load_explicit(&e->l1_expires_us,
						  memory_order_relaxed);
		if (expired(e, now) && !dead(sh, e, now) &&
		    now - at < max_age_us && aside__value_tryref(e))
			v = e;
		break;
	}
	aside__read_end();
	if (!v)
		return ASIDE_NOT_FOUND;
	*out = v;
	return ASIDE_OK;
}

static int mem_get(void *self, const char *key, size_t klen, uint64_t hash,
		   int64_t now, aside_value **out, aside_error *err)
{
	(void)err;
	if (!aside__read_begin())
		return ASIDE_NOT_FOUND;
	aside_value *v = lookup(self, key, klen, hash, now, false);
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
	uint32_t mask = mask_locked(sh);
	_Atomic uint32_t *slots = table_of(sh, mask);
	uint32_t i = (uint32_t)hash & mask;
	for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint32_t w =
		    atomic_load_explicit(&slots[i], memory_order_relaxed);
		if (!w)
			return UINT32_MAX;
		if (slot_other(w, hash))
			continue;
		if (aside__value_key_eq(slot_value(w), key, klen))
			return i;
	}
	return UINT32_MAX;
}

unsigned aside__mem_frequency(void *self, const char *key, size_t klen,
			      uint64_t hash)
{
	struct shard *sh = shard_of(self, hash);
	pthread_mutex_lock(&sh->lock);
	unsigned f = sketch_estimate(&sh->sk, hash);
	uint32_t at = find_locked(sh, key, klen, hash);
	if (at != UINT32_MAX)
		f += atomic_load_explicit(
		    &slot_value(atomic_load_explicit(
				    &table_of(sh, mask_locked(sh))[at],
				    memory_order_relaxed))
			 ->touches,
		    memory_order_relaxed);
	pthread_mutex_unlock(&sh->lock);
	return f < SKETCH_MAX ? f : SKETCH_MAX;
}

/*
 * Empties slot i and shifts back the entries of its probe run that may now
 * sit earlier.  Drops the table's reference.  Caller holds the lock.
 */
static void remove_at_locked(struct shard *sh, uint32_t i)
{
	uint32_t mask = mask_locked(sh);
	_Atomic uint32_t *slots = table_of(sh, mask);
	aside_value *gone =
	    slot_value(atomic_load_explicit(&slots[i], memory_order_relaxed));
	uint32_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		uint32_t q =
		    atomic_load_explicit(&slots[j], memory_order_relaxed);
		if (!q)
			break;
		uint32_t home =
		    (uint32_t)aside__value_hash(slot_value(q)) & mask;
		/* q may move to i unless its home lies in (i, j] (cyclically).
		 */
		bool stays =
		    i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			atomic_store_explicit(&slots[i], q,
					      memory_order_release);
			i = j;
		}
	}
	atomic_store_explicit(&slots[i], 0, memory_order_release);
	queue_unlink(sh, gone);
	atomic_store_explicit(&gone->linked, 0, memory_order_release);
	atomic_store_explicit(
	    &sh->count,
	    atomic_load_explicit(&sh->count, memory_order_relaxed) - 1,
	    memory_order_relaxed);
	sh->bytes -= node(gone)->charged;
	aside_value_unref(gone);
}

/* Removes v, which is linked in this shard.  Caller holds the lock. */
static void remove_locked(struct shard *sh, aside_value *v)
{
	size_t klen;
	const char *key = aside_value_key(v, &klen);
	uint32_t at = find_locked(sh, key, klen, aside__value_hash(v));
	remove_at_locked(sh, at);
}

/*
 * What became of an entry protected's hand sent down to probation, if v is
 * one: read again there (the hand took a key still in use: it slows down)
 * or evicted unread (the hand was right: it speeds up).  hand_step_locked
 * says why.
 */
static void hand_heard_locked(struct shard *sh, aside_value *v, bool read)
{
	if (!(node(v)->marks & MARK_DEMOTED))
		return;
	node(v)->marks &= (uint8_t)~MARK_DEMOTED;
	if (read)
		sh->hand_pace = sh->hand_pace + HAND_SLOWER < HAND_MAX
				    ? sh->hand_pace + HAND_SLOWER
				    : HAND_MAX;
	else if (sh->hand_pace > HAND_MIN)
		sh->hand_pace -= sh->hand_pace / 16 ? sh->hand_pace / 16 : 1;
}

static void evict_locked(struct shard *sh, aside_value *v)
{
	hand_heard_locked(sh, v, false);
	remove_locked(sh, v);
	atomic_fetch_add_explicit(&sh->evictions, 1, memory_order_relaxed);
}

/* ---- the policy --------------------------------------------------------- */

/* Sets the window's share; protected takes 80% of the rest. */
static void set_window_locked(struct shard *sh, uint32_t window_cap)
{
	sh->window_cap = window_cap;
	sh->protected_cap =
	    (uint32_t)((uint64_t)(sh->cap - window_cap) * 4 / 5);
}

/*
 * The window's old end, after giving every touched entry there a second
 * chance (back to the young end).  An expired entry is evicted on sight,
 * and then NULL is returned with *room set: that made room, and an
 * eviction needs nothing more.  NULL also if the window is empty.
 */
static aside_value *window_victim_locked(struct shard *sh, int64_t now,
					 bool *room)
{
	for (;;) {
		aside_value *v = sh->q[WINDOW].old;
		if (!v)
			return NULL;
		if (dead(sh, v, now)) {
			evict_locked(sh, v);
			*room = true;
			return NULL;
		}
		if (!take_touches(sh, v))
			return v;
		if (sh->q[WINDOW].n == 1)
			return v;
		queue_unlink(sh, v);
		queue_push(sh, WINDOW, v);
	}
}

/* Moves protected's overflow back to probation, oldest untouched first. */
static void demote_locked(struct shard *sh)
{
	while (sh->q[PROTECTED].n > sh->protected_cap) {
		aside_value *v = sh->q[PROTECTED].old;
		queue_unlink(sh, v);
		if (take_touches(sh, v) && sh->q[PROTECTED].n > 0)
			queue_push(sh, PROTECTED, v);
		else
			queue_push(sh, PROBATION, v);
	}
}

/*
 * The main area's victim: probation's old end, once its touched entries
 * have been promoted to protected; protected's old end if probation is
 * empty.  NULL if the main area is empty, or with *room set if an expired
 * entry found at probation's old end was evicted instead.
 */
static aside_value *main_victim_locked(struct shard *sh, int64_t now,
				       bool *room)
{
	for (;;) {
		aside_value *v = sh->q[PROBATION].old;
		if (!v)
			break;
		if (dead(sh, v, now)) {
			evict_locked(sh, v);
			*room = true;
			return NULL;
		}
		if (!take_touches(sh, v))
			return v;
		node(v)->proven = 1;
		hand_heard_locked(sh, v, true);
		queue_unlink(sh, v);
		queue_push(sh, PROTECTED, v);
		demote_locked(sh);
	}
	for (uint32_t n = sh->q[PROTECTED].n; n > 0; n--) {
		aside_value *v = sh->q[PROTECTED].old;
		if (dead(sh, v, now) || !take_touches(sh, v) || n == 1)
			return v;
		queue_unlink(sh, v);
		queue_push(sh, PROTECTED, v);
	}
	return sh->q[PROTECTED].old;
}

/*
 * Whether a candidate from the window takes the victim's place: only if it
 * is more popular, a victim hit while in the main area counting one more
 * than the sketch says, or if its key came back after the filter turned it
 * away lately.  A candidate of some popularity is also let in now and then
 * (1 in 128) even when it is not, so that a key whose sketch counts an
 * attacker pumped up cannot hold its place for ever.
 */
static bool admit(struct shard *sh, aside_value *cand, aside_value *victim)
{
	bool again = node(cand)->marks & MARK_TURNED_AWAY;
	node(cand)->marks &= (uint8_t)~MARK_TURNED_AWAY;
	if (again)
		return true;
	unsigned fc = sketch_estimate(&sh->sk, aside__value_hash(cand));
	unsigned fv = sketch_estimate(&sh->sk, aside__value_hash(victim)) +
		      node(victim)->proven;
	if (fc > fv)
		return true;
	if (fc <= 5)
		return false;
	return (aside__rand() & 127) == 0;
}

/*
 * Evicts one entry as W-TinyLFU decides, remembering in a ghost why it
 * went.  False if the shard is empty.
 */
static bool evict_one_locked(struct shard *sh, int64_t now)
{
	uint32_t main_n = sh->q[PROBATION].n + sh->q[PROTECTED].n;
	if (atomic_load_explicit(&sh->count, memory_order_relaxed) == 0)
		return false;
	/* An expired entry evicted on sight makes the room asked for: the
	 * entries that would have been weighed keep their places (a
	 * candidate left in the window goes on to probation, as the window
	 * spills). */
	bool room = false;
	if (sh->q[WINDOW].n > sh->window_cap || main_n == 0) {
		aside_value *cand = window_victim_locked(sh, now, &room);
		if (!cand)
			return true;
		aside_value *victim = main_victim_locked(sh, now, &room);
		if (room)
			return true;
		if (!victim) {
			evict_locked(sh, cand);
		} else if (expired(victim, now)) {
			/* a stale copy gives way to any candidate */
			evict_locked(sh, victim);
			queue_unlink(sh, cand);
			queue_push(sh, PROBATION, cand);
		} else if (admit(sh, cand, victim)) {
			ghost_add(&sh->evicted, aside__value_hash(victim),
				  ++sh->main_evicted);
			evict_locked(sh, victim);
			queue_unlink(sh, cand);
			queue_push(sh, PROBATION, cand);
		} else {
			uint64_t forgot =
			    ghost_add(&sh->rejected, aside__value_hash(cand),
				      (uint32_t)sh->misses);
			if (forgot)
				ghost_add(&sh->forgotten, forgot, 0);
			evict_locked(sh, cand);
		}
		return true;
	}
	aside_value *victim = main_victim_locked(sh, now, &room);
	if (victim) {
		if (!expired(victim, now))
			ghost_add(&sh->evicted, aside__value_hash(victim),
				  ++sh->main_evicted);
		evict_locked(sh, victim);
	}
	return true;
}

static uint32_t window_start(uint32_t cap)
{
	return (uint32_t)(((uint64_t)cap * WINDOW_START_PCT + 99) / 100);
}

/*
 * How many entries a return moves the window while the ghosts are not
 * contested, in a cache of `capacity` entries: one below 65,536 entries,
 * then one more for every 32,768, up to WINDOW_STEP_MAX.
 *
 * A step of one entry moves every window at the same pace for its size:
 * crossing a given share of the shard takes so many times the cache's
 * capacity in misses, whatever the capacity.  But a workload changes in
 * reads, and a large cache, which holds more and misses less, turns over
 * far fewer times in the same reads.  Where popularity fades (each key hot
 * when new and read less as it ages, as in a feed), 8,000,000 reads at
 * 100,000 entries took the window to only 43% of its shards by their end:
 * 0.814, where LRU gets 0.858; with steps of 3, 0.840.  It costs Zipf
 * workloads 0.0007 to 0.0020 (their ghosts are contested much of the
 * time, and then the step stays one), which leaves them level with
 * Caffeine or above.  The step follows the whole cache, not the shard, so
 * that one shard (shards=1) moves as fast for its size as 64 do: a step of
 * its capacity / 512 gave one shard of 100,000 entries steps of 195, and
 * 0.830.  Steps of 6 at 100,000 entries gained fading popularity more
 * (0.849) and cost Zipf twice as much; larger caches were not measured,
 * hence the ceiling (docs/performance.md).
 */
static uint32_t window_step(uint64_t capacity)
{
	uint64_t step = capacity / WINDOW_STEP_PER;
	if (step < 1)
		return 1;
	return step < WINDOW_STEP_MAX ? (uint32_t)step : WINDOW_STEP_MAX;
}

/*
 * A window above its starting share must be kept there by the ghosts'
 * evidence: after as many misses as the shard holds with none of a key in
 * either ghost, it gives up an eighth of its lead over the start.  Without
 * this a window that reached the whole shard stayed there for good: with
 * no main area the filter turns nothing away and main evicts nothing, so
 * neither ghost can speak again, and a loop that came next missed every
 * read (docs/performance.md).  A workload that needs the larger window
 * soon shows it again: the filter turns keys away, and they come back.
 */
static void relax_window_locked(struct shard *sh)
{
	uint32_t start = window_start(sh->cap);
	if (sh->window_cap > start)
		set_window_locked(sh, sh->window_cap -
					  (sh->window_cap - start + 7) / 8);
}

/*
 * Protected's hand: an entry there keeps its place only while it is read.
 * The hand looks at protected's old end; an entry read since it was last
 * looked at goes back to the young end, one that was not is demoted to
 * probation's young end, where it must be read again to come back and
 * meets newcomers with its counts (and its proven bonus) once it is
 * probation's victim.  The hand moves once every hand_pace misses (16 at
 * first), so that an entry unread for about that many times protected's
 * size in misses leaves, and once more whenever a victim of the main area
 * comes back (a larger probation would have kept it).
 *
 * Without the hand, an entry promoted once left protected only when newer
 * promotions pushed it out.  When nothing was promoted any more (a loop's
 * keys after the loop stopped, or keys read during the first fill),
 * protected held dead entries for good, probation shrank to what was
 * left, and the keys that came back to it told the window to shrink too: a
 * loop, then keys read four times 100 steps apart, hit 0.25 where LRU hits
 * 0.41 and OPT 0.63; with the hand, 0.62.  A faster hand fixed more such
 * workloads but demoted the middling keys of a Zipf workload, read less
 * often than it lapped protected: every 4 misses cost Zipf(0.8) at 1,000
 * entries 0.024; every 16 costs it 0.001 (docs/performance.md).
 *
 * But with less skew over more keys, even 16 is too fast: the keys the
 * cache should keep are read less often than that lap, and demoted, they
 * lose to newcomers whose counts the sketch's collisions inflate (Zipf 0.6
 * over 100,000 keys at 1,000 entries: 0.100, where Caffeine gets 0.129).
 * So the pace follows what the hand sends down (hand_heard_locked): each
 * entry read again in probation adds HAND_SLOWER misses, up to HAND_MAX,
 * and each one evicted from there unread takes a sixteenth off (at least
 * one), down to HAND_MIN: it settles where the share read again is
 * pace / (pace + 256), rising above 16 once more than one in 17 is and
 * reaching 128 once a third is (that Zipf: 0.62 at 16, and 0.129 now).
 *
 * Where what it sends down is dead, it goes faster than 16, down to a step
 * a miss.  When popularity fades (each key hot when new and read less as
 * it ages, as in a feed), protected fills with keys that were hot and no
 * longer are, and at a step in 16 misses a lap of it takes 16 times its
 * size in misses: over 100,000 entries, 0.780 where LRU gets 0.858; with
 * the faster hand, 0.814.  A floor of one step a miss with the steps of an
 * eighth and 32 cost low-skew Zipf 0.003: the pace wandered low and
 * demoted its warm keys in bursts; steps half as large keep it steady
 * (docs/performance.md).
 *
 * Its first lap is faster.  While the shard fills, the window spills into
 * probation, and every key read twice by then is promoted to protected at
 * the first eviction: protected is full of the fill's keys at once, and
 * at one step in 16 misses the hand needs about 16 x protected's size in
 * misses to look at them all.  Keys read a few times, then never again,
 * each while the next ones arrive, leave protected full of dead keys for
 * all that time; probation is left too small to keep the newcomers, their
 * returns from main's ghost shrink the window to nothing, and once nearly
 * every read misses, the ghost of turned-away keys forgets a key before
 * it comes back, so the window never grows again: read four times 90 or
 * 100 steps apart at a capacity of 500, 0.11 where LRU gets 0.75.  So
 * when the shard first evicts, the hand makes one lap of what protected
 * holds at a step a miss (first_lap), and only then slows down: 0.74 and
 * 0.73, the shared traces and Zipf unchanged (docs/performance.md).
 */
static void hand_step_locked(struct shard *sh)
{
	aside_value *v = sh->q[PROTECTED].old;
	if (!v)
		return;
	queue_unlink(sh, v);
	if (take_touches(sh, v)) {
		queue_push(sh, PROTECTED, v);
	} else {
		node(v)->marks |= MARK_DEMOTED;
		queue_push(sh, PROBATION, v);
	}
}

/*
 * Whether the shard has collapsed: past its start (three shards' worth of
 * misses, while the first fill's reads are still being collected), no
 * ghost has spoken for a shard's worth of misses, and fewer than one miss
 * in four was matched by a read collected since.
 *
 * A workload of fresh keys, each read a few times and then never again,
 * can leave a shard here for good: the window small, nearly every read a
 * miss, each miss a candidate turned away, and so many of them that the
 * ghost of turned-away keys forgets a key before it comes back.  Nothing
 * then says the window should grow (keys read four times 124 steps apart,
 * at a capacity of 500: 0.11 where LRU gets 0.75; or one shard of two,
 * now and then, when such keys follow a loop).  A loop the filter serves
 * is as silent, but about half its reads hit; and on the shared traces
 * and Zipf workloads no shard is ever found so (docs/performance.md).
 */
static bool collapsed_locked(const struct shard *sh)
{
	return sh->misses >= 3ull * sh->cap && sh->silent_misses >= sh->cap &&
	       sh->silent_reads * 4 < sh->silent_misses;
}

/*
 * How many entries a ghost's return moves the window, 0 for none.
 * door: 0 for the ghost of turned-away keys, 1 for main's victims; since:
 * how long ago the key left, counted in what would have kept it (misses
 * for a candidate turned away: a window larger by that many entries would
 * have held it; victims of the main area for a victim, likewise for the
 * main area).
 *
 * ARC's rule counts every return alike, from wherever in its ghost.  Where
 * popularity holds still (Zipf), keys come back from far in both ghosts at
 * steady rates, and the window settles where those rates match, which is
 * not where one entry more is worth as much on either side: that is told
 * by the keys just past each edge.  On Zipf 0.8 over 100,000 keys at
 * 30,000 entries the window sat at 4 to 6% of each shard and scored
 * 0.7208, where a window fixed at 1% scores 0.7269 and Caffeine 0.7263.
 * So while the two ghosts are contested (each spoke within CONTEST_PCT of
 * the shard in misses of the other, and the rarer at least 3 times for
 * every 5 of the other's, on average over their last 64 returns), a
 * return moves the window only if its key left within NEAR_PCT of the
 * shard: 0.7255.  Where one ghost speaks far more, as when keys are read
 * a few times some hundreds of misses apart, the window must grow to reuse
 * beyond its edge that only returns from further back show, and all of
 * them count, each by window_step entries (docs/performance.md).
 */
static uint32_t return_step_locked(struct shard *sh, unsigned door,
				   uint32_t since)
{
	unsigned other = !door;
	bool contested = sh->returned_at[other] != 0 &&
			 (sh->misses - sh->returned_at[other]) * 100 <=
			     (uint64_t)CONTEST_PCT * sh->cap;
	sh->returned_at[door] = sh->misses;
	/* Running averages of 1/64: 65,536 for a ghost that alone speaks. */
	sh->return_rate[door] += 1024 - (sh->return_rate[door] >> 6);
	sh->return_rate[other] -= sh->return_rate[other] >> 6;
	uint32_t lo = sh->return_rate[door], hi = sh->return_rate[other];
	if (lo > hi) {
		uint32_t t = lo;
		lo = hi;
		hi = t;
	}
	if (!(contested && (uint64_t)lo * 5 > (uint64_t)hi * 3))
		return sh->window_step;
	/* Near: within NEAR_PCT of the shard, and in a small one at least
	 * the last entry's worth (one entry more would have kept it). */
	return since <= 1 ||
	       (uint64_t)since * 100 <= (uint64_t)NEAR_PCT * sh->cap;
}

/*
 * The window's slow start.  A new shard's window starts at 1% and, by one
 * entry a return, takes thousands of misses to reach the share a
 * workload of recency needs; every read of a key that comes back from
 * further than the window reaches is a miss until then, where LRU hits.
 * lirs-sprite's first 10,000 reads were 226 hits behind LRU, more than the
 * whole trace's deficit (about 150), where a window held at 90% of the
 * shard is 211 ahead.  So until main's ghost first speaks, each return of a
 * turned-away key grows the window in proportion to itself (1 + window /
 * SLOW_START_GROWTH entries), as TCP's slow start grows its window: after
 * some dozens of returns with no victim of the main area back to say
 * otherwise, the window is most of the shard.
 *
 * It ends when main's ghost first speaks or after SLOW_START_CAPS times
 * the shard's capacity in misses.  The window it reached is kept only if
 * the ghost spoke with the window at half the shard or more: the
 * turned-away keys had spoken long enough and alone, and main's first
 * victim came back only when the window had grown past half.  Otherwise
 * the window goes back to where a step a return would have put it (the
 * start, and window_step for each return heard), and adapts from there as
 * before:
 *
 *   - where main's ghost speaks after a few returns (Zipf: 7 in a shard of
 *     625), a window grown past that had cost Zipf 0.99 at 10,000 entries
 *     0.001, and left it below Caffeine;
 *   - where it never speaks (keys read a few times, then never again), the
 *     window reaches the whole shard, where a CLOCK gives dead keys a
 *     second lap, and stays there: keys read four times 50 or 75 steps
 *     apart got 0.70 to 0.72 where the policy gets 0.74, and 0.67 to 0.68
 *     after a scan.
 *
 * A victim of the main area that left before the window grew and comes
 * back early ends it as well, and the window goes back: the reads of
 * window_slow_start_keeps_what_recency_needs (tests/unit/test_mem.c) do
 * that under 2 hash seeds of 300, and then score what they did before.
 * Waiting for main's second return cost zloop 0.0013 (docs/performance.md,
 * *The window's slow start*).
 */
static void end_slow_start_locked(struct shard *sh, bool main_spoke)
{
	sh->slow_start = false;
	if (main_spoke && (uint64_t)sh->window_cap * 2 >= sh->cap)
		return;
	uint64_t w = window_start(sh->cap) +
		     (uint64_t)sh->slow_returns * sh->window_step;
	if (w < sh->window_cap)
		set_window_locked(sh, (uint32_t)w);
}

/*
 * A miss on a key that left lately moves the window's share towards the
 * door it left by: had the window been larger, a candidate the filter
 * turned away would still be here; had the main area been larger, its
 * victim would.  Each such miss moves the share by one entry (ARC's rule,
 * applied to W-TinyLFU's two areas; in a large cache by a few while the
 * ghosts are not contested, window_step), unless the two ghosts are
 * contested and the key left long ago (return_step_locked).  A collapsed
 * shard also hears the turned-away keys its first ghost has forgotten, so
 * that it can find its way back.  True if the filter had turned the key
 * away: it is then let in at its next contest (admit).
 */
static bool adapt_locked(struct shard *sh, uint64_t hash)
{
	uint32_t at, step;
	sh->misses++;
	if (sh->slow_start && sh->misses >= SLOW_START_CAPS * (uint64_t)sh->cap)
		end_slow_start_locked(sh, false);
	if (ghost_take(&sh->rejected, hash, &at)) {
		sh->silent_misses = sh->silent_reads = 0;
		step = return_step_locked(sh, 0, (uint32_t)sh->misses - at);
		if (sh->slow_start) {
			sh->slow_returns++;
			step = 1 + sh->window_cap / SLOW_START_GROWTH;
		}
		if (step > sh->cap - sh->window_cap)
			step = sh->cap - sh->window_cap;
		set_window_locked(sh, sh->window_cap + step);
		return true;
	}
	if (ghost_take(&sh->evicted, hash, &at)) {
		sh->silent_misses = sh->silent_reads = 0;
		if (sh->slow_start)
			end_slow_start_locked(sh, true);
		hand_step_locked(sh);
		step = return_step_locked(sh, 1, sh->main_evicted - at);
		if (step > sh->window_cap)
			step = sh->window_cap;
		set_window_locked(sh, sh->window_cap - step);
		return false;
	}
	sh->silent_misses++;
	if (ghost_take(&sh->forgotten, hash, NULL) && collapsed_locked(sh)) {
		if (sh->window_cap < sh->cap)
			set_window_locked(sh, sh->window_cap + 1);
		return true;
	}
	if (sh->cap && sh->silent_misses % sh->cap == 0)
		relax_window_locked(sh);
	return false;
}

/* While the shard is not full, the window spills into probation. */
static void spill_window_locked(struct shard *sh, int64_t now)
{
	while (sh->q[WINDOW].n > sh->window_cap) {
		bool room = false;
		aside_value *v = window_victim_locked(sh, now, &room);
		if (room)
			continue; /* an expired one evicted */
		if (!v)
			return;
		queue_unlink(sh, v);
		queue_push(sh, PROBATION, v);
	}
}

/*
 * Moves the shard to its next table, twice the size.  The new one was
 * never used, so it is all zeros; readers switch to it when they load the
 * new mask, and until then probe the old one, which stays as it is.
 */
static void grow_locked(struct shard *sh)
{
	uint32_t mask = mask_locked(sh), nmask = mask * 2 + 1;
	_Atomic uint32_t *from = table_of(sh, mask), *to = table_of(sh, nmask);
	for (uint32_t i = 0; i <= mask; i++) {
		uint32_t w =
		    atomic_load_explicit(&from[i], memory_order_relaxed);
		if (!w)
			continue;
		uint32_t j = (uint32_t)aside__value_hash(slot_value(w)) & nmask;
		while (atomic_load_explicit(&to[j], memory_order_relaxed))
			j = (j + 1) & nmask;
		atomic_store_explicit(&to[j], w, memory_order_relaxed);
	}
	atomic_store_explicit(&sh->mask, nmask, memory_order_release);
}

static int mem_set(void *self, aside_value *v, uint64_t hash, int64_t now,
		   aside_error *err)
{
	struct mem *m = self;
	struct shard *sh = shard_of(m, hash);
	size_t klen;
	const char *key = aside_value_key(v, &klen);
	size_t charge = aside__value_charge(v);
	if (!aside__head_index(v))
		return aside__fail(err, ASIDE_ETOOBIG,
				   "value's head of %zu bytes is outside the "
				   "heads' region (larger than 2 MiB, or the "
				   "region is spent)",
				   aside__value_head_size(v->klen, v->room));
	if (sh->max_bytes && charge > sh->max_bytes)
		return aside__fail(err, ASIDE_ETOOBIG,
				   "value of %zu bytes exceeds the tier's "
				   "byte bound per shard (%zu)",
				   charge, sh->max_bytes);

	pthread_mutex_lock(&sh->lock);
	unsigned seg = WINDOW;
	uint8_t marks = 0;
	bool proven = false;
	uint32_t at = find_locked(sh, key, klen, hash);
	if (at != UINT32_MAX) {
		/* A replacement keeps its predecessor's standing. */
		aside_value *old = slot_value(atomic_load_explicit(
		    &table_of(sh, mask_locked(sh))[at], memory_order_relaxed));
		seg = node(old)->segment;
		marks = node(old)->marks;
		proven = node(old)->proven;
		take_touches(sh, old); /* its hits count */
		remove_at_locked(sh, at);
	} else {
		sketch_add(&sh->sk, hash, 1);
		if (adapt_locked(sh, hash))
			marks = MARK_TURNED_AWAY;
		if (sh->first_lap) {
			sh->first_lap--;
			hand_step_locked(sh);
		} else if (++sh->hand >= sh->hand_pace) {
			sh->hand = 0;
			hand_step_locked(sh);
		}
	}
	uint32_t mask = mask_locked(sh);
	if (mask < sh->max_mask &&
	    atomic_load_explicit(&sh->count, memory_order_relaxed) + 1 >
		(mask + 1) / 4 * 3) {
		grow_locked(sh); /* at most three quarters full */
		mask = mask_locked(sh);
	}
	_Atomic uint32_t *slots = table_of(sh, mask);
	uint32_t i = (uint32_t)hash & mask;
	while (atomic_load_explicit(&slots[i], memory_order_relaxed))
		i = (i + 1) & mask;
	aside_value_ref(v);
	int64_t until = aside_value_expires_at_us(v);
	if (m->max_ttl_us && (!until || until > now + m->max_ttl_us))
		until = now + m->max_ttl_us;
	atomic_store_explicit(&v->l1_expires_us, until, memory_order_relaxed);
	atomic_store_explicit(&v->touches, 0, memory_order_relaxed);
	node(v)->charged = charge;
	node(v)->marks = marks;
	node(v)->proven = proven;
	queue_push(sh, seg, v);
	atomic_store_explicit(&aside__value_cold(v)->published, 1,
			      memory_order_release);
	atomic_store_explicit(&v->linked,
			      aside__value_absent(v) ? ASIDE__LINKED_ABSENT
						     : ASIDE__LINKED,
			      memory_order_relaxed);
	atomic_store_explicit(&slots[i], slot_make(v, hash),
			      memory_order_release);
	atomic_store_explicit(
	    &sh->count,
	    atomic_load_explicit(&sh->count, memory_order_relaxed) + 1,
	    memory_order_relaxed);
	sh->bytes += charge;
	/* The newcomer can be the one evicted (it was not worth a place). */
	bool first =
	    atomic_load_explicit(&sh->evictions, memory_order_relaxed) == 0;
	while (atomic_load_explicit(&sh->count, memory_order_relaxed) >
		   sh->cap ||
	       (sh->max_bytes && sh->bytes > sh->max_bytes))
		if (!evict_one_locked(sh, now))
			break;
	if (__builtin_expect(first, 0) &&
	    atomic_load_explicit(&sh->evictions, memory_order_relaxed) != 0) {
		/* The first fill's keys were just promoted: see them soon. */
		sh->first_lap = sh->q[PROTECTED].n;
	}
	spill_window_locked(sh, now);
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
		uint32_t mask = mask_locked(sh);
		_Atomic uint32_t *slots = table_of(sh, mask);
		for (uint32_t i = 0; i <= mask; i++) {
			aside_value *v = slot_value(atomic_load_explicit(
			    &slots[i], memory_order_relaxed));
			if (!v)
				continue;
			atomic_store_explicit(&slots[i], 0,
					      memory_order_release);
			atomic_store_explicit(&v->linked, 0,
					      memory_order_release);
			aside_value_unref(v);
		}
		memset(sh->q, 0, sizeof(sh->q));
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
		uint32_t mask = mask_locked(sh);
		for (uint32_t i = 0; sh->region && i <= mask; i++) {
			aside_value *v = slot_value(atomic_load_explicit(
			    &table_of(sh, mask)[i], memory_order_relaxed));
			if (v) {
				atomic_store_explicit(&v->linked, 0,
						      memory_order_relaxed);
				aside_value_unref(v);
			}
		}
		pthread_mutex_destroy(&sh->lock);
	}
	aside__table_free(m->regions, m->regions_bytes);
	aside__table_free(m->sketch_words, m->sketch_bytes);
	aside__table_free(m->ghost_words, m->ghost_bytes);
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

/* How many keys a ghost remembers, for a shard of cap entries. */
static uint32_t ghost_size(uint32_t cap)
{
	return cap / 4 + 1;
}

/* n is at most 2^31 (capacity is bounded by 2^30 entries a shard). */
static uint32_t pow2_at_least(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return (uint32_t)p;
}

/*
 * Words a ghost of size keys takes: its ring of hashes, their stamps, and
 * a set of 32-bit slots twice as large (a power of two: an even count).
 */
static size_t ghost_words(uint32_t size)
{
	return (size_t)size + ((size_t)size + 1) / 2 +
	       pow2_at_least(2ull * size) / 2;
}

/* Places a ghost of size keys at words; returns the words after it. */
static uint64_t *ghost_place(struct ghost *g, uint64_t *words, uint32_t size)
{
	g->size = size;
	g->ring = words;
	g->stamp = (uint32_t *)(words + size);
	g->set = (uint32_t *)(words + size + ((size_t)size + 1) / 2);
	g->smask = pow2_at_least(2ull * size) - 1;
	return words + ghost_words(size);
}

/*
 * Opens an L1 of p->capacity entries (and p->max_bytes bytes when set).
 * Shards hold at least 512 entries each, up to 64 shards: each runs the
 * policy on its share of the keys alone, and a small share judges worse
 * (docs/performance.md: 256 cost lirs-multi2 0.005).  The capacity is
 * split exactly, never exceeded.
 */
int aside__mem_open(const aside__tier_params *p, aside_tier *out,
		    aside_error *err)
{
	uint64_t nshards = p->shards;
	if (!nshards) {
		nshards = 1;
		while (nshards < 64 && nshards * 2 * 512 <= p->capacity)
			nshards *= 2;
	}
	nshards = pow2_at_least(nshards);
	if (nshards > p->capacity)
		nshards = 1;
	if (!aside__heads_reserved())
		return aside__fail(err, ASIDE_ENOMEM,
				   "the system refused the address space an "
				   "L1 keeps its values in (%zu MiB at least)",
				   ASIDE__HEADS_MIN_BYTES >> 20);
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
		sh->stale_us = (int64_t)p->stale_ms * 1000;
	}
	/* Equal regions (sized for the largest shard) in one allocation, so
	 * that huge pages can cover them all; the sketches and the ghosts in
	 * one allocation each, on small pages (written at random from the
	 * first miss, they would commit a huge page per touch).  The largest
	 * table keeps the shard at most three quarters full, with a slot to
	 * spare for the newcomer that is about to evict. */
	uint32_t nslots = pow2_at_least((uint64_t)m->shards[0].cap * 4 / 3 + 2);
	if (nslots < TABLE_MIN)
		nslots = TABLE_MIN;
	uint32_t nwords = pow2_at_least(m->shards[0].cap);
	if (nwords < 8)
		nwords = 8;
	m->regions_bytes = (size_t)nshards * 2 * nslots * sizeof(uint32_t);
	m->regions = aside__table_alloc(m->regions_bytes);
	m->sketch_bytes = (size_t)nshards * nwords * sizeof(uint64_t);
	m->sketch_words = aside__sparse_alloc(m->sketch_bytes);
	/* Three ghosts a shard: two of a quarter of the shard, and the
	 * forgotten keys', twice that. */
	uint32_t gsize = ghost_size(m->shards[0].cap);
	size_t swords = 2 * ghost_words(gsize) + ghost_words(2 * gsize);
	m->ghost_bytes = (size_t)nshards * swords * sizeof(uint64_t);
	m->ghost_words = aside__sparse_alloc(m->ghost_bytes);
	if (!m->regions || !m->sketch_words || !m->ghost_words) {
		mem_close(m);
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	for (uint32_t s = 0; s < nshards; s++) {
		struct shard *sh = &m->shards[s];
		sh->region = m->regions + (size_t)s * 2 * nslots;
		sh->max_mask = nslots - 1;
		atomic_store_explicit(&sh->mask, TABLE_MIN - 1,
				      memory_order_relaxed);
		sh->sk.words = m->sketch_words + (size_t)s * nwords;
		sh->sk.mask = nwords - 1;
		sh->sk.period = 10 * (sh->cap ? sh->cap : 1);
		uint64_t *g = m->ghost_words + (size_t)s * swords;
		g = ghost_place(&sh->rejected, g, gsize);
		g = ghost_place(&sh->evicted, g, gsize);
		ghost_place(&sh->forgotten, g, 2 * gsize);
		set_window_locked(sh, window_start(sh->cap));
		sh->window_step = window_step(p->capacity);
		sh->hand_pace = HAND_START;
		sh->slow_start = true;
	}
	out->ops = &mem_ops;
	out->self = m;
	return ASIDE_OK;
}
