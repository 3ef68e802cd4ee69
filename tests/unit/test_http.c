/*
 * test_http.c -- `aside serve` end to end, over real HTTP (libcurl): every
 * endpoint and error, a concurrent burst on one cold user, metrics that
 * move, a database that goes away, a graceful stop with a request in
 * flight, the options that shape a start (--warm, --gate, --access-log)
 * and the connections (--timeout-s, --max-connections), and a busy port.
 * Runs on the embedded default (an SQLite file and mem://) and, when the
 * servers are there, on PostgreSQL with Redis and an L1.
 */
#include "../support/servers.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka needs the headers above */
#include <cmocka.h>

typedef struct server {
	pid_t pid;
	FILE *out;
	char base[64];
	char dir[64];
	bool real; /* on PostgreSQL and Redis */
	bool keep; /* dir is the caller's: left as it is */
} server;

/* A scratch directory for a server's database (and its stderr). */
static bool scratch_dir(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/aside-http-XXXXXX");
	return mkdtemp(dir) != NULL;
}

/* Removes dir and what a server leaves in it. */
static void scratch_dir_rm(const char *dir)
{
	char p[128];
	const char *f[] = {"users.db", "users.db-wal", "users.db-shm",
			   "serve.err"};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, f[i]);
		unlink(p);
	}
	rmdir(dir);
}

/*
 * Starts aside serve with the extra arguments in ap.  keep_dir: a
 * directory kept when it stops, with the server's stderr in
 * keep_dir/serve.err, and on the embedded default its database (so that
 * another start finds the users); NULL for a fresh one.
 */
static bool start_v(server *s, int real, const char *keep_dir, va_list ap)
{
	memset(s, 0, sizeof(*s));
	char db[600], cache[600];
	s->real = real;
	if (keep_dir) {
		snprintf(s->dir, sizeof(s->dir), "%s", keep_dir);
		s->keep = true;
	}
	if (real) {
		if (!test_pg_url(db, "aside_test_http", NULL) ||
		    !test_pg_reset(db) ||
		    !test_redis_url(cache, 4, "l1=1000") ||
		    !test_redis_flush(4))
			return false;
	} else {
		if (!keep_dir && !scratch_dir(s->dir, sizeof(s->dir)))
			return false;
		snprintf(db, sizeof(db), "sqlite:%s/users.db", s->dir);
		snprintf(cache, sizeof(cache), "mem://");
	}
	const char *argv[32] = {ASIDE_BINARY,  "serve", "--listen",
				"127.0.0.1:0", "--db",	db,
				"--cache",     cache};
	int argc = 8;
	const char *a;
	while ((a = va_arg(ap, const char *)) && argc < 30)
		argv[argc++] = a;
	argv[argc] = NULL;
	char err_path[128] = "";
	if (s->keep)
		snprintf(err_path, sizeof(err_path), "%s/serve.err", s->dir);
	int fds[2];
	if (pipe(fds) != 0)
		return false;
	s->pid = fork();
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the test */
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		if (err_path[0] && !freopen(err_path, "a", stderr))
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	s->out = fdopen(fds[0], "r");
	char line[512];
	if (!fgets(line, sizeof(line), s->out))
		return false;
	const char *url = strstr(line, "http://");
	if (!url)
		return false;
	size_t n = strcspn(url, " ");
	snprintf(s->base, sizeof(s->base), "%.*s", (int)n, url);
	return true;
}

/* `real` is an int: va_start on a parameter that promotes is undefined. */
static bool start(server *s, int real, ...)
{
	va_list ap;
	va_start(ap, real);
	bool ok = start_v(s, real, NULL, ap);
	va_end(ap);
	return ok;
}

/* Over the database in dir (embedded), or on PostgreSQL and Redis (real),
 * with stderr in dir/serve.err; the extra arguments NULL-terminated. */
static bool start_in(server *s, bool real, const char *dir, ...)
{
	va_list ap;
	va_start(ap, dir);
	bool ok = start_v(s, real, dir, ap);
	va_end(ap);
	return ok;
}

/* SIGTERM, and the exit status. */
static int stop(server *s)
{
	int status = -1;
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, &status, 0);
		s->pid = 0;
	}
	if (s->out)
		fclose(s->out);
	if (s->dir[0] && !s->keep)
		scratch_dir_rm(s->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct reply {
	long status;
	char body[16384];
	size_t len;
	char location[128];
	char allow[128];
	char type[128];
} reply;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	reply *r = arg;
	size_t k = size * n;
	if (r->len + k < sizeof(r->body)) {
		memcpy(r->body + r->len, p, k);
		r->len += k;
		r->body[r->len] = '\0';
	}
	return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	reply *r = arg;
	size_t k = size * n;
	struct {
		const char *name;
		char *dst;
	} want[] = {{"Location:", r->location},
		    {"Allow:", r->allow},
		    {"Content-Type:", r->type}};
	for (size_t i = 0; i < 3; i++) {
		size_t l = strlen(want[i].name);
		if (k > l && strncasecmp(p, want[i].name, l) == 0) {
			size_t v = k - l;
			while (v &&
			       (p[l + v - 1] == '\r' || p[l + v - 1] == '\n'))
				v--;
			snprintf(want[i].dst, 128, "%.*s", (int)(v - 1),
				 p + l + 1);
		}
	}
	return k;
}

/* One request; body may be NULL.  type: the Content-Type to send. */
static reply req(const server *s, const char *method, const char *path,
		 const char *type, const char *body, size_t body_len)
{
	reply r;
	memset(&r, 0, sizeof(r));
	CURL *c = curl_easy_init();
	char url[256];
	snprintf(url, sizeof(url), "%s%s", s->base, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	struct curl_slist *h = NULL;
	if (type) {
		char th[160];
		snprintf(th, sizeof(th), "Content-Type: %s", type);
		h = curl_slist_append(h, th);
	}
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
	}
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return r;
}

static reply json(const server *s, const char *method, const char *path,
		  const char *body)
{
	return req(s, method, path, "application/json", body, strlen(body));
}

/* A number from /metrics: the first line starting with `name`. */
static double metric(const server *s, const char *name)
{
	reply r = req(s, "GET", "/metrics", NULL, NULL, 0);
	const char *p = r.body;
	size_t n = strlen(name);
	while ((p = strstr(p, name))) {
		if ((p == r.body || p[-1] == '\n') && p[n] == ' ')
			return atof(p + n + 1);
		p += n;
	}
	return -1;
}

static int setup_local(void **state)
{
	static bool real = false;
	*state = &real;
	return 0;
}

static int setup_real(void **state)
{
	static bool real = true;
	*state = &real;
	return 0;
}

#define START(s, state, ...)                                                   \
	do {                                                                   \
		bool real_ = *(bool *)*(state);                                \
		if (!start(&(s), real_, __VA_ARGS__)) {                        \
			if (real_ && !getenv("ASIDE_TEST_REQUIRE_SERVERS"))    \
				skip();                                        \
			fail_msg("aside serve did not start");                 \
		}                                                              \
	} while (0)

static void crud_round_trip(void **state)
{
	server s;
	START(s, state, NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"Alice\",\"email\":\"alice@example.com\"}");
	assert_int_equal(r.status, 201);
	assert_string_equal(r.type, "application/json");
	assert_non_null(strstr(r.body, "\"name\":\"Alice\""));
	assert_non_null(strstr(r.body, "\"created_at\":\"20"));
	char path[128];
	snprintf(path, sizeof(path), "%s", r.location);
	assert_int_equal(strncmp(path, "/users/", 7), 0);
	char created[16384];
	snprintf(created, sizeof(created), "%s", r.body);

	r = req(&s, "GET", path, NULL, NULL, 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, created);

	r = json(&s, "PUT", path,
		 "{\"name\":\"Alice B\",\"email\":\"alice@example.org\"}");
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"name\":\"Alice B\""));
	r = req(&s, "GET", path, NULL, NULL, 0);
	assert_non_null(strstr(r.body, "alice@example.org"));

	r = req(&s, "DELETE", path, NULL, NULL, 0);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.len, 0);
	assert_int_equal(req(&s, "GET", path, NULL, NULL, 0).status, 404);
	assert_int_equal(req(&s, "DELETE", path, NULL, NULL, 0).status, 404);
	r = json(&s, "PUT", path, "{\"name\":\"X\",\"email\":\"x@y.z\"}");
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "\"error\":"));
	assert_int_equal(stop(&s), 0);
}

static void bad_requests_are_refused_and_change_nothing(void **state)
{
	server s;
	START(s, state, "--max-body", "1024", NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"Bob\",\"email\":\"bob@example.com\"}");
	assert_int_equal(r.status, 201);
	char path[128], before[16384];
	snprintf(path, sizeof(path), "%s", r.location);
	snprintf(before, sizeof(before), "%s",
		 req(&s, "GET", path, NULL, NULL, 0).body);
	/* The user's path with an escaped NUL after the id, and its id
	 * escaped (which must still find it: "%31" is "1"). */
	char nul[160], nul_tail[160], escaped[160];
	snprintf(nul, sizeof(nul), "%s%%00", path);
	snprintf(nul_tail, sizeof(nul_tail), "%s%%00abc", path);
	snprintf(escaped, sizeof(escaped), "/users/%%3%s", path + 7);
	r = req(&s, "GET", escaped, NULL, NULL, 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, before);

	struct {
		const char *method, *path, *type, *body;
		long status;
		const char *says;
	} bad[] = {
	    {"POST", "/users", "application/json", "{bad", 400, "malformed"},
	    {"POST", "/users", "application/json", "[]", 400, "object"},
	    {"POST", "/users", "application/json", "{\"name\":\"A\"}", 400,
	     "email"},
	    {"POST", "/users", "application/json",
	     "{\"name\":\"A\",\"email\":\"not-an-address\"}", 400, "email"},
	    {"POST", "/users", "application/json",
	     "{\"name\":\"\",\"email\":\"a@b.c\"}", 400, "name"},
	    {"POST", "/users", "application/json",
	     "{\"name\":\"A\\u0000\",\"email\":\"a@b.c\"}", 400, "name"},
	    {"POST", "/users", "application/json",
	     "{\"name\":\"   \",\"email\":\"a@b.c\"}", 400, "only spaces"},
	    {"POST", "/users", "application/json",
	     "{\"name\":\"A\\nB\",\"email\":\"a@b.c\"}", 400,
	     "control character U+000A"},
	    {"POST", "/users", "application/json",
	     "{\"id\":7,\"name\":\"A\",\"email\":\"a@b.c\"}", 400, "assigns"},
	    {"POST", "/users", "text/plain", "name=A", 415, "json"},
	    {"POST", "/users", NULL, "{}", 415, "json"},
	    {"PUT", path, "application/json", "{bad", 400, "malformed"},
	    {"PUT", path, "application/json",
	     "{\"id\":999,\"name\":\"A\",\"email\":\"a@b.c\"}", 400, "differs"},
	    {"PUT", path, "application/json",
	     "{\"name\":\"A\",\"email\":\"x@@y\"}", 400, "email"},
	    {"GET", "/users/abc", NULL, NULL, 400, "positive integer"},
	    {"GET", "/users/0", NULL, NULL, 400, "positive integer"},
	    {"GET", "/users/-1", NULL, NULL, 400, "positive integer"},
	    {"GET", "/users/99999999999999999999", NULL, NULL, 400,
	     "positive integer"},
	    {"GET", "/nowhere", NULL, NULL, 404, "no such"},
	    /* an escaped NUL must not cut the path short */
	    {"GET", nul, NULL, NULL, 400, "positive integer"},
	    {"GET", nul_tail, NULL, NULL, 400, "positive integer"},
	    {"POST", "/users%00", "application/json",
	     "{\"name\":\"A\",\"email\":\"a@b.c\"}", 404, "no such"},
	    {"GET", "/metrics%00", NULL, NULL, 404, "no such"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = req(&s, bad[i].method, bad[i].path, bad[i].type,
			bad[i].body, bad[i].body ? strlen(bad[i].body) : 0);
		if (r.status != bad[i].status ||
		    !strstr(r.body, "\"error\":\"") ||
		    !strcasestr(r.body, bad[i].says))
			fail_msg("%s %s %s: got %ld %s, want %ld saying '%s'",
				 bad[i].method, bad[i].path,
				 bad[i].body ? bad[i].body : "", r.status,
				 r.body, bad[i].status, bad[i].says);
	}
	/* 405 names the methods allowed. */
	r = req(&s, "PATCH", path, NULL, NULL, 0);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "GET, PUT, DELETE");
	r = req(&s, "GET", "/users", NULL, NULL, 0);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "POST");
	r = req(&s, "POST", "/metrics", NULL, NULL, 0);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "GET");
	/* 413 over the limit, whatever the body says. */
	char big[2048];
	memset(big, 'a', sizeof(big));
	r = req(&s, "POST", "/users", "application/json", big, sizeof(big));
	assert_int_equal(r.status, 413);
	r = req(&s, "PUT", path, "application/json", big, sizeof(big));
	assert_int_equal(r.status, 413);
	/* Nothing changed. */
	assert_string_equal(req(&s, "GET", path, NULL, NULL, 0).body, before);
	char next[64];
	snprintf(next, sizeof(next), "/users/%lld", atoll(path + 7) + 1);
	assert_int_equal(req(&s, "GET", next, NULL, NULL, 0).status, 404);
	assert_int_equal(stop(&s), 0);
}

struct burst {
	const server *s;
	const char *path;
	long status;
};

static void *get_one(void *arg)
{
	struct burst *b = arg;
	b->status = req(b->s, "GET", b->path, NULL, NULL, 0).status;
	return NULL;
}

static void burst_on_a_cold_user_makes_one_query(void **state)
{
	server s;
	START(s, state, "--db-delay-ms", "300", "--threads", "16", NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"Cold\",\"email\":\"cold@example.com\"}");
	assert_int_equal(r.status, 201);
	double loads0 = metric(&s, "aside_db_loads_total");
	enum { N = 16 };
	pthread_t t[N];
	struct burst b[N];
	for (int i = 0; i < N; i++) {
		b[i] = (struct burst){&s, r.location, 0};
		pthread_create(&t[i], NULL, get_one, &b[i]);
	}
	/* Every reader joined before any is judged: a failed assertion
	 * leaves this frame, which the readers write to. */
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < N; i++)
		assert_int_equal(b[i].status, 200);
	/* One query; every other reader shared it, or (if the server took
	 * it after the fill) hit what it stored. */
	assert_true(metric(&s, "aside_db_loads_total") == loads0 + 1);
	double shared = metric(&s, "aside_shared_loads_total");
	reply m = req(&s, "GET", "/metrics", NULL, NULL, 0);
	const char *h = strstr(m.body, "aside_cache_hits_total{tier=\"1\"");
	assert_non_null(h);
	double l1_hits = atof(strchr(h, '}') + 2);
	printf("    %d concurrent GETs: 1 database query, %.0f shared it, "
	       "%.0f hit the cache\n",
	       N, shared, l1_hits);
	assert_true(shared + l1_hits == N - 1);
	assert_int_equal(stop(&s), 0);
}

static void metrics_move(void **state)
{
	server s;
	START(s, state, NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"M\",\"email\":\"m@example.com\"}");
	for (int i = 0; i < 5; i++)
		assert_int_equal(
		    req(&s, "GET", r.location, NULL, NULL, 0).status, 200);
	/* A request is counted once its response has gone out, which can be
	 * just after the client has read it: the fifth GET may still be on
	 * its way into the counters, so give it up to 2 s. */
	reply m;
	for (int tries = 0;; tries++) {
		m = req(&s, "GET", "/metrics", NULL, NULL, 0);
		if (strstr(m.body, "aside_http_requests_total{route=\"GET "
				   "/users/{id}\",status=\"200\"} 5\n") ||
		    tries == 200)
			break;
		usleep(10000);
	}
	assert_int_equal(m.status, 200);
	assert_non_null(strstr(m.type, "text/plain"));
	assert_non_null(strstr(m.body, "aside_http_requests_total{route=\"GET "
				       "/users/{id}\",status=\"200\"} 5\n"));
	assert_non_null(strstr(m.body, "aside_http_requests_total{route=\"POST "
				       "/users\",status=\"201\"} 1\n"));
	assert_non_null(strstr(m.body, "aside_cache_hits_total{tier=\"1\""));
	assert_non_null(
	    strstr(m.body, "aside_http_request_duration_seconds_count"));
	assert_non_null(strstr(m.body, "aside_load_duration_seconds_bucket"));
	assert_non_null(strstr(m.body, "aside_cache_tier_up{tier=\"1\""));
	assert_non_null(strstr(m.body, "aside_cache_entries 1\n"));
	assert_true(metric(&s, "aside_cache_misses_total") == 1);
	assert_true(metric(&s, "aside_db_loads_total") == 1);
	/* The process's own figures, under Prometheus's usual names, as
	 * the kernel tells them to another process. */
	char path[64], line[256];
	long rss_kib = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)s.pid);
	FILE *st = fopen(path, "r");
	assert_non_null(st);
	while (fgets(line, sizeof(line), st))
		sscanf(line, "VmRSS: %ld kB", &rss_kib);
	fclose(st);
	double rss = metric(&s, "process_resident_memory_bytes");
	if (rss < 0.5 * (double)rss_kib * 1024 ||
	    rss > 2.0 * (double)rss_kib * 1024)
		fail_msg("process_resident_memory_bytes %.0f, VmRSS %ld kB",
			 rss, rss_kib);
	double started = metric(&s, "process_start_time_seconds");
	if (fabs(started - (double)time(NULL)) > 120)
		fail_msg("process_start_time_seconds %.0f, now %lld", started,
			 (long long)time(NULL));
	assert_true(metric(&s, "process_virtual_memory_bytes") >= rss);
	assert_true(metric(&s, "process_cpu_seconds_total") >= 0);
	assert_true(metric(&s, "process_open_fds") >= 4); /* and a socket */
	assert_true(metric(&s, "process_max_fds") >=
		    metric(&s, "process_open_fds"));
	assert_int_equal(req(&s, "GET", "/healthz", NULL, NULL, 0).status, 200);
	assert_int_equal(req(&s, "GET", "/readyz", NULL, NULL, 0).status, 200);
	assert_int_equal(stop(&s), 0);
}

static void database_down_is_503(void **state)
{
	if (!*(bool *)*state || !getenv("ASIDE_TEST_SERVICES_DIR"))
		skip(); /* needs a database of ours to stop */
	server s;
	START(s, state, NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"D\",\"email\":\"d@example.com\"}");
	assert_int_equal(r.status, 201);
	assert_true(test_services("pg-stop"));
	reply g = req(&s, "GET", r.location, NULL, NULL, 0);
	reply ready = req(&s, "GET", "/readyz", NULL, NULL, 0);
	reply health = req(&s, "GET", "/healthz", NULL, NULL, 0);
	reply post = json(&s, "POST", "/users",
			  "{\"name\":\"E\",\"email\":\"e@example.com\"}");
	assert_true(test_services("pg-start"));
	assert_int_equal(g.status, 503);
	assert_non_null(strstr(g.body, "database unavailable"));
	assert_int_equal(ready.status, 503);
	assert_int_equal(health.status, 200);
	assert_int_equal(post.status, 503);
	/* Back: served again. */
	bool ok = false;
	for (int i = 0; i < 50 && !ok; i++) {
		ok = req(&s, "GET", r.location, NULL, NULL, 0).status == 200;
		if (!ok)
			usleep(100000);
	}
	assert_true(ok);
	assert_int_equal(stop(&s), 0);
}

static void graceful_stop_finishes_requests_in_flight(void **state)
{
	server s;
	START(s, state, "--db-delay-ms", "600", NULL);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"G\",\"email\":\"g@example.com\"}");
	pthread_t t;
	struct burst b = {&s, r.location, 0};
	pthread_create(&t, NULL, get_one, &b); /* cold: 600 ms in the db */
	usleep(200000);
	kill(s.pid, SIGTERM);
	pthread_join(t, NULL);
	assert_int_equal(b.status, 200);
	int status;
	waitpid(s.pid, &status, 0);
	s.pid = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(req(&s, "GET", "/healthz", NULL, NULL, 0).status, 0);
	stop(&s);
}

static void keep_alive_reuses_the_connection(void **state)
{
	server s;
	START(s, state, NULL);
	CURL *c = curl_easy_init();
	char url[128];
	snprintf(url, sizeof(url), "%s/healthz", s.base);
	curl_easy_setopt(c, CURLOPT_URL, url);
	reply r;
	memset(&r, 0, sizeof(r));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	long connects = -1;
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
	assert_int_equal(connects, 0); /* the second reused the first's */
	curl_easy_cleanup(c);
	assert_int_equal(stop(&s), 0);
}

/* What the server wrote on stderr so far (keep_dir/serve.err). */
static void server_err(const server *s, char *out, size_t cap)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/serve.err", s->dir);
	out[0] = '\0';
	FILE *f = fopen(p, "r");
	if (!f)
		return;
	size_t n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	fclose(f);
}

/*
 * With the database down every request fails, and each failure writes two
 * lines (its message and its access line).  --log-rate 2 writes twenty at
 * once and two a second after that; the rest are counted, and the count
 * is written within a second, so that the lines written and counted add
 * up to every failure's two.
 */
static void error_lines_are_rate_limited(void **state)
{
	if (!*(bool *)*state || !getenv("ASIDE_TEST_SERVICES_DIR"))
		skip(); /* needs a database of ours to stop */
	char dir[64];
	assert_true(scratch_dir(dir, sizeof(dir)));
	server s;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!start_in(&s, true, dir, "--log-rate", "2", NULL))
		fail_msg("aside serve did not start");
	assert_true(test_services("pg-stop"));
	enum { N = 60 };
	int failed = 0;
	for (int i = 0; i < N; i++)
		failed +=
		    req(&s, "GET", "/users/999", NULL, NULL, 0).status == 503;
	assert_true(test_services("pg-start"));
	usleep(1500000); /* the count is written within a second */
	assert_int_equal(stop(&s), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) +
		      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	static char out[1 << 16];
	server_err(&s, out, sizeof(out));
	long messages = 0, access = 0, held = 0, counts = 0;
	for (char *line = out, *next; *line; line = next) {
		next = line + strcspn(line, "\n");
		if (*next)
			*next++ = '\0';
		unsigned long long n;
		if (strstr(line, "database unavailable"))
			messages++;
		else if (strstr(line, "GET /users/{id} 503"))
			access++;
		else if (sscanf(line, "aside serve: %llu more error lines",
				&n) == 1) {
			held += (long)n;
			counts++;
		}
	}
	scratch_dir_rm(dir);
	print_message("%d failures: %ld messages and %ld access lines "
		      "written, %ld counted in %ld lines, in %.1f s\n",
		      failed, messages, access, held, counts, secs);
	assert_int_equal(failed, N);
	assert_int_equal(messages + access + held, 2 * N);
	assert_true(messages + access <= 20 + 2 * (long)(secs + 1));
	assert_true(messages > 0 && access > 0 && counts > 0);
}

/*
 * --warm N reads the N newest users before the server listens, and
 * --gate N answers ids no user has without a query; --access-log logs
 * each request.  The users are made by one server and read by a second
 * over the same database.
 */
static void warm_gate_and_access_log(void **state)
{
	(void)state;
	char dir[64], path[3][128], err[8192];
	assert_true(scratch_dir(dir, sizeof(dir)));
	server s;
	assert_true(start_in(&s, false, dir, NULL));
	for (int i = 0; i < 3; i++) {
		char body[96];
		snprintf(body, sizeof(body),
			 "{\"name\":\"W%d\",\"email\":\"w%d@example.com\"}", i,
			 i);
		reply r = json(&s, "POST", "/users", body);
		assert_int_equal(r.status, 201);
		snprintf(path[i], sizeof(path[i]), "%s", r.location);
	}
	assert_int_equal(stop(&s), 0);

	assert_true(start_in(&s, false, dir, "--warm", "2", "--gate", "100",
			     "--access-log", NULL));
	server_err(&s, err, sizeof(err));
	assert_non_null(strstr(err, "warmed 2 users"));
	double loads = metric(&s, "aside_db_loads_total");
	assert_true(loads == 2); /* the warming's */
	for (int i = 1; i < 3; i++)
		assert_int_equal(req(&s, "GET", path[i], NULL, NULL, 0).status,
				 200);
	assert_true(metric(&s, "aside_db_loads_total") == loads);
	assert_int_equal(req(&s, "GET", path[0], NULL, NULL, 0).status, 200);
	assert_true(metric(&s, "aside_db_loads_total") == loads + 1);
	/* An id no user has: 404, and the gate spared the database. */
	reply r = req(&s, "GET", "/users/424242", NULL, NULL, 0);
	assert_int_equal(r.status, 404);
	assert_true(metric(&s, "aside_gate_rejects_total") == 1);
	assert_true(metric(&s, "aside_db_loads_total") == loads + 1);
	assert_true(metric(&s, "aside_gate_armed") == 1);
	assert_int_equal(stop(&s), 0);
	/* Each request has its line (by route), the 404 too. */
	server_err(&s, err, sizeof(err));
	int ok = 0, missing = 0;
	for (const char *p = err; (p = strstr(p, " GET /users/{id} ")); p++) {
		ok += !strncmp(p + 17, "200 ", 4);
		missing += !strncmp(p + 17, "404 ", 4);
	}
	assert_int_equal(ok, 3);
	assert_int_equal(missing, 1);
	scratch_dir_rm(dir);
}

/* --cache with negative_ttl_ms: a GET of an id no user has is 404 from the
 * cache the second time, until a POST creates that id. */
static void missing_users_are_cached_until_created(void **state)
{
	(void)state;
	server s;
	assert_true(
	    start(&s, false, "--cache", "mem://?negative_ttl_ms=60000", NULL));
	for (int i = 0; i < 3; i++)
		assert_int_equal(
		    req(&s, "GET", "/users/1", NULL, NULL, 0).status, 404);
	assert_true(metric(&s, "aside_db_loads_total") == 1);
	assert_true(metric(&s, "aside_negative_hits_total") == 2);
	reply r = json(&s, "POST", "/users",
		       "{\"name\":\"Nia\",\"email\":\"nia@example.com\"}");
	assert_int_equal(r.status, 201);
	assert_string_equal(r.location, "/users/1");
	assert_int_equal(req(&s, "GET", "/users/1", NULL, NULL, 0).status, 200);
	assert_true(metric(&s, "aside_db_loads_total") == 2);
	assert_int_equal(stop(&s), 0);
}

/* A TCP connection to the server; -1 if none. */
static int dial(const server *s)
{
	int port = atoi(strrchr(s->base, ':') + 1);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Whether the server closed fd within ms (it reads EOF or a reset). */
static bool closed_within(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return false;
	char b[512];
	return recv(fd, b, sizeof(b), 0) <= 0;
}

/* Whether an answer starting `want` came on fd within ms. */
static bool answered_within(int fd, const char *want, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return false;
	char b[512];
	ssize_t n = recv(fd, b, sizeof(b) - 1, 0);
	if (n <= 0)
		return false;
	b[n] = '\0';
	return !strncmp(b, want, strlen(want));
}

/* Sends the whole of text on fd (a request, or part of one). */
static void send_text(int fd, const char *text)
{
	assert_int_equal(send(fd, text, strlen(text), 0),
			 (ssize_t)strlen(text));
}

/* A request after which the server closes the connection. */
static const char healthz_close[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n"
				    "Connection: close\r\n\r\n";

/*
 * --timeout-s cuts off a client that stops halfway through its request
 * (a slow client must not hold a connection for ever), and
 * --max-connections caps the connections served at once: one more waits,
 * unanswered, until one is free.
 */
static void idle_clients_are_cut_off_and_capped(void **state)
{
	(void)state;
	char dir[64];
	assert_true(scratch_dir(dir, sizeof(dir)));
	server s;
	assert_true(start_in(&s, false, dir, "--timeout-s", "1",
			     "--max-connections", "2", NULL));
	int a = dial(&s), b = dial(&s);
	assert_true(a >= 0 && b >= 0);
	send_text(a, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); /* half */
	/* Let both be taken in before the third comes. */
	struct timespec settle = {0, 200000000};
	nanosleep(&settle, NULL);
	int c = dial(&s);
	assert_true(c >= 0);
	send_text(c, healthz_close);
	assert_false(answered_within(c, "HTTP/1.1", 500));
	/* Both idle ones are cut off within the timeout (and a little)... */
	assert_true(closed_within(a, 3000));
	assert_true(closed_within(b, 3000));
	close(a);
	close(b);
	/* ...and the one that waited is served. */
	assert_true(answered_within(c, "HTTP/1.1 200", 3000));
	close(c);
	assert_int_equal(stop(&s), 0);
	scratch_dir_rm(dir);
}

/*
 * Runs aside serve on addr until it ends, or for 10 s (then the status is
 * timeout(1)'s 124); its exit status, its output.
 */
static int serve_once(const char *addr, char *out, size_t cap)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "timeout 10 %s serve --listen '%s' --db sqlite::memory: "
		 "--cache mem:// 2>&1 </dev/null",
		 ASIDE_BINARY, addr);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	int status = pclose(p);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * A second server on a port one already listens on is refused, clearly,
 * rather than sharing the port (the kernel would split the connections
 * between two servers, each with its own database and cache); and the
 * port is free again the moment the first stops, even with connections
 * it closed still in TIME_WAIT.
 */
static void a_busy_port_is_refused_a_freed_one_reused(void **state)
{
	(void)state;
	char dir[64], addr[64], out[4096];
	assert_true(scratch_dir(dir, sizeof(dir)));
	server s;
	assert_true(start_in(&s, false, dir, NULL));
	snprintf(addr, sizeof(addr), "%.56s", s.base + strlen("http://"));
	assert_int_equal(serve_once(addr, out, sizeof(out)), 1);
	char want[160];
	snprintf(want, sizeof(want),
		 "aside serve: cannot listen on %s: Address already in use",
		 addr);
	if (!strstr(out, want) || strstr(out, "port 0"))
		fail_msg("second server said: %s", out);
	/* The server closes this one first (Connection: close), so the
	 * connection waits in TIME_WAIT on the server's side. */
	int fd = dial(&s);
	assert_true(fd >= 0);
	send_text(fd, healthz_close);
	assert_true(answered_within(fd, "HTTP/1.1 200", 3000));
	assert_true(closed_within(fd, 3000));
	close(fd);
	assert_int_equal(stop(&s), 0);
	assert_true(start_in(&s, false, dir, "--listen", addr, NULL));
	assert_string_equal(s.base + strlen("http://"), addr);
	assert_int_equal(req(&s, "GET", "/healthz", NULL, NULL, 0).status, 200);
	assert_int_equal(stop(&s), 0);
	scratch_dir_rm(dir);
}

/* --listen takes an IPv4 address, localhost or nothing, and a port. */
static void bad_listen_addresses_say_why(void **state)
{
	(void)state;
	const char *bad[] = {
	    "[::1]:8080",   "example.invalid:8080", "127.0.0.1",
	    "127.0.0.1:",   "127.0.0.1:65536",	    "127.0.0.1:-1",
	    "127.0.0.1:80x"};
	char out[4096];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = serve_once(bad[i], out, sizeof(out));
		if (rc != 2 || !strstr(out, "--listen wants HOST:PORT") ||
		    !strstr(out, bad[i]))
			fail_msg("--listen %s: exit %d, said: %s", bad[i], rc,
				 out);
	}
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
#define BOTH(fn)                                                               \
	{#fn "/embedded", fn, setup_local, NULL, NULL},                        \
	{                                                                      \
#fn "/postgresql+redis", fn, setup_real, NULL, NULL            \
	}
	const struct CMUnitTest tests[] = {
	    BOTH(crud_round_trip),
	    BOTH(bad_requests_are_refused_and_change_nothing),
	    BOTH(burst_on_a_cold_user_makes_one_query),
	    BOTH(metrics_move),
	    BOTH(graceful_stop_finishes_requests_in_flight),
	    BOTH(keep_alive_reuses_the_connection),
	    {"database_down_is_503/postgresql+redis", database_down_is_503,
	     setup_real, NULL, NULL},
	    {"error_lines_are_rate_limited/postgresql+redis",
	     error_lines_are_rate_limited, setup_real, NULL, NULL},
	    cmocka_unit_test(warm_gate_and_access_log),
	    cmocka_unit_test(missing_users_are_cached_until_created),
	    cmocka_unit_test(idle_clients_are_cut_off_and_capped),
	    cmocka_unit_test(a_busy_port_is_refused_a_freed_one_reused),
	    cmocka_unit_test(bad_listen_addresses_say_why),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
