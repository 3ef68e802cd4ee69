#!/bin/sh
# Installs aside into a temporary prefix, builds tests/install/seed_api.c
# against it with nothing but `pkg-config aside-users`, and runs it.
#   run.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name aside-users.pc -printf '%h')
for f in include/aside/aside.h include/aside/users.h bin/aside; do
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
"$tmp/prefix/bin/aside" version
