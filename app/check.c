/*
 * check.c -- `aside check`: a consistency checker.  Several processes, each
 * with reader threads and one writer thread, share one database and one
 * Redis.  Injected delays widen the races cache-aside is known for: a load
 * that sleeps between reading the database and filling the cache, a writer
 * that sleeps between its commit and its invalidation, and whole processes
 * stopped (SIGSTOP) and resumed.  Every operation is recorded with its
 * start and end on the machine's monotonic clock (one clock for every
 * process), and afterwards the checker reports
 *
 *   (a) stale reads: a read that returned an older version of a row than a
 *       write that had completed before the read began (more than --bound-ms
 *       before, for caches that promise only a bound);
 *   (b) divergent keys: once the load stops, a cached row that differs from
 *       the database (it would be served until its TTL).
 *
 * Rows are users whose name carries a version, "v17"; each key has one
 * writer, so its versions only grow.  With --absences, a row of an odd
 * version reads as no row (the key deleted, as the loader sees it), so
 * the writes delete and create each key in turn, and
 *
 *   (a') a read that found no row is stale if a write that made the row
 *       exist had completed before it began, and the write after it (which
 *       makes the row absent again) had not begun before it ended;
 *   (b') a cached absence of a row that exists is a divergent key.
 *
 * --naive runs the seed's plain cache-aside instead (GET; on a miss, read
 * the database and SET; on a write, update then DEL), which these races
 * defeat: the proof that the checker can fail.  Exit status: 0 when nothing
 * was found, 1 otherwise.
 *
 * A write that fails may still have committed (its answer lost with its
 * connection): the writer then reads the row back from the database, and
 * a write found there counts as completed when the read-back returns.
 */
#include "app.h"

#include <aside/users.h>
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct check_cfg {
	const char *db_url, *cache_url;
	bool naive, absences;
	long procs, threads, keys, load_delay_ms, inval_delay_ms, stall_ms;
	long bound_ms, faults_ms, pause_ms, demote_ms, full_ms, db_faults_ms;
	double seconds;
	/* In a child: */
	const char *dir;
	long index;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	app_sleep_us(ms * 1000);
}

/* ---- one process's work ------------------------------------------------- */

/* The version a read records when it found no row (--absences). */
#define ABSENT (-3)

struct op {
	char kind; /* 'R' read, 'W' write */
	int key;
	long version;
	int64_t begin, end;
};

/* The children's name in pg_stat_activity, for --db-faults-ms. */
#define CHECK_APP "aside-check"

static bool is_postgres(const char *url)
{
	return strncmp(url, "postgresql://", 13) == 0 ||
	       strncmp(url, "postgres://", 11) == 0;
}

/* Errors are counted by status, -1 to -(CHECK_STATUSES - 1); 0: others. */
#define CHECK_STATUSES 64

struct worker {
	const struct check_cfg *cfg;
	const int64_t *ids;
	user_service *svc;   /* aside */
	user_repo repo;	     /* both modes: with the injected delays */
	user_repo raw;	     /* the database itself, for reading back */
	redisContext *redis; /* naive: a connection of its own */
	bool writer;
	struct op *ops;
	size_t nops, cap;
	long errors;
	long by_status[CHECK_STATUSES]; /* errors by -status */
	long lost; /* writes that failed but had committed */
};

static void count_error(struct worker *w, int rc)
{
	w->errors++;
	w->by_status[rc < 0 && rc > -CHECK_STATUSES ? -rc : 0]++;
}

static void record(struct worker *w, char kind, int key, long version,
		   int64_t begin, int64_t end)
{
	if (w->nops == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 4096;
		struct op *n = realloc(w->ops, w->cap * sizeof(*n));
		if (!n) {
			w->errors++;
			return;
		}
		w->ops = n;
	}
	w->ops[w->nops++] = (struct op){kind, key, version, begin, end};
}

static long version_of(const char *name)
{
	return name[0] == 'v' ? strtol(name + 1, NULL, 10) : -1;
}

/* The seed's cache-aside, plainly: GET; on a miss load and SET. */
static int naive_read(struct worker *w, int64_t id, long *version)
{
	char key[32];
	user_cache_key(id, key);
	redisReply *r = redisCommand(w->redis, "GET %s", key);
	if (!r)
		return ASIDE_ECACHE;
	if (r->type == REDIS_REPLY_STRING) {
		*version = version_of(r->str);
		freeReplyObject(r);
		return ASIDE_OK;
	}
	freeReplyObject(r);
	user u;
	int rc = w->repo.ops->get_ex(w->repo.self, id, &u, NULL);
	if (rc != ASIDE_OK)
		return rc;
	*version = version_of(u.name);
	r = redisCommand(w->redis, "SET %s %s EX 3600", key, u.name);
	if (r)
		freeReplyObject(r);
	return ASIDE_OK;
}

static int naive_write(struct worker *w, const user *u)
{
	int rc = w->repo.ops->update_ex(w->repo.self, u, NULL);
	if (rc != ASIDE_OK)
		return rc;
	char key[32];
	user_cache_key(u->id, key);
	redisReply *r = redisCommand(w->redis, "DEL %s", key);
	if (!r)
		return ASIDE_ECACHE;
	freeReplyObject(r);
	return ASIDE_OK;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	const struct check_cfg *cfg = w->cfg;
	int64_t until = mono_ns() + (int64_t)(cfg->seconds * 1e9);
	long *versions = calloc((size_t)cfg->keys, sizeof(long));
	while (versions && mono_ns() < until) {
		int k = (int)(app_rand() % (uint64_t)cfg->keys);
		if (w->writer) {
			/* This process writes the keys k = index (mod procs).
			 */
			k -= k % (int)cfg->procs;
			k += (int)cfg->index;
			if (k >= cfg->keys)
				continue;
			user u = {.id = w->ids[k]};
			snprintf(u.name, sizeof(u.name), "v%ld",
				 versions[k] + 1);
			snprintf(u.email, sizeof(u.email),
				 "check%d@example.com", k);
			int64_t t0 = mono_ns();
			int rc = cfg->naive ? naive_write(w, &u)
					    : user_service_update(w->svc, &u);
			int64_t t1 = mono_ns();
			if (rc != ASIDE_OK) {
				count_error(w, rc);
				/* Did it commit all the same?  Then it has
				 * completed by the time we know. */
				user now;
				if (w->raw.ops->get_ex(w->raw.self, u.id, &now,
						       NULL) != ASIDE_OK ||
				    version_of(now.name) != versions[k] + 1)
					continue;
				t1 = mono_ns();
				w->lost++;
			}
			versions[k]++;
			record(w, 'W', k, versions[k], t0, t1);
			sleep_ms(1);
		} else {
			long version = -1;
			int64_t t0 = mono_ns();
			int rc;
			if (cfg->naive) {
				rc = naive_read(w, w->ids[k], &version);
			} else {
				user u;
				rc = user_service_get(w->svc, w->ids[k], &u);
				if (rc == ASIDE_OK)
					version = version_of(u.name);
			}
			int64_t t1 = mono_ns();
			if (rc == ASIDE_NOT_FOUND && cfg->absences) {
				record(w, 'R', k, ABSENT, t0, t1);
				continue;
			}
			if (rc != ASIDE_OK || version < 0) {
				count_error(w, rc != ASIDE_OK ? rc : 0);
				continue;
			}
			record(w, 'R', k, version, t0, t1);
		}
	}
	free(versions);
	return NULL;
}

static int hex_digit(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* Copies [s, end) percent-decoded into out (cap bytes); false if long. */
static bool decoded(const char *s, const char *end, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *q = s; q < end; q++) {
		int hi, lo;
		char c = *q;
		if (c == '%' && q + 2 < end && (hi = hex_digit(q[1])) >= 0 &&
		    (lo = hex_digit(q[2])) >= 0) {
			c = (char)(hi * 16 + lo);
			q += 2;
		}
		if (o + 1 >= cap)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

/*
 * Redis host, port, db, user and password (percent-decoded; "" if none)
 * from a redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] URL, for the naive
 * mode and the fault injector.
 */
static bool redis_addr(const char *url, char *host, size_t cap, int *port,
		       int *db, char *acl_user, char *password, size_t pcap)
{
	if (strncmp(url, "redis://", 8) != 0)
		return false;
	const char *p = url + 8, *at = strchr(p, '@');
	acl_user[0] = password[0] = '\0';
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon && !decoded(p, colon, acl_user, pcap))
			return false;
		if (!decoded(colon ? colon + 1 : at, at, password, pcap))
			return false;
		p = at + 1;
	}
	size_t n = strcspn(p, ":/?");
	if (n == 0 || n >= cap)
		return false;
	memcpy(host, p, n);
	host[n] = '\0';
	p += n;
	*port = 6379;
	*db = 0;
	if (*p == ':')
		*port = (int)strtol(p + 1, (char **)&p, 10);
	if (*p == '/')
		*db = (int)strtol(p + 1, NULL, 10);
	return true;
}

/* A plain connection to the URL's Redis, authenticated, its db selected. */
static redisContext *naive_connect(const char *url)
{
	char host[256], acl_user[256], password[256];
	int port, db;
	if (!redis_addr(url, host, sizeof(host), &port, &db, acl_user, password,
			sizeof(password)))
		return NULL;
	redisContext *c = redisConnect(host, port);
	if (!c || c->err) {
		redisFree(c);
		return NULL;
	}
	redisReply *r = NULL;
	if (acl_user[0] || password[0]) {
		r = acl_user[0]
			? redisCommand(c, "AUTH %s %s", acl_user, password)
			: redisCommand(c, "AUTH %s", password);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			if (r)
				freeReplyObject(r);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	r = redisCommand(c, "SELECT %d", db);
	if (r)
		freeReplyObject(r);
	return c;
}

/* A child: its threads work, then it writes its record to DIR/ops.INDEX. */
static int child(const struct check_cfg *cfg)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/ids", cfg->dir);
	FILE *f = fopen(path, "r");
	int64_t *ids = calloc((size_t)cfg->keys, sizeof(*ids));
	for (long k = 0; f && ids && k < cfg->keys; k++)
		if (fscanf(f, "%lld", (long long *)&ids[k]) != 1)
			ids[k] = 0;
	if (f)
		fclose(f);
	aside_error err;
	user_repo db = {0};
	aside_cache *cache = NULL;
	user_service *svc = NULL;
	long n = cfg->threads;
	struct worker *w = NULL;
	pthread_t *th = NULL;
	int rc = 2;
	/* Under database faults, a connection may be terminated while the
	 * repository opens: try again, for up to a second. */
	int opened = ASIDE_EDB;
	/* Named, so that database faults end our connections only. */
	char url[4096];
	if (is_postgres(cfg->db_url))
		snprintf(url, sizeof(url), "%s%capplication_name=" CHECK_APP,
			 cfg->db_url, strchr(cfg->db_url, '?') ? '&' : '?');
	else
		snprintf(url, sizeof(url), "%s", cfg->db_url);
	for (int i = 0; ids && opened != ASIDE_OK && i < 20; i++) {
		opened = user_repo_open(url, &db, &err);
		if (opened != ASIDE_OK && !cfg->db_faults_ms)
			break;
		if (opened != ASIDE_OK)
			sleep_ms(50);
	}
	if (!ids || opened != ASIDE_OK) {
		fprintf(stderr, "aside check: %s\n",
			ids ? err.message : "out of memory");
		goto out;
	}
	struct slow_repo slow;
	user_repo repo = slow_repo_wrap(&slow, db, 0);
	slow.after_read_ms = cfg->load_delay_ms;
	slow.after_update_ms = cfg->inval_delay_ms;
	slow.odd_absent = cfg->absences;
	if (!cfg->naive) {
		if (aside_cache_open(cfg->cache_url, &cache, &err) !=
		    ASIDE_OK) {
			fprintf(stderr, "aside check: %s\n", err.message);
			goto out;
		}
		svc = user_service_new(repo, cache);
	}
	w = calloc((size_t)n, sizeof(*w));
	th = calloc((size_t)n, sizeof(*th));
	if (!w || !th)
		goto out;
	for (long i = 0; i < n; i++) {
		w[i] =
		    (struct worker){.cfg = cfg,
				    .ids = ids,
				    .svc = svc,
				    .repo = repo,
				    .raw = db,
				    .writer = i == 0 && cfg->index < cfg->keys};
		if (cfg->naive &&
		    !(w[i].redis = naive_connect(cfg->cache_url))) {
			char shown[256];
			fprintf(stderr, "aside check: cannot reach %s\n",
				aside_url_redact(cfg->cache_url, shown,
						 sizeof(shown)));
			goto out;
		}
	}
	for (long i = 0; i < n; i++)
		pthread_create(&th[i], NULL, work, &w[i]);
	for (long i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	snprintf(path, sizeof(path), "%s/ops.%ld", cfg->dir, cfg->index);
	f = fopen(path, "w");
	long errors = 0, by_status[CHECK_STATUSES] = {0};
	for (long i = 0; f && i < n; i++) {
		errors += w[i].errors;
		for (int c = 0; c < CHECK_STATUSES; c++)
			by_status[c] += w[i].by_status[c];
		for (size_t j = 0; j < w[i].nops; j++) {
			const struct op *o = &w[i].ops[j];
			fprintf(f, "%c %d %ld %lld %lld\n", o->kind, o->key,
				o->version, (long long)o->begin,
				(long long)o->end);
		}
		free(w[i].ops);
		w[i].ops = NULL;
	}
	if (f) {
		/* E count status: the errors by status; the rest unnamed. */
		long named = 0;
		for (int c = 1; c < CHECK_STATUSES; c++)
			if (by_status[c]) {
				fprintf(f, "E %ld %d 0 0\n", by_status[c], -c);
				named += by_status[c];
			}
		if (errors > named)
			fprintf(f, "E %ld 0 0 0\n", errors - named);
		/* T count count count count: commands a cache tier failed
		 * (each one that carried an invalidation left it owed to the
		 * outbox), leases waited out (loads no lease validated),
		 * writes that failed but had committed, and of the failed
		 * commands those an open breaker refused at once. */
		long lost = 0;
		for (long i = 0; i < n; i++)
			lost += w[i].lost;
		aside_metrics m = {0};
		if (!cfg->naive)
			aside_cache_metrics(cache, &m);
		uint64_t skipped = 0;
		for (int i = 0; i < m.ntiers; i++)
			skipped += m.tier_skipped[i];
		fprintf(f, "T %ld %ld %ld %ld\n", (long)m.tier_errors,
			(long)m.lease_timeouts, lost, (long)skipped);
		/* S count count count 0: reads served an expired copy
		 * because their load failed (stale_if_error_ms), and because
		 * another reader was loading the key
		 * (stale_while_revalidate_ms), and reads answered by a cached
		 * absence (negative_ttl_ms). */
		fprintf(f, "S %d %ld %ld 0\n", (int)m.stale_on_error,
			(long)m.stale_while_revalidate, (long)m.negative_hits);
	}
	if (f && fclose(f) == 0)
		rc = 0;
out:
	for (long i = 0; w && i < n; i++) {
		free(w[i].ops);
		if (w[i].redis)
			redisFree(w[i].redis);
	}
	user_service_free(svc);
	aside_cache_close(cache);
	user_repo_close(&db);
	free(w);
	free(th);
	free(ids);
	return rc;
}

/* ---- the parent: set up, run, stall, judge ------------------------------ */

static int by_begin(const void *a, const void *b)
{
	const struct op *x = a, *y = b;
	return (x->begin > y->begin) - (x->begin < y->begin);
}

/*
 * Redis faults, while the children run: every faults_ms or so (half to one
 * and a half times), the next of (in turn, from a random one, so that any
 * three faults in a row include each)
 *   - every data connection dropped (CLIENT KILL TYPE normal: the
 *     processes find their idle connections closed, and a command in
 *     flight may be lost after it ran);
 *   - every subscription dropped (CLIENT KILL TYPE pubsub: the L1s hear no
 *     invalidations until they resubscribe);
 *   - every client paused for pause_ms (CLIENT PAUSE: Redis stalls; past
 *     the command timeout, the processes' breakers open);
 *   - with demote_ms, Redis demoted for demote_ms (REPLICAOF a primary
 *     that is not there, as a failover leaves the old primary: it serves
 *     reads and refuses writes), then made a primary again;
 *   - with full_ms, Redis full for full_ms (maxmemory 1 with noeviction:
 *     it refuses whatever adds data, and allows deletes).
 * The injector's own connection is spared (SKIPME is the default).
 */
struct faults {
	const struct check_cfg *cfg;
	int64_t until;
	long kills, pauses, demotions, fulls, failed;
};

/*
 * Runs `set`, waits ms, then runs `undo`, on a new connection if need be
 * and until it takes: Redis is never left demoted or full.  Returns
 * whether both took.
 */
static bool held(redisContext **c, const char *url, const char *set,
		 const char *undo, long ms)
{
	redisReply *r = redisCommand(*c, set);
	bool took = r && r->type != REDIS_REPLY_ERROR;
	if (r)
		freeReplyObject(r);
	if (!took)
		return false;
	sleep_ms(ms);
	for (int i = 0; i < 50; i++) {
		if (!*c || (*c)->err) {
			if (*c)
				redisFree(*c);
			*c = naive_connect(url);
		}
		r = *c && !(*c)->err ? redisCommand(*c, undo) : NULL;
		bool done = r && r->type != REDIS_REPLY_ERROR;
		if (r)
			freeReplyObject(r);
		if (done)
			return true;
		sleep_ms(20);
	}
	return false;
}

static void *inject_faults(void *arg)
{
	struct faults *fa = arg;
	const struct check_cfg *cfg = fa->cfg;
	redisContext *c = NULL;
	uint64_t turn = app_rand();
	enum { KILL_NORMAL, KILL_PUBSUB, PAUSE, DEMOTE, FULL } kinds[5];
	int nkinds = 0;
	kinds[nkinds++] = KILL_NORMAL;
	kinds[nkinds++] = KILL_PUBSUB;
	kinds[nkinds++] = PAUSE;
	if (cfg->demote_ms)
		kinds[nkinds++] = DEMOTE;
	if (cfg->full_ms)
		kinds[nkinds++] = FULL;
	for (;;) {
		long ms = cfg->faults_ms / 2 +
			  (long)(app_rand() % (uint64_t)(cfg->faults_ms + 1));
		if (mono_ns() + ms * 1000000 >= fa->until)
			break;
		sleep_ms(ms);
		if (!c || c->err) {
			if (c)
				redisFree(c);
			c = naive_connect(cfg->cache_url);
		}
		if (!c || c->err) {
			fa->failed++;
			continue;
		}
		redisReply *r = NULL;
		bool ok;
		switch (kinds[turn++ % (uint64_t)nkinds]) {
		case KILL_NORMAL:
			r = redisCommand(c, "CLIENT KILL TYPE normal");
			fa->kills++;
			break;
		case KILL_PUBSUB:
			r = redisCommand(c, "CLIENT KILL TYPE pubsub");
			fa->kills++;
			break;
		case PAUSE:
			r = redisCommand(c, "CLIENT PAUSE %ld ALL",
					 cfg->pause_ms);
			fa->pauses++;
			break;
		case DEMOTE:
			/* Port 1: nothing listens there, so no sync ever
			 * replaces the data it holds. */
			ok = held(&c, cfg->cache_url, "REPLICAOF 127.0.0.1 1",
				  "REPLICAOF NO ONE", cfg->demote_ms);
			fa->demotions += ok;
			fa->failed += !ok;
			continue;
		case FULL:
			r = redisCommand(c, "CONFIG SET maxmemory-policy "
					    "noeviction");
			if (r)
				freeReplyObject(r);
			ok = held(&c, cfg->cache_url, "CONFIG SET maxmemory 1",
				  "CONFIG SET maxmemory 0", cfg->full_ms);
			fa->fulls += ok;
			fa->failed += !ok;
			continue;
		}
		if (!r || r->type == REDIS_REPLY_ERROR)
			fa->failed++;
		if (r)
			freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	return NULL;
}

/*
 * Database faults, while the children run: every db_faults_ms or so (half
 * to one and a half times), every connection of the children to the
 * database is terminated (pg_terminate_backend; they name themselves
 * CHECK_APP, and no other client is touched): statements in flight fail,
 * and a write whose commit came just before may lose its answer.  The
 * pools replace the connections.
 */
struct db_faults {
	const struct check_cfg *cfg;
	int64_t until;
	long rounds, terminated, failed;
};

/* The URL without the parameters our repository takes and libpq would
 * refuse (service/repo_pg.c). */
static void libpq_url(const char *url, char *out, size_t cap)
{
	size_t q = strcspn(url, "?");
	snprintf(out, cap, "%.*s", (int)q, url);
	const char *p = url + q;
	char sep = '?';
	while (*p) {
		p++; /* past '?' or '&' */
		size_t n = strcspn(p, "&");
		if (strncmp(p, "pool=", 5) != 0 &&
		    strncmp(p, "statement_timeout_ms=", 21) != 0) {
			size_t len = strlen(out);
			snprintf(out + len, cap - len, "%c%.*s", sep, (int)n,
				 p);
			sep = '&';
		}
		p += n;
	}
}

static void *inject_db_faults(void *arg)
{
	struct db_faults *fa = arg;
	const struct check_cfg *cfg = fa->cfg;
	char url[4096];
	libpq_url(cfg->db_url, url, sizeof(url));
	PGconn *pg = NULL;
	for (;;) {
		long ms =
		    cfg->db_faults_ms / 2 +
		    (long)(app_rand() % (uint64_t)(cfg->db_faults_ms + 1));
		if (mono_ns() + ms * 1000000 >= fa->until)
			break;
		sleep_ms(ms);
		if (!pg || PQstatus(pg) != CONNECTION_OK) {
			PQfinish(pg);
			pg = PQconnectdb(url);
		}
		PGresult *res =
		    PQexec(pg, "SELECT count(*) FROM ("
			       "SELECT pg_terminate_backend(pid) FROM "
			       "pg_stat_activity WHERE datname = "
			       "current_database() AND application_name = "
			       "'" CHECK_APP "') t");
		if (PQresultStatus(res) == PGRES_TUPLES_OK &&
		    PQntuples(res) == 1) {
			fa->rounds++;
			fa->terminated +=
			    strtol(PQgetvalue(res, 0, 0), NULL, 10);
		} else {
			fa->failed++;
		}
		PQclear(res);
	}
	PQfinish(pg);
	return NULL;
}

/* Spawns the children, stalls them now and then, and waits for them. */
static bool run_children(const struct check_cfg *cfg, char **argv, int argc,
			 long *stalls, struct faults *fa, struct db_faults *dfa)
{
	char self[4096];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len <= 0)
		return false;
	self[len] = '\0';
	pid_t *pid = calloc((size_t)cfg->procs, sizeof(*pid));
	if (!pid)
		return false;
	for (long p = 0; p < cfg->procs; p++) {
		char index[24];
		snprintf(index, sizeof(index), "%ld", p);
		char **cargv = calloc((size_t)argc + 6, sizeof(*cargv));
		if (!cargv)
			return false;
		int c = 0;
		cargv[c++] = self;
		cargv[c++] = "check";
		for (int i = 1; i < argc; i++)
			cargv[c++] = argv[i];
		cargv[c++] = "--child-dir";
		cargv[c++] = (char *)cfg->dir;
		cargv[c++] = "--child-index";
		cargv[c++] = index;
		int rc = posix_spawn(&pid[p], self, NULL, NULL, cargv, environ);
		free(cargv);
		if (rc != 0) {
			fprintf(stderr, "aside check: spawn: %s\n",
				strerror(rc));
			return false;
		}
	}
	/* Stall one child at a time while they run, and fault Redis. */
	int64_t until = mono_ns() + (int64_t)(cfg->seconds * 1e9);
	pthread_t injector;
	fa->cfg = cfg;
	fa->until = until;
	bool injecting =
	    cfg->faults_ms > 0 &&
	    pthread_create(&injector, NULL, inject_faults, fa) == 0;
	pthread_t db_injector;
	dfa->cfg = cfg;
	dfa->until = until;
	bool db_injecting =
	    cfg->db_faults_ms > 0 &&
	    pthread_create(&db_injector, NULL, inject_db_faults, dfa) == 0;
	while (cfg->stall_ms > 0 &&
	       mono_ns() + cfg->stall_ms * 2000000 < until) {
		sleep_ms(cfg->stall_ms);
		pid_t victim = pid[app_rand() % (uint64_t)cfg->procs];
		kill(victim, SIGSTOP);
		sleep_ms(cfg->stall_ms);
		kill(victim, SIGCONT);
		(*stalls)++;
	}
	if (injecting)
		pthread_join(injector, NULL);
	if (db_injecting)
		pthread_join(db_injector, NULL);
	bool ok = true;
	for (long p = 0; p < cfg->procs; p++) {
		int status;
		while (waitpid(pid[p], &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "aside check: process %ld failed\n", p);
			ok = false;
		}
	}
	free(pid);
	return ok;
}

/* A loader that finds the database away: a read with it takes only what
 * is cached. */
static int cached_only(void *arg, const char *key, size_t klen,
		       aside_value **out, aside_error *err)
{
	(void)arg;
	(void)key;
	(void)klen;
	(void)out;
	(void)err;
	return ASIDE_EDB;
}

/* The cached version of key k now: -1 if none; -2 on error; ABSENT for a
 * cached absence. */
static long cached_version(const struct check_cfg *cfg, aside_cache *peek,
			   redisContext *rc, int64_t id)
{
	char key[32];
	size_t klen = user_cache_key(id, key);
	if (cfg->naive) {
		redisReply *r = redisCommand(rc, "GET %s", key);
		if (!r)
			return -2;
		long v =
		    r->type == REDIS_REPLY_STRING ? version_of(r->str) : -1;
		freeReplyObject(r);
		return v;
	}
	aside_value *v;
	if (cfg->absences) {
		/* A read, not a peek: a peek cannot tell an absence from
		 * nothing cached. */
		aside_loader ld = {cached_only, NULL, NULL};
		int got = aside_cache_get(peek, key, klen, &ld, &v, NULL);
		if (got == ASIDE_NOT_FOUND)
			return ABSENT;
		if (got != ASIDE_OK)
			return -1;
	} else if (aside_cache_peek(peek, key, klen, &v) != ASIDE_OK) {
		return -1;
	}
	size_t len;
	const char *json = aside_value_data(v, &len);
	user u;
	long version = user_from_json(json, len, 0, &u, NULL) == ASIDE_OK
			   ? version_of(u.name)
			   : -2;
	aside_value_unref(v);
	return version;
}

/* What a run leaves: its files and directory removed (those of children
 * that failed, whose records were never read, too), what it opened closed. */
static void clean_up(const struct check_cfg *cfg, const char *dir,
		     user_repo *db, aside_cache *peek, redisContext *rc,
		     int64_t *ids)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/ids", dir);
	unlink(path);
	for (long p = 0; p < cfg->procs; p++) {
		snprintf(path, sizeof(path), "%s/ops.%ld", dir, p);
		unlink(path);
	}
	rmdir(dir);
	free(ids);
	if (rc)
		redisFree(rc);
	aside_cache_close(peek);
	user_repo_close(db);
}

static int parent(struct check_cfg *cfg, int argc, char **argv)
{
	char dir[] = "/tmp/aside-check-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("aside check: mkdtemp");
		return 2;
	}
	cfg->dir = dir;
	aside_error err;
	user_repo db;
	if (user_repo_open(cfg->db_url, &db, &err) != ASIDE_OK) {
		fprintf(stderr, "aside check: %s\n", err.message);
		rmdir(dir);
		return 2;
	}
	/* Fresh rows, and no cached copy of their keys. */
	aside_cache *peek = NULL;
	redisContext *rc = NULL;
	char peek_url[1024];
	snprintf(peek_url, sizeof(peek_url), "%.*s",
		 (int)strcspn(cfg->cache_url, "?"), cfg->cache_url);
	aside_error_clear(&err);
	if (aside_cache_open(peek_url, &peek, &err) != ASIDE_OK ||
	    !(rc = naive_connect(cfg->cache_url))) {
		char shown[256];
		fprintf(stderr, "aside check: %s: cannot use it: %s\n",
			aside_url_redact(cfg->cache_url, shown, sizeof(shown)),
			err.code ? err.message : "no connection");
		clean_up(cfg, dir, &db, peek, rc, NULL);
		return 2;
	}
	int64_t *ids = calloc((size_t)cfg->keys, sizeof(*ids));
	char path[4096];
	snprintf(path, sizeof(path), "%s/ids", dir);
	FILE *f = fopen(path, "w");
	for (long k = 0; ids && f && k < cfg->keys; k++) {
		user u = {0};
		snprintf(u.name, sizeof(u.name), "v0");
		snprintf(u.email, sizeof(u.email), "check%ld@example.com", k);
		if (db.ops->create_ex(db.self, &u, &err) != ASIDE_OK) {
			fprintf(stderr, "aside check: cannot create rows: %s\n",
				err.message);
			fclose(f);
			clean_up(cfg, dir, &db, peek, rc, ids);
			return 2;
		}
		ids[k] = u.id;
		fprintf(f, "%lld\n", (long long)u.id);
		char key[32];
		size_t klen = user_cache_key(u.id, key);
		aside_cache_invalidate(peek, key, klen, NULL);
	}
	if (!ids || !f || fclose(f) != 0) {
		fprintf(stderr, "aside check: %s: %s\n", path,
			!ids ? "out of memory" : strerror(errno));
		clean_up(cfg, dir, &db, peek, rc, ids);
		return 2;
	}

	printf("aside check: %s, %ld processes x %ld threads (one writer "
	       "each), %ld keys, %.1f s\n",
	       cfg->naive ? "naive cache-aside" : "aside", cfg->procs,
	       cfg->threads, cfg->keys, cfg->seconds);
	char shown_db[256], shown_cache[256];
	printf(
	    "  database %s, cache %s\n",
	    aside_url_redact(cfg->db_url, shown_db, sizeof(shown_db)),
	    aside_url_redact(cfg->cache_url, shown_cache, sizeof(shown_cache)));
	printf("  delays: load->fill up to %ld ms, commit->invalidation up to "
	       "%ld ms, process stalls of %ld ms; bound %ld ms\n",
	       cfg->load_delay_ms, cfg->inval_delay_ms, cfg->stall_ms,
	       cfg->bound_ms);
	if (cfg->faults_ms > 0)
		printf(
		    "  Redis faults every %ld ms or so: connections dropped, "
		    "clients paused for %ld ms%s%s\n",
		    cfg->faults_ms, cfg->pause_ms,
		    cfg->demote_ms ? ", Redis demoted to a replica" : "",
		    cfg->full_ms ? ", Redis full" : "");
	if (cfg->db_faults_ms > 0)
		printf("  database faults every %ld ms or so: the processes' "
		       "connections terminated\n",
		       cfg->db_faults_ms);
	fflush(stdout);
	long stalls = 0;
	struct faults fa = {0};
	struct db_faults dfa = {0};
	bool ran = run_children(cfg, argv, argc, &stalls, &fa, &dfa);

	/* Gather every process's record. */
	struct op *ops = NULL;
	size_t nops = 0, cap = 0;
	long errors = 0, reads = 0, writes = 0;
	long by_status[CHECK_STATUSES] = {0}, tier_errors = 0,
	     lease_timeouts = 0, lost_writes = 0, tier_skipped = 0,
	     stale_copies = 0, swr_copies = 0, absences_cached = 0,
	     absent_reads = 0;
	for (long p = 0; ran && p < cfg->procs; p++) {
		snprintf(path, sizeof(path), "%s/ops.%ld", dir, p);
		f = fopen(path, "r");
		struct op o;
		long long b, e;
		while (f && fscanf(f, " %c %d %ld %lld %lld", &o.kind, &o.key,
				   &o.version, &b, &e) == 5) {
			if (o.kind == 'T') {
				tier_errors += o.key;
				lease_timeouts += o.version;
				lost_writes += b;
				tier_skipped += e;
				continue;
			}
			if (o.kind == 'S') {
				stale_copies += o.key;
				swr_copies += o.version;
				absences_cached += b;
				continue;
			}
			if (o.kind == 'E') {
				errors += o.key;
				if (o.version < 0 &&
				    o.version > -CHECK_STATUSES)
					by_status[-o.version] += o.key;
				continue;
			}
			o.begin = b;
			o.end = e;
			if (nops == cap) {
				cap = cap ? cap * 2 : 65536;
				struct op *more =
				    realloc(ops, cap * sizeof(*ops));
				if (!more) {
					fprintf(stderr,
						"aside check: out of memory\n");
					free(ops);
					return 2;
				}
				ops = more;
			}
			ops[nops++] = o;
			if (o.kind == 'R')
				reads++;
			else
				writes++;
			absent_reads += o.kind == 'R' && o.version == ABSENT;
		}
		if (f)
			fclose(f);
		unlink(path);
	}

	/*
	 * (a) For each read, the newest write of its key that had completed
	 * (bound_ms) before it began: a read of an older version is stale.
	 * Writes of a key complete in version order (one writer a key).
	 */
	if (nops)
		qsort(ops, nops, sizeof(*ops), by_begin);
	long *newest = calloc((size_t)cfg->keys, sizeof(long));
	/* Per key, the writes by end time: a simple list per key. */
	size_t **wk = calloc((size_t)cfg->keys, sizeof(*wk));
	size_t *wn = calloc((size_t)cfg->keys, sizeof(*wn));
	for (size_t i = 0; i < nops; i++)
		if (ops[i].kind == 'W')
			wn[ops[i].key]++;
	for (long k = 0; k < cfg->keys; k++)
		wk[k] = calloc(wn[k] + 1, sizeof(**wk));
	memset(wn, 0, (size_t)cfg->keys * sizeof(*wn));
	for (size_t i = 0; i < nops; i++)
		if (ops[i].kind == 'W')
			wk[ops[i].key][wn[ops[i].key]++] = i;
	long stale = 0, shown = 0;
	int64_t worst_ns = 0;
	size_t *next = calloc((size_t)cfg->keys, sizeof(*next));
	int64_t bound = cfg->bound_ms * 1000000;
	for (size_t i = 0; i < nops; i++) {
		const struct op *r = &ops[i];
		if (r->kind != 'R')
			continue;
		/* Reads come in begin order; advance each key's cursor over
		 * the writes that completed before this read began.  Writes
		 * of a key end in version order, so the cursor only moves
		 * forward. */
		size_t *c = &next[r->key];
		const size_t *ws = wk[r->key];
		while (*c < wn[r->key] && ops[ws[*c]].end + bound < r->begin)
			newest[r->key] = ops[ws[(*c)++]].version;
		if (r->version == ABSENT) {
			/* Stale if the newest write completed made the row
			 * (an even version), and the one after it, version
			 * newest + 1 (writes of a key are recorded in version
			 * order, from 1), had not begun when the read ended. */
			long nv = newest[r->key];
			if (nv % 2 == 1 || ((size_t)nv < wn[r->key] &&
					    ops[ws[nv]].begin < r->end))
				continue;
			stale++;
			int64_t late = nv ? r->begin - ops[ws[nv - 1]].end : 0;
			if (late > worst_ns)
				worst_ns = late;
			if (shown++ < 5)
				printf(
				    "  stale read: key %d (user %lld) found "
				    "no row, %.1f ms after v%ld was written\n",
				    r->key, (long long)ids[r->key],
				    (double)late / 1e6, nv);
			continue;
		}
		if (r->version < newest[r->key]) {
			stale++;
			const struct op *w = &ops[ws[*c - 1]];
			int64_t late = r->begin - w->end;
			if (late > worst_ns)
				worst_ns = late;
			if (shown++ < 5)
				printf("  stale read: key %d (user %lld) "
				       "returned v%ld, %.1f ms after v%ld was "
				       "written\n",
				       r->key, (long long)ids[r->key],
				       r->version, (double)late / 1e6,
				       newest[r->key]);
		}
	}

	/*
	 * (b) What the cache holds now against the database.  Invalidations
	 * still owed when the processes ended (their writes completed while
	 * Redis did not answer, and nobody was left to deliver them) are
	 * delivered first, as any process running a UserService on the
	 * database does when it starts: that is the outbox's promise.
	 */
	long owed = 0;
	if (ran && !cfg->naive && db.ops->outbox_pending) {
		int64_t rows[256], users[256];
		int n = 0;
		if (db.ops->outbox_pending(db.self, 0, rows, users, 256, &n,
					   NULL) == ASIDE_OK)
			owed = n;
		if (owed)
			user_service_free(user_service_new(db, peek));
	}
	long divergent = 0;
	for (long k = 0; ran && k < cfg->keys; k++) {
		user u;
		/* A server restarted meanwhile ended this connection too:
		 * the pool opens another on the next call. */
		int got = db.ops->get(db.self, ids[k], &u);
		if (got == ASIDE_EDB)
			got = db.ops->get(db.self, ids[k], &u);
		if (got != ASIDE_OK) {
			errors++;
			continue;
		}
		long dbv = version_of(u.name);
		long cv = cached_version(cfg, peek, rc, ids[k]);
		if (cv == ABSENT && dbv % 2 == 0) {
			divergent++;
			printf(
			    "  divergent: key %ld cached as absent, database "
			    "v%ld\n",
			    k, dbv);
		} else if (cv != -1 && cv != ABSENT && cv != dbv) {
			divergent++;
			printf("  divergent: key %ld cached v%ld, database "
			       "v%ld\n",
			       k, cv, dbv);
		}
	}

	printf("ops: %ld reads, %ld writes, %ld errors; %ld stalls\n", reads,
	       writes, errors, stalls);
	if (owed)
		printf("  owed invalidations left when the processes ended: "
		       "%ld%s, delivered before the comparison\n",
		       owed, owed == 256 ? " or more" : "");
	for (int c = 1; c < CHECK_STATUSES; c++)
		if (by_status[c])
			printf("  errors %s (%s): %ld\n", aside_status_name(-c),
			       aside_strerror(-c), by_status[c]);
	if (!cfg->naive)
		printf(
		    "cache: %ld commands failed in the processes' tiers (%ld "
		    "of them refused at once, the breaker open), %ld leases "
		    "waited out, %ld expired copies served as loads failed, "
		    "%ld beside another reader's load\n",
		    tier_errors, tier_skipped, lease_timeouts, stale_copies,
		    swr_copies);
	if (cfg->absences)
		printf("absences: %ld reads found no row, %ld of them "
		       "answered by a cached absence\n",
		       absent_reads, absences_cached);
	if (cfg->faults_ms > 0)
		printf("faults: %ld connection kills, %ld pauses, %ld "
		       "demotions, %ld times full, %ld not made\n",
		       fa.kills, fa.pauses, fa.demotions, fa.fulls, fa.failed);
	if (cfg->db_faults_ms > 0)
		printf("database faults: %ld rounds terminated %ld "
		       "connections, %ld not made; %ld writes failed but had "
		       "committed\n",
		       dfa.rounds, dfa.terminated, dfa.failed, lost_writes);
	printf("findings: %ld stale reads (worst %.1f ms after the write "
	       "completed), %ld divergent keys\n",
	       stale, (double)worst_ns / 1e6, divergent);
	for (long k = 0; k < cfg->keys; k++)
		free(wk[k]);
	free(wk);
	free(wn);
	free(next);
	free(newest);
	free(ops);
	clean_up(cfg, dir, &db, peek, rc, ids);
	/* Under database faults, failed operations are the faults' doing;
	 * a run where nothing got through proves nothing, though. */
	if (!ran || (errors && !cfg->db_faults_ms) || !reads || !writes)
		return 2;
	return stale || divergent ? 1 : 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: aside check --db URL --cache redis://... [OPTIONS]\n"
	       "  --naive              the seed's plain cache-aside instead "
	       "of aside\n"
	       "  --absences           rows of odd versions read as absent: "
	       "the writes delete\n"
	       "                       and create each key in turn (for "
	       "negative_ttl_ms)\n"
	       "  --processes N        processes (default 3)\n"
	       "  --threads N          threads per process, one of them a "
	       "writer (default 8)\n"
	       "  --keys N             rows (default 8)\n"
	       "  --duration-s S       seconds of load (default 3)\n"
	       "  --load-delay-ms D    sleep up to D ms between a load's read "
	       "and its fill (default 20)\n"
	       "  --inval-delay-ms D   sleep up to D ms between a commit and "
	       "its invalidation (default 20)\n"
	       "  --stall-ms D         stop a random process for D ms, now "
	       "and then (default 0: never)\n"
	       "  --bound-ms B         a read is stale only if it began more "
	       "than B ms after the\n"
	       "                       write completed (default 0)\n"
	       "  --redis-faults-ms F  every F ms or so, drop every Redis "
	       "connection, or every\n"
	       "                       subscription, or pause Redis, in turn "
	       "(default 0: never)\n"
	       "  --redis-pause-ms P   pause Redis for P ms (default F/4 + 1; "
	       "past the command\n"
	       "                       timeout of 250 ms, the processes' "
	       "breakers open)\n"
	       "  --redis-demote-ms D  add to the Redis faults: Redis made a "
	       "replica of a primary\n"
	       "                       that is not there for D ms (it serves "
	       "reads, refuses writes)\n"
	       "  --redis-full-ms D    add to the Redis faults: Redis full for "
	       "D ms (maxmemory 1,\n"
	       "                       noeviction: it refuses what adds data, "
	       "allows deletes)\n"
	       "  --db-faults-ms F     every F ms or so, terminate the "
	       "processes' connections to\n"
	       "                       the database (PostgreSQL; default 0: "
	       "never); errors are then\n"
	       "                       expected, and do not fail the check\n"
	       "exit status: 0 nothing found, 1 findings, 2 the check could "
	       "not run\n");
}

int app_check(int argc, char **argv)
{
	struct check_cfg cfg = {.procs = 3,
				.threads = 8,
				.keys = 8,
				.seconds = 3,
				.load_delay_ms = 20,
				.inval_delay_ms = 20,
				.index = -1};
	static const struct option opts[] = {
	    {"db", required_argument, NULL, 'd'},
	    {"cache", required_argument, NULL, 'c'},
	    {"naive", no_argument, NULL, 'n'},
	    {"absences", no_argument, NULL, 'a'},
	    {"processes", required_argument, NULL, 'p'},
	    {"threads", required_argument, NULL, 't'},
	    {"keys", required_argument, NULL, 'k'},
	    {"duration-s", required_argument, NULL, 's'},
	    {"load-delay-ms", required_argument, NULL, 'L'},
	    {"inval-delay-ms", required_argument, NULL, 'I'},
	    {"stall-ms", required_argument, NULL, 'S'},
	    {"bound-ms", required_argument, NULL, 'B'},
	    {"redis-faults-ms", required_argument, NULL, 'F'},
	    {"redis-pause-ms", required_argument, NULL, 'P'},
	    {"redis-demote-ms", required_argument, NULL, 'R'},
	    {"redis-full-ms", required_argument, NULL, 'M'},
	    {"db-faults-ms", required_argument, NULL, 'G'},
	    {"child-dir", required_argument, NULL, 'D'},
	    {"child-index", required_argument, NULL, 'X'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		bool ok = true;
		switch (o) {
		case 'd':
			cfg.db_url = optarg;
			break;
		case 'c':
			cfg.cache_url = optarg;
			break;
		case 'n':
			cfg.naive = true;
			break;
		case 'a':
			cfg.absences = true;
			break;
		case 'p':
			ok = app_long("processes", optarg, 1, 64, &cfg.procs);
			break;
		case 't':
			ok = app_long("threads", optarg, 1, 256, &cfg.threads);
			break;
		case 'k':
			ok = app_long("keys", optarg, 1, 100000, &cfg.keys);
			break;
		case 's':
			ok = app_double("duration-s", optarg, 0.1, 3600,
					&cfg.seconds);
			break;
		case 'L':
			ok = app_long("load-delay-ms", optarg, 0, 60000,
				      &cfg.load_delay_ms);
			break;
		case 'I':
			ok = app_long("inval-delay-ms", optarg, 0, 60000,
				      &cfg.inval_delay_ms);
			break;
		case 'S':
			ok = app_long("stall-ms", optarg, 0, 60000,
				      &cfg.stall_ms);
			break;
		case 'B':
			ok = app_long("bound-ms", optarg, 0, 60000,
				      &cfg.bound_ms);
			break;
		case 'F':
			ok = app_long("redis-faults-ms", optarg, 0, 60000,
				      &cfg.faults_ms);
			break;
		case 'P':
			ok = app_long("redis-pause-ms", optarg, 1, 60000,
				      &cfg.pause_ms);
			break;
		case 'R':
			ok = app_long("redis-demote-ms", optarg, 0, 60000,
				      &cfg.demote_ms);
			break;
		case 'M':
			ok = app_long("redis-full-ms", optarg, 0, 60000,
				      &cfg.full_ms);
			break;
		case 'G':
			ok = app_long("db-faults-ms", optarg, 0, 60000,
				      &cfg.db_faults_ms);
			break;
		case 'D':
			cfg.dir = optarg;
			break;
		case 'X':
			ok = app_long("child-index", optarg, 0, 63, &cfg.index);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return 2;
		}
		if (!ok)
			return 2;
	}
	if (!cfg.db_url || !cfg.cache_url) {
		fprintf(stderr, "aside check: --db and --cache are required\n");
		usage(stderr);
		return 2;
	}
	if (strncmp(cfg.cache_url, "redis://", 8) != 0) {
		fprintf(stderr,
			"aside check: --cache must be a redis:// URL: the "
			"processes checked share it, not '%s'\n",
			cfg.cache_url);
		return 2;
	}
	if (cfg.db_faults_ms && !is_postgres(cfg.db_url)) {
		fprintf(stderr, "aside check: --db-faults-ms needs a "
				"postgresql:// database\n");
		return 2;
	}
	if (!cfg.pause_ms)
		cfg.pause_ms = cfg.faults_ms / 4 + 1;
	if (cfg.dir && cfg.index >= 0)
		return child(&cfg);
	return parent(&cfg, argc, argv);
}
