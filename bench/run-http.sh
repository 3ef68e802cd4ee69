#!/bin/bash
# GET /users/{id} on an L1 hit: aside serve against nginx serving the same
# JSON bytes as a static file, on this machine, in one run.
#   bench/run-http.sh BUILD_DIR [SECONDS] [ROUNDS]
# Needs wrk and nginx: scripts/bootstrap bench.
set -euo pipefail
build=${1:-build-rel}
secs=${2:-10}
rounds=${3:-2}
dir=$(mktemp -d /tmp/aside-http-bench.XXXXXX)
chmod 755 "$dir"
cleanup() {
	[ -n "${aside_pid:-}" ] && kill "$aside_pid" 2>/dev/null || true
	[ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
	sleep 0.3
	rm -rf "$dir"
}
trap cleanup EXIT

free_port() { while :; do p=$((20000 + RANDOM % 40000)); (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done; }

aport=$(free_port)
"$build/aside" serve --listen "127.0.0.1:$aport" --db "sqlite:$dir/users.db" >"$dir/aside.out" 2>&1 &
aside_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null && break; sleep 0.1; done
loc=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$aport/users" \
	-H 'Content-Type: application/json' \
	-d '{"name":"Alice Example","email":"alice@example.com"}' | tr -d '\r' | sed -n 's/^Location: //p')
mkdir -p "$dir/www/users"
curl -s "http://127.0.0.1:$aport$loc" >"$dir/www$loc" # also warms L1

nport=$(free_port)
cat >"$dir/nginx.conf" <<CONF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 1024; }
http {
	access_log off;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$nport;
		root $dir/www;
		location / { default_type application/json; }
	}
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$nport$loc" >/dev/null && break; sleep 0.1; done
cmp <(curl -s "http://127.0.0.1:$aport$loc") <(curl -s "http://127.0.0.1:$nport$loc") ||
	{ echo "run-http: the two servers do not serve the same bytes" >&2; exit 1; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs; wrk -t1 -c50 -d${secs}s GET $loc ($(wc -c <"$dir/www$loc") bytes)"
printf '%-8s %12s %10s %10s %10s\n' server 'requests/s' p50 p90 p99
run() { # name port
	wrk -t1 -c50 -d"${secs}s" --latency "http://127.0.0.1:$2$loc" >"$dir/wrk.txt"
	rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
	p50=$(awk '$1=="50%" {print $2}' "$dir/wrk.txt")
	p90=$(awk '$1=="90%" {print $2}' "$dir/wrk.txt")
	p99=$(awk '$1=="99%" {print $2}' "$dir/wrk.txt")
	printf '%-8s %12s %10s %10s %10s\n' "$1" "$rps" "$p50" "$p90" "$p99"
	echo "$1 $rps" >>"$dir/rates"
}
for _ in $(seq "$rounds"); do
	run aside "$aport"
	run nginx "$nport"
done
awk '{s[$1]+=$2; n[$1]++} END {a=s["aside"]/n["aside"]; g=s["nginx"]/n["nginx"];
	printf "mean: aside %.0f/s, nginx %.0f/s, ratio %.2f\n", a, g, a/g}' "$dir/rates"
