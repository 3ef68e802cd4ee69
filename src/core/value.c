/*
 * value.c -- values and the pool of their headers.
 *
 * Headers are carved from slabs that live as long as the process and are
 * recycled through a free list, never handed back to malloc: this is what
 * lets an L1 reader inspect a header it found without a lock (see
 * internal.h).  The key and bytes live in one malloc'd block freed with the
 * last reference.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

_Static_assert(sizeof(struct aside_value) == 2 * ASIDE__CACHELINE,
	       "a value header is two cache lines");

/* Slabs grow from 256 headers (32 KiB) to 16384 (2 MiB, on a huge page). */
#define SLAB_MIN 256
#define SLAB_MAX 16384

struct slab {
	struct slab *next;
	size_t n;
	char pad_[ASIDE__CACHELINE - sizeof(void *) - sizeof(size_t)];
	aside_value v[];
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static aside_value *pool_free;  /* guarded by pool_lock */
/* Guarded by pool_lock.  Slabs are never freed: a reader may still look at a
 * header after its value is gone.  They stay reachable, so leak checkers are
 * quiet. */
static struct slab *pool_slabs;
static size_t pool_next_slab = SLAB_MIN; /* guarded by pool_lock */

static aside_value *header_get(void)
{
	aside_value *v;
	pthread_mutex_lock(&pool_lock);
	if (!pool_free) {
		size_t n = pool_next_slab;
		struct slab *s = aside__table_alloc(sizeof(*s) + n * sizeof(s->v[0]));
		if (!s) {
			pthread_mutex_unlock(&pool_lock);
			return NULL;
		}
		if (pool_next_slab < SLAB_MAX)
			pool_next_slab *= 2;
		s->n = n;
		s->next = pool_slabs;
		pool_slabs = s;
		for (size_t i = n; i-- > 0;) {
			s->v[i].next_free = pool_free;
			pool_free = &s->v[i];
		}
	}
	v = pool_free;
	pool_free = v->next_free;
	pthread_mutex_unlock(&pool_lock);
	return v;
}

static void header_put(aside_value *v)
{
	pthread_mutex_lock(&pool_lock);
	v->next_free = pool_free;
	pool_free = v;
	pthread_mutex_unlock(&pool_lock);
}

int aside_value_new(const char *key, size_t klen, const void *data, size_t len,
		    aside_value **out)
{
	if (!key || klen == 0 || klen > ASIDE_KEY_MAX || (!data && len))
		return ASIDE_EINVAL;
	if (len > ASIDE_VALUE_MAX)
		return ASIDE_ETOOBIG;
	size_t kext = klen > ASIDE__KEY_INLINE ? klen : 0;
	char *block = malloc(kext + len + 1);
	if (!block)
		return ASIDE_ENOMEM;
	aside_value *v = header_get();
	if (!v) {
		free(block);
		return ASIDE_ENOMEM;
	}
	if (kext)
		memcpy(block, key, klen);
	else
		memcpy(v->key_inline, key, klen);
	if (len)
		memcpy(block + kext, data, len);
	block[kext + len] = '\0';
	v->klen = (uint16_t)klen;
	v->data = block;
	v->len = (uint32_t)len;
	atomic_store_explicit(&v->load_us, 0, memory_order_relaxed);
	atomic_store_explicit(&v->obj, NULL, memory_order_relaxed);
	atomic_store_explicit(&v->obj_free, NULL, memory_order_relaxed);
	atomic_store_explicit(&v->obj_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&v->expires_at_us, 0, memory_order_relaxed);
	atomic_store_explicit(&v->visited, 0, memory_order_relaxed);
	atomic_store_explicit(&v->linked, 0, memory_order_relaxed);
	atomic_store_explicit(&v->hash, aside_hash(key, klen),
			      memory_order_relaxed);
	/* Publishes every field above to whoever takes a reference. */
	atomic_store_explicit(&v->refs, 1, memory_order_release);
	*out = v;
	return ASIDE_OK;
}

aside_value *aside_value_ref(aside_value *v)
{
	atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
	return v;
}

void aside_value_unref(aside_value *v)
{
	if (!v)
		return;
	if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
		return;
	void *obj = atomic_load_explicit(&v->obj, memory_order_relaxed);
	void (*obj_free)(void *) =
		atomic_load_explicit(&v->obj_free, memory_order_relaxed);
	if (obj && obj_free)
		obj_free(obj);
	free(v->data);
	v->data = NULL;
	/* A stale reader may still compare the hash before its tryref fails. */
	atomic_store_explicit(&v->hash, 0, memory_order_relaxed);
	header_put(v);
}

const void *aside_value_data(const aside_value *v, size_t *len)
{
	if (len)
		*len = v->len;
	return v->data + (v->klen > ASIDE__KEY_INLINE ? v->klen : 0);
}

const char *aside_value_key(const aside_value *v, size_t *klen)
{
	if (klen)
		*klen = v->klen;
	return aside__value_keyp(v);
}

int64_t aside_value_expires_at_us(const aside_value *v)
{
	return atomic_load_explicit(&v->expires_at_us, memory_order_relaxed);
}

void *aside_value_attach(aside_value *v, void *obj, void (*free_fn)(void *),
			 size_t obj_bytes)
{
	void *expected = NULL;
	/* obj_free is written first: it is read only once obj is seen set. */
	if (atomic_load_explicit(&v->obj, memory_order_acquire) == NULL) {
		static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
		pthread_mutex_lock(&attach_lock);
		if (atomic_load_explicit(&v->obj, memory_order_relaxed) ==
		    NULL) {
			atomic_store_explicit(&v->obj_free, free_fn,
					      memory_order_relaxed);
			atomic_store_explicit(&v->obj_bytes, obj_bytes,
					      memory_order_relaxed);
			atomic_compare_exchange_strong_explicit(
				&v->obj, &expected, obj, memory_order_release,
				memory_order_relaxed);
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
