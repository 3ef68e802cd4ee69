/*
 * slow_repo.c -- a repository that wraps another, counts its reads and
 * delays each by a set time: a remote or busy database, for the demo, the
 * server's --db-delay-ms and benchmarks; and, for `aside check`, random
 * pauses after reads and updates (app.h).  Writes pass straight through,
 * and so does the inner repository's outbox, if it has one.
 */
#include "app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void app_sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

uint64_t app_rand(void)
{
	static _Thread_local uint64_t s;
	if (!s) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t seed = ((uint64_t)ts.tv_nsec << 20) ^
				((uint64_t)getpid() << 40) ^
				(uint64_t)(uintptr_t)&s ^ (uint64_t)ts.tv_sec;
		s = seed | 1;
	}
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

/* A pause of up to ms milliseconds, drawn at random. */
static void pause_upto_ms(long ms)
{
	if (ms > 0)
		app_sleep_us((long)(app_rand() % (uint64_t)(ms + 1)) * 1000);
}

static int fail(aside_error *err, int code, const char *msg)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = code;
		snprintf(err->message, sizeof(err->message), "%s", msg);
	}
	return code;
}

static int get_ex(void *self, int64_t id, user *out, aside_error *err)
{
	struct slow_repo *w = self;
	atomic_fetch_add_explicit(&w->gets, 1, memory_order_relaxed);
	if (atomic_load(&w->down))
		return fail(err, ASIDE_EDB, "the database is down");
	if (w->delay_us > 0)
		app_sleep_us(w->delay_us);
	const user_repo_ops *ops = w->inner.ops;
	int rc = ops->get_ex ? ops->get_ex(w->inner.self, id, out, err)
			     : ops->get(w->inner.self, id, out);
	if (rc == ASIDE_OK && w->odd_absent && out->name[0] == 'v' &&
	    strtol(out->name + 1, NULL, 10) % 2 == 1)
		rc = ASIDE_NOT_FOUND;
	if (w->after_read_ms > 0 && (app_rand() & 1))
		pause_upto_ms(w->after_read_ms);
	return rc;
}

static int create_ex(void *self, user *u, aside_error *err)
{
	struct slow_repo *w = self;
	const user_repo_ops *ops = w->inner.ops;
	return ops->create_ex ? ops->create_ex(w->inner.self, u, err)
			      : ops->create(w->inner.self, u);
}

static int update_ex(void *self, const user *u, aside_error *err)
{
	struct slow_repo *w = self;
	const user_repo_ops *ops = w->inner.ops;
	int rc = ops->update_ex ? ops->update_ex(w->inner.self, u, err)
				: ops->update(w->inner.self, u);
	if (rc == ASIDE_OK)
		pause_upto_ms(w->after_update_ms);
	return rc;
}

static int remove_ex(void *self, int64_t id, aside_error *err)
{
	struct slow_repo *w = self;
	const user_repo_ops *ops = w->inner.ops;
	return ops->remove_ex ? ops->remove_ex(w->inner.self, id, err)
			      : ops->remove(w->inner.self, id);
}

static int ping(void *self, aside_error *err)
{
	struct slow_repo *w = self;
	return w->inner.ops->ping ? w->inner.ops->ping(w->inner.self, err)
				  : ASIDE_OK;
}

static int get(void *self, int64_t id, user *out)
{
	return get_ex(self, id, out, NULL);
}
static int create(void *self, user *u)
{
	return create_ex(self, u, NULL);
}
static int update(void *self, const user *u)
{
	return update_ex(self, u, NULL);
}
static int remove_(void *self, int64_t id)
{
	return remove_ex(self, id, NULL);
}
static void close_(void *self)
{
	(void)self; /* the inner repository is closed by its owner */
}

/* The outbox passes through too, so that durable invalidation survives the
 * wrapping; an update pauses after its commit as update_ex does. */
static int logged_change(void *self, user_repo_change what, user *u,
			 int64_t *row, aside_error *err)
{
	struct slow_repo *w = self;
	int rc = w->inner.ops->logged_change(w->inner.self, what, u, row, err);
	if (rc == ASIDE_OK && what == USER_REPO_UPDATE)
		pause_upto_ms(w->after_update_ms);
	return rc;
}
static int outbox_pending(void *self, int64_t before_us, int64_t *rows,
			  int64_t *users, int max, int *n, aside_error *err)
{
	struct slow_repo *w = self;
	return w->inner.ops->outbox_pending(w->inner.self, before_us, rows,
					    users, max, n, err);
}
static int outbox_done(void *self, int64_t row, aside_error *err)
{
	struct slow_repo *w = self;
	return w->inner.ops->outbox_done(w->inner.self, row, err);
}
static int outbox_done_many(void *self, const int64_t *rows, int n,
			    aside_error *err)
{
	struct slow_repo *w = self;
	const user_repo_ops *in = w->inner.ops;
	if (in->outbox_done_many)
		return in->outbox_done_many(w->inner.self, rows, n, err);
	int rc = ASIDE_OK;
	for (int i = 0; i < n && rc == ASIDE_OK; i++)
		rc = in->outbox_done(w->inner.self, rows[i], err);
	return rc;
}

static int each_id(void *self, int (*fn)(void *arg, int64_t id), void *arg,
		   aside_error *err)
{
	struct slow_repo *w = self;
	if (!w->inner.ops->each_id)
		return fail(err, ASIDE_EINVAL,
			    "the repository cannot list its users");
	return w->inner.ops->each_id(w->inner.self, fn, arg, err);
}

#define SLOW_OPS                                                               \
	.get = get, .create = create, .update = update, .remove = remove_,     \
	.close = close_, .get_ex = get_ex, .create_ex = create_ex,             \
	.update_ex = update_ex, .remove_ex = remove_ex, .ping = ping,          \
	.each_id = each_id

static const user_repo_ops slow_ops = {SLOW_OPS};
static const user_repo_ops slow_ops_outbox = {
    SLOW_OPS, .logged_change = logged_change, .outbox_pending = outbox_pending,
    .outbox_done = outbox_done, .outbox_done_many = outbox_done_many};

user_repo slow_repo_wrap(struct slow_repo *w, user_repo inner, long delay_us)
{
	w->inner = inner;
	w->delay_us = delay_us;
	w->after_read_ms = w->after_update_ms = 0;
	atomic_store(&w->gets, 0);
	atomic_store(&w->down, 0);
	w->odd_absent = false;
	if (!inner.ops) /* none to wrap (aside bench --http) */
		return (user_repo){0};
	bool outbox = inner.ops->logged_change && inner.ops->outbox_pending &&
		      inner.ops->outbox_done;
	return (user_repo){outbox ? &slow_ops_outbox : &slow_ops, w};
}
