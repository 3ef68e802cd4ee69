/*
 * repo.c -- user_repo_open: picks a repository by URL scheme.
 */
#include "repo.h"

#include <stdarg.h>
#include <stdio.h>
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
	return repo__fail(err, ASIDE_EURL,
			  "unsupported database URL '%s' (expected "
			  "sqlite:PATH, sqlite::memory: or postgresql://...)",
			  url);
}

const repo__outbox_ops *repo__outbox(user_repo r)
{
	if (r.ops == repo__sqlite_ops)
		return &repo__sqlite_outbox;
	if (r.ops == repo__pg_ops)
		return &repo__pg_outbox;
	return NULL;
}

void user_repo_close(user_repo *repo)
{
	if (repo && repo->ops && repo->ops->close)
		repo->ops->close(repo->self);
	if (repo)
		memset(repo, 0, sizeof(*repo));
}
