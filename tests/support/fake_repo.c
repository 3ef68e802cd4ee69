/*
 * fake_repo.c -- see fake_repo.h.
 */
#include "fake_repo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void fake_repo_init(fake_repo *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->next_id = 1;
}

void fake_repo_fini(fake_repo *r)
{
	pthread_mutex_destroy(&r->lock);
}

static bool valid_id(int64_t id)
{
	return id > 0 && id < FAKE_REPO_MAX;
}

static int f_get(void *self, int64_t id, user *out)
{
	fake_repo *r = self;
	int rc = ASIDE_NOT_FOUND;
	pthread_mutex_lock(&r->lock);
	if (valid_id(id) && r->present[id]) {
		*out = r->rows[id];
		rc = ASIDE_OK;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static int f_create(void *self, user *u)
{
	fake_repo *r = self;
	pthread_mutex_lock(&r->lock);
	if (r->next_id >= FAKE_REPO_MAX) {
		pthread_mutex_unlock(&r->lock);
		return ASIDE_EDB;
	}
	u->id = r->next_id++;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	u->created_at_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	r->rows[u->id] = *u;
	r->present[u->id] = true;
	pthread_mutex_unlock(&r->lock);
	return ASIDE_OK;
}

static int f_update(void *self, const user *u)
{
	fake_repo *r = self;
	int rc = ASIDE_NOT_FOUND;
	pthread_mutex_lock(&r->lock);
	if (valid_id(u->id) && r->present[u->id]) {
		int64_t at = r->rows[u->id].created_at_us;
		r->rows[u->id] = *u;
		r->rows[u->id].created_at_us = at;
		rc = ASIDE_OK;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static int f_remove(void *self, int64_t id)
{
	fake_repo *r = self;
	int rc = ASIDE_NOT_FOUND;
	pthread_mutex_lock(&r->lock);
	if (valid_id(id) && r->present[id]) {
		r->present[id] = false;
		rc = ASIDE_OK;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static void f_close(void *self)
{
	(void)self;
}

static const user_repo_ops fake_ops = {
    .get = f_get,
    .create = f_create,
    .update = f_update,
    .remove = f_remove,
    .close = f_close,
};

user_repo fake_repo_handle(fake_repo *r)
{
	return (user_repo){&fake_ops, r};
}

int fake_repo_count(fake_repo *r)
{
	int n = 0;
	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < FAKE_REPO_MAX; i++)
		n += r->present[i];
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* ---- the probe ---------------------------------------------------------- */

static int p_get(void *self, int64_t id, user *out)
{
	probe_repo *p = self;
	atomic_fetch_add(&p->gets, 1);
	int rc = p->inner.ops->get(p->inner.self, id, out);
	pthread_mutex_lock(&p->lock);
	if (p->hold_id && p->hold_id == id) {
		/* The row is read: the database may change while we wait. */
		p->hold_id = 0;
		p->held++;
		pthread_cond_broadcast(&p->cond);
		while (!p->release)
			pthread_cond_wait(&p->cond, &p->lock);
		p->held--;
	}
	pthread_mutex_unlock(&p->lock);
	int fail = atomic_load(&p->fail_gets);
	return fail ? fail : rc;
}

static int p_create(void *self, user *u)
{
	probe_repo *p = self;
	atomic_fetch_add(&p->writes, 1);
	return p->inner.ops->create(p->inner.self, u);
}

/* A write's own status, or the one that replaces its answer. */
static int p_answer(probe_repo *p, int rc)
{
	int lose = atomic_load(&p->lose_writes);
	return rc == ASIDE_OK && lose ? lose : rc;
}

static int p_update(void *self, const user *u)
{
	probe_repo *p = self;
	atomic_fetch_add(&p->writes, 1);
	return p_answer(p, p->inner.ops->update(p->inner.self, u));
}

static int p_remove(void *self, int64_t id)
{
	probe_repo *p = self;
	atomic_fetch_add(&p->writes, 1);
	return p_answer(p, p->inner.ops->remove(p->inner.self, id));
}

struct id_list {
	int64_t *ids;
	size_t n, cap;
};

static int collect_id(void *arg, int64_t id)
{
	struct id_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		int64_t *ids = realloc(l->ids, cap * sizeof(*ids));
		if (!ids)
			return ASIDE_ENOMEM;
		l->ids = ids;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return ASIDE_OK;
}

static int ascending(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The inner repository's, when it lists its users (the fake one does not). */
static int p_each_id(void *self, int (*fn)(void *arg, int64_t id), void *arg,
		     aside_error *err)
{
	probe_repo *p = self;
	if (!p->inner.ops->each_id) {
		snprintf(err->message, sizeof(err->message),
			 "the repository cannot list its users");
		return ASIDE_EINVAL;
	}
	if (!atomic_load(&p->scramble_ids))
		return p->inner.ops->each_id(p->inner.self, fn, arg, err);
	struct id_list l = {0};
	int rc = p->inner.ops->each_id(p->inner.self, collect_id, &l, err);
	/* Every id once: those at odd places in order descending, then those
	 * at even places ascending (of 6: 5 3 1 0 2 4). */
	if (rc == ASIDE_OK && l.n)
		qsort(l.ids, l.n, sizeof(*l.ids), ascending);
	size_t odd = l.n / 2;
	for (size_t i = 0; rc == ASIDE_OK && i < l.n; i++)
		rc = fn(arg, i < odd ? l.ids[l.n - (l.n % 2) - 1 - 2 * i]
				     : l.ids[2 * (i - odd)]);
	free(l.ids);
	return rc;
}

static const user_repo_ops probe_ops = {
    .get = p_get,
    .create = p_create,
    .update = p_update,
    .remove = p_remove,
    .close = f_close,
    .each_id = p_each_id,
};

void probe_repo_init(probe_repo *p, user_repo inner)
{
	memset(p, 0, sizeof(*p));
	p->inner = inner;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
}

void probe_repo_fini(probe_repo *p)
{
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}

user_repo probe_repo_handle(probe_repo *p)
{
	return (user_repo){&probe_ops, p};
}

void probe_hold_next_get(probe_repo *p, int64_t id)
{
	pthread_mutex_lock(&p->lock);
	p->hold_id = id;
	p->release = false;
	pthread_mutex_unlock(&p->lock);
}

void probe_wait_held(probe_repo *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->held == 0)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

void probe_release(probe_repo *p)
{
	pthread_mutex_lock(&p->lock);
	p->release = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

bool wait_for_waiters(aside_cache *c, int64_t n)
{
	for (int i = 0; i < 10000; i++) {
		aside_metrics m;
		aside_cache_metrics(c, &m);
		if (m.waiting >= n)
			return true;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return false;
}
