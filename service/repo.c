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
	char shown[256]; /* no password in a message */
	return repo__fail(err, ASIDE_EURL,
			  "unsupported database URL '%s' (expected "
			  "sqlite:PATH, sqlite::memory: or postgresql://...)",
			  aside_url_redact(url, shown, sizeof(shown)));
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
