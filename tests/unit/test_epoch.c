/*
 * test_epoch.c -- the read sections and grace periods of src/core/epoch.c,
 * the primitive that every lock-free read relies on: the L1 frees a value,
 * and the Bloom gate a filter it replaced, only once no reader that might
 * have seen it is still inside its section.  Linked with the static
 * library, whose internal functions the shared one does not export.
 */
#include "../../src/core/internal.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

/* cmocka needs the headers above */
#include <cmocka.h>

/* A reader held inside a read section until told to leave. */
typedef struct held_reader {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool inside, leave;
} held_reader;

static void *hold_section(void *arg)
{
	held_reader *h = arg;
	bool in = aside__read_begin();
	pthread_mutex_lock(&h->lock);
	h->inside = in;
	pthread_cond_broadcast(&h->cond);
	while (!h->leave)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
	if (in)
		aside__read_end();
	return NULL;
}

static void hold_start(held_reader *h, pthread_t *t)
{
	*h = (held_reader){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
			   false, false};
	pthread_create(t, NULL, hold_section, h);
	pthread_mutex_lock(&h->lock);
	while (!h->inside)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

static void hold_end(held_reader *h, pthread_t t)
{
	pthread_mutex_lock(&h->lock);
	h->leave = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(t, NULL);
}

/*
 * A grace period does not end while a reader that began before it is
 * inside its section, however long; it ends when that reader leaves,
 * whatever readers that began after it do.
 */
static void grace_waits_for_readers_inside(void **state)
{
	(void)state;
	held_reader h;
	pthread_t t;
	hold_start(&h, &t);
	uint64_t g = aside__grace_start();
	for (int i = 0; i < 20; i++) {
		assert_false(aside__grace_done(g));
		usleep(1000);
	}
	/* A section begun after the grace period started does not hold it
	 * back: this thread stays inside one while the other leaves. */
	assert_true(aside__read_begin());
	assert_false(aside__grace_done(g));
	hold_end(&h, t);
	assert_true(aside__grace_done(g));
	aside__read_end();
	/* A later grace period waits for no one. */
	assert_true(aside__grace_done(aside__grace_start()));
}

/* Sections nest: the outer one's end is the one that counts. */
static void nested_sections_hold_the_grace(void **state)
{
	(void)state;
	assert_true(aside__read_begin());
	uint64_t g = aside__grace_start();
	assert_true(aside__read_begin());
	aside__read_end();
	/* Still inside the outer section, begun before g. */
	assert_false(aside__grace_done(g));
	aside__read_end();
	assert_true(aside__grace_done(g));
}

/* Two overlapping grace periods end each with its own readers. */
static void grace_periods_end_in_order(void **state)
{
	(void)state;
	held_reader a, b;
	pthread_t ta, tb;
	hold_start(&a, &ta);
	uint64_t g1 = aside__grace_start();
	hold_start(&b, &tb);
	uint64_t g2 = aside__grace_start();
	assert_false(aside__grace_done(g1));
	assert_false(aside__grace_done(g2));
	hold_end(&a, ta);
	assert_true(aside__grace_done(g1)); /* b began after g1 started */
	assert_false(aside__grace_done(g2));
	hold_end(&b, tb);
	assert_true(aside__grace_done(g2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(grace_waits_for_readers_inside),
	    cmocka_unit_test(nested_sections_hold_the_grace),
	    cmocka_unit_test(grace_periods_end_in_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
