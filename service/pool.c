/*
 * pool.c -- a bounded pool of database connections, shared by the SQLite
 * and PostgreSQL repositories: a caller takes a connection for one call and
 * gives it back; a connection that broke is closed instead, and the next
 * taker opens a fresh one.  No connection is opened or closed under the lock.
 */
#include "repo.h"

#include <stdlib.h>

int repo__pool_init(repo__pool *p, int max,
		    void *(*open)(void *ctx, aside_error *err),
		    void (*close)(void *conn), void *ctx)
{
	p->idle = calloc((size_t)max, sizeof(*p->idle));
	if (!p->idle)
		return ASIDE_ENOMEM;
	p->max = max;
	p->nidle = p->open = 0;
	p->open_fn = open;
	p->close_fn = close;
	p->ctx = ctx;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	return ASIDE_OK;
}

void repo__pool_add(repo__pool *p, void *conn)
{
	pthread_mutex_lock(&p->lock);
	p->open++;
	p->idle[p->nidle++] = conn;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void *repo__pool_take(repo__pool *p, aside_error *err)
{
	pthread_mutex_lock(&p->lock);
	while (!p->nidle && p->open >= p->max)
		pthread_cond_wait(&p->cond, &p->lock);
	if (p->nidle) {
		void *conn = p->idle[--p->nidle];
		pthread_mutex_unlock(&p->lock);
		return conn;
	}
	p->open++;
	pthread_mutex_unlock(&p->lock);
	void *conn = p->open_fn(p->ctx, err);
	if (!conn) {
		pthread_mutex_lock(&p->lock);
		p->open--;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	return conn;
}

void repo__pool_give(repo__pool *p, void *conn, bool broken)
{
	pthread_mutex_lock(&p->lock);
	if (broken)
		p->open--;
	else
		p->idle[p->nidle++] = conn;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (broken)
		p->close_fn(conn);
}

void repo__pool_fini(repo__pool *p)
{
	for (int i = 0; i < p->nidle; i++)
		p->close_fn(p->idle[i]);
	free(p->idle);
	p->idle = NULL;
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}
