/*
 * repo_sqlite.c -- the user repository on SQLite (the embedded default).
 *
 * A pool of connections (pool.c), each with its statements prepared once;
 * a thread borrows one for a call.  A file database runs in WAL mode so readers
 * do not wait for the writer; ":memory:" has one connection, since each
 * connection to it would be a separate database.
 */
#include "repo.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 8
#define BUSY_TIMEOUT_MS 5000

struct conn {
	sqlite3 *db;
	sqlite3_stmt *get, *ins, *upd, *del, *ping;
	sqlite3_stmt *obx_ins, *obx_list, *obx_del, *obx_del_many;
	sqlite3_stmt *begin, *commit, *rollback;
};

struct sqlite_repo {
	char *path;
	int max;
	repo__pool pool;
	bool pool_ready;
};

static int db_fail(aside_error *err, sqlite3 *db, int rc, const char *what)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = ASIDE_EDB;
		err->backend_code = db ? sqlite3_extended_errcode(db) : rc;
		snprintf(err->message, sizeof(err->message), "sqlite: %s: %s",
			 what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	}
	return ASIDE_EDB;
}

static const char schema[] = "CREATE TABLE IF NOT EXISTS users ("
			     " id INTEGER PRIMARY KEY AUTOINCREMENT,"
			     " name TEXT NOT NULL,"
			     " email TEXT NOT NULL,"
			     " created_at_us INTEGER NOT NULL,"
			     " version INTEGER NOT NULL DEFAULT 1);"
			     "CREATE TABLE IF NOT EXISTS aside_outbox ("
			     " id INTEGER PRIMARY KEY AUTOINCREMENT,"
			     " user_id INTEGER NOT NULL,"
			     " created_at_us INTEGER NOT NULL)";

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	sqlite3_finalize(c->get);
	sqlite3_finalize(c->ins);
	sqlite3_finalize(c->upd);
	sqlite3_finalize(c->del);
	sqlite3_finalize(c->ping);
	sqlite3_finalize(c->obx_ins);
	sqlite3_finalize(c->obx_list);
	sqlite3_finalize(c->obx_del);
	sqlite3_finalize(c->obx_del_many);
	sqlite3_finalize(c->begin);
	sqlite3_finalize(c->commit);
	sqlite3_finalize(c->rollback);
	sqlite3_close(c->db);
	free(c);
}

/*
 * Creates the tables that are missing, and checks that those already there
 * have every column the statements use, in one transaction: a database
 * with a "users" table of another application's is refused with the
 * column it lacks, and left as it was (no outbox table added to it).
 */
static int make_schema(sqlite3 *db, aside_error *err)
{
	static const char check[] =
	    "SELECT id, name, email, created_at_us, version FROM users "
	    "LIMIT 0;"
	    "SELECT id, user_id, created_at_us FROM aside_outbox LIMIT 0";
	/* All there already: nothing to write (a read-only file opens). */
	if (sqlite3_exec(db, check, NULL, NULL, NULL) == SQLITE_OK)
		return ASIDE_OK;
	const char *what = "creating the schema";
	int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_exec(db, schema, NULL, NULL, NULL);
		if (rc == SQLITE_OK) {
			what = "checking the tables already there";
			rc = sqlite3_exec(db, check, NULL, NULL, NULL);
		}
		if (rc == SQLITE_OK) {
			what = "creating the schema";
			rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		}
		if (rc != SQLITE_OK) {
			db_fail(err, db, rc, what); /* before the rollback */
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return ASIDE_EDB;
		}
		return ASIDE_OK;
	}
	return db_fail(err, db, rc, what);
}

static struct conn *conn_open(struct sqlite_repo *r, bool first,
			      aside_error *err)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		repo__fail(err, ASIDE_ENOMEM, "out of memory");
		return NULL;
	}
	int rc = sqlite3_open_v2(r->path, &c->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		db_fail(err, c->db, rc, r->path);
		goto fail;
	}
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
	/* The schema before WAL mode, which stays with the file: a database
	 * that is refused is left as it was. */
	if (first && make_schema(c->db, err) != ASIDE_OK)
		goto fail;
	const char *setup = r->max > 1 ? "PRAGMA journal_mode=WAL;"
					 "PRAGMA synchronous=NORMAL;"
				       : "";
	if ((rc = sqlite3_exec(c->db, setup, NULL, NULL, NULL)) != SQLITE_OK) {
		db_fail(err, c->db, rc, "setting WAL mode");
		goto fail;
	}
	struct {
		sqlite3_stmt **st;
		const char *sql;
	} stmts[] = {
	    {&c->get, "SELECT id, name, email, created_at_us, version "
		      "FROM users WHERE id = ?"},
	    {&c->ins, "INSERT INTO users (name, email, created_at_us) "
		      "VALUES (?, ?, ?)"},
	    {&c->upd, "UPDATE users SET name = ?, email = ?, "
		      "version = version + 1 WHERE id = ? RETURNING version"},
	    {&c->del, "DELETE FROM users WHERE id = ? RETURNING version"},
	    {&c->ping, "SELECT 1"},
	    {&c->obx_ins, "INSERT INTO aside_outbox (user_id, created_at_us) "
			  "VALUES (?, ?)"},
	    {&c->obx_list, "SELECT id, user_id FROM aside_outbox "
			   "WHERE created_at_us < ? ORDER BY id LIMIT ?"},
	    {&c->obx_del, "DELETE FROM aside_outbox WHERE id = ?"},
	    /* the ids as a JSON array: SQLite's json_each (built in) */
	    {&c->obx_del_many, "DELETE FROM aside_outbox WHERE id IN "
			       "(SELECT value FROM json_each(?))"},
	    {&c->begin, "BEGIN IMMEDIATE"},
	    {&c->commit, "COMMIT"},
	    {&c->rollback, "ROLLBACK"},
	};
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		rc = sqlite3_prepare_v3(c->db, stmts[i].sql, -1,
					SQLITE_PREPARE_PERSISTENT, stmts[i].st,
					NULL);
		if (rc != SQLITE_OK) {
			db_fail(err, c->db, rc, "preparing statements");
			goto fail;
		}
	}
	return c;
fail:
	conn_free(c);
	return NULL;
}

static void *pool_open(void *ctx, aside_error *err)
{
	return conn_open(ctx, false, err);
}

static void pool_close(void *conn)
{
	conn_free(conn);
}

static struct conn *borrow(struct sqlite_repo *r, aside_error *err)
{
	return repo__pool_take(&r->pool, err);
}

/* Returns c to the pool; a connection that failed badly is closed. */
static void give_back(struct sqlite_repo *r, struct conn *c, bool broken)
{
	repo__pool_give(&r->pool, c, broken);
}

static bool is_broken(int rc)
{
	rc &= 0xff;
	return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ||
	       rc == SQLITE_IOERR || rc == SQLITE_CANTOPEN;
}

static int sq_get(void *self, int64_t id, user *out, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	sqlite3_bind_int64(c->get, 1, id);
	int rc = sqlite3_step(c->get), ret;
	if (rc == SQLITE_ROW) {
		memset(out, 0, sizeof(*out));
		out->id = sqlite3_column_int64(c->get, 0);
		const unsigned char *name = sqlite3_column_text(c->get, 1);
		const unsigned char *email = sqlite3_column_text(c->get, 2);
		snprintf(out->name, sizeof(out->name), "%s",
			 name ? (const char *)name : "");
		snprintf(out->email, sizeof(out->email), "%s",
			 email ? (const char *)email : "");
		out->created_at_us = sqlite3_column_int64(c->get, 3);
		out->version = sqlite3_column_int64(c->get, 4);
		ret = ASIDE_OK;
	} else if (rc == SQLITE_DONE) {
		ret = ASIDE_NOT_FOUND;
	} else {
		ret = db_fail(err, c->db, rc, "reading a user");
	}
	sqlite3_reset(c->get);
	sqlite3_clear_bindings(c->get);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	return ret;
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The changes on a borrowed connection; *src is SQLite's result code. */
static int create_on(struct conn *c, user *u, aside_error *err, int *src)
{
	int64_t at = now_us();
	sqlite3_bind_text(c->ins, 1, u->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(c->ins, 2, u->email, -1, SQLITE_STATIC);
	sqlite3_bind_int64(c->ins, 3, at);
	int rc = *src = sqlite3_step(c->ins), ret = ASIDE_OK;
	if (rc == SQLITE_DONE) {
		u->id = sqlite3_last_insert_rowid(c->db);
		u->created_at_us = at;
		u->version = 1;
	} else {
		ret = db_fail(err, c->db, rc, "creating a user");
	}
	sqlite3_reset(c->ins);
	sqlite3_clear_bindings(c->ins);
	return ret;
}

/*
 * Steps a change that returns the row's version: ASIDE_OK (the version in
 * *version), ASIDE_NOT_FOUND, or an error.
 */
static int step_versioned(struct conn *c, sqlite3_stmt *st, int64_t *version,
			  aside_error *err, int *src, const char *what)
{
	int rc = *src = sqlite3_step(st), ret;
	if (rc == SQLITE_ROW) {
		*version = sqlite3_column_int64(st, 0);
		rc = *src = sqlite3_step(st);
	} else if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return ASIDE_NOT_FOUND;
	}
	ret = rc == SQLITE_DONE ? ASIDE_OK : db_fail(err, c->db, rc, what);
	sqlite3_reset(st);
	return ret;
}

static int update_on(struct conn *c, user *u, aside_error *err, int *src)
{
	sqlite3_bind_text(c->upd, 1, u->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(c->upd, 2, u->email, -1, SQLITE_STATIC);
	sqlite3_bind_int64(c->upd, 3, u->id);
	int ret =
	    step_versioned(c, c->upd, &u->version, err, src, "updating a user");
	sqlite3_clear_bindings(c->upd);
	return ret;
}

/* Removes u->id; u->version becomes the removed row's last version. */
static int remove_on(struct conn *c, user *u, aside_error *err, int *src)
{
	sqlite3_bind_int64(c->del, 1, u->id);
	return step_versioned(c, c->del, &u->version, err, src,
			      "deleting a user");
}

static int sq_create(void *self, user *u, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	int src, ret = create_on(c, u, err, &src);
	give_back(self, c, ret == ASIDE_EDB && is_broken(src));
	return ret;
}

static int sq_update(void *self, const user *u, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	user copy = *u;
	int src, ret = update_on(c, &copy, err, &src);
	give_back(self, c, ret == ASIDE_EDB && is_broken(src));
	return ret;
}

static int sq_remove(void *self, int64_t id, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	user gone = {.id = id};
	int src, ret = remove_on(c, &gone, err, &src);
	give_back(self, c, ret == ASIDE_EDB && is_broken(src));
	return ret;
}

/* Steps a statement without parameters or rows; SQLite's result code. */
static int step_once(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc;
}

/* A change and its outbox row in one transaction. */
static int sq_change(void *self, user_repo_change what, user *u,
		     int64_t *outbox, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	int src = step_once(c->begin), ret;
	if (src != SQLITE_DONE) {
		ret = db_fail(err, c->db, src, "beginning a transaction");
		give_back(self, c, is_broken(src));
		return ret;
	}
	ret = what == USER_REPO_CREATE	 ? create_on(c, u, err, &src)
	      : what == USER_REPO_UPDATE ? update_on(c, u, err, &src)
					 : remove_on(c, u, err, &src);
	if (ret == ASIDE_OK) {
		sqlite3_bind_int64(c->obx_ins, 1, u->id);
		sqlite3_bind_int64(c->obx_ins, 2, now_us());
		src = sqlite3_step(c->obx_ins);
		if (src == SQLITE_DONE)
			*outbox = sqlite3_last_insert_rowid(c->db);
		else
			ret = db_fail(err, c->db, src, "writing the outbox");
		sqlite3_reset(c->obx_ins);
	}
	if (ret == ASIDE_OK && (src = step_once(c->commit)) != SQLITE_DONE)
		ret = db_fail(err, c->db, src, "committing");
	if (ret != ASIDE_OK)
		step_once(c->rollback);
	give_back(self, c, ret == ASIDE_EDB && is_broken(src));
	return ret;
}

static int sq_pending(void *self, int64_t before_us, int64_t *ids,
		      int64_t *users, int max, int *n, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	sqlite3_bind_int64(c->obx_list, 1, before_us ? before_us : INT64_MAX);
	sqlite3_bind_int(c->obx_list, 2, max);
	int rc, ret = ASIDE_OK;
	*n = 0;
	while ((rc = sqlite3_step(c->obx_list)) == SQLITE_ROW && *n < max) {
		ids[*n] = sqlite3_column_int64(c->obx_list, 0);
		users[*n] = sqlite3_column_int64(c->obx_list, 1);
		(*n)++;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = db_fail(err, c->db, rc, "reading the outbox");
	sqlite3_reset(c->obx_list);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	return ret;
}

static int sq_done(void *self, int64_t outbox, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	sqlite3_bind_int64(c->obx_del, 1, outbox);
	int rc = sqlite3_step(c->obx_del);
	int ret = rc == SQLITE_DONE
		      ? ASIDE_OK
		      : db_fail(err, c->db, rc, "clearing the outbox");
	sqlite3_reset(c->obx_del);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	return ret;
}

static int sq_done_many(void *self, const int64_t *rows, int n,
			aside_error *err)
{
	size_t len;
	char *arr = repo__id_list(rows, n, '[', ']', &len); /* JSON */
	if (!arr)
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	struct conn *c = borrow(self, err);
	if (!c) {
		free(arr);
		return ASIDE_EDB;
	}
	sqlite3_bind_text(c->obx_del_many, 1, arr, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(c->obx_del_many);
	int ret = rc == SQLITE_DONE
		      ? ASIDE_OK
		      : db_fail(err, c->db, rc, "clearing the outbox");
	sqlite3_reset(c->obx_del_many);
	sqlite3_clear_bindings(c->obx_del_many);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	free(arr);
	return ret;
}

static int sq_ping(void *self, aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	int rc = sqlite3_step(c->ping);
	int ret = rc == SQLITE_ROW ? ASIDE_OK : db_fail(err, c->db, rc, "ping");
	sqlite3_reset(c->ping);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	return ret;
}

static int sq_each_id(void *self, int (*fn)(void *arg, int64_t id), void *arg,
		      aside_error *err)
{
	struct conn *c = borrow(self, err);
	if (!c)
		return ASIDE_EDB;
	sqlite3_stmt *st = NULL;
	int rc =
	    sqlite3_prepare_v2(c->db, "SELECT id FROM users", -1, &st, NULL);
	int ret = rc == SQLITE_OK ? ASIDE_OK
				  : db_fail(err, c->db, rc, "listing users");
	while (ret == ASIDE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		ret = fn(arg, sqlite3_column_int64(st, 0));
	if (ret == ASIDE_OK && rc != SQLITE_DONE)
		ret = db_fail(err, c->db, rc, "listing users");
	sqlite3_finalize(st);
	give_back(self, c, ret == ASIDE_EDB && is_broken(rc));
	return ret;
}

static int sq_get0(void *self, int64_t id, user *out)
{
	return sq_get(self, id, out, NULL);
}
static int sq_create0(void *self, user *u)
{
	return sq_create(self, u, NULL);
}
static int sq_update0(void *self, const user *u)
{
	return sq_update(self, u, NULL);
}
static int sq_remove0(void *self, int64_t id)
{
	return sq_remove(self, id, NULL);
}

static void sq_close(void *self)
{
	struct sqlite_repo *r = self;
	if (!r)
		return;
	if (r->pool_ready)
		repo__pool_fini(&r->pool);
	free(r->path);
	free(r);
}

static const user_repo_ops sqlite_ops = {
    .get = sq_get0,
    .create = sq_create0,
    .update = sq_update0,
    .remove = sq_remove0,
    .close = sq_close,
    .get_ex = sq_get,
    .create_ex = sq_create,
    .update_ex = sq_update,
    .remove_ex = sq_remove,
    .ping = sq_ping,
    .logged_change = sq_change,
    .outbox_pending = sq_pending,
    .outbox_done = sq_done,
    .outbox_done_many = sq_done_many,
    .each_id = sq_each_id,
};

int repo__sqlite_open(const char *path, user_repo *out, aside_error *err)
{
	if (!*path)
		return repo__fail(err, ASIDE_EURL,
				  "sqlite: URL needs a path: sqlite:PATH or "
				  "sqlite::memory:");
	struct sqlite_repo *r = calloc(1, sizeof(*r));
	if (!r || !(r->path = strdup(path))) {
		free(r);
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	r->max = strcmp(path, ":memory:") == 0 ? 1 : POOL_MAX;
	if (repo__pool_init(&r->pool, r->max, pool_open, pool_close, r) !=
	    ASIDE_OK) {
		sq_close(r);
		return repo__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	r->pool_ready = true;
	struct conn *c = conn_open(r, true, err);
	if (!c) {
		sq_close(r);
		return ASIDE_EDB;
	}
	repo__pool_add(&r->pool, c);
	out->ops = &sqlite_ops;
	out->self = r;
	return ASIDE_OK;
}
