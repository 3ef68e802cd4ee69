/*
 * args.c -- what the subcommands share: strict number options (a value
 * that is not a number in range is an error, never a silent 0) and the
 * removal of a temporary SQLite database.
 */
#include "app.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int app_trace_key(const char *line, unsigned long long *k)
{
	const char *p = line;
	if (*p == '\r')
		p++;
	if (*p == '\n' || *p == '\0')
		return 0; /* blank */
	if (*line < '0' || *line > '9')
		return -1; /* strtoull would take spaces, signs */
	char *end;
	errno = 0;
	*k = strtoull(line, &end, 10);
	if (errno == ERANGE)
		return -1;
	if (*end == '\r')
		end++;
	return *end == '\n' || *end == '\0' ? 1 : -1;
}

void app_bad_trace_line(const char *who, const char *path, unsigned long line,
			const char *text)
{
	char shown[48];
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)text;
	     *p && *p != '\n' && n < sizeof(shown) - 4; p++)
		shown[n++] = *p >= 0x20 && *p < 0x7f ? (char)*p : '?';
	if (text[n] && text[n] != '\n') { /* cut short */
		memcpy(shown + n, "...", 3);
		n += 3;
	}
	shown[n] = '\0';
	fprintf(stderr,
		"aside %s: %s:%lu: not a key (one unsigned 64-bit decimal "
		"number a line): '%s'\n",
		who, path, line, shown);
}
