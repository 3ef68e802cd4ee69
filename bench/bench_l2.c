/*
 * bench_l2.c -- an L2 (Redis) hit through the engine against a raw hiredis
 * GET of the same bytes from the same Redis, side by side in one run.
 *
 *   bench_l2 redis://HOST:PORT [ROUNDS] [OPS_PER_ROUND]
 *
 * One thread alternates rounds of raw GETs and engine reads (redis:// with
 * no L1, so every read is an L2 hit), then two threads read through the
 * engine at once.  Prints µs per operation and the ratio.
 */
#include <aside/aside.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char value[] = "{\"id\":42,\"name\":\"Alice Example\",\"email\":"
			    "\"alice@example.com\",\"created_at\":"
			    "\"2026-11-25T16:00:00.000000Z\"}";

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)arg;
	(void)err;
	return aside_value_new(key, klen, value, sizeof(value) - 1, out);
}

static const aside_loader loader = {load, NULL, NULL};
static aside_cache *cache;
static long ops;

static double engine_round(void)
{
	double t0 = now_s();
	for (long i = 0; i < ops; i++) {
		aside_value *v;
		if (aside_cache_get(cache, "user:42", 7, &loader, &v, NULL) !=
		    ASIDE_OK) {
			fprintf(stderr, "bench_l2: engine read failed\n");
			exit(1);
		}
		aside_value_unref(v);
	}
	return (now_s() - t0) / (double)ops * 1e6;
}

static void *engine_thread(void *arg)
{
	*(double *)arg = engine_round();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strncmp(argv[1], "redis://", 8) != 0) {
		fprintf(stderr, "usage: bench_l2 redis://HOST:PORT [ROUNDS] "
				"[OPS_PER_ROUND]\n");
		return 2;
	}
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	ops = argc > 3 ? atol(argv[3]) : 20000;
	char host[256];
	int port, db = 0;
	if (sscanf(argv[1] + 8, "%255[^:/]:%d/%d", host, &port, &db) < 2) {
		fprintf(stderr, "bench_l2: expected redis://HOST:PORT\n");
		return 2;
	}
	aside_error err;
	if (aside_cache_open(argv[1], &cache, &err) != ASIDE_OK) {
		fprintf(stderr, "bench_l2: %s\n", err.message);
		return 1;
	}
	redisContext *raw = redisConnect(host, port);
	if (!raw || raw->err) {
		fprintf(stderr, "bench_l2: cannot connect\n");
		return 1;
	}
	redisReply *sel = redisCommand(raw, "SELECT %d", db);
	if (sel)
		freeReplyObject(sel);
	/* Fill once through the engine: the raw GET reads the same entry. */
	aside_value *v;
	aside_cache_get(cache, "user:42", 7, &loader, &v, NULL);
	aside_value_unref(v);

	double raw_sum = 0, eng_sum = 0, ratio[64];
	if (rounds > 64)
		rounds = 64;
	for (int r = 0; r < rounds; r++) {
		double t0 = now_s();
		for (long i = 0; i < ops; i++) {
			redisReply *rep = redisCommand(raw, "GET user:42");
			if (!rep || rep->type != REDIS_REPLY_STRING) {
				fprintf(stderr, "bench_l2: raw GET failed\n");
				return 1;
			}
			freeReplyObject(rep);
		}
		double raw_us = (now_s() - t0) / (double)ops * 1e6;
		double eng_us = engine_round();
		raw_sum += raw_us;
		eng_sum += eng_us;
		ratio[r] = eng_us / raw_us;
		printf("round %d: raw GET %.2f us, engine L2 hit %.2f us\n", r,
		       raw_us, eng_us);
	}
	/* The median of the per-round ratios: loopback latency drifts. */
	for (int i = 1; i < rounds; i++)
		for (int j = i; j > 0 && ratio[j] < ratio[j - 1]; j--) {
			double t = ratio[j];
			ratio[j] = ratio[j - 1];
			ratio[j - 1] = t;
		}
	printf("1 thread: raw GET %.2f us/op, engine L2 hit %.2f us/op "
	       "(%d rounds of %ld): ratio of means %.3f, median ratio %.3f\n",
	       raw_sum / rounds, eng_sum / rounds, rounds, ops,
	       eng_sum / raw_sum, ratio[rounds / 2]);

	pthread_t t[2];
	double us[2];
	double t0 = now_s();
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, engine_thread, &us[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	double wall = now_s() - t0;
	printf("2 threads: engine L2 hits %.0f/s in all (%.2f and %.2f "
	       "us/op)\n",
	       2.0 * (double)ops / wall, us[0], us[1]);
	aside_metrics m;
	aside_cache_metrics(cache, &m);
	printf("metrics: L2 hits %llu, loads %llu\n",
	       (unsigned long long)m.tier_hits[0], (unsigned long long)m.loads);
	redisFree(raw);
	aside_cache_close(cache);
	return 0;
}
