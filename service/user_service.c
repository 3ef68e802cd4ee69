/*
 * user_service.c -- the seed's UserService: users read through an
 * aside_cache (single-flight on a miss), written to the repository first
 * and then invalidated, with the seed's metrics.
 *
 * A cached user is its JSON (the bytes shared tiers store, as the seed's
 * SetJSON) with the decoded struct attached, so an L1 hit is a copy of the
 * struct and nothing is parsed.
 *
 * Durable invalidation: over a shared cache (Redis) and a repository with an
 * outbox (ours have one; users.h says what one needs), every change writes
 * an outbox row in its own transaction,
 * and the row is cleared once the invalidation reached the cache.  Rows
 * left by invalidations that failed (Redis down or out of reach) are
 * replayed: before Redis is used again after an outage (the cache's
 * reconnect hook), and by a thread every REPLAY_MS for rows older than
 * that, whichever process wrote them.
 */
#include "codec.h"
#include "repo.h"

#include <aside/inline.h>
#include <aside/users.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_MS 1000
#define REPLAY_BATCH 4096

struct user_service;
static int replay(struct user_service *s, int64_t before_us);
static int replay_all(void *arg);
static void *replayer(void *arg);

struct user_service {
	user_repo db;
	aside_cache *cache;
	aside_loader loader;
	bool outbox; /* durable invalidation: db's outbox is used */
	pthread_t replayer;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping; /* guarded by lock */
};

static int fail(aside_error *err, int code)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = code;
		snprintf(err->message, sizeof(err->message), "%s",
			 aside_strerror(code));
	}
	return code;
}

/* Keeps a repository's own detail, or states the status when it gave none. */
static int repo_status(int rc, aside_error *err)
{
	if (rc < 0 && err && err->code == 0)
		fail(err, rc);
	return rc;
}

/*
 * The digits of x < 10^8, all eight with leading zeros, as byte values 0-9
 * in memory order in a little-endian word: halves, quarters, then single
 * digits, each step dividing every lane at once by a multiply and shift
 * (exact in these ranges: 10486 / 2^20 for 100 below 10^4, 103 / 2^10
 * for 10 below 100).
 */
static inline uint64_t eight_digits(uint32_t x)
{
	uint64_t y = (uint64_t)(x / 10000) | (uint64_t)(x % 10000) << 32;
	uint64_t h = ((y * 10486) >> 20) & 0x0000007f0000007full;
	y = h | (y - h * 100) << 16;
	uint64_t t = ((y * 103) >> 10) & 0x000f000f000f000full;
	return t | (y - t * 10) << 8;
}

typedef uint64_t key_words __attribute__((vector_size(16)));

/* The slow way, for ids of 17 digits or more. */
static size_t long_cache_key(int64_t id, char buf[32])
{
	memcpy(buf, "user:", 5);
	size_t len = 5 + user__put_int(buf + 5, id);
	buf[len] = '\0';
	return len;
}

/*
 * On every read, so built in registers and stored whole: the first 16
 * bytes in one store, the rest in another.  Built in memory a byte or two
 * at a time, the key's hash then loads 8 bytes that span several pending
 * stores, which the CPU cannot forward: the load waits for them all to
 * reach the cache (two thirds of the key's time, in a profile).
 */
size_t user_cache_key(int64_t id, char buf[32])
{
	uint64_t v = id < 0 ? 0 - (uint64_t)id : (uint64_t)id;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ &&    \
    defined(__SIZEOF_INT128__)
	const uint64_t ascii = 0x3030303030303030ull;
	unsigned pre = id < 0 ? 6 : 5; /* "user:" or "user:-" */
	uint64_t prefix = id < 0 ? 0x2d3a72657375ull : 0x3a72657375ull;
	if (v < 100000000) { /* up to 8 digits: 14 bytes, one store */
		uint64_t d = eight_digits((uint32_t)v);
		/* leading zero digits are the low zero bytes */
		unsigned lead = d ? (unsigned)__builtin_ctzll(d) / 8 : 7;
		d = (d | ascii) >> (8 * lead);
		key_words w = {prefix | d << (8 * pre), d >> (64 - 8 * pre)};
		memcpy(buf, &w, 16); /* the NUL is among its zeros */
		return pre + 8 - lead;
	}
	if (v < 10000000000000000ull) { /* up to 16: two stores */
		uint64_t hi = eight_digits((uint32_t)(v / 100000000));
		uint64_t lo = eight_digits((uint32_t)(v % 100000000));
		unsigned lead = (unsigned)__builtin_ctzll(hi) / 8; /* hi > 0 */
		unsigned __int128 d =
		    (unsigned __int128)(lo | ascii) << 64 | (hi | ascii);
		d >>= 8 * lead;
		unsigned __int128 head = prefix | d << (8 * pre);
		uint64_t tail = (uint64_t)(d >> (128 - 8 * pre));
		key_words w = {(uint64_t)head, (uint64_t)(head >> 64)};
		memcpy(buf, &w, 16);
		memcpy(buf + 16, &tail, 8);
		return pre + 16 - lead;
	}
#endif
	return long_cache_key(id, buf);
}

static int64_t key_id(const char *key, size_t klen)
{
	int64_t id = 0;
	for (size_t i = 5; i < klen; i++)
		id = id * 10 + (key[i] - '0');
	return id;
}

static int repo_get(user_service *s, int64_t id, user *u, aside_error *err)
{
	const user_repo_ops *ops = s->db.ops;
	return ops->get_ex ? ops->get_ex(s->db.self, id, u, err)
			   : ops->get(s->db.self, id, u);
}

/*
 * The decoded form attached to a cached user, as small as it can be: a hit
 * reads the value's first cache line (header and key) and this, so every
 * byte here is a byte more of the cache's working set.  Name and email sit
 * back to back, each NUL-terminated; a typical user fits in 64 bytes, the
 * line after the header's.
 */
struct packed_user {
	int64_t id, created_at_us, version;
	uint16_t name_len, email_len;
	char text[]; /* name, NUL, email, NUL */
};

#define PACKED_HEAD offsetof(struct packed_user, text)

static size_t packed_size(const user *u)
{
	return PACKED_HEAD + strnlen(u->name, USER_NAME_MAX) + 1 +
	       strnlen(u->email, USER_EMAIL_MAX) + 1;
}

/* Packs u into p, which has packed_size(u) zeroed bytes. */
static void pack_user(struct packed_user *p, const user *u)
{
	size_t nl = strnlen(u->name, USER_NAME_MAX);
	size_t el = strnlen(u->email, USER_EMAIL_MAX);
	p->id = u->id;
	p->created_at_us = u->created_at_us;
	p->version = u->version;
	p->name_len = (uint16_t)nl;
	p->email_len = (uint16_t)el;
	memcpy(p->text, u->name, nl);
	memcpy(p->text + nl + 1, u->email, el);
}

/* Attaches the packed form: in the value's room when it has one. */
static int attach_user(aside_value *v, const user *u)
{
	size_t room, size = packed_size(u);
	void *p = aside_value_room(v, &room);
	if (p && room >= size) {
		pack_user(p, u);
		aside_value_attach(v, p, NULL, 0);
		return ASIDE_OK;
	}
	if (!(p = calloc(1, size)))
		return ASIDE_ENOMEM;
	pack_user(p, u);
	aside_value_attach(v, p, free, size);
	return ASIDE_OK;
}

static void unpack_user(const struct packed_user *p, user *out)
{
	out->id = p->id;
	out->created_at_us = p->created_at_us;
	out->version = p->version;
	memcpy(out->name, p->text, p->name_len + 1u);
	memcpy(out->email, p->text + p->name_len + 1, p->email_len + 1u);
}

/* aside_loader.load: the user from the repository, as JSON plus struct. */
static int load_user(void *arg, const char *key, size_t klen, aside_value **out,
		     aside_error *err)
{
	user_service *s = arg;
	user u;
	memset(&u, 0, sizeof(u));
	int rc = repo_status(repo_get(s, key_id(key, klen), &u, err), err);
	if (rc != ASIDE_OK)
		return rc;
	char json[USER__JSON_MAX];
	size_t len = user__json_write(&u, json);
	if (!len) /* a row that no write through the service stores */
		return repo__fail(err, ASIDE_EDB,
				  "user %lld in the database: name or email "
				  "not valid UTF-8",
				  (long long)u.id);
	rc = aside_value_new_room(key, klen, json, len, packed_size(&u), out);
	if (rc == ASIDE_OK)
		aside_value_set_version(*out, u.version); /* the fence */
	if (rc == ASIDE_OK && (rc = attach_user(*out, &u)) != ASIDE_OK) {
		aside_value_unref(*out);
		*out = NULL;
	}
	return rc == ASIDE_OK ? rc : fail(err, rc);
}

/* aside_loader.decode: a value from a shared tier must be this user. */
static int decode_user(void *arg, aside_value *v, aside_error *err)
{
	(void)arg;
	size_t len, klen;
	const char *json = aside_value_data(v, &len);
	const char *key = aside_value_key(v, &klen);
	user u;
	int rc = user__from_json(json, len, 0, false, &u, err);
	if (rc != ASIDE_OK)
		return rc;
	if (u.id != key_id(key, klen))
		return fail(err, ASIDE_ECORRUPT);
	if (!u.version)
		u.version = aside_value_version(v);
	return attach_user(v, &u);
}

user_service *user_service_new(user_repo db, aside_cache *cache)
{
	if (!db.ops || !cache)
		return NULL;
	user_service *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->db = db;
	s->cache = cache;
	s->loader = (aside_loader){load_user, decode_user, s};
	/* The seed's related key: every write to a user voids the list. */
	if (aside_cache_add_related(cache, "user", USER_ALL_KEY) != ASIDE_OK) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	/* Durable invalidation matters only where another process can serve
	 * what this one failed to invalidate. */
	if (aside_cache_shared(cache) && (s->outbox = repo__has_outbox(db))) {
		/* Every signal blocked in it: the application's signals
		 * are not this library's thread's to take (libaside's
		 * aside__thread_start does the same, but is internal to
		 * that library). */
		sigset_t all, was;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &was);
		int rc = pthread_create(&s->replayer, NULL, replayer, s);
		pthread_sigmask(SIG_SETMASK, &was, NULL);
		if (rc != 0) {
			s->outbox = false;
		} else {
			aside_cache_on_reconnect(cache, replay_all, s);
			replay(s, 0); /* what a process that died left */
		}
	}
	return s;
}

void user_service_free(user_service *s)
{
	if (!s)
		return;
	if (s->outbox) {
		aside_cache_on_reconnect(s->cache, NULL, NULL);
		pthread_mutex_lock(&s->lock);
		s->stopping = true;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->replayer, NULL);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

struct copy_out {
	user *out;
	bool copied;
};

/* aside_read_fn: runs on the cached value without taking a reference. */
static void copy_user(void *arg, const aside_value *v)
{
	struct copy_out *c = arg;
	const struct packed_user *p = aside_value_obj_inline(v);
	if (p) {
		unpack_user(p, c->out);
		c->copied = true;
	}
}

int user_service_get_ex(user_service *s, int64_t id, user *out,
			aside_error *err)
{
	if (!s || !out)
		return fail(err, ASIDE_EINVAL);
	if (id <= 0)
		return fail(err, ASIDE_EBADID);
	char key[32];
	size_t klen = user_cache_key(id, key);
	struct copy_out c = {out, false};
	/* The hit compiled in here: this library is built against the
	 * same <aside/inline.h> as libaside, and falls back as any program
	 * does if the two ever differ. */
	int rc = aside_cache_read_inline(s->cache, key, klen, &s->loader,
					 copy_user, &c, err);
	if (rc == ASIDE_OK && !c.copied)
		return fail(err, ASIDE_EINTERNAL); /* decode always attaches */
	return rc;
}

struct copy_json {
	char *buf;
	size_t cap, len;
	bool fits;
};

static void copy_json(void *arg, const aside_value *v)
{
	struct copy_json *c = arg;
	const char *data = aside_value_data_inline(v, &c->len);
	c->fits = c->len < c->cap;
	if (c->fits) {
		memcpy(c->buf, data, c->len);
		c->buf[c->len] = '\0';
	}
}

int user_service_get_json(user_service *s, int64_t id, char *buf, size_t cap,
			  size_t *len, aside_error *err)
{
	if (!s || !buf || !len)
		return fail(err, ASIDE_EINVAL);
	if (id <= 0)
		return fail(err, ASIDE_EBADID);
	char key[32];
	size_t klen = user_cache_key(id, key);
	struct copy_json c = {buf, cap, 0, false};
	int rc = aside_cache_read_inline(s->cache, key, klen, &s->loader,
					 copy_json, &c, err);
	if (rc != ASIDE_OK)
		return rc;
	*len = c.len;
	return c.fits ? ASIDE_OK : fail(err, ASIDE_ETOOBIG);
}

int user_service_ping(user_service *s, aside_error *err)
{
	if (!s)
		return fail(err, ASIDE_EINVAL);
	const user_repo_ops *ops = s->db.ops;
	if (ops->ping)
		return repo_status(ops->ping(s->db.self, err), err);
	/* Without a ping, a read of an id that never exists asks the same. */
	user u;
	int rc = ops->get_ex ? ops->get_ex(s->db.self, INT64_MAX, &u, err)
			     : ops->get(s->db.self, INT64_MAX, &u);
	return rc == ASIDE_NOT_FOUND ? ASIDE_OK : repo_status(rc, err);
}

/*
 * After a write: the user's key, and with it the related keys.  With the
 * row's new version (0: unknown), a shared tier keeps a tombstone that
 * refuses fills of older versions: the version fence.
 */
/* late: an outbox row replayed, for a write that completed earlier. */
static int invalidate(user_service *s, int64_t id, int64_t version, bool late)
{
	char key[32];
	size_t klen = user_cache_key(id, key);
	return late ? aside_cache_invalidate_late(s->cache, key, klen, version,
						  NULL)
		    : aside_cache_invalidate_version(s->cache, key, klen,
						     version, NULL);
}

/*
 * Writes a change through the outbox when there is one, then invalidates.
 * The write has committed when this returns ASIDE_OK, whatever happens to
 * the invalidation: one that fails stays in the outbox, to be replayed; a
 * tier that cannot be reached is counted in the cache's metrics.  A write
 * that fails is invalidated too, unless it certainly changed nothing.
 */
static int change(user_service *s, user_repo_change what, user *u,
		  aside_error *err)
{
	const user_repo_ops *ops = s->db.ops;
	int64_t outbox = 0;
	int rc;
	if (s->outbox)
		rc = ops->logged_change(s->db.self, what, u, &outbox, err);
	else if (what == USER_REPO_CREATE)
		rc = ops->create_ex ? ops->create_ex(s->db.self, u, err)
				    : ops->create(s->db.self, u);
	else if (what == USER_REPO_UPDATE)
		rc = ops->update_ex ? ops->update_ex(s->db.self, u, err)
				    : ops->update(s->db.self, u);
	else
		rc = ops->remove_ex ? ops->remove_ex(s->db.self, u->id, err)
				    : ops->remove(s->db.self, u->id);
	/* The version the change made, known only from the outbox's path
	 * (0: a plain invalidation); a deleted row's tombstone outranks its
	 * last version. */
	int64_t fence = 0;
	if (s->outbox && what == USER_REPO_UPDATE)
		fence = u->version;
	else if (s->outbox && what == USER_REPO_REMOVE && u->version)
		fence = u->version + 1;
	if (rc == ASIDE_OK && invalidate(s, u->id, fence, false) == ASIDE_OK &&
	    outbox)
		ops->outbox_done(s->db.self, outbox, NULL);
	/* A write that failed may still have committed: its connection lost
	 * after the database ran it, say.  Then its outbox row would be
	 * replayed a second or two later, and the old row served until then;
	 * an invalidation now costs at most a miss.  Late, because the write
	 * (if there was one) completed before this call learnt of it. */
	if (rc != ASIDE_OK && rc != ASIDE_NOT_FOUND && what != USER_REPO_CREATE)
		invalidate(s, u->id, 0, true);
	return repo_status(rc, err);
}

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int by_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/*
 * Delivers the outbox rows written before before_us (0: all): each user's
 * invalidation again, and the rows cleared once it got through.  Returns
 * ASIDE_OK, or the first error (the rest waits for the next replay).
 */
static int replay(user_service *s, int64_t before_us)
{
	const user_repo_ops *ops = s->db.ops;
	int64_t *rows = malloc(REPLAY_BATCH * sizeof(*rows));
	int64_t *users = malloc(REPLAY_BATCH * sizeof(*users));
	char(*keys)[32] = malloc(REPLAY_BATCH * sizeof(*keys));
	const char **kp = malloc(REPLAY_BATCH * sizeof(*kp));
	size_t *klens = malloc(REPLAY_BATCH * sizeof(*klens));
	int rc = rows && users && keys && kp && klens ? ASIDE_OK : ASIDE_ENOMEM;
	while (rc == ASIDE_OK) {
		int n = 0;
		rc = ops->outbox_pending(s->db.self, before_us, rows, users,
					 REPLAY_BATCH, &n, NULL);
		if (rc != ASIDE_OK)
			break;
		/*
		 * Each user once a batch: every row's write has committed, so
		 * one invalidation covers them all (after an outage a hot row
		 * may have thousands), and the users together, in as few
		 * round trips as the cache allows (after an outage there may
		 * be thousands of them).  The batch's rows are cleared in one
		 * statement once every user's invalidation got through; else
		 * they all wait for the next replay (delivering twice is
		 * harmless).
		 */
		qsort(users, (size_t)n, sizeof(*users), by_id);
		int nkeys = 0;
		for (int i = 0; i < n; i++) {
			if (i > 0 && users[i] == users[i - 1])
				continue;
			klens[nkeys] = user_cache_key(users[i], keys[nkeys]);
			kp[nkeys] = keys[nkeys];
			nkeys++;
		}
		rc = aside_cache_invalidate_late_many(s->cache, kp, klens,
						      (size_t)nkeys, NULL);
		if (rc == ASIDE_OK && n && ops->outbox_done_many)
			ops->outbox_done_many(s->db.self, rows, n, NULL);
		else if (rc == ASIDE_OK)
			for (int i = 0; i < n; i++)
				ops->outbox_done(s->db.self, rows[i], NULL);
		if (n < REPLAY_BATCH)
			break;
	}
	free(rows);
	free(users);
	free(keys);
	free(kp);
	free(klens);
	return rc;
}

/* The cache's reconnect hook: everything owed, before Redis is read. */
static int replay_all(void *arg)
{
	return replay(arg, 0);
}

/* Every REPLAY_MS, what other writers (or this one) could not deliver. */
static void *replayer(void *arg)
{
	user_service *s = arg;
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += REPLAY_MS / 1000;
		until.tv_nsec += (REPLAY_MS % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&s->cond, &s->lock, &until) !=
			ETIMEDOUT ||
		    s->stopping)
			continue;
		pthread_mutex_unlock(&s->lock);
		replay(s, wall_us() - REPLAY_MS * 1000);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int user_service_create_ex(user_service *s, user *u, aside_error *err)
{
	if (!s || !u)
		return fail(err, ASIDE_EINVAL);
	int rc = user_validate(u, err);
	if (rc != ASIDE_OK)
		return rc;
	return change(s, USER_REPO_CREATE, u, err);
}

int user_service_update_ex(user_service *s, const user *u, aside_error *err)
{
	if (!s || !u)
		return fail(err, ASIDE_EINVAL);
	if (u->id <= 0)
		return fail(err, ASIDE_EBADID);
	int rc = user_validate(u, err);
	if (rc != ASIDE_OK)
		return rc;
	user copy = *u;
	return change(s, USER_REPO_UPDATE, &copy, err);
}

int user_service_delete_ex(user_service *s, int64_t id, aside_error *err)
{
	if (!s)
		return fail(err, ASIDE_EINVAL);
	if (id <= 0)
		return fail(err, ASIDE_EBADID);
	user gone = {.id = id};
	return change(s, USER_REPO_REMOVE, &gone, err);
}

/* ---- the gate ---------------------------------------------------------- */

static int gate_add_user(void *arg, int64_t id)
{
	char key[32];
	size_t klen = user_cache_key(id, key);
	return aside_cache_gate_add(arg, key, klen);
}

static int gate_fill_users(void *arg, aside_cache *c, aside_error *err)
{
	user_service *s = arg;
	return s->db.ops->each_id(s->db.self, gate_add_user, c, err);
}

int user_service_gate(user_service *s, uint64_t expected_users,
		      int64_t refill_ms, aside_error *err)
{
	if (!s)
		return fail(err, ASIDE_EINVAL);
	if (!s->db.ops->each_id)
		return repo__fail(err, ASIDE_EINVAL,
				  "the repository cannot list its users "
				  "(no each_id): no gate");
	return aside_cache_gate(s->cache, "user", expected_users, refill_ms,
				gate_fill_users, s, err);
}

/* ---- warming ----------------------------------------------------------- */

/* The n highest ids each_id lists, in whatever order: a min-heap. */
struct newest {
	int64_t *ids;
	size_t n, len;
};

static void sift_down(int64_t *h, size_t len, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < len && h[l] < h[m])
			m = l;
		if (l + 1 < len && h[l + 1] < h[m])
			m = l + 1;
		if (m == i)
			return;
		int64_t t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static int keep_newest(void *arg, int64_t id)
{
	struct newest *w = arg;
	if (w->len < w->n) {
		size_t i = w->len++;
		w->ids[i] = id;
		while (i > 0 && w->ids[(i - 1) / 2] > w->ids[i]) {
			int64_t t = w->ids[i];
			w->ids[i] = w->ids[(i - 1) / 2];
			w->ids[(i - 1) / 2] = t;
			i = (i - 1) / 2;
		}
	} else if (id > w->ids[0]) {
		w->ids[0] = id;
		sift_down(w->ids, w->len, 0);
	}
	return ASIDE_OK;
}

static int newest_first(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x < y) - (x > y);
}

int user_service_warm(user_service *s, size_t max_users, size_t *warmed,
		      aside_error *err)
{
	if (warmed)
		*warmed = 0;
	if (!s || max_users == 0 || max_users > (1u << 30))
		return fail(err, ASIDE_EINVAL);
	if (!s->db.ops->each_id)
		return repo__fail(err, ASIDE_EINVAL,
				  "the repository cannot list its users "
				  "(no each_id): nothing to warm");
	struct newest w = {.ids = malloc(max_users * sizeof(int64_t)),
			   .n = max_users};
	if (!w.ids)
		return fail(err, ASIDE_ENOMEM);
	int rc = s->db.ops->each_id(s->db.self, keep_newest, &w, err);
	size_t n = w.len;
	qsort(w.ids, n, sizeof(int64_t), newest_first);
	for (size_t i = 0; rc == ASIDE_OK && i < n; i++) {
		user u;
		int r = user_service_get_ex(s, w.ids[i], &u, err);
		if (r < 0)
			rc = r;
		else if (warmed && r == ASIDE_OK)
			(*warmed)++;
	}
	free(w.ids);
	return rc;
}

int user_service_get(user_service *s, int64_t id, user *out)
{
	return user_service_get_ex(s, id, out, NULL);
}

int user_service_create(user_service *s, user *u)
{
	return user_service_create_ex(s, u, NULL);
}

int user_service_update(user_service *s, const user *u)
{
	return user_service_update_ex(s, u, NULL);
}

int user_service_delete(user_service *s, int64_t id)
{
	return user_service_delete_ex(s, id, NULL);
}

user_service_metrics user_service_get_metrics(user_service *s)
{
	user_service_metrics r;
	memset(&r, 0, sizeof(r));
	if (!s)
		return r;
	aside_metrics m;
	aside_cache_metrics(s->cache, &m);
	r.cache_hits = m.hits;
	r.cache_misses = m.misses;
	r.db_loads = m.loads;
	r.shared_loads = m.shared_loads;
	r.load_errors = m.load_errors;
	uint64_t reads = m.hits + m.misses;
	r.hit_rate = reads ? (double)m.hits / (double)reads : 0;
	r.miss_rate = reads ? (double)m.misses / (double)reads : 0;
	r.avg_load_time_us =
	    m.loads ? (double)m.load_time_us_sum / (double)m.loads : 0;
	r.cache_size = m.entries;
	return r;
}
