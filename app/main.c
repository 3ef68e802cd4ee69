/*
 * main.c -- the aside binary: dispatches to a subcommand.
 */
#include "app.h"

#include <aside/aside.h>
#include <stdio.h>
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

int main(int argc, char **argv)
{
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
