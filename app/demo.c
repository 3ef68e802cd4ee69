/*
 * demo.c -- `aside demo`: the seed's scenario, step by step, on the
 * embedded default (SQLite and an in-process cache).
 *
 * The repository is wrapped to count queries and, by default, to take 20 ms
 * a query like a remote database would, so that ten concurrent readers of a
 * cold user really overlap.
 */
#include "app.h"

#include <aside/users.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct reader {
	user_service *svc;
	int64_t id;
	pthread_barrier_t *start;
	int rc;
	user u;
	double ms; /* how long the read took */
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *read_one(void *arg)
{
	struct reader *r = arg;
	pthread_barrier_wait(r->start);
	double t0 = now_ms();
	r->rc = user_service_get(r->svc, r->id, &r->u);
	r->ms = now_ms() - t0;
	return NULL;
}

/* N readers of id at once; how many got the user named name. */
static int read_together(user_service *svc, int64_t id, const char *name, int n,
			 struct reader *rd)
{
	pthread_t th[16];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		rd[i] = (struct reader){svc, id, &start, 0, {0}, 0};
		pthread_create(&th[i], NULL, read_one, &rd[i]);
	}
	int ok = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		ok += rd[i].rc == ASIDE_OK && !strcmp(rd[i].u.name, name);
	}
	pthread_barrier_destroy(&start);
	return ok;
}

static void step(int n, const char *what)
{
	printf("\n%d. %s\n", n, what);
}

static void show_metrics(user_service *svc, aside_cache *cache)
{
	user_service_metrics m = user_service_get_metrics(svc);
	aside_metrics am;
	aside_cache_metrics(cache, &am);
	printf("\n  %-22s %12s\n", "metric", "value");
	printf("  %-22s %12s\n", "----------------------", "------------");
	printf("  %-22s %12llu\n", "cache_hits",
	       (unsigned long long)m.cache_hits);
	printf("  %-22s %12llu\n", "cache_misses",
	       (unsigned long long)m.cache_misses);
	printf("  %-22s %12llu\n", "db_loads", (unsigned long long)m.db_loads);
	printf("  %-22s %12llu\n", "shared_loads",
	       (unsigned long long)m.shared_loads);
	printf("  %-22s %12llu\n", "load_errors",
	       (unsigned long long)m.load_errors);
	printf("  %-22s %11.2f%%\n", "hit_rate", m.hit_rate * 100);
	printf("  %-22s %11.2f%%\n", "miss_rate", m.miss_rate * 100);
	printf("  %-22s %12.1f\n", "avg_load_time_us", m.avg_load_time_us);
	printf("  %-22s %12.1f\n", "load_p99_us", am.load_p99_us);
	printf("  %-22s %12llu\n", "invalidations",
	       (unsigned long long)am.invalidations);
	printf("  %-22s %12lld\n", "cache_size", (long long)m.cache_size);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: aside demo [--db URL] [--cache URL] [--db-delay-ms N]\n"
	    "  --db URL          database (default: a new SQLite file in a "
	    "temporary directory)\n"
	    "  --cache URL       cache (default "
	    "mem://?stale_if_error_ms=60000&stale_while_revalidate_ms=1000&"
	    "breaker=3&negative_ttl_ms=60000)\n"
	    "  --db-delay-ms N   added to each database read (default 20)\n");
}

int app_demo(int argc, char **argv)
{
	const char *db_url = NULL,
		   *cache_url = "mem://?stale_if_error_ms=60000&"
				"stale_while_revalidate_ms=1000&breaker=3&"
				"negative_ttl_ms=60000";
	long delay_ms = 20;
	static const struct option opts[] = {
	    {"db", required_argument, NULL, 'd'},
	    {"cache", required_argument, NULL, 'c'},
	    {"db-delay-ms", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'd':
			db_url = optarg;
			break;
		case 'c':
			cache_url = optarg;
			break;
		case 'l':
			if (!app_long("db-delay-ms", optarg, 0, 10000,
				      &delay_ms))
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

	char dir[] = "/tmp/aside-demo-XXXXXX", path[64], url[80];
	if (!db_url) {
		if (!mkdtemp(dir)) {
			perror("aside demo: mkdtemp");
			return 1;
		}
		snprintf(path, sizeof(path), "%s/users.db", dir);
		snprintf(url, sizeof(url), "sqlite:%s", path);
		db_url = url;
	}

	aside_error err;
	user_repo repo;
	aside_cache *cache = NULL;
	int status = 1;
	if (user_repo_open(db_url, &repo, &err) != ASIDE_OK) {
		fprintf(stderr, "aside demo: %s\n", err.message);
		goto out_dir;
	}
	if (aside_cache_open(cache_url, &cache, &err) != ASIDE_OK) {
		fprintf(stderr, "aside demo: %s\n", err.message);
		goto out_repo;
	}
	struct slow_repo counted;
	user_service *svc = user_service_new(
	    slow_repo_wrap(&counted, repo, delay_ms * 1000), cache);
	if (!svc) {
		fprintf(stderr, "aside demo: out of memory\n");
		goto out_cache;
	}

	printf("aside demo: the cache-aside scenario\n");
	char shown[256];
	printf("  database %s (each read takes %ld ms more)\n",
	       aside_url_redact(db_url, shown, sizeof(shown)), delay_ms);
	printf("  cache    %s, user TTL %lld s\n",
	       aside_url_redact(cache_url, shown, sizeof(shown)),
	       (long long)aside_cache_ttl_ms(cache, "user") / 1000);

	user alice = {.name = "Alice", .email = "alice@example.com"};
	user bob = {.name = "Bob", .email = "bob@example.com"};
	if (user_service_create_ex(svc, &alice, &err) != ASIDE_OK ||
	    user_service_create_ex(svc, &bob, &err) != ASIDE_OK) {
		fprintf(stderr, "aside demo: create: %s\n", err.message);
		goto out_svc;
	}
	char ts[40];
	user_format_time(alice.created_at_us, ts, sizeof(ts));
	step(1, "create users");
	printf("  created user %lld (%s <%s>) at %s, and user %lld (%s)\n",
	       (long long)alice.id, alice.name, alice.email, ts,
	       (long long)bob.id, bob.name);

	user u;
	unsigned long q0 = atomic_load(&counted.gets);
	step(2, "first read: cache miss, loaded from the database");
	int rc = user_service_get_ex(svc, alice.id, &u, &err);
	printf("  get %lld -> %s, %s; database queries: %lu\n",
	       (long long)alice.id, aside_status_name(rc), u.name,
	       atomic_load(&counted.gets) - q0);

	step(3, "second read: cache hit, served from the cache");
	q0 = atomic_load(&counted.gets);
	rc = user_service_get_ex(svc, alice.id, &u, &err);
	user_service_metrics m = user_service_get_metrics(svc);
	printf("  get %lld -> %s, %s; database queries: %lu; hit rate "
	       "%.2f%%\n",
	       (long long)alice.id, aside_status_name(rc), u.name,
	       atomic_load(&counted.gets) - q0, m.hit_rate * 100);

	step(4, "10 concurrent reads of a cold user (single-flight)");
	enum { N = 10 };
	struct reader rd[N];
	q0 = atomic_load(&counted.gets);
	int ok = read_together(svc, bob.id, "Bob", N, rd);
	printf("  %d concurrent requests resulted in %lu DB query; %d got "
	       "Bob\n",
	       N, atomic_load(&counted.gets) - q0, ok);

	step(5, "update, then read: invalidated, fresh data from the database");
	user changed = alice;
	snprintf(changed.email, sizeof(changed.email), "alice@example.org");
	rc = user_service_update_ex(svc, &changed, &err);
	printf("  update %lld email -> %s: %s\n", (long long)alice.id,
	       changed.email, rc == ASIDE_OK ? "ok" : err.message);
	q0 = atomic_load(&counted.gets);
	rc = user_service_get_ex(svc, alice.id, &u, &err);
	printf("  get %lld -> %s, email %s; database queries: %lu\n",
	       (long long)alice.id, aside_status_name(rc), u.email,
	       atomic_load(&counted.gets) - q0);

	step(6, "delete, then read twice");
	rc = user_service_delete_ex(svc, bob.id, &err);
	aside_metrics am0, am1;
	aside_cache_metrics(cache, &am0);
	q0 = atomic_load(&counted.gets);
	int rc2 = user_service_get_ex(svc, bob.id, &u, &err);
	int rc3 = user_service_get_ex(svc, bob.id, &u, &err);
	aside_cache_metrics(cache, &am1);
	printf("  delete %lld: %s; get %lld -> %s; again -> %s; database "
	       "queries: %lu\n",
	       (long long)bob.id, aside_status_name(rc), (long long)bob.id,
	       aside_status_name(rc2), aside_status_name(rc3),
	       atomic_load(&counted.gets) - q0);
	printf("  %llu read answered by the cached absence "
	       "(negative_ttl_ms): a create of that id would end it\n",
	       (unsigned long long)(am1.negative_hits - am0.negative_hits));

	/* From here on users are cached with a TTL short enough to see
	 * them expire. */
	aside_cache_set_ttl(cache, "user", 200, 0);
	step(7, "10 concurrent reads of a user whose TTL has just passed");
	user erin = {.name = "Erin", .email = "erin@example.com"};
	if (user_service_create_ex(svc, &erin, &err) != ASIDE_OK ||
	    user_service_get_ex(svc, erin.id, &u, &err) != ASIDE_OK) {
		fprintf(stderr, "aside demo: %s\n", err.message);
		goto out_svc;
	}
	app_sleep_us(300 * 1000);
	aside_cache_metrics(cache, &am0);
	q0 = atomic_load(&counted.gets);
	ok = read_together(svc, erin.id, "Erin", N, rd);
	aside_cache_metrics(cache, &am1);
	double slowest = 0, others = 0;
	int slow_i = 0;
	for (int i = 0; i < N; i++)
		if (rd[i].ms > slowest) {
			slowest = rd[i].ms;
			slow_i = i;
		}
	for (int i = 0; i < N; i++)
		if (i != slow_i && rd[i].ms > others)
			others = rd[i].ms;
	printf("  user %lld read, its TTL (200 ms) past; %d concurrent "
	       "requests resulted in %lu DB query; %d got Erin\n",
	       (long long)erin.id, N, atomic_load(&counted.gets) - q0, ok);
	printf("  %llu served the expired copy without waiting "
	       "(stale_while_revalidate_ms), %llu waited for the load;\n"
	       "  the slowest request took %.2f ms, the next slowest %.2f "
	       "ms\n",
	       (unsigned long long)(am1.stale_while_revalidate -
				    am0.stale_while_revalidate),
	       (unsigned long long)(am1.shared_loads - am0.shared_loads),
	       slowest, others);

	step(8, "the database fails: an expired copy, an error, then the "
		"breaker");
	user carol = {.name = "Carol", .email = "carol@example.com"};
	user dave = {.name = "Dave", .email = "dave@example.com"};
	if (user_service_create_ex(svc, &carol, &err) != ASIDE_OK ||
	    user_service_create_ex(svc, &dave, &err) != ASIDE_OK ||
	    user_service_get_ex(svc, carol.id, &u, &err) != ASIDE_OK) {
		fprintf(stderr, "aside demo: %s\n", err.message);
		goto out_svc;
	}
	app_sleep_us(300 * 1000);
	atomic_store(&counted.down, 1);
	printf("  user %lld read, its TTL (200 ms) past; the database goes "
	       "down\n",
	       (long long)carol.id);
	rc = user_service_get_ex(svc, carol.id, &u, &err);
	printf("  get %lld -> %s, %s (the expired copy: stale_if_error_ms)\n",
	       (long long)carol.id, aside_status_name(rc),
	       rc == ASIDE_OK ? u.name : err.message);
	for (int i = 0; i < 3; i++) {
		rc = user_service_get_ex(svc, dave.id, &u, &err);
		printf("  get %lld -> %s: %s\n", (long long)dave.id,
		       aside_status_name(rc),
		       rc == ASIDE_OK ? u.name : err.message);
	}
	atomic_store(&counted.down, 0);
	app_sleep_us(150 * 1000);
	q0 = atomic_load(&counted.gets);
	rc = user_service_get_ex(svc, dave.id, &u, &err);
	printf("  the database is back; 150 ms on, get %lld -> %s, %s; "
	       "database queries: %lu\n",
	       (long long)dave.id, aside_status_name(rc),
	       rc == ASIDE_OK ? u.name : err.message,
	       atomic_load(&counted.gets) - q0);

	step(9, "metrics");
	show_metrics(svc, cache);
	status = 0;
out_svc:
	user_service_free(svc);
out_cache:
	aside_cache_close(cache);
out_repo:
	user_repo_close(&repo);
out_dir:
	if (db_url == url)
		app_remove_sqlite(dir);
	return status;
}
