/*
 * aside.h -- the public API of libaside, a cache-aside (lazy loading) engine.
 *
 * A read goes through the cache tiers (L1 in process, then shared tiers) and,
 * on a miss, to a loader supplied by the caller; concurrent misses on one key
 * in a process make one load (single-flight), and a write invalidates the key
 * so that no load begun before the write can store its result afterwards.
 *
 * What is not declared here is not API.  Every function is safe to call from
 * many threads on the same handle unless its comment says otherwise.
 */
#ifndef ASIDE_H
#define ASIDE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASIDE_VERSION_MAJOR 0
#define ASIDE_VERSION_MINOR 1
#define ASIDE_VERSION_PATCH 0
#define ASIDE_VERSION_STRING "0.1.0"

/*
 * Status codes.  0 is success, positive values are outcomes that are not
 * errors, negative values are errors.  X(name, value, message).
 */
#define ASIDE_STATUS_MAP(X)                                                    \
	X(OK, 0, "success")                                                    \
	X(NOT_FOUND, 1, "not found")                                           \
	X(LEASED, 2, "lease granted: the caller loads and fills")              \
	X(BUSY, 3, "another reader holds the lease")                           \
	X(STALE, 4, "fill refused: the lease was voided by a write")           \
	X(ENOMEM, -1, "out of memory")                                         \
	X(EINVAL, -2, "invalid argument")                                      \
	X(EURL, -3, "invalid or unsupported URL")                              \
	X(ETIMEDOUT, -4, "timed out waiting for a load")                       \
	X(ECACHE, -5, "cache tier error")                                      \
	X(EDB, -6, "database error")                                           \
	X(ECORRUPT, -7, "corrupt cache entry")                                 \
	X(ETOOBIG, -8, "value too large")                                      \
	X(EBADID, -9, "invalid user id: must be a positive integer")           \
	X(EBADNAME, -10,                                                       \
	  "invalid name: must be 1-255 bytes of valid UTF-8, not blank, "      \
	  "without control characters")                                        \
	X(EBADEMAIL, -11,                                                      \
	  "invalid email: must be a valid address of at most 254 bytes")       \
	X(EBADJSON, -12, "malformed JSON or missing fields")                   \
	X(EUNAVAILABLE, -13, "service unavailable")                            \
	X(EINTERNAL, -14, "internal error")

enum {
#define ASIDE__ENUM(name, value, msg) ASIDE_##name = (value),
	ASIDE_STATUS_MAP(ASIDE__ENUM)
#undef ASIDE__ENUM
};

/* A message for any status, never NULL; unknown codes get a generic text. */
const char *aside_strerror(int status);

/* The symbolic name of a status ("ASIDE_EDB"), or "ASIDE_UNKNOWN". */
const char *aside_status_name(int status);

/*
 * A URL fit to print: url copied into buf (cap bytes, truncated if it must
 * be), with the password of its user part ("redis://:PASSWORD@host",
 * "postgresql://user:PASSWORD@host") and the value of any "password="
 * parameter replaced by "***".  Returns buf.  Every message aside writes
 * prints URLs this way.
 */
char *aside_url_redact(const char *url, char *buf, size_t cap);

/*
 * Detail about a failure, owned by the caller and passed as an optional
 * argument (NULL is always accepted).  `code` repeats the status returned;
 * `backend_code` and `sqlstate` keep the original error of the backend that
 * failed (an SQLite result code, a PostgreSQL SQLSTATE, a Redis error).
 */
typedef struct aside_error {
	int code;
	int backend_code;
	char sqlstate[6];
	char message[250];
} aside_error;

/* Clears *err (if not NULL). */
void aside_error_clear(aside_error *err);

/* ------------------------------------------------------------------------ */
/* Values: immutable bytes under a key, reference counted.                  */
/* ------------------------------------------------------------------------ */

/*
 * A cached value: a key, the bytes stored in shared tiers (for the
 * UserService, JSON) and optionally a decoded form attached once, so that a
 * hit need not decode the bytes again.  The bytes and key never change after
 * creation; a reference keeps them valid.  Thread-safe.
 */
typedef struct aside_value aside_value;

/* Longest key accepted, in bytes. */
#define ASIDE_KEY_MAX 512
/* Largest value accepted, in bytes. */
#define ASIDE_VALUE_MAX (64u << 20)

/*
 * Makes a value holding copies of key and data; *out gets the only reference.
 * Returns ASIDE_OK, ASIDE_EINVAL (empty or over-long key), ASIDE_ETOOBIG or
 * ASIDE_ENOMEM.
 */
int aside_value_new(const char *key, size_t klen, const void *data, size_t len,
		    aside_value **out);

/*
 * The same, with `room` zeroed bytes inside the value for a decoded form
 * (aside_value_room): a hit then reads the value and its decoded form
 * from adjacent memory.  Attach what is built there with a NULL free_fn.
 */
int aside_value_new_room(const char *key, size_t klen, const void *data,
			 size_t len, size_t room, aside_value **out);

/* The room of a value (NULL if it has none); *room gets its size. */
void *aside_value_room(aside_value *v, size_t *room);

/* Takes another reference; returns v. */
aside_value *aside_value_ref(aside_value *v);

/* Drops a reference; the last one frees the value.  Accepts NULL. */
void aside_value_unref(aside_value *v);

/* The bytes; valid while a reference is held.  *len may be NULL. */
const void *aside_value_data(const aside_value *v, size_t *len);

/* The key (not NUL-terminated). */
const char *aside_value_key(const aside_value *v, size_t *klen);

/* When the value stops being fresh, in µs since the Unix epoch; 0 if unset. */
int64_t aside_value_expires_at_us(const aside_value *v);

/*
 * The version of the source row a value was loaded from (0: none), for the
 * version fence: a loader sets it before returning the value, and a shared
 * tier refuses a fill older than what an invalidation left there (see
 * aside_cache_invalidate_version).  Set it before the value is shared.
 */
void aside_value_set_version(aside_value *v, int64_t version);
int64_t aside_value_version(const aside_value *v);

/*
 * Attaches a decoded form of the bytes.  The value takes ownership of obj
 * and frees it with free_fn when it is freed; obj_bytes is charged against a
 * tier's byte bound.  Only the first attach wins: if one is already there,
 * obj is freed at once and the existing one stays.  Returns the attached
 * object (yours or the earlier one).
 */
void *aside_value_attach(aside_value *v, void *obj, void (*free_fn)(void *),
			 size_t obj_bytes);

/* The decoded form attached, or NULL. */
void *aside_value_obj(const aside_value *v);

/* ------------------------------------------------------------------------ */
/* Time and logging.                                                        */
/* ------------------------------------------------------------------------ */

/*
 * A clock in µs since the Unix epoch.  The default reads CLOCK_REALTIME with
 * millisecond-class resolution; tests inject their own so TTLs never need
 * real sleeps.
 */
typedef int64_t (*aside_clock_fn)(void *ctx);

/* The default clock (ctx unused). */
int64_t aside_clock_default(void *ctx);

enum { ASIDE_LOG_ERROR = 0, ASIDE_LOG_WARN = 1, ASIDE_LOG_INFO = 2 };
typedef void (*aside_log_fn)(void *ctx, int level, const char *msg);

/* ------------------------------------------------------------------------ */
/* Cache tiers: one ops table that every tier implements.                   */
/* ------------------------------------------------------------------------ */

/*
 * A tier stores values under keys with an expiry (aside_value_expires_at_us).
 * Implementations must be thread-safe.  `get` returns ASIDE_OK with a new
 * reference in *out, ASIDE_NOT_FOUND, or an error; a value that is expired at
 * now_us is not returned.  `hash` is aside_hash(key, klen), computed once by
 * the engine.  Members may be appended in later versions; `version` tells
 * which are present.
 */
#define ASIDE_TIER_OPS_VERSION 4
typedef struct aside_tier_ops {
	int version;
	const char *name; /* "mem", "redis", ... (used in metrics labels) */
	int (*get)(void *self, const char *key, size_t klen, uint64_t hash,
		   int64_t now_us, aside_value **out, aside_error *err);
	/* Stores v (taking a reference of its own) under its key. */
	int (*set)(void *self, aside_value *v, uint64_t hash, int64_t now_us,
		   aside_error *err);
	/* Removes the key; absent is success. */
	int (*del)(void *self, const char *key, size_t klen, uint64_t hash,
		   aside_error *err);
	/* Entries held; -1 when the tier cannot tell cheaply. */
	int64_t (*count)(void *self);
	/* Evictions so far (for metrics); may be NULL. */
	uint64_t (*evictions)(void *self);
	void (*close)(void *self);
	/* 1 while the tier is usable, 0 while it is down; NULL: always up. */
	int (*up)(void *self);
	/*
	 * Version 2: leases, for a tier shared between processes (NULL in a
	 * tier without them).  lease_get returns ASIDE_OK with the value,
	 * ASIDE_LEASED with *token set when the caller is now the one to load
	 * and fill the key (*out may then hold the key's entry, kept past its
	 * expiry: the caller serves it only if its load fails and giving the
	 * lease up then returns ASIDE_OK, never stores it, and must unref
	 * it), or ASIDE_BUSY while another reader holds the lease
	 * (the caller waits and asks again; *out may then hold a stale copy
	 * of the key, which the caller may serve but never store, and must
	 * unref); or an error.  lease_end stores v
	 * if token is still the key's lease (ASIDE_OK) and ASIDE_STALE if an
	 * invalidation voided it meanwhile; with v NULL it gives the lease up
	 * (ASIDE_STALE if a write had voided it, or it had lapsed).
	 * `del` voids the key's lease.
	 */
	int (*lease_get)(void *self, const char *key, size_t klen,
			 uint64_t hash, int64_t now_us, aside_value **out,
			 uint64_t *token, aside_error *err);
	int (*lease_end)(void *self, const char *key, size_t klen,
			 uint64_t hash, aside_value *v, int64_t now_us,
			 uint64_t token, aside_error *err);
	/*
	 * Version 2, optional: del, leaving a tombstone of version `version`
	 * so that fills of older versions are refused (ASIDE_STALE) while it
	 * lasts; a newer tombstone already there is kept.
	 */
	int (*tombstone)(void *self, const char *key, size_t klen,
			 uint64_t hash, int64_t version, aside_error *err);
	/*
	 * Version 3, optional (for metrics): how many operations so far the
	 * tier refused without touching the network, because it holds the
	 * server for down (a breaker open).  They are errors too.
	 */
	uint64_t (*skipped)(void *self);
	/*
	 * Version 4, optional: del of n keys at once (hashes[i] is keys[i]'s),
	 * in one round trip where the tier has them.  ASIDE_OK when every key
	 * is gone, else an error (some may be gone: del may run again).
	 */
	int (*del_many)(void *self, const char *const *keys,
			const size_t *klens, const uint64_t *hashes, size_t n,
			aside_error *err);
} aside_tier_ops;

typedef struct aside_tier {
	const aside_tier_ops *ops;
	void *self;
} aside_tier;

/* The hash the engine passes to tiers (64-bit, seeded per process). */
uint64_t aside_hash(const char *key, size_t klen);

/* ------------------------------------------------------------------------ */
/* The engine.                                                              */
/* ------------------------------------------------------------------------ */

/* A cache: tiers, single-flight, TTL policy and metrics.  Thread-safe. */
typedef struct aside_cache aside_cache;

/* Options for aside_cache_open_opts; zero means the default for each. */
typedef struct aside_options {
	aside_clock_fn clock; /* default aside_clock_default */
	void *clock_ctx;
	aside_log_fn log; /* default: silent */
	void *log_ctx;
} aside_options;

/*
 * Opens a cache from a URL:
 *   mem://[?capacity=N][&max_bytes=B][&ttl_ms=T][&jitter_pct=J][&wait_ms=W]
 *         [&stale_if_error_ms=E][&stale_while_revalidate_ms=S][&breaker=K]
 *         [&ttl_adapt=M][&negative_ttl_ms=X]
 *     an in-process cache of at most N entries (default 100000) and, when
 *     given, B bytes; T the default TTL (3600000, one hour); J the TTL jitter
 *     in percent (10: a TTL is drawn from [T*(1-J/100), T]); W the longest a
 *     reader waits for another thread's load (5000), from when it joined or
 *     from when that load began reading the source, whichever is later (and
 *     once more, as long as it lost, if its process was stopped meanwhile).
 *     With E, an entry is kept up to E ms past its expiry, and a read whose
 *     load fails (or hangs past W) gets that expired copy rather than the
 *     error: never a copy a write has invalidated (default: off).
 *     stale_while_revalidate_ms=S (both schemes): an entry is kept up to
 *     S ms past its expiry too (in the L1, and in Redis), and a reader that
 *     finds another thread or process loading the key gets that expired
 *     copy at once rather than wait for the load (the reader that starts
 *     the load waits for it; without an L1, so do the other readers of its
 *     process); never a copy a write has invalidated (default: off).
 *     breaker=K (both schemes): after K loads in a row fail, loads are
 *     refused (ASIDE_EUNAVAILABLE, an expired copy served if E allows) for
 *     100 ms, then one load runs as a probe; each failed probe doubles the
 *     wait, up to 5 s, and a load that succeeds closes it (default: off).
 *     ttl_adapt=M (both schemes, with an L1): a value's TTL grows with how
 *     often its key was read lately, by the L1's count (0 to 15), up to M
 *     times the namespace's TTL for a key read 15 times or more; a key read
 *     once gets about one TTL (default: off, every key one TTL).
 *     negative_ttl_ms=X (both schemes): a load that returns ASIDE_NOT_FOUND
 *     is cached as an absence for X ms (less the namespace's jitter), and
 *     a read that finds it returns ASIDE_NOT_FOUND with no load (counted
 *     as a hit, and in negative_hits).  An absence is filled, coalesced,
 *     invalidated and kept as a stale copy as a value is: a write of the
 *     key (a create) ends it, in every process, and a load that found
 *     nothing before that write never stores it (default: off).
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?l1=N][&l1_max_bytes=B]
 *           [&l1_ttl_ms=L][&connect_timeout_ms=C][&timeout_ms=T][&pool=P]
 *           [&lease_ms=M][&l1_bound_ms=D][&tomb_ms=X][&stale_ms=S]
 *           [&stale_if_error_ms=E][&stale_while_revalidate_ms=S]
 *           [&breaker=K][&ttl_adapt=M][&negative_ttl_ms=X]
 *     Redis as a shared tier (port 6379, db 0, timeouts 250 ms, a pool of 16
 *     connections; USER an ACL user, else the default user), with an
 *     in-process tier of N entries in front when l1 is given.  Every
 *     invalidation is published on Redis, and caches with an L1 drop the key
 *     when they hear it; an L1 entry is kept at most L ms (default 60000) in
 *     case a message is lost.  An unreachable Redis is not an error: reads
 *     go to the loader until it answers.  E keeps expired entries as stale
 *     copies, as for mem://, in the L1 and in Redis (each entry E ms past
 *     its expiry): a reader whose load fails is served Redis's copy, handed
 *     with the lease, if no write voided the lease meanwhile, so every
 *     process has the copies, with an L1 or without.  S (default 0: off):
 *     a write leaves the old entry in its tombstone, and for S ms after the
 *     write (never past the entry's own expiry) a reader that finds another
 *     process loading the key is served that copy instead of waiting.
 * Returns ASIDE_OK, ASIDE_EURL (with the reason in err), ASIDE_ENOMEM.
 */
int aside_cache_open(const char *url, aside_cache **out, aside_error *err);
int aside_cache_open_opts(const char *url, const aside_options *opts,
			  aside_cache **out, aside_error *err);

/*
 * Closes the cache and its tiers.  Values handed out stay valid.  NULL ok.
 * While Redis is down, this waits for the probe in progress, if any: at most
 * the connect and command timeouts (500 ms by default), and the reconnect
 * hook (aside_cache_on_reconnect) if Redis answered it.
 */
void aside_cache_close(aside_cache *c);

/*
 * How to produce a value on a miss.  `load` makes a value for key (with
 * aside_value_new) and returns ASIDE_OK, ASIDE_NOT_FOUND (nothing is cached,
 * or an absence with negative_ttl_ms) or an error.  `decode`, optional, is
 * called for a value read from a tier that has no decoded form attached yet; it
 * attaches one, or returns an error, in which case the entry is treated as
 * corrupt: counted, removed and loaded afresh.  Both run without any lock of
 * the engine held.
 */
typedef struct aside_loader {
	int (*load)(void *arg, const char *key, size_t klen, aside_value **out,
		    aside_error *err);
	int (*decode)(void *arg, aside_value *v, aside_error *err);
	void *arg;
} aside_loader;

/*
 * Reads key: from a tier, or else from one load shared by every concurrent
 * reader of the key in this process.  On ASIDE_OK, *out holds a reference
 * the caller must drop with aside_value_unref.  Returns ASIDE_NOT_FOUND when
 * the loader found nothing (or found nothing lately: a cached absence,
 * negative_ttl_ms), ASIDE_ETIMEDOUT when another thread's load took
 * longer than the wait bound, or the loader's error.  A read that starts
 * after aside_cache_invalidate of its key returned never receives a value
 * loaded before that invalidation.
 */
int aside_cache_get(aside_cache *c, const char *key, size_t klen,
		    const aside_loader *loader, aside_value **out,
		    aside_error *err);

/*
 * Reads key like aside_cache_get, but instead of handing out a reference it
 * calls fn(arg, value) with the value, which is valid only during the call.
 * On an in-process hit no reference is taken and nothing shared is written,
 * which makes this the fastest way to read; fn must not keep the value,
 * block, or call into this cache.  Returns what aside_cache_get returns; fn
 * is called exactly when that is ASIDE_OK.  aside_cache_read_inline
 * (<aside/inline.h>) does the same with an L1 hit compiled into the caller.
 */
typedef void (*aside_read_fn)(void *arg, const aside_value *v);
int aside_cache_read(aside_cache *c, const char *key, size_t klen,
		     const aside_loader *loader, aside_read_fn fn, void *arg,
		     aside_error *err);

/*
 * Looks the key up in the tiers only (no load).  ASIDE_OK with a reference,
 * or ASIDE_NOT_FOUND (nothing cached, or a cached absence).  Counts as a
 * hit or a miss.
 */
int aside_cache_peek(aside_cache *c, const char *key, size_t klen,
		     aside_value **out);

/*
 * Invalidates key after its source changed: removes it from every tier,
 * voids any load of it in flight (its result is returned to the readers
 * already waiting for it but never stored), and does the same for the keys
 * related to the key's namespace.  Returns ASIDE_OK, or the first tier error
 * (the other tiers and keys are still invalidated).
 */
int aside_cache_invalidate(aside_cache *c, const char *key, size_t klen,
			   aside_error *err);

/*
 * The same, after a write that made the key's source row `version` (a
 * number every write of the row increases): a shared tier keeps a
 * tombstone of that version for tomb_ms (default 60 s), and refuses any
 * fill of an older version meanwhile, whatever lease it holds (a load from
 * a lagging replica, a fill reordered after the invalidation).  Related
 * keys are invalidated as by aside_cache_invalidate.
 */
int aside_cache_invalidate_version(aside_cache *c, const char *key, size_t klen,
				   int64_t version, aside_error *err);

/*
 * The same, delivered late: for a write that completed some time ago (an
 * invalidation replayed from an outbox after it could not reach a shared
 * tier, or made by another process).  A load of the key in flight is then
 * not handed out as it is to readers who may have begun after that write:
 * it is read again for them, as a load voided by another process is.
 * aside_cache_invalidate assumes the write is completing now, so that every
 * reader already waiting began before it.  version as above (0: unknown).
 */
int aside_cache_invalidate_late(aside_cache *c, const char *key, size_t klen,
				int64_t version, aside_error *err);

/*
 * aside_cache_invalidate_late of n keys (version 0), each of their related
 * keys once, in as few round trips as the tiers allow: a tier with
 * del_many (Redis) takes up to 256 keys a command.  For an outbox
 * delivered after an outage.  Returns ASIDE_OK, or the first error: a
 * tier's error leaves the other keys invalidated; running out of memory
 * may leave some keys not invalidated (run it again).
 */
int aside_cache_invalidate_late_many(aside_cache *c, const char *const *keys,
				     const size_t *klens, size_t n,
				     aside_error *err);

/*
 * A Bloom gate for the keys of namespace ns ("user" gates "user:42"): a
 * read that misses the L1 on a key the gate was never told of returns
 * ASIDE_NOT_FOUND at once, with no lookup in a shared tier and no load, so
 * that reads of keys that do not exist cost the database nothing.  It is
 * told of keys by fill, which must call aside_cache_gate_add for every key
 * of ns that exists (scanning the database, say), and by every
 * invalidation of a key of ns, here or, through the subscription, in
 * another process: write the row, then invalidate its key, as always, and
 * a read that begins after that invalidation returned gets past the gate.
 * About 1% of the keys that do not exist get past it too, and are loaded
 * (the filter has 10 bits a key: each fill builds a new one, sized for the
 * keys the last held and at least expected_keys, and one that comes to
 * hold twice its size asks for a fill; a deleted key gets past it until
 * the next fill).
 *
 * fill runs now (over Redis, once the subscription has confirmed: the
 * first read after that asks for it), and again whenever writes may have been
 * missed (the subscription dropped; until then the gate lets every key
 * through), and,
 * if refill_ms > 0, every refill_ms, for keys written without an
 * invalidation through aside.  The first fill runs in the caller; later
 * ones in a thread of the gate's own, woken by the read that finds one
 * due, so fill must be safe to call from any thread.  Over Redis the
 * cache needs its L1 (l1=N), and the gate
 * shuts only while the L1 may be read.  One gate a cache.
 * Returns ASIDE_OK, ASIDE_EINVAL, ASIDE_ENOMEM, or fill's error (the gate
 * is then open to every key until a fill succeeds, tried again each
 * second).
 */
typedef int (*aside_gate_fill_fn)(void *arg, aside_cache *c, aside_error *err);
int aside_cache_gate(aside_cache *c, const char *ns, uint64_t expected_keys,
		     int64_t refill_ms, aside_gate_fill_fn fill, void *arg,
		     aside_error *err);
/* Tells the gate that key exists.  ASIDE_OK, or ASIDE_EINVAL if no gate
 * covers it. */
int aside_cache_gate_add(aside_cache *c, const char *key, size_t klen);

/*
 * Namespaces are the part of a key before its first ':' ("user" for
 * "user:42"; so a namespace has no ':').  Sets the TTL and jitter for one;
 * ttl_ms in [1, ASIDE_TTL_MAX_MS] (100 years, as ttl_ms= in a URL),
 * jitter_pct in [0, 100].  Returns ASIDE_OK, ASIDE_EINVAL or ASIDE_ENOMEM.
 */
#define ASIDE_TTL_MAX_MS (100LL * 365 * 86400 * 1000)
int aside_cache_set_ttl(aside_cache *c, const char *ns, int64_t ttl_ms,
			int jitter_pct);

/* The TTL that applies to a namespace (its own, or the default). */
int64_t aside_cache_ttl_ms(aside_cache *c, const char *ns);

/*
 * Relates key to a namespace: invalidating any key of ns also invalidates
 * key (the seed's "users:all" for "user").  Adding a relation twice is a
 * no-op.  Returns ASIDE_OK, ASIDE_EINVAL or ASIDE_ENOMEM.
 */
int aside_cache_add_related(aside_cache *c, const char *ns, const char *key);

/*
 * Durable invalidation's hook: fn(arg) runs when a shared tier (Redis)
 * comes back after an outage, or after it closed a connection (it may have
 * restarted), before anything is read from it again, on the tier's own
 * thread (its prober; never a request's).  It should deliver the
 * invalidations that failed while the tier was away, by
 * aside_cache_invalidate_late (which reaches the tier for this thread
 * alone; requests keep going past the tier, or wait a moment, meanwhile).
 * It returns ASIDE_OK, or an error to keep the tier away and run fn again
 * at the next probe.  One hook per cache; NULL removes it, and waits for a
 * call of the hook that is running to return.
 */
void aside_cache_on_reconnect(aside_cache *c, int (*fn)(void *arg), void *arg);

/* 1 if the cache has a tier shared with other processes (Redis), else 0. */
int aside_cache_shared(const aside_cache *c);

/* ------------------------------------------------------------------------ */
/* Metrics.                                                                 */
/* ------------------------------------------------------------------------ */

#define ASIDE_TIERS_MAX 4
/*
 * Latency histograms are log-linear over whole µs: values 0-7 have a bucket
 * each, then every power of two is split in 8, so a bucket is at most 12.5%
 * wide; the last bucket takes everything from about 19 hours up.
 */
#define ASIDE_HIST_BUCKETS 272

/* The bucket of a duration in µs, and the smallest value of a bucket. */
int aside_hist_bucket(uint64_t us);
uint64_t aside_hist_bucket_low_us(int bucket);

/*
 * A snapshot of a cache's counters.  hits + misses = reads; a miss either
 * ran a load (loads), waited for another reader's (shared_loads), timed
 * out waiting (wait_timeouts), was turned away by the gate (gate_rejects),
 * or had its load refused by the breaker (breaker_refusals).  loads = load_ok +
 * not_found + load_errors.
 */
typedef struct aside_metrics {
	uint64_t hits, misses;
	uint64_t tier_hits[ASIDE_TIERS_MAX];
	uint64_t
	    tier_misses[ASIDE_TIERS_MAX]; /* lookups a tier could not serve */
	uint64_t loads, load_ok, not_found, load_errors;
	uint64_t shared_loads, wait_timeouts;
	uint64_t fills,
	    fills_voided; /* stored, or dropped by an invalidation */
	uint64_t invalidations, evictions, corrupt, tier_errors;
	uint64_t
	    remote_invalidations; /* published by other caches, applied here */
	uint64_t l1_flushes;	  /* the subscription dropped: L1 emptied */
	/* Leases (shared tiers): waits for another process's load, fills a
	 * write refused, and loads run without a lease after a long wait. */
	uint64_t lease_waits, fills_refused, lease_timeouts;
	uint64_t stale_served; /* stale copies served (stale_ms) */
	uint64_t load_time_us_sum;
	uint64_t load_hist[ASIDE_HIST_BUCKETS]; /* per bucket, not cumulative */
	double load_p50_us, load_p99_us;
	int64_t entries; /* in the first (in-process) tier */
	int64_t waiting; /* readers waiting for another's load right now */
	int ntiers;
	const char *tier_names[ASIDE_TIERS_MAX];
	int tier_up[ASIDE_TIERS_MAX]; /* 1 usable, 0 down */
	/* Of tier_errors, those a tier refused at once while it held its
	 * server for down (the Redis breaker open), per tier. */
	uint64_t tier_skipped[ASIDE_TIERS_MAX];
	/* Misses served the L1's expired copy because their load failed or
	 * hung past wait_ms (stale_if_error_ms); counted in misses too. */
	uint64_t stale_on_error;
	/* The gate (aside_cache_gate): reads it answered NOT_FOUND, fills
	 * run, whether it shuts now, and its filter's size. */
	uint64_t gate_rejects, gate_fills;
	int gate_armed;
	size_t gate_bytes;
	/* The loader's breaker (breaker=N): misses whose load it refused
	 * (ASIDE_EUNAVAILABLE), and whether it is open now. */
	uint64_t breaker_refusals;
	int breaker_open;
	/* Reads served an expired copy rather than wait for another
	 * reader's load of the key (stale_while_revalidate_ms): the L1's,
	 * or Redis's while another process holds the lease; counted in the
	 * hits of the tier that held the copy too. */
	uint64_t stale_while_revalidate;
	/* Reads answered ASIDE_NOT_FOUND by a cached absence
	 * (negative_ttl_ms), with no load; counted in the hits of the tier
	 * that held it too. */
	uint64_t negative_hits;
} aside_metrics;

/* Fills *m with a consistent-enough snapshot (counters are read one by one). */
void aside_cache_metrics(aside_cache *c, aside_metrics *m);

/* The q-quantile (0..1) of a histogram in µs, interpolated in its bucket. */
double aside_hist_quantile(const uint64_t hist[ASIDE_HIST_BUCKETS], double q);

/*
 * Renders m in the Prometheus text exposition format, every name starting
 * with prefix (e.g. "aside").  Writes at most cap bytes including the NUL and
 * returns the length the full text needs, like snprintf.
 */
size_t aside_metrics_prometheus(const aside_metrics *m, const char *prefix,
				char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* ASIDE_H */
