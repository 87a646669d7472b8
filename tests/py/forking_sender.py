"""A forking TCP server (socketserver.ForkingTCPServer) on PORT: each child writes
FILE to its client with a 2 MB send buffer, closes and exits at once."""
import socketserver
import sys

port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, "rb").read()


class Send(socketserver.BaseRequestHandler):
    def handle(self):
        import socket

        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 << 20)
        self.request.sendall(data)


socketserver.ForkingTCPServer.allow_reuse_address = True
with socketserver.ForkingTCPServer(("0.0.0.0", port), Send) as srv:
    srv.serve_forever()
