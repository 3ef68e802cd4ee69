#!/bin/sh
# Installs aside into a temporary prefix, builds tests/install/seed_api.c
# against it with nothing but `pkg-config aside-users`, and runs it, and
# tests/install/inline_api.c with `pkg-config aside`; then
# links the same program with the static libraries and -flto, and runs it.
#   run.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name aside-users.pc -printf '%h')
for f in include/aside/aside.h include/aside/inline.h include/aside/users.h \
	bin/aside; do
	[ -e "$tmp/prefix/$f" ] || { echo "run.sh: $f not installed" >&2; exit 1; }
done
[ -e "$pc/aside.pc" ] || { echo "run.sh: aside.pc not installed" >&2; exit 1; }
PKG_CONFIG_PATH=$pc
export PKG_CONFIG_PATH
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -Wno-missing-field-initializers \
	-o "$tmp/seed_api" "$src/tests/install/seed_api.c" \
	$(pkg-config --cflags --libs aside-users) -lpthread
"$tmp/seed_api"
# The inline hit (<aside/inline.h>), strictly compiled by each compiler:
# in ISO C alone, and with POSIX's declarations, which give it the clock
# an L1 over Redis is tested against.
for compiler in cc clang; do
	command -v "$compiler" >/dev/null || continue
	for posix in "" -D_POSIX_C_SOURCE=200809L; do
		# shellcheck disable=SC2046,SC2086
		"$compiler" -std=c11 $posix -O2 -Wall -Wextra -Wpedantic \
			-Wcast-qual -Wconversion -Wshadow -Werror \
			-o "$tmp/inline_api" "$src/tests/install/inline_api.c" \
			$(pkg-config --cflags --libs aside) -lpthread
		"$tmp/inline_api"
	done
done
# The same program linked with the static libraries and -flto, which may
# inline the library into it: nothing of aside is loaded at run time.
for a in libaside.a libaside-users.a; do
	[ -e "$pc/../$a" ] || { echo "run.sh: $a not installed" >&2; exit 1; }
done
# shellcheck disable=SC2046
cc -std=c11 -O2 -flto -Wall -Wextra -Werror -Wno-missing-field-initializers \
	-o "$tmp/seed_api_static" "$src/tests/install/seed_api.c" \
	$(pkg-config --cflags aside-users) "$pc/../libaside-users.a" \
	"$pc/../libaside.a" $(pkg-config --libs jansson sqlite3 libpq hiredis) \
	-lpthread
if ldd "$tmp/seed_api_static" | grep -q libaside; then
	echo "run.sh: the static build loads a shared libaside" >&2
	exit 1
fi
"$tmp/seed_api_static"
"$tmp/prefix/bin/aside" version
