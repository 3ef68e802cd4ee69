/*
 * bench_ab.c -- two builds of libaside side by side in one process, to tell
 * whether a change to the hit path makes it faster.
 *
 *   bench_ab [engine|service|ref|get|obj] BUILD_A BUILD_B [N] [SECONDS]
 *            [SLICE]
 *
 * Each build's libaside-users (and through it, its own libaside) is loaded
 * into a link-map namespace of its own with dlmopen(3), so that the two
 * copies share no symbol, no thread-local and no ticker.  Each gets a cache
 * of N resident keys (default 100,000), as bench_l1 fills it; then one
 * thread alternates between them in slices of SLICE seconds (default 0.2)
 * for SECONDS in all (default 10), the first two slices being warm-up, and
 * prints each build's rate and B/A.
 *
 * Why: on a shared VM the machine's speed drifts by 2x within minutes, so
 * two runs one after the other, or even interleaved runs of a few seconds,
 * cannot resolve a difference of 5%.  Slices a fifth of a second apart see
 * the same machine; giving the same build twice shows what is left of the
 * noise (B/A within about 0.04 of 1 here).
 *
 *   engine   aside_cache_read on a hit, the value looked at in the callback
 *   service  user_service_get on a hit, over an in-memory repository
 *   ref      aside_cache_get on a hit, then unref, the bytes not read
 *   get      the same, with the bytes' first byte read before the unref
 *   obj      the same over a loader with decode, its decoded form read
 *            (in the value's room) in place of the bytes
 */
#include <aside/aside.h>
#include <aside/users.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

struct build {
	const char *dir;
	int (*open)(const char *, const aside_options *, aside_cache **,
		    aside_error *);
	void (*close)(aside_cache *);
	int (*get)(aside_cache *, const char *, size_t, const aside_loader *,
		   aside_value **, aside_error *);
	int (*read)(aside_cache *, const char *, size_t, const aside_loader *,
		    aside_read_fn, void *, aside_error *);
	void (*unref)(aside_value *);
	const void *(*data)(const aside_value *, size_t *);
	int (*value_new)(const char *, size_t, const void *, size_t,
			 aside_value **);
	int (*value_new_room)(const char *, size_t, const void *, size_t,
			      size_t, aside_value **);
	void *(*room)(aside_value *, size_t *);
	void *(*attach)(aside_value *, void *, void (*)(void *), size_t);
	void *(*obj)(const aside_value *);
	user_service *(*svc_new)(user_repo, aside_cache *);
	void (*svc_free)(user_service *);
	int (*svc_get)(user_service *, int64_t, user *);
	aside_cache *cache;
	user_service *svc;
	double ops, secs;
};

enum { M_ENGINE, M_SERVICE, M_REF, M_GET, M_OBJ };
static const char *const modes[] = {"engine", "service", "ref", "get", "obj"};

static struct build builds[2];
static struct build *cur;

static void *sym(void *lib, const char *dir, const char *name)
{
	void *p = dlsym(lib, name);
	if (!p) {
		fprintf(stderr, "bench_ab: %s: no %s\n", dir, name);
		exit(1);
	}
	return p;
}

static void load_build(struct build *b, const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/libaside-users.so", dir);
	void *lib = dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "bench_ab: %s\n", dlerror());
		exit(1);
	}
	b->dir = dir;
	b->open = sym(lib, dir, "aside_cache_open_opts");
	b->close = sym(lib, dir, "aside_cache_close");
	b->get = sym(lib, dir, "aside_cache_get");
	b->read = sym(lib, dir, "aside_cache_read");
	b->unref = sym(lib, dir, "aside_value_unref");
	b->data = sym(lib, dir, "aside_value_data");
	b->value_new = sym(lib, dir, "aside_value_new");
	b->value_new_room = sym(lib, dir, "aside_value_new_room");
	b->room = sym(lib, dir, "aside_value_room");
	b->attach = sym(lib, dir, "aside_value_attach");
	b->obj = sym(lib, dir, "aside_value_obj");
	b->svc_new = sym(lib, dir, "user_service_new");
	b->svc_free = sym(lib, dir, "user_service_free");
	b->svc_get = sym(lib, dir, "user_service_get");
}

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)arg;
	(void)err;
	return cur->value_new(key, klen, "0123456789abcdef", 16, out);
}

static const aside_loader loader = {load, NULL, NULL};

/* The obj mode's decoded form: the bytes' first word, in the value's room. */
static int decode(void *arg, aside_value *v, aside_error *err)
{
	(void)arg;
	(void)err;
	uint64_t *w = cur->room(v, NULL);
	memcpy(w, cur->data(v, NULL), sizeof(*w));
	cur->attach(v, w, NULL, 0);
	return ASIDE_OK;
}

static int load_decoded(void *arg, const char *key, size_t klen,
			aside_value **out, aside_error *err)
{
	int rc = cur->value_new_room(key, klen, "0123456789abcdef", 16,
				     sizeof(uint64_t), out);
	return rc == ASIDE_OK ? decode(arg, *out, err) : rc;
}

static const aside_loader decoding = {load_decoded, decode, NULL};

static void touch(void *arg, const aside_value *v)
{
	size_t len;
	cur->data(v, &len);
	*(long *)arg += len > 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int mode = -1;
	for (int i = 0; argc > 1 && i < (int)(sizeof(modes) / sizeof(*modes));
	     i++)
		if (!strcmp(argv[1], modes[i]))
			mode = i;
	if (argc < 4 || mode < 0) {
		fprintf(stderr, "usage: bench_ab [engine|service|ref|get|obj] "
				"BUILD_A BUILD_B [N] [SECONDS] [SLICE]\n");
		return 2;
	}
	bool service = mode == M_SERVICE;
	const aside_loader *ld = mode == M_OBJ ? &decoding : &loader;
	long n = argc > 4 ? atol(argv[4]) : 100000;
	double total = argc > 5 ? atof(argv[5]) : 10;
	double slice = argc > 6 ? atof(argv[6]) : 0.2;
	if (n < 1 || total <= 0 || slice <= 0) {
		fprintf(stderr, "bench_ab: N, SECONDS and SLICE must be > 0\n");
		return 2;
	}
	for (int i = 0; i < 2; i++) {
		struct build *b = cur = &builds[i];
		load_build(b, argv[2 + i]);
		char url[64];
		snprintf(url, sizeof(url), "mem://?capacity=%ld", n * 2);
		aside_options o = {0};
		aside_error err;
		if (b->open(url, &o, &b->cache, &err) != ASIDE_OK) {
			fprintf(stderr, "bench_ab: %s\n", err.message);
			return 1;
		}
		if (service) {
			b->svc =
			    b->svc_new((user_repo){&synth_ops, NULL}, b->cache);
			user u;
			for (long k = 0; k < n; k++)
				b->svc_get(b->svc, k + 1, &u);
			continue;
		}
		for (long k = 0; k < n; k++) {
			char key[16];
			aside_value *v;
			make_key((uint64_t)k, key);
			if (b->get(b->cache, key, 16, ld, &v, NULL) == ASIDE_OK)
				b->unref(v);
		}
	}

	uint64_t s = 1;
	long hits = 0;
	user u;
	double t0 = now_s();
	for (int r = 0; now_s() - t0 < total; r++) {
		struct build *b = cur = &builds[r & 1];
		double a = now_s(), z;
		long ops = 0;
		do {
			for (int j = 0; j < 1024; j++) {
				s ^= s << 13;
				s ^= s >> 7;
				s ^= s << 17;
				uint64_t k = s % (uint64_t)n;
				if (service) {
					hits +=
					    b->svc_get(b->svc, (int64_t)k + 1,
						       &u) == ASIDE_OK;
					continue;
				}
				char key[16] __attribute__((aligned(8)));
				make_key(k, key);
				if (mode >= M_REF) {
					aside_value *v;
					if (b->get(b->cache, key, 16, ld, &v,
						   NULL) != ASIDE_OK) {
						hits = -(1L << 40);
						continue;
					}
					if (mode == M_GET) {
						size_t len;
						const char *d =
						    b->data(v, &len);
						hits += len && d[0] == '0';
					} else if (mode == M_OBJ) {
						const uint64_t *w = b->obj(v);
						hits += w && *w != 0;
					} else {
						hits++;
					}
					b->unref(v);
					continue;
				}
				if (b->read(b->cache, key, 16, &loader, touch,
					    &hits, NULL) != ASIDE_OK)
					hits = -(1L << 40);
			}
			ops += 1024;
			z = now_s();
		} while (z - a < slice);
		if (r >= 2) {
			b->ops += (double)ops;
			b->secs += z - a;
		}
	}
	double ra = builds[0].ops / builds[0].secs / 1e6,
	       rb = builds[1].ops / builds[1].secs / 1e6;
	printf("bench_ab %s N=%ld: A %.2f M/s (%s), B %.2f M/s (%s), "
	       "B/A %.3f%s\n",
	       argv[1], n, ra, builds[0].dir, rb, builds[1].dir, rb / ra,
	       hits > 0 ? "" : " (reads failed)");
	for (int i = 0; i < 2; i++) {
		cur = &builds[i];
		if (builds[i].svc)
			builds[i].svc_free(builds[i].svc);
		builds[i].close(builds[i].cache);
	}
	return hits > 0 ? 0 : 1;
}
