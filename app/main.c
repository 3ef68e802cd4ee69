/*
 * main.c -- the aside binary: dispatches to a subcommand.
 */
#include "app.h"

#include <aside/aside.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
    {"serve", app_serve,
     "run the users API over HTTP, with Prometheus metrics"},
    {"bench", app_bench,
     "drive the UserService: no cache, naive cache-aside and aside"},
    {"trace", app_trace,
     "replay key traces through the in-process cache: hit ratios"},
    {"check", app_check,
     "consistency checker: stale reads across processes, aside or naive"},
    {"demo", app_demo,
     "walk through the seed's scenario on the embedded default"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: aside COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "  %-8s %s\n", "version", "print the version");
	fprintf(f, "\n'aside COMMAND --help' describes a command's options.\n");
}

/*
 * glibc gives the free top of a heap back to the kernel once 128 KiB of it
 * is free, and the next allocations fault it back in page by page.  The
 * cache's values live in libaside's own pools, so what is left on the heap
 * comes and goes with each request and each SQLite page, and a heap's top
 * shrank and grew all the time: a miss-heavy `aside bench` took 107,000 to
 * 186,000 page faults in 3 s instead of 8,000, and ran 6 to 12% slower.
 * Up to 4 MiB of free top is kept an arena (1 MiB still churned; 4 MiB
 * did not), which a long-running `aside serve` pays for with a few MB
 * (docs/operations.md).  MALLOC_TRIM_THRESHOLD_ or the
 * glibc.malloc.trim_threshold tunable, if set, has the last word.
 */
static void keep_heap_tops(void)
{
	const char *t = getenv("GLIBC_TUNABLES");
	if (getenv("MALLOC_TRIM_THRESHOLD_") ||
	    (t && strstr(t, "glibc.malloc.trim_threshold")))
		return;
	mallopt(M_TRIM_THRESHOLD, 4 << 20);
}

int main(int argc, char **argv)
{
	keep_heap_tops();
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
	    !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("aside %s\n", ASIDE_VERSION_STRING);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(cmd, commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "aside: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
