/*
 * user_codec.c -- a user as JSON (parsed by jansson), RFC 3339 times,
 * validation.
 */
#include "codec.h"

#include <aside/users.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(aside_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(aside_error *err, int code, const char *fmt, ...)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- validation -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s, or 0 (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t len;
	unsigned lo = 0x80, hi = 0xbf;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		if (s[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

static bool utf8_valid(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	while (n) {
		size_t k = utf8_seq(s, n);
		if (!k)
			return false;
		s += k;
		n -= k;
	}
	return true;
}

/* The code point of the valid sequence of k bytes at s. */
static uint32_t utf8_cp(const unsigned char *s, size_t k)
{
	if (k == 1)
		return s[0];
	uint32_t cp = s[0] & (0x7f >> k);
	for (size_t i = 1; i < k; i++)
		cp = cp << 6 | (s[i] & 0x3f);
	return cp;
}

/* Unicode's White_Space characters other than controls, and the
 * invisible joiners and separators a name of nothing else would show as
 * blank (zero-width space, non-joiner and joiner, word joiner, BOM). */
static bool is_space(uint32_t cp)
{
	return cp == 0x20 || cp == 0xa0 || cp == 0x1680 || cp == 0x180e ||
	       (cp >= 0x2000 && cp <= 0x200d) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x2060 || cp == 0x3000 ||
	       cp == 0xfeff;
}

/*
 * A name: 1 to USER_NAME_MAX bytes of valid UTF-8.  A new one (strict: a
 * create or an update) also has no control character (C0, DEL, C1: a
 * newline or an escape sequence in a name reaches logs and terminals) and
 * is not blank.  Rows stored before these rules, or written by other
 * programs, still read and cache: only writes apply them.
 */
static int check_name(const char *name, bool strict, aside_error *err)
{
	const char *nul = memchr(name, '\0', USER_NAME_MAX + 1);
	if (!nul)
		return fail(err, ASIDE_EBADNAME,
			    "invalid name: longer than %d bytes",
			    USER_NAME_MAX);
	size_t n = (size_t)(nul - name);
	if (n == 0)
		return fail(err, ASIDE_EBADNAME, "invalid name: empty");
	if (!utf8_valid(name, n))
		return fail(err, ASIDE_EBADNAME,
			    "invalid name: not valid UTF-8");
	if (!strict)
		return ASIDE_OK;
	bool blank = true;
	const unsigned char *s = (const unsigned char *)name;
	for (size_t i = 0, k; i < n; i += k) {
		k = utf8_seq(s + i, n - i);
		uint32_t cp = utf8_cp(s + i, k);
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
			return fail(err, ASIDE_EBADNAME,
				    "invalid name: control character U+%04X "
				    "at byte %zu",
				    (unsigned)cp, i);
		blank &= is_space(cp);
	}
	if (blank)
		return fail(err, ASIDE_EBADNAME, "invalid name: only spaces");
	return ASIDE_OK;
}

static bool atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-';
}

/*
 * An address as RFC 5321 accepts it unquoted: a dot-atom local part of at
 * most 64 bytes, '@', and a domain of LDH labels (1-63 bytes, no hyphen at
 * either end) separated by dots.  Quoted local parts and address literals
 * are refused: real mail systems rarely accept them either.
 */
static int check_email(const char *email, aside_error *err)
{
	const char *nul = memchr(email, '\0', USER_EMAIL_MAX + 1);
	if (!nul)
		return fail(err, ASIDE_EBADEMAIL,
			    "invalid email: longer than %d bytes",
			    USER_EMAIL_MAX);
	size_t n = (size_t)(nul - email);
	if (n == 0)
		return fail(err, ASIDE_EBADEMAIL, "invalid email: empty");
	const char *at = memchr(email, '@', n);
	if (!at || memchr(at + 1, '@', (size_t)(nul - at - 1)))
		return fail(err, ASIDE_EBADEMAIL,
			    "invalid email: needs exactly one '@'");
	size_t local = (size_t)(at - email), dom = n - local - 1;
	if (local == 0 || local > 64)
		return fail(err, ASIDE_EBADEMAIL,
			    "invalid email: the part before '@' must be 1-64 "
			    "bytes");
	for (size_t i = 0; i < local; i++) {
		unsigned char c = (unsigned char)email[i];
		if (c == '.') {
			if (i == 0 || i == local - 1 || email[i - 1] == '.')
				return fail(err, ASIDE_EBADEMAIL,
					    "invalid email: misplaced '.' "
					    "before '@'");
		} else if (!atext(c)) {
			return fail(err, ASIDE_EBADEMAIL,
				    "invalid email: character 0x%02x not "
				    "allowed before '@'",
				    c);
		}
	}
	if (dom == 0 || dom > 253)
		return fail(err, ASIDE_EBADEMAIL,
			    "invalid email: bad domain length");
	const char *d = at + 1;
	size_t label = 0;
	for (size_t i = 0; i <= dom; i++) {
		unsigned char c = i < dom ? (unsigned char)d[i] : '.';
		if (c == '.') {
			if (label == 0 || label > 63 || d[i - 1] == '-' ||
			    d[i - label] == '-')
				return fail(err, ASIDE_EBADEMAIL,
					    "invalid email: bad domain label");
			label = 0;
		} else if (ldh(c)) {
			label++;
		} else {
			return fail(err, ASIDE_EBADEMAIL,
				    "invalid email: character 0x%02x not "
				    "allowed in the domain",
				    c);
		}
	}
	return ASIDE_OK;
}

static int validate(const user *u, bool strict, aside_error *err)
{
	if (!u)
		return fail(err, ASIDE_EINVAL, "no user");
	int rc = check_name(u->name, strict, err);
	if (rc == ASIDE_OK)
		rc = check_email(u->email, err);
	return rc;
}

int user_validate(const user *u, aside_error *err)
{
	return validate(u, true, err);
}

/* ---- times ------------------------------------------------------------- */

/* Writes the n low decimal digits of v at p, zero-padded. */
static void put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/*
 * The UTC calendar date of a day counted from 1970-01-01: the days are
 * counted in 400-year eras from 0000-03-01, so that the leap day is the
 * last day of each year counted.  Written here, with the digits above,
 * because gmtime_r and snprintf took a sixth of the time of encoding a
 * user (docs/performance.md).
 */
static void civil_date(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
	days += 719468; /* from 0000-03-01 */
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	unsigned doe = (unsigned)(days - era * 146097); /* [0, 146096] */
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100); /* [0, 365] */
	unsigned mp = (5 * doy + 2) / 153;			/* March = 0 */
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* The RFC 3339 form of us in out, which has USER__TIME_LEN bytes. */
static void format_time(int64_t us, char *out)
{
	int64_t sec = us / 1000000, frac = us % 1000000;
	if (frac < 0) {
		frac += 1000000;
		sec--;
	}
	int64_t days = sec / 86400, tod = sec % 86400;
	if (tod < 0) {
		tod += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_date(days, &y, &m, &d);
	memcpy(out, "0000-00-00T00:00:00.000000Z", USER__TIME_LEN);
	if (y < 0 || y > 9999)
		return; /* not a four-digit year: the zeros, as before */
	put_digits(out, (unsigned)y, 4);
	put_digits(out + 5, m, 2);
	put_digits(out + 8, d, 2);
	put_digits(out + 11, (unsigned)(tod / 3600), 2);
	put_digits(out + 14, (unsigned)(tod / 60 % 60), 2);
	put_digits(out + 17, (unsigned)(tod % 60), 2);
	put_digits(out + 20, (unsigned)frac, 6);
}

size_t user_format_time(int64_t us, char *buf, size_t cap)
{
	char t[USER__TIME_LEN];
	format_time(us, t);
	if (cap > 0) { /* as snprintf would: cut short, still terminated */
		size_t n = cap - 1 < USER__TIME_LEN ? cap - 1 : USER__TIME_LEN;
		memcpy(buf, t, n);
		buf[n] = '\0';
	}
	return USER__TIME_LEN;
}

static bool digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

int user_parse_time(const char *s, size_t len, int64_t *us)
{
	/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
	int Y, M, D, h, m, sec, oh = 0, om = 0;
	if (len < 20 || !digits(s, 4, &Y) || s[4] != '-' ||
	    !digits(s + 5, 2, &M) || s[7] != '-' || !digits(s + 8, 2, &D) ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &m) ||
	    s[16] != ':' || !digits(s + 17, 2, &sec))
		return ASIDE_EBADJSON;
	static const int mdays[] = {31, 29, 31, 30, 31, 30,
				    31, 31, 30, 31, 30, 31};
	bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
	if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] ||
	    (M == 2 && D == 29 && !leap) || h > 23 || m > 59 || sec > 60)
		return ASIDE_EBADJSON;
	size_t i = 19;
	int64_t frac = 0;
	if (i < len && s[i] == '.') {
		int nd = 0;
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, nd++)
			if (nd < 6)
				frac = frac * 10 + (s[i] - '0');
		if (nd == 0)
			return ASIDE_EBADJSON;
		for (; nd < 6; nd++)
			frac *= 10;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 == len && (s[i] == '+' || s[i] == '-') &&
		   digits(s + i + 1, 2, &oh) && s[i + 3] == ':' &&
		   digits(s + i + 4, 2, &om) && oh <= 23 && om <= 59) {
		if (s[i] == '-') {
			oh = -oh;
			om = -om;
		}
		i += 6;
	} else {
		return ASIDE_EBADJSON;
	}
	if (i != len)
		return ASIDE_EBADJSON;
	struct tm tm = {.tm_year = Y - 1900,
			.tm_mon = M - 1,
			.tm_mday = D,
			.tm_hour = h,
			.tm_min = m,
			.tm_sec = sec == 60 ? 59 : sec};
	time_t t = timegm(&tm);
	int64_t at =
	    ((int64_t)t - (int64_t)oh * 3600 - (int64_t)om * 60) * 1000000 +
	    frac;
	/* An offset can carry the instant out of the four-digit years, which
	 * user_format_time cannot write (0000-01-01T00:30:00+01:00 is in the
	 * year -1): refused, so that every time read can be written back. */
	if (at < USER__TIME_MIN_US || at > USER__TIME_MAX_US)
		return ASIDE_EBADJSON;
	*us = at;
	return ASIDE_OK;
}

/* ---- JSON -------------------------------------------------------------- */

size_t user__put_int(char *p, int64_t v)
{
	static const char two_digits[201] = "00010203040506070809"
					    "10111213141516171819"
					    "20212223242526272829"
					    "30313233343536373839"
					    "40414243444546474849"
					    "50515253545556575859"
					    "60616263646566676869"
					    "70717273747576777879"
					    "80818283848586878889"
					    "90919293949596979899";
	/* In unsigned arithmetic, so that INT64_MIN negates. */
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	char t[20], *q = t + sizeof(t);
	while (u >= 100) {
		q -= 2;
		memcpy(q, two_digits + 2 * (u % 100), 2);
		u /= 100;
	}
	if (u >= 10) {
		q -= 2;
		memcpy(q, two_digits + 2 * u, 2);
	} else {
		*--q = (char)('0' + u);
	}
	size_t nd = (size_t)(t + sizeof(t) - q), k = 0;
	if (v < 0)
		p[k++] = '-';
	memcpy(p + k, q, nd);
	return k + nd;
}

/* Writes s (n bytes of valid UTF-8) as a JSON string at p; returns its
 * length.  What jansson's dump escapes, escaped the same way. */
static size_t put_string(char *p, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *q = p;
	*q++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*q++ = (char)c;
			continue;
		}
		*q++ = '\\';
		switch (c) {
		case '"':
		case '\\':
			*q++ = (char)c;
			break;
		case '\b':
			*q++ = 'b';
			break;
		case '\f':
			*q++ = 'f';
			break;
		case '\n':
			*q++ = 'n';
			break;
		case '\r':
			*q++ = 'r';
			break;
		case '\t':
			*q++ = 't';
			break;
		default:
			memcpy(q, "u00", 3);
			q[3] = hex[c >> 4];
			q[4] = hex[c & 15];
			q += 5;
		}
	}
	*q++ = '"';
	return (size_t)(q - p);
}

#define PUT(lit) (memcpy(p, lit, sizeof(lit) - 1), p += sizeof(lit) - 1)

/*
 * The user's JSON in buf (USER__JSON_MAX bytes, NUL-terminated); its
 * length, or 0 if the name or email is not valid UTF-8.  Written directly
 * rather than through jansson, whose tree of allocated nodes, dumped
 * through a callback, cost a quarter of a miss on the embedded database
 * (docs/performance.md); the output is the same, byte for byte
 * (test_codec's json_matches_jansson).
 */
size_t user__json_write(const user *u, char *buf)
{
	size_t nn = strnlen(u->name, USER_NAME_MAX);
	size_t en = strnlen(u->email, USER_EMAIL_MAX);
	if (!utf8_valid(u->name, nn) || !utf8_valid(u->email, en))
		return 0;
	char *p = buf;
	PUT("{\"id\":");
	p += user__put_int(p, u->id);
	PUT(",\"name\":");
	p += put_string(p, u->name, nn);
	PUT(",\"email\":");
	p += put_string(p, u->email, en);
	PUT(",\"created_at\":\"");
	format_time(u->created_at_us, p);
	p += USER__TIME_LEN;
	PUT("\"");
	if (u->version > 0) {
		PUT(",\"version\":");
		p += user__put_int(p, u->version);
	}
	PUT("}");
	*p = '\0';
	return (size_t)(p - buf);
}

char *user_to_json(const user *u, size_t *len)
{
	char buf[USER__JSON_MAX];
	size_t n = user__json_write(u, buf);
	char *out = n ? malloc(n + 1) : NULL;
	if (out) {
		memcpy(out, buf, n + 1);
		if (len)
			*len = n;
	}
	return out;
}

static int string_field(json_t *o, const char *field, char *dst, size_t max,
			int bad, aside_error *err)
{
	json_t *v = json_object_get(o, field);
	if (!v)
		return fail(err, bad, "missing field \"%s\"", field);
	if (!json_is_string(v))
		return fail(err, bad, "field \"%s\" must be a string", field);
	size_t n = json_string_length(v);
	const char *s = json_string_value(v);
	if (memchr(s, '\0', n))
		return fail(err, bad, "field \"%s\" contains a NUL character",
			    field);
	if (n > max)
		return fail(err, bad, "field \"%s\" is longer than %zu bytes",
			    field, max);
	memcpy(dst, s, n);
	dst[n] = '\0';
	return ASIDE_OK;
}

int user_from_json(const char *text, size_t len, int partial, user *out,
		   aside_error *err)
{
	return user__from_json(text, len, partial, true, out, err);
}

int user__from_json(const char *text, size_t len, int partial, bool strict,
		    user *out, aside_error *err)
{
	json_error_t jerr;
	json_t *o = json_loadb(text, len,
			       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!o)
		return fail(err, ASIDE_EBADJSON, "malformed JSON: %s (at %d)",
			    jerr.text, jerr.position);
	int rc = ASIDE_OK;
	user u;
	memset(&u, 0, sizeof(u));
	if (!json_is_object(o)) {
		rc = fail(err, ASIDE_EBADJSON, "expected a JSON object");
		goto out;
	}
	json_t *id = json_object_get(o, "id");
	if (id) {
		if (!json_is_integer(id) || json_integer_value(id) <= 0) {
			rc = fail(err, ASIDE_EBADID,
				  "field \"id\" must be a positive integer");
			goto out;
		}
		u.id = json_integer_value(id);
	} else if (!partial) {
		rc = fail(err, ASIDE_EBADJSON, "missing field \"id\"");
		goto out;
	}
	if ((rc = string_field(o, "name", u.name, USER_NAME_MAX, ASIDE_EBADNAME,
			       err)) != ASIDE_OK ||
	    (rc = string_field(o, "email", u.email, USER_EMAIL_MAX,
			       ASIDE_EBADEMAIL, err)) != ASIDE_OK)
		goto out;
	json_t *ts = json_object_get(o, "created_at");
	if (ts) {
		if (!json_is_string(ts) ||
		    user_parse_time(json_string_value(ts),
				    json_string_length(ts),
				    &u.created_at_us) != ASIDE_OK) {
			rc = fail(err, ASIDE_EBADJSON,
				  "field \"created_at\" must be an RFC 3339 "
				  "time");
			goto out;
		}
	} else if (!partial) {
		rc = fail(err, ASIDE_EBADJSON, "missing field \"created_at\"");
		goto out;
	}
	json_t *version = json_object_get(o, "version");
	if (version) {
		if (!json_is_integer(version) ||
		    json_integer_value(version) < 0) {
			rc = fail(err, ASIDE_EBADJSON,
				  "field \"version\" must be a non-negative "
				  "integer");
			goto out;
		}
		u.version = json_integer_value(version);
	}
	if ((rc = validate(&u, strict, err)) == ASIDE_OK)
		*out = u;
out:
	json_decref(o);
	return rc;
}
