/*
 * test_user_service.c -- the seed's three tests and the rest of the
 * UserService contract, on the fake repository, SQLite in memory and an
 * SQLite file (WAL), all behind a probe that counts database reads; and a
 * real SQLite file that cannot be used, or is locked by another writer.
 */
#include "../support/fake_repo.h"
#include "../support/servers.h"

#include <aside/users.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* cmocka needs the headers above */
#include <cmocka.h>

typedef void (*test_fn)(void **);

/* One test on one database and one cache: a cell of the test matrix. */
typedef struct variant {
	const char *db;	   /* "fake", "memory", "file", "pg" */
	const char *cache; /* "mem", "redis", "redis-l1" */
	test_fn fn;
} variant;

typedef struct fx {
	const variant *v;
	fake_repo fake;
	user_repo db;
	probe_repo probe;
	aside_cache *cache;
	user_service *svc;
	char dir[64];
	bool has_l1;
	bool skip; /* its server is not configured */
} fx;

/* Servers missing: skipped, unless the run requires them (make test). */
static int unavailable(void **state, fx *f, const char *what)
{
	if (getenv("ASIDE_TEST_REQUIRE_SERVERS"))
		fail_msg("%s is required but not available", what);
	f->skip = true;
	*state = f;
	return 0;
}

static void run_cell(void **state)
{
	fx *f = *state;
	if (f->skip)
		skip();
	f->v->fn(state);
}

#define REDIS_DB 1 /* this program's Redis database */

static int setup(void **state)
{
	const variant *v = *state;
	fx *f = calloc(1, sizeof(*f));
	f->v = v;
	aside_error err;
	char url[512];
	const char *cache_url = "mem://?capacity=1000";
	if (strcmp(v->cache, "mem") != 0) {
		cache_url = test_redis_url(
		    url, REDIS_DB,
		    strcmp(v->cache, "redis-l1") == 0 ? "l1=1000" : NULL);
		if (!cache_url || !test_redis_flush(REDIS_DB))
			return unavailable(state, f, "Redis");
	}
	f->has_l1 = strcmp(v->cache, "redis") != 0;
	assert_int_equal(aside_cache_open(cache_url, &f->cache, &err),
			 ASIDE_OK);

	if (!strcmp(v->db, "fake")) {
		fake_repo_init(&f->fake);
		f->db = fake_repo_handle(&f->fake);
	} else {
		char dburl[512];
		const char *u = dburl;
		if (!strcmp(v->db, "pg")) {
			u = test_pg_url(dburl, "aside_test_users", NULL);
			if (!u || !test_pg_reset(u)) {
				aside_cache_close(f->cache);
				f->cache = NULL;
				return unavailable(state, f, "PostgreSQL");
			}
		} else if (!strcmp(v->db, "file")) {
			snprintf(f->dir, sizeof(f->dir),
				 "/tmp/aside-test-XXXXXX");
			assert_non_null(mkdtemp(f->dir));
			snprintf(dburl, sizeof(dburl), "sqlite:%s/users.db",
				 f->dir);
		} else {
			snprintf(dburl, sizeof(dburl), "sqlite::memory:");
		}
		if (user_repo_open(u, &f->db, &err) != ASIDE_OK)
			fail_msg("open %s: %s", u, err.message);
	}
	probe_repo_init(&f->probe, f->db);
	f->svc = user_service_new(probe_repo_handle(&f->probe), f->cache);
	assert_non_null(f->svc);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	if (f->skip) {
		aside_cache_close(f->cache);
		free(f);
		return 0;
	}
	user_service_free(f->svc);
	aside_cache_close(f->cache);
	probe_repo_fini(&f->probe);
	if (!strcmp(f->v->db, "fake"))
		fake_repo_fini(&f->fake);
	else
		user_repo_close(&f->db);
	if (f->dir[0]) {
		char p[128];
		const char *sfx[] = {"", "-wal", "-shm"};
		for (int i = 0; i < 3; i++) {
			snprintf(p, sizeof(p), "%s/users.db%s", f->dir, sfx[i]);
			unlink(p);
		}
		rmdir(f->dir);
	}
	free(f);
	return 0;
}

static user new_user(fx *f, const char *name, const char *email)
{
	user u;
	memset(&u, 0, sizeof(u));
	snprintf(u.name, sizeof(u.name), "%s", name);
	snprintf(u.email, sizeof(u.email), "%s", email);
	assert_int_equal(user_service_create(f->svc, &u), ASIDE_OK);
	assert_true(u.id > 0);
	assert_true(u.created_at_us > 0);
	return u;
}

/* ---- the seed's three tests -------------------------------------------- */

static void seed_cache_aside(void **state)
{
	fx *f = *state;
	user alice = new_user(f, "Alice", "alice@example.com"), got;

	assert_int_equal(user_service_get(f->svc, alice.id, &got), ASIDE_OK);
	assert_int_equal(f->probe.gets, 1);
	user_service_metrics m = user_service_get_metrics(f->svc);
	assert_int_equal(m.cache_misses, 1);
	assert_int_equal(m.db_loads, 1);
	printf("    First access - cache miss, loaded from DB\n");

	assert_int_equal(user_service_get(f->svc, alice.id, &got), ASIDE_OK);
	assert_int_equal(f->probe.gets, 1);
	assert_string_equal(got.name, "Alice");
	assert_string_equal(got.email, "alice@example.com");
	assert_int_equal(got.created_at_us, alice.created_at_us);
	m = user_service_get_metrics(f->svc);
	assert_int_equal(m.cache_hits, 1);
	printf("    Second access - cache hit, served from cache\n");

	assert_true(m.hit_rate == 0.5);
	assert_true(m.miss_rate == 0.5);
	assert_int_equal(m.cache_size, f->has_l1 ? 1 : 0);
	printf("    Cache hit rate: %.2f%%\n", m.hit_rate * 100);
}

typedef struct reader {
	user_service *svc;
	int64_t id;
	int rc;
	user u;
} reader;

static void *read_user(void *arg)
{
	reader *r = arg;
	r->rc = user_service_get(r->svc, r->id, &r->u);
	return NULL;
}

static void seed_single_flight(void **state)
{
	fx *f = *state;
	user bob = new_user(f, "Bob", "bob@example.com");
	enum { N = 10 };
	pthread_t th[N];
	reader rd[N];
	probe_hold_next_get(&f->probe, bob.id);
	for (int i = 0; i < N; i++) {
		rd[i] = (reader){f->svc, bob.id, -1, {0}};
		pthread_create(&th[i], NULL, read_user, &rd[i]);
		if (i == 0)
			probe_wait_held(&f->probe);
	}
	assert_true(wait_for_waiters(f->cache, N - 1));
	probe_release(&f->probe);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(rd[i].rc, ASIDE_OK);
		assert_string_equal(rd[i].u.name, "Bob");
	}
	assert_int_equal(f->probe.gets, 1);
	printf("    %d concurrent requests resulted in %u DB query\n", N,
	       f->probe.gets);
	user_service_metrics m = user_service_get_metrics(f->svc);
	assert_int_equal(m.db_loads, 1);
	assert_int_equal(m.shared_loads, N - 1);
	printf("    Single flight pattern working correctly\n");
}

static void seed_update_invalidation(void **state)
{
	fx *f = *state;
	user carol = new_user(f, "Carol", "carol@example.com"), got;
	assert_int_equal(user_service_get(f->svc, carol.id, &got), ASIDE_OK);
	assert_int_equal(user_service_get(f->svc, carol.id, &got), ASIDE_OK);
	assert_int_equal(f->probe.gets, 1);
	printf("    User created and cached\n");

	user changed = carol;
	snprintf(changed.name, sizeof(changed.name), "Carol Updated");
	assert_int_equal(user_service_update(f->svc, &changed), ASIDE_OK);
	char key[32];
	aside_value *v;
	size_t klen = user_cache_key(carol.id, key);
	assert_int_equal(aside_cache_peek(f->cache, key, klen, &v),
			 ASIDE_NOT_FOUND);
	printf("    User updated, cache invalidated\n");

	assert_int_equal(user_service_get(f->svc, carol.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Carol Updated");
	assert_int_equal(got.created_at_us, carol.created_at_us);
	assert_int_equal(f->probe.gets, 2);
	printf("    Fresh data loaded from DB after update\n");
}

/* ---- the rest of the contract ------------------------------------------ */

static void invalid_records_write_nothing(void **state)
{
	fx *f = *state;
	user u;
	memset(&u, 0, sizeof(u));
	snprintf(u.email, sizeof(u.email), "a@b.c");
	aside_error err;
	assert_int_equal(user_service_create_ex(f->svc, &u, &err),
			 ASIDE_EBADNAME);
	assert_non_null(strstr(err.message, "name"));
	snprintf(u.name, sizeof(u.name), "Dan");
	snprintf(u.email, sizeof(u.email), "not-an-address");
	assert_int_equal(user_service_create_ex(f->svc, &u, &err),
			 ASIDE_EBADEMAIL);
	assert_non_null(strstr(err.message, "email"));
	snprintf(u.name, sizeof(u.name), "\xc3\x28");
	snprintf(u.email, sizeof(u.email), "a@b.c");
	assert_int_equal(user_service_create(f->svc, &u), ASIDE_EBADNAME);
	assert_int_equal(u.id, 0);

	user ok = new_user(f, "Erin", "erin@example.com");
	unsigned writes = f->probe.writes;
	user bad = ok;
	snprintf(bad.email, sizeof(bad.email), "erin@");
	assert_int_equal(user_service_update(f->svc, &bad), ASIDE_EBADEMAIL);
	assert_int_equal(f->probe.writes, writes);
	user got;
	assert_int_equal(user_service_get(f->svc, ok.id, &got), ASIDE_OK);
	assert_string_equal(got.email, "erin@example.com");
}

static void missing_users_and_bad_ids(void **state)
{
	fx *f = *state;
	user u;
	assert_int_equal(user_service_get(f->svc, 999, &u), ASIDE_NOT_FOUND);
	assert_int_equal(user_service_get(f->svc, 0, &u), ASIDE_EBADID);
	assert_int_equal(user_service_get(f->svc, -1, &u), ASIDE_EBADID);
	assert_int_equal(user_service_delete(f->svc, 999), ASIDE_NOT_FOUND);
	assert_int_equal(user_service_delete(f->svc, 0), ASIDE_EBADID);
	memset(&u, 0, sizeof(u));
	u.id = 999;
	snprintf(u.name, sizeof(u.name), "Nobody");
	snprintf(u.email, sizeof(u.email), "nobody@example.com");
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_NOT_FOUND);
	u.id = -5;
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_EBADID);
	/* NOT_FOUND is not an error and is not cached. */
	assert_int_equal(user_service_get(f->svc, 999, &u), ASIDE_NOT_FOUND);
	assert_int_equal(f->probe.gets, 2);
	user_service_metrics m = user_service_get_metrics(f->svc);
	assert_int_equal(m.load_errors, 0);
}

/*
 * A row whose name the write rules refuse (a tab, written by another
 * program or before the rules): it reads, and caches, in every tier; a
 * write through the service must mend it.
 */
static void stored_names_outside_the_rules_still_read(void **state)
{
	fx *f = *state;
	user u, got;
	memset(&u, 0, sizeof(u));
	snprintf(u.name, sizeof(u.name), "Tab\there");
	snprintf(u.email, sizeof(u.email), "tab@example.com");
	assert_int_equal(f->db.ops->create(f->db.self, &u), ASIDE_OK);
	int gets = atomic_load(&f->probe.gets);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(user_service_get(f->svc, u.id, &got),
				 ASIDE_OK);
		assert_string_equal(got.name, "Tab\there");
	}
	assert_int_equal(atomic_load(&f->probe.gets), gets + 1);
	aside_metrics m;
	aside_cache_metrics(f->cache, &m);
	assert_int_equal(m.corrupt, 0);
	aside_error err;
	assert_int_equal(user_service_update_ex(f->svc, &got, &err),
			 ASIDE_EBADNAME);
	assert_non_null(strstr(err.message, "control character U+0009"));
	snprintf(got.name, sizeof(got.name), "Tab here");
	assert_int_equal(user_service_update(f->svc, &got), ASIDE_OK);
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Tab here");
}

/*
 * negative_ttl_ms: a read of an id no user has is cached as an absence, so
 * the next one asks no database; creating that user, and deleting one,
 * end or start an absence at once.  On a cache of its own with the option.
 */
static void absences_cached_until_a_create(void **state)
{
	fx *f = *state;
	aside_error err;
	char url[512];
	const char *cache_url = "mem://?capacity=1000&negative_ttl_ms=60000";
	if (strcmp(f->v->cache, "mem") != 0)
		cache_url = test_redis_url(url, REDIS_DB,
					   strcmp(f->v->cache, "redis-l1") == 0
					       ? "l1=1000&negative_ttl_ms=60000"
					       : "negative_ttl_ms=60000");
	aside_cache *cache;
	assert_int_equal(aside_cache_open(cache_url, &cache, &err), ASIDE_OK);
	user_service *svc =
	    user_service_new(probe_repo_handle(&f->probe), cache);
	assert_non_null(svc);
	user a = new_user(f, "Ida", "ida@example.com"), got;
	int gets = atomic_load(&f->probe.gets);
	assert_int_equal(user_service_get(svc, a.id + 1, &got),
			 ASIDE_NOT_FOUND);
	assert_int_equal(user_service_get(svc, a.id + 1, &got),
			 ASIDE_NOT_FOUND);
	assert_int_equal(atomic_load(&f->probe.gets), gets + 1);
	/* The next user created takes that id: the absence goes with its
	 * create's invalidation. */
	user b;
	memset(&b, 0, sizeof(b));
	snprintf(b.name, sizeof(b.name), "Jo");
	snprintf(b.email, sizeof(b.email), "jo@example.com");
	assert_int_equal(user_service_create(svc, &b), ASIDE_OK);
	assert_int_equal(b.id, a.id + 1);
	assert_int_equal(user_service_get(svc, b.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Jo");
	assert_int_equal(atomic_load(&f->probe.gets), gets + 2);
	/* Deleted: one query finds it gone, the next none. */
	assert_int_equal(user_service_delete(svc, b.id), ASIDE_OK);
	assert_int_equal(user_service_get(svc, b.id, &got), ASIDE_NOT_FOUND);
	assert_int_equal(user_service_get(svc, b.id, &got), ASIDE_NOT_FOUND);
	assert_int_equal(atomic_load(&f->probe.gets), gets + 3);
	aside_metrics m;
	aside_cache_metrics(cache, &m);
	assert_int_equal(m.negative_hits, 2);
	user_service_metrics sm = user_service_get_metrics(svc);
	assert_int_equal(sm.load_errors, 0);
	user_service_free(svc);
	aside_cache_close(cache);
}

/*
 * The gate: a read of an id no user has costs no query; users created
 * before it (its fill) and after it (their invalidation) get through, and
 * a deleted user is not found by the database.  Not on the fake repository
 * (it cannot list its users), nor on Redis without an L1 (it would not hear
 * other processes' creates).
 */
static void gate_spares_the_database(void **state)
{
	fx *f = *state;
	user a = new_user(f, "Gia", "gia@example.com"), got;
	aside_error err;
	int rc = user_service_gate(f->svc, 1000, 0, &err);
	if (!strcmp(f->v->db, "fake") || !f->has_l1) {
		assert_int_equal(rc, ASIDE_EINVAL);
		assert_true(strlen(err.message) > 0);
		return;
	}
	assert_int_equal(rc, ASIDE_OK);
	int gets = atomic_load(&f->probe.gets);
	assert_int_equal(user_service_get(f->svc, a.id + 1000, &got),
			 ASIDE_NOT_FOUND);
	assert_int_equal(user_service_get(f->svc, a.id + 1001, &got),
			 ASIDE_NOT_FOUND);
	assert_int_equal(atomic_load(&f->probe.gets), gets);
	assert_int_equal(user_service_get(f->svc, a.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Gia");
	user b = new_user(f, "Hal", "hal@example.com");
	assert_int_equal(user_service_get(f->svc, b.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Hal");
	assert_int_equal(user_service_delete(f->svc, a.id), ASIDE_OK);
	gets = atomic_load(&f->probe.gets);
	assert_int_equal(user_service_get(f->svc, a.id, &got), ASIDE_NOT_FOUND);
	assert_int_equal(atomic_load(&f->probe.gets), gets + 1);
	aside_metrics m;
	aside_cache_metrics(f->cache, &m);
	assert_int_equal(m.gate_rejects, 2);
}

/* Drops the users' keys from the cache, so that each read is a load. */
static void forget_users(fx *f, const user *us, int n)
{
	for (int i = 0; i < n; i++) {
		char key[32];
		size_t klen = user_cache_key(us[i].id, key);
		assert_int_equal(
		    aside_cache_invalidate(f->cache, key, klen, NULL),
		    ASIDE_OK);
	}
}

/*
 * Warming reads the newest users through the cache, so that they hit;
 * whatever order the database lists its users in.
 */
static void warm_caches_the_newest_users(void **state)
{
	fx *f = *state;
	user us[6], got;
	for (int i = 0; i < 6; i++) {
		char name[16], email[32];
		snprintf(name, sizeof(name), "Warm %d", i);
		snprintf(email, sizeof(email), "warm%d@example.com", i);
		us[i] = new_user(f, name, email);
	}
	for (int scrambled = 0; scrambled < 2; scrambled++) {
		forget_users(f, us, 6);
		atomic_store(&f->probe.scramble_ids, scrambled);
		size_t warmed = 99;
		aside_error err;
		int rc = user_service_warm(f->svc, 3, &warmed, &err);
		if (!strcmp(f->v->db, "fake")) {
			assert_int_equal(rc, ASIDE_EINVAL);
			assert_int_equal(warmed, 0);
			return;
		}
		assert_int_equal(rc, ASIDE_OK);
		assert_int_equal(warmed, 3);
		unsigned gets = atomic_load(&f->probe.gets);
		for (int i = 3; i < 6; i++) {
			assert_int_equal(
			    user_service_get(f->svc, us[i].id, &got), ASIDE_OK);
			assert_string_equal(got.name, us[i].name);
		}
		assert_int_equal(atomic_load(&f->probe.gets), gets);
		assert_int_equal(user_service_get(f->svc, us[2].id, &got),
				 ASIDE_OK);
		assert_int_equal(atomic_load(&f->probe.gets), gets + 1);
		/* More than there are: every user, once. */
		assert_int_equal(user_service_warm(f->svc, 1000, &warmed, &err),
				 ASIDE_OK);
		assert_int_equal(warmed, 6);
		assert_int_equal(user_service_warm(f->svc, 0, &warmed, &err),
				 ASIDE_EINVAL);
	}
}

static void delete_invalidates(void **state)
{
	fx *f = *state;
	user u = new_user(f, "Fay", "fay@example.com"), got;
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_int_equal(user_service_delete(f->svc, u.id), ASIDE_OK);
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_NOT_FOUND);
	assert_int_equal(user_service_delete(f->svc, u.id), ASIDE_NOT_FOUND);
}

/*
 * The longest valid name (255 bytes, multibyte UTF-8 at the end) and email
 * (254 bytes) come back whole from the database and from every cache tier
 * (the L1 keeps them packed back to back), and everything past each
 * string's NUL is zero, as in a struct that was cleared first.
 */
static void longest_fields_round_trip(void **state)
{
	fx *f = *state;
	user u;
	memset(&u, 0, sizeof(u));
	memset(u.name, 'n', 251);
	memcpy(u.name + 251, "\xc3\xa9\xc3\xa9", 4); /* "éé" */
	size_t n = 0;
	u.email[n++] = 'a';
	u.email[n++] = '@';
	for (int label = 0; label < 4; label++) {
		int len = label < 3 ? 63 : 60;
		memset(u.email + n, 'd', (size_t)len);
		n += (size_t)len;
		if (label < 3)
			u.email[n++] = '.';
	}
	assert_int_equal(strlen(u.name), USER_NAME_MAX);
	assert_int_equal(strlen(u.email), USER_EMAIL_MAX);
	assert_int_equal(user_service_create(f->svc, &u), ASIDE_OK);
	int64_t version = -1; /* the fake repository keeps none */
	for (int round = 0; round < 3; round++) {
		user got;
		memset(&got, 0xa5, sizeof(got));
		assert_int_equal(user_service_get(f->svc, u.id, &got),
				 ASIDE_OK);
		assert_int_equal(got.id, u.id);
		assert_string_equal(got.name, u.name);
		assert_string_equal(got.email, u.email);
		assert_int_equal(got.created_at_us, u.created_at_us);
		if (round == 0)
			version = got.version;
		assert_int_equal(got.version, version);
		/* id, then both strings filling their arrays to the NUL */
		assert_memory_equal(&got, &u,
				    offsetof(user, email) + sizeof(u.email));
	}
	assert_int_equal(f->probe.gets, 1);

	/* A short name after a long one, read into the struct that held the
	 * long one: each string ends at its own NUL (the bytes after it are
	 * not written, users.h). */
	user got;
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	u.name[0] = 'Z';
	u.name[1] = '\0';
	strcpy(u.email, "z@d.example");
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_OK);
	for (int round = 0; round < 2; round++) { /* the miss, then a hit */
		assert_int_equal(user_service_get(f->svc, u.id, &got),
				 ASIDE_OK);
		assert_string_equal(got.name, "Z");
		assert_string_equal(got.email, "z@d.example");
		assert_int_equal(got.id, u.id);
		assert_int_equal(got.created_at_us, u.created_at_us);
	}
}

static int load_list(void *arg, const char *key, size_t klen, aside_value **out,
		     aside_error *err)
{
	(void)arg;
	(void)err;
	return aside_value_new(key, klen, "[]", 2, out);
}

static bool list_cached(fx *f)
{
	aside_value *v;
	if (aside_cache_peek(f->cache, USER_ALL_KEY, strlen(USER_ALL_KEY),
			     &v) != ASIDE_OK)
		return false;
	aside_value_unref(v);
	return true;
}

static void fill_list(fx *f)
{
	aside_loader ld = {load_list, NULL, NULL};
	aside_value *v;
	assert_int_equal(aside_cache_get(f->cache, USER_ALL_KEY,
					 strlen(USER_ALL_KEY), &ld, &v, NULL),
			 ASIDE_OK);
	aside_value_unref(v);
	assert_true(list_cached(f));
}

static void versions_grow_with_writes(void **state)
{
	fx *f = *state;
	if (strcmp(f->v->db, "fake") == 0)
		skip(); /* the fake repository keeps no versions */
	user u = new_user(f, "Vera", "vera@example.com"), got;
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_int_equal(got.version, 1);
	snprintf(u.name, sizeof(u.name), "Vera 2");
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_OK);
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_OK);
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_int_equal(got.version, 3);
	/* The cached JSON says so too, and decodes back. */
	char json[512];
	size_t len;
	assert_int_equal(
	    user_service_get_json(f->svc, u.id, json, sizeof(json), &len, NULL),
	    ASIDE_OK);
	assert_non_null(strstr(json, "\"version\":3"));
	user back;
	assert_int_equal(user_from_json(json, len, 0, &back, NULL), ASIDE_OK);
	assert_int_equal(back.version, 3);
}

/*
 * A row no write through the service stores (a name that is not UTF-8,
 * put into the database by something else) cannot be cached as JSON: the
 * read is a database error that says so, not "out of memory", and nothing
 * is cached.
 */
static void unencodable_rows_are_database_errors(void **state)
{
	fx *f = *state;
	if (strcmp(f->v->db, "fake") != 0)
		skip(); /* only the fake takes a row past the service */
	user u = new_user(f, "Ivo", "ivo@example.com"), got;
	pthread_mutex_lock(&f->fake.lock);
	memcpy(f->fake.rows[u.id].name, "Iv\xc3", 4); /* a cut sequence */
	pthread_mutex_unlock(&f->fake.lock);
	aside_error err;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(user_service_get_ex(f->svc, u.id, &got, &err),
				 ASIDE_EDB);
		assert_non_null(strstr(err.message, "not valid UTF-8"));
	}
	assert_int_equal(f->probe.gets, 2); /* nothing was cached */
}

static void writes_invalidate_users_all(void **state)
{
	fx *f = *state;
	fill_list(f);
	user u = new_user(f, "Joe", "joe@example.com");
	assert_false(list_cached(f));
	fill_list(f);
	snprintf(u.name, sizeof(u.name), "Joe 2");
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_OK);
	assert_false(list_cached(f));
	fill_list(f);
	assert_int_equal(user_service_delete(f->svc, u.id), ASIDE_OK);
	assert_false(list_cached(f));
	/* A failed write invalidates nothing. */
	fill_list(f);
	assert_int_equal(user_service_delete(f->svc, u.id), ASIDE_NOT_FOUND);
	assert_true(list_cached(f));
}

static void writer_reads_its_write_during_a_slow_load(void **state)
{
	fx *f = *state;
	user g = new_user(f, "Gus", "gus@example.com"), got;
	/* A reader loads the old row and is held in the database. */
	probe_hold_next_get(&f->probe, g.id);
	pthread_t th;
	reader old = {f->svc, g.id, -1, {0}};
	pthread_create(&th, NULL, read_user, &old);
	probe_wait_held(&f->probe);
	/* The writer commits and invalidates... */
	user changed = g;
	snprintf(changed.name, sizeof(changed.name), "Gus 2");
	assert_int_equal(user_service_update(f->svc, &changed), ASIDE_OK);
	/* ...and reads its own write at once, without joining the held load
	 * (joining would block here until the release below). */
	assert_int_equal(user_service_get(f->svc, g.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Gus 2");
	assert_int_equal(f->probe.gets, 2);
	probe_release(&f->probe);
	pthread_join(th, NULL);
	assert_int_equal(old.rc, ASIDE_OK);
	assert_string_equal(old.u.name, "Gus"); /* began before the write */
	/* The held load's old row was not stored over the new one. */
	assert_int_equal(user_service_get(f->svc, g.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Gus 2");
	assert_int_equal(f->probe.gets, 2);
}

static void stale_load_is_never_stored(void **state)
{
	fx *f = *state;
	user h = new_user(f, "Hal", "hal@example.com"), got;
	probe_hold_next_get(&f->probe, h.id);
	pthread_t th;
	reader old = {f->svc, h.id, -1, {0}};
	pthread_create(&th, NULL, read_user, &old);
	probe_wait_held(&f->probe);
	user changed = h;
	snprintf(changed.email, sizeof(changed.email), "hal@example.net");
	assert_int_equal(user_service_update(f->svc, &changed), ASIDE_OK);
	probe_release(&f->probe);
	pthread_join(th, NULL);
	assert_string_equal(old.u.email, "hal@example.com");
	aside_metrics m;
	aside_cache_metrics(f->cache, &m);
	assert_int_equal(m.fills_voided, 1);
	assert_int_equal(user_service_get(f->svc, h.id, &got), ASIDE_OK);
	assert_string_equal(got.email, "hal@example.net");
	assert_int_equal(f->probe.gets, 2);
}

static void database_errors_are_reported_not_cached(void **state)
{
	fx *f = *state;
	user u = new_user(f, "Ivy", "ivy@example.com"), got;
	f->probe.fail_gets = ASIDE_EDB;
	aside_error err;
	assert_int_equal(user_service_get_ex(f->svc, u.id, &got, &err),
			 ASIDE_EDB);
	assert_true(strlen(err.message) > 0);
	user_service_metrics m = user_service_get_metrics(f->svc);
	assert_int_equal(m.load_errors, 1);
	assert_int_equal(m.cache_size, 0);
	f->probe.fail_gets = 0;
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Ivy");
}

/* An update and a delete that ran, but whose answers were lost. */
static void writes_whose_answer_is_lost_are_invalidated(void **state)
{
	fx *f = *state;
	user u = new_user(f, "Jay", "jay@example.com"), got;
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_int_equal(user_service_get_metrics(f->svc).cache_hits, 1);
	atomic_store(&f->probe.lose_writes, ASIDE_EDB);
	snprintf(u.name, sizeof(u.name), "Kay");
	assert_int_equal(user_service_update(f->svc, &u), ASIDE_EDB);
	atomic_store(&f->probe.lose_writes, 0);
	/* The update may have happened: the cached row is not trusted. */
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_OK);
	assert_string_equal(got.name, "Kay");
	atomic_store(&f->probe.lose_writes, ASIDE_EDB);
	assert_int_equal(user_service_delete(f->svc, u.id), ASIDE_EDB);
	atomic_store(&f->probe.lose_writes, 0);
	assert_int_equal(user_service_get(f->svc, u.id, &got), ASIDE_NOT_FOUND);
}

/*
 * After an outage the outbox holds a row for every write made in it (here
 * 3 users x 300 writes whose invalidations were lost).  Delivered, each
 * user's key is invalidated once, not once a row, and every row is
 * cleared (in one statement a batch, where the repository can).
 */
static void owed_writes_are_delivered_once_per_user(void **state)
{
	fx *f = *state;
	if (!f->db.ops->logged_change || !aside_cache_shared(f->cache))
		skip(); /* no outbox: the fake repository, or mem:// */
	user u[3], got;
	for (int i = 0; i < 3; i++) {
		char email[64];
		snprintf(email, sizeof(email), "lee%d@example.com", i);
		u[i] = new_user(f, "Lee", email);
		assert_int_equal(user_service_get(f->svc, u[i].id, &got),
				 ASIDE_OK);
	}
	for (int i = 0; i < 3; i++)
		for (int k = 1; k <= 300; k++) {
			user w = u[i];
			snprintf(w.name, sizeof(w.name), "Lee %d", k);
			int64_t row = 0;
			assert_int_equal(
			    f->db.ops->logged_change(
				f->db.self, USER_REPO_UPDATE, &w, &row, NULL),
			    ASIDE_OK);
		}
	int64_t rows[8], users[8];
	int n = 0;
	assert_int_equal(
	    f->db.ops->outbox_pending(f->db.self, 0, rows, users, 8, &n, NULL),
	    ASIDE_OK);
	assert_int_equal(n, 8);
	/* A service opened now delivers everything owed before it returns. */
	aside_metrics before, after;
	aside_cache_metrics(f->cache, &before);
	user_service *s2 = user_service_new(f->db, f->cache);
	aside_cache_metrics(f->cache, &after);
	n = -1;
	assert_int_equal(
	    f->db.ops->outbox_pending(f->db.self, 0, rows, users, 8, &n, NULL),
	    ASIDE_OK);
	assert_int_equal(n, 0);
	/* 3 keys, and users:all with each: not 900 of either. */
	assert_true(after.invalidations - before.invalidations <= 6);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(user_service_get(f->svc, u[i].id, &got),
				 ASIDE_OK);
		assert_string_equal(got.name, "Lee 300");
	}
	user_service_free(s2);
}

typedef struct stress {
	fx *f;
	int64_t id;
	_Atomic int completed; /* last version whose update returned */
	_Atomic int stop, stale, errors;
} stress;

static void *stress_reader(void *arg)
{
	stress *s = arg;
	while (!atomic_load(&s->stop)) {
		int floor = atomic_load(&s->completed);
		user u;
		aside_error err;
		int rc = user_service_get_ex(s->f->svc, s->id, &u, &err);
		if (rc != ASIDE_OK) {
			if (atomic_fetch_add(&s->errors, 1) == 0)
				fprintf(stderr, "get: %s: %s\n",
					aside_status_name(rc), err.message);
			continue;
		}
		if (atoi(u.name + 1) < floor)
			atomic_fetch_add(&s->stale, 1);
	}
	return NULL;
}

static void concurrent_readers_see_completed_writes(void **state)
{
	fx *f = *state;
	user u = new_user(f, "v0", "v@example.com");
	stress s = {.f = f, .id = u.id};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, stress_reader, &s);
	for (int v = 1; v <= 300; v++) {
		snprintf(u.name, sizeof(u.name), "v%d", v);
		assert_int_equal(user_service_update(f->svc, &u), ASIDE_OK);
		atomic_store(&s.completed, v);
	}
	atomic_store(&s.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(s.errors, 0);
	assert_int_equal(s.stale, 0);
}

/* ---- a real SQLite file that fails ------------------------------------- */

/* A scratch directory and the paths of its files; removed by scratch_rm. */
typedef struct scratch {
	char dir[64];
} scratch;

static void scratch_path(const scratch *sc, const char *name, char *out,
			 size_t size)
{
	snprintf(out, size, "%s/%s", sc->dir, name);
}

static void scratch_rm(scratch *sc)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sc->dir);
	assert_int_equal(system(cmd), 0);
}

/* Runs sql on the file at path through a connection of the test's own. */
static void sql_on(const char *path, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

/* The first column of the first row of a query, as text. */
static void sql_text(const char *path, const char *sql, char *out, size_t size)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	out[0] = '\0';
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(out, size, "%s",
			 (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/*
 * A database that cannot be opened says why, and a file that is not ours is
 * left as it was: not a database, or another application's database with a
 * users table of its own (no outbox table added, its journal mode kept).
 */
static void sqlite_refuses_what_it_cannot_use(void **state)
{
	(void)state;
	scratch sc;
	snprintf(sc.dir, sizeof(sc.dir), "/tmp/aside-test-XXXXXX");
	assert_non_null(mkdtemp(sc.dir));
	char path[128], url[160], got[64];
	user_repo r;
	aside_error err;

	snprintf(url, sizeof(url), "sqlite:%s/no/such/dir/users.db", sc.dir);
	assert_int_equal(user_repo_open(url, &r, &err), ASIDE_EDB);
	assert_non_null(strstr(err.message, "unable to open"));

	snprintf(url, sizeof(url), "sqlite:%s", sc.dir); /* a directory */
	assert_int_equal(user_repo_open(url, &r, &err), ASIDE_EDB);
	assert_non_null(strstr(err.message, "unable to open"));

	static const char notes[] = "shopping: milk, eggs, flour\n";
	scratch_path(&sc, "notes.txt", path, sizeof(path));
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(notes, fp);
	fclose(fp);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	assert_int_equal(user_repo_open(url, &r, &err), ASIDE_EDB);
	assert_non_null(strstr(err.message, "not a database"));
	char back[64] = "";
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(back, sizeof(back), fp));
	fclose(fp);
	assert_string_equal(back, notes);

	scratch_path(&sc, "other.db", path, sizeof(path));
	sql_on(path, "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT);"
		     "INSERT INTO users (login) VALUES ('root')");
	snprintf(url, sizeof(url), "sqlite:%s", path);
	assert_int_equal(user_repo_open(url, &r, &err), ASIDE_EDB);
	assert_non_null(strstr(err.message, "no such column: name"));
	sql_text(path,
		 "SELECT group_concat(name) FROM sqlite_master "
		 "WHERE type = 'table'",
		 got, sizeof(got));
	assert_string_equal(got, "users");
	sql_text(path, "PRAGMA journal_mode", got, sizeof(got));
	assert_string_equal(got, "delete");
	sql_text(path, "SELECT login FROM users", got, sizeof(got));
	assert_string_equal(got, "root");
	scratch_rm(&sc);
}

/*
 * Another program holds the database's write lock past the busy timeout:
 * a write fails with the cause and changes nothing (no row, no outbox
 * entry), reads go on meanwhile (WAL), and once the lock is gone the write
 * goes through.
 */
static void sqlite_locked_write_fails_and_changes_nothing(void **state)
{
	(void)state;
	scratch sc;
	snprintf(sc.dir, sizeof(sc.dir), "/tmp/aside-test-XXXXXX");
	assert_non_null(mkdtemp(sc.dir));
	char path[128], url[160], got[64];
	scratch_path(&sc, "users.db", path, sizeof(path));
	snprintf(url, sizeof(url), "sqlite:%s", path);
	user_repo db;
	aside_cache *cache;
	aside_error err;
	assert_int_equal(user_repo_open(url, &db, &err), ASIDE_OK);
	assert_int_equal(aside_cache_open("mem://", &cache, &err), ASIDE_OK);
	user_service *svc = user_service_new(db, cache);
	user ann = {.name = "Ann", .email = "ann@example.com"};
	user bob = {.name = "Bob", .email = "bob@example.com"}, u;
	assert_int_equal(user_service_create(svc, &ann), ASIDE_OK);
	assert_int_equal(user_service_create(svc, &bob), ASIDE_OK);
	assert_int_equal(user_service_get(svc, ann.id, &u), ASIDE_OK);

	sqlite3 *other;
	assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
	    SQLITE_OK);
	/* Reads go on: Bob was never cached, so this one asks SQLite. */
	assert_int_equal(user_service_get(svc, bob.id, &u), ASIDE_OK);
	assert_string_equal(u.name, "Bob");
	/* Another process opens the database meanwhile: its schema is all
	 * there, so the open writes nothing and needs no lock. */
	user_repo db2;
	if (user_repo_open(url, &db2, &err) != ASIDE_OK)
		fail_msg("open under a writer's lock: %s", err.message);
	assert_int_equal(db2.ops->get(db2.self, bob.id, &u), ASIDE_OK);
	assert_string_equal(u.email, "bob@example.com");
	user_repo_close(&db2);
	user anna = ann;
	snprintf(anna.name, sizeof(anna.name), "Anna");
	assert_int_equal(user_service_update_ex(svc, &anna, &err), ASIDE_EDB);
	assert_non_null(strstr(err.message, "locked"));
	user_service_metrics m = user_service_get_metrics(svc);
	assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(other);

	sql_text(path, "SELECT name FROM users WHERE id = 1", got, sizeof(got));
	assert_string_equal(got, "Ann");
	sql_text(path, "SELECT count(*) FROM aside_outbox", got, sizeof(got));
	assert_string_equal(got, "0");
	/* A failed write is invalidated all the same (it might have
	 * committed before its answer was lost): one more load, of Ann. */
	assert_int_equal(user_service_get(svc, ann.id, &u), ASIDE_OK);
	assert_string_equal(u.name, "Ann");
	assert_int_equal(user_service_get_metrics(svc).db_loads,
			 m.db_loads + 1);

	assert_int_equal(user_service_update(svc, &anna), ASIDE_OK);
	assert_int_equal(user_service_get(svc, ann.id, &u), ASIDE_OK);
	assert_string_equal(u.name, "Anna");
	user_service_free(svc);
	aside_cache_close(cache);
	user_repo_close(&db);
	scratch_rm(&sc);
}

int main(void)
{
	static const struct {
		const char *name;
		test_fn fn;
	} tests[] = {
#define T(fn) {#fn, fn}
	    T(seed_cache_aside),
	    T(seed_single_flight),
	    T(seed_update_invalidation),
	    T(invalid_records_write_nothing),
	    T(missing_users_and_bad_ids),
	    T(delete_invalidates),
	    T(gate_spares_the_database),
	    T(warm_caches_the_newest_users),
	    T(absences_cached_until_a_create),
	    T(stored_names_outside_the_rules_still_read),
	    T(writes_invalidate_users_all),
	    T(writer_reads_its_write_during_a_slow_load),
	    T(stale_load_is_never_stored),
	    T(database_errors_are_reported_not_cached),
	    T(writes_whose_answer_is_lost_are_invalidated),
	    T(concurrent_readers_see_completed_writes),
	    T(versions_grow_with_writes),
	    T(unencodable_rows_are_database_errors),
	    T(longest_fields_round_trip),
	    T(owed_writes_are_delivered_once_per_user),
#undef T
	};
	static const char *dbs[] = {"fake", "memory", "file", "pg"};
	static const char *caches[] = {"mem", "redis", "redis-l1"};
	enum { NT = sizeof(tests) / sizeof(tests[0]), ND = 4, NC = 3 };
	static variant cells[NT * ND * NC];
	static struct CMUnitTest all[NT * ND * NC + 2];
	static char names[NT * ND * NC][96];
	size_t n = 0;
	for (int d = 0; d < ND; d++)
		for (int c = 0; c < NC; c++) {
			for (int t = 0; t < NT; t++, n++) {
				cells[n] =
				    (variant){dbs[d], caches[c], tests[t].fn};
				snprintf(names[n], sizeof(names[n]), "%s/%s+%s",
					 tests[t].name, dbs[d], caches[c]);
				all[n] = (struct CMUnitTest){names[n], run_cell,
							     setup, teardown,
							     &cells[n]};
			}
		}
	all[n++] = (struct CMUnitTest)cmocka_unit_test(
	    sqlite_refuses_what_it_cannot_use);
	all[n++] = (struct CMUnitTest)cmocka_unit_test(
	    sqlite_locked_write_fails_and_changes_nothing);
	return _cmocka_run_group_tests("user_service", all, n, NULL, NULL);
}
