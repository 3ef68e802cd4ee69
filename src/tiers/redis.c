/*
 * redis.c -- Redis as a shared tier (L2), with hiredis.
 *
 * hiredis contexts are not thread-safe: a pool lends one to a call, and a
 * context whose `err` is set is freed, never reused.  A value is stored as
 * a 16-byte header (magic and format version, logical expiry, how long its
 * load took) followed by its bytes, with a Redis expiry (PX) to match, or
 * longer by stale_if_error_ms: such an entry is a miss once past its own
 * expiry, and is handed with the lease to the reader that will load it, as
 * a copy to serve if the load fails (see r_lease_get).  An entry that does
 * not decode is reported corrupt, and the engine deletes it.
 *
 * Leases (Facebook's memcache leases, NSDI 2013, section 3.2.1), as Lua
 * scripts: a reader that misses gets the value, or a lease to load and fill
 * the key, or "someone else is loading" (it waits and asks again).  A fill
 * is stored only while its lease is still the key's, and an invalidation
 * deletes the lease with the value, so a load that read the old row before
 * a write can never store it afterwards, whichever process it runs in.  A
 * lease lapses after lease_ms, so a holder that dies delays the others by
 * at most that.  The lease of key K lives at "{K}|aside-lease" (or at
 * "K|aside-lease" when K has a hash tag of its own), in K's Cluster slot.
 * Scripts run by EVALSHA; after a Redis restart or SCRIPT FLUSH (NOSCRIPT)
 * the script is sent again with EVAL.
 *
 * A dead or hung Redis must cost a request no more than a local check: after
 * a connection-level failure (refused, reset, timed out) the breaker opens
 * and every operation fails fast, while a thread of the tier's own, the
 * prober, probes Redis (see probe_loop and opened for when); only a probe
 * that delivered what is owed closes it.  An invalidation alone may try
 * Redis meanwhile, when the failure came at once (cheap_to_try).  Each
 * transition is logged once.  Redis error replies (a wrong type, say) are
 * answers, not outages.
 */
#include "../core/internal.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/*
 * A stored entry: a header, then the value's bytes.
 *   format 1 ("ASD1", 16 bytes): magic, expiry (µs, little-endian, 8),
 *     load time (µs, 4).  Still read.
 *   format 2 ("ASD2", 25 bytes): the same, then the source row's version
 *     (8 bytes, big-endian, so that the scripts compare versions as
 *     strings) and a kind byte: 0 a value, 1 a tombstone, 2 a cached
 *     absence (negative_ttl_ms: the source had no such key; no bytes
 *     follow, and the scripts treat it as they treat a value).  A tombstone
 *     that keeps the old entry's bytes after its header, as a stale copy
 *     (stale_ms), has in its expiry the time the copy may be served until:
 *     stale_ms after the write, or the entry's own expiry if sooner;
 *     otherwise 0.
 */
#define MAGIC 0x31445341u  /* "ASD1" */
#define MAGIC2 0x32445341u /* "ASD2" */
#define HEADER 16
#define HEADER2 25
#define BACKOFF_MIN_US 100000
#define BACKOFF_MAX_US 5000000
/* Owing (Redis answers, the owed invalidations could not be delivered: the
 * database is away) backs off to a second at most: each probe costs one
 * read of the outbox, and every second that Redis stays unread after the
 * database is back is a second of the whole read load on a database that
 * has just recovered. */
#define OWING_BACKOFF_MAX_US 1000000

/* Refusals kept for the probe to publish (see refused); past that many,
 * one message stands for them all. */
#define UNSENT_MAX 64
/* Connections kept open for the invalidation they timed out on (see park) */
#define PARKED_MAX 16
/* Leases perhaps taken by a lookup that got no answer (see orphan_add) */
#define ORPHANS_MAX 32

/* The Lua scripts (below), by index. */
enum {
	S_LEASE_GET,
	S_LEASE_FILL,
	S_LEASE_DROP,
	S_DEL,
	S_TOMBSTONE,
	S_DEL_MANY,
	NSCRIPTS
};

struct redis {
	char host[256];
	int port, db;
	char user[256], password[256];
	struct timeval connect_timeout, timeout;
	aside_log_fn log;
	void *log_ctx;
	aside_clock_fn clock; /* the cache's */
	void *clock_ctx;

	pthread_mutex_t lock; /* guards the pool and the breaker's slow path */
	pthread_cond_t cond;
	redisContext **idle; /* guarded by lock */
	int nidle, open, max;

	char channel[64]; /* where invalidations are published */
	/* Where refusals are (see refused): every cache on this database
	 * hears them, with an L1 or not. */
	char refused_channel[64];
	char self_id[20]; /* prefixes what we publish, so we skip our own */
	pthread_t listener;
	bool listening;
	_Atomic int stopping;
	_Atomic int listen_fd; /* the subscriber's socket, for shutdown() */
	/* Both NULL for a cache without an L1, which hears only refusals. */
	void (*on_key)(void *, const char *, size_t);
	void (*on_lost)(void *);
	void *listen_ctx;
	bool first_try_done; /* guarded by lock; signalled on cond */
	int64_t confirm_us;  /* ping through the subscription this often x4 */
	_Atomic int64_t confirmed; /* see aside__redis_confirmed */

	int64_t lease_ms;	/* how long a lease holds before it lapses */
	int64_t tomb_ms;	/* how long a tombstone fences older fills */
	int (*on_back)(void *); /* see aside__redis_on_back; lock */
	void *on_back_ctx;
	int64_t stale_ms; /* keep a stale copy in tombstones this long */
	int64_t keep_ms;  /* keep entries this long past expiry (r_lease_get) */
	/* Of that, how long a copy is handed with a lease for a load that may
	 * fail (stale_if_error_ms), and to a reader who finds another's lease
	 * (stale_while_revalidate_ms); 0: not. */
	int64_t error_keep_ms, swr_ms;
	char sha[NSCRIPTS][41]; /* the scripts' SHA1s, once loaded; lock */

	_Atomic int up;	  /* breaker: 1 closed (Redis usable), 0 open */
	int64_t retry_at; /* mono µs; guarded by lock */
	int64_t backoff;  /* guarded by lock */
	bool delivering;  /* the prober had its ping answered; lock */
	bool reopened; /* opened by a closed connection, not an outage; lock */
	/* Redis answered the last probe, but what was owed to it could not be
	 * delivered (the hook failed: the outbox could not be read); lock */
	bool owing;
	/* How long the last connection-level failure took (µs; lock): one
	 * that came at once (refused) makes an invalidation worth trying
	 * while the breaker is open; see cheap_to_try. */
	int64_t fail_us;
	/* Redis refused a write: an invalidation (see refused), a lease or a
	 * fill (see run_script); the probe checks that it takes writes again
	 * before anything else; lock */
	bool refusing;
	/* Keys whose refusal could not be published (see refused), and
	 * whether more were lost past UNSENT_MAX; lock */
	struct kept_key {
		char *key;
		size_t len;
	} unsent[UNSENT_MAX];
	int nunsent;
	bool unsent_more;
	/* Lease keys (and tokens) a lookup may have taken without hearing
	 * so (see orphan_add); lock */
	struct orphan {
		char *key;
		size_t len;
		char tok[17];
	} orphans[ORPHANS_MAX];
	int norphans;
	/* See park and send_queued: the connections kept open, and whether
	 * one failed to take a command in this outage; queue_lock (taken
	 * before lock, when both are) */
	pthread_mutex_t queue_lock;
	redisContext *parked[PARKED_MAX];
	int nparked;
	bool queue_failed;
	pthread_cond_t probed;	  /* a probe ended; with lock */
	pthread_cond_t wake;	  /* the breaker opened, or closes; with lock */
	_Atomic uint64_t skipped; /* commands refused while it was open */
	_Atomic int tomb_refused; /* tombstones refused lately: logged once */
	pthread_t prober;
	bool prober_started;
};

static void logf_(struct redis *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(struct redis *r, int level, const char *fmt, ...)
{
	if (!r->log)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r->log(r->log_ctx, level, msg);
}

/* ---- the breaker -------------------------------------------------------- */

/* The tier this thread is replaying owed invalidations to, if any. */
static _Thread_local struct redis *replaying;

/*
 * May this call use Redis?  While the breaker is closed; and, while it is
 * open, the prober (which replays owed invalidations through it before it
 * closes it for everyone else).
 */
static bool may_try(struct redis *r)
{
	return atomic_load_explicit(&r->up, memory_order_acquire) ||
	       replaying == r;
}

/* Forgets the refusals not yet published: Redis takes writes again, and
 * the owed invalidations of their keys are delivered.  Caller holds lock. */
static void unsent_clear_locked(struct redis *r)
{
	for (int i = 0; i < r->nunsent; i++)
		free(r->unsent[i].key);
	r->nunsent = 0;
	r->unsent_more = false;
}

/*
 * A command got an answer.  Only a probe closes an open breaker: another
 * command may answer meanwhile (one sent before it opened, or an
 * invalidation, which may go ahead), and Redis must not be read before the
 * probe has delivered what is owed to it.
 */
static void succeeded(struct redis *r, bool by_probe)
{
	if (!by_probe || atomic_load_explicit(&r->up, memory_order_acquire))
		return;
	pthread_mutex_lock(&r->lock);
	bool was_down = !atomic_load_explicit(&r->up, memory_order_relaxed);
	bool reopened = r->reopened;
	atomic_store_explicit(&r->up, 1, memory_order_release);
	r->reopened = false;
	r->owing = false;
	r->refusing = false;
	r->delivering = false;
	r->backoff = 0;
	unsent_clear_locked(r);
	pthread_cond_broadcast(&r->probed);
	pthread_mutex_unlock(&r->lock);
	if (was_down)
		logf_(r, ASIDE_LOG_INFO, "redis %s:%d is %s", r->host, r->port,
		      reopened ? "reconnected" : "back");
}

/*
 * The breaker opens, for a probe after the backoff.  owing: Redis answers,
 * but the probe could not deliver what is owed to it; new invalidations
 * still go to it meanwhile (they read nothing), reads and fills do not.
 * The backoff starts when the breaker opens and doubles with each probe
 * that fails; other commands that fail meanwhile (sent before it opened,
 * all held up by the same outage) leave it alone.  It spaces attempts that
 * fail at once (a refused connection: without it the prober would spin).
 * An attempt that failed by timing out was its own pause: the prober asks
 * again at once, so that a ping is waiting whenever a hung or paused Redis
 * answers again, in every process alike (with gaps between the pings, the
 * processes came back at different times, and the writes of those still
 * waiting were owed while the others read Redis again).  That is one
 * connection attempt per command timeout, for as long as Redis hangs.
 */
static void opened(struct redis *r, const char *why, bool owing, bool by_probe)
{
	pthread_mutex_lock(&r->lock);
	bool was_up = atomic_load_explicit(&r->up, memory_order_relaxed) ||
		      r->reopened; /* a reconnection that found it gone */
	if (!was_up && !by_probe) {
		/* Already open: the probe keeps the schedule.  A Redis that
		 * answered (owing) does not any more. */
		r->owing = false;
		pthread_mutex_unlock(&r->lock);
		return;
	}
	r->reopened = false;
	r->owing = owing;
	r->delivering = false;
	atomic_store_explicit(&r->up, 0, memory_order_release);
	r->backoff = r->backoff ? r->backoff * 2 : BACKOFF_MIN_US;
	int64_t most = owing ? OWING_BACKOFF_MAX_US : BACKOFF_MAX_US;
	if (r->backoff > most)
		r->backoff = most;
	/* A failure that took its time (a timeout) is followed by the next
	 * ping at once, whatever the backoff: one is always waiting. */
	bool slow = !owing && r->fail_us >= BACKOFF_MIN_US;
	r->retry_at = aside__mono_us() + (slow ? 0 : r->backoff);
	pthread_cond_broadcast(&r->probed);
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->lock);
	if (was_up)
		logf_(r, ASIDE_LOG_WARN,
		      "redis %s:%d is %s (%s); serving without it", r->host,
		      r->port, owing ? "not read" : "unreachable", why);
}

static void failed(struct redis *r, const char *why)
{
	opened(r, why, false, replaying == r);
}

/*
 * A connection found closed by the peer: the breaker opens for a probe now,
 * with no backoff (if it was closed; an outage keeps its own schedule).
 */
static void reopen(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	bool was_up = atomic_load_explicit(&r->up, memory_order_relaxed);
	if (was_up) {
		atomic_store_explicit(&r->up, 0, memory_order_release);
		r->retry_at = aside__mono_us();
		r->reopened = true;
		pthread_cond_broadcast(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}

/*
 * Redis refuses writes (see refused): it is not read until it takes them
 * again and what is owed to it is delivered.  The breaker opens as when
 * owing: invalidations still go to it (they are refused, and owed, and
 * tell the other caches), reads and fills do not.
 */
static void refusing_now(struct redis *r, const char *why)
{
	pthread_mutex_lock(&r->lock);
	r->refusing = true;
	bool was_up =
	    atomic_load_explicit(&r->up, memory_order_relaxed) || r->reopened;
	pthread_mutex_unlock(&r->lock);
	if (was_up)
		opened(r, why, true, false);
}

/* Whether the breaker is open for a reconnection, not for an outage. */
static bool reconnecting(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	bool soft = r->reopened;
	pthread_mutex_unlock(&r->lock);
	return soft;
}

/* Whether Redis answers while the breaker is open: invalidations go. */
static bool answering(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	bool yes = r->reopened || r->owing;
	pthread_mutex_unlock(&r->lock);
	return yes;
}

/*
 * Whether an invalidation should try Redis although the breaker is open for
 * an outage: when the failure that opened it (or the last since) came at
 * once, as a refused connection does, trying costs a write next to nothing,
 * and Redis may be back before this process's probe is due.  Other
 * processes may already read it, and would serve the old row until the
 * owed invalidation was delivered (found by `aside check` with Redis killed
 * and started again: stale reads up to 82 ms late).  A failure that took
 * its time (a timeout: Redis hung, the network dropping packets) is not
 * tried again by every write: each would wait as long.  Then the prober
 * keeps a ping waiting instead, and delivers what is owed the moment Redis
 * answers it.
 */
static bool cheap_to_try(struct redis *r)
{
	int64_t cheap =
	    ((int64_t)r->timeout.tv_sec * 1000000 + r->timeout.tv_usec) / 10;
	pthread_mutex_lock(&r->lock);
	bool yes = r->fail_us < cheap;
	pthread_mutex_unlock(&r->lock);
	return yes;
}

/*
 * An invalidation tried while the breaker was open for an outage got an
 * answer: Redis is back, so the probe is due now, not at the end of its
 * backoff.
 */
static void probe_soon(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	if (!atomic_load_explicit(&r->up, memory_order_relaxed) && !r->owing &&
	    !r->reopened) {
		r->retry_at = aside__mono_us();
		r->backoff = 0;
		pthread_cond_broadcast(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
}

/* A connection-level failure that took since t0; the breaker opens, unless
 * the caller leaves that to someone else (quiet). */
static void fell(struct redis *r, const char *why, int64_t t0, bool quiet)
{
	pthread_mutex_lock(&r->lock);
	r->fail_us = aside__mono_us() - t0;
	pthread_mutex_unlock(&r->lock);
	if (!quiet)
		failed(r, why);
}

/*
 * Waits, at most the command timeout, for the prober: while it reconnects
 * (a connection was found closed: Redis is likely there), and while Redis
 * answered its ping and it delivers what is owed.  Then says what may_try
 * says.  Not while it waits for an answer: that may take the timeout.
 */
static bool await_probe(struct redis *r)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += r->timeout.tv_sec;
	until.tv_nsec += (long)r->timeout.tv_usec * 1000;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	while (!atomic_load_explicit(&r->up, memory_order_relaxed) &&
	       (r->reopened || r->delivering) &&
	       !atomic_load_explicit(&r->stopping, memory_order_relaxed))
		if (pthread_cond_timedwait(&r->probed, &r->lock, &until) != 0)
			break;
	pthread_mutex_unlock(&r->lock);
	return may_try(r);
}

/* ---- the pool ----------------------------------------------------------- */

static bool closed_by_peer(const redisContext *ctx);

/* One attempt; *lost if Redis accepted, then closed, the connection. */
static redisContext *connect_try(struct redis *r, char *why, size_t cap,
				 bool *lost)
{
	*lost = false;
	redisContext *ctx =
	    redisConnectWithTimeout(r->host, r->port, r->connect_timeout);
	if (!ctx || ctx->err) {
		snprintf(why, cap, "connect: %s",
			 ctx ? ctx->errstr : "out of memory");
		redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, r->timeout);
	redisReply *rep = NULL;
	if (r->user[0] || r->password[0]) {
		rep = r->user[0] ? redisCommand(ctx, "AUTH %s %s", r->user,
						r->password)
				 : redisCommand(ctx, "AUTH %s", r->password);
		if (!rep || rep->type == REDIS_REPLY_ERROR)
			goto refused;
		freeReplyObject(rep);
	}
	if (r->db) {
		rep = redisCommand(ctx, "SELECT %d", r->db);
		if (!rep || rep->type == REDIS_REPLY_ERROR)
			goto refused;
		freeReplyObject(rep);
	}
	return ctx;
refused:
	/* An answer (a wrong password or database) is the URL's fault; a
	 * connection lost on the way is Redis being away, as at connect. */
	if (rep)
		snprintf(why, cap, "%s", rep->str);
	else
		snprintf(why, cap, "connect: %s",
			 ctx->err ? ctx->errstr : "no reply");
	if (rep)
		freeReplyObject(rep);
	else
		*lost = closed_by_peer(ctx);
	redisFree(ctx);
	return NULL;
}

/*
 * A new connection, ready for commands.  One that Redis accepted and then
 * closed before it was ready (a CLIENT KILL or a restart racing with it)
 * is tried once more before Redis counts as away.
 */
static redisContext *connect_one(struct redis *r, char *why, size_t cap)
{
	bool lost;
	redisContext *ctx = connect_try(r, why, cap, &lost);
	if (!ctx && lost)
		ctx = connect_try(r, why, cap, &lost);
	return ctx;
}

/*
 * A connection for one command: an idle one if *reused is set on entry (it
 * stays set), else a new one (*reused cleared).  NULL if none can be had
 * (*busy: every connection is in use).
 */
static redisContext *take(struct redis *r, char *why, size_t cap, bool *busy,
			  bool *reused)
{
	pthread_mutex_lock(&r->lock);
	for (;;) {
		if (r->nidle && *reused) {
			redisContext *ctx = r->idle[--r->nidle];
			pthread_mutex_unlock(&r->lock);
			return ctx;
		}
		if (r->open < r->max)
			break;
		if (r->nidle) {
			/* A new one is wanted: room is made by closing an
			 * idle one (likely closed by the peer as well). */
			redisContext *old = r->idle[--r->nidle];
			r->open--;
			pthread_mutex_unlock(&r->lock);
			redisFree(old);
			pthread_mutex_lock(&r->lock);
			continue;
		}
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += r->timeout.tv_sec + 1;
		if (pthread_cond_timedwait(&r->cond, &r->lock, &until) != 0 &&
		    !r->nidle && r->open >= r->max) {
			pthread_mutex_unlock(&r->lock);
			snprintf(why, cap, "no free connection");
			*busy = true;
			return NULL;
		}
	}
	*reused = false;
	r->open++;
	pthread_mutex_unlock(&r->lock);
	redisContext *ctx = connect_one(r, why, cap);
	if (!ctx) {
		pthread_mutex_lock(&r->lock);
		r->open--;
		pthread_cond_signal(&r->cond);
		pthread_mutex_unlock(&r->lock);
	}
	return ctx;
}

/* Returns ctx to the pool, or frees it if its connection broke. */
static void give(struct redis *r, redisContext *ctx)
{
	bool broken = ctx->err != 0;
	pthread_mutex_lock(&r->lock);
	if (broken)
		r->open--;
	else
		r->idle[r->nidle++] = ctx;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (broken)
		redisFree(ctx);
}

/*
 * Keeps open, rather than frees, a connection whose invalidation timed out.
 * The invalidation is still queued in Redis if Redis is paused (CLIENT
 * PAUSE, as failover and maintenance tools do), and a paused Redis runs
 * what it queued in the order it came: so it runs before the read of any
 * process that began after the write returned, and that read does not find
 * the old row.  Closed, the connection took the queued invalidation with
 * it, and such a read found the old row when the pause ended, before the
 * prober delivered what was owed (aside check with 300-ms pauses: stale
 * reads in some runs; docs/consistency.md).  The invalidation is owed all
 * the same, and delivered again.  Freed when a probe's ping is answered
 * (everything queued before it has run) or the tier closes; the oldest
 * goes first past PARKED_MAX.
 */
static void park_locked(struct redis *r, redisContext *ctx)
{
	redisContext *oldest = NULL;
	if (r->nparked == PARKED_MAX) {
		oldest = r->parked[0];
		memmove(r->parked, r->parked + 1,
			(PARKED_MAX - 1) * sizeof(*r->parked));
		r->nparked--;
	}
	r->parked[r->nparked++] = ctx;
	if (oldest)
		redisFree(oldest);
	pthread_mutex_lock(&r->lock);
	r->open--; /* out of the pool */
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void park(struct redis *r, redisContext *ctx)
{
	pthread_mutex_lock(&r->queue_lock);
	park_locked(r, ctx);
	pthread_mutex_unlock(&r->queue_lock);
}

/* Frees the parked connections (see park): Redis has run what they
 * carried, or will not. */
static void unpark(struct redis *r)
{
	redisContext *gone[PARKED_MAX];
	pthread_mutex_lock(&r->queue_lock);
	int n = r->nparked;
	memcpy(gone, r->parked, (size_t)n * sizeof(*gone));
	r->nparked = 0;
	r->queue_failed = false;
	pthread_mutex_unlock(&r->queue_lock);
	for (int i = 0; i < n; i++)
		redisFree(gone[i]);
}

/* Writes a command to fd, past hiredis (whose context may hold an error
 * from a timeout), unanswered, without waiting for room in the socket's
 * buffer; false if it did not all go. */
static bool send_raw(int fd, int argc, const char **argv, const size_t *lens)
{
	char *cmd;
	int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0)
		return false;
	size_t off = 0;
	while (off < (size_t)len) {
		ssize_t n = send(fd, cmd + off, (size_t)len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	redisFreeCommand(cmd);
	return off == (size_t)len;
}

/*
 * Sends an invalidation to a Redis that stopped answering (hung, or
 * paused) without waiting for an answer, behind the last invalidation that
 * timed out, on its kept connection, whose place in a paused Redis's queue
 * is older than any read sent since: so it runs before them (see park).
 * With none (the outage began with a read's timeout), on an idle
 * connection of the pool, kept as a parked one from then on.  It is owed
 * all the same.  Never on a connection opened for it: connecting to a
 * Redis that cannot be reached costs the connect timeout, and a new
 * connection is read only once Redis has accepted it, so a read sent on an
 * old one a moment later may be queued first (1 run in 3 of the test).
 * Once one fails to go (the socket's buffer full, in a long outage), no
 * more go until the outage ends: a write never waits for this.
 */
static void send_queued(struct redis *r, int argc, const char **argv,
			const size_t *lens)
{
	pthread_mutex_lock(&r->queue_lock);
	if (r->queue_failed) {
		pthread_mutex_unlock(&r->queue_lock);
		return;
	}
	redisContext *idle = NULL;
	if (!r->nparked) {
		pthread_mutex_lock(&r->lock);
		if (r->nidle)
			idle = r->idle[--r->nidle];
		pthread_mutex_unlock(&r->lock);
		if (idle)
			park_locked(r, idle);
	}
	if (r->nparked &&
	    !send_raw(r->parked[r->nparked - 1]->fd, argc, argv, lens))
		r->queue_failed = true;
	pthread_mutex_unlock(&r->queue_lock);
}

/*
 * Whether a command failed because the peer had closed the connection (end
 * of file, reset, broken pipe), not because it timed out or could not be
 * sent for another reason.
 */
static bool closed_by_peer(const redisContext *ctx)
{
	if (ctx->err == REDIS_ERR_EOF)
		return true;
	return ctx->err == REDIS_ERR_IO &&
	       (errno == ECONNRESET || errno == EPIPE);
}

/*
 * Runs one command.  Returns the reply (the caller frees it), or NULL with
 * err set: ASIDE_ECACHE, fast when the breaker is open.
 */
/*
 * What a command does, for what it may do while the tier reconnects (a
 * connection found closed, next): a lookup waits for the probe, a fill
 * (which may hold up the probe's invalidations) gives up, an invalidation
 * (which reads nothing) goes ahead.
 */
enum cmd {
	CMD_LOOKUP, /* a read, a lease asked for */
	CMD_FILL,   /* a fill, a lease given up, a plain set */
	CMD_INVAL   /* an invalidation: never reads, safe to send twice */
};

static redisReply *run_once(struct redis *r, enum cmd kind, bool tentative,
			    int argc, const char **argv, const size_t *lens,
			    aside_error *err);
static bool takes_writes(struct redis *r, char *why, size_t cap);
static void publish_unsent(struct redis *r);
static bool drop_orphans(struct redis *r);

/*
 * Probes a Redis that was away: a PING, then, if it refused writes, a
 * delete of a key of its own, then the owed invalidations (the on_back
 * hook), and only then is it used again.  Runs on the prober.
 */
static void probe(struct redis *r)
{
	const char *argv[] = {"PING"};
	size_t lens[] = {4};
	replaying = r;
	redisReply *rep = run_once(r, CMD_LOOKUP, false, 1, argv, lens, NULL);
	if (!rep) {
		replaying = NULL;
		opened(r, "no answer to a probe", false, true);
		return;
	}
	freeReplyObject(rep);
	unpark(r);
	if (!drop_orphans(r)) {
		/* It answers, but does not run writes (paused for them). */
		replaying = NULL;
		opened(r, "a lease it may hold could not be dropped", true,
		       true);
		return;
	}
	pthread_mutex_lock(&r->lock);
	bool check = r->refusing;
	pthread_mutex_unlock(&r->lock);
	char why[200];
	if (check && !takes_writes(r, why, sizeof(why))) {
		publish_unsent(r);
		replaying = NULL;
		opened(r, why, true, true);
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->delivering = true; /* invalidations wait for the hook's end */
	int (*fn)(void *) = r->on_back;
	void *ctx = r->on_back_ctx;
	pthread_mutex_unlock(&r->lock);
	int rc = fn ? fn(ctx) : ASIDE_OK;
	replaying = NULL;
	if (rc != ASIDE_OK) {
		/* Redis answers: only what it is owed is late.  Reads wait
		 * for a probe that delivers it; new invalidations do not. */
		opened(r, "the invalidations it missed could not be delivered",
		       true, true);
		return;
	}
	succeeded(r, true);
}

/*
 * The prober: a thread of the tier's own that, while the breaker is open,
 * probes once the backoff has passed, whether requests come or not.  No
 * request waits for Redis to answer a probe, none runs the owed
 * invalidations (a database read, which may be slow when the database is
 * failing too), and an idle process delivers them as soon as Redis is
 * back.  A fill never waits for it: the probe's invalidations may wait for
 * a fill to end.
 */
static void *probe_loop(void *arg)
{
	struct redis *r = arg;
	pthread_mutex_lock(&r->lock);
	while (!atomic_load_explicit(&r->stopping, memory_order_relaxed)) {
		if (atomic_load_explicit(&r->up, memory_order_relaxed)) {
			pthread_cond_wait(&r->wake, &r->lock);
			continue;
		}
		int64_t wait = r->retry_at - aside__mono_us();
		if (wait > 0) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += (time_t)(wait / 1000000);
			until.tv_nsec += (long)(wait % 1000000) * 1000;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&r->wake, &r->lock, &until);
			continue;
		}
		pthread_mutex_unlock(&r->lock);
		probe(r);
		pthread_mutex_lock(&r->lock);
		pthread_cond_broadcast(&r->probed);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/*
 * Runs one command.  Returns the reply (the caller frees it), or NULL with
 * err set: ASIDE_ECACHE, fast when the breaker is open.  While it is open:
 * a lookup waits (a moment) for a reconnection; an invalidation goes to a
 * Redis that answers (see answering), or tries one that refused it (see
 * cheap_to_try), or waits while the prober delivers what is owed; anything
 * else fails at once.
 */
static redisReply *run(struct redis *r, enum cmd kind, int argc,
		       const char **argv, const size_t *lens, aside_error *err)
{
	bool may = may_try(r), tentative = false;
	if (!may && kind == CMD_INVAL) {
		if (answering(r))
			may = true;
		else if (cheap_to_try(r))
			may = tentative = true;
		else if (!(may = await_probe(r)))
			send_queued(r, argc, argv, lens);
	} else if (!may && kind == CMD_LOOKUP && reconnecting(r)) {
		may = await_probe(r);
	}
	if (!may) {
		atomic_fetch_add_explicit(&r->skipped, 1, memory_order_relaxed);
		aside__fail(err, ASIDE_ECACHE,
			    "redis %s:%d is down; retrying later", r->host,
			    r->port);
		return NULL;
	}
	redisReply *rep = run_once(r, kind, tentative, argc, argv, lens, err);
	if (rep && tentative)
		probe_soon(r);
	return rep;
}

/*
 * The command itself, breaker bookkeeping included; a tentative command
 * (an invalidation tried while the breaker is open) leaves the breaker's
 * schedule alone if it fails.
 */
static redisReply *run_once(struct redis *r, enum cmd kind, bool tentative,
			    int argc, const char **argv, const size_t *lens,
			    aside_error *err)
{
	/* The probe decides the breaker, and a tentative command may not. */
	bool quiet = replaying == r || tentative;
	int64_t t0 = aside__mono_us();
	char why[200];
	bool busy = false, reused = true;
	redisContext *ctx = take(r, why, sizeof(why), &busy, &reused);
	if (!ctx) {
		/* Every connection busy is load, not an outage: the breaker
		 * stays closed; only a failed connect opens it. */
		if (!busy)
			fell(r, why, t0, quiet);
		aside__fail(err, ASIDE_ECACHE, "redis %s:%d: %s", r->host,
			    r->port, why);
		return NULL;
	}
	redisReply *rep = redisCommandArgv(ctx, argc, argv, lens);
	/* A new connection closed under a command is retried as an idle one
	 * is, for an invalidation only: the others fall back safely. */
	if (!rep && (reused || kind == CMD_INVAL) && closed_by_peer(ctx)) {
		/*
		 * An idle connection that Redis or the network closed while
		 * it waited (a restart, CLIENT KILL, an idle timeout): not an
		 * outage, but Redis may have restarted from a snapshot older
		 * than invalidations owed to it, so nothing is read from it
		 * before they are delivered.  The breaker opens for a probe
		 * with no backoff (a ping, then the owed invalidations), run
		 * by the first lookup; other lookups wait for it, fills give
		 * up, and invalidations (which read nothing and may run
		 * twice) go ahead.  Then the command runs again on a new
		 * connection.  A fill never waits for the probe nor runs it:
		 * the probe's invalidations may wait for that fill.  Every
		 * command we send may run
		 * twice: reads, leases, fills and invalidations are checked
		 * by token or idempotent.  A timeout, which says Redis is
		 * slow or gone, is not retried.
		 */
		give(r, ctx);
		if (kind != CMD_INVAL && !quiet) {
			reopen(r);
			if (kind == CMD_FILL || !await_probe(r)) {
				aside__fail(err, ASIDE_ECACHE,
					    "redis %s:%d: connection closed; "
					    "reconnecting",
					    r->host, r->port);
				return NULL;
			}
		}
		reused = false; /* the other idle ones likely went with it */
		ctx = take(r, why, sizeof(why), &busy, &reused);
		if (!ctx) {
			if (!busy)
				fell(r, why, t0, quiet);
			aside__fail(err, ASIDE_ECACHE, "redis %s:%d: %s",
				    r->host, r->port, why);
			return NULL;
		}
		rep = redisCommandArgv(ctx, argc, argv, lens);
	}
	if (!rep) {
		bool timed_out = ctx->err == REDIS_ERR_IO &&
				 (errno == EAGAIN || errno == EWOULDBLOCK);
		snprintf(why, sizeof(why), "%s",
			 ctx->err ? ctx->errstr : "no reply");
		if (!ctx->err)
			ctx->err = REDIS_ERR_OTHER; /* do not reuse it */
		if (timed_out && kind == CMD_INVAL)
			park(r, ctx);
		else
			give(r, ctx);
		fell(r, why, t0, quiet);
		aside__fail(err, ASIDE_ECACHE, "redis %s:%d: %s", r->host,
			    r->port, why);
		return NULL;
	}
	give(r, ctx);
	if (!quiet)
		succeeded(r, false);
	return rep;
}

void aside__redis_on_back(void *self, int (*fn)(void *), void *ctx)
{
	struct redis *r = self;
	pthread_mutex_lock(&r->lock);
	r->on_back = fn;
	r->on_back_ctx = ctx;
	pthread_mutex_unlock(&r->lock);
}

/* ---- the ops ------------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put64be(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get64be(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Decodes a stored entry into a new value; ASIDE_NOT_FOUND if it is a
 * tombstone, or expired more than grace_us ago (0: expired at all).
 */
static int decode_kept(const char *key, size_t klen, const char *str,
		       size_t len, int64_t now, int64_t grace_us,
		       aside_value **out, aside_error *err)
{
	const unsigned char *h = (const unsigned char *)str;
	uint32_t magic = len >= 4 ? get32(h) : 0;
	size_t header = magic == MAGIC2 ? HEADER2 : HEADER;
	if (len < header || (magic != MAGIC && magic != MAGIC2))
		return aside__fail(err, ASIDE_ECORRUPT,
				   "redis: entry '%.*s' is not an aside value",
				   (int)klen, key);
	uint8_t kind = magic == MAGIC2 ? h[24] : 0;
	if (kind == 1)
		return ASIDE_NOT_FOUND; /* a tombstone */
	if (kind > 2 || (kind == 2 && len != header))
		return aside__fail(err, ASIDE_ECORRUPT,
				   "redis: entry '%.*s' is of no known kind",
				   (int)klen, key);
	int64_t expires =
	    (int64_t)((uint64_t)get32(h + 4) | (uint64_t)get32(h + 8) << 32);
	/* now - grace, not now - expires: expires is whatever the bytes
	 * say, and must not overflow a subtraction. */
	if (expires && now - grace_us >= expires)
		return ASIDE_NOT_FOUND;
	int rc = kind == 2 ? aside__value_new_absent(key, klen, out)
			   : aside_value_new(key, klen, str + header,
					     len - header, out);
	if (rc == ASIDE_OK) {
		aside__value_set_expiry(*out, expires);
		atomic_store_explicit(&aside__value_cold(*out)->load_us,
				      get32(h + 12), memory_order_relaxed);
		if (magic == MAGIC2)
			aside_value_set_version(*out, (int64_t)get64be(h + 16));
	}
	return rc;
}

/* Whether the expiry in header h (0: none) is still ahead at now. */
static bool fresh_at(const unsigned char *h, int64_t now)
{
	int64_t at =
	    (int64_t)((uint64_t)get32(h + 4) | (uint64_t)get32(h + 8) << 32);
	return at == 0 || now < at;
}

/* A fresh entry, decoded; ASIDE_NOT_FOUND if expired or a tombstone. */
static int decode_entry(const char *key, size_t klen, const char *str,
			size_t len, int64_t now, aside_value **out,
			aside_error *err)
{
	return decode_kept(key, klen, str, len, now, 0, out, err);
}

/* ---- scripts ------------------------------------------------------------ */

/*
 * The lease script, which reads, starts with a shebang and lacks the
 * no-writes flag, so that a Redis refusing writes refuses it before it
 * runs, even where it would only have read (see r_get).
 */
static const char *const scripts[NSCRIPTS] = {
    /* KEYS: value, lease; ARGV: token, lease ms, the caller's time (µs).
     * {1, entry} | {2[, expired entry]}: leased to the caller (also when
     * the lease is already its own: a request sent again after its answer
     * was lost), with the entry if one is kept past its expiry
     * (stale_if_error_ms) | {3[, tombstone or expired entry]}: someone
     * else's (with the tombstone, which may hold a stale copy, or the
     * entry kept past its expiry, stale_while_revalidate_ms).  An entry
     * past its expiry at the caller's time is a miss, whatever Redis's
     * own clock says. */
    "#!lua\n"
    "local v = redis.call('GET', KEYS[1]) "
    "local old = nil "
    "if v then local m = string.sub(v, 1, 4) "
    "if m == 'ASD2' and string.byte(v, 25) == 1 then "
    "elseif (m == 'ASD1' or m == 'ASD2') and #v >= 16 then "
    "local lo, hi = struct.unpack('<I4<I4', v, 5) "
    "local at = hi * 4294967296 + lo "
    "if at == 0 or at > tonumber(ARGV[3]) then return {1, v} end "
    "old = v v = nil "
    "else return {1, v} end end "
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) or "
    "redis.call('GET', KEYS[2]) == ARGV[1] then "
    "if old then return {2, old} end return {2} end "
    "if v then return {3, v} end "
    "if old then return {3, old} end "
    "return {3}",
    /* KEYS: value, lease; ARGV: token, entry, px (0: none), version.
     * 1: stored | 0: the lease was voided or has lapsed, or the key holds
     * a newer version (a tombstone or a value): the version fence.  An
     * absence (kind 2) is no older row: read under a lease granted after
     * what the key holds was written, it replaces it, and takes over its
     * version and, if longer, its life, so that the fence stands. */
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end "
    "redis.call('DEL', KEYS[2]) "
    "local cur = redis.call('GET', KEYS[1]) "
    "local e, px = ARGV[2], ARGV[3] "
    "if cur and string.sub(cur, 1, 4) == 'ASD2' and "
    "string.sub(cur, 17, 24) > ARGV[4] then "
    "if string.byte(e, 25) ~= 2 then return 0 end "
    "e = string.sub(e, 1, 16) .. string.sub(cur, 17, 24) .. "
    "string.sub(e, 25) "
    "local left = redis.call('PTTL', KEYS[1]) "
    "if left == -1 then px = '0' "
    "elseif px ~= '0' and left > tonumber(px) then "
    "px = tostring(left) end end "
    "if px == '0' then redis.call('SET', KEYS[1], e) "
    "else redis.call('SET', KEYS[1], e, 'PX', px) end "
    "return 1",
    /* KEYS: lease; ARGV: token.  Gives the lease up if still ours.
     * 1: it was | 0: a write voided it, or it lapsed. */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('DEL', KEYS[1]) return 1 end return 0",
    /* KEYS: value, lease; ARGV: channel, message prefix.  Deletes both
     * (voiding any lease) and tells the other caches. */
    "redis.call('DEL', KEYS[1], KEYS[2]) "
    "redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. KEYS[1]) "
    "return 1",
    /* KEYS: value, lease; ARGV: channel, message prefix, tombstone, px,
     * version, keep a stale copy (1/0), the copy's end (µs, 8 bytes
     * little-endian: the write's time + stale_ms).  As the delete, but
     * leaves a tombstone of the version (with the old entry's bytes after
     * it, as a stale copy, when asked, and in the tombstone's expiry the
     * sooner of the copy's end and the old entry's expiry: a reader serves
     * the copy only until then), unless the key already holds this
     * version or a newer one (a version of 0, unknown, always replaces).
     * A copy kept from an older tombstone keeps its sooner end. */
    "local cur = redis.call('GET', KEYS[1]) "
    "if not (cur and ARGV[5] ~= string.rep('\\0', 8) and "
    "string.sub(cur, 1, 4) == 'ASD2' and "
    "string.sub(cur, 17, 24) >= ARGV[5]) then "
    "local tomb, stale = ARGV[3], '' "
    "if ARGV[6] == '1' and cur then local m = string.sub(cur, 1, 4) "
    "if m == 'ASD2' then stale = string.sub(cur, 26) "
    "elseif m == 'ASD1' then stale = string.sub(cur, 17) end "
    "if stale ~= '' then local exp = string.sub(cur, 5, 12) "
    "local lo, hi = struct.unpack('<I4<I4', exp) "
    "local ulo, uhi = struct.unpack('<I4<I4', ARGV[7]) "
    "local at = hi * 4294967296 + lo "
    "if at == 0 or uhi * 4294967296 + ulo < at then exp = ARGV[7] end "
    "tomb = string.sub(tomb, 1, 4) .. exp .. string.sub(tomb, 13) end end "
    "redis.call('SET', KEYS[1], tomb .. stale, 'PX', ARGV[4]) end "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. KEYS[1]) "
    "return 1",
    /* KEYS: value, lease, value, lease...; ARGV: channel, message prefix.
     * The delete of each pair. */
    "for i = 1, #KEYS, 2 do "
    "redis.call('DEL', KEYS[i], KEYS[i + 1]) "
    "redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. KEYS[i]) end "
    "return 1",
};

static redisReply *run_script_with(struct redis *r, int s, int nkeys, int n,
				   const char **kv, const size_t *kvlens,
				   const char **argv, size_t *lens,
				   aside_error *err);

/* Whether a reply is Redis refusing every write: a replica, too few
 * replicas, a failed save (not a full Redis, which still deletes). */
static bool refuses_writes(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR &&
	       (!strncmp(rep->str, "READONLY", 8) ||
		!strncmp(rep->str, "NOREPLICAS", 10) ||
		!strncmp(rep->str, "MISCONF", 7));
}

/*
 * A read, a fill or a lease refused as writes are (a replica, too few
 * replicas, a failed save): so are invalidations, this process's and the
 * others', and the old rows they leave are not to be read.  A cache that
 * has not heard of another cache's refusal yet (see refused) finds out so.
 * Refused invalidations are handled where they are made.
 */
static void lookup_refused(struct redis *r, const redisReply *rep)
{
	if (!refuses_writes(rep) || replaying == r)
		return;
	char why[160];
	snprintf(why, sizeof(why), "it refuses writes: %s", rep->str);
	refusing_now(r, why);
}

/*
 * Runs script s with keys and arguments (n of them, nkeys first).  Reply
 * as run(); a NOSCRIPT answer sends the script's text again.
 */
static redisReply *run_script(struct redis *r, int s, int nkeys, int n,
			      const char **kv, const size_t *kvlens,
			      aside_error *err)
{
	const char *fixed[12], **argv = fixed;
	size_t fixed_lens[12], *lens = fixed_lens;
	if (n > 9 && (!(argv = malloc((size_t)(3 + n) * sizeof(*argv))) ||
		      !(lens = malloc((size_t)(3 + n) * sizeof(*lens))))) {
		free(argv);
		aside__fail(err, ASIDE_ENOMEM, "out of memory");
		return NULL;
	}
	redisReply *rep =
	    run_script_with(r, s, nkeys, n, kv, kvlens, argv, lens, err);
	if (argv != fixed) {
		free(argv);
		free(lens);
	}
	if (rep && (s == S_LEASE_GET || s == S_LEASE_FILL || s == S_LEASE_DROP))
		lookup_refused(r, rep);
	return rep;
}

/* Loads script s into Redis and learns its SHA1 (into sha, 41 bytes);
 * false if Redis did not answer. */
static bool load_script(struct redis *r, int s, enum cmd kind, char *sha,
			aside_error *err)
{
	const char *lv[] = {"SCRIPT", "LOAD", scripts[s]};
	size_t ll[] = {6, 4, strlen(scripts[s])};
	redisReply *rep = run(r, kind, 3, lv, ll, err);
	if (!rep)
		return false;
	if (rep->type == REDIS_REPLY_STRING && rep->len == 40) {
		memcpy(sha, rep->str, 40);
		sha[40] = '\0';
		pthread_mutex_lock(&r->lock);
		memcpy(r->sha[s], sha, 41);
		pthread_mutex_unlock(&r->lock);
	}
	freeReplyObject(rep);
	return true;
}

/* run_script, with room for its command's 3 + n arguments. */
static redisReply *run_script_with(struct redis *r, int s, int nkeys, int n,
				   const char **kv, const size_t *kvlens,
				   const char **argv, size_t *lens,
				   aside_error *err)
{
	char sha[41], nk[12];
	enum cmd kind = s == S_DEL || s == S_TOMBSTONE || s == S_DEL_MANY
			    ? CMD_INVAL
			: s == S_LEASE_GET ? CMD_LOOKUP
					   : CMD_FILL;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	pthread_mutex_lock(&r->lock);
	memcpy(sha, r->sha[s], sizeof(sha));
	pthread_mutex_unlock(&r->lock);
	/* An invalidation is sent itself, not after a SCRIPT LOAD: in a
	 * paused Redis, it is what must be queued (see park). */
	if (!sha[0] && kind != CMD_INVAL && !load_script(r, s, kind, sha, err))
		return NULL;
	for (int i = 0; i < n; i++) {
		argv[3 + i] = kv[i];
		lens[3 + i] = kvlens[i];
	}
	argv[2] = nk;
	lens[2] = strlen(nk);
	if (sha[0]) {
		argv[0] = "EVALSHA";
		lens[0] = 7;
		argv[1] = sha;
		lens[1] = 40;
		redisReply *rep = run(r, kind, 3 + n, argv, lens, err);
		if (!rep || rep->type != REDIS_REPLY_ERROR ||
		    strncmp(rep->str, "NOSCRIPT", 8) != 0)
			return rep;
		freeReplyObject(rep);
	}
	argv[0] = "EVAL";
	lens[0] = 4;
	argv[1] = scripts[s];
	lens[1] = strlen(scripts[s]);
	redisReply *rep = run(r, kind, 3 + n, argv, lens, err);
	if (rep && !sha[0])
		load_script(r, s, kind, sha, NULL); /* for EVALSHA next time */
	return rep;
}

/*
 * Where key's lease lives: in the same Cluster slot as key.  Writes at most
 * klen + 16 bytes to buf and returns the length.
 */
static size_t lease_key(const char *key, size_t klen, char *buf)
{
	static const char suffix[] = "|aside-lease";
	const char *open = memchr(key, '{', klen);
	const char *close =
	    open ? memchr(open + 1, '}', klen - (size_t)(open + 1 - key))
		 : NULL;
	size_t n = 0;
	bool tagged = open && close && close > open + 1;
	bool plain = !memchr(key, '{', klen) && !memchr(key, '}', klen);
	if (!tagged && plain)
		buf[n++] = '{';
	memcpy(buf + n, key, klen);
	n += klen;
	if (!tagged && plain)
		buf[n++] = '}';
	memcpy(buf + n, suffix, sizeof(suffix) - 1);
	return n + sizeof(suffix) - 1;
}

/* A reply that means the key holds something that is not ours. */
static bool wrong_type(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "WRONGTYPE");
}

/*
 * A plain read is GETEX without options: GET's answer at GET's cost, but a
 * write to Redis, which it refuses when it refuses writes (a replica:
 * READONLY; too few replicas: NOREPLICAS; a failed save: MISCONF), and
 * serves when full.  Redis refusing writes still answers a GET with what
 * it holds, the old row of a write whose invalidation it just refused
 * included; the other caches hear of that refusal on their subscription,
 * a moment later (aside check, without an L1, found stale reads 0.2 and
 * 0.6 ms after the write), or not at all if the message could not go.  So
 * the read is refused too, and the cache finds out on its own.
 */
static int r_get(void *self, const char *key, size_t klen, uint64_t hash,
		 int64_t now, aside_value **out, aside_error *err)
{
	(void)hash;
	struct redis *r = self;
	const char *argv[] = {"GETEX", key};
	size_t lens[] = {5, klen};
	redisReply *rep = run(r, CMD_LOOKUP, 2, argv, lens, err);
	if (!rep)
		return ASIDE_ECACHE;
	int rc;
	if (rep->type == REDIS_REPLY_NIL) {
		rc = ASIDE_NOT_FOUND;
	} else if (rep->type == REDIS_REPLY_ERROR && !wrong_type(rep)) {
		rc =
		    aside__fail(err, ASIDE_ECACHE, "redis: read: %s", rep->str);
		lookup_refused(r, rep);
	} else if (rep->type != REDIS_REPLY_STRING) {
		rc = aside__fail(err, ASIDE_ECORRUPT,
				 "redis: entry '%.*s' is not an aside value",
				 (int)klen, key);
	} else {
		rc = decode_entry(key, klen, rep->str, rep->len, now, out, err);
	}
	freeReplyObject(rep);
	return rc;
}

/*
 * A lease script that got no answer (its connection closed, or it timed
 * out in a paused Redis) may have run, or may yet: then the lease is ours.
 * So is the lease of a fill or a drop that got no answer, unless it ran (a
 * fill that runs after the lease was dropped finds it gone, and stores
 * nothing).  Every process that misses the key, this one included, waits
 * such a lease out (lease_ms, 5 s by default), and its readers' waits for
 * the load run out with it (the check test met this with lookups, then
 * with fills: leases waited out, waits timed out).  The lease key and
 * token are kept, and the probe drops the lease if it is
 * still ours (see drop_orphans): the breaker is open after such a failure.
 * Past ORPHANS_MAX, the oldest is forgotten: it lapses by itself.
 */
static void orphan_add(struct redis *r, const char *lk, size_t lklen,
		       const char *tok)
{
	char *copy = malloc(lklen + 1);
	if (!copy)
		return; /* it lapses by itself */
	memcpy(copy, lk, lklen);
	char *oldest = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->norphans == ORPHANS_MAX) {
		oldest = r->orphans[0].key;
		memmove(r->orphans, r->orphans + 1,
			(ORPHANS_MAX - 1) * sizeof(*r->orphans));
		r->norphans--;
	}
	struct orphan *o = &r->orphans[r->norphans++];
	o->key = copy;
	o->len = lklen;
	memcpy(o->tok, tok, sizeof(o->tok));
	pthread_mutex_unlock(&r->lock);
	free(oldest);
}

/* Drops the leases kept by orphan_add that are still ours; those whose
 * drop got no answer are kept for the next probe, and false is returned.
 * Runs on the prober. */
static bool drop_orphans(struct redis *r)
{
	bool all = true;
	struct orphan kept[ORPHANS_MAX];
	pthread_mutex_lock(&r->lock);
	int n = r->norphans;
	memcpy(kept, r->orphans, (size_t)n * sizeof(*kept));
	r->norphans = 0;
	pthread_mutex_unlock(&r->lock);
	for (int i = 0; i < n; i++) {
		/* After a drop with no answer, the rest wait for the next
		 * probe rather than each cost a timeout now. */
		const char *kv[] = {kept[i].key, kept[i].tok};
		size_t kl[] = {kept[i].len, 16};
		redisReply *rep =
		    all ? run_script(r, S_LEASE_DROP, 1, 2, kv, kl, NULL)
			: NULL;
		all = rep != NULL;
		if (rep)
			freeReplyObject(rep);
		else
			orphan_add(r, kept[i].key, kept[i].len, kept[i].tok);
		free(kept[i].key);
	}
	return all;
}

static int r_lease_get(void *self, const char *key, size_t klen, uint64_t hash,
		       int64_t now, aside_value **out, uint64_t *token,
		       aside_error *err)
{
	(void)hash;
	struct redis *r = self;
	char lk[ASIDE_KEY_MAX + 16], tok[17], ms[24], at[24];
	uint64_t t = aside__rand() | 1;
	snprintf(tok, sizeof(tok), "%016llx", (unsigned long long)t);
	int mslen = snprintf(ms, sizeof(ms), "%lld", (long long)r->lease_ms);
	int atlen = snprintf(at, sizeof(at), "%lld", (long long)now);
	const char *kv[] = {key, lk, tok, ms, at};
	size_t kl[] = {klen, lease_key(key, klen, lk), 16, (size_t)mslen,
		       (size_t)atlen};
	redisReply *rep = run_script(r, S_LEASE_GET, 2, 5, kv, kl, err);
	if (!rep) {
		orphan_add(r, lk, kl[1], tok);
		return ASIDE_ECACHE;
	}
	int rc;
	if (wrong_type(rep)) {
		rc = aside__fail(err, ASIDE_ECORRUPT,
				 "redis: entry '%.*s' is not an aside value",
				 (int)klen, key);
	} else if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
		   rep->element[0]->type != REDIS_REPLY_INTEGER) {
		rc = aside__fail(err, ASIDE_ECACHE, "redis: lease: %s",
				 rep->type == REDIS_REPLY_ERROR
				     ? rep->str
				     : "unexpected reply");
	} else if (rep->element[0]->integer == 1 && rep->elements == 2 &&
		   rep->element[1]->type == REDIS_REPLY_STRING) {
		rc = decode_entry(key, klen, rep->element[1]->str,
				  rep->element[1]->len, now, out, err);
	} else if (rep->element[0]->integer == 2) {
		*token = t;
		rc = ASIDE_LEASED;
		/* The entry kept past its expiry, for a load that fails; one
		 * past the bound (the caller's clock ahead of Redis's) or
		 * that does not decode is no copy. */
		const redisReply *old =
		    rep->elements == 2 ? rep->element[1] : NULL;
		aside_value *copy = NULL;
		if (old && old->type == REDIS_REPLY_STRING &&
		    r->error_keep_ms &&
		    decode_kept(key, klen, old->str, old->len, now,
				r->error_keep_ms * 1000, &copy,
				NULL) == ASIDE_OK)
			*out = copy;
	} else {
		rc = ASIDE_BUSY;
		/* A tombstone's stale copy, for a caller that takes one, if
		 * the entry it was is still fresh by the caller's clock: a
		 * copy excuses the write, not the TTL.  Or the entry itself,
		 * past its expiry by less than swr_ms: a copy to serve rather
		 * than wait for the lease's holder (it carries its expiry,
		 * which a tombstone's copy does not). */
		const redisReply *tb =
		    rep->elements == 2 ? rep->element[1] : NULL;
		const unsigned char *h =
		    tb && tb->type == REDIS_REPLY_STRING && tb->len >= HEADER2
			? (const unsigned char *)tb->str
			: NULL;
		if (h && get32(h) == MAGIC2 && h[24] == 1 &&
		    tb->len > HEADER2 && fresh_at(h, now) &&
		    aside_value_new(key, klen, tb->str + HEADER2,
				    tb->len - HEADER2, out) == ASIDE_OK)
			aside_value_set_version(*out, (int64_t)get64be(h + 16));
		else if (h && get32(h) == MAGIC2 && h[24] != 1 && r->swr_ms)
			(void)decode_kept(key, klen, tb->str, tb->len, now,
					  r->swr_ms * 1000, out, NULL);
	}
	freeReplyObject(rep);
	return rc;
}

/* The stored form of v: header and bytes; free with free(). */
static unsigned char *encode_entry(aside_value *v, int64_t expires,
				   size_t *size)
{
	size_t len;
	const void *data = aside_value_data(v, &len);
	unsigned char *buf = malloc(HEADER2 + len);
	if (!buf)
		return NULL;
	put32(buf, MAGIC2);
	put32(buf + 4, (uint32_t)(uint64_t)expires);
	put32(buf + 8, (uint32_t)((uint64_t)expires >> 32));
	put32(buf + 12, atomic_load_explicit(&aside__value_cold(v)->load_us,
					     memory_order_relaxed));
	put64be(buf + 16, (uint64_t)aside_value_version(v));
	buf[24] = aside__value_absent(v) ? 2 : 0;
	memcpy(buf + HEADER2, data, len);
	*size = HEADER2 + len;
	return buf;
}

static int r_lease_end(void *self, const char *key, size_t klen, uint64_t hash,
		       aside_value *v, int64_t now, uint64_t token,
		       aside_error *err)
{
	(void)hash;
	struct redis *r = self;
	char lk[ASIDE_KEY_MAX + 16], tok[17];
	snprintf(tok, sizeof(tok), "%016llx", (unsigned long long)token);
	size_t lklen = lease_key(key, klen, lk);
	if (!v) {
		const char *kv[] = {lk, tok};
		size_t kl[] = {lklen, 16};
		redisReply *rep =
		    run_script(r, S_LEASE_DROP, 1, 2, kv, kl, err);
		if (!rep) {
			orphan_add(r, lk, lklen, tok);
			return ASIDE_ECACHE;
		}
		/* 0: a write voided the lease (or it lapsed), so what the
		 * flight read may be older than that write. */
		int rc;
		if (rep->type == REDIS_REPLY_INTEGER)
			rc = rep->integer == 1 ? ASIDE_OK : ASIDE_STALE;
		else
			rc = aside__fail(err, ASIDE_ECACHE,
					 "redis: lease drop: %s",
					 rep->type == REDIS_REPLY_ERROR
					     ? rep->str
					     : "unexpected reply");
		freeReplyObject(rep);
		return rc;
	}
	int64_t expires = aside_value_expires_at_us(v);
	int64_t ttl_ms = expires ? (expires - now + 999) / 1000 : 0;
	if (expires && ttl_ms <= 0)
		ttl_ms = 1; /* already stale: keep nothing, but end the lease */
	else if (expires)
		ttl_ms += r->keep_ms; /* kept past its expiry as a copy */
	size_t size;
	unsigned char *buf = encode_entry(v, expires, &size);
	if (!buf)
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	char px[24];
	int pxlen = snprintf(px, sizeof(px), "%lld", (long long)ttl_ms);
	const char *kv[] = {
	    key, lk, tok, (const char *)buf, px, (const char *)buf + 16};
	size_t kl[] = {klen, lklen, 16, size, (size_t)pxlen, 8};
	redisReply *rep = run_script(r, S_LEASE_FILL, 2, 6, kv, kl, err);
	free(buf);
	if (!rep) {
		/* The lease is ours still, unless the fill ran: the probe
		 * gives it up (a fill that runs later finds it gone). */
		orphan_add(r, lk, lklen, tok);
		return ASIDE_ECACHE;
	}
	int rc;
	if (rep->type == REDIS_REPLY_INTEGER)
		rc = rep->integer == 1 ? ASIDE_OK : ASIDE_STALE;
	else
		rc = aside__fail(err, ASIDE_ECACHE, "redis: fill: %s",
				 rep->type == REDIS_REPLY_ERROR
				     ? rep->str
				     : "unexpected reply");
	freeReplyObject(rep);
	return rc;
}

static int r_set(void *self, aside_value *v, uint64_t hash, int64_t now,
		 aside_error *err)
{
	(void)hash;
	struct redis *r = self;
	size_t klen, size;
	const char *key = aside_value_key(v, &klen);
	int64_t expires = aside_value_expires_at_us(v);
	int64_t ttl_ms = expires ? (expires - now + 999) / 1000 : 0;
	if (expires && ttl_ms <= 0)
		return ASIDE_OK; /* already stale: nothing to share */
	if (expires)
		ttl_ms += r->keep_ms; /* kept past its expiry as a copy */
	unsigned char *buf = encode_entry(v, expires, &size);
	if (!buf)
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	char px[24];
	int pxlen = snprintf(px, sizeof(px), "%lld", (long long)ttl_ms);
	const char *argv[] = {"SET", key, (const char *)buf, "PX", px};
	size_t lens[] = {3, klen, size, 2, (size_t)pxlen};
	redisReply *rep = run(r, CMD_FILL, expires ? 5 : 3, argv, lens, err);
	free(buf);
	if (!rep)
		return ASIDE_ECACHE;
	int rc =
	    rep->type == REDIS_REPLY_ERROR
		? aside__fail(err, ASIDE_ECACHE, "redis: SET: %s", rep->str)
		: ASIDE_OK;
	freeReplyObject(rep);
	return rc;
}

/*
 * Deletes the key and its lease (voiding a load in progress anywhere), and
 * publishes the key so that other caches' L1s drop it too: one round trip.
 */
static int r_tombstone(void *self, const char *key, size_t klen, uint64_t hash,
		       int64_t version, aside_error *err);

/* Tells the other caches that Redis refused KEY's invalidation ("": every
 * key); false if the message did not go. */
static bool publish_refusal(struct redis *r, const char *key, size_t klen)
{
	const char *argv[] = {"PUBLISH", r->refused_channel, key};
	size_t lens[] = {7, strlen(r->refused_channel), klen};
	redisReply *rep = run(r, CMD_INVAL, 3, argv, lens, NULL);
	bool sent = rep && rep->type == REDIS_REPLY_INTEGER;
	if (rep)
		freeReplyObject(rep);
	return sent;
}

/* Keeps a refusal for the probe to publish, once (NULL: every key). */
static void unsent_add(struct redis *r, const char *key, size_t klen)
{
	pthread_mutex_lock(&r->lock);
	for (int i = 0; key && i < r->nunsent; i++)
		if (r->unsent[i].len == klen &&
		    !memcmp(r->unsent[i].key, key, klen)) {
			pthread_mutex_unlock(&r->lock);
			return; /* users:all, say, refused with each user */
		}
	char *copy = key && r->nunsent < UNSENT_MAX ? malloc(klen + 1) : NULL;
	if (copy) {
		memcpy(copy, key, klen);
		r->unsent[r->nunsent++] = (struct kept_key){copy, klen};
	} else {
		r->unsent_more = true; /* or out of memory: all keys, then */
	}
	pthread_mutex_unlock(&r->lock);
}

/*
 * An invalidation answered with an error, not a failure: Redis is there
 * but refuses writes.  A primary demoted to a replica by a failover
 * (READONLY) or one short of the replicas it must write to (NOREPLICAS)
 * still serves reads, and serves the old row that the write could not
 * delete, to every process and for its whole TTL (found by test_faults,
 * with the writer's own process reading it back).  So the breaker opens
 * (refusing_now), and the other caches are told on a channel of refusals,
 * which a replica still serves: they stop reading Redis as well, and drop
 * the key from their L1.  Every cache hears that channel, with an L1 or
 * without (a refusal is rare, unlike the invalidations that only caches
 * with an L1 hear).  One that misses the message (its subscription was
 * down) learns the same when a write of its own is refused: a miss's
 * lease, or its replayer's delivery of the owed row.  The probe (not
 * this) decides the breaker for the invalidations it delivers.
 */
static void refused(struct redis *r, const char *key, size_t klen,
		    const char *reply)
{
	char why[160];
	snprintf(why, sizeof(why), "it refuses invalidations: %s", reply);
	if (replaying == r) {
		/* The probe's delivery: the probe keeps the breaker open,
		 * and the next one checks that Redis takes writes.  The
		 * others are told all the same: a write whose invalidation
		 * timed out (Redis paused, then demoted) is refused only
		 * here. */
		pthread_mutex_lock(&r->lock);
		r->refusing = true;
		pthread_mutex_unlock(&r->lock);
	} else {
		refusing_now(r, why);
	}
	if (!publish_refusal(r, key, klen))
		unsent_add(r, key, klen);
}

/*
 * Publishes the refusals that could not be published when they were met
 * (Redis paused or the connection lost right after it refused): asked by
 * the probe while Redis answers and still refuses writes, so that the
 * other caches stop reading the old rows then, not when a write of their
 * own is refused.  Past UNSENT_MAX keys, an empty message stands for all.
 */
static void publish_unsent(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	int n = r->nunsent;
	bool more = r->unsent_more;
	struct kept_key kept[UNSENT_MAX];
	memcpy(kept, r->unsent, (size_t)n * sizeof(*kept));
	r->nunsent = 0;
	r->unsent_more = false;
	pthread_mutex_unlock(&r->lock);
	/* After a message that did not go, the rest wait for the next
	 * probe rather than each cost a timeout now. */
	bool going = !more || publish_refusal(r, "", 0);
	if (!going)
		unsent_add(r, NULL, 0);
	for (int i = 0; i < n; i++) {
		going = going && publish_refusal(r, kept[i].key, kept[i].len);
		if (!going)
			unsent_add(r, kept[i].key, kept[i].len);
		free(kept[i].key);
	}
}

/*
 * Whether Redis takes the invalidation script again: asked by the probe
 * of a Redis that refused it, on a key of this cache's own, before the
 * hook delivers what is owed (which succeeds when nothing is, and a cache
 * without an outbox owes what it cannot list).
 */
static bool takes_writes(struct redis *r, char *why, size_t cap)
{
	char key[96], lk[96 + 16];
	int klen =
	    snprintf(key, sizeof(key), "%s:probe:%s", r->channel, r->self_id);
	const char *kv[] = {key, lk, r->channel, r->self_id};
	size_t kl[] = {(size_t)klen, lease_key(key, (size_t)klen, lk),
		       strlen(r->channel), strlen(r->self_id)};
	aside_error err;
	redisReply *rep = run_script(r, S_DEL, 2, 4, kv, kl, &err);
	if (!rep) {
		snprintf(why, cap, "%.150s", err.message);
		return false;
	}
	bool yes = rep->type != REDIS_REPLY_ERROR;
	if (!yes)
		snprintf(why, cap, "it still refuses invalidations: %s",
			 rep->str);
	freeReplyObject(rep);
	return yes;
}

/* The key and its lease deleted, and the other caches told. */
static int plain_del(struct redis *r, const char *key, size_t klen,
		     aside_error *err)
{
	char lk[ASIDE_KEY_MAX + 16];
	const char *kv[] = {key, lk, r->channel, r->self_id};
	size_t kl[] = {klen, lease_key(key, klen, lk), strlen(r->channel),
		       strlen(r->self_id)};
	redisReply *rep = run_script(r, S_DEL, 2, 4, kv, kl, err);
	if (!rep)
		return ASIDE_ECACHE;
	int rc = ASIDE_OK;
	if (rep->type == REDIS_REPLY_ERROR) {
		rc = aside__fail(err, ASIDE_ECACHE, "redis: DEL: %s", rep->str);
		refused(r, key, klen, rep->str);
	}
	freeReplyObject(rep);
	return rc;
}

static int r_del(void *self, const char *key, size_t klen, uint64_t hash,
		 aside_error *err)
{
	struct redis *r = self;
	if (r->stale_ms) /* keep the old entry as a stale copy */
		return r_tombstone(self, key, klen, hash, 0, err);
	return plain_del(r, key, klen, err);
}

/*
 * del of n keys in one command (for an outbox delivered after an outage):
 * each key and its lease deleted, and the other caches told, as plain_del
 * does one.  Where stale copies are kept, each key goes by r_del, whose
 * tombstone keeps its copy.
 */
static int r_del_many(void *self, const char *const *keys, const size_t *klens,
		      const uint64_t *hashes, size_t n, aside_error *err)
{
	struct redis *r = self;
	if (r->stale_ms || n == 1) {
		int rc = ASIDE_OK;
		for (size_t i = 0; i < n; i++) {
			int one = r_del(self, keys[i], klens[i], hashes[i],
					rc == ASIDE_OK ? err : NULL);
			if (rc == ASIDE_OK)
				rc = one;
		}
		return rc;
	}
	size_t nkv = 2 * n + 2, room = ASIDE_KEY_MAX + 16;
	const char **kv = malloc(nkv * sizeof(*kv));
	size_t *kl = malloc(nkv * sizeof(*kl));
	char *leases = malloc(n * room);
	int rc = ASIDE_ENOMEM;
	if (!kv || !kl || !leases || nkv > INT_MAX) {
		aside__fail(err, rc, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		kv[2 * i] = keys[i];
		kl[2 * i] = klens[i];
		kv[2 * i + 1] = leases + i * room;
		kl[2 * i + 1] = lease_key(keys[i], klens[i], leases + i * room);
	}
	kv[2 * n] = r->channel;
	kl[2 * n] = strlen(r->channel);
	kv[2 * n + 1] = r->self_id;
	kl[2 * n + 1] = strlen(r->self_id);
	redisReply *rep =
	    run_script(r, S_DEL_MANY, (int)(2 * n), (int)nkv, kv, kl, err);
	if (!rep) {
		rc = ASIDE_ECACHE;
	} else if (rep->type == REDIS_REPLY_ERROR) {
		rc = aside__fail(err, ASIDE_ECACHE, "redis: DEL: %s", rep->str);
		for (size_t i = 0; i < n; i++)
			refused(r, keys[i], klens[i], rep->str);
	} else {
		rc = ASIDE_OK;
	}
	if (rep)
		freeReplyObject(rep);
out:
	free(kv);
	free(kl);
	free(leases);
	return rc;
}

/* r_del, leaving a tombstone of version: the version fence. */
static int r_tombstone(void *self, const char *key, size_t klen, uint64_t hash,
		       int64_t version, aside_error *err)
{
	(void)hash;
	struct redis *r = self;
	char lk[ASIDE_KEY_MAX + 16], px[24];
	unsigned char tomb[HEADER2] = {0};
	put32(tomb, MAGIC2);
	put64be(tomb + 16, (uint64_t)version);
	tomb[24] = 1;
	int64_t ms = r->stale_ms > r->tomb_ms ? r->stale_ms : r->tomb_ms;
	int pxlen = snprintf(px, sizeof(px), "%lld", (long long)ms);
	/* A stale copy is served up to stale_ms after this write. */
	unsigned char until[8];
	uint64_t end = (uint64_t)(r->clock(r->clock_ctx) + r->stale_ms * 1000);
	put32(until, (uint32_t)end);
	put32(until + 4, (uint32_t)(end >> 32));
	const char *kv[] = {
	    key,	  lk, r->channel,	 r->self_id,
	    (char *)tomb, px, (char *)tomb + 16, r->stale_ms ? "1" : "0",
	    (char *)until};
	size_t kl[] = {klen,
		       lease_key(key, klen, lk),
		       strlen(r->channel),
		       strlen(r->self_id),
		       sizeof(tomb),
		       (size_t)pxlen,
		       8,
		       1,
		       sizeof(until)};
	redisReply *rep = run_script(r, S_TOMBSTONE, 2, 9, kv, kl, err);
	if (!rep)
		return ASIDE_ECACHE;
	if (rep->type != REDIS_REPLY_ERROR) {
		freeReplyObject(rep);
		atomic_store_explicit(&r->tomb_refused, 0,
				      memory_order_relaxed);
		return ASIDE_OK;
	}
	/* A Redis that refuses every write refuses a delete too. */
	if (refuses_writes(rep)) {
		int rc =
		    aside__fail(err, ASIDE_ECACHE, "redis: DEL: %s", rep->str);
		refused(r, key, klen, rep->str);
		freeReplyObject(rep);
		return rc;
	}
	/*
	 * Refused: a Redis at its maxmemory with no eviction refuses the
	 * tombstone (a write that adds data), and would keep serving the old
	 * row (found by test_faults).  A plain delete frees memory and is
	 * allowed: the old row goes, without the fence for this write.
	 */
	if (!atomic_exchange_explicit(&r->tomb_refused, 1,
				      memory_order_relaxed))
		logf_(r, ASIDE_LOG_WARN,
		      "redis %s:%d refuses tombstones (%s); deleting instead",
		      r->host, r->port, rep->str);
	freeReplyObject(rep);
	return plain_del(r, key, klen, err);
}

/*
 * "ID KEY" on the invalidation channel, from another cache: its key, to
 * drop here; ours are skipped.  "KEY" on the channel of refusals: Redis
 * refused a cache's invalidation of KEY (see refused), this one's own
 * included: it is not read from here either until it takes writes, and
 * KEY is dropped (Redis first, so that a read that misses the L1 then does
 * not find the old row there); "" (see publish_unsent): every key.
 */
static void deliver(struct redis *r, const char *channel, const char *msg,
		    size_t len)
{
	if (!strcmp(channel, r->refused_channel)) {
		refusing_now(r, "it refused a cache's invalidation");
		if (len && r->on_key)
			r->on_key(r->listen_ctx, msg, len);
		else if (!len && r->on_lost)
			r->on_lost(r->listen_ctx); /* keys unknown: all */
		return;
	}
	const char *sp = memchr(msg, ' ', len);
	if (!sp || !r->on_key)
		return;
	size_t idlen = (size_t)(sp - msg);
	if (idlen == strlen(r->self_id) && !memcmp(msg, r->self_id, idlen))
		return;
	r->on_key(r->listen_ctx, sp + 1, len - idlen - 1);
}

/* Tells aside__redis_listen that the first subscription attempt is over. */
static void first_try(struct redis *r)
{
	pthread_mutex_lock(&r->lock);
	if (!r->first_try_done) {
		r->first_try_done = true;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
}

/* A subscribed connection's PING answer: ["pong", ""]. */
static bool is_pong(const redisReply *m)
{
	return m->type == REDIS_REPLY_ARRAY && m->elements >= 1 &&
	       m->element[0]->type == REDIS_REPLY_STRING &&
	       !strcmp(m->element[0]->str, "pong");
}

/*
 * Reads what the subscription brings: invalidations, and the answers to
 * the pings that confirm nothing published earlier is still on its way.
 * Returns when the connection breaks or the tier closes.
 */
static void listen_subscribed(struct redis *r, redisContext *ctx)
{
	int64_t every = r->confirm_us > 0 ? r->confirm_us / 4 : 0;
	int64_t sent = 0; /* the ping awaiting its answer, 0: none */
	int64_t last = 0; /* when the last ping went out */
	for (;;) {
		void *reply;
		while (redisGetReplyFromReader(ctx, &reply) == REDIS_OK &&
		       reply) {
			redisReply *m = reply;
			if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
			    m->element[1]->type == REDIS_REPLY_STRING &&
			    m->element[2]->type == REDIS_REPLY_STRING &&
			    !strcmp(m->element[0]->str, "message")) {
				deliver(r, m->element[1]->str,
					m->element[2]->str, m->element[2]->len);
			} else if (is_pong(m) && sent) {
				/* Everything published before the ping has
				 * been applied. */
				atomic_store_explicit(&r->confirmed, sent,
						      memory_order_release);
				sent = 0;
				first_try(r);
			}
			freeReplyObject(m);
		}
		if (ctx->err || atomic_load(&r->stopping))
			return;
		int64_t now = aside__mono_coarse_us();
		if (every && !sent && now - last >= every) {
			int done = 0;
			if (redisAppendCommand(ctx, "PING") != REDIS_OK)
				return;
			while (!done)
				if (redisBufferWrite(ctx, &done) != REDIS_OK)
					return;
			sent = last = now;
		}
		struct pollfd pfd = {ctx->fd, POLLIN, 0};
		int wait_ms = every ? (int)(every / 1000) + 1 : 1000;
		int n = poll(&pfd, 1, wait_ms);
		if (n < 0 && errno != EINTR)
			return;
		if (n > 0 && redisBufferRead(ctx) != REDIS_OK)
			return;
	}
}

/* The subscriber: one connection of its own. */
static void *listen_loop(void *arg)
{
	struct redis *r = arg;
	int64_t backoff = BACKOFF_MIN_US;
	bool warned = false; /* about a subscription Redis refuses */
	while (!atomic_load(&r->stopping)) {
		char why[200];
		redisContext *ctx = connect_one(r, why, sizeof(why));
		if (ctx) {
			redisSetTimeout(ctx, (struct timeval){0, 0});
			atomic_store(&r->listen_fd, ctx->fd);
			if (atomic_load(&r->stopping)) {
				redisFree(ctx);
				break;
			}
			/* The refusals first: their confirmation is the
			 * reply read here, the other's comes after. */
			redisReply *rep =
			    r->on_key
				? redisCommand(ctx, "SUBSCRIBE %s %s",
					       r->refused_channel, r->channel)
				: redisCommand(ctx, "SUBSCRIBE %s",
					       r->refused_channel);
			/* An answer that is an error (an ACL user without
			 * the channels, NOPERM) is not a subscription: no
			 * message would come, the pings' answers neither. */
			bool denied = rep && rep->type == REDIS_REPLY_ERROR;
			if (denied && !warned) {
				logf_(r, ASIDE_LOG_WARN,
				      "redis %s:%d: cannot subscribe (%s); "
				      "other processes' writes and "
				      "refusals are not heard",
				      r->host, r->port, rep->str);
				warned = true;
			}
			if (rep && !denied) {
				freeReplyObject(rep);
				warned = false;
				/* Subscribed: whatever was published while
				 * we were away is unknown. */
				if (r->on_lost)
					r->on_lost(r->listen_ctx);
				if (!r->confirm_us)
					first_try(r);
				backoff = BACKOFF_MIN_US;
				listen_subscribed(r, ctx);
			} else if (rep) {
				freeReplyObject(rep);
			}
			atomic_store(&r->listen_fd, -1);
			redisFree(ctx);
			if (atomic_load(&r->stopping))
				break;
			if (r->on_lost && !denied) {
				r->on_lost(r->listen_ctx);
				logf_(r, ASIDE_LOG_WARN,
				      "redis %s:%d: invalidation subscription "
				      "lost; in-process cache flushed",
				      r->host, r->port);
			}
		}
		first_try(r); /* no Redis at open: do not hold the caller */
		struct timespec ts = {backoff / 1000000,
				      (backoff % 1000000) * 1000};
		nanosleep(&ts, NULL);
		backoff =
		    backoff * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : backoff * 2;
	}
	return NULL;
}

_Atomic int64_t *aside__redis_confirmed(void *self)
{
	struct redis *r = self;
	return &r->confirmed;
}

int aside__redis_listen(void *self, void (*key)(void *, const char *, size_t),
			void (*lost)(void *), void *ctx, int64_t confirm_us,
			aside_error *err)
{
	struct redis *r = self;
	r->confirm_us = confirm_us;
	r->on_key = key;
	r->on_lost = lost;
	r->listen_ctx = ctx;
	atomic_store(&r->listen_fd, -1);
	if (aside__thread_start(&r->listener, listen_loop, r) != 0)
		return aside__fail(err, ASIDE_ENOMEM,
				   "cannot start the invalidation listener");
	r->listening = true;
	/*
	 * Wait (bounded) for the first subscription, and its first confirmed
	 * ping, so that the cache starts hearing other caches before it holds
	 * anything (an L1 filled before would be flushed by the listener's
	 * first "may have missed" call) and its L1 serves from the start.
	 */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	long ms = (long)(r->connect_timeout.tv_sec + r->timeout.tv_sec) * 1000 +
		  (r->connect_timeout.tv_usec + r->timeout.tv_usec) / 1000 +
		  500;
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	while (!r->first_try_done &&
	       pthread_cond_timedwait(&r->cond, &r->lock, &until) == 0)
		;
	pthread_mutex_unlock(&r->lock);
	return ASIDE_OK;
}

static int64_t r_count(void *self)
{
	(void)self;
	return -1;
}

static uint64_t r_skipped(void *self)
{
	struct redis *r = self;
	return atomic_load_explicit(&r->skipped, memory_order_relaxed);
}

static int r_up(void *self)
{
	struct redis *r = self;
	return atomic_load_explicit(&r->up, memory_order_relaxed);
}

static void r_close(void *self)
{
	struct redis *r = self;
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	atomic_store(&r->stopping, 1);
	pthread_cond_broadcast(&r->wake);
	pthread_cond_broadcast(&r->probed);
	pthread_mutex_unlock(&r->lock);
	if (r->prober_started)
		pthread_join(r->prober, NULL);
	if (r->listening) {
		int fd = atomic_load(&r->listen_fd);
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR); /* wakes the blocking read */
		pthread_join(r->listener, NULL);
	}
	for (int i = 0; i < r->nidle; i++)
		redisFree(r->idle[i]);
	free(r->idle);
	unpark(r);
	unsent_clear_locked(r); /* no thread left */
	for (int i = 0; i < r->norphans; i++)
		free(r->orphans[i].key);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->queue_lock);
	pthread_cond_destroy(&r->cond);
	pthread_cond_destroy(&r->probed);
	pthread_cond_destroy(&r->wake);
	free(r);
}

static const aside_tier_ops redis_ops = {
    .version = ASIDE_TIER_OPS_VERSION,
    .name = "redis",
    .get = r_get,
    .set = r_set,
    .del = r_del,
    .count = r_count,
    .evictions = NULL,
    .close = r_close,
    .up = r_up,
    .lease_get = r_lease_get,
    .lease_end = r_lease_end,
    .tombstone = r_tombstone,
    .skipped = r_skipped,
    .del_many = r_del_many,
};

int aside__redis_open(const aside__redis_params *p, aside_tier *out,
		      aside_error *err)
{
	struct redis *r = calloc(1, sizeof(*r));
	if (!r || !(r->idle = calloc(p->pool, sizeof(*r->idle)))) {
		free(r);
		return aside__fail(err, ASIDE_ENOMEM, "out of memory");
	}
	snprintf(r->host, sizeof(r->host), "%s", p->host);
	snprintf(r->user, sizeof(r->user), "%s", p->user);
	snprintf(r->password, sizeof(r->password), "%s", p->password);
	r->port = (int)p->port;
	r->db = (int)p->db;
	r->max = (int)p->pool;
	r->connect_timeout = (struct timeval){
	    (time_t)(p->connect_timeout_ms / 1000),
	    (suseconds_t)(p->connect_timeout_ms % 1000) * 1000};
	r->timeout =
	    (struct timeval){(time_t)(p->timeout_ms / 1000),
			     (suseconds_t)(p->timeout_ms % 1000) * 1000};
	r->log = p->log;
	r->log_ctx = p->log_ctx;
	r->lease_ms = (int64_t)p->lease_ms;
	r->tomb_ms = (int64_t)p->tomb_ms;
	r->stale_ms = (int64_t)p->stale_ms;
	r->error_keep_ms = (int64_t)p->keep_ms;
	r->swr_ms = (int64_t)p->swr_ms;
	r->keep_ms =
	    r->error_keep_ms > r->swr_ms ? r->error_keep_ms : r->swr_ms;
	r->clock = p->clock ? p->clock : aside_clock_default;
	r->clock_ctx = p->clock_ctx;
	snprintf(r->channel, sizeof(r->channel), "aside:invalidate:%d",
		 (int)p->db);
	snprintf(r->refused_channel, sizeof(r->refused_channel),
		 "aside:refused:%d", (int)p->db);
	snprintf(r->self_id, sizeof(r->self_id), "%016llx",
		 (unsigned long long)aside__rand());
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->queue_lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_cond_init(&r->probed, NULL);
	pthread_cond_init(&r->wake, NULL);
	atomic_store(&r->up, 1);
	/* One connection now, so that a wrong address or password is an
	 * error at open; an unreachable server is not (it may come up). */
	char why[200];
	redisContext *ctx = connect_one(r, why, sizeof(why));
	if (ctx) {
		r->idle[r->nidle++] = ctx;
		r->open = 1;
	} else if (strstr(why, "connect:") != why) {
		r_close(r);
		return aside__fail(err, ASIDE_EURL, "redis %s:%d: %s", p->host,
				   (int)p->port, why);
	} else {
		failed(r, why);
	}
	if (aside__thread_start(&r->prober, probe_loop, r) != 0) {
		r_close(r);
		return aside__fail(err, ASIDE_ENOMEM, "cannot start a thread");
	}
	r->prober_started = true;
	out->ops = &redis_ops;
	out->self = r;
	return ASIDE_OK;
}
