/*
 * value.c -- values: a head (header, key, room for a decoded form) and a
 * body (cold fields, bytes), each from a pool of its size (a large one
 * from malloc); layout in internal.h.
 * A value that was ever in an L1 table is freed only after a grace period
 * (epoch.c), as a lock-free reader may still be looking at it.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

_Static_assert(sizeof(struct aside_value) == 40,
	       "a key of up to 24 bytes shares the header's cache line");
/* A head as an inline hit reads it (<aside/inline.h>). */
#define SAME_FIELD(f)                                                          \
	(offsetof(struct aside_value, f) ==                                    \
	     offsetof(struct aside__inline_head, f) &&                         \
	 sizeof(((struct aside_value *)0)->f) ==                               \
	     sizeof(((struct aside__inline_head *)0)->f))
_Static_assert(SAME_FIELD(refs) && SAME_FIELD(linked) && SAME_FIELD(touches) &&
		   SAME_FIELD(klen) && SAME_FIELD(l1_expires_us) &&
		   SAME_FIELD(obj) && SAME_FIELD(body) && SAME_FIELD(len) &&
		   SAME_FIELD(room) &&
		   sizeof(struct aside_value) ==
		       sizeof(struct aside__inline_head) &&
		   ASIDE__LINKED == 1,
	       "a head is laid out as <aside/inline.h> says");
#undef SAME_FIELD
_Static_assert(sizeof(struct aside__value_cold) == ASIDE__INLINE_COLD_BYTES &&
		   ASIDE__BODY_ABSENT == ASIDE__INLINE_BODY_ABSENT,
	       "a value's bytes are where <aside/inline.h> looks");
const unsigned aside__inline_abi = ASIDE_INLINE_ABI;
_Static_assert(sizeof(struct aside__value_cold) == 88,
	       "docs/design.md gives the cold fields' size");

/*
 * Heads come from pools, one per size, carved back to back from chunks and
 * reused by size once freed: 1 to 4 cache lines exactly, then powers of two
 * up to 2 MiB.  Ours because what a hit costs at 100,000 entries is the
 * pages and lines its heads spread over, and no allocator at hand packs
 * them: glibc's aligned_alloc spent 319 bytes on a 160-byte value, and
 * plain malloc packs heads among every other object of their size.
 *
 * Every chunk is carved from one region of address space reserved at the
 * first value (8 GiB when the system allows, reserved, not committed: a
 * chunk is committed when a pool takes it), so that an L1 slot names a
 * head by its index in lines from the region's start, in 32 bits with its
 * tag (mem.c): a table of half the bytes, which stays in the CPU's caches
 * where one of 64-bit addresses did not (docs/performance.md).  The
 * region's first 2 MiB are never used, so index 0 names no head.  A pool's
 * first chunk is 256 KiB, so that a small cache stays small; later ones are
 * 2 MiB, aligned and advised for a huge page as the tables are.  Chunks are
 * kept for the life of the process.  A head larger than 2 MiB, or any head
 * once the region is spent or if it could not be reserved, comes from
 * aligned_alloc: it has no index, and an L1 does not keep it.  Allocation
 * and free are on the miss and eviction paths, each behind a lock per size
 * (the heads of 5 lines and more, which are rare, share one: pool_lock).
 *
 * Under AddressSanitizer, which must see each head and body allocated and
 * freed, both come from malloc, and a head's index is its place in a table
 * of heads (aside__head_table), kept in its cold fields.
 *
 * Bodies of up to 16 KiB come from pools too, one per size class
 * (body_class; 64 KiB chunks, then 1 MiB, not advised for huge pages: a
 * hit does not read them).  From malloc, a cache's bodies, which live until
 * evicted, were interleaved with every request's short-lived allocations in
 * each of glibc's per-thread arenas, and an eviction left a hole that only
 * a chunk of the same size could fill: `aside serve` holding 50,000 users
 * over 200,000 grew from 37 to 79 MB in four minutes of reads and writes,
 * 70% of its arenas free (malloc_info), and gave back little to
 * malloc_trim; with one arena it stayed at 37 MB (docs/operations.md).
 */
#ifdef ASIDE__ASAN
#define NO_POOLS 1
#endif

#define HEAD_POOLS 17 /* heads of 1 to 4 lines, then 8, 16, ... 32,768 */
#define HEAD_MAX_LINES 32768
#define POOL_FIRST ((size_t)256 << 10)
#define POOL_CHUNK ((size_t)2 << 20)
#define BODY_POOLS 48 /* bodies of up to 16 KiB (body_class) */
#define BODY_FIRST ((size_t)64 << 10)
#define BODY_CHUNK ((size_t)1 << 20)
#define REGION_MAX ((size_t)ASIDE__CACHELINE << ASIDE__HEAD_INDEX_BITS)
#define REGION_MIN ASIDE__HEADS_MIN_BYTES

static pthread_once_t pools_once = PTHREAD_ONCE_INIT;

#ifndef NO_POOLS
#define NPOOLS (HEAD_POOLS + BODY_POOLS)

struct pool {
	pthread_mutex_t lock;
	void *free;	  /* freed blocks, linked through their first word */
	char *next, *end; /* what is left of the newest chunk */
	size_t chunks;	  /* how many it has mapped */
};

/* The heads' pools, then the bodies'. */
static struct pool pools[NPOOLS];
/* The heads' region: set once, before the first head is allocated. */
char *aside__heads_base;
size_t aside__heads_bytes;
static char *region_next; /* guarded by region_lock */
static pthread_mutex_t region_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Pool i's lock: its own, but the heads of 5 lines and more, which are
 * rare, share the first such pool's (so that pools_lock holds fewer than
 * the 64 locks ThreadSanitizer can follow in one thread).
 */
static pthread_mutex_t *pool_lock(int i)
{
	return &pools[i > 4 && i < HEAD_POOLS ? 4 : i].lock;
}

/* fork(2) in another thread must not leave a child with a pool locked. */
static void pools_lock(void)
{
	for (int i = 0; i < NPOOLS; i++)
		if (pool_lock(i) == &pools[i].lock)
			pthread_mutex_lock(&pools[i].lock);
	pthread_mutex_lock(&region_lock);
}

static void pools_unlock(void)
{
	pthread_mutex_unlock(&region_lock);
	for (int i = NPOOLS - 1; i >= 0; i--)
		if (pool_lock(i) == &pools[i].lock)
			pthread_mutex_unlock(&pools[i].lock);
}

/* The largest region the system grants, from REGION_MAX down. */
static void region_reserve(void)
{
	const size_t huge = POOL_CHUNK;
	for (size_t size = REGION_MAX; size >= REGION_MIN; size /= 2) {
		void *p =
		    mmap(NULL, size + huge, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			continue;
		char *base = (char *)(((uintptr_t)p + huge - 1) &
				      ~(uintptr_t)(huge - 1));
		aside__heads_base = base;
		aside__heads_bytes = size;
		region_next = base + huge; /* index 0 names no head */
		return;
	}
}

static void pools_init(void)
{
	for (int i = 0; i < NPOOLS; i++)
		pthread_mutex_init(&pools[i].lock, NULL);
	region_reserve();
	pthread_atfork(pools_lock, pools_unlock, pools_unlock);
}

bool aside__heads_reserved(void)
{
	pthread_once(&pools_once, pools_init);
	return aside__heads_base != NULL;
}

/* n bytes of the heads' region, committed; NULL once it is spent. */
static void *region_take(size_t n)
{
	const size_t huge = POOL_CHUNK;
	size_t align = n >= huge ? huge : 4096;
	char *p = NULL;
	pthread_mutex_lock(&region_lock);
	if (aside__heads_base) {
		char *at = (char *)(((uintptr_t)region_next + align - 1) &
				    ~(uintptr_t)(align - 1));
		if (at <= aside__heads_base + aside__heads_bytes &&
		    n <=
			(size_t)(aside__heads_base + aside__heads_bytes - at) &&
		    mprotect(at, n, PROT_READ | PROT_WRITE) == 0) {
			if (n >= huge)
				madvise(at, n, MADV_HUGEPAGE); /* advice only */
			region_next = at + n;
			p = at;
		}
	}
	pthread_mutex_unlock(&region_lock);
	return p;
}

/*
 * A block of size bytes from pool i, a freed one if there is one; NULL if
 * no memory.  head: i is a head's pool.  (Blocks kept by each thread, to
 * take no lock most of the time, measured no faster: a load and an
 * eviction already take the L1 shard's lock.)
 */
static void *pool_take(int i, size_t size, bool head)
{
	pthread_once(&pools_once, pools_init);
	struct pool *p = &pools[i];
	void *x = NULL;
	pthread_mutex_lock(pool_lock(i));
	if (p->free) {
		x = p->free;
		p->free = *(void **)x;
	} else {
		if ((size_t)(p->end - p->next) < size) {
			size_t n = head ? (p->chunks ? POOL_CHUNK : POOL_FIRST)
					: (p->chunks ? BODY_CHUNK : BODY_FIRST);
			if (n < size)
				n = size;
			char *c =
			    head ? region_take(n) : aside__sparse_alloc(n);
			if (c) {
				p->next = c;
				p->end = c + n;
				p->chunks++;
			}
		}
		if ((size_t)(p->end - p->next) >= size) {
			x = p->next;
			p->next += size;
		}
	}
	pthread_mutex_unlock(pool_lock(i));
	return x;
}

static void pool_put(int i, void *x)
{
	struct pool *p = &pools[i];
	pthread_mutex_lock(pool_lock(i));
	*(void **)x = p->free;
	p->free = x;
	pthread_mutex_unlock(pool_lock(i));
}

/* A head's pool and, in *bsize, its blocks' size; -1 if too large. */
static int head_pool(size_t size, size_t *bsize)
{
	size_t lines = size / ASIDE__CACHELINE;
	if (lines <= 4) {
		*bsize = size;
		return (int)lines - 1;
	}
	if (lines > HEAD_MAX_LINES)
		return -1;
	int k = 3;
	while (((size_t)1 << k) < lines)
		k++;
	*bsize = ((size_t)1 << k) * ASIDE__CACHELINE;
	return 4 + k - 3;
}

/* A head of size bytes; *index is set from its address (aside__head_index). */
static void *head_alloc(size_t size, uint32_t *index)
{
	size_t bsize;
	int i = head_pool(size, &bsize);
	void *h = i >= 0 ? pool_take(i, bsize, true) : NULL;
	if (!h)
		h = aligned_alloc(ASIDE__CACHELINE, size);
	*index = h ? aside__head_index(h) : 0;
	return h;
}

/* Frees head h of size bytes, of index (head_alloc's). */
static void head_free(void *h, size_t size, uint32_t index)
{
	size_t bsize;
	int i = head_pool(size, &bsize);
	if (i >= 0 && index) {
		pool_put(i, h);
		return;
	}
	free(h);
}
#else
/* The table of heads: a sparse array, committed as it is written, its
 * free places linked through their entries (odd values: the next one's
 * place, shifted left once).  Place 0 names no head. */
aside_value **aside__head_table;
static uint32_t table_used = 1, table_free;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static void table_lock_all(void)
{
	pthread_mutex_lock(&table_lock);
}

static void table_unlock_all(void)
{
	pthread_mutex_unlock(&table_lock);
}

static void pools_init(void)
{
	aside__head_table = aside__sparse_alloc(sizeof(aside_value *)
						<< ASIDE__HEAD_INDEX_BITS);
	pthread_atfork(table_lock_all, table_unlock_all, table_unlock_all);
}

bool aside__heads_reserved(void)
{
	pthread_once(&pools_once, pools_init);
	return aside__head_table != NULL;
}

static void *head_alloc(size_t size, uint32_t *index)
{
	pthread_once(&pools_once, pools_init);
	void *h = aligned_alloc(ASIDE__CACHELINE, size);
	*index = 0;
	/* Up to the largest pooled size, as without the sanitizer. */
	if (!h || !aside__head_table ||
	    size > (size_t)HEAD_MAX_LINES * ASIDE__CACHELINE)
		return h;
	pthread_mutex_lock(&table_lock);
	if (table_free) {
		*index = table_free;
		table_free =
		    (uint32_t)((uintptr_t)aside__head_table[table_free] >> 1);
	} else if (table_used < (UINT32_C(1) << ASIDE__HEAD_INDEX_BITS)) {
		*index = table_used++;
	}
	if (*index)
		aside__head_table[*index] = h;
	pthread_mutex_unlock(&table_lock);
	return h;
}

static void head_free(void *h, size_t size, uint32_t index)
{
	(void)size;
	if (index) {
		pthread_mutex_lock(&table_lock);
		aside__head_table[index] =
		    (aside_value *)(((uintptr_t)table_free << 1) | 1);
		table_free = index;
		pthread_mutex_unlock(&table_lock);
	}
	free(h);
}
#endif

#ifndef NO_POOLS
/*
 * The pool of a body of size bytes, and in *csize its blocks' size: steps
 * of 32 bytes up to 1 KiB (a user's body is about 250), then four sizes
 * a doubling up to 16 KiB, so that no block is more than a quarter
 * larger than its body; -1 for a larger one (malloc).
 */
static int body_class(size_t size, size_t *csize)
{
	if (size <= 1024) {
		size_t k = (size + 31) / 32;
		*csize = k * 32;
		return HEAD_POOLS + (int)k - 1;
	}
	if (size > 16384)
		return -1;
	size_t base = 1024;
	int c = HEAD_POOLS + 32;
	while (size > 2 * base) {
		base *= 2;
		c += 4;
	}
	size_t step = base / 4, j = (size - base + step - 1) / step;
	*csize = base + j * step;
	return c + (int)j - 1;
}
#endif

static void *body_alloc(size_t size)
{
#ifndef NO_POOLS
	size_t csize;
	int i = body_class(size, &csize);
	if (i >= 0)
		return pool_take(i, csize, false);
#endif
	return malloc(size);
}

static void body_free(void *b, size_t size)
{
#ifndef NO_POOLS
	size_t csize;
	int i = body_class(size, &csize);
	if (i >= 0) {
		pool_put(i, b);
		return;
	}
#endif
	(void)size;
	free(b);
}

int aside_value_new_room(const char *key, size_t klen, const void *data,
			 size_t len, size_t room, aside_value **out)
{
	if (!key || klen == 0 || klen > ASIDE_KEY_MAX || (!data && len) ||
	    room > ASIDE_VALUE_MAX)
		return ASIDE_EINVAL;
	if (len > ASIDE_VALUE_MAX)
		return ASIDE_ETOOBIG;
	room = ASIDE__ALIGN8(room);
	size_t hsize = aside__value_head_size(klen, room);
	uint32_t index;
	aside_value *v = head_alloc(hsize, &index);
	if (!v)
		return ASIDE_ENOMEM;
	if (!(v->body = body_alloc(aside__value_body_size(len)))) {
		head_free(v, hsize, index);
		return ASIDE_ENOMEM;
	}
	v->klen = (uint16_t)klen;
	v->len = (uint32_t)len;
	v->room = (uint32_t)room;
	memcpy((char *)aside__value_keyp(v), key, klen);
	memset(aside__value_roomp(v), 0, room);
	char *bytes = (char *)aside__value_bytes(v);
	if (len)
		memcpy(bytes, data, len);
	bytes[len] = '\0';
	struct aside__value_cold *cold = aside__value_cold(v);
	cold->hash = aside_hash(key, klen);
	atomic_store_explicit(&cold->expires_at_us, 0, memory_order_relaxed);
	atomic_store_explicit(&cold->obj_free, NULL, memory_order_relaxed);
	atomic_store_explicit(&cold->obj_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&cold->load_us, 0, memory_order_relaxed);
	atomic_store_explicit(&cold->published, 0, memory_order_relaxed);
	cold->next_free = NULL;
	cold->lru_prev = cold->lru_next = NULL;
	cold->charged = 0;
	atomic_store_explicit(&cold->version, 0, memory_order_relaxed);
	cold->segment = 0;
	cold->absent = 0;
	cold->head_index = index;
	atomic_store_explicit(&v->obj, NULL, memory_order_relaxed);
	atomic_store_explicit(&v->l1_expires_us, 0, memory_order_relaxed);
	atomic_store_explicit(&v->touches, 0, memory_order_relaxed);
	atomic_store_explicit(&v->linked, 0, memory_order_relaxed);
	atomic_store_explicit(&v->refs, 1, memory_order_release);
	*out = v;
	return ASIDE_OK;
}

int aside_value_new(const char *key, size_t klen, const void *data, size_t len,
		    aside_value **out)
{
	return aside_value_new_room(key, klen, data, len, 0, out);
}

int aside__value_new_absent(const char *key, size_t klen, aside_value **out)
{
	int rc = aside_value_new_room(key, klen, NULL, 0, 0, out);
	if (rc == ASIDE_OK) {
		aside__value_cold(*out)->absent = 1;
		(*out)->body =
		    (char *)((uintptr_t)(*out)->body | ASIDE__BODY_ABSENT);
	}
	return rc;
}

void *aside_value_room(aside_value *v, size_t *room)
{
	if (room)
		*room = v->room;
	return v->room ? aside__value_roomp(v) : NULL;
}

aside_value *aside_value_ref(aside_value *v)
{
	atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
	return v;
}

void aside__value_free(aside_value *v)
{
	struct aside__value_cold *cold = aside__value_cold(v);
	void *obj = atomic_load_explicit(&v->obj, memory_order_relaxed);
	void (*obj_free)(void *) =
	    atomic_load_explicit(&cold->obj_free, memory_order_relaxed);
	if (obj && obj_free)
		obj_free(obj);
	uint32_t index = cold->head_index;
	body_free(cold, aside__value_body_size(v->len));
	head_free(v, aside__value_head_size(v->klen, v->room), index);
}

void aside_value_unref(aside_value *v)
{
	if (!v)
		return;
	if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
		return;
	/* A reader inside a section may still be looking at a value that
	 * was in an L1 table: it waits for a grace period. */
	if (atomic_load_explicit(&aside__value_cold(v)->published,
				 memory_order_acquire))
		aside__retire(v);
	else
		aside__value_free(v);
}

const void *aside_value_data(const aside_value *v, size_t *len)
{
	if (len)
		*len = v->len;
	return aside__value_bytes(v);
}

const char *aside_value_key(const aside_value *v, size_t *klen)
{
	if (klen)
		*klen = v->klen;
	return aside__value_keyp(v);
}

void aside_value_set_version(aside_value *v, int64_t version)
{
	atomic_store_explicit(&aside__value_cold(v)->version, version,
			      memory_order_relaxed);
}

int64_t aside_value_version(const aside_value *v)
{
	return atomic_load_explicit(&aside__value_cold(v)->version,
				    memory_order_relaxed);
}

int64_t aside_value_expires_at_us(const aside_value *v)
{
	return atomic_load_explicit(&aside__value_cold(v)->expires_at_us,
				    memory_order_relaxed);
}

void *aside_value_attach(aside_value *v, void *obj, void (*free_fn)(void *),
			 size_t obj_bytes)
{
	/* obj_free is written before obj is published, and read only once
	 * obj is seen set; the lock makes the pair one step. */
	static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
	struct aside__value_cold *cold = aside__value_cold(v);
	if (atomic_load_explicit(&v->obj, memory_order_acquire) == NULL) {
		pthread_mutex_lock(&attach_lock);
		if (atomic_load_explicit(&v->obj, memory_order_relaxed) ==
		    NULL) {
			atomic_store_explicit(&cold->obj_free, free_fn,
					      memory_order_relaxed);
			atomic_store_explicit(&cold->obj_bytes, obj_bytes,
					      memory_order_relaxed);
			atomic_store_explicit(&v->obj, obj,
					      memory_order_release);
			pthread_mutex_unlock(&attach_lock);
			return obj;
		}
		pthread_mutex_unlock(&attach_lock);
	}
	if (free_fn)
		free_fn(obj);
	return atomic_load_explicit(&v->obj, memory_order_acquire);
}

void *aside_value_obj(const aside_value *v)
{
	return atomic_load_explicit(&((aside_value *)v)->obj,
				    memory_order_acquire);
}
