/*
 * fuzz_inputs.c -- libFuzzer target for what arrives from outside: user
 * JSON (request bodies, entries read from Redis), RFC 3339 times, cache
 * URLs, and the stored form of an entry read from Redis (its header, then
 * its bytes).  Each must return an error for bad input, never crash or
 * read out of bounds (built with ASan and UBSan).  What parses must come
 * back the same through the codec's writer, and the JSON it writes must
 * read the same to jansson; an entry that decodes holds the bytes after
 * its header.
 *
 *   make fuzz        (clang -fsanitize=fuzzer,address,undefined)
 */
#include <aside/users.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The Redis tier whole, for its static decode_kept (run.sh leaves
 * redis.c out of the sources it links). */
#include "../../src/tiers/redis.c"

/* Whether jansson reads json as u's fields. */
static int jansson_agrees(const char *json, size_t len, const user *u)
{
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!o)
		return 0;
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *email = json_string_value(json_object_get(o, "email"));
	json_t *version = json_object_get(o, "version");
	int ok = json_integer_value(json_object_get(o, "id")) == u->id &&
		 name && strcmp(name, u->name) == 0 && email &&
		 strcmp(email, u->email) == 0 &&
		 (u->version > 0 ? json_integer_value(version) == u->version
				 : version == NULL) &&
		 json_object_size(o) == 4u + (u->version > 0);
	json_decref(o);
	return ok;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned sel = data[0] % 4;
	const char *s = (const char *)data + 1;
	size_t n = size - 1;
	if (sel == 0) {
		user u;
		aside_error err;
		for (int partial = 0; partial < 2; partial++) {
			int rc = user_from_json(s, n, partial, &u, &err);
			if (rc == ASIDE_OK) {
				/* what parses must validate, and a record with
				 * an id must round-trip */
				if (user_validate(&u, NULL) != ASIDE_OK)
					abort();
				if (u.id <= 0)
					continue;
				size_t len;
				char *json = user_to_json(&u, &len);
				user back;
				if (!json ||
				    user_from_json(json, len, partial, &back,
						   NULL) != ASIDE_OK ||
				    back.id != u.id ||
				    back.created_at_us != u.created_at_us ||
				    back.version != u.version ||
				    strcmp(back.name, u.name) != 0 ||
				    strcmp(back.email, u.email) != 0 ||
				    !jansson_agrees(json, len, &u))
					abort();
				free(json);
			} else if (rc >= 0 || err.message[0] == '\0') {
				abort(); /* an error must say what is wrong */
			}
		}
	} else if (sel == 1) {
		int64_t us;
		if (user_parse_time(s, n, &us) == ASIDE_OK) {
			/* a time that parses is written as the same instant */
			char buf[40];
			size_t len = user_format_time(us, buf, sizeof(buf));
			int64_t back;
			if (len >= sizeof(buf) ||
			    user_parse_time(buf, len, &back) != ASIDE_OK ||
			    back != us)
				abort();
		}
	} else if (sel == 3) {
		/* fresh entries, and those kept past expiry (a minute) */
		for (int64_t grace = 0; grace <= 60000000; grace += 60000000) {
			aside_value *v = NULL;
			aside_error err;
			int rc = decode_kept("k", 1, s, n, 1764000000000000,
					     grace, &v, &err);
			if (rc == ASIDE_OK) {
				size_t len;
				const char *d = aside_value_data(v, &len);
				size_t header =
				    n >= 4 && get32((const unsigned char *)s) ==
						  MAGIC2
					? HEADER2
					: HEADER;
				if (len != n - header ||
				    memcmp(d, s + header, len) != 0)
					abort();
				aside_value_unref(v);
			} else if (rc != ASIDE_NOT_FOUND &&
				   (rc != ASIDE_ECORRUPT ||
				    err.message[0] == '\0')) {
				abort();
			}
		}
	} else {
		char *url = malloc(n + 1);
		memcpy(url, s, n);
		url[n] = '\0';
		/* Only in-process caches: no network from the fuzzer. */
		if (strncmp(url, "redis://", 8) != 0) {
			aside_cache *c = NULL;
			aside_error err;
			if (aside_cache_open(url, &c, &err) == ASIDE_OK)
				aside_cache_close(c);
		}
		free(url);
	}
	return 0;
}
