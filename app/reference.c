/*
 * reference.c -- the two reference policies `aside trace --policy` replays a
 * key trace through beside the L1: an exact LRU, and Belady's OPT (on a
 * miss with the cache full, evict the resident read again furthest in the
 * future, or never).  They give the LRU and OPT columns of the hit-ratio
 * tables (docs/performance.md) without the Java peer, for any trace.
 *
 * Both insert on every miss, as the figures of ../shared/traces count a
 * miss; they match the peer's (Caffeine's simulator) on all eight traces.
 * Neither is a cache: they keep keys, not values, one thread, no expiry.
 * Written here rather than taken from a library because none of Debian's
 * packages has either over 64-bit keys; they are small.
 */
#include "app.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * Keys to slots: open addressing, linear probing, at most half full (it
 * doubles past that), removal by shifting later entries back (no
 * tombstones).  A value is stored plus one, so that 0 marks a free slot
 * and any key, 0 too, can be stored.
 */
struct keymap {
	unsigned long long *keys;
	uint32_t *vals;
	size_t mask, count;
};

static size_t mix(unsigned long long k)
{
	/* splitmix64's finaliser: trace keys are often small and dense */
	k ^= k >> 30;
	k *= 0xbf58476d1ce4e5b9ull;
	k ^= k >> 27;
	k *= 0x94d049bb133111ebull;
	k ^= k >> 31;
	return (size_t)k;
}

static bool keymap_init(struct keymap *m, size_t entries)
{
	size_t n = 16;
	while (n < 2 * entries)
		n *= 2;
	m->keys = malloc(n * sizeof(*m->keys));
	m->vals = calloc(n, sizeof(*m->vals));
	m->mask = n - 1;
	m->count = 0;
	return m->keys && m->vals;
}

static void keymap_fini(struct keymap *m)
{
	free(m->keys);
	free(m->vals);
}

/* The slot holding k, or the free slot where it would go. */
static size_t keymap_slot(const struct keymap *m, unsigned long long k)
{
	size_t i = mix(k) & m->mask;
	while (m->vals[i] && m->keys[i] != k)
		i = (i + 1) & m->mask;
	return i;
}

/* k's value, or UINT32_MAX if absent. */
static uint32_t keymap_get(const struct keymap *m, unsigned long long k)
{
	size_t i = keymap_slot(m, k);
	return m->vals[i] ? m->vals[i] - 1 : UINT32_MAX;
}

/* Sets k's value (v < UINT32_MAX); false if out of memory. */
static bool keymap_put(struct keymap *m, unsigned long long k, uint32_t v)
{
	size_t i = keymap_slot(m, k);
	if (!m->vals[i] && 2 * (m->count + 1) > m->mask + 1) {
		struct keymap big;
		if (!keymap_init(&big, m->count + 1)) {
			keymap_fini(&big);
			return false;
		}
		for (size_t j = 0; j <= m->mask; j++)
			if (m->vals[j]) {
				size_t at = keymap_slot(&big, m->keys[j]);
				big.keys[at] = m->keys[j];
				big.vals[at] = m->vals[j];
			}
		big.count = m->count;
		keymap_fini(m);
		*m = big;
		i = keymap_slot(m, k);
	}
	if (!m->vals[i])
		m->count++;
	m->keys[i] = k;
	m->vals[i] = v + 1;
	return true;
}

static void keymap_del(struct keymap *m, unsigned long long k)
{
	size_t i = keymap_slot(m, k);
	if (!m->vals[i])
		return;
	m->vals[i] = 0;
	m->count--;
	/* Shift back every later entry of the run that probed past i. */
	for (size_t j = (i + 1) & m->mask; m->vals[j]; j = (j + 1) & m->mask) {
		size_t home = mix(m->keys[j]) & m->mask;
		/* j's entry may move to i if its home is not in (i, j] */
		if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			m->vals[j] = 0;
			i = j;
		}
	}
}

int app_reference_lru(const unsigned long long *keys, size_t n, size_t capacity,
		      struct app_reference *out)
{
	memset(out, 0, sizeof(*out));
	if (capacity > n)
		capacity = n ? n : 1; /* never more entries than reads */
	if (capacity >= UINT32_MAX)
		return -1;
	struct keymap m;
	unsigned long long *key = malloc(capacity * sizeof(*key));
	uint32_t *prev = malloc(capacity * sizeof(*prev));
	uint32_t *next = malloc(capacity * sizeof(*next));
	int ret = -1;
	if (!keymap_init(&m, capacity) || !key || !prev || !next)
		goto out;
	/* A list of nodes, newest first; UINT32_MAX ends it both ways. */
	uint32_t used = 0, newest = UINT32_MAX, oldest = UINT32_MAX;
	for (size_t i = 0; i < n; i++) {
		uint32_t x = keymap_get(&m, keys[i]);
		if (x != UINT32_MAX) {
			out->hits++;
			if (x == newest)
				continue;
			/* unlink x (not the newest, so it has a prev) */
			next[prev[x]] = next[x];
			if (next[x] != UINT32_MAX)
				prev[next[x]] = prev[x];
			else
				oldest = prev[x];
		} else if (used < capacity) {
			x = used++;
			key[x] = keys[i];
			if (!keymap_put(&m, keys[i], x))
				goto out;
			if (oldest == UINT32_MAX)
				oldest = x;
		} else {
			x = oldest; /* evicted; its node takes the newcomer */
			out->evictions++;
			keymap_del(&m, key[x]);
			key[x] = keys[i];
			if (!keymap_put(&m, keys[i], x))
				goto out;
			if (x == newest)
				continue; /* a capacity of one */
			oldest = prev[x];
			next[oldest] = UINT32_MAX;
		}
		prev[x] = UINT32_MAX;
		next[x] = newest;
		if (newest != UINT32_MAX)
			prev[newest] = x;
		newest = x;
	}
	ret = 0;
out:
	keymap_fini(&m);
	free(key);
	free(prev);
	free(next);
	return ret;
}

/*
 * OPT's residents in a max-heap by the position of their next read, the
 * root the one read furthest ahead.  at[node] is the node's place in the
 * heap, so a hit can move it.
 */
struct heap {
	uint32_t *node; /* heap order */
	uint32_t *at;	/* by node */
	uint32_t *due;	/* by node: its next read, UINT32_MAX for never */
	uint32_t n;
};

static void heap_swap(struct heap *h, uint32_t a, uint32_t b)
{
	uint32_t x = h->node[a], y = h->node[b];
	h->node[a] = y;
	h->node[b] = x;
	h->at[y] = a;
	h->at[x] = b;
}

static void heap_up(struct heap *h, uint32_t i)
{
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (h->due[h->node[p]] >= h->due[h->node[i]])
			return;
		heap_swap(h, i, p);
		i = p;
	}
}

static void heap_down(struct heap *h, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, top = i;
		if (l < h->n && h->due[h->node[l]] > h->due[h->node[top]])
			top = l;
		if (r < h->n && h->due[h->node[r]] > h->due[h->node[top]])
			top = r;
		if (top == i)
			return;
		heap_swap(h, i, top);
		i = top;
	}
}

int app_reference_opt(const unsigned long long *keys, size_t n, size_t capacity,
		      struct app_reference *out)
{
	memset(out, 0, sizeof(*out));
	if (n >= UINT32_MAX)
		return -1; /* positions are 32 bits */
	if (capacity > n)
		capacity = n ? n : 1;
	struct keymap m;
	uint32_t *due = malloc((n ? n : 1) * sizeof(*due));
	unsigned long long *key = malloc(capacity * sizeof(*key));
	struct heap h = {malloc(capacity * sizeof(uint32_t)),
			 malloc(capacity * sizeof(uint32_t)),
			 malloc(capacity * sizeof(uint32_t)), 0};
	int ret = -1;
	bool ok = keymap_init(&m, capacity);
	if (!ok || !due || !key || !h.node || !h.at || !h.due)
		goto out;
	/* due[i]: where keys[i] is read next; found walking back with the
	 * map holding each key's nearest read ahead (it grows to the
	 * trace's distinct keys). */
	for (size_t i = n; i-- > 0;) {
		due[i] = keymap_get(&m, keys[i]);
		if (!keymap_put(&m, keys[i], (uint32_t)i))
			goto out;
	}
	keymap_fini(&m);
	if (!keymap_init(&m, capacity))
		goto out;
	for (size_t i = 0; i < n; i++) {
		uint32_t x = keymap_get(&m, keys[i]);
		if (x != UINT32_MAX) {
			out->hits++;
			h.due[x] = due[i]; /* later than before: it rises */
			heap_up(&h, h.at[x]);
			continue;
		}
		if (h.n < capacity) {
			x = h.n++;
			h.node[x] = h.at[x] = x;
			key[x] = keys[i];
			h.due[x] = due[i];
			if (!keymap_put(&m, keys[i], x))
				goto out;
			heap_up(&h, x);
			continue;
		}
		/* Full: the resident read again furthest ahead goes, and the
		 * newcomer takes its node.  A miss always inserts, as the
		 * shared traces' figures count (the newcomer is never the one
		 * turned away, even if it is read again later still: that
		 * variant hits a few more, 0.0001 on lirs-multi1). */
		out->evictions++;
		x = h.node[0];
		keymap_del(&m, key[x]);
		key[x] = keys[i];
		h.due[x] = due[i];
		if (!keymap_put(&m, keys[i], x))
			goto out;
		heap_down(&h, 0);
	}
	ret = 0;
out:
	keymap_fini(&m);
	free(due);
	free(key);
	free(h.node);
	free(h.at);
	free(h.due);
	return ret;
}
