/*
 * app.h -- the subcommands of the aside binary.
 */
#ifndef ASIDE_APP_H
#define ASIDE_APP_H

#include <aside/users.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Strict numeric options (args.c): false, after saying why, if bad. */
bool app_long(const char *opt, const char *s, long lo, long hi, long *out);
bool app_double(const char *opt, const char *s, double lo, double hi,
		double *out);
/*
 * A key trace's line (`aside trace`, `aside bench --trace`): 1 and *k if
 * it is one unsigned 64-bit decimal number (then "\n", "\r\n" or the end),
 * 0 if it is blank (skipped), -1 if it is anything else: signs, spaces, a
 * number out of range.
 */
int app_trace_key(const char *line, unsigned long long *k);
/* Says that PATH:LINE is not a key, showing the line made printable. */
void app_bad_trace_line(const char *who, const char *path, unsigned long line,
			const char *text);
/*
 * The reference policies of `aside trace --policy` (reference.c): keys[0..n)
 * replayed through an exact LRU, or Belady's OPT, of `capacity` entries.
 * 0 and the figures in *out, or -1 if out of memory (or, for OPT, n at
 * least 2^32 - 1: it keeps positions in 32 bits).
 */
struct app_reference {
	unsigned long long hits;
	unsigned long long evictions; /* entries that left to make room */
};
int app_reference_lru(const unsigned long long *keys, size_t n, size_t capacity,
		      struct app_reference *out);
int app_reference_opt(const unsigned long long *keys, size_t n, size_t capacity,
		      struct app_reference *out);
/* A per-thread xorshift generator, seeded by time, thread and process. */
uint64_t app_rand(void);
/* Sleeps us microseconds, resuming after signals. */
void app_sleep_us(long us);
/* Removes DIR/users.db (and its WAL files) and DIR. */
void app_remove_sqlite(const char *dir);

/*
 * A repository that counts and delays reads (slow_repo.c): delay_us before
 * each read.  For the consistency checker, also a random pause of up to
 * after_read_ms after half the reads (between a load's read and its fill)
 * and up to after_update_ms after each update (between a commit and its
 * invalidation); set those after slow_repo_wrap.  While `down` is set,
 * every read fails as a database that is down would (aside demo).
 */
struct slow_repo {
	user_repo inner;
	long delay_us;
	long after_read_ms, after_update_ms;
	_Atomic unsigned long gets;
	_Atomic int down;
	/* aside check --absences: a row whose name is "vN" with N odd reads
	 * as no row at all (ASIDE_NOT_FOUND), as if deleted.  Cleared by
	 * slow_repo_wrap, as are the fields above; set after it. */
	bool odd_absent;
};
user_repo slow_repo_wrap(struct slow_repo *w, user_repo inner, long delay_us);

int app_demo(int argc, char **argv);
int app_serve(int argc, char **argv);
int app_trace(int argc, char **argv);
int app_bench(int argc, char **argv);
int app_check(int argc, char **argv);

#endif
