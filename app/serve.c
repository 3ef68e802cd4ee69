/*
 * serve.c -- `aside serve`: the users API over HTTP (libmicrohttpd, poll()
 * with a thread pool), with Prometheus metrics.
 *
 *   POST /users          201, the user, Location: /users/{id}
 *   GET /users/{id}      200 or 404
 *   PUT /users/{id}      200 or 404
 *   DELETE /users/{id}   204 or 404
 *   GET /metrics         Prometheus text format
 *   GET /healthz         the process is up
 *   GET /readyz          the database answers
 *
 * Errors are JSON, {"error": "..."}: 400 malformed input, 404, 405 (with
 * Allow), 413 body over the limit, 415 not JSON, 503 database unavailable.
 * SIGINT and SIGTERM stop it gracefully: no new connections, requests in
 * flight finish, then the database and cache are closed.
 */
#include "app.h"

#include <arpa/inet.h>
#include <aside/users.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Routes and statuses counted in /metrics. */
enum route {
	R_CREATE,
	R_GET,
	R_UPDATE,
	R_DELETE,
	R_METRICS,
	R_HEALTH,
	R_READY,
	R_OTHER,
	NROUTES
};
static const char *const route_names[NROUTES] = {
    "POST /users",  "GET /users/{id}", "PUT /users/{id}", "DELETE /users/{id}",
    "GET /metrics", "GET /healthz",    "GET /readyz",	  "other"};
static const int statuses[] = {200, 201, 204, 400, 404,
			       405, 413, 415, 500, 503};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

/*
 * Error lines, rate limited.  In an outage every request fails, and each
 * failure writes two lines (its error and its access line): 108,000 lines
 * in ten seconds with PostgreSQL stopped and two clients asking.
 * A token bucket lets ten seconds' worth through at once, then `rate` a
 * second; the lines held back are counted, and the count is written
 * once a second by the main thread (errlog_tick), and at exit.
 */
struct errlog {
	pthread_mutex_t lock;
	double rate;	 /* lines a second; 0: no limit */
	double tokens;	 /* guarded by lock */
	int64_t fill_us; /* when tokens were last topped up; guarded */
	uint64_t held;	 /* lines held back since the last count; guarded */
	int64_t held_us; /* when the first of them was; guarded */
};

struct server {
	struct errlog errlog;
	user_service *svc;
	aside_cache *cache;
	user_repo db;
	size_t max_body;
	bool access_log;
	_Atomic long in_flight;
	_Atomic uint64_t requests[NROUTES][NSTATUS];
	_Atomic uint64_t latency[ASIDE_HIST_BUCKETS];
	_Atomic uint64_t latency_sum_us;
	_Atomic bool listening; /* libmicrohttpd's messages are shown */
};

/* One request: its body as it arrives, and what was answered. */
struct request {
	struct timespec start;
	char *body;
	size_t len;
	bool too_big;
	enum route route;
	int status;
	size_t sent;
};

static int64_t mono_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t us_since(const struct timespec *t0)
{
	return mono_us() - ((int64_t)t0->tv_sec * 1000000 + t0->tv_nsec / 1000);
}

static void errlog_init(struct errlog *l, double rate)
{
	pthread_mutex_init(&l->lock, NULL);
	l->rate = rate;
	l->tokens = 10 * rate;
	l->fill_us = mono_us();
}

/* Writes a line of the error log, or counts it if over the rate. */
static __attribute__((format(printf, 2, 3))) void errlog(struct server *s,
							 const char *fmt, ...)
{
	struct errlog *l = &s->errlog;
	char line[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (l->rate > 0) {
		int64_t now = mono_us();
		pthread_mutex_lock(&l->lock);
		l->tokens += (double)(now - l->fill_us) * l->rate / 1e6;
		if (l->tokens > 10 * l->rate)
			l->tokens = 10 * l->rate;
		l->fill_us = now;
		bool pass = l->tokens >= 1;
		if (pass)
			l->tokens -= 1;
		else if (l->held++ == 0)
			l->held_us = now;
		pthread_mutex_unlock(&l->lock);
		if (!pass)
			return;
	}
	fprintf(stderr, "%s\n", line);
}

/* Writes the count of lines held back, if any. */
static void errlog_tick(struct server *s)
{
	struct errlog *l = &s->errlog;
	pthread_mutex_lock(&l->lock);
	uint64_t held = l->held;
	int64_t since = l->held_us;
	l->held = 0;
	pthread_mutex_unlock(&l->lock);
	if (held)
		fprintf(stderr,
			"aside serve: %llu more error lines in the last %.1f s "
			"not written (--log-rate %g)\n",
			(unsigned long long)held,
			(double)(mono_us() - since) / 1e6, s->errlog.rate);
}

static enum MHD_Result respond(struct MHD_Connection *conn, struct request *r,
			       int status, const char *type, const char *body,
			       size_t len, const char *hname,
			       const char *hvalue)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
	    len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	if (type)
		MHD_add_response_header(resp, "Content-Type", type);
	if (hname)
		MHD_add_response_header(resp, hname, hvalue);
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	r->status = status;
	r->sent = len;
	return ret;
}

/* {"error": msg}, with msg escaped for JSON. */
static enum MHD_Result error(struct MHD_Connection *conn, struct request *r,
			     int status, const char *msg, const char *hname,
			     const char *hvalue)
{
	char body[640];
	size_t n = (size_t)snprintf(body, sizeof(body), "{\"error\":\"");
	for (const char *p = msg; *p && n < sizeof(body) - 8; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\') {
			body[n++] = '\\';
			body[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(body + n, sizeof(body) - n,
					      "\\u%04x", c);
		} else {
			body[n++] = (char)c;
		}
	}
	n += (size_t)snprintf(body + n, sizeof(body) - n, "\"}");
	return respond(conn, r, status, "application/json", body, n, hname,
		       hvalue);
}

/* The status for a failed service call, and the answer. */
static enum MHD_Result failure(struct server *s, struct MHD_Connection *conn,
			       struct request *r, int rc,
			       const aside_error *err, int64_t id)
{
	char msg[320];
	const char *detail =
	    err->message[0] ? err->message : aside_strerror(rc);
	switch (rc) {
	case ASIDE_NOT_FOUND:
		snprintf(msg, sizeof(msg), "user %lld not found",
			 (long long)id);
		return error(conn, r, 404, msg, NULL, NULL);
	case ASIDE_EBADID:
	case ASIDE_EBADNAME:
	case ASIDE_EBADEMAIL:
	case ASIDE_EBADJSON:
		return error(conn, r, 400, detail, NULL, NULL);
	case ASIDE_EDB:
	case ASIDE_ETIMEDOUT:
	case ASIDE_EUNAVAILABLE:
		snprintf(msg, sizeof(msg), "database unavailable: %s", detail);
		errlog(s, "aside serve: %s", msg);
		return error(conn, r, 503, msg, NULL, NULL);
	default:
		errlog(s, "aside serve: internal error: %s", detail);
		return error(conn, r, 500, detail, NULL, NULL);
	}
}

/*
 * Unescapes a URI's path or argument (%HH) as libmicrohttpd does, except
 * one holding an escaped NUL, which is left as it came: decoded, the
 * string would end at the NUL, and "/users/1%00x" would read as user 1.
 */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	for (const char *p = s; (p = strchr(p, '%')) != NULL; p++)
		if (p[1] == '0' && p[2] == '0')
			return strlen(s);
	return MHD_http_unescape(s);
}

/* "/users/123" -> 123; 0 if the tail is not a positive int64. */
static int64_t parse_id(const char *s)
{
	if (!*s || strlen(s) > 19)
		return 0;
	int64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		if (v > (INT64_MAX - (*s - '0')) / 10)
			return 0;
		v = v * 10 + (*s - '0');
	}
	return v;
}

static bool is_json(struct MHD_Connection *conn)
{
	const char *ct =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
	if (!ct)
		return false;
	size_t n = strlen("application/json");
	return strncasecmp(ct, "application/json", n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static enum MHD_Result user_json(struct MHD_Connection *conn, struct request *r,
				 int status, const user *u,
				 const char *location)
{
	size_t len;
	char *json = user_to_json(u, &len);
	if (!json)
		return error(conn, r, 500, "out of memory", NULL, NULL);
	enum MHD_Result ret =
	    respond(conn, r, status, "application/json", json, len,
		    location ? "Location" : NULL, location);
	free(json);
	return ret;
}

/*
 * The process's own figures, under the names Prometheus's client libraries
 * give them, so that the usual dashboards and alerts find them: CPU time,
 * resident and virtual memory, open and allowed descriptors, start time.
 * From /proc; a figure it cannot read is left out.
 */
static size_t process_metrics(char *buf, size_t cap)
{
	size_t n = 0;
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	char stat[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	size_t len = f ? fread(stat, 1, sizeof(stat) - 1, f) : 0;
	if (f)
		fclose(f);
	stat[len] = '\0';
	/* Fields from the state on, after the command's name (which may
	 * hold spaces and parentheses: the last ')' ends it). */
	const char *p = strrchr(stat, ')');
	unsigned long long utime, stime, start, vsize;
	long long rss;
	if (p && tick > 0 && page > 0 &&
	    sscanf(p + 2,
		   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
		   "%*d %*d %*d %*d %*d %*d %llu %llu %lld",
		   &utime, &stime, &start, &vsize, &rss) == 5) {
		n += (size_t)snprintf(
		    buf + n, cap - n,
		    "# HELP process_cpu_seconds_total User and system CPU "
		    "time spent, in seconds.\n"
		    "# TYPE process_cpu_seconds_total counter\n"
		    "process_cpu_seconds_total %.2f\n"
		    "# HELP process_resident_memory_bytes Resident memory "
		    "size in bytes.\n"
		    "# TYPE process_resident_memory_bytes gauge\n"
		    "process_resident_memory_bytes %lld\n"
		    "# HELP process_virtual_memory_bytes Virtual memory size "
		    "in bytes.\n"
		    "# TYPE process_virtual_memory_bytes gauge\n"
		    "process_virtual_memory_bytes %llu\n",
		    (double)(utime + stime) / (double)tick, rss * page, vsize);
		/* The start: boot time (btime in /proc/stat) plus ticks. */
		unsigned long long btime = 0;
		char line[256];
		if ((f = fopen("/proc/stat", "r"))) {
			while (fgets(line, sizeof(line), f))
				if (sscanf(line, "btime %llu", &btime) == 1)
					break;
			fclose(f);
		}
		if (btime && n < cap)
			n += (size_t)snprintf(
			    buf + n, cap - n,
			    "# HELP process_start_time_seconds Start time of "
			    "the process since the epoch, in seconds.\n"
			    "# TYPE process_start_time_seconds gauge\n"
			    "process_start_time_seconds %.2f\n",
			    (double)btime + (double)start / (double)tick);
	}
	long fds = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		for (struct dirent *e; (e = readdir(d));)
			fds += e->d_name[0] != '.';
		closedir(d);
		fds--; /* the directory's own descriptor */
	}
	struct rlimit lim;
	if (d && getrlimit(RLIMIT_NOFILE, &lim) == 0 && n < cap)
		n += (size_t)snprintf(
		    buf + n, cap - n,
		    "# HELP process_open_fds Number of open file "
		    "descriptors.\n"
		    "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n"
		    "# HELP process_max_fds Maximum number of open file "
		    "descriptors.\n"
		    "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
		    fds, (unsigned long long)lim.rlim_cur);
	return n < cap ? n : cap - 1;
}

static enum MHD_Result metrics(struct server *s, struct MHD_Connection *conn,
			       struct request *r)
{
	aside_metrics m;
	aside_cache_metrics(s->cache, &m);
	size_t need = aside_metrics_prometheus(&m, "aside", NULL, 0);
	size_t cap = need + 16384;
	char *buf = malloc(cap);
	if (!buf)
		return error(conn, r, 500, "out of memory", NULL, NULL);
	size_t n = aside_metrics_prometheus(&m, "aside", buf, cap);
	n += (size_t)snprintf(buf + n, cap - n,
			      "# HELP aside_http_requests_total HTTP requests "
			      "by route and status.\n"
			      "# TYPE aside_http_requests_total counter\n");
	for (int i = 0; i < NROUTES; i++)
		for (size_t k = 0; k < NSTATUS; k++) {
			uint64_t v = atomic_load_explicit(&s->requests[i][k],
							  memory_order_relaxed);
			if (v)
				n += (size_t)snprintf(
				    buf + n, cap - n,
				    "aside_http_requests_total{route=\"%s\","
				    "status=\"%d\"} %llu\n",
				    route_names[i], statuses[k],
				    (unsigned long long)v);
		}
	n += (size_t)snprintf(buf + n, cap - n,
			      "# HELP aside_http_request_duration_seconds "
			      "Time to answer a request.\n"
			      "# TYPE aside_http_request_duration_seconds "
			      "histogram\n");
	uint64_t cum = 0;
	int b = 0;
	for (int k = 0; k <= 35 && n < cap; k++) {
		uint64_t bound = 1ull << k;
		while (b < ASIDE_HIST_BUCKETS &&
		       aside_hist_bucket_low_us(b) < bound)
			cum += atomic_load_explicit(&s->latency[b++],
						    memory_order_relaxed);
		n += (size_t)snprintf(
		    buf + n, cap - n,
		    "aside_http_request_duration_seconds_bucket{le=\"%g\"} "
		    "%llu\n",
		    (double)bound / 1e6, (unsigned long long)cum);
	}
	while (b < ASIDE_HIST_BUCKETS)
		cum += atomic_load_explicit(&s->latency[b++],
					    memory_order_relaxed);
	n += (size_t)snprintf(
	    buf + n, cap - n,
	    "aside_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "aside_http_request_duration_seconds_sum %.6f\n"
	    "aside_http_request_duration_seconds_count %llu\n"
	    "# HELP aside_http_in_flight Requests being answered.\n"
	    "# TYPE aside_http_in_flight gauge\naside_http_in_flight %ld\n",
	    (unsigned long long)cum,
	    (double)atomic_load(&s->latency_sum_us) / 1e6,
	    (unsigned long long)cum, atomic_load(&s->in_flight));
	if (n < cap)
		n += process_metrics(buf + n, cap - n);
	if (n >= cap)
		n = cap - 1;
	enum MHD_Result ret = respond(conn, r, 200, "text/plain; version=0.0.4",
				      buf, n, NULL, NULL);
	free(buf);
	return ret;
}

/* A body over the limit (413) or not JSON (415): answered in *ret. */
static bool bad_body(struct MHD_Connection *conn, struct request *r,
		     enum MHD_Result *ret)
{
	if (r->too_big)
		*ret = error(conn, r, 413, "body too large", NULL, NULL);
	else if (!is_json(conn))
		*ret = error(conn, r, 415, "the body must be application/json",
			     NULL, NULL);
	else
		return false;
	return true;
}

/* Reads a body of the user's fields: name, email (id optional). */
static int body_user(struct request *r, user *u, aside_error *err)
{
	memset(u, 0, sizeof(*u));
	return user_from_json(r->body ? r->body : "", r->len, 1, u, err);
}

static enum MHD_Result route(struct server *s, struct MHD_Connection *conn,
			     const char *url, const char *method,
			     struct request *r)
{
	aside_error err;
	aside_error_clear(&err);
	if (strcmp(url, "/users") == 0) {
		r->route = R_CREATE;
		if (strcmp(method, "POST") != 0)
			return error(conn, r, 405, "use POST on /users",
				     "Allow", "POST");
		enum MHD_Result refused;
		if (bad_body(conn, r, &refused))
			return refused;
		user u;
		int rc = body_user(r, &u, &err);
		/* Taken silently, an id would look like a choice it is not. */
		if (rc == ASIDE_OK && u.id)
			return error(conn, r, 400,
				     "the server assigns a new user's id: "
				     "leave \"id\" out of the body",
				     NULL, NULL);
		if (rc == ASIDE_OK)
			rc = user_service_create_ex(s->svc, &u, &err);
		if (rc != ASIDE_OK)
			return failure(s, conn, r, rc, &err, 0);
		char loc[48];
		snprintf(loc, sizeof(loc), "/users/%lld", (long long)u.id);
		return user_json(conn, r, 201, &u, loc);
	}
	if (strncmp(url, "/users/", 7) == 0) {
		bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
		r->route = get			       ? R_GET
			   : !strcmp(method, "PUT")    ? R_UPDATE
			   : !strcmp(method, "DELETE") ? R_DELETE
						       : R_OTHER;
		if (r->route == R_OTHER)
			return error(conn, r, 405,
				     "use GET, PUT or DELETE on /users/{id}",
				     "Allow", "GET, PUT, DELETE");
		int64_t id = parse_id(url + 7);
		if (id <= 0)
			return error(conn, r, 400,
				     "invalid user id: must be a positive "
				     "integer",
				     NULL, NULL);
		if (r->route == R_GET) {
			char json[1536];
			size_t len;
			int rc = user_service_get_json(
			    s->svc, id, json, sizeof(json), &len, &err);
			if (rc != ASIDE_OK)
				return failure(s, conn, r, rc, &err, id);
			return respond(conn, r, 200, "application/json", json,
				       len, NULL, NULL);
		}
		if (r->route == R_DELETE) {
			int rc = user_service_delete_ex(s->svc, id, &err);
			if (rc != ASIDE_OK)
				return failure(s, conn, r, rc, &err, id);
			return respond(conn, r, 204, NULL, "", 0, NULL, NULL);
		}
		enum MHD_Result refused;
		if (bad_body(conn, r, &refused))
			return refused;
		user u;
		int rc = body_user(r, &u, &err);
		if (rc == ASIDE_OK && u.id && u.id != id)
			return error(conn, r, 400,
				     "the id in the body differs from the "
				     "path",
				     NULL, NULL);
		u.id = id;
		if (rc == ASIDE_OK)
			rc = user_service_update_ex(s->svc, &u, &err);
		if (rc == ASIDE_OK)
			rc = user_service_get_ex(s->svc, id, &u, &err);
		if (rc != ASIDE_OK)
			return failure(s, conn, r, rc, &err, id);
		return user_json(conn, r, 200, &u, NULL);
	}
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	if (!strcmp(url, "/metrics") || !strcmp(url, "/healthz") ||
	    !strcmp(url, "/readyz")) {
		r->route = url[1] == 'm'   ? R_METRICS
			   : url[1] == 'h' ? R_HEALTH
					   : R_READY;
		if (!get)
			return error(conn, r, 405, "use GET", "Allow", "GET");
		if (r->route == R_METRICS)
			return metrics(s, conn, r);
		if (r->route == R_HEALTH)
			return respond(conn, r, 200, "application/json",
				       "{\"status\":\"ok\"}", 15, NULL, NULL);
		int rc = user_service_ping(s->svc, &err);
		if (rc != ASIDE_OK) {
			char msg[300];
			snprintf(msg, sizeof(msg), "database unavailable: %s",
				 err.message[0] ? err.message
						: aside_strerror(rc));
			return error(conn, r, 503, msg, NULL, NULL);
		}
		return respond(conn, r, 200, "application/json",
			       "{\"status\":\"ready\"}", 18, NULL, NULL);
	}
	r->route = R_OTHER;
	return error(conn, r, 404, "no such resource", NULL, NULL);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload,
			      size_t *upload_size, void **con_cls)
{
	(void)version;
	struct server *s = cls;
	struct request *r = *con_cls;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		clock_gettime(CLOCK_MONOTONIC, &r->start);
		r->route = R_OTHER;
		*con_cls = r;
		atomic_fetch_add(&s->in_flight, 1);
		const char *cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, "Content-Length");
		if (cl && strtoull(cl, NULL, 10) > s->max_body)
			r->too_big = true;
		/* Answered on the next call, once the request is all read:
		 * answering now would close the connection (no keep-alive). */
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_big && r->len + *upload_size <= s->max_body) {
			char *b = realloc(r->body, r->len + *upload_size + 1);
			if (!b)
				return MHD_NO;
			memcpy(b + r->len, upload, *upload_size);
			r->body = b;
			r->len += *upload_size;
			r->body[r->len] = '\0';
		} else {
			r->too_big = true; /* read and dropped */
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->status)
		return MHD_YES; /* already answered */
	return route(s, conn, url, method, r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct server *s = cls;
	struct request *r = *con_cls;
	if (!r)
		return;
	int64_t us = us_since(&r->start);
	for (size_t k = 0; k < NSTATUS; k++)
		if (statuses[k] == r->status)
			atomic_fetch_add_explicit(&s->requests[r->route][k], 1,
						  memory_order_relaxed);
	atomic_fetch_add_explicit(&s->latency[aside_hist_bucket((uint64_t)us)],
				  1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->latency_sum_us, (uint64_t)us,
				  memory_order_relaxed);
	bool failed =
	    r->status >= 500 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
	if (s->access_log || failed) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		    conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		char addr[64] = "-";
		if (ci && ci->client_addr &&
		    ci->client_addr->sa_family == AF_INET)
			inet_ntop(
			    AF_INET,
			    &((struct sockaddr_in *)ci->client_addr)->sin_addr,
			    addr, sizeof(addr));
		const char *early = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK
					? ""
					: " (connection ended early)";
		/* The access log asked for is written whole. */
		if (s->access_log)
			fprintf(stderr, "%s %s %d %zu %lldus%s\n", addr,
				route_names[r->route], r->status, r->sent,
				(long long)us, early);
		else
			errlog(s, "%s %s %d %zu %lldus%s", addr,
			       route_names[r->route], r->status, r->sent,
			       (long long)us, early);
	}
	free(r->body);
	free(r);
	*con_cls = NULL;
	atomic_fetch_sub(&s->in_flight, 1);
}

static void log_to_stderr(void *ctx, int level, const char *msg)
{
	(void)ctx;
	static const char *const names[] = {"error", "warning", "info"};
	fprintf(stderr, "aside: %s: %s\n", names[level < 3 ? level : 2], msg);
}

/*
 * libmicrohttpd's own error messages, once the server listens.  Before,
 * a failure to start is told by our own message (cannot listen on ...),
 * and libmicrohttpd's would only add a confusing one ("Failed to bind to
 * port 0": it is given the address whole, not a port).
 */
static __attribute__((format(printf, 2, 0))) void
log_http(void *cls, const char *fmt, va_list ap)
{
	struct server *s = cls;
	if (!atomic_load(&s->listening))
		return;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	errlog(s, "aside serve: http: %s", msg);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: aside serve [OPTIONS]\n"
	    "  --listen HOST:PORT     address (env ASIDE_LISTEN; default "
	    "127.0.0.1:8080; port 0 picks a free one)\n"
	    "  --db URL               database (env ASIDE_DB; default "
	    "sqlite:aside.db)\n"
	    "  --cache URL            cache (env ASIDE_CACHE; default "
	    "mem://)\n"
	    "  --threads N            worker threads (default: 4 per CPU)\n"
	    "  --max-connections N    connections at once (default 1024)\n"
	    "  --timeout-s N          close a connection silent this long "
	    "(default 30)\n"
	    "  --max-body BYTES       largest request body (default 65536)\n"
	    "  --access-log           one line per request on stderr "
	    "(errors are always logged)\n"
	    "  --log-rate N           error lines a second, in bursts of "
	    "ten seconds' worth;\n"
	    "                         more are counted, not written (default "
	    "10; 0: no limit)\n"
	    "  --db-delay-ms N        delay each database read by N ms, "
	    "standing in for a remote database (default 0)\n"
	    "  --gate N               a Bloom gate sized for N users: "
	    "reads of ids no user has\n"
	    "                         answer 404 without a query "
	    "(default: none)\n"
	    "  --warm N               before listening, read the N newest "
	    "users into the cache\n"
	    "                         (default: none)\n"
	    "  --help                 this text\n");
}

static bool parse_listen(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return false;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || port < 0 || port > 65535)
		return false;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	return inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa->sin_addr) ==
	       1;
}

int app_serve(int argc, char **argv)
{
	const char *listen = getenv("ASIDE_LISTEN"),
		   *db_url = getenv("ASIDE_DB"),
		   *cache_url = getenv("ASIDE_CACHE");
	if (!listen || !*listen)
		listen = "127.0.0.1:8080";
	if (!db_url || !*db_url)
		db_url = "sqlite:aside.db";
	if (!cache_url || !*cache_url)
		cache_url = "mem://";
	/* Handlers block on the database: more threads than CPUs. */
	long threads = 4 * sysconf(_SC_NPROCESSORS_ONLN), max_conn = 1024,
	     timeout_s = 30, max_body = 65536, delay_ms = 0, gate = 0, warm = 0;
	bool access_log = false;
	double log_rate = 10;
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"db", required_argument, NULL, 'd'},
	    {"cache", required_argument, NULL, 'c'},
	    {"threads", required_argument, NULL, 't'},
	    {"max-connections", required_argument, NULL, 'm'},
	    {"timeout-s", required_argument, NULL, 'T'},
	    {"max-body", required_argument, NULL, 'b'},
	    {"access-log", no_argument, NULL, 'a'},
	    {"log-rate", required_argument, NULL, 'r'},
	    {"db-delay-ms", required_argument, NULL, 'D'},
	    {"gate", required_argument, NULL, 'g'},
	    {"warm", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		bool ok = true;
		switch (o) {
		case 'l':
			listen = optarg;
			break;
		case 'd':
			db_url = optarg;
			break;
		case 'c':
			cache_url = optarg;
			break;
		case 't':
			ok = app_long("threads", optarg, 1, 1024, &threads);
			break;
		case 'm':
			ok = app_long("max-connections", optarg, 1, 1000000,
				      &max_conn);
			break;
		case 'T':
			ok =
			    app_long("timeout-s", optarg, 1, 86400, &timeout_s);
			break;
		case 'b':
			ok = app_long("max-body", optarg, 1, 1L << 30,
				      &max_body);
			break;
		case 'a':
			access_log = true;
			break;
		case 'r': {
			long rate;
			ok = app_long("log-rate", optarg, 0, 1000000, &rate);
			log_rate = (double)rate;
			break;
		}
		case 'D':
			ok = app_long("db-delay-ms", optarg, 0, 60000,
				      &delay_ms);
			break;
		case 'g':
			ok = app_long("gate", optarg, 1, 1L << 34, &gate);
			break;
		case 'w':
			ok = app_long("warm", optarg, 1, 1L << 30, &warm);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (!ok) {
			usage(stderr);
			return 2;
		}
	}
	struct sockaddr_in sa;
	if (!parse_listen(listen, &sa)) {
		fprintf(stderr,
			"aside serve: --listen wants HOST:PORT, HOST an "
			"IPv4 address, localhost, or empty for every "
			"interface, PORT 0 to 65535; got '%s'\n",
			listen);
		return 2;
	}

	struct server *s = calloc(1, sizeof(*s));
	struct slow_repo slow;
	aside_error err;
	int status = 1;
	if (!s)
		return 1;
	s->max_body = (size_t)max_body;
	s->access_log = access_log;
	errlog_init(&s->errlog, log_rate);
	if (user_repo_open(db_url, &s->db, &err) != ASIDE_OK) {
		char shown[256];
		fprintf(stderr, "aside serve: database %s: %s\n",
			aside_url_redact(db_url, shown, sizeof(shown)),
			err.message);
		goto out;
	}
	aside_options copts = {.log = log_to_stderr};
	if (aside_cache_open_opts(cache_url, &copts, &s->cache, &err) !=
	    ASIDE_OK) {
		char shown[256];
		fprintf(stderr, "aside serve: cache %s: %s\n",
			aside_url_redact(cache_url, shown, sizeof(shown)),
			err.message);
		goto out;
	}
	user_repo repo = s->db;
	if (delay_ms)
		repo = slow_repo_wrap(&slow, s->db, delay_ms * 1000);
	if (!(s->svc = user_service_new(repo, s->cache))) {
		fprintf(stderr, "aside serve: out of memory\n");
		goto out;
	}
	if (gate &&
	    user_service_gate(s->svc, (uint64_t)gate, 0, &err) != ASIDE_OK) {
		fprintf(stderr, "aside serve: gate: %s\n", err.message);
		goto out;
	}
	if (warm) {
		size_t warmed;
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (user_service_warm(s->svc, (size_t)warm, &warmed, &err) !=
		    ASIDE_OK) {
			fprintf(stderr, "aside serve: warm: %s\n", err.message);
			goto out;
		}
		fprintf(stderr, "aside serve: warmed %zu users in %lld ms\n",
			warmed, (long long)(us_since(&t0) / 1000));
	}

	/* Signals go to this thread alone, which waits for them. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	/*
	 * poll(), not epoll: libmicrohttpd's MHD_quiesce_daemon on an epoll
	 * daemon with its own threads races with them to take the listening
	 * socket out of the epoll set, and the loser aborts the process
	 * ("Failed to remove listen FD from epoll set"; seen once in test_http
	 * at SIGTERM).  With poll() each thread rebuilds its set every round,
	 * and quiescing only wakes them.  Each thread polls its share of the
	 * connection limit; docs/performance.md measures both.
	 */
	struct MHD_Daemon *d = MHD_start_daemon(
	    MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conn,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout_s,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, s,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, log_http, s, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "aside serve: cannot listen on %s: %s\n",
			listen, strerror(errno));
		goto out;
	}
	atomic_store(&s->listening, true);
	const union MHD_DaemonInfo *di =
	    MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	char host[64];
	inet_ntop(AF_INET, &sa.sin_addr, host, sizeof(host));
	unsigned port = di ? di->port : ntohs(sa.sin_port);
	printf("aside serve: listening on http://%s:%u (db %s, cache %s, "
	       "%ld threads)\n",
	       host, port, db_url, cache_url, threads);
	printf("try: curl -s -X POST http://%s:%u/users -H 'Content-Type: "
	       "application/json' -d '{\"name\":\"Alice\",\"email\":"
	       "\"alice@example.com\"}'\n"
	       "     curl -s http://%s:%u/users/1\n"
	       "     curl -s http://%s:%u/metrics\n",
	       host, port, host, port, host, port);
	fflush(stdout);

	/* Each second the count of error lines held back, if any. */
	int sig;
	const struct timespec tick = {1, 0};
	while ((sig = sigtimedwait(&stop, NULL, &tick)) < 0)
		errlog_tick(s);
	printf("aside serve: %s: finishing requests in flight\n",
	       sig == SIGINT ? "SIGINT" : "SIGTERM");
	fflush(stdout);
	MHD_quiesce_daemon(d); /* no new connections */
	for (int i = 0; i < 100 * timeout_s && atomic_load(&s->in_flight);
	     i++) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	MHD_stop_daemon(d);
	errlog_tick(s);
	printf("aside serve: stopped\n");
	status = 0;
out:
	user_service_free(s->svc);
	aside_cache_close(s->cache);
	user_repo_close(&s->db);
	pthread_mutex_destroy(&s->errlog.lock);
	free(s);
	return status;
}
