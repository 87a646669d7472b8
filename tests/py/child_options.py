"""A forking server on PORT whose child, before it uses the connection it inherited in
any other way, sets it nonblocking with fcntl and sets SO_SNDBUF; it answers with what
it saw: `EAGAIN <sndbuf>` when a recv with nothing to read returned EAGAIN at once."""
import fcntl
import os
import socket
import sys

port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(8)
while True:
    conn, _ = srv.accept()
    if os.fork() == 0:
        srv.close()
        fd = conn.fileno()
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        nonblocking = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK != 0
        try:
            os.read(fd, 100)
            seen = "DATA"
        except BlockingIOError:
            seen = "EAGAIN"
        sndbuf = conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        os.write(fd, ("%s %d %s\n" % (seen, sndbuf, nonblocking)).encode())
        conn.close()
        os._exit(0)
    conn.close()
