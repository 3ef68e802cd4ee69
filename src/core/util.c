/*
 * util.c -- the hash, clocks, a per-thread random generator and URL query
 * parsing, shared by the engine and the tiers.
 */
#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

/* The hash's seed (internal.h), drawn once per process. */
uint64_t aside__hash_seed = 0x9e3779b97f4a7c15ull;

__attribute__((constructor)) static void hash_seed_init(void)
{
	uint64_t s;
	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t)sizeof(s))
		aside__hash_seed ^= s;
}

uint64_t aside_hash(const char *key, size_t klen)
{
	return aside__hash(key, klen);
}

int64_t aside_clock_default(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t aside__mono_coarse_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t aside__mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t aside__rand(void)
{
	static _Thread_local uint64_t s
	    __attribute__((tls_model("initial-exec")));
	if (s == 0) {
		s = (uint64_t)aside__mono_us() ^ (uint64_t)(uintptr_t)&s ^
		    aside__hash_seed;
		if (s == 0)
			s = 1;
	}
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

bool aside__parse_u64(const char *s, size_t len, uint64_t min, uint64_t max,
		      uint64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

int aside__parse_query(const char *q, aside__param_fn fn, void *ctx,
		       aside_error *err)
{
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t n = amp ? (size_t)(amp - q) : strlen(q);
		if (n > 0) {
			const char *eq = memchr(q, '=', n);
			if (!eq)
				return aside__fail(err, ASIDE_EURL,
						   "option '%.*s' has no value",
						   (int)n, q);
			int rc = fn(ctx, q, (size_t)(eq - q), eq + 1,
				    n - (size_t)(eq - q) - 1, err);
			if (rc != ASIDE_OK)
				return rc;
		}
		q = amp ? amp + 1 : NULL;
	}
	return ASIDE_OK;
}

void *aside__sparse_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void *aside__table_alloc(size_t bytes)
{
	/* Anonymous pages are zero and committed only when touched, so a
	 * large capacity costs address space, not memory, until it fills.
	 * A large table is aligned to 2 MiB so that huge pages can back it. */
	const size_t huge = 2u << 20;
	size_t extra = bytes >= huge ? huge : 0;
	char *p = aside__sparse_alloc(bytes + extra);
	if (!p)
		return NULL;
	if (!extra)
		return p;
	char *start =
	    (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (start > p)
		munmap(p, (size_t)(start - p));
	size_t tail = (size_t)(p + bytes + extra - (start + bytes));
	if (tail)
		munmap(start + bytes, tail);
	madvise(start, bytes, MADV_HUGEPAGE); /* advice only */
	return start;
}

void aside__table_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}

int aside__thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	/* A library's thread must not take the application's signals: one
	 * delivered here would run the application's handler, or kill the
	 * process, on a thread it does not know about.  The new thread
	 * inherits the mask in force when it is created. */
	sigset_t all, was;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &was);
	int rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &was, NULL);
	return rc;
}

/* Appends c to buf (o bytes used of cap), if there is room for it and a NUL. */
static void put_char(char *buf, size_t cap, size_t *o, char c)
{
	if (*o + 1 < cap)
		buf[(*o)++] = c;
}

static void put_str(char *buf, size_t cap, size_t *o, const char *s)
{
	while (*s)
		put_char(buf, cap, o, *s++);
}

char *aside_url_redact(const char *url, char *buf, size_t cap)
{
	if (!buf || cap == 0)
		return buf;
	buf[0] = '\0';
	if (!url)
		return buf;
	const char *auth = strstr(url, "://");
	auth = auth ? auth + 3 : url;
	const char *end = auth + strcspn(auth, "/?#");
	const char *at = NULL;
	for (const char *p = auth; p < end; p++)
		if (*p == '@')
			at = p; /* the last one: a password may hold an '@' */
	const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon && colon + 1 == at)
		colon = NULL; /* an empty password: nothing to hide */
	const char *query = strchr(end, '?');
	size_t o = 0;
	for (const char *p = url; *p; p++) {
		if (colon && p == colon + 1) {
			put_str(buf, cap, &o, "***");
			p = at - 1; /* on to the '@' */
			continue;
		}
		put_char(buf, cap, &o, *p);
		/* A "password=" parameter: its value goes too. */
		if (query && p >= query && (*p == '?' || *p == '&') &&
		    strncmp(p + 1, "password=", 9) == 0) {
			put_str(buf, cap, &o, "password=***");
			p += 9;
			while (p[1] && p[1] != '&' && p[1] != '#')
				p++;
		}
	}
	buf[o] = '\0';
	return buf;
}
