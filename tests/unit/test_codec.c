/*
 * test_codec.c -- users as JSON, RFC 3339 times, and validation.
 */
#include <aside/users.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs the headers above */
#include <cmocka.h>

static user make(const char *name, const char *email)
{
	user u;
	memset(&u, 0, sizeof(u));
	u.id = 42;
	/* Every caller's strings fit; say so, or a build at -O3 warns. */
	assert_true(snprintf(u.name, sizeof(u.name), "%s", name) <
		    (int)sizeof(u.name));
	assert_true(snprintf(u.email, sizeof(u.email), "%s", email) <
		    (int)sizeof(u.email));
	u.created_at_us = 1764000000123456; /* 2025-11-24T16:00:00.123456Z */
	return u;
}

static void json_round_trip(void **state)
{
	(void)state;
	const char *names[] = {"Alice", "Zoë \"Z\" O'Brien", "李雷",
			       "tab\tand\\slash", "emoji 🙂"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		user u = make(names[i], "a.b+c@mail.example.com"), back;
		size_t len;
		char *json = user_to_json(&u, &len);
		assert_non_null(json);
		assert_int_equal(strlen(json), len);
		assert_int_equal(user_from_json(json, len, 0, &back, NULL),
				 ASIDE_OK);
		assert_int_equal(back.id, u.id);
		assert_string_equal(back.name, u.name);
		assert_string_equal(back.email, u.email);
		assert_int_equal(back.created_at_us, u.created_at_us);
		free(json);
	}
}

static void json_shape_is_the_seeds(void **state)
{
	(void)state;
	user u = make("Alice", "alice@example.com");
	char *json = user_to_json(&u, NULL);
	assert_string_equal(json, "{\"id\":42,\"name\":\"Alice\",\"email\":"
				  "\"alice@example.com\",\"created_at\":"
				  "\"2025-11-24T16:00:00.123456Z\"}");
	free(json);
}

static void expect(const char *json, int partial, int code, const char *what)
{
	user u;
	aside_error err;
	aside_error_clear(&err);
	int rc = user_from_json(json, strlen(json), partial, &u, &err);
	if (rc != code)
		fail_msg("%s: %s gave %s, want %s", what, json,
			 aside_status_name(rc), aside_status_name(code));
	if (code != ASIDE_OK && strlen(err.message) == 0)
		fail_msg("%s: no message", what);
}

static void malformed_json_is_refused(void **state)
{
	(void)state;
	expect("", 0, ASIDE_EBADJSON, "empty");
	expect("{", 0, ASIDE_EBADJSON, "truncated");
	expect("{\"id\":1,\"name\":\"A\",\"email\":\"a@b.c\",\"created_at\":"
	       "\"2025-11-24T16:00:00Z\"",
	       0, ASIDE_EBADJSON, "truncated object");
	expect("[1,2]", 0, ASIDE_EBADJSON, "array");
	expect("null", 0, ASIDE_EBADJSON, "null");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\"} trailing", 1,
	       ASIDE_EBADJSON, "trailing garbage");
	expect("{\"name\":\"A\",\"name\":\"B\",\"email\":\"a@b.c\"}", 1,
	       ASIDE_EBADJSON, "duplicate key");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\"}", 0, ASIDE_EBADJSON,
	       "missing id in a full record");
	expect("{\"email\":\"a@b.c\"}", 1, ASIDE_EBADNAME, "missing name");
	expect("{\"name\":\"A\"}", 1, ASIDE_EBADEMAIL, "missing email");
	expect("{\"name\":7,\"email\":\"a@b.c\"}", 1, ASIDE_EBADNAME,
	       "name not a string");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\",\"id\":\"1\"}", 1,
	       ASIDE_EBADID, "id a string");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\",\"id\":0}", 1, ASIDE_EBADID,
	       "id zero");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\",\"id\":-3}", 1,
	       ASIDE_EBADID, "id negative");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\",\"id\":1.5}", 1,
	       ASIDE_EBADID, "id fractional");
	expect(
	    "{\"name\":\"A\",\"email\":\"a@b.c\",\"created_at\":\"yesterday\"}",
	    1, ASIDE_EBADJSON, "bad time");
	expect("{\"name\":\"A\\u0000B\",\"email\":\"a@b.c\"}", 1,
	       ASIDE_EBADNAME, "NUL inside the name");
	expect("{\"name\":\"A\",\"email\":\"a@b.c\"}", 1, ASIDE_OK,
	       "a good partial record");
}

static void invalid_utf8_is_refused(void **state)
{
	(void)state;
	/* jansson refuses invalid UTF-8 in JSON text itself */
	expect("{\"name\":\"\xff\",\"email\":\"a@b.c\"}", 1, ASIDE_EBADJSON,
	       "0xff in JSON");
	const char *bad[] = {
	    "\xc0\xaf",		/* overlong '/' */
	    "\xe0\x80\xaf",	/* overlong */
	    "\xed\xa0\x80",	/* surrogate U+D800 */
	    "\xf4\x90\x80\x80", /* above U+10FFFF */
	    "abc\xe2\x82",	/* truncated sequence */
	    "\x80",		/* lone continuation */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		user u = make(bad[i], "a@b.c");
		aside_error err;
		assert_int_equal(user_validate(&u, &err), ASIDE_EBADNAME);
		assert_non_null(strstr(err.message, "UTF-8"));
	}
	user ok = make("\xe2\x82\xac \xf0\x9f\x99\x82", "a@b.c"); /* € 🙂 */
	assert_int_equal(user_validate(&ok, NULL), ASIDE_OK);
}

static void over_long_fields_are_refused(void **state)
{
	(void)state;
	char name[300], local[80], email[300];
	memset(name, 'n', 256);
	name[256] = '\0';
	user u = make("x", "a@b.c");
	memcpy(u.name, name, sizeof(u.name)); /* 256 bytes, no NUL */
	assert_int_equal(user_validate(&u, NULL), ASIDE_EBADNAME);
	name[255] = '\0';
	u = make(name, "a@b.c");
	assert_int_equal(user_validate(&u, NULL), ASIDE_OK); /* exactly 255 */

	char json[1200];
	memset(name, 'n', 256);
	name[256] = '\0';
	snprintf(json, sizeof(json), "{\"name\":\"%s\",\"email\":\"a@b.c\"}",
		 name);
	expect(json, 1, ASIDE_EBADNAME, "256-byte name");

	memset(local, 'l', 65);
	local[65] = '\0';
	snprintf(email, sizeof(email), "%s@example.com", local);
	u = make("A", email);
	assert_int_equal(user_validate(&u, NULL), ASIDE_EBADEMAIL);

	/* 255 bytes, one past the limit, in valid labels of 63 and 61 */
	size_t n = 0;
	email[n++] = 'a';
	email[n++] = '@';
	for (int label = 0; label < 4; label++) {
		int len = label < 3 ? 63 : 61;
		memset(email + n, 'd', (size_t)len);
		n += (size_t)len;
		if (label < 3)
			email[n++] = '.';
	}
	email[n] = '\0';
	assert_int_equal(strlen(email), 255);
	snprintf(json, sizeof(json), "{\"name\":\"A\",\"email\":\"%s\"}",
		 email);
	expect(json, 1, ASIDE_EBADEMAIL, "255-byte email");
	email[254] = '\0';
	u = make("A", email);
	assert_int_equal(user_validate(&u, NULL), ASIDE_OK);
}

static void emails_are_checked(void **state)
{
	(void)state;
	const char *good[] = {"a@b.c",
			      "alice@example.com",
			      "first.last+tag@sub.example.co.uk",
			      "user@localhost",
			      "x_y-z@a-b.example",
			      "o'hara@example.org"};
	const char *bad[] = {
	    "",	       "plain",	    "@example.com",  "a@",	 "a@@b.c",
	    "a@b@c.d", ".a@b.c",    "a.@b.c",	     "a..b@c.d", "a b@c.d",
	    "a@b..c",  "a@-b.c",    "a@b-.c",	     "a@.b.c",	 "a@b.c.",
	    "a@b_c.d", "\"q\"@b.c", "a@[127.0.0.1]", "é@b.c",	 "a@bé.c"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		user u = make("A", good[i]);
		aside_error err;
		if (user_validate(&u, &err) != ASIDE_OK)
			fail_msg("'%s' refused: %s", good[i], err.message);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		user u = make("A", bad[i]);
		if (user_validate(&u, NULL) != ASIDE_EBADEMAIL)
			fail_msg("'%s' accepted", bad[i]);
	}
	user empty = make("", "a@b.c");
	assert_int_equal(user_validate(&empty, NULL), ASIDE_EBADNAME);
}

static void times_are_rfc3339(void **state)
{
	(void)state;
	char buf[40];
	assert_int_equal(user_format_time(0, buf, sizeof(buf)), 27);
	assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
	user_format_time(1764000000123456, buf, sizeof(buf));
	assert_string_equal(buf, "2025-11-24T16:00:00.123456Z");
	struct {
		const char *s;
		int64_t us;
	} ok[] = {
	    {"2025-11-24T16:00:00.123456Z", 1764000000123456},
	    {"2025-11-24T16:00:00Z", 1764000000000000},
	    {"2025-11-24t16:00:00z", 1764000000000000},
	    {"2025-11-24T17:30:00+01:30", 1764000000000000},
	    {"2025-11-24T14:00:00.5-02:00", 1764000000500000},
	    {"2025-11-24T16:00:00.123456789Z", 1764000000123456},
	    {"2024-02-29T00:00:00Z", 1709164800000000},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int64_t us = 0;
		assert_int_equal(user_parse_time(ok[i].s, strlen(ok[i].s), &us),
				 ASIDE_OK);
		assert_int_equal(us, ok[i].us);
	}
	const char *bad[] = {"2025-11-24",
			     "2025-11-24T16:00:00",
			     "2025-13-01T00:00:00Z",
			     "2025-02-29T00:00:00Z",
			     "2025-11-24T24:00:00Z",
			     "2025-11-24T16:00:00.Z",
			     "2025-11-24T16:00:00+1:00",
			     "2025-11-24T16:00:00Zjunk",
			     "２０25-11-24T16:00:00Z"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t us;
		if (user_parse_time(bad[i], strlen(bad[i]), &us) == ASIDE_OK)
			fail_msg("'%s' accepted", bad[i]);
	}
}

static void cache_keys_are_the_seeds(void **state)
{
	(void)state;
	char key[32];
	assert_int_equal(user_cache_key(1, key), 6);
	assert_string_equal(key, "user:1");
	user_cache_key(INT64_MAX, key);
	assert_string_equal(key, "user:9223372036854775807");
	assert_string_equal(USER_ALL_KEY, "users:all");
	/* Every length of number, at and around each power of ten, either
	 * sign, and the extremes: as printf writes them. */
	char want[48];
	int64_t p = 1;
	for (int d = 0; d <= 18; d++) {
		const int64_t around[] = {p - 1, p, p + 1, 2 * p - 1,
					  9 * p + 7};
		for (int i = 0; i < 5; i++)
			for (int sign = 1; sign >= -1; sign -= 2) {
				int64_t id = sign * around[i];
				snprintf(want, sizeof(want), "user:%lld",
					 (long long)id);
				assert_int_equal(user_cache_key(id, key),
						 strlen(want));
				assert_string_equal(key, want);
			}
		if (d < 18)
			p *= 10;
	}
	const int64_t ends[] = {0, INT64_MIN, INT64_MIN + 1, INT64_MAX - 1};
	for (int i = 0; i < 4; i++) {
		snprintf(want, sizeof(want), "user:%lld", (long long)ends[i]);
		assert_int_equal(user_cache_key(ends[i], key), strlen(want));
		assert_string_equal(key, want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(json_round_trip),
	    cmocka_unit_test(json_shape_is_the_seeds),
	    cmocka_unit_test(malformed_json_is_refused),
	    cmocka_unit_test(invalid_utf8_is_refused),
	    cmocka_unit_test(over_long_fields_are_refused),
	    cmocka_unit_test(emails_are_checked),
	    cmocka_unit_test(times_are_rfc3339),
	    cmocka_unit_test(cache_keys_are_the_seeds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
