/*
 * servers.h -- test support for the real Redis and PostgreSQL that
 * scripts/services starts (their URLs come in ASIDE_TEST_REDIS_URL and
 * ASIDE_TEST_PG_URL).  Each test program uses its own Redis database number
 * and its own PostgreSQL database, so programs run in parallel safely.
 */
#ifndef ASIDE_TEST_SERVERS_H
#define ASIDE_TEST_SERVERS_H

#include <stdbool.h>

/* "redis://host:port/DB[?QUERY]" into buf, or NULL if no Redis was given. */
const char *test_redis_url(char *buf, int db, const char *query);
/* Empties Redis database db; false if it cannot. */
bool test_redis_flush(int db);
/* Runs a Redis command on database db (argv style); its reply as text. */
bool test_redis_cmd(int db, char *out, int cap, int argc, const char **argv);
/* The same, authenticating first. */
bool test_redis_cmd_auth(int db, const char *password, char *out, int cap,
			 int argc, const char **argv);

/* The URL of PostgreSQL database name (created if missing), or NULL. */
const char *test_pg_url(char *buf, const char *name, const char *query);
/* Drops aside's tables in the database at url, so the next open starts
 * from an empty schema. */
bool test_pg_reset(const char *url);

/* The integer in the first cell of a query's answer, or -1. */
long test_pg_scalar(const char *url, const char *sql);

/* Runs scripts/services CMD on the servers of this test run. */
bool test_services(const char *cmd);

#endif
