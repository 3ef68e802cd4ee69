/*
 * servers.c -- see servers.h.
 */
#include "servers.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *test_redis_url(char *buf, int db, const char *query)
{
	const char *base = getenv("ASIDE_TEST_REDIS_URL");
	if (!base || !*base)
		return NULL;
	snprintf(buf, 512, "%s/%d%s%s", base, db, query ? "?" : "",
		 query ? query : "");
	return buf;
}

static redisContext *redis_connect(int db, const char *password)
{
	const char *base = getenv("ASIDE_TEST_REDIS_URL");
	if (!base || strncmp(base, "redis://", 8) != 0)
		return NULL;
	char host[256];
	int port;
	if (sscanf(base + 8, "%255[^:]:%d", host, &port) != 2)
		return NULL;
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		redisFree(c);
		return NULL;
	}
	redisReply *r;
	if (password) {
		r = redisCommand(c, "AUTH %s", password);
		if (r)
			freeReplyObject(r);
	}
	r = redisCommand(c, "SELECT %d", db);
	if (!r) {
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	return c;
}

bool test_redis_cmd(int db, char *out, int cap, int argc, const char **argv)
{
	return test_redis_cmd_auth(db, NULL, out, cap, argc, argv);
}

bool test_redis_cmd_auth(int db, const char *password, char *out, int cap,
			 int argc, const char **argv)
{
	redisContext *c = redis_connect(db, password);
	if (!c)
		return false;
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);
	bool ok = r && r->type != REDIS_REPLY_ERROR;
	if (out && cap > 0) {
		if (!r || r->type == REDIS_REPLY_NIL)
			snprintf(out, (size_t)cap, "(nil)");
		else if (r->type == REDIS_REPLY_INTEGER)
			snprintf(out, (size_t)cap, "%lld", r->integer);
		else if (r->str)
			snprintf(out, (size_t)cap, "%.*s", (int)r->len, r->str);
		else
			out[0] = '\0';
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return ok;
}

bool test_redis_flush(int db)
{
	const char *argv[] = {"FLUSHDB"};
	return test_redis_cmd(db, NULL, 0, 1, argv);
}

const char *test_pg_url(char *buf, const char *name, const char *query)
{
	const char *base = getenv("ASIDE_TEST_PG_URL");
	if (!base || !*base)
		return NULL;
	const char *slash = strrchr(base, '/');
	if (!slash || slash < base + 13)
		return NULL;
	PGconn *pg = PQconnectdb(base);
	if (PQstatus(pg) == CONNECTION_OK) {
		char sql[128];
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
		PQclear(PQexec(pg, sql)); /* fails harmlessly if it exists */
	}
	PQfinish(pg);
	snprintf(buf, 512, "%.*s/%s%s%s", (int)(slash - base), base, name,
		 query ? "?" : "", query ? query : "");
	return buf;
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

bool test_pg_reset(const char *url)
{
	char plain[512];
	snprintf(plain, sizeof(plain), "%s", url);
	char *q = strchr(plain, '?');
	if (q)
		*q = '\0';
	PGconn *pg = PQconnectdb(plain);
	PQsetNoticeProcessor(pg, quiet, NULL); /* "does not exist, skipping" */
	bool ok = PQstatus(pg) == CONNECTION_OK;
	if (ok) {
		PGresult *r = PQexec(pg, "DROP TABLE IF EXISTS users, "
					 "aside_schema, aside_outbox");
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		PQclear(r);
	}
	PQfinish(pg);
	return ok;
}

long test_pg_scalar(const char *url, const char *sql)
{
	char plain[512];
	snprintf(plain, sizeof(plain), "%s", url);
	char *q = strchr(plain, '?');
	if (q)
		*q = '\0';
	PGconn *pg = PQconnectdb(plain);
	long v = -1;
	if (PQstatus(pg) == CONNECTION_OK) {
		PGresult *r = PQexec(pg, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
			v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	PQfinish(pg);
	return v;
}

bool test_services(const char *cmd)
{
	const char *dir = getenv("ASIDE_TEST_SERVICES_DIR");
	if (!dir)
		return false;
	char line[1024];
	snprintf(line, sizeof(line), "%s/scripts/services %s %s",
		 ASIDE_SOURCE_DIR, cmd, dir);
	return system(line) == 0;
}
