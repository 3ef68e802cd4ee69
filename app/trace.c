/*
 * trace.c -- `aside trace --capacity N FILE...`: replays key traces (one
 * unsigned integer key a line, plain or gzip) through the in-process cache
 * exactly as reads would use it, and prints the hit ratio of each.  A hit is
 * a read of a resident key; a miss loads and inserts it (evicting as the
 * policy chooses), as in ../shared/traces/README.md.
 */
#include "app.h"

#include <aside/aside.h>
#include <getopt.h>
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

/* Replays one file; returns 0, or 1 after printing why it could not. */
static int replay(const char *path, long capacity, long shards)
{
	gzFile in = gzopen(path, "rb"); /* reads plain files too */
	if (!in) {
		fprintf(stderr, "aside trace: %s: cannot open\n", path);
		return 1;
	}
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
	char buf[64];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int status = 0;
	while (gzgets(in, buf, sizeof(buf))) {
		line++;
		unsigned long long k;
		int kind = app_trace_key(buf, &k);
		if (kind == 0)
			continue;
		if (kind < 0) {
			app_bad_trace_line("trace", path, line, buf);
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
		const char *name = strrchr(path, '/');
		double secs = (double)(t1.tv_sec - t0.tv_sec) +
			      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("trace=%s events=%lu capacity=%ld hit_ratio=%.4f "
		       "evictions=%llu policy=w-tinylfu %.2fs\n",
		       name ? name + 1 : path, events, capacity,
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
	static const struct option opts[] = {
	    {"capacity", required_argument, NULL, 'c'},
	    {"shards", required_argument, NULL, 's'},
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
		case 'h':
			printf("usage: aside trace --capacity N [--shards S] "
			       "FILE...\n"
			       "  replays key traces (one unsigned key a line, "
			       "plain or .gz) through the\n"
			       "  in-process cache and prints hit_ratio for "
			       "each; --shards forces the\n"
			       "  number of shards (default: chosen from the "
			       "capacity, as mem:// does)\n");
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
	int status = 0;
	for (int i = optind; i < argc; i++)
		status |= replay(argv[i], capacity, shards);
	return status;
}
