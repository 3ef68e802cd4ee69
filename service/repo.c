/*
 * repo.c -- user_repo_open: picks a repository by URL scheme.
 */
#include "repo.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int repo__fail(aside_error *err, int code, const char *fmt, ...)
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

int user_repo_open(const char *url, user_repo *out, aside_error *err)
{
	if (!url || !out)
		return repo__fail(err, ASIDE_EINVAL, "no URL");
	memset(out, 0, sizeof(*out));
	if (strncmp(url, "sqlite:", 7) == 0)
		return repo__sqlite_open(url + 7, out, err);
	if (strncmp(url, "postgresql://", 13) == 0 ||
	    strncmp(url, "postgres://", 11) == 0)
		return repo__pg_open(url, out, err);
	char shown[256]; /* no password in a message */
	return repo__fail(err, ASIDE_EURL,
			  "unsupported database URL '%s' (expected "
			  "sqlite:PATH, sqlite::memory: or postgresql://...)",
			  aside_url_redact(url, shown, sizeof(shown)));
}

char *repo__id_list(const int64_t *ids, int n, char open, char close,
		    size_t *len)
{
	/* A sign, 19 digits and a comma each at most, the brackets, a NUL. */
	size_t cap = (size_t)n * 21 + 3, at = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	s[at++] = open;
	for (int i = 0; i < n; i++)
		at += (size_t)snprintf(s + at, cap - at, "%s%lld", i ? "," : "",
				       (long long)ids[i]);
	s[at++] = close;
	s[at] = '\0';
	*len = at;
	return s;
}

bool repo__has_outbox(user_repo r)
{
	return r.ops && r.ops->logged_change && r.ops->outbox_pending &&
	       r.ops->outbox_done;
}

void user_repo_close(user_repo *repo)
{
	if (repo && repo->ops && repo->ops->close)
		repo->ops->close(repo->self);
	if (repo)
		memset(repo, 0, sizeof(*repo));
}
