"""A kernel TCP peer that reads slowly, so that the sender's queue stays long: reads
one connection at RATE bytes per second through a small receive buffer. At the end
prints `<bytes> <sha256>`, or `RESET after <bytes>` if the connection was reset (exit
status 2); with `rst`, it then closes with a RST (no TIME-WAIT on either side).

    slow_reader.py listen PORT RATE READY [rst]   (touches READY once listening)
    slow_reader.py connect HOST PORT RATE [rst]
"""
import hashlib
import socket
import struct
import sys
import time

mode = sys.argv[1]
if mode == "listen":
    port, rate, ready = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    rst = sys.argv[5:] == ["rst"]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    open(ready, "w").close()
    c, _ = s.accept()
else:
    host, port, rate = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    rst = sys.argv[5:] == ["rst"]
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.connect((host, port))
h = hashlib.sha256()
n = 0
t0 = time.monotonic()
while True:
    try:
        b = c.recv(16384)
    except ConnectionResetError:
        print("RESET after", n, flush=True)
        sys.exit(2)
    if not b:
        break
    h.update(b)
    n += len(b)
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(n, h.hexdigest(), flush=True)
if rst:
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
