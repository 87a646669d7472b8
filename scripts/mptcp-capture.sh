#!/usr/bin/env bash
# Captures Linux's own MPTCP between two network namespaces this script creates (two
# paths, 10.77.231.0/24 and 10.77.232.0/24) and prints every MPTCP option tshark
# decodes, with its raw bytes. The known-good bytes in stack/src/wire/mptcp.rs and
# stack/src/mptcp/crypto.rs come from such a run. Nothing leaves the namespaces.
#   scripts/mptcp-capture.sh [out.pcapng] [checksum 0|1] [announced port, "" for none]
# Exchanged: a short connection closed with DATA_FIN both ways, then MP_CAPABLE handshake and first data, DSS, ADD_ADDR with port and its echo,
# MP_JOIN (SYN, SYN-ACK, ACK), MP_PRIO, REMOVE_ADDR, and MP_FASTCLOSE / MP_TCPRST when
# the client closes with data unread.
set -euo pipefail
out="${1:-/tmp/mptcp-$$.pcapng}"
csum="${2:-0}"
port="${3-5001}"
tag="mpcap$$"
cli="$tag-c"
srv="$tag-s"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$cli"
ip netns add "$srv"
for i in 1 2; do
    ip link add "c$i$tag" netns "$cli" type veth peer name "s$i$tag" netns "$srv"
    ip -n "$cli" addr add "10.77.23$i.1/24" dev "c$i$tag"
    ip -n "$srv" addr add "10.77.23$i.2/24" dev "s$i$tag"
    ip -n "$cli" link set "c$i$tag" up
    ip -n "$srv" link set "s$i$tag" up
done
for ns in "$cli" "$srv"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q net.mptcp.enabled=1
    ip netns exec "$ns" sysctl -q net.mptcp.checksum_enabled="$csum"
    ip -n "$ns" mptcp limits set subflows 4 add_addr_accepted 4
done
# The server announces its second address (with a port unless told not to): ADD_ADDR.
ip -n "$srv" mptcp endpoint add 10.77.232.2 dev "s2$tag" id 5 ${port:+port "$port"} signal

ip netns exec "$cli" dumpcap -q -i "c1$tag" -i "c2$tag" -w "$out" 2>/dev/null &
pids+=($!)
sleep 1

ip netns exec "$srv" python3 - <<'EOF' &
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5000))
s.listen(2)
# First a short connection closed gracefully both ways: DATA_FIN.
c, _ = s.accept()
while c.recv(4096):
    pass
c.close()
c, _ = s.accept()
got = b""
while len(got) < 1000:
    got += c.recv(4096)
c.sendall(b"s" * 1000)
time.sleep(3)
# Data the client will not read: its close is then a fast close.
c.sendall(b"u" * 20000)
time.sleep(3)
EOF
pids+=($!)
sleep 0.5
ip netns exec "$cli" python3 - <<'EOF' &
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
s.connect(("10.77.231.2", 5000))
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
assert s.recv(10) == b""
s.close()
time.sleep(0.2)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
s.connect(("10.77.231.2", 5000))
s.sendall(b"c" * 1000)
got = b""
while len(got) < 1000:
    got += s.recv(4096)
time.sleep(4.5)
s.close()
time.sleep(1)
EOF
cpid=$!
pids+=($cpid)
sleep 2
# MP_PRIO on the joined subflow, then REMOVE_ADDR of the announced address.
ip -n "$srv" mptcp endpoint change id 5 backup
sleep 1
ip -n "$srv" mptcp endpoint delete id 5
wait "$cpid"
sleep 1
tshark -r "$out" -Y tcp.options.mptcp.subtype -T fields -E separator=' ' -e frame.number -e ip.src \
    -e tcp.srcport -e tcp.flags.str -e tcp.len -e tcp.options.mptcp.subtype -e tcp.options 2>/dev/null
echo "capture: $out"
