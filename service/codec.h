/*
 * codec.h -- the user codec's internals that the UserService shares.
 */
#ifndef ASIDE_CODEC_H
#define ASIDE_CODEC_H

#include <aside/users.h>
#include <stdbool.h>
#include <stddef.h>

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
#define USER__TIME_LEN 27
/* The instants it can write: 0000-01-01T00:00:00Z to the last µs of 9999. */
#define USER__TIME_MIN_US (-62167219200LL * 1000000)
#define USER__TIME_MAX_US (253402300800LL * 1000000 - 1)

/*
 * Room for any user's JSON: every byte of the name and email escaped as
 * \u00XX (6 bytes), two 20-character integers, the time, and the field
 * names and punctuation (under 64 bytes).
 */
#define USER__JSON_MAX                                                         \
	(6 * (USER_NAME_MAX + USER_EMAIL_MAX) + 2 * 20 + USER__TIME_LEN + 64 + \
	 1)

/* Writes v in decimal at p (no NUL); returns the characters written. */
size_t user__put_int(char *p, int64_t v);

/* user_to_json into buf; 0 if the name or email is not valid UTF-8. */
size_t user__json_write(const user *u, char *buf);

/* user_from_json; strict false for a stored user (a cached value): the
 * rules of user_validate that only writes apply are not applied. */
int user__from_json(const char *text, size_t len, int partial, bool strict,
		    user *out, aside_error *err);

#endif
