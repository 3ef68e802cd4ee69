/*
 * repo.h -- what the repositories of the UserService share (internal).
 */
#ifndef ASIDE_REPO_H
#define ASIDE_REPO_H

#include <aside/users.h>
#include <pthread.h>
#include <stdbool.h>

/* A bounded pool of connections (pool.c); thread-safe. */
typedef struct repo__pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	void **idle; /* guarded by lock */
	int nidle, open, max;
	void *(*open_fn)(void *ctx, aside_error *err);
	void (*close_fn)(void *conn);
	void *ctx;
} repo__pool;

int repo__pool_init(repo__pool *p, int max,
		    void *(*open)(void *ctx, aside_error *err),
		    void (*close)(void *conn), void *ctx);
/* Counts in a connection opened elsewhere (the first, at open). */
void repo__pool_add(repo__pool *p, void *conn);
/* A connection for one call: an idle one, a new one, or wait for one.
 * NULL (and err) if a new one cannot be opened. */
void *repo__pool_take(repo__pool *p, aside_error *err);
/* Back to the pool, or closed if it broke. */
void repo__pool_give(repo__pool *p, void *conn, bool broken);
/* Closes the idle connections (call when none is taken). */
void repo__pool_fini(repo__pool *p);

int repo__fail(aside_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The outbox (durable invalidation).  Our repositories write, in the same
 * transaction as each change to a user, a row naming the user; the service
 * deletes it once the cache has heard the invalidation, and replays the
 * rows left by invalidations that could not reach the cache.
 */
enum repo__change { REPO__CREATE, REPO__UPDATE, REPO__REMOVE };
typedef struct repo__outbox_ops {
	/* The change and its outbox row, atomically; *outbox: the row.
	 * REPO__REMOVE takes the id in u->id. */
	int (*change)(void *self, enum repo__change what, user *u,
		      int64_t *outbox, aside_error *err);
	/* Up to max rows written before before_us (0: any), oldest first:
	 * their ids and users.  *n: how many. */
	int (*pending)(void *self, int64_t before_us, int64_t *ids,
		       int64_t *users, int max, int *n, aside_error *err);
	int (*done)(void *self, int64_t outbox, aside_error *err);
} repo__outbox_ops;

/* The outbox of a repository opened by user_repo_open; NULL for others. */
const repo__outbox_ops *repo__outbox(user_repo r);
extern const user_repo_ops *const repo__sqlite_ops, *const repo__pg_ops;
extern const repo__outbox_ops repo__sqlite_outbox, repo__pg_outbox;

int repo__sqlite_open(const char *path, user_repo *out, aside_error *err);
int repo__pg_open(const char *url, user_repo *out, aside_error *err);

#endif
