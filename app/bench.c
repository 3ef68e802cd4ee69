/*
 * bench.c -- `aside bench`: drives the UserService in process with a Zipf
 * (or trace) key popularity and a read/write mix, in three modes side by
 * side: no cache, the seed's naive cache-aside (plain get/set, no
 * coalescing), and aside.  Reports throughput, latency percentiles, hit
 * ratio, database queries per 1,000 requests, waiters per load, errors and
 * stale reads (a row older than a write that returned before the read
 * began), as a table and as CSV.
 */
#include "app.h"

#include <aside/users.h>
#include <curl/curl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum mode { M_NOCACHE, M_NAIVE, M_ASIDE, M_HTTP, NMODES };
static const char *const mode_names[NMODES] = {"nocache", "naive", "aside",
					       "http"};

/* SIGINT or SIGTERM: the run stops within a second, cleaning up after
 * itself (its temporary database). */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Ids no user has (--absent-pct) start past any id a benchmark creates. */
#define ABSENT_BASE 1000000000LL

struct config {
	long users, threads, read_pct, delay_us, absent_pct;
	double theta, seconds;
	const char *db_url, *cache_url, *trace, *csv_dir, *http;
	bool modes[NMODES];
};

/* ---- keys: Zipf (Gray et al., as YCSB) or a trace ----------------------- */

struct zipf {
	long n;
	double theta, alpha, zetan, eta, half_pow;
};

static void zipf_init(struct zipf *z, long n, double theta)
{
	double zeta2 = 1 + pow(0.5, theta), zetan = 0;
	for (long i = 1; i <= n; i++)
		zetan += 1 / pow((double)i, theta);
	z->n = n;
	z->theta = theta;
	z->zetan = zetan;
	z->alpha = 1 / (1 - theta);
	z->eta = (1 - pow(2.0 / (double)n, 1 - theta)) / (1 - zeta2 / zetan);
	z->half_pow = 1 + pow(0.5, theta);
}

/* A rank in [0, n), 0 the most popular. */
static long zipf_next(const struct zipf *z, double u)
{
	double uz = u * z->zetan;
	if (uz < 1)
		return 0;
	if (uz < z->half_pow)
		return 1;
	long r = (long)((double)z->n * pow(z->eta * u - z->eta + 1, z->alpha));
	return r < z->n ? r : z->n - 1;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- numbered writes, so that a read can tell a stale answer ---------- */

/*
 * Every write gives the user a name that ends in a number, larger than any
 * this user had before: this run's base (the wall clock in microseconds
 * when the bench started, above anything an earlier run wrote) plus a count
 * of the user's writes.  A write that began while no other write to the
 * user was in flight comes after every write with a smaller number (they
 * have all returned), so once it returns, every row the database holds for
 * the user carries its number or a larger one: the number becomes the
 * user's floor.  A read that began after that and answers a smaller number
 * is stale: the cache served a row older than a write that had returned
 * before the read was made.  (When writes to one user overlap, the database
 * may commit them in either order, so the floor waits for the next write
 * that begins alone: a stale read may then go uncounted, but none is
 * counted that was not.  Making writes take turns instead, under a lock
 * held across the write, cost 14% of the bench's writes on SQLite.)
 */
#define WRITING_BITS 24 /* a user's writes in flight, under its count */

struct numbering {
	uint64_t base;
	_Atomic uint64_t *state, *floor; /* per user */
};

static int numbering_init(struct numbering *nb, long users)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	nb->base = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	nb->state = calloc((size_t)users + 1, sizeof(*nb->state));
	nb->floor = calloc((size_t)users + 1, sizeof(*nb->floor));
	return nb->state && nb->floor ? 0 : -1;
}

static void numbering_free(struct numbering *nb)
{
	free((void *)nb->state);
	free((void *)nb->floor);
}

/*
 * A write to user id begins: its number, and in *alone whether no other
 * write to the user was in flight (both read in one atomic step).
 */
static uint64_t numbering_begin(struct numbering *nb, int64_t id, bool *alone)
{
	uint64_t was = atomic_fetch_add_explicit(
	    &nb->state[id], (UINT64_C(1) << WRITING_BITS) + 1,
	    memory_order_seq_cst);
	*alone = (was & ((UINT64_C(1) << WRITING_BITS) - 1)) == 0;
	return nb->base + (was >> WRITING_BITS) + 1;
}

/* The write numbered n returned (ok: it succeeded). */
static void numbering_end(struct numbering *nb, int64_t id, uint64_t n,
			  bool alone, bool ok)
{
	atomic_fetch_sub_explicit(&nb->state[id], 1, memory_order_seq_cst);
	if (!ok || !alone)
		return;
	uint64_t f = atomic_load_explicit(&nb->floor[id], memory_order_relaxed);
	while (f < n && !atomic_compare_exchange_weak_explicit(
			    &nb->floor[id], &f, n, memory_order_release,
			    memory_order_relaxed))
		;
}

/* The number a user's name ends in (" v" and digits), or 0. */
static uint64_t write_number(const char *name, size_t len)
{
	for (size_t i = len; i >= 2; i--)
		if (name[i - 2] == ' ' && name[i - 1] == 'v')
			return strtoull(name + i, NULL, 10);
	return 0;
}

/* ---- the seed's naive cache: a map, get and set, nothing else ---------- */

#define NAIVE_STRIPES 64
struct naive_entry {
	struct naive_entry *next;
	user u;
};
struct naive {
	struct {
		pthread_mutex_t lock;
		struct naive_entry **buckets;
	} stripe[NAIVE_STRIPES];
	long nbuckets;
};

static struct naive *naive_new(long users)
{
	struct naive *n = calloc(1, sizeof(*n));
	n->nbuckets = users / NAIVE_STRIPES + 1;
	for (int i = 0; i < NAIVE_STRIPES; i++) {
		pthread_mutex_init(&n->stripe[i].lock, NULL);
		n->stripe[i].buckets =
		    calloc((size_t)n->nbuckets, sizeof(struct naive_entry *));
	}
	return n;
}

static void naive_free(struct naive *n)
{
	for (int i = 0; i < NAIVE_STRIPES; i++) {
		for (long b = 0; b < n->nbuckets; b++)
			for (struct naive_entry *e = n->stripe[i].buckets[b],
						*x;
			     e; e = x) {
				x = e->next;
				free(e);
			}
		free(n->stripe[i].buckets);
		pthread_mutex_destroy(&n->stripe[i].lock);
	}
	free(n);
}

static bool naive_get(struct naive *n, int64_t id, user *out)
{
	int s = (int)(id % NAIVE_STRIPES);
	long b = (id / NAIVE_STRIPES) % n->nbuckets;
	bool hit = false;
	pthread_mutex_lock(&n->stripe[s].lock);
	for (struct naive_entry *e = n->stripe[s].buckets[b]; e; e = e->next)
		if (e->u.id == id) {
			*out = e->u;
			hit = true;
			break;
		}
	pthread_mutex_unlock(&n->stripe[s].lock);
	return hit;
}

static void naive_set(struct naive *n, const user *u, bool remove)
{
	int s = (int)(u->id % NAIVE_STRIPES);
	long b = (u->id / NAIVE_STRIPES) % n->nbuckets;
	pthread_mutex_lock(&n->stripe[s].lock);
	struct naive_entry **pp = &n->stripe[s].buckets[b];
	while (*pp && (*pp)->u.id != u->id)
		pp = &(*pp)->next;
	if (remove) {
		if (*pp) {
			struct naive_entry *e = *pp;
			*pp = e->next;
			free(e);
		}
	} else if (*pp) {
		(*pp)->u = *u;
	} else {
		struct naive_entry *e = malloc(sizeof(*e));
		if (e) {
			e->u = *u;
			e->next = NULL;
			*pp = e;
		}
	}
	pthread_mutex_unlock(&n->stripe[s].lock);
}

/* ---- one run ------------------------------------------------------------ */

struct shared {
	const struct config *cfg;
	enum mode mode;
	user_repo db;
	user_service *svc;
	struct naive *naive;
	const struct zipf *zipf;
	const uint32_t *trace;
	size_t ntrace;
	struct numbering *nb;
	_Atomic int stop;
	_Atomic uint64_t ops, reads, errors, stale, naive_hits, naive_misses;
};

struct worker {
	struct shared *sh;
	int id;
	uint64_t hist[ASIDE_HIST_BUCKETS];
	CURL *curl; /* http mode: one keep-alive connection a thread */
	struct curl_slist *headers;
	char body[1024]; /* http mode: the start of the last answer */
	size_t body_len;
};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/* Keeps the start of an answer in the worker (enough for a user). */
static size_t capture(char *p, size_t size, size_t n, void *arg)
{
	struct worker *w = arg;
	size_t k = size * n, room = sizeof(w->body) - 1 - w->body_len;
	memcpy(w->body + w->body_len, p, k < room ? k : room);
	w->body_len += k < room ? k : room;
	w->body[w->body_len] = '\0';
	return k;
}

/* The number of the name in the last answer (write_number), or 0. */
static uint64_t http_write_number(const struct worker *w)
{
	const char *at = strstr(w->body, "\"name\":\"");
	if (!at)
		return 0;
	at += 8;
	const char *end = strchr(at, '"');
	return end ? write_number(at, (size_t)(end - at)) : 0;
}

/* One request to aside serve; ASIDE_OK for 2xx, else an error status. */
static int http_op(struct worker *w, const char *base, bool read, const user *u)
{
	char url[256], body[600];
	snprintf(url, sizeof(url), "%s/users/%lld", base, (long long)u->id);
	CURL *c = w->curl;
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (read) {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	} else {
		snprintf(body, sizeof(body),
			 "{\"name\":\"%s\",\"email\":\"%s\"}", u->name,
			 u->email);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	long code = 0;
	w->body_len = 0;
	w->body[0] = '\0';
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
	if (rc == CURLE_OK && code == 404)
		return ASIDE_NOT_FOUND;
	return rc == CURLE_OK && code / 100 == 2 ? ASIDE_OK
						 : ASIDE_EUNAVAILABLE;
}

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	const struct config *cfg = sh->cfg;
	uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(w->id + 1);
	size_t tpos = (size_t)w->id * 7919;
	user u;
	while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
		int64_t id;
		if (sh->trace) {
			id = (int64_t)(sh->trace[tpos++ % sh->ntrace] %
				       (uint32_t)cfg->users) +
			     1;
		} else {
			double x = (double)(rng(&s) >> 11) * 0x1p-53;
			id = zipf_next(sh->zipf, x) + 1;
		}
		bool read = (long)(rng(&s) % 100) < cfg->read_pct;
		/* A read of an id no user has, as popular as the id it is
		 * drawn from: answered not found, never stale. */
		bool absent = read && (long)(rng(&s) % 100) < cfg->absent_pct;
		if (absent)
			id += ABSENT_BASE;
		struct numbering *nb = sh->nb;
		uint64_t number = 0, floor = 0;
		bool alone = false;
		if (absent) {
			/* no write numbers it */
		} else if (read) {
			floor = atomic_load_explicit(&nb->floor[id],
						     memory_order_acquire);
		} else {
			number = numbering_begin(nb, id, &alone);
			memset(&u, 0, sizeof(u));
			u.id = id;
			snprintf(u.name, sizeof(u.name), "User %lld v%llu",
				 (long long)id, (unsigned long long)number);
			snprintf(u.email, sizeof(u.email),
				 "user%lld@example.com", (long long)id);
		}
		int64_t t0 = mono_us();
		int rc = ASIDE_OK;
		if (sh->mode == M_HTTP) {
			if (read) {
				atomic_fetch_add_explicit(&sh->reads, 1,
							  memory_order_relaxed);
				u.id = id;
			}
			rc = http_op(w, cfg->http, read, &u);
		} else if (read) {
			atomic_fetch_add_explicit(&sh->reads, 1,
						  memory_order_relaxed);
			if (sh->mode == M_ASIDE) {
				rc = user_service_get(sh->svc, id, &u);
			} else if (sh->mode == M_NAIVE &&
				   naive_get(sh->naive, id, &u)) {
				atomic_fetch_add_explicit(&sh->naive_hits, 1,
							  memory_order_relaxed);
			} else {
				rc = sh->db.ops->get(sh->db.self, id, &u);
				if (sh->mode == M_NAIVE) {
					atomic_fetch_add_explicit(
					    &sh->naive_misses, 1,
					    memory_order_relaxed);
					if (rc == ASIDE_OK)
						naive_set(sh->naive, &u, false);
				}
			}
		} else if (sh->mode == M_ASIDE) {
			rc = user_service_update(sh->svc, &u);
		} else {
			rc = sh->db.ops->update(sh->db.self, &u);
			if (sh->mode == M_NAIVE && rc == ASIDE_OK)
				naive_set(sh->naive, &u, true);
		}
		if (!read)
			numbering_end(nb, id, number, alone, rc == ASIDE_OK);
		else if (rc == ASIDE_OK && floor) {
			uint64_t got =
			    sh->mode == M_HTTP
				? http_write_number(w)
				: write_number(u.name, strlen(u.name));
			if (got < floor)
				atomic_fetch_add_explicit(&sh->stale, 1,
							  memory_order_relaxed);
		}
		w->hist[aside_hist_bucket((uint64_t)(mono_us() - t0))]++;
		/* An absent id must be answered not found, any other found. */
		if (absent)
			rc = rc == ASIDE_NOT_FOUND ? ASIDE_OK
			     : rc == ASIDE_OK	   ? ASIDE_EINTERNAL
						   : rc;
		if (rc != ASIDE_OK)
			atomic_fetch_add_explicit(&sh->errors, 1,
						  memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->ops, 1, memory_order_relaxed);
	}
	return NULL;
}

struct body {
	char *p;
	size_t len;
};

static size_t keep(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t k = size * n;
	char *q = realloc(b->p, b->len + k + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, p, k);
	b->p = q;
	b->len += k;
	b->p[b->len] = '\0';
	return k;
}

/* The counters bench reads from a server's /metrics. */
struct scraped {
	int ntiers;
	char names[ASIDE_TIERS_MAX][16];
	double hits[ASIDE_TIERS_MAX], misses, loads, shared;
};

/* The value after the first occurrence of name in text; false if none. */
static bool metric(const char *text, const char *name, double *v)
{
	const char *at = strstr(text, name);
	if (!at)
		return false;
	*v = atof(at + strlen(name));
	return true;
}

/* A server's counters: each tier's hits (and name), misses, loads, shared
 * loads.  False if it did not answer, or left one out. */
static bool scrape(const char *base, struct scraped *sc)
{
	struct body b = {0};
	char url[256];
	snprintf(url, sizeof(url), "%s/metrics", base);
	CURL *c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	bool ok = curl_easy_perform(c) == CURLE_OK && b.p;
	curl_easy_cleanup(c);
	memset(sc, 0, sizeof(*sc));
	for (int t = 0; ok && t < ASIDE_TIERS_MAX; t++) {
		/* aside_cache_hits_total{tier="1",name="mem"} 12 */
		char head[64];
		snprintf(head, sizeof(head),
			 "\naside_cache_hits_total{tier=\"%d\",name=\"", t + 1);
		const char *at = strstr(b.p, head);
		if (!at)
			break;
		at += strlen(head);
		const char *end = strstr(at, "\"} ");
		if (!end)
			break;
		snprintf(sc->names[t], sizeof(sc->names[t]), "%.*s",
			 (int)(end - at), at);
		sc->hits[t] = atof(end + 3);
		sc->ntiers = t + 1;
	}
	ok = ok && sc->ntiers > 0 &&
	     metric(b.p, "\naside_cache_misses_total ", &sc->misses) &&
	     metric(b.p, "\naside_db_loads_total ", &sc->loads) &&
	     metric(b.p, "\naside_shared_loads_total ", &sc->shared);
	free(b.p);
	return ok;
}

/* Creates users 1..N through the API, unless the last one is there. */
static int http_populate(const char *base, long n)
{
	char url[256];
	snprintf(url, sizeof(url), "%s/users/%ld", base, n);
	CURL *c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	long code = 0;
	if (curl_easy_perform(c) != CURLE_OK) {
		fprintf(stderr, "aside bench: %s does not answer\n", base);
		curl_easy_cleanup(c);
		return 1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	int status = 0;
	if (code == 404) {
		struct curl_slist *h =
		    curl_slist_append(NULL, "Content-Type: application/json");
		snprintf(url, sizeof(url), "%s/users", base);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		for (long i = 1; i <= n && status == 0 && !interrupted; i++) {
			char body[160];
			snprintf(body, sizeof(body),
				 "{\"name\":\"User %ld\",\"email\":"
				 "\"user%ld@example.com\"}",
				 i, i);
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
			if (curl_easy_perform(c) != CURLE_OK)
				status = 1;
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
			if (code != 201)
				status = 1;
		}
		curl_slist_free_all(h);
		if (status)
			fprintf(stderr,
				"aside bench: could not create users "
				"through %s\n",
				base);
	}
	curl_easy_cleanup(c);
	return status;
}

struct result {
	uint64_t hist[ASIDE_HIST_BUCKETS];
	double ops_s, p50, p99, p999, hit_ratio, db_per_1000, waiters;
	/* The reads each tier served, and its name; naive's map is its one
	 * tier, nocache has none. */
	int ntiers;
	char tier_names[ASIDE_TIERS_MAX][16];
	uint64_t tier_hits[ASIDE_TIERS_MAX];
	uint64_t ops, reads, errors, stale, db_reads, hits, misses, loads;
};

/* The share of all reads that tier t served. */
static double tier_ratio(const struct result *r, int t)
{
	return r->reads ? (double)r->tier_hits[t] / (double)r->reads : 0;
}

static int run_mode(const struct config *cfg, enum mode mode, user_repo inner,
		    const struct zipf *z, const uint32_t *trace, size_t ntrace,
		    struct numbering *nb, FILE *series, struct result *res)
{
	struct slow_repo slow;
	struct shared sh = {.cfg = cfg,
			    .mode = mode,
			    .zipf = z,
			    .trace = trace,
			    .ntrace = ntrace,
			    .nb = nb};
	sh.db = slow_repo_wrap(&slow, inner, cfg->delay_us);
	aside_cache *cache = NULL;
	aside_error err;
	if (mode == M_ASIDE) {
		if (aside_cache_open(cfg->cache_url, &cache, &err) !=
		    ASIDE_OK) {
			fprintf(stderr, "aside bench: %s\n", err.message);
			return 1;
		}
		sh.svc = user_service_new(sh.db, cache);
	} else if (mode == M_NAIVE) {
		sh.naive = naive_new(cfg->users);
	}
	struct worker *w = calloc((size_t)cfg->threads, sizeof(*w));
	pthread_t *t = calloc((size_t)cfg->threads, sizeof(*t));
	struct scraped before, after;
	if (mode == M_HTTP && !scrape(cfg->http, &before)) {
		fprintf(stderr, "aside bench: no metrics from %s\n", cfg->http);
		free(w);
		free(t);
		return 1;
	}
	int64_t start = mono_us();
	for (long i = 0; i < cfg->threads; i++) {
		w[i] = (struct worker){.sh = &sh, .id = (int)i};
		if (mode == M_HTTP) {
			w[i].curl = curl_easy_init();
			curl_easy_setopt(w[i].curl, CURLOPT_WRITEFUNCTION,
					 capture);
			curl_easy_setopt(w[i].curl, CURLOPT_WRITEDATA, &w[i]);
			curl_easy_setopt(w[i].curl, CURLOPT_TIMEOUT, 30L);
			w[i].headers = curl_slist_append(
			    NULL, "Content-Type: application/json");
			curl_easy_setopt(w[i].curl, CURLOPT_HTTPHEADER,
					 w[i].headers);
		}
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	bool tty = isatty(2);
	uint64_t last_ops = 0, last_gets = 0, last_hits = 0, last_reads = 0;
	for (int sec = 1; sec <= (int)ceil(cfg->seconds); sec++) {
		int64_t until =
		    start + (int64_t)(fmin(sec, cfg->seconds) * 1e6);
		int64_t now = mono_us();
		if (until > now)
			usleep((useconds_t)(until - now));
		if (interrupted)
			break;
		uint64_t ops = atomic_load(&sh.ops);
		uint64_t gets = atomic_load(&slow.gets);
		uint64_t reads = atomic_load(&sh.reads), hits = 0;
		if (mode == M_ASIDE) {
			aside_metrics m;
			aside_cache_metrics(cache, &m);
			hits = m.hits;
		} else if (mode == M_NAIVE) {
			hits = atomic_load(&sh.naive_hits);
		}
		if (series && mode != M_HTTP)
			fprintf(series, "%s,%d,%llu,%llu,%llu,%llu\n",
				mode_names[mode], sec,
				(unsigned long long)(ops - last_ops),
				(unsigned long long)(gets - last_gets),
				(unsigned long long)(reads - last_reads),
				(unsigned long long)(hits - last_hits));
		if (tty)
			fprintf(
			    stderr,
			    "\r%-8s %3d/%.0fs %10.0f ops/s %8llu db reads/s ",
			    mode_names[mode], sec, cfg->seconds,
			    (double)(ops - last_ops),
			    (unsigned long long)(gets - last_gets));
		last_ops = ops;
		last_gets = gets;
		last_reads = reads;
		last_hits = hits;
	}
	atomic_store(&sh.stop, 1);
	for (long i = 0; i < cfg->threads; i++)
		pthread_join(t[i], NULL);
	double secs = (double)(mono_us() - start) / 1e6;
	if (tty)
		fprintf(stderr, "\r%60s\r", "");

	uint64_t hist[ASIDE_HIST_BUCKETS] = {0};
	for (long i = 0; i < cfg->threads; i++) {
		for (int b = 0; b < ASIDE_HIST_BUCKETS; b++)
			hist[b] += w[i].hist[b];
		if (w[i].curl)
			curl_easy_cleanup(w[i].curl);
		curl_slist_free_all(w[i].headers);
	}
	memset(res, 0, sizeof(*res));
	memcpy(res->hist, hist, sizeof(hist));
	res->ops = atomic_load(&sh.ops);
	res->reads = atomic_load(&sh.reads);
	res->errors = atomic_load(&sh.errors);
	res->stale = atomic_load(&sh.stale);
	res->db_reads = atomic_load(&slow.gets);
	res->ops_s = (double)res->ops / secs;
	res->p50 = aside_hist_quantile(hist, 0.50);
	res->p99 = aside_hist_quantile(hist, 0.99);
	res->p999 = aside_hist_quantile(hist, 0.999);
	int status = 0;
	if (mode == M_ASIDE) {
		aside_metrics m;
		aside_cache_metrics(cache, &m);
		res->hits = m.hits;
		res->misses = m.misses;
		res->loads = m.loads;
		res->waiters =
		    m.loads ? (double)m.shared_loads / (double)m.loads : 0;
		res->ntiers = m.ntiers;
		uint64_t by_tier = 0;
		for (int i = 0; i < m.ntiers; i++) {
			snprintf(res->tier_names[i], sizeof(res->tier_names[i]),
				 "%s", m.tier_names[i] ? m.tier_names[i] : "?");
			res->tier_hits[i] = m.tier_hits[i];
			by_tier += m.tier_hits[i];
		}
		if (by_tier != m.hits) {
			fprintf(stderr,
				"aside bench: the tiers' hits add up to %llu, "
				"not %llu\n",
				(unsigned long long)by_tier,
				(unsigned long long)m.hits);
			status = 1;
		}
		/* The figures must add up, or the report is wrong. */
		if (m.hits + m.misses != res->reads ||
		    m.loads != res->db_reads ||
		    m.loads + m.shared_loads + m.wait_timeouts != m.misses) {
			fprintf(
			    stderr,
			    "aside bench: counts disagree: hits %llu + misses "
			    "%llu vs reads %llu; loads %llu vs db reads %llu\n",
			    (unsigned long long)m.hits,
			    (unsigned long long)m.misses,
			    (unsigned long long)res->reads,
			    (unsigned long long)m.loads,
			    (unsigned long long)res->db_reads);
			status = 1;
		}
	} else if (mode == M_HTTP) {
		if (!scrape(cfg->http, &after)) {
			fprintf(stderr, "aside bench: no metrics from %s\n",
				cfg->http);
			status = 1;
		}
		res->ntiers = after.ntiers;
		for (int i = 0; i < after.ntiers; i++) {
			memcpy(res->tier_names[i], after.names[i],
			       sizeof(after.names[i]));
			res->tier_hits[i] =
			    (uint64_t)(after.hits[i] - before.hits[i]);
			res->hits += res->tier_hits[i];
		}
		res->misses = (uint64_t)(after.misses - before.misses);
		res->loads = res->db_reads =
		    (uint64_t)(after.loads - before.loads);
		res->waiters = res->loads ? (after.shared - before.shared) /
						(double)res->loads
					  : 0;
	} else if (mode == M_NAIVE) {
		res->hits = atomic_load(&sh.naive_hits);
		res->misses = atomic_load(&sh.naive_misses);
		res->loads = res->misses;
		res->ntiers = 1;
		snprintf(res->tier_names[0], sizeof(res->tier_names[0]), "map");
		res->tier_hits[0] = res->hits;
		if (res->hits + res->misses != res->reads ||
		    res->misses != res->db_reads) {
			fprintf(stderr, "aside bench: naive counts disagree\n");
			status = 1;
		}
	} else {
		res->misses = res->loads = res->reads;
		if (res->db_reads != res->reads) {
			fprintf(stderr,
				"aside bench: nocache counts disagree\n");
			status = 1;
		}
	}
	res->hit_ratio =
	    res->reads ? (double)res->hits / (double)res->reads : 0;
	res->db_per_1000 =
	    res->ops ? 1000.0 * (double)res->db_reads / (double)res->ops : 0;
	user_service_free(sh.svc);
	aside_cache_close(cache);
	if (sh.naive)
		naive_free(sh.naive);
	free(w);
	free(t);
	return status;
}

/* ---- setup -------------------------------------------------------------- */

/*
 * --modes: a comma-separated list of nocache, naive and aside, each at most
 * once.  False, after saying why, for anything else or an empty list.
 */
static bool parse_modes(const char *list, bool modes[NMODES])
{
	memset(modes, 0, NMODES * sizeof(bool));
	for (const char *p = list;;) {
		size_t len = strcspn(p, ",");
		int found = -1;
		for (int i = 0; i < M_HTTP; i++)
			if (strlen(mode_names[i]) == len &&
			    strncmp(p, mode_names[i], len) == 0)
				found = i;
		if (found < 0 || modes[found]) {
			fprintf(stderr,
				"aside: --modes wants a list of nocache, "
				"naive and aside, each once, not '%s'\n",
				list);
			return false;
		}
		modes[found] = true;
		if (!p[len])
			return true;
		p += len + 1;
	}
}

/* A trace's keys; NULL after saying why if it has none, or a bad line. */
static uint32_t *load_trace(const char *path, size_t *n)
{
	gzFile in = gzopen(path, "rb");
	if (!in) {
		fprintf(stderr, "aside bench: %s: cannot open\n", path);
		return NULL;
	}
	size_t cap = 1 << 16;
	uint32_t *keys = malloc(cap * sizeof(*keys));
	char line[64];
	unsigned long lineno = 0;
	*n = 0;
	while (keys && gzgets(in, line, sizeof(line))) {
		lineno++;
		unsigned long long k;
		int kind = app_trace_key(line, &k);
		if (kind == 0)
			continue;
		if (kind < 0) {
			app_bad_trace_line("bench", path, lineno, line);
			free(keys);
			gzclose(in);
			return NULL;
		}
		if (*n == cap) {
			uint32_t *more = realloc(keys, 2 * cap * sizeof(*keys));
			if (!more) {
				free(keys);
				keys = NULL;
				break;
			}
			keys = more;
			cap *= 2;
		}
		/* Used as key % users + 1: the low bits are enough. */
		keys[(*n)++] = (uint32_t)k;
	}
	gzclose(in);
	if (keys && *n == 0) {
		fprintf(stderr, "aside bench: %s: no keys\n", path);
		free(keys);
		keys = NULL;
	} else if (!keys) {
		fprintf(stderr, "aside bench: %s: out of memory\n", path);
	}
	return keys;
}

/* Fills the database with users 1..N (ids are assigned in order). */
static int populate(user_repo db, long n)
{
	user probe;
	if (db.ops->get(db.self, n, &probe) == ASIDE_OK)
		return 0; /* already there */
	for (long i = 1; i <= n; i++) {
		if (interrupted)
			return 1;
		user u;
		memset(&u, 0, sizeof(u));
		snprintf(u.name, sizeof(u.name), "User %ld", i);
		snprintf(u.email, sizeof(u.email), "user%ld@example.com", i);
		if (db.ops->create(db.self, &u) != ASIDE_OK) {
			fprintf(stderr,
				"aside bench: could not create users\n");
			return 1;
		}
		if (u.id != i) {
			fprintf(stderr,
				"aside bench: the database already has other "
				"users; give an empty one\n");
			return 1;
		}
	}
	return 0;
}

/*
 * PNG charts of the CSV files with gnuplot, when it is installed
 * (scripts/bootstrap bench): the latency distribution of each mode, and
 * requests and database reads per second over the run.
 */
static void charts(const char *dir)
{
	if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
		fprintf(stderr, "aside bench: no gnuplot, no charts "
				"(scripts/bootstrap bench installs it)\n");
		return;
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/charts.gp", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return;
	fprintf(
	    f,
	    "set datafile separator ','\n"
	    "set terminal png size 900,500\n"
	    "set key top left\n"
	    "modes = system(\"tail -n +2 '%s/summary.csv' | cut -d, -f1\")\n"
	    "set output '%s/latency.png'\n"
	    "set title 'Latency distribution'\n"
	    "set logscale x\nset xlabel 'latency (us)'\n"
	    "set ylabel 'fraction of requests at most this slow'\n"
	    "plot for [m in modes] '%s/latency.csv' using "
	    "(strcol(1) eq m ? $2 : NaN):3 with lines lw 2 title m\n"
	    "unset logscale x\n"
	    "set output '%s/series.png'\n"
	    "set title 'Requests and database reads per second'\n"
	    "set xlabel 'second'\nset ylabel 'per second'\n"
	    "plot for [m in modes] '%s/series.csv' using "
	    "(strcol(1) eq m ? $2 : NaN):3 with linespoints title m.' "
	    "requests', "
	    "for [m in modes] '%s/series.csv' using "
	    "(strcol(1) eq m ? $2 : NaN):4 with lines dt 2 title m.' db "
	    "reads'\n"
	    "set output '%s/hit-ratio.png'\n"
	    "set title 'Hit ratio per second'\n"
	    "set ylabel 'hits / reads'\nset yrange [0:1]\n"
	    "plot for [m in modes] '%s/series.csv' using "
	    "(strcol(1) eq m ? $2 : NaN):($5 > 0 ? $6 / $5 : NaN) "
	    "with linespoints title m\n",
	    dir, dir, dir, dir, dir, dir, dir, dir);
	fclose(f);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>&1", path);
	if (system(cmd) == 0)
		fprintf(stderr,
			"aside bench: charts in %s: latency.png, series.png, "
			"hit-ratio.png\n",
			dir);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: aside bench [OPTIONS]\n"
	    "  --users N          users in the database (default 100000)\n"
	    "  --theta T          Zipf skew of the key popularity (default "
	    "0.99)\n"
	    "  --trace FILE       take keys from a trace (plain or .gz) "
	    "instead: key %% N + 1\n"
	    "  --read-pct P       reads in percent, the rest updates "
	    "(default 95)\n"
	    "  --absent-pct P     of the reads, P percent are of ids no user "
	    "has (as popular as\n"
	    "                     the others; 404s over HTTP; default 0)\n"
	    "  --threads N        client threads (default 2)\n"
	    "  --duration-s S     seconds per mode (default 10)\n"
	    "  --db-delay-us D    added to each database read (default 0)\n"
	    "  --db URL           database (default: a new SQLite file in "
	    "a temporary directory)\n"
	    "  --cache URL        aside's cache (default mem://, 100000 "
	    "entries)\n"
	    "  --modes LIST       any of nocache,naive,aside (default all)\n"
	    "  --csv DIR          write summary.csv, series.csv, latency.csv "
	    "and (with gnuplot) PNG charts there\n"
	    "  --http URL         drive aside serve at URL instead (GET and "
	    "PUT /users/{id};\n"
	    "                     creates the users first if the server "
	    "has none)\n"
	    "Ctrl-C (or SIGTERM) stops it within a second, removing its "
	    "temporary database (exit 130).\n");
}

int app_bench(int argc, char **argv)
{
	struct config cfg = {.users = 100000,
			     .threads = 2,
			     .read_pct = 95,
			     .theta = 0.99,
			     .seconds = 10,
			     .cache_url = "mem://",
			     .modes = {true, true, true, false}};
	static const struct option opts[] = {
	    {"users", required_argument, NULL, 'u'},
	    {"theta", required_argument, NULL, 'z'},
	    {"trace", required_argument, NULL, 'f'},
	    {"read-pct", required_argument, NULL, 'r'},
	    {"absent-pct", required_argument, NULL, 'a'},
	    {"threads", required_argument, NULL, 't'},
	    {"duration-s", required_argument, NULL, 's'},
	    {"db-delay-us", required_argument, NULL, 'D'},
	    {"db", required_argument, NULL, 'd'},
	    {"cache", required_argument, NULL, 'c'},
	    {"modes", required_argument, NULL, 'm'},
	    {"csv", required_argument, NULL, 'o'},
	    {"http", required_argument, NULL, 'H'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int o;
	bool ok = true;
	while (ok && (o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'u':
			ok =
			    app_long("users", optarg, 1, 100000000, &cfg.users);
			break;
		case 'z':
			ok = app_double("theta", optarg, 0.01, 0.9999,
					&cfg.theta);
			break;
		case 'f':
			cfg.trace = optarg;
			break;
		case 'r':
			ok =
			    app_long("read-pct", optarg, 0, 100, &cfg.read_pct);
			break;
		case 'a':
			ok = app_long("absent-pct", optarg, 0, 100,
				      &cfg.absent_pct);
			break;
		case 't':
			ok = app_long("threads", optarg, 1, 1024, &cfg.threads);
			break;
		case 's':
			ok = app_double("duration-s", optarg, 0.01, 86400,
					&cfg.seconds);
			break;
		case 'D':
			ok = app_long("db-delay-us", optarg, 0, 60000000,
				      &cfg.delay_us);
			break;
		case 'd':
			cfg.db_url = optarg;
			break;
		case 'c':
			cfg.cache_url = optarg;
			break;
		case 'o':
			cfg.csv_dir = optarg;
			break;
		case 'H':
			cfg.http = optarg;
			break;
		case 'm':
			if (!parse_modes(optarg, cfg.modes))
				return 2;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!ok) {
		usage(stderr);
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "aside bench: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}

	size_t ntrace = 0;
	uint32_t *trace = NULL;
	if (cfg.trace && !(trace = load_trace(cfg.trace, &ntrace)))
		return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt; /* no SA_RESTART: sleeps end early */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	char dir[] = "/tmp/aside-bench-XXXXXX", url[96];
	bool own_db = !cfg.db_url && !cfg.http;
	if (own_db) {
		if (!mkdtemp(dir)) {
			perror("aside bench");
			free(trace);
			return 1;
		}
		snprintf(url, sizeof(url), "sqlite:%s/users.db", dir);
		cfg.db_url = url;
	}
	user_repo db = {0};
	aside_error err;
	int status = 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (cfg.http) {
		memset(cfg.modes, 0, sizeof(cfg.modes));
		cfg.modes[M_HTTP] = true;
		fprintf(stderr, "aside bench: %ld users through %s...\n",
			cfg.users, cfg.http);
		if (http_populate(cfg.http, cfg.users) != 0)
			goto out;
	} else {
		cfg.modes[M_HTTP] = false;
		if (cfg.modes[M_ASIDE]) {
			/* A cache URL that does not open fails now, not
			 * after the other modes have run. */
			aside_cache *probe;
			if (aside_cache_open(cfg.cache_url, &probe, &err) !=
			    ASIDE_OK) {
				fprintf(stderr, "aside bench: %s\n",
					err.message);
				goto out;
			}
			aside_cache_close(probe);
		}
		if (user_repo_open(cfg.db_url, &db, &err) != ASIDE_OK) {
			fprintf(stderr, "aside bench: %s\n", err.message);
			goto out;
		}
		fprintf(stderr, "aside bench: %ld users in %s...\n", cfg.users,
			cfg.db_url);
		if (populate(db, cfg.users) != 0)
			goto out_db;
	}
	struct zipf z;
	zipf_init(&z, cfg.users, cfg.theta);
	struct numbering nb;
	if (numbering_init(&nb, cfg.users) != 0) {
		fprintf(stderr, "aside bench: out of memory\n");
		goto out_nb;
	}

	FILE *summary = NULL, *series = NULL, *latency = NULL;
	if (cfg.csv_dir) {
		char p[512];
		mkdir(cfg.csv_dir, 0755);
		snprintf(p, sizeof(p), "%s/summary.csv", cfg.csv_dir);
		summary = fopen(p, "w");
		snprintf(p, sizeof(p), "%s/series.csv", cfg.csv_dir);
		series = fopen(p, "w");
		snprintf(p, sizeof(p), "%s/latency.csv", cfg.csv_dir);
		latency = fopen(p, "w");
		if (!summary || !series || !latency) {
			fprintf(stderr, "aside bench: cannot write to %s\n",
				cfg.csv_dir);
			goto out_nb;
		}
		fprintf(summary, "mode,ops,ops_per_s,p50_us,p99_us,p999_us,"
				 "hit_ratio,db_reads_per_1000,waiters_per_load,"
				 "errors,stale_reads,tier1,tier1_hit_ratio,"
				 "tier2,tier2_hit_ratio\n");
		fprintf(series, "mode,second,ops,db_reads,reads,hits\n");
		fprintf(latency, "mode,us,cumulative_fraction\n");
	}
	printf("keys: %s; %ld%% reads (%ld%% of them of ids no user has); %ld "
	       "threads; %.0f s a mode; database reads +%ld us\n",
	       cfg.trace ? cfg.trace : "zipf", cfg.read_pct, cfg.absent_pct,
	       cfg.threads, cfg.seconds, cfg.delay_us);
	if (!cfg.trace)
		printf("zipf theta %.2f over %ld users\n", cfg.theta,
		       cfg.users);
	printf("\n%-8s %12s %10s %10s %10s %9s %11s %9s %7s %7s  %s\n", "mode",
	       "ops/s", "p50 us", "p99 us", "p99.9 us", "hit ratio",
	       "db/1000 req", "waiters", "errors", "stale",
	       "hit ratio by tier");
	status = 0;
	for (int m = 0; m < NMODES; m++) {
		if (!cfg.modes[m])
			continue;
		struct result r = {0};
		if (run_mode(&cfg, (enum mode)m, db, &z, trace, ntrace, &nb,
			     series, &r) != 0) {
			status = 1;
			break;
		}
		if (interrupted)
			break;
		printf("%-8s %12.0f %10.1f %10.1f %10.1f %9.4f %11.1f %9.2f "
		       "%7llu %7llu ",
		       mode_names[m], r.ops_s, r.p50, r.p99, r.p999,
		       r.hit_ratio, r.db_per_1000, r.waiters,
		       (unsigned long long)r.errors,
		       (unsigned long long)r.stale);
		for (int t = 0; t < r.ntiers; t++)
			printf(" %s %.4f", r.tier_names[t], tier_ratio(&r, t));
		printf(r.ntiers ? "\n" : " -\n");
		fflush(stdout);
		if (latency && r.ops) {
			uint64_t cum = 0;
			for (int b = 0; b < ASIDE_HIST_BUCKETS; b++) {
				if (!r.hist[b])
					continue;
				cum += r.hist[b];
				fprintf(
				    latency, "%s,%llu,%.6f\n", mode_names[m],
				    (unsigned long long)
					aside_hist_bucket_low_us(
					    b + 1 < ASIDE_HIST_BUCKETS ? b + 1
								       : b),
				    (double)cum / (double)r.ops);
			}
		}
		if (summary)
			fprintf(summary,
				"%s,%llu,%.0f,%.1f,%.1f,%.1f,%.4f,%.1f,"
				"%.2f,%llu,%llu",
				mode_names[m], (unsigned long long)r.ops,
				r.ops_s, r.p50, r.p99, r.p999, r.hit_ratio,
				r.db_per_1000, r.waiters,
				(unsigned long long)r.errors,
				(unsigned long long)r.stale);
		for (int t = 0; summary && t < 2; t++)
			if (t < r.ntiers)
				fprintf(summary, ",%s,%.4f", r.tier_names[t],
					tier_ratio(&r, t));
			else
				fprintf(summary, ",,");
		if (summary)
			fputc('\n', summary);
	}
	if (summary)
		fclose(summary);
	if (series)
		fclose(series);
	if (latency)
		fclose(latency);
	if (cfg.csv_dir && status == 0)
		charts(cfg.csv_dir);
out_nb:
	numbering_free(&nb);
out_db:
	user_repo_close(&db);
out:
	curl_global_cleanup();
	free(trace);
	if (own_db)
		app_remove_sqlite(dir);
	if (interrupted) {
		fprintf(stderr, "aside bench: interrupted\n");
		status = 130;
	}
	return status;
}
