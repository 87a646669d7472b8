"""Kernel client of move_server.py: sends SIZE bytes of stream(SEED+1) at RATE bytes/s
while reading (at most RATE bytes/s) what the server sends; prints
`sent-sha <sha> got <bytes> <sha> want <sha>`."""
import hashlib
import socket
import sys
import threading
import time

from move_stream import stream

host, port, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rate = float(sys.argv[5])

c = socket.create_connection((host, port))
sent_sha = hashlib.sha256()


def send():
    t0 = time.monotonic()
    n = 0
    for part in stream(seed + 1, size):
        for k in range(0, len(part), 1 << 16):
            piece = part[k : k + (1 << 16)]
            c.sendall(piece)
            sent_sha.update(piece)
            n += len(piece)
            ahead = n / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    c.shutdown(socket.SHUT_WR)


t = threading.Thread(target=send)
t.start()
h = hashlib.sha256()
n = 0
t0 = time.monotonic()
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
t.join()
want = hashlib.sha256()
for part in stream(seed, size):
    want.update(part)
print("sent-sha", sent_sha.hexdigest(), "got", n, h.hexdigest(), "want", want.hexdigest(), flush=True)
