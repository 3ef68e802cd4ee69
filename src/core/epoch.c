/*
 * epoch.c -- safe memory reclamation for lock-free L1 reads.
 *
 * A reader brackets each lookup with aside__read_begin/end: it publishes
 * the current epoch in its own record (a plain store, no fence and no
 * locked instruction, so consecutive lookups overlap their cache misses)
 * and clears it after.  A value whose last reference is dropped after it
 * was ever reachable from an L1 table is retired here instead of freed.
 * Retired values are freed in batches: the reclaimer bumps the epoch, issues
 * membarrier(2), which makes every running thread execute a full barrier
 * (so any reader that was inside a lookup has its epoch visible, and any
 * that starts later sees the values already unlinked), and frees a batch
 * once every reader is idle or has published the bumped epoch.  This is
 * the scheme of liburcu's "memb" flavour; it is written here because
 * liburcu's own read side is invisible to ThreadSanitizer and needs every
 * thread registered by hand.  Without membarrier, readers fall back to a
 * full fence.  Builds with ThreadSanitizer use sequentially consistent
 * atomics throughout so that the tool sees the ordering.
 */
#include "internal.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic uint64_t aside__epoch = 1;
_Thread_local struct aside__reader aside__me
    __attribute__((tls_model("initial-exec")));
bool aside__need_fence = true;
_Static_assert(offsetof(struct aside__reader, epoch) ==
		       offsetof(struct aside__inline_reader, epoch) &&
		   offsetof(struct aside__reader, depth) ==
		       offsetof(struct aside__inline_reader, depth) &&
		   offsetof(struct aside__reader, registered) ==
		       offsetof(struct aside__inline_reader, registered),
	       "a reader is laid out as <aside/inline.h> says");

/* Registered readers: this thread's record is linked in while it lives. */
static pthread_mutex_t readers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct aside__reader *readers; /* guarded by readers_lock */
static pthread_key_t reader_key;
static pthread_once_t epoch_once = PTHREAD_ONCE_INIT;

/* Retired values waiting for a grace period. */
struct batch {
	struct batch *next;
	uint64_t grace; /* safe once no reader is in an epoch below this */
	aside_value *values;
};
static pthread_mutex_t retire_lock = PTHREAD_MUTEX_INITIALIZER;
static aside_value *retired;  /* guarded by retire_lock */
static size_t nretired;	      /* guarded by retire_lock */
static struct batch *waiting; /* guarded by retire_lock */
#define RETIRE_BATCH 512

/* At thread exit, before its thread-local record goes away. */
static void reader_unlink(void *arg)
{
	struct aside__reader *r = arg;
	pthread_mutex_lock(&readers_lock);
	for (struct aside__reader **pp = &readers; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	pthread_mutex_unlock(&readers_lock);
	r->registered = false;
}

static void epoch_init(void)
{
	pthread_key_create(&reader_key, reader_unlink);
#ifndef ASIDE__TSAN
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
		    0, 0) == 0)
		aside__need_fence = false;
#endif
}

void aside__reader_register(void)
{
	struct aside__reader *r = &aside__me;
	pthread_once(&epoch_once, epoch_init);
	pthread_mutex_lock(&readers_lock);
	r->next = readers;
	readers = r;
	pthread_mutex_unlock(&readers_lock);
	/* Without the key the record would outlive its thread in the list;
	 * such a thread stays unregistered and its L1 lookups miss. */
	if (pthread_setspecific(reader_key, r) != 0)
		reader_unlink(r);
	else
		r->registered = true;
}

/*
 * Makes every running thread execute a full barrier (membarrier), so that
 * a reader inside a section has its epoch visible; readers that fence
 * themselves need none.
 */
static void barrier_readers(void)
{
	if (!aside__need_fence)
		syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0,
			0);
}

/* True when every reader is idle or in an epoch at or above grace. */
static bool grace_passed(uint64_t grace)
{
	bool ok = true;
	pthread_mutex_lock(&readers_lock);
	for (struct aside__reader *r = readers; r && ok; r = r->next) {
		uint64_t e =
		    atomic_load_explicit(&r->epoch, memory_order_seq_cst);
		ok = e == 0 || e >= grace;
	}
	pthread_mutex_unlock(&readers_lock);
	return ok;
}

static void free_list(aside_value *v)
{
	while (v) {
		aside_value *next = aside__value_cold(v)->next_free;
		aside__value_free(v);
		v = next;
	}
}

/*
 * Starts a grace period for the values retired so far and frees every
 * batch whose grace period has passed.  Called with retire_lock held;
 * returns the values to free (freed by the caller without the lock).
 */
static aside_value *reclaim_locked(void)
{
	if (retired) {
		struct batch *b = malloc(sizeof(*b));
		if (b) {
			b->values = retired;
			retired = NULL;
			nretired = 0;
			b->grace = atomic_fetch_add_explicit(
				       &aside__epoch, 1, memory_order_seq_cst) +
				   1;
			b->next = waiting;
			waiting = b;
		}
	}
	if (!waiting)
		return NULL;
	barrier_readers();
	aside_value *out = NULL;
	for (struct batch **pp = &waiting; *pp;) {
		struct batch *b = *pp;
		if (!grace_passed(b->grace)) {
			pp = &b->next;
			continue;
		}
		*pp = b->next;
		aside_value *v = b->values;
		while (v) {
			aside_value *next = aside__value_cold(v)->next_free;
			aside__value_cold(v)->next_free = out;
			out = v;
			v = next;
		}
		free(b);
	}
	return out;
}

uint64_t aside__grace_start(void)
{
	return atomic_fetch_add_explicit(&aside__epoch, 1,
					 memory_order_seq_cst) +
	       1;
}

bool aside__grace_done(uint64_t grace)
{
	barrier_readers();
	return grace_passed(grace);
}

void aside__retire(aside_value *v)
{
	aside_value *done = NULL;
	pthread_mutex_lock(&retire_lock);
	aside__value_cold(v)->next_free = retired;
	retired = v;
	if (++nretired >= RETIRE_BATCH)
		done = reclaim_locked();
	pthread_mutex_unlock(&retire_lock);
	free_list(done);
}

void aside__reclaim(void)
{
	pthread_mutex_lock(&retire_lock);
	aside_value *done = reclaim_locked();
	pthread_mutex_unlock(&retire_lock);
	free_list(done);
}
