/*
 * inline_api.c -- a program built against the installed <aside/inline.h>
 * with nothing but `pkg-config aside`: a miss, then hits answered in this
 * program, counted by the library as hits.
 */
#include <aside/inline.h>
#include <stdio.h>
#include <string.h>

static int load(void *arg, const char *key, size_t klen, aside_value **out,
		aside_error *err)
{
	(void)err;
	++*(int *)arg;
	return aside_value_new(key, klen, "hello", 5, out);
}

static void copy(void *arg, const aside_value *v)
{
	size_t len;
	const char *d = aside_value_data_inline(v, &len);
	snprintf(arg, 16, "%.*s", (int)len, d);
}

int main(void)
{
	aside_cache *c;
	aside_error err;
	if (aside_cache_open("mem://?capacity=100", &c, &err) != ASIDE_OK) {
		fprintf(stderr, "inline_api: %s\n", err.message);
		return 1;
	}
	/* The hit is taken here, not in the library (a program never needs
	 * to ask this; the test does, to know what it measured). */
	if (((const struct aside__inline *)c)->abi != ASIDE_INLINE_ABI) {
		fprintf(stderr, "inline_api: the library publishes ABI %u\n",
			(unsigned)((const struct aside__inline *)c)->abi);
		return 1;
	}
	int loads = 0;
	aside_loader ld = {load, NULL, &loads};
	for (int i = 0; i < 3; i++) {
		char got[16] = "";
		int rc = aside_cache_read_inline(c, "user:1", 6, &ld, copy, got,
						 &err);
		if (rc != ASIDE_OK || strcmp(got, "hello") != 0) {
			fprintf(stderr, "inline_api: read %d: %s, got '%s'\n",
				i, aside_strerror(rc), got);
			return 1;
		}
	}
	aside_metrics m;
	aside_cache_metrics(c, &m);
	if (loads != 1 || m.hits != 2 || m.misses != 1) {
		fprintf(stderr,
			"inline_api: %d loads, %llu hits, %llu misses; "
			"want 1, 2, 1\n",
			loads, (unsigned long long)m.hits,
			(unsigned long long)m.misses);
		return 1;
	}
	aside_cache_close(c);
	printf("inline hits through the installed library: OK\n");
	return 0;
}
