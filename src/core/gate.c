/*
 * gate.c -- the Bloom gate of one namespace (DESIGN.md, read path, step 1).
 *
 * A blocked Bloom filter: the bits of a key all sit in one 512-bit block
 * (a cache line), seven of them, so that a check costs one cache miss at
 * most.  At 10 bits a key that gives about 1% false positives (a key that
 * does not exist, let through to the database), a little more than an
 * unblocked filter would.  Bits are only ever set, with an atomic OR, so
 * adds from writers and checks from readers need no lock: a reader that
 * sees a key's bits set sees them set for good.  Keys are never removed (a
 * deleted key stays "maybe there", which costs a load that finds nothing)
 * from a filter; the engine replaces the filter at each fill instead, by
 * one sized for the keys the last one held (`keys`).
 *
 * Written here rather than taken from a library: Debian 12 packages no C
 * Bloom filter library, and this one is a few dozen lines on the hash the
 * cache computes anyway.
 */
#include "internal.h"

#include <stdlib.h>

#define BLOCK_WORDS 8 /* 512 bits, a cache line */
#define PROBES 7
#define BITS_PER_KEY 10

struct aside__gate {
	_Atomic uint64_t *words;
	size_t bytes;
	uint64_t block_mask; /* blocks - 1, a power of two */
	uint64_t sized;	     /* the keys it was sized for */
	/* Adds, a key added again counted again: not a count of distinct
	 * keys (which the bits cannot give once the filter is overfull),
	 * but never short of it. */
	_Atomic uint64_t keys;
};

/* A second, independent hash from the cache's: the block and the bits. */
static inline uint64_t remix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 33);
}

struct aside__gate *aside__gate_new(uint64_t expected)
{
	struct aside__gate *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	uint64_t blocks = 1;
	while (blocks * BLOCK_WORDS * 64 < expected * BITS_PER_KEY &&
	       blocks < (1ull << 32))
		blocks <<= 1;
	g->block_mask = blocks - 1;
	g->sized = expected;
	g->bytes = (size_t)blocks * BLOCK_WORDS * sizeof(uint64_t);
	g->words = aside__sparse_alloc(g->bytes);
	if (!g->words) {
		aside__gate_free(g);
		return NULL;
	}
	return g;
}

void aside__gate_free(struct aside__gate *g)
{
	if (!g)
		return;
	if (g->words)
		aside__table_free(g->words, g->bytes);
	free(g);
}

size_t aside__gate_bytes(const struct aside__gate *g)
{
	return g->bytes;
}

/* Key hash's block, and its bits there: 9 bits of h each, one a probe. */
static inline _Atomic uint64_t *block_of(const struct aside__gate *g,
					 uint64_t hash, uint64_t *h)
{
	uint64_t a = remix(hash);
	*h = remix(a ^ 0x9e3779b97f4a7c15ull);
	return g->words + (a & g->block_mask) * BLOCK_WORDS;
}

void aside__gate_add(struct aside__gate *g, uint64_t hash)
{
	uint64_t h;
	_Atomic uint64_t *b = block_of(g, hash, &h);
	for (int i = 0; i < PROBES; i++, h >>= 9) {
		unsigned bit = (unsigned)(h & 511);
		uint64_t m = 1ull << (bit & 63);
		/* Most adds find the bit set already: a load is cheaper than
		 * a locked OR on a line other threads read. */
		if (!(atomic_load_explicit(&b[bit >> 6], memory_order_relaxed) &
		      m))
			atomic_fetch_or_explicit(&b[bit >> 6], m,
						 memory_order_release);
	}
	atomic_fetch_add_explicit(&g->keys, 1, memory_order_relaxed);
}

uint64_t aside__gate_keys(const struct aside__gate *g)
{
	return atomic_load_explicit(&g->keys, memory_order_relaxed);
}

bool aside__gate_overfull(const struct aside__gate *g)
{
	return aside__gate_keys(g) > 2 * g->sized;
}

bool aside__gate_maybe(const struct aside__gate *g, uint64_t hash)
{
	uint64_t h;
	_Atomic uint64_t *b = block_of(g, hash, &h);
	for (int i = 0; i < PROBES; i++, h >>= 9) {
		unsigned bit = (unsigned)(h & 511);
		if (!(atomic_load_explicit(&b[bit >> 6], memory_order_acquire) &
		      (1ull << (bit & 63))))
			return false;
	}
	return true;
}
