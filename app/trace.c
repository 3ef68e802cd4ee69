/*
 * trace.c -- `aside trace --capacity N FILE...`: replays key traces (one
 * unsigned integer key a line, plain or gzip) through the in-process cache
 * exactly as reads would use it, and prints the hit ratio of each.  A hit is
 * a read of a resident key; a miss loads and inserts it (evicting as the
 * policy chooses), as in ../shared/traces/README.md.  With --policy lru or
 * opt, through an exact LRU or Belady's OPT instead (reference.c): the
 * figures to hold the cache's against.
 */
#include "app.h"

#include <aside/aside.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)err;
	(*(unsigned long *)arg)++;
	return aside_value_new(key, klen, "", 0, out);
}

enum policy { AS_CACHE, LRU, OPT };
static const char *const policy_names[] = {"aside", "lru", "opt"};

/* The file's name without its directories. */
static const char *base_name(const char *path)
{
	const char *name = strrchr(path, '/');
	return name ? name + 1 : path;
}

/* Opens a trace, plain or gzip; NULL after saying why not. */
static gzFile open_trace(const char *path)
{
	gzFile in = gzopen(path, "rb"); /* reads plain files too */
	if (!in)
		fprintf(stderr, "aside trace: %s: cannot open\n", path);
	return in;
}

/*
 * The trace's next key in *k, past blank lines: 1, 0 at the end, or -1
 * after naming the line that is not a key.  *line counts the lines read.
 */
static int next_key(gzFile in, const char *path, unsigned long *line,
		    unsigned long long *k)
{
	char buf[64];
	while (gzgets(in, buf, sizeof(buf))) {
		++*line;
		int kind = app_trace_key(buf, k);
		if (kind > 0)
			return 1;
		if (kind < 0) {
			app_bad_trace_line("trace", path, *line, buf);
			return -1;
		}
	}
	return 0;
}

/*
 * Reads every key of a trace into *keys (malloc'd, *n of them); 0, or 1
 * after printing why it could not.
 */
static int read_keys(const char *path, unsigned long long **keys, size_t *n)
{
	*keys = NULL;
	*n = 0;
	gzFile in = open_trace(path);
	if (!in)
		return 1;
	size_t cap = 0;
	unsigned long line = 0;
	unsigned long long k;
	int status = 0, got;
	while ((got = next_key(in, path, &line, &k)) != 0) {
		if (got < 0) {
			status = 1;
			break;
		}
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			unsigned long long *more =
			    realloc(*keys, ncap * sizeof(**keys));
			if (!more) {
				fprintf(stderr,
					"aside trace: %s: out of memory after "
					"%zu keys\n",
					path, *n);
				status = 1;
				break;
			}
			*keys = more;
			cap = ncap;
		}
		(*keys)[(*n)++] = k;
	}
	gzclose(in);
	if (status) {
		free(*keys);
		*keys = NULL;
	}
	return status;
}

/* Replays one file through LRU or OPT; 0, or 1 after saying why not. */
static int replay_reference(const char *path, long capacity, enum policy p)
{
	unsigned long long *keys;
	size_t n;
	if (read_keys(path, &keys, &n))
		return 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct app_reference r;
	int rc = p == LRU ? app_reference_lru(keys, n, (size_t)capacity, &r)
			  : app_reference_opt(keys, n, (size_t)capacity, &r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(keys);
	if (rc && p == OPT && n >= UINT32_MAX)
		fprintf(stderr,
			"aside trace: %s: %zu keys; opt replays at most "
			"%u\n",
			path, n, UINT32_MAX - 1);
	else if (rc)
		fprintf(stderr,
			"aside trace: %s: out of memory for %s over %zu "
			"keys\n",
			path, policy_names[p], n);
	if (rc)
		return 1;
	printf("trace=%s events=%zu capacity=%ld hit_ratio=%.4f "
	       "evictions=%llu policy=%s %.2fs\n",
	       base_name(path), n, capacity, n ? (double)r.hits / (double)n : 0,
	       r.evictions, policy_names[p],
	       (double)(t1.tv_sec - t0.tv_sec) +
		   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}

/* Replays one file; returns 0, or 1 after printing why it could not. */
static int replay(const char *path, long capacity, long shards)
{
	gzFile in = open_trace(path);
	if (!in)
		return 1;
	char url[96];
	if (shards)
		snprintf(url, sizeof(url), "mem://?capacity=%ld&shards=%ld",
			 capacity, shards);
	else
		snprintf(url, sizeof(url), "mem://?capacity=%ld", capacity);
	aside_cache *c;
	aside_error err;
	if (aside_cache_open(url, &c, &err) != ASIDE_OK) {
		fprintf(stderr, "aside trace: %s\n", err.message);
		gzclose(in);
		return 1;
	}
	unsigned long loads = 0, events = 0, line = 0;
	aside_loader ld = {load, NULL, &loads};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int status = 0, got;
	unsigned long long k;
	while ((got = next_key(in, path, &line, &k)) != 0) {
		if (got < 0) {
			status = 1;
			break;
		}
		char key[32];
		int klen = snprintf(key, sizeof(key), "t:%llu", k);
		aside_value *v;
		if (aside_cache_get(c, key, (size_t)klen, &ld, &v, &err) !=
		    ASIDE_OK) {
			fprintf(stderr, "aside trace: %s\n", err.message);
			status = 1;
			break;
		}
		aside_value_unref(v);
		events++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	gzclose(in);
	if (status == 0) {
		aside_metrics m;
		aside_cache_metrics(c, &m);
		double secs = (double)(t1.tv_sec - t0.tv_sec) +
			      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("trace=%s events=%lu capacity=%ld hit_ratio=%.4f "
		       "evictions=%llu policy=w-tinylfu %.2fs\n",
		       base_name(path), events, capacity,
		       events ? (double)(events - loads) / (double)events : 0,
		       (unsigned long long)m.evictions, secs);
		if (m.hits + m.misses != events || m.loads != loads ||
		    m.hits != events - loads) {
			fprintf(stderr, "aside trace: counts disagree\n");
			status = 1;
		}
	}
	aside_cache_close(c);
	return status;
}

int app_trace(int argc, char **argv)
{
	long capacity = 0, shards = 0;
	enum policy policy = AS_CACHE;
	static const struct option opts[] = {
	    {"capacity", required_argument, NULL, 'c'},
	    {"shards", required_argument, NULL, 's'},
	    {"policy", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			if (!app_long("capacity", optarg, 1, 1L << 30,
				      &capacity))
				return 2;
			break;
		case 's':
			if (!app_long("shards", optarg, 1, 1024, &shards))
				return 2;
			break;
		case 'p': {
			int i = AS_CACHE;
			while (i <= OPT && strcmp(optarg, policy_names[i]))
				i++;
			if (i > OPT) {
				fprintf(stderr,
					"aside trace: --policy wants aside, "
					"lru or opt, not '%s'\n",
					optarg);
				return 2;
			}
			policy = (enum policy)i;
			break;
		}
		case 'h':
			printf("usage: aside trace --capacity N [--shards S] "
			       "[--policy P] FILE...\n"
			       "  replays key traces (one unsigned key a line, "
			       "plain or .gz) through the\n"
			       "  in-process cache and prints hit_ratio for "
			       "each; --shards forces the\n"
			       "  number of shards (default: chosen from the "
			       "capacity, as mem:// does)\n"
			       "  --policy lru or opt replays them through an "
			       "exact LRU or Belady's OPT\n"
			       "  of N entries instead, the figures to hold "
			       "the cache's against\n"
			       "  (default: aside, the cache itself)\n");
			return 0;
		default:
			return 2;
		}
	}
	if (capacity < 1 || capacity > (1L << 30) || shards < 0 ||
	    optind >= argc) {
		fprintf(stderr, "usage: aside trace --capacity N FILE...\n");
		return 2;
	}
	if (shards && policy != AS_CACHE) {
		fprintf(stderr,
			"aside trace: --shards is the cache's; %s is "
			"not sharded\n",
			policy_names[policy]);
		return 2;
	}
	int status = 0;
	for (int i = optind; i < argc; i++)
		status |= policy == AS_CACHE
			      ? replay(argv[i], capacity, shards)
			      : replay_reference(argv[i], capacity, policy);
	return status;
}
