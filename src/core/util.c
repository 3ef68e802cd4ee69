/*
 * util.c -- the hash, clocks, a per-thread random generator and URL query
 * parsing, shared by the engine and the tiers.
 */
#include "internal.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

/*
 * A 64-bit hash of short keys, 8 bytes at a time, each step a 64x64->128
 * multiply folded in half.  Written here because no Debian-packaged library
 * offers a fast seeded hash for short byte strings; keys are at most
 * ASIDE_KEY_MAX bytes.  The seed is drawn once per process so that a client
 * cannot pick keys that collide in every process.
 */
static uint64_t hash_seed = 0x9e3779b97f4a7c15ull;

__attribute__((constructor)) static void hash_seed_init(void)
{
	uint64_t s;
	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t)sizeof(s))
		hash_seed ^= s;
}

static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t load64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t load32(const char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/*
 * The tail is read with overlapping whole-word loads, never byte by byte:
 * a byte loop mispredicts whenever key lengths vary, and bytes stored to
 * then reloaded from the stack stall store forwarding.
 */
uint64_t aside_hash(const char *key, size_t klen)
{
	const uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
		       k2 = 0x8ebc6af09c88c6e3ull;
	uint64_t h = hash_seed ^ (klen * k0), a, b;
	if (klen > 16) {
		const char *p = key;
		size_t n = klen;
		do {
			h = fold_mul(load64(p) ^ k1, load64(p + 8) ^ h);
			p += 16;
			n -= 16;
		} while (n > 16);
		a = load64(key + klen - 16);
		b = load64(key + klen - 8);
	} else if (klen >= 8) {
		a = load64(key);
		b = load64(key + klen - 8);
	} else if (klen >= 4) {
		a = load32(key);
		b = load32(key + klen - 4);
	} else if (klen > 0) {
		const unsigned char *u = (const unsigned char *)key;
		a = ((uint64_t)u[0] << 16) | ((uint64_t)u[klen >> 1] << 8) |
		    u[klen - 1];
		b = 0;
	} else {
		a = b = 0;
	}
	h = fold_mul(a ^ k1, b ^ h ^ k2);
	return fold_mul(h ^ k0, k1 ^ (h >> 29));
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
		    hash_seed;
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

void *aside__table_alloc(size_t bytes)
{
	/* Anonymous pages are zero and committed only when touched, so a
	 * large capacity costs address space, not memory, until it fills.
	 * A large table is aligned to 2 MiB so that huge pages can back it. */
	const size_t huge = 2u << 20;
	size_t extra = bytes >= huge ? huge : 0;
	char *p = mmap(NULL, bytes + extra, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
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
