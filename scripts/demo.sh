#!/bin/sh
# Brings up the two-namespace topology, runs a stock nginx in the server namespace and
# a stock client in the client namespace, prints what happened, and tears down.
set -eu
cd "$(dirname "$0")/.."
FASTNET=./target/release/fastnet
WORK=$(mktemp -d /tmp/fastnet-demo.XXXXXX)
chmod 755 "$WORK"  # nginx workers run as www-data
[ -x "$FASTNET" ] || { echo "demo: $FASTNET missing; run make build" >&2; exit 1; }
topo=$($FASTNET netns up --owner $$) || exit 1
eval "$topo"
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    $FASTNET netns down "$FASTNET_TAG" || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== topology $FASTNET_TAG: $SERVER_NS ($SERVER_IF $SERVER_IP) <-> $CLIENT_NS ($CLIENT_IF $CLIENT_IP)"
mkdir -p "$WORK/www"
head -c 1048576 /dev/urandom > "$WORK/www/1m.bin"
echo "hello from fastnet demo" > "$WORK/www/index.html"
cat > "$WORK/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen $SERVER_IP:8080;
        root $WORK/www;
    }
}
CONF
ip netns exec "$SERVER_NS" nginx -c "$WORK/nginx.conf" &
for _ in $(seq 50); do
    ip netns exec "$CLIENT_NS" curl -s -o /dev/null "http://$SERVER_IP:8080/" && break
    sleep 0.1
done
echo "== server: stock nginx (kernel TCP; the shim is not built yet)"
echo "== client: curl from $CLIENT_NS"
ip netns exec "$CLIENT_NS" curl -sS "http://$SERVER_IP:8080/index.html"
want=$(sha256sum < "$WORK/www/1m.bin" | cut -d' ' -f1)
got=$(ip netns exec "$CLIENT_NS" curl -sS "http://$SERVER_IP:8080/1m.bin" | sha256sum | cut -d' ' -f1)
if [ "$want" = "$got" ]; then echo "1 MiB file: sha256 matches ($got)"; else echo "1 MiB file: MISMATCH" >&2; exit 1; fi
if command -v wrk >/dev/null; then
    echo "== wrk -t1 -c32 -d3s (kernel <-> kernel)"
    ip netns exec "$CLIENT_NS" wrk -t1 -c32 -d3s "http://$SERVER_IP:8080/index.html" | grep -E 'Requests/sec|Transfer/sec|requests in'
fi
echo "== done; tearing down"
