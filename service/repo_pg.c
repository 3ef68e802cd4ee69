/*
 * repo_pg.c -- the user repository on PostgreSQL (libpq).
 *
 * A pool of connections (pool.c), each with its statements prepared once.  The
 * schema is created or migrated on open, under an advisory lock so that
 * several processes opening at once do not race.  Every connection runs
 * with a statement_timeout, and waits for an answer at most a second
 * longer (the server's timeout cannot fire in a server that is stopped, or
 * behind a network that went silent; the wait is ours).  Errors keep their
 * SQLSTATE.  A connection whose status is CONNECTION_BAD after a call, or
 * whose answer never came, is closed, not pooled, and the next call opens
 * a fresh one: a restarted or hung server costs the calls in flight an
 * error, not the process its pool.
 *
 * URL: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?...] as libpq reads it,
 * plus these of ours, removed before libpq sees them:
 *   pool=N (default 8), statement_timeout_ms=T (default 5000);
 * libpq's connect_timeout defaults to 5 s here.
 */
#include "repo.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How much longer than statement_timeout a call waits for its answer. */
#define ANSWER_GRACE_MS 1000

struct conn {
	PGconn *pg;
	long wait_ms; /* for an answer; 0: for ever (no statement_timeout) */
};

struct pg_repo {
	char *conninfo;
	int max;
	long statement_timeout_ms;
	repo__pool pool;
	bool pool_ready;
};

/* Schema migrations, in order; schema_version says how many ran. */
static const char *const migrations[] = {
    "CREATE TABLE IF NOT EXISTS users ("
    " id BIGSERIAL PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " email TEXT NOT NULL,"
    " created_at_us BIGINT NOT NULL,"
    " version BIGINT NOT NULL DEFAULT 1)",
    "CREATE TABLE IF NOT EXISTS aside_outbox ("
    " id BIGSERIAL PRIMARY KEY,"
    " user_id BIGINT NOT NULL,"
    " created_at_us BIGINT NOT NULL)",
};

static const struct {
	const char *name, *sql;
	int nparams;
} statements[] = {
    {"aside_get",
     "SELECT id, name, email, created_at_us, version FROM users "
     "WHERE id = $1",
     1},
    {"aside_ins",
     "INSERT INTO users (name, email, created_at_us) "
     "VALUES ($1, $2, $3) RETURNING id",
     3},
    {"aside_upd",
     "UPDATE users SET name = $1, email = $2, "
     "version = version + 1 WHERE id = $3",
     3},
    {"aside_del", "DELETE FROM users WHERE id = $1", 1},
    {"aside_ping", "SELECT 1", 0},
    /* A change and its outbox row: one statement, one transaction. */
    {"aside_ins_obx",
     "WITH i AS (INSERT INTO users (name, email, created_at_us) "
     "VALUES ($1, $2, $3) RETURNING id, version), "
     "o AS (INSERT INTO aside_outbox (user_id, created_at_us) "
     "SELECT id, $3 FROM i RETURNING id) "
     "SELECT i.id, o.id, i.version FROM i, o",
     3},
    {"aside_upd_obx",
     "WITH u AS (UPDATE users SET name = $1, email = $2, "
     "version = version + 1 WHERE id = $3 RETURNING id, version), "
     "o AS (INSERT INTO aside_outbox (user_id, created_at_us) "
     "SELECT id, $4 FROM u RETURNING id) "
     "SELECT u.id, o.id, u.version FROM u, o",
     4},
    {"aside_del_obx",
     "WITH d AS (DELETE FROM users WHERE id = $1 RETURNING id, version), "
     "o AS (INSERT INTO aside_outbox (user_id, created_at_us) "
     "SELECT id, $2 FROM d RETURNING id) "
     "SELECT d.id, o.id, d.version FROM d, o",
     2},
    {"aside_obx_list",
     "SELECT id, user_id FROM aside_outbox WHERE created_at_us < $1 "
     "ORDER BY id LIMIT $2",
     2},
    {"aside_obx_del", "DELETE FROM aside_outbox WHERE id = $1", 1},
    {"aside_obx_del_many",
     "DELETE FROM aside_outbox WHERE id = ANY($1::bigint[])", 1},
};

static int pg_fail(aside_error *err, PGconn *pg, PGresult *res,
		   const char *what)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = ASIDE_EDB;
		const char *state =
		    res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state)
			snprintf(err->sqlstate, sizeof(err->sqlstate), "%s",
				 state);
		const char *msg = res ? PQresultErrorMessage(res) : "";
		if (!msg || !*msg)
			msg = pg ? PQerrorMessage(pg) : "no connection";
		snprintf(err->message, sizeof(err->message),
			 "postgresql: %s: %s", what, msg);
		/* libpq's messages end with a newline, and some run on over
		 * lines ("...failed: Connection refused\n\tIs the server
		 * running..."): one line, as every message here is. */
		char *out = err->message;
		for (const char *in = err->message; *in; in++) {
			if (*in != '\n') {
				*out++ = *in;
				continue;
			}
			while (in[1] == '\t' || in[1] == ' ')
				in++;
			if (in[1])
				*out++ = ' ';
		}
		*out = '\0';
	}
	return ASIDE_EDB;
}

static int exec_ok(PGconn *pg, const char *sql, aside_error *err)
{
	PGresult *res = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(res);
	int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK
		     ? ASIDE_OK
		     : pg_fail(err, pg, res, sql);
	PQclear(res);
	return rc;
}

/*
 * Creates or migrates the schema, and checks the tables it finds: one
 * transaction, one process at a time.
 */
static int migrate(PGconn *pg, aside_error *err)
{
	int rc = exec_ok(pg, "BEGIN", err);
	if (rc == ASIDE_OK)
		rc = exec_ok(pg, "SELECT pg_advisory_xact_lock(4242001)", err);
	if (rc == ASIDE_OK)
		rc = exec_ok(pg,
			     "CREATE TABLE IF NOT EXISTS aside_schema "
			     "(version INT NOT NULL)",
			     err);
	int have = 0;
	if (rc == ASIDE_OK) {
		PGresult *res = PQexec(pg, "SELECT version FROM aside_schema");
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			rc =
			    pg_fail(err, pg, res, "reading the schema version");
		else if (PQntuples(res) > 0)
			have = atoi(PQgetvalue(res, 0, 0));
		else
			rc = exec_ok(pg, "INSERT INTO aside_schema VALUES (0)",
				     err);
		PQclear(res);
	}
	int want = (int)(sizeof(migrations) / sizeof(migrations[0]));
	for (int i = have; rc == ASIDE_OK && i < want; i++)
		rc = exec_ok(pg, migrations[i], err);
	/* Tables already there (another application's "users") must have
	 * every column the statements use; if not, all of this is rolled
	 * back, and the database is left as it was. */
	if (rc == ASIDE_OK) {
		PGresult *res =
		    PQexec(pg, "SELECT id, name, email, created_at_us, version "
			       "FROM users LIMIT 0");
		if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			PQclear(res);
			res = PQexec(pg, "SELECT id, user_id, created_at_us "
					 "FROM aside_outbox LIMIT 0");
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			rc = pg_fail(err, pg, res,
				     "checking the tables already there");
		PQclear(res);
	}
	if (rc == ASIDE_OK && have < want) {
		char sql[64];
		snprintf(sql, sizeof(sql),
			 "UPDATE aside_schema SET version = %d", want);
		rc = exec_ok(pg, sql, err);
	}
	if (rc == ASIDE_OK)
		rc = exec_ok(pg, "COMMIT", err);
	else
		exec_ok(pg, "ROLLBACK", NULL);
	return rc;
}

/* libpq prints a server's notices on stderr by default; the library's
 * callers did not ask for "relation already exists, skipping" on every open,
 * so notices are dropped.  Errors still come back as results. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static struct conn *conn_open(struct pg_repo *r, bool first, aside_error *err)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		repo__fail(err, ASIDE_ENOMEM, "out of memory");
		return NULL;
	}
	c->pg = PQconnectdb(r->conninfo);
	if (PQstatus(c->pg) != CONNECTION_OK) {
		pg_fail(err, c->pg, NULL, "connecting");
		goto fail;
	}
	PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
	c->wait_ms = r->statement_timeout_ms
			 ? r->statement_timeout_ms + ANSWER_GRACE_MS
			 : 0;
	char sql[96];
	snprintf(sql, sizeof(sql), "SET statement_timeout = %ld",
		 r->statement_timeout_ms);
	if (exec_ok(c->pg, sql, err) != ASIDE_OK)
		goto fail;
	if (first && migrate(c->pg, err) != ASIDE_OK)
		goto fail;
	for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]);
	     i++) {
		PGresult *res =
		    PQprepare(c->pg, statements[i].name, statements[i].sql,
			      statements[i].nparams, NULL);
		bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			pg_fail(err, c->pg, res, "preparing statements");
		PQclear(res);
		if (!ok)
			goto fail;
	}
	return c;
fail:
	PQfinish(c->pg);
	free(c);
	return NULL;
}

static void *pool_open(void *ctx, aside_error *err)
{
	return conn_open(ctx, false, err);
}

static void pool_close(void *conn)
{
	struct conn *c = conn;
	PQfinish(c->pg);
	free(c);
}

static struct conn *borrow(struct pg_repo *r, aside_error *err)
{
	return repo__pool_take(&r->pool, err);
}

/* Back to the pool, unless its connection broke: then it is closed. */
static void give_back(struct pg_repo *r, struct conn *c)
{
	bool broken = PQstatus(c->pg) != CONNECTION_OK ||
		      PQtransactionStatus(c->pg) != PQTRANS_IDLE;
	repo__pool_give(&r->pool, c, broken);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The next result of what was sent on c, as PQgetResult, waiting until
 * due (mono_ms; 0: for ever).  Past due, NULL with *late set: the
 * connection still has the query in flight, so give_back closes it.
 */
static PGresult *result_by(struct conn *c, int64_t due, bool *late)
{
	while (due && PQisBusy(c->pg)) {
		int64_t left = due - mono_ms();
		if (left <= 0) {
			*late = true;
			return NULL;
		}
		struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
		int n = poll(&p, 1, (int)left);
		if (n < 0 && errno != EINTR)
			break; /* PQgetResult reports what is wrong */
		if (n > 0 && !PQconsumeInput(c->pg))
			break;
	}
	return PQgetResult(c->pg);
}

static int no_answer(aside_error *err, const struct conn *c, const char *what)
{
	return repo__fail(err, ASIDE_EDB,
			  "postgresql: %s: no answer in %ld ms (the server "
			  "is stopped, overloaded or unreachable)",
			  what, c->wait_ms);
}

/* Runs a prepared statement; NULL (and err) unless it returned ok. */
static PGresult *run(struct conn *c, const char *stmt, int n,
		     const char *const *params, ExecStatusType want,
		     aside_error *err, const char *what)
{
	if (!PQsendQueryPrepared(c->pg, stmt, n, params, NULL, NULL, 0)) {
		pg_fail(err, c->pg, NULL, what);
		return NULL;
	}
	int64_t due = c->wait_ms ? mono_ms() + c->wait_ms : 0;
	bool late = false;
	PGresult *res = NULL, *more;
	while ((more = result_by(c, due, &late)) != NULL) {
		/*
		 * One statement has one result, sent before its transaction
		 * commits, which happens at the end of the request: the rows
		 * of a change that its commit then refuses (a deferred
		 * constraint) or never makes (the connection ended
		 * meanwhile) come first, the error after them.  The error is
		 * the outcome.
		 */
		if (!res) {
			res = more;
		} else if (PQresultStatus(more) == PGRES_FATAL_ERROR &&
			   PQresultStatus(res) != PGRES_FATAL_ERROR) {
			PQclear(res);
			res = more;
		} else {
			PQclear(more);
		}
	}
	if (late) {
		PQclear(res);
		no_answer(err, c, what);
		return NULL;
	}
	/* Ended before the server said the request was done: whether it
	 * committed is unknown, so it did not succeed. */
	if (PQstatus(c->pg) == CONNECTION_BAD &&
	    PQresultStatus(res) != PGRES_FATAL_ERROR) {
		PQclear(res);
		pg_fail(err, c->pg, NULL, what);
		return NULL;
	}
	if (PQresultStatus(res) != want) {
		pg_fail(err, c->pg, res, what);
		PQclear(res);
		return NULL;
	}
	return res;
}

static int pg_get(void *self, int64_t id, user *out, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", (long long)id);
	const char *params[] = {ids};
	PGresult *res = run(c, "aside_get", 1, params, PGRES_TUPLES_OK, err,
			    "reading a user");
	int rc = ASIDE_EDB;
	if (res) {
		if (PQntuples(res) == 0) {
			rc = ASIDE_NOT_FOUND;
		} else {
			memset(out, 0, sizeof(*out));
			out->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			snprintf(out->name, sizeof(out->name), "%s",
				 PQgetvalue(res, 0, 1));
			snprintf(out->email, sizeof(out->email), "%s",
				 PQgetvalue(res, 0, 2));
			out->created_at_us =
			    strtoll(PQgetvalue(res, 0, 3), NULL, 10);
			out->version = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
			rc = ASIDE_OK;
		}
		PQclear(res);
	}
	give_back(self, c);
	return rc;
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int pg_create(void *self, user *u, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	int64_t at = now_us();
	char ats[24];
	snprintf(ats, sizeof(ats), "%lld", (long long)at);
	const char *params[] = {u->name, u->email, ats};
	PGresult *res = run(c, "aside_ins", 3, params, PGRES_TUPLES_OK, err,
			    "creating a user");
	int rc = ASIDE_EDB;
	if (res) {
		u->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		u->created_at_us = at;
		u->version = 1;
		rc = ASIDE_OK;
		PQclear(res);
	}
	give_back(self, c);
	return rc;
}

static int changed(void *self, const char *stmt, const char *const *params,
		   int n, aside_error *err, const char *what)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	PGresult *res = run(c, stmt, n, params, PGRES_COMMAND_OK, err, what);
	int rc = ASIDE_EDB;
	if (res) {
		rc = strcmp(PQcmdTuples(res), "0") == 0 ? ASIDE_NOT_FOUND
							: ASIDE_OK;
		PQclear(res);
	}
	give_back(self, c);
	return rc;
}

static int pg_update(void *self, const user *u, aside_error *err)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", (long long)u->id);
	const char *params[] = {u->name, u->email, ids};
	return changed(self, "aside_upd", params, 3, err, "updating a user");
}

static int pg_remove(void *self, int64_t id, aside_error *err)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", (long long)id);
	const char *params[] = {ids};
	return changed(self, "aside_del", params, 1, err, "deleting a user");
}

static int pg_change(void *self, user_repo_change what, user *u,
		     int64_t *outbox, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	char ids[24], ats[24];
	int64_t at = now_us();
	snprintf(ids, sizeof(ids), "%lld", (long long)u->id);
	snprintf(ats, sizeof(ats), "%lld", (long long)at);
	PGresult *res;
	if (what == USER_REPO_CREATE) {
		const char *params[] = {u->name, u->email, ats};
		res = run(c, "aside_ins_obx", 3, params, PGRES_TUPLES_OK, err,
			  "creating a user");
	} else if (what == USER_REPO_UPDATE) {
		const char *params[] = {u->name, u->email, ids, ats};
		res = run(c, "aside_upd_obx", 4, params, PGRES_TUPLES_OK, err,
			  "updating a user");
	} else {
		const char *params[] = {ids, ats};
		res = run(c, "aside_del_obx", 2, params, PGRES_TUPLES_OK, err,
			  "deleting a user");
	}
	int rc = ASIDE_EDB;
	if (res) {
		if (PQntuples(res) == 0) {
			rc = ASIDE_NOT_FOUND;
		} else {
			if (what == USER_REPO_CREATE) {
				u->id =
				    strtoll(PQgetvalue(res, 0, 0), NULL, 10);
				u->created_at_us = at;
			}
			*outbox = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
			u->version = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
			rc = ASIDE_OK;
		}
		PQclear(res);
	}
	give_back(self, c);
	return rc;
}

static int pg_pending(void *self, int64_t before_us, int64_t *ids,
		      int64_t *users, int max, int *n, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	char before[24], lim[16];
	snprintf(before, sizeof(before), "%lld",
		 (long long)(before_us ? before_us : INT64_MAX));
	snprintf(lim, sizeof(lim), "%d", max);
	const char *params[] = {before, lim};
	PGresult *res = run(c, "aside_obx_list", 2, params, PGRES_TUPLES_OK,
			    err, "reading the outbox");
	int rc = ASIDE_EDB;
	*n = 0;
	if (res) {
		for (int i = 0; i < PQntuples(res) && *n < max; i++) {
			ids[*n] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			users[*n] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
			(*n)++;
		}
		rc = ASIDE_OK;
		PQclear(res);
	}
	give_back(self, c);
	return rc;
}

static int pg_done(void *self, int64_t outbox, aside_error *err)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", (long long)outbox);
	const char *params[] = {ids};
	int rc = changed(self, "aside_obx_del", params, 1, err,
			 "clearing the outbox");
	return rc == ASIDE_NOT_FOUND ? ASIDE_OK : rc;
}

static int pg_done_many(void *self, const int64_t *rows, int n,
			aside_error *err)
{
	size_t len;
	char *arr = repo__id_list(rows, n, '{', '}', &len); /* an array */
	if (!arr)
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	const char *params[] = {arr};
	int rc = changed(self, "aside_obx_del_many", params, 1, err,
			 "clearing the outbox");
	free(arr);
	return rc == ASIDE_NOT_FOUND ? ASIDE_OK : rc;
}

static int pg_ping(void *self, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	PGresult *res =
	    run(c, "aside_ping", 0, NULL, PGRES_TUPLES_OK, err, "ping");
	PQclear(res);
	give_back(self, c);
	return res ? ASIDE_OK : ASIDE_EDB;
}

/* Row by row (libpq's single-row mode): the ids are never all in memory. */
static int pg_each_id(void *self, int (*fn)(void *arg, int64_t id), void *arg,
		      aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	int ret = ASIDE_OK;
	if (!PQsendQuery(c->pg, "SELECT id FROM users") ||
	    !PQsetSingleRowMode(c->pg))
		ret = pg_fail(err, c->pg, NULL, "listing users");
	/* Each row within the wait of one statement: a server that stops
	 * answering midway is given up on, as in run(). */
	PGresult *res;
	bool late = false;
	while (!late &&
	       (res = result_by(c, c->wait_ms ? mono_ms() + c->wait_ms : 0,
				&late)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		if (ret == ASIDE_OK && st == PGRES_SINGLE_TUPLE)
			ret = fn(arg, strtoll(PQgetvalue(res, 0, 0), NULL, 10));
		else if (ret == ASIDE_OK && st != PGRES_TUPLES_OK)
			ret = pg_fail(err, c->pg, res, "listing users");
		PQclear(res); /* read to the end: the connection is reused */
	}
	if (late && ret == ASIDE_OK)
		ret = no_answer(err, c, "listing users");
	give_back(self, c);
	return ret;
}

static int pg_get0(void *self, int64_t id, user *out)
{
	return pg_get(self, id, out, NULL);
}
static int pg_create0(void *self, user *u)
{
	return pg_create(self, u, NULL);
}
static int pg_update0(void *self, const user *u)
{
	return pg_update(self, u, NULL);
}
static int pg_remove0(void *self, int64_t id)
{
	return pg_remove(self, id, NULL);
}

static void pg_close(void *self)
{
	struct pg_repo *r = self;
	if (!r)
		return;
	if (r->pool_ready)
		repo__pool_fini(&r->pool);
	free(r->conninfo);
	free(r);
}

static const user_repo_ops pg_ops = {
    .get = pg_get0,
    .create = pg_create0,
    .update = pg_update0,
    .remove = pg_remove0,
    .close = pg_close,
    .get_ex = pg_get,
    .create_ex = pg_create,
    .update_ex = pg_update,
    .remove_ex = pg_remove,
    .ping = pg_ping,
    .logged_change = pg_change,
    .outbox_pending = pg_pending,
    .outbox_done = pg_done,
    .outbox_done_many = pg_done_many,
    .each_id = pg_each_id,
};

static bool number(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/*
 * Splits our options off the URL's query; the rest goes to libpq as is.
 * Returns the conninfo to use (malloc'd) or NULL with err set.
 */
static char *take_options(struct pg_repo *r, const char *url, aside_error *err)
{
	char *s = strdup(url), *q = s ? strchr(s, '?') : NULL;
	if (!s) {
		repo__fail(err, ASIDE_ENOMEM, "out of memory");
		return NULL;
	}
	if (!q)
		goto done;
	char *rest = calloc(1, strlen(q) + 1), *w = rest;
	if (!rest) {
		free(s);
		repo__fail(err, ASIDE_ENOMEM, "out of memory");
		return NULL;
	}
	*q++ = '\0';
	/* Given twice, which one was meant is a guess: refused. */
	bool had_pool = false, had_timeout = false;
	char *save;
	for (char *tok = strtok_r(q, "&", &save); tok;
	     tok = strtok_r(NULL, "&", &save)) {
		long v;
		bool *had = NULL;
		if (!strncmp(tok, "pool=", 5)) {
			had = &had_pool;
			if (!*had && number(tok + 5, 1, 256, &v))
				r->max = (int)v;
			else
				goto bad;
		} else if (!strncmp(tok, "statement_timeout_ms=", 21)) {
			had = &had_timeout;
			if (!*had && number(tok + 21, 0, 86400000, &v))
				r->statement_timeout_ms = v;
			else
				goto bad;
		} else {
			w += sprintf(w, "%s%s", w == rest ? "?" : "&", tok);
		}
		if (had)
			*had = true;
		continue;
	bad:
		repo__fail(err, ASIDE_EURL, "postgresql URL: %s option '%s'",
			   *had ? "repeated" : "bad", tok);
		free(rest);
		free(s);
		return NULL;
	}
	size_t n = strlen(s);
	memcpy(s + n, rest, strlen(rest) + 1); /* fits: rest is shorter */
	free(rest);
done:
	if (!strstr(s, "connect_timeout=")) {
		char *t = malloc(strlen(s) + 32);
		if (t)
			sprintf(t, "%s%sconnect_timeout=5", s,
				strchr(s, '?') ? "&" : "?");
		free(s);
		s = t;
		if (!s)
			repo__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	return s;
}

int repo__pg_open(const char *url, user_repo *out, aside_error *err)
{
	struct pg_repo *r = calloc(1, sizeof(*r));
	if (!r)
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	r->max = 8;
	r->statement_timeout_ms = 5000;
	if (!(r->conninfo = take_options(r, url, err))) {
		int rc = err ? err->code : ASIDE_EURL;
		pg_close(r);
		return rc;
	}
	if (repo__pool_init(&r->pool, r->max, pool_open, pool_close, r) !=
	    ASIDE_OK) {
		pg_close(r);
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	r->pool_ready = true;
	struct conn *c = conn_open(r, true, err);
	if (!c) {
		pg_close(r);
		return ASIDE_EDB;
	}
	repo__pool_add(&r->pool, c);
	out->ops = &pg_ops;
	out->self = r;
	return ASIDE_OK;
}
