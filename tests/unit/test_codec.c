/*
 * test_codec.c -- users as JSON, RFC 3339 times, and validation.
 */
#include "../../service/codec.h"

#include <aside/users.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
		/* A tab is refused in a name written now (a request body), and
		 * read back in a stored one (a cached value). */
		bool tab = strchr(names[i], '\t') != NULL;
		assert_int_equal(user_from_json(json, len, 0, &back, NULL),
				 tab ? ASIDE_EBADNAME : ASIDE_OK);
		assert_int_equal(
		    user__from_json(json, len, 0, false, &back, NULL),
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

/* What writes refuse in a name, and what they take. */
static void names_are_checked_on_write(void **state)
{
	(void)state;
	static const struct {
		const char *name, *why;
	} bad[] = {
	    {" ", "only spaces"},
	    {"   ", "only spaces"},
	    {"\xc2\xa0\xe3\x80\x80", "only spaces"},	 /* NBSP, ideographic */
	    {"\xe2\x80\x8b\xef\xbb\xbf", "only spaces"}, /* ZWSP, BOM */
	    {"a\nb", "control character U+000A at byte 1"},
	    {"\t", "control character U+0009 at byte 0"},
	    {"Bob\x1b[2J", "control character U+001B at byte 3"},
	    {"del\x7f", "control character U+007F at byte 3"},
	    {"nel\xc2\x85", "control character U+0085 at byte 3"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		user u = make(bad[i].name, "a@b.c");
		aside_error err;
		assert_int_equal(user_validate(&u, &err), ASIDE_EBADNAME);
		if (!strstr(err.message, bad[i].why))
			fail_msg("name %zu: \"%s\", expected \"%s\"", i,
				 err.message, bad[i].why);
		/* A stored row with such a name still reads. */
		size_t len;
		char *json = user_to_json(&u, &len);
		user back;
		assert_int_equal(
		    user__from_json(json, len, 0, false, &back, NULL),
		    ASIDE_OK);
		assert_string_equal(back.name, u.name);
		free(json);
	}
	const char *good[] = {" Bob ", "a b", "Zoë", "李雷", "\xc2\xa0x"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		user u = make(good[i], "a@b.c");
		assert_int_equal(user_validate(&u, NULL), ASIDE_OK);
	}
	/* A request body: 400's message. */
	const char *blank = "{\"name\":\"  \",\"email\":\"a@b.c\"}";
	aside_error err;
	user u;
	assert_int_equal(user_from_json(blank, strlen(blank), 1, &u, &err),
			 ASIDE_EBADNAME);
	assert_non_null(strstr(err.message, "only spaces"));
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
	    {"0000-01-01T00:00:00Z", -62167219200000000},
	    {"0000-01-01T01:00:00+01:00", -62167219200000000},
	    {"9999-12-31T23:59:59.999999Z", 253402300799999999},
	    {"9999-12-31T22:59:59.999999-01:00", 253402300799999999},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int64_t us = 0;
		assert_int_equal(user_parse_time(ok[i].s, strlen(ok[i].s), &us),
				 ASIDE_OK);
		assert_int_equal(us, ok[i].us);
		/* and written back as the same instant */
		int64_t back = 0;
		size_t n = user_format_time(us, buf, sizeof(buf));
		assert_int_equal(user_parse_time(buf, n, &back), ASIDE_OK);
		assert_int_equal(back, us);
	}
	const char *bad[] = {
	    "2025-11-24", "2025-11-24T16:00:00", "2025-13-01T00:00:00Z",
	    "2025-02-29T00:00:00Z", "2025-11-24T24:00:00Z",
	    "2025-11-24T16:00:00.Z", "2025-11-24T16:00:00+1:00",
	    "2025-11-24T16:00:00Zjunk", "２０25-11-24T16:00:00Z",
	    /* instants outside the years it can write */
	    "0000-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t us;
		if (user_parse_time(bad[i], strlen(bad[i]), &us) == ASIDE_OK)
			fail_msg("'%s' accepted", bad[i]);
	}
}

/* ---- the encoder against jansson ---------------------------------------- */

/* The time as the codec wrote it with gmtime_r and snprintf, until
 * 2026-11-27: the reference for the hand-written one. */
static int ref_time(int64_t us, char *buf, size_t cap)
{
	int64_t sec = us / 1000000, frac = us % 1000000;
	if (frac < 0) {
		frac += 1000000;
		sec--;
	}
	time_t t = (time_t)sec;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 ||
	    tm.tm_year + 1900 > 9999)
		return snprintf(buf, cap, "0000-00-00T00:00:00.000000Z");
	return snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
			tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

/* The user as the codec wrote it with jansson until 2026-11-27. */
static char *ref_json(const user *u)
{
	char ts[40];
	ref_time(u->created_at_us, ts, sizeof(ts));
	json_t *o = json_object();
	json_t *name = json_stringn(u->name, strnlen(u->name, USER_NAME_MAX));
	json_t *email =
	    json_stringn(u->email, strnlen(u->email, USER_EMAIL_MAX));
	char *out = NULL;
	if (name && email) {
		json_object_set_new(o, "id", json_integer(u->id));
		json_object_set_new(o, "name", name);
		json_object_set_new(o, "email", email);
		json_object_set_new(o, "created_at", json_string(ts));
		if (u->version > 0)
			json_object_set_new(o, "version",
					    json_integer(u->version));
		out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	} else {
		json_decref(name);
		json_decref(email);
	}
	json_decref(o);
	return out;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Writes one code point of a random class at p (room for 4); its length.
 * One time in 64, a byte that is not valid UTF-8 there. */
static size_t rnd_char(uint64_t *s, char *p)
{
	uint64_t r = rnd(s);
	unsigned cp;
	switch (r % 8) {
	case 0: /* the escaped ones */
		cp = "\"\\\b\f\n\r\t\x01\x1f/\x7f"[r / 8 % 11];
		break;
	case 1:
		cp = 1 + (unsigned)(r / 8 % 0x7f);
		break;
	case 2:
		cp = 0x80 + (unsigned)(r / 8 % (0x800 - 0x80));
		break;
	case 3:
		cp = 0x800 + (unsigned)(r / 8 % (0x10000 - 0x800));
		if (cp >= 0xd800 && cp <= 0xdfff)
			cp -= 0x800; /* no surrogates */
		break;
	case 4:
		cp = 0x10000 + (unsigned)(r / 8 % (0x110000 - 0x10000));
		break;
	default:
		cp = 'a' + (unsigned)(r / 8 % 26);
	}
	if (r >> 58 == 0) {
		p[0] = (char)(0x80 + r / 8 % 0x80); /* a lone continuation */
		return 1;
	}
	if (cp < 0x80) {
		p[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (char)(0xc0 | cp >> 6);
		p[1] = (char)(0x80 | (cp & 63));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (char)(0xe0 | cp >> 12);
		p[1] = (char)(0x80 | (cp >> 6 & 63));
		p[2] = (char)(0x80 | (cp & 63));
		return 3;
	}
	p[0] = (char)(0xf0 | cp >> 18);
	p[1] = (char)(0x80 | (cp >> 12 & 63));
	p[2] = (char)(0x80 | (cp >> 6 & 63));
	p[3] = (char)(0x80 | (cp & 63));
	return 4;
}

static void rnd_text(uint64_t *s, char *dst, size_t max)
{
	size_t want = rnd(s) % 4 == 0 ? max : 1 + rnd(s) % max, n = 0;
	char c[4];
	while (n < want) {
		size_t k = rnd_char(s, c);
		if (n + k > max)
			break;
		memcpy(dst + n, c, k);
		n += k;
	}
	memset(dst + n, 0, max + 1 - n);
}

/* Times across the four-digit years, at their edges, and far outside. */
static int64_t rnd_time(uint64_t *s)
{
	const int64_t first = -62167219200LL * 1000000, /* 0000-01-01 */
	    last = 253402300800LL * 1000000;		/* 10000-01-01 */
	uint64_t r = rnd(s);
	switch (r % 4) {
	case 0:
		return first + (int64_t)(rnd(s) % (uint64_t)(last - first));
	case 1:
		return (r & 4 ? first : last) +
		       (int64_t)(rnd(s) % 400000000000) - 200000000000;
	case 2:
		return (int64_t)(rnd(s) % 4000000000000000) - 2000000000000000;
	default:
		return (int64_t)rnd(s);
	}
}

static void json_matches_jansson(void **state)
{
	(void)state;
	uint64_t s = 0x9e3779b97f4a7c15ull;
	const int64_t ends[] = {0, 1, -1, INT64_MIN, INT64_MAX, 1000000};
	for (int i = 0; i < 200000; i++) {
		user u;
		memset(&u, 0, sizeof(u));
		u.id =
		    i < 36 ? ends[i % 6] : (int64_t)rnd(&s) >> (rnd(&s) % 64);
		u.version = i < 36 ? ends[i / 6] : (int64_t)rnd(&s) % 1000;
		u.created_at_us = i < 36 ? ends[(i + 3) % 6] : rnd_time(&s);
		rnd_text(&s, u.name, USER_NAME_MAX);
		rnd_text(&s, u.email, USER_EMAIL_MAX);
		char *want = ref_json(&u);
		size_t len = 0;
		char *got = user_to_json(&u, &len);
		if (!want != !got || (want && strcmp(want, got) != 0))
			fail_msg("user %d (id %lld, at %lld):\n  jansson %s\n  "
				 "aside   %s",
				 i, (long long)u.id, (long long)u.created_at_us,
				 want ? want : "(refused)",
				 got ? got : "(refused)");
		if (got)
			assert_int_equal(len, strlen(want));
		free(want);
		free(got);
	}
}

static void times_match_gmtime(void **state)
{
	(void)state;
	uint64_t s = 12345;
	const size_t caps[] = {0, 1, 2, 10, 26, 27, 28, 40};
	for (int i = 0; i < 1000000; i++) {
		int64_t us = rnd_time(&s);
		char want[40], got[40];
		size_t cap = caps[i % 8];
		memset(want, 'x', sizeof(want));
		memset(got, 'x', sizeof(got));
		int wn = ref_time(us, want, cap);
		size_t gn = user_format_time(us, got, cap);
		if ((size_t)wn != gn || memcmp(want, got, sizeof(want)) != 0)
			fail_msg("%lld at cap %zu: gmtime %.*s, aside %.*s",
				 (long long)us, cap, (int)sizeof(want), want,
				 (int)sizeof(got), got);
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
	    cmocka_unit_test(names_are_checked_on_write),
	    cmocka_unit_test(over_long_fields_are_refused),
	    cmocka_unit_test(emails_are_checked),
	    cmocka_unit_test(times_are_rfc3339),
	    cmocka_unit_test(json_matches_jansson),
	    cmocka_unit_test(times_match_gmtime),
	    cmocka_unit_test(cache_keys_are_the_seeds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
