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
 * The n ids as one text parameter, between open and close ("{1,2}" for a
 * PostgreSQL array, "[1,2]" for SQLite's json_each), in *len bytes; malloc'd
 * (NULL when out of memory).
 */
char *repo__id_list(const int64_t *ids, int n, char open, char close,
		    size_t *len);

/* Whether r has an outbox: all three of its members (users.h). */
bool repo__has_outbox(user_repo r);

int repo__sqlite_open(const char *path, user_repo *out, aside_error *err);
int repo__pg_open(const char *url, user_repo *out, aside_error *err);

#endif
