/*
 * seed_api.c -- a program written only against the API of DESIGN.md,
 * built against an installed aside through `pkg-config aside-users`.
 * It brings its own repository (the seed's UserRepository), runs the seed's
 * three scenarios and both invalidation races, and exits non-zero on the
 * first thing that is not as the API promises.
 */
#define _POSIX_C_SOURCE 200809L
#include <aside/users.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "seed_api: %s:%d: %s\n", __FILE__,     \
				__LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* A repository of up to 64 users that can hold a read in the "database". */
struct repo {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	user rows[64];
	int present[64];
	int64_t next;
	int gets;
	int64_t hold_id; /* hold the next read of this id, after reading */
	int held, release;
};

static int r_get(void *self, int64_t id, user *out)
{
	struct repo *r = self;
	pthread_mutex_lock(&r->lock);
	r->gets++;
	int rc = ASIDE_NOT_FOUND;
	if (id > 0 && id < 64 && r->present[id]) {
		*out = r->rows[id];
		rc = ASIDE_OK;
	}
	if (r->hold_id == id) {
		r->hold_id = 0;
		r->held = 1;
		pthread_cond_broadcast(&r->cond);
		while (!r->release)
			pthread_cond_wait(&r->cond, &r->lock);
		r->held = 0;
		r->release = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static int r_create(void *self, user *u)
{
	struct repo *r = self;
	pthread_mutex_lock(&r->lock);
	u->id = r->next++;
	u->created_at_us = (int64_t)time(NULL) * 1000000;
	r->rows[u->id] = *u;
	r->present[u->id] = 1;
	pthread_mutex_unlock(&r->lock);
	return ASIDE_OK;
}

static int r_update(void *self, const user *u)
{
	struct repo *r = self;
	pthread_mutex_lock(&r->lock);
	int rc = ASIDE_NOT_FOUND;
	if (u->id > 0 && u->id < 64 && r->present[u->id]) {
		int64_t at = r->rows[u->id].created_at_us;
		r->rows[u->id] = *u;
		r->rows[u->id].created_at_us = at;
		rc = ASIDE_OK;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static int r_remove(void *self, int64_t id)
{
	struct repo *r = self;
	pthread_mutex_lock(&r->lock);
	int rc =
	    id > 0 && id < 64 && r->present[id] ? ASIDE_OK : ASIDE_NOT_FOUND;
	if (rc == ASIDE_OK)
		r->present[id] = 0;
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static void r_close(void *self)
{
	(void)self;
}

static int gets(struct repo *r)
{
	pthread_mutex_lock(&r->lock);
	int n = r->gets;
	pthread_mutex_unlock(&r->lock);
	return n;
}

static void hold(struct repo *r, int64_t id)
{
	pthread_mutex_lock(&r->lock);
	r->hold_id = id;
	pthread_mutex_unlock(&r->lock);
}

static void wait_held(struct repo *r)
{
	pthread_mutex_lock(&r->lock);
	while (!r->held)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

static void release(struct repo *r)
{
	pthread_mutex_lock(&r->lock);
	r->release = 1;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

struct reader {
	user_service *svc;
	int64_t id;
	int rc;
	user u;
};

static void *read_one(void *arg)
{
	struct reader *rd = arg;
	rd->rc = user_service_get(rd->svc, rd->id, &rd->u);
	return NULL;
}

static int64_t waiting(aside_cache *c)
{
	aside_metrics m;
	aside_cache_metrics(c, &m);
	return m.waiting;
}

int main(void)
{
	static const user_repo_ops ops = {r_get, r_create, r_update, r_remove,
					  r_close};
	struct repo r;
	memset(&r, 0, sizeof(r));
	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	r.next = 1;

	aside_cache *cache;
	aside_error err;
	CHECK(aside_cache_open("mem://?capacity=100", &cache, &err) ==
	      ASIDE_OK);
	user_service *svc = user_service_new((user_repo){&ops, &r}, cache);
	CHECK(svc != NULL);

	/* 1. Cache-aside: miss, then hit, hit rate 50%. */
	user alice = {.name = "Alice", .email = "alice@example.com"}, got;
	CHECK(user_service_create(svc, &alice) == ASIDE_OK && alice.id > 0);
	CHECK(user_service_get(svc, alice.id, &got) == ASIDE_OK);
	CHECK(gets(&r) == 1);
	CHECK(user_service_get(svc, alice.id, &got) == ASIDE_OK);
	CHECK(gets(&r) == 1 && strcmp(got.name, "Alice") == 0);
	user_service_metrics m = user_service_get_metrics(svc);
	CHECK(m.cache_hits == 1 && m.cache_misses == 1 && m.hit_rate == 0.5);
	printf("cache-aside: miss then hit, hit rate %.2f%%\n",
	       m.hit_rate * 100);

	/* 2. Ten concurrent reads of a cold user make one query. */
	user bob = {.name = "Bob", .email = "bob@example.com"};
	CHECK(user_service_create(svc, &bob) == ASIDE_OK);
	int before = gets(&r);
	hold(&r, bob.id);
	pthread_t th[10];
	struct reader rd[10];
	for (int i = 0; i < 10; i++) {
		rd[i] = (struct reader){svc, bob.id, -1, {0}};
		pthread_create(&th[i], NULL, read_one, &rd[i]);
		if (i == 0)
			wait_held(&r);
	}
	for (int i = 0; i < 1000 && waiting(cache) < 9; i++) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	CHECK(waiting(cache) == 9);
	release(&r);
	for (int i = 0; i < 10; i++) {
		pthread_join(th[i], NULL);
		CHECK(rd[i].rc == ASIDE_OK && strcmp(rd[i].u.name, "Bob") == 0);
	}
	CHECK(gets(&r) - before == 1);
	printf("single-flight: 10 concurrent requests resulted in %d DB "
	       "query\n",
	       gets(&r) - before);

	/* 3. Update invalidates: fresh data after the write. */
	user changed = alice;
	strcpy(changed.name, "Alice Updated");
	CHECK(user_service_update(svc, &changed) == ASIDE_OK);
	CHECK(user_service_get(svc, alice.id, &got) == ASIDE_OK);
	CHECK(strcmp(got.name, "Alice Updated") == 0);
	printf("invalidation: fresh data after update\n");

	/* 4. The races: a load held in the database across a write. */
	before = gets(&r);
	hold(&r, alice.id);
	CHECK(user_service_update(svc, &alice) == ASIDE_OK); /* key now cold */
	struct reader old = {svc, alice.id, -1, {0}};
	pthread_t t;
	pthread_create(&t, NULL, read_one, &old);
	wait_held(&r); /* it has read "Alice" and is held */
	CHECK(user_service_update(svc, &changed) == ASIDE_OK);
	/* The writer reads its write without joining the held load... */
	CHECK(user_service_get(svc, alice.id, &got) == ASIDE_OK);
	CHECK(strcmp(got.name, "Alice Updated") == 0);
	release(&r);
	pthread_join(t, NULL);
	CHECK(old.rc == ASIDE_OK && strcmp(old.u.name, "Alice") == 0);
	/* ...and the held load did not store its old row. */
	CHECK(user_service_get(svc, alice.id, &got) == ASIDE_OK);
	CHECK(strcmp(got.name, "Alice Updated") == 0);
	CHECK(gets(&r) - before == 2);
	printf("races: read-your-write and no stale fill\n");

	/* 5. Errors say what is wrong; nothing is written. */
	user bad = {.name = "", .email = "x@example.com"};
	CHECK(user_service_create(svc, &bad) == ASIDE_EBADNAME);
	strcpy(bad.name, "X");
	strcpy(bad.email, "not an address");
	CHECK(user_service_create(svc, &bad) == ASIDE_EBADEMAIL);
	CHECK(strstr(aside_strerror(ASIDE_EBADEMAIL), "email") != NULL);
	CHECK(user_service_delete(svc, bob.id) == ASIDE_OK);
	CHECK(user_service_get(svc, bob.id, &got) == ASIDE_NOT_FOUND);

	/* 6. The real repository, through its URL. */
	user_repo db;
	CHECK(user_repo_open("sqlite::memory:", &db, &err) == ASIDE_OK);
	user_service *s2 = user_service_new(db, cache);
	user carol = {.name = "Carol", .email = "carol@example.com"};
	CHECK(user_service_create(s2, &carol) == ASIDE_OK);
	CHECK(user_service_get(s2, carol.id, &got) == ASIDE_OK);
	CHECK(strcmp(got.email, "carol@example.com") == 0);
	user_service_free(s2);
	user_repo_close(&db);

	user_service_free(svc);
	aside_cache_close(cache);
	printf("seed_api: all checks passed\n");
	return 0;
}
