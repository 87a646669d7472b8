"""N concurrent clients of pattern_server.py at HOST:PORT, connecting at once and all
connected before any asks: each checks its SIZE bytes. Prints `ok N` or the first
failure (exit 1)."""
import socket
import sys
import threading

host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
failures = []
everyone_connected = threading.Barrier(n)


def run(i):
    try:
        c = socket.socket()
        c.settimeout(30)
        c.connect((host, port))
        everyone_connected.wait(60)
        block = i.to_bytes(4, "big") * 1024
        want = (block * (size // len(block) + 1))[:size]
        c.sendall(i.to_bytes(4, "big"))
        got = bytearray()
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += b
        if got != want:
            failures.append("client %d: %d bytes, %s" % (i, len(got), "wrong" if len(got) == size else "short"))
    except Exception as e:
        failures.append("client %d: %r" % (i, e))


threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failures:
    print(failures[0], "and", len(failures) - 1, "more")
    sys.exit(1)
print("ok", n)
