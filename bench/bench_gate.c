/*
 * bench_gate.c -- reads of user ids that do not exist, through the
 * UserService on SQLite: without either defence, with the Bloom gate
 * (user_service_gate), with cached absences (negative_ttl_ms), and with
 * both: reads per second, database loads, and the gate's fill time.
 *
 *   bench_gate [USERS] [READS] [DISTINCT]
 *
 * USERS rows (default 1,000,000); READS reads (default 200,000) of
 * DISTINCT ids above them (default: as many as READS, each read once), in
 * a scattered order.
 *
 * The database, USERS rows in a temporary directory, is written with
 * SQLite directly in one transaction (the repository's schema, which it
 * then opens as its own): a million creates through the service would
 * take a minute of fsyncs.
 */
#include <aside/users.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int make_db(const char *path, long users)
{
	sqlite3 *db;
	sqlite3_stmt *ins;
	if (sqlite3_open(path, &db) != SQLITE_OK)
		return -1;
	int rc = sqlite3_exec(
	    db,
	    "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	    " name TEXT NOT NULL, email TEXT NOT NULL,"
	    " created_at_us INTEGER NOT NULL,"
	    " version INTEGER NOT NULL DEFAULT 1);"
	    "BEGIN",
	    NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db,
					"INSERT INTO users (name, email, "
					"created_at_us) VALUES (?, ?, ?)",
					-1, &ins, NULL);
	for (long i = 1; rc == SQLITE_OK && i <= users; i++) {
		char name[32], email[48];
		snprintf(name, sizeof(name), "User %ld", i);
		snprintf(email, sizeof(email), "user%ld@example.com", i);
		sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 2, email, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(ins, 3, 1764000000000000);
		rc =
		    sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
		sqlite3_reset(ins);
	}
	if (rc == SQLITE_OK) {
		sqlite3_finalize(ins);
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	}
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

/* READS reads of DISTINCT ids above USERS; prints one line. */
static int run(const char *url, long users, long reads, long distinct, int gate,
	       const char *cache_url)
{
	user_repo db;
	aside_cache *c;
	aside_error err;
	if (user_repo_open(url, &db, &err) != ASIDE_OK ||
	    aside_cache_open(cache_url, &c, &err) != ASIDE_OK) {
		fprintf(stderr, "bench_gate: %s\n", err.message);
		return 1;
	}
	user_service *s = user_service_new(db, c);
	double t0 = now_s();
	if (gate && user_service_gate(s, (uint64_t)users, 0, &err)) {
		fprintf(stderr, "bench_gate: %s\n", err.message);
		return 1;
	}
	double t1 = now_s();
	long absent = 0;
	user u;
	for (long i = 0; i < reads; i++)
		absent += user_service_get(s, users + 1 + (i * 7919) % distinct,
					   &u) == ASIDE_NOT_FOUND;
	double t2 = now_s();
	aside_metrics m;
	aside_cache_metrics(c, &m);
	printf("%-7s %-28s fill %.3f s; %ld reads of %ld absent ids: "
	       "%.0f/s, %ld not found, %llu database loads, %llu turned "
	       "away by the gate, %llu cached absences read; filter %zu "
	       "bytes\n",
	       gate ? "gate" : "no gate", cache_url, t1 - t0, reads, distinct,
	       (double)reads / (t2 - t1), absent, (unsigned long long)m.loads,
	       (unsigned long long)m.gate_rejects,
	       (unsigned long long)m.negative_hits, m.gate_bytes);
	user_service_free(s);
	aside_cache_close(c);
	user_repo_close(&db);
	return absent == reads ? 0 : 1;
}

int main(int argc, char **argv)
{
	long users = argc > 1 ? atol(argv[1]) : 1000000;
	long reads = argc > 2 ? atol(argv[2]) : 200000;
	long distinct = argc > 3 ? atol(argv[3]) : reads;
	if (users < 1 || reads < 1 || distinct < 1) {
		fprintf(stderr, "usage: bench_gate [USERS] [READS] "
				"[DISTINCT]\n");
		return 2;
	}
	char dir[] = "/tmp/aside-bench-gate-XXXXXX", path[96], url[128];
	if (!mkdtemp(dir)) {
		perror("bench_gate: mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/users.db", dir);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	int rc = make_db(path, users);
	if (rc != 0)
		fprintf(stderr, "bench_gate: could not write %s\n", path);
	else
		rc = run(url, users, reads, distinct, 0, "mem://") |
		     run(url, users, reads, distinct, 1, "mem://") |
		     run(url, users, reads, distinct, 0,
			 "mem://?negative_ttl_ms=60000") |
		     run(url, users, reads, distinct, 1,
			 "mem://?negative_ttl_ms=60000");
	const char *sfx[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		char p[128];
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
	rmdir(dir);
	return rc;
}
