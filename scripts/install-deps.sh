#!/bin/sh
# Installs what the tests, the demo and the benchmarks need, only when missing.
# Serialised with flock so that two `make test` runs at once do not fight over dpkg.
set -eu
need=""
check() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
check nginx nginx
check redis-server redis-server
check redis-cli redis-tools
check redis-benchmark redis-tools
check wrk wrk
check ab apache2-utils
check iperf3 iperf3
check memcached memcached
check memcaslap libmemcached-tools  # the bench's memcached load client
check curl curl
check socat socat
check ethtool ethtool
check ip iproute2
check sockperf sockperf
check nc netcat-openbsd
check tshark tshark
check strace strace
check capsh libcap2-bin
check setsid util-linux
check git git
check perl perl
check ping iputils-ping
# The compatibility matrix (make compat): servers and clients users run.
check dnsmasq dnsmasq-base
check dig bind9-dnsutils
check haproxy haproxy
check lighttpd lighttpd
check apache2 apache2
check ncat ncat
check node nodejs
check psql postgresql-client
check pgbench postgresql-contrib
[ -x /usr/lib/postgresql/15/bin/postgres ] || need="$need postgresql"
check go golang-go
# Static executables (issue 22): musl-static test programs.
check musl-gcc musl-tools
# The exporter test parses /metrics with the Prometheus client's own parser, in the
# system Python (a pyenv `python3` earlier on PATH would not see Debian's module).
/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1 || need="$need python3-prometheus-client"
check man man-db
# The handoff tests drop 1% of the kernel peer's segments (this kernel has no netem).
check nft nftables
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing packages:$need; install them with: sudo apt-get install -y$need" >&2
    exit 1
fi
exec 9>/tmp/fastnet-apt.lock
flock 9
echo "installing:$need"
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
# Debian starts these services on install; the tests start their own instances.
for svc in nginx redis-server memcached haproxy lighttpd apache2 postgresql; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
