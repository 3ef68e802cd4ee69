/*
 * repo.h -- what the repositories of the UserService share (internal).
 */
#ifndef ASIDE_REPO_H
#define ASIDE_REPO_H

#include <aside/users.h>

int repo__fail(aside_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int repo__sqlite_open(const char *path, user_repo *out, aside_error *err);
int repo__pg_open(const char *url, user_repo *out, aside_error *err);

#endif
