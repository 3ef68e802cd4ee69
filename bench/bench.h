/*
 * bench.h -- what the L1 benchmarks share: their keys, and a repository in
 * memory for the service mode.  Header-only: each benchmark is one file.
 */
#ifndef ASIDE_BENCH_H
#define ASIDE_BENCH_H

#include <aside/users.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * Key k as "k:000000" and 8 hex digits, built in two registers and stored
 * as two words, as the peer's harness makes its Long keys: no table of
 * keys to miss on, and the hash's two 8-byte loads read exactly what the
 * two stores wrote (a load that straddles fresh stores waits for them).
 */
static inline size_t make_key(uint64_t k, char out[16])
{
	uint64_t x = k & 0xffffffffu;
	x = (x | x << 16) & 0x0000ffff0000ffffull;
	x = (x | x << 8) & 0x00ff00ff00ff00ffull;
	x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full; /* byte i: nibble i */
	uint64_t letters = ((x + 0x0606060606060606ull) >> 4) &
			   0x0101010101010101ull; /* 1 where the digit > 9 */
	x += 0x3030303030303030ull + letters * ('a' - '0' - 10);
	uint64_t hi = __builtin_bswap64(x), lo;
	memcpy(&lo, "k:000000", 8);
	memcpy(out, &lo, 8);
	memcpy(out + 8, &hi, 8);
	return 16;
}

/* seed: an in-memory repository is enough; every read is a hit anyway. */
static int mem_get(void *self, int64_t id, user *out)
{
	(void)self;
	memset(out, 0, sizeof(*out));
	out->id = id;
	snprintf(out->name, sizeof(out->name), "User %lld", (long long)id);
	snprintf(out->email, sizeof(out->email), "user%lld@example.com",
		 (long long)id);
	out->created_at_us = 1764000000000000;
	return ASIDE_OK;
}
static int mem_nop(void *self, user *u)
{
	(void)self;
	(void)u;
	return ASIDE_EDB;
}
static int mem_nop_c(void *self, const user *u)
{
	(void)self;
	(void)u;
	return ASIDE_EDB;
}
static int mem_rm(void *self, int64_t id)
{
	(void)self;
	(void)id;
	return ASIDE_EDB;
}
static void mem_close(void *self)
{
	(void)self;
}
static const user_repo_ops synth_ops = {.get = mem_get,
					.create = mem_nop,
					.update = mem_nop_c,
					.remove = mem_rm,
					.close = mem_close};

#endif
