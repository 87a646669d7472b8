"""Server on PORT for one connection that calls its socket without pause, as a busy
non-blocking app does: reads what the client sends and writes SIZE bytes of
`move_stream.stream(SEED)`, retrying only EAGAIN. Any other error (EPERM from a socket
read in repair mode, say) ends it: prints `error <e>`. Else prints `got <bytes> <sha256>`
once the client closed, then exits."""
import hashlib
import socket
import sys

from move_stream import stream

port, size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen()
print("listening", flush=True)
c, _ = ls.accept()
c.setblocking(False)
h = hashlib.sha256()
n = 0
out = b"".join(stream(seed, size))
sent = 0
try:
    while True:
        try:
            b = c.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        except BlockingIOError:
            pass
        if sent < size:
            try:
                sent += c.send(out[sent : sent + (1 << 14)])
            except BlockingIOError:
                pass
            if sent == size:
                c.shutdown(socket.SHUT_WR)
except OSError as e:
    print("error", e, flush=True)
    sys.exit(1)
print("got", n, h.hexdigest(), flush=True)
c.close()
