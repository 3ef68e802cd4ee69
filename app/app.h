/*
 * app.h -- the subcommands of the aside binary.
 */
#ifndef ASIDE_APP_H
#define ASIDE_APP_H

int app_demo(int argc, char **argv);
int app_serve(int argc, char **argv);
int app_trace(int argc, char **argv);

#endif
