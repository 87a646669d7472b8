#!/bin/sh
# The demo: two network namespaces joined by a veth pair; a stock nginx in the server
# namespace, first on the kernel's TCP, then under `fastnet run`; a stock client in the
# client namespace. Prints what happened, then tears everything down.
set -eu
cd "$(dirname "$0")/.."
FASTNET=./target/release/fastnet
[ -x "$FASTNET" ] || { echo "demo: $FASTNET missing; run make build" >&2; exit 1; }
WORK=$(mktemp -d /tmp/fastnet-demo.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody
topo=$($FASTNET netns up --owner $$) || exit 1
eval "$topo"
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    $FASTNET netns down "$FASTNET_TAG" || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== topology $FASTNET_TAG: $SERVER_NS ($SERVER_IF $SERVER_IP) <-> $CLIENT_NS ($CLIENT_IF $CLIENT_IP)"
mkdir -p "$WORK/www" "$WORK/tmp"
head -c 1048576 /dev/urandom > "$WORK/www/1m.bin"
echo "hello from the fastnet demo" > "$WORK/www/index.html"
cat > "$WORK/nginx.conf" <<CONF
user nobody nogroup;
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server { listen 8080; root $WORK/www; }
}
CONF
want=$(sha256sum < "$WORK/www/1m.bin" | cut -d' ' -f1)

# Runs one round: $1 = label, the rest = how to start nginx.
round() {
    label=$1
    shift
    "$@" > "$WORK/$label.log" 2>&1 &
    for _ in $(seq 100); do
        ip netns exec "$CLIENT_NS" curl -s -o /dev/null "http://$SERVER_IP:8080/" && break
        sleep 0.1
    done
    echo "== $label: $(ip netns exec "$CLIENT_NS" curl -sS "http://$SERVER_IP:8080/index.html")"
    got=$(ip netns exec "$CLIENT_NS" curl -sS "http://$SERVER_IP:8080/1m.bin" | sha256sum | cut -d' ' -f1)
    if [ "$want" = "$got" ]; then echo "   1 MiB file: sha256 matches"; else echo "   1 MiB file: MISMATCH" >&2; exit 1; fi
    rps=$(ip netns exec "$CLIENT_NS" wrk -t1 -c32 -d5s "http://$SERVER_IP:8080/index.html" | awk '/Requests\/sec/ {print $2}')
    echo "   wrk -t1 -c32 -d5s: $rps requests/s"
    eval "rps_$label=$rps"
    if [ "$label" = fastnet ]; then
        echo "   fastnet stat (the worker drives the fast path):"
        $FASTNET stat | sed 's/^/     /' | grep -E "process|fast path|kernel:|iface.queues|rx.frames|tx.frames|tcp.state|sockets" || true
        echo "   kernel TCP connections on port 8080 in the server namespace: $(ip netns exec "$SERVER_NS" ss -Htn state established '( sport = :8080 )' | wc -l)"
    fi
    kill "$(cat "$WORK/nginx.pid")"
    for _ in $(seq 100); do [ -f "$WORK/nginx.pid" ] || break; sleep 0.1; done
    sleep 0.5
}

round kernel ip netns exec "$SERVER_NS" nginx -c "$WORK/nginx.conf"
round fastnet ip netns exec "$SERVER_NS" "$FASTNET" run --iface "$SERVER_IF" -- nginx -c "$WORK/nginx.conf"

echo "== nginx (1 worker) + wrk -c32, same machine, same run:"
echo "   kernel : $rps_kernel requests/s"
echo "   fastnet: $rps_fastnet requests/s"
awk -v f="$rps_fastnet" -v k="$rps_kernel" 'BEGIN { printf "   ratio fastnet/kernel: %.2f (2 shared cores; see BENCHMARKS.md for pinned runs)\n", f / k }'
echo "== done; tearing down"
