/*
 * status.c -- the status table (codes, names, messages) and aside_error.
 */
#include "internal.h"

#include <stdio.h>

const char *aside_strerror(int status)
{
	switch (status) {
#define ASIDE__MSG(name, value, msg)                                           \
	case (value):                                                          \
		return msg;
		ASIDE_STATUS_MAP(ASIDE__MSG)
#undef ASIDE__MSG
	}
	return "unknown status";
}

const char *aside_status_name(int status)
{
	switch (status) {
#define ASIDE__NAME(name, value, msg)                                          \
	case (value):                                                          \
		return "ASIDE_" #name;
		ASIDE_STATUS_MAP(ASIDE__NAME)
#undef ASIDE__NAME
	}
	return "ASIDE_UNKNOWN";
}

void aside_error_clear(aside_error *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}

void aside__error_set(aside_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return;
	memset(err, 0, sizeof(*err));
	err->code = code;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	} else {
		snprintf(err->message, sizeof(err->message), "%s",
			 aside_strerror(code));
	}
}

int aside__fail(aside_error *err, int code, const char *fmt, ...)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}
