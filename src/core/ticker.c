/*
 * ticker.c -- the time an L1 hit compares expiries against.
 *
 * A hit must know the time, and asking the kernel for it, even through the
 * vDSO, costs a hit as much as the lookup does once the table is larger
 * than the CPU's caches: the vDSO's data page competes with the values for
 * the TLB, and a hit walks the page tables for it (docs/performance.md
 * measures 2x).  So while caches on the default clock are open, a thread
 * reads the clock once per kernel tick and publishes it in one word that
 * readers load like any other hot variable, as memcached keeps its
 * current_time.
 *
 * The word is 0 when no ticker runs (none started, it could not start, or
 * this is a child of fork(), which has no ticker thread): readers then read
 * the clock themselves.  The time they see is at most a tick and the
 * ticker's wake-up late, which is the coarse clock's own resolution.
 */
#include "internal.h"

#include <pthread.h>
#include <time.h>

_Atomic int64_t aside__ticked_us;

static pthread_mutex_t life = PTHREAD_MUTEX_INITIALIZER; /* start, stop */
static pthread_mutex_t tick_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tick_cond;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_t thread;
static unsigned users;	    /* guarded by life */
static bool stopping;	    /* guarded by tick_lock */
static unsigned generation; /* bumped in a child of fork() */
static int64_t period_ns;

static void cond_init(void)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&tick_cond, &ca);
	pthread_condattr_destroy(&ca);
}

static void forked_child(void)
{
	/* The ticker thread did not come along, though the locks and the
	 * condition may say it is there: a fresh start for all three.  The
	 * child has one thread, so nothing else holds them. */
	pthread_mutex_init(&life, NULL);
	pthread_mutex_init(&tick_lock, NULL);
	cond_init();
	users = 0;
	stopping = false;
	generation++;
	atomic_store_explicit(&aside__ticked_us, 0, memory_order_relaxed);
}

static void init(void)
{
	cond_init();
	/* One tick of the coarse clock, between 1 and 10 ms. */
	struct timespec res;
	period_ns = clock_getres(CLOCK_REALTIME_COARSE, &res) == 0
			? (int64_t)res.tv_sec * 1000000000 + res.tv_nsec
			: 4000000;
	if (period_ns < 1000000)
		period_ns = 1000000;
	if (period_ns > 10000000)
		period_ns = 10000000;
	pthread_atfork(NULL, NULL, forked_child);
}

static void *tick(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&tick_lock);
	while (!stopping) {
		atomic_store_explicit(&aside__ticked_us,
				      aside_clock_default(NULL),
				      memory_order_relaxed);
		struct timespec at;
		clock_gettime(CLOCK_MONOTONIC, &at);
		int64_t ns = at.tv_nsec + period_ns;
		at.tv_sec += ns / 1000000000;
		at.tv_nsec = ns % 1000000000;
		pthread_cond_timedwait(&tick_cond, &tick_lock, &at);
	}
	pthread_mutex_unlock(&tick_lock);
	return NULL;
}

unsigned aside__ticker_hold(void)
{
	pthread_once(&once, init);
	pthread_mutex_lock(&life);
	unsigned gen = generation + 1; /* 0 says "not held" */
	if (users == 0) {
		stopping = false;
		atomic_store_explicit(&aside__ticked_us,
				      aside_clock_default(NULL),
				      memory_order_relaxed);
		if (aside__thread_start(&thread, tick, NULL) != 0) {
			atomic_store_explicit(&aside__ticked_us, 0,
					      memory_order_relaxed);
			gen = 0; /* readers read the clock themselves */
		}
	}
	if (gen)
		users++;
	pthread_mutex_unlock(&life);
	return gen;
}

void aside__ticker_release(unsigned held)
{
	if (!held)
		return;
	pthread_mutex_lock(&life);
	/* A hold from before a fork() belongs to the parent's ticker. */
	if (held == generation + 1 && --users == 0) {
		pthread_mutex_lock(&tick_lock);
		stopping = true;
		pthread_cond_signal(&tick_cond);
		pthread_mutex_unlock(&tick_lock);
		pthread_join(thread, NULL);
		atomic_store_explicit(&aside__ticked_us, 0,
				      memory_order_relaxed);
	}
	pthread_mutex_unlock(&life);
}
