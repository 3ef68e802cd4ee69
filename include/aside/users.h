/*
 * users.h -- the seed's UserService on libaside: users cached aside of a
 * database (SQLite or PostgreSQL), with single-flight loads, invalidation on
 * write and metrics.  Every function is safe to call from many threads on
 * the same handle.
 */
#ifndef ASIDE_USERS_H
#define ASIDE_USERS_H

#include <aside/aside.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define USER_NAME_MAX 255
#define USER_EMAIL_MAX 254

typedef struct user { /* seed: User */
	int64_t id;   /* assigned by the store on create */
	char name[USER_NAME_MAX + 1];
	char email[USER_EMAIL_MAX + 1];
	int64_t created_at_us; /* µs since the Unix epoch, UTC; JSON
				  "created_at", RFC 3339 */
	/* Appended: the row's version, 1 when created, increased by every
	 * update (JSON "version"); 0 where unknown.  Ignored on writes. */
	int64_t version;
} user; /* more fields may be appended */

/* A change to a user, for a repository's outbox (below). */
typedef enum user_repo_change {
	USER_REPO_CREATE,
	USER_REPO_UPDATE,
	USER_REPO_REMOVE
} user_repo_change;

/*
 * seed: UserRepository.  Every member returns ASIDE_OK, ASIDE_NOT_FOUND or a
 * negative error; implementations must be thread-safe.
 */
typedef struct user_repo_ops {
	int (*get)(void *self, int64_t id, user *out);
	int (*create)(void *self,
		      user *u); /* sets u->id and u->created_at_us */
	int (*update)(void *self, const user *u);
	int (*remove)(void *self, int64_t id);
	void (*close)(void *self);
	/*
	 * Appended to the seed's interface, each optional (NULL): the same
	 * operations with detail about a failure in err, and a liveness check
	 * of the database.  The service prefers them when present.
	 */
	int (*get_ex)(void *self, int64_t id, user *out, aside_error *err);
	int (*create_ex)(void *self, user *u, aside_error *err);
	int (*update_ex)(void *self, const user *u, aside_error *err);
	int (*remove_ex)(void *self, int64_t id, aside_error *err);
	int (*ping)(void *self, aside_error *err);
	/*
	 * Appended, optional, all three or none: an outbox, for durable
	 * invalidation (docs/consistency.md).  With them, and a cache with a
	 * shared tier, the service writes every change through logged_change
	 * and replays what the cache did not hear.
	 *
	 * logged_change makes the change and, in the same transaction, writes
	 * an outbox row naming the user; *row is the row's id, never 0.  CREATE
	 * and UPDATE set u's id, created_at_us and version as create and update
	 * do (UPDATE: version is the updated row's new version); REMOVE takes
	 * the id in u->id and sets u->version to the removed row's last one.
	 * outbox_pending lists up to max rows written before before_us (µs
	 * since the epoch; 0: any), oldest first, their ids in rows and their
	 * users' ids in users; *n says how many.  outbox_done deletes a row.
	 */
	int (*logged_change)(void *self, user_repo_change what, user *u,
			     int64_t *row, aside_error *err);
	int (*outbox_pending)(void *self, int64_t before_us, int64_t *rows,
			      int64_t *users, int max, int *n,
			      aside_error *err);
	int (*outbox_done)(void *self, int64_t row, aside_error *err);
	/*
	 * Appended, optional (NULL: outbox_done, row by row): deletes the n
	 * rows in one statement, absent ones included.  After an outage the
	 * outbox may hold a row for every write made meanwhile.
	 */
	int (*outbox_done_many)(void *self, const int64_t *rows, int n,
				aside_error *err);
	/*
	 * Appended, optional: calls fn with the id of every user, stopping at
	 * the first status fn returns that is not ASIDE_OK (and returning
	 * it).  For the gate (user_service_gate).
	 */
	int (*each_id)(void *self, int (*fn)(void *arg, int64_t id), void *arg,
		       aside_error *err);
} user_repo_ops; /* more members may be appended after these */

typedef struct user_repo {
	const user_repo_ops *ops;
	void *self;
} user_repo;

/*
 * Opens a repository: "sqlite:PATH", "sqlite::memory:" or "postgresql://...".
 * The schema is created if missing.  Returns ASIDE_OK, ASIDE_EURL or
 * ASIDE_EDB with the backend's error in err.
 */
int user_repo_open(const char *url, user_repo *out, aside_error *err);

/* Closes the repository (calls ops->close).  Accepts a zeroed repo. */
void user_repo_close(user_repo *repo);

typedef struct user_service user_service; /* seed: UserService */

typedef struct user_service_metrics { /* seed: ServiceMetrics */
	uint64_t cache_hits, cache_misses, db_loads, shared_loads, load_errors;
	double hit_rate, miss_rate; /* hits / (hits + misses), in [0,1] */
	double avg_load_time_us;
	int64_t cache_size; /* entries held in process */
} user_service_metrics;	    /* more fields may be appended */

/*
 * seed: NewUserService.  Neither db nor cache is owned: both must outlive
 * the service.  Returns NULL when out of memory.
 */
user_service *user_service_new(user_repo db, aside_cache *cache);

/*
 * Puts a Bloom gate before the database (aside_cache_gate on namespace
 * "user"): a read of an id no user has, once the L1 misses, answers
 * ASIDE_NOT_FOUND without a query (about 1% of such ids still get one).
 * The gate is filled from the repository's each_id, now and again whenever
 * the cache may have missed another process's write, and every refill_ms
 * if that is not 0 (for users written by other programs, not through a
 * service); creates reach it through their invalidation.  expected_users
 * sizes it (10 bits a user).  Returns ASIDE_OK, ASIDE_EINVAL (the
 * repository cannot list its users, or the cache cannot have a gate: err
 * says why), ASIDE_ENOMEM, or the database's error.
 */
int user_service_gate(user_service *s, uint64_t expected_users,
		      int64_t refill_ms, aside_error *err);

/*
 * Cache warming: reads the max_users users with the highest ids (the
 * newest) through the cache, as user_service_get would, so that they are
 * cached before the first request asks (in every tier: a process started
 * beside others finds most of them in Redis).  Lists the ids with the
 * repository's each_id.  *warmed (may be NULL) says how many were read.
 * Returns ASIDE_OK, ASIDE_EINVAL (the repository cannot list its users),
 * or the first error a read met (the users before it stay cached).
 */
int user_service_warm(user_service *s, size_t max_users, size_t *warmed,
		      aside_error *err);

/*
 * seed: GetUser.  ASIDE_OK and *out filled, ASIDE_NOT_FOUND, ASIDE_EBADID for
 * id <= 0, or an error (the database's, or ASIDE_ETIMEDOUT).  Every field
 * is written, each string up to its NUL; the bytes after a NUL are left as
 * they were (clearing all 536 bytes cost a hit 6 to 10%).
 */
int user_service_get(user_service *s, int64_t id, user *out);

/*
 * seed: CreateUser.  Validates the name and email (nothing is written when
 * they are invalid), stores the user and sets u->id and u->created_at_us.
 */
int user_service_create(user_service *s, user *u);

/*
 * seed: UpdateUser.  Name and email of u->id; ASIDE_NOT_FOUND if absent.
 * A database error may come after the change committed (its answer lost):
 * the user's key is invalidated on every failure but ASIDE_NOT_FOUND.
 * ASIDE_OK only once the change has committed.
 */
int user_service_update(user_service *s, const user *u);

/* seed: DeleteUser.  ASIDE_NOT_FOUND if absent; errors as for update. */
int user_service_delete(user_service *s, int64_t id);

/* seed: GetMetrics. */
user_service_metrics user_service_get_metrics(user_service *s);

/* Frees the service; closes neither db nor cache.  Accepts NULL. */
void user_service_free(user_service *s);

/* The same four operations with detail about a failure in err (may be NULL). */
int user_service_get_ex(user_service *s, int64_t id, user *out,
			aside_error *err);
int user_service_create_ex(user_service *s, user *u, aside_error *err);
int user_service_update_ex(user_service *s, const user *u, aside_error *err);
int user_service_delete_ex(user_service *s, int64_t id, aside_error *err);

/*
 * The user as JSON (the shape of user_to_json), copied from the cache
 * without decoding: what an HTTP server sends.  On ASIDE_OK, buf holds
 * *len bytes and a NUL; ASIDE_ETOOBIG if cap is too small (*len says how
 * much is needed); otherwise as user_service_get.
 */
int user_service_get_json(user_service *s, int64_t id, char *buf, size_t cap,
			  size_t *len, aside_error *err);

/* Is the database answering?  ASIDE_OK or its error (for readiness). */
int user_service_ping(user_service *s, aside_error *err);

/*
 * The cache key of a user ("user:<id>") into buf; returns its length.  May
 * write any of buf's 32 bytes after the key's NUL.
 */
size_t user_cache_key(int64_t id, char buf[32]);

/* The key related to every user key, invalidated by every write. */
#define USER_ALL_KEY "users:all"

/*
 * Validation, as create and update apply it: ASIDE_OK, ASIDE_EBADNAME or
 * ASIDE_EBADEMAIL, with what is wrong in err.  A name is 1 to
 * USER_NAME_MAX bytes of valid UTF-8, not only spaces, without control
 * characters (C0, DEL, C1).  A user read back (from the database or a
 * cache) is held only to the length and UTF-8 rules: rows stored before
 * the others, or by other programs, still read.
 */
int user_validate(const user *u, aside_error *err);

/*
 * JSON codec.  user_to_json writes
 *   {"id":1,"name":"...","email":"...","created_at":"2026-01-02T03:04:05.000006Z"}
 * and returns a malloc'd NUL-terminated string (*len gets its length), or
 * NULL when out of memory.  user_from_json parses that shape (created_at in
 * any RFC 3339 offset; "id" and "created_at" optional when `partial`, for
 * request bodies) and validates the record: ASIDE_OK, ASIDE_EBADJSON,
 * ASIDE_EBADNAME, ASIDE_EBADEMAIL or ASIDE_EBADID, with detail in err.
 */
char *user_to_json(const user *u, size_t *len);
int user_from_json(const char *json, size_t len, int partial, user *out,
		   aside_error *err);

/* RFC 3339 UTC with microseconds; buf of at least 32 bytes.  Returns length. */
size_t user_format_time(int64_t us, char *buf, size_t cap);
/*
 * Parses RFC 3339 into µs since the epoch.  ASIDE_OK or ASIDE_EBADJSON,
 * also for an instant that its offset carries outside the years 0000 to
 * 9999 (user_format_time could not write it back).
 */
int user_parse_time(const char *s, size_t len, int64_t *us);

#ifdef __cplusplus
}
#endif
#endif /* ASIDE_USERS_H */
