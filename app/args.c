/*
 * args.c -- what the subcommands share: strict number options (a value
 * that is not a number in range is an error, never a silent 0) and the
 * removal of a temporary SQLite database.
 */
#include "app.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

bool app_long(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < lo || v > hi) {
		fprintf(stderr,
			"aside: --%s wants a whole number in [%ld, %ld], "
			"not '%s'\n",
			opt, lo, hi, s);
		return false;
	}
	*out = v;
	return true;
}

bool app_double(const char *opt, const char *s, double lo, double hi,
		double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (!*s || *end || !isfinite(v) || v < lo || v > hi) {
		fprintf(stderr,
			"aside: --%s wants a number in [%g, %g], not "
			"'%s'\n",
			opt, lo, hi, s);
		return false;
	}
	*out = v;
	return true;
}

void app_remove_sqlite(const char *dir)
{
	const char *sfx[] = {"", "-wal", "-shm"};
	char f[600];
	for (int i = 0; i < 3; i++) {
		snprintf(f, sizeof(f), "%s/users.db%s", dir, sfx[i]);
		unlink(f);
	}
	rmdir(dir);
}
