"""One connection on PORT: sets socket options the stack's TCP state does not hold,
then answers each line `check` with what getsockopt says of them (the test moves the
connection between the stack and the kernel in between)."""
import select
import socket
import struct
import sys

S, T = socket.SOL_SOCKET, socket.IPPROTO_TCP
s = socket.socket()
s.setsockopt(S, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
# What a kernel socket keeps of the timeouts (Linux rounds them up to its tick).
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
u.setsockopt(S, socket.SO_RCVTIMEO, struct.pack("ll", 2, 500000))
u.setsockopt(S, socket.SO_SNDTIMEO, struct.pack("ll", 1, 250000))
print(
    f"kernel keeps rcvtimeo={struct.unpack('ll', u.getsockopt(S, socket.SO_RCVTIMEO, 16))} "
    f"sndtimeo={struct.unpack('ll', u.getsockopt(S, socket.SO_SNDTIMEO, 16))}",
    flush=True,
)
c, _ = s.accept()
c.setsockopt(S, socket.SO_RCVTIMEO, struct.pack("ll", 2, 500000))
c.setsockopt(S, socket.SO_SNDTIMEO, struct.pack("ll", 1, 250000))
c.setsockopt(S, socket.SO_KEEPALIVE, 1)
c.setsockopt(T, socket.TCP_KEEPIDLE, 30)
c.setsockopt(T, socket.TCP_KEEPINTVL, 7)
c.setsockopt(T, socket.TCP_KEEPCNT, 4)
c.setsockopt(T, socket.TCP_USER_TIMEOUT, 12000)
c.setsockopt(S, socket.SO_LINGER, struct.pack("ii", 1, 9))
c.setsockopt(T, socket.TCP_NODELAY, 1)


def report():
    rcv = struct.unpack("ll", c.getsockopt(S, socket.SO_RCVTIMEO, 16))
    snd = struct.unpack("ll", c.getsockopt(S, socket.SO_SNDTIMEO, 16))
    linger = struct.unpack("ii", c.getsockopt(S, socket.SO_LINGER, 8))
    return (
        f"rcvtimeo={rcv} sndtimeo={snd} keepalive={c.getsockopt(S, socket.SO_KEEPALIVE)} "
        f"idle={c.getsockopt(T, socket.TCP_KEEPIDLE)} intvl={c.getsockopt(T, socket.TCP_KEEPINTVL)} "
        f"cnt={c.getsockopt(T, socket.TCP_KEEPCNT)} user_timeout={c.getsockopt(T, socket.TCP_USER_TIMEOUT)} "
        f"linger={linger} nodelay={c.getsockopt(T, socket.TCP_NODELAY)}"
    )


buf = b""
# An epoll wait, not a blocking recv (SO_RCVTIMEO would end it between moves, and a
# connection a thread waits in does not move).
ep = select.epoll()
ep.register(c.fileno(), select.EPOLLIN)
while True:
    ep.poll()
    d = c.recv(4096)
    if not d:
        break
    buf += d
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        c.sendall((report() + "\n").encode())
