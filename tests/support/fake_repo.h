/*
 * fake_repo.h -- test support: an in-memory user repository implementing
 * the same ops table as the real ones, and a probe that wraps any
 * repository to count its reads, fail them on demand, and hold a read of a
 * chosen id inside the "database" until the test releases it, which makes
 * races deterministic.
 */
#ifndef ASIDE_FAKE_REPO_H
#define ASIDE_FAKE_REPO_H

#include <aside/users.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define FAKE_REPO_MAX 4096

typedef struct fake_repo {
	pthread_mutex_t lock;
	user rows[FAKE_REPO_MAX]; /* rows[id], id 1..MAX-1 */
	bool present[FAKE_REPO_MAX];
	int64_t next_id;
} fake_repo;

void fake_repo_init(fake_repo *r);
void fake_repo_fini(fake_repo *r);
user_repo fake_repo_handle(fake_repo *r);
int fake_repo_count(fake_repo *r);

typedef struct probe_repo {
	user_repo inner;
	_Atomic unsigned gets, writes;
	_Atomic int fail_gets; /* status every get returns; 0: none */
	/* status every update and delete returns after it ran: an answer
	 * lost after the commit; 0: none */
	_Atomic int lose_writes;
	/* each_id lists the ids in a scrambled order, as a database may
	 * (SQL promises no order without ORDER BY) */
	_Atomic bool scramble_ids;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int64_t hold_id; /* the next get of this id is held after reading */
	int held;
	bool release;
} probe_repo;

void probe_repo_init(probe_repo *p, user_repo inner);
void probe_repo_fini(probe_repo *p);
user_repo probe_repo_handle(probe_repo *p);
void probe_hold_next_get(probe_repo *p, int64_t id);
void probe_wait_held(probe_repo *p);
void probe_release(probe_repo *p);

/* Polls until the cache has n readers waiting on a load (bounded: 10 s). */
bool wait_for_waiters(aside_cache *c, int64_t n);

#endif
