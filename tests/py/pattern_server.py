"""A threaded TCP server on PORT: each connection sends a 4-byte id, gets back SIZE
bytes made from that id, and the server closes. SIGINT ends it normally."""
import socketserver
import sys

port, size = int(sys.argv[1]), int(sys.argv[2])


def pattern(cid):
    block = cid.to_bytes(4, "big") * 1024
    return (block * (size // len(block) + 1))[:size]


class Serve(socketserver.BaseRequestHandler):
    def handle(self):
        cid = b""
        while len(cid) < 4:
            got = self.request.recv(4 - len(cid))
            if not got:
                return
            cid += got
        self.request.sendall(pattern(int.from_bytes(cid, "big")))


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer.request_queue_size = 128
with socketserver.ThreadingTCPServer(("0.0.0.0", port), Serve) as srv:
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass  # SIGINT ends it with a normal exit (Python would re-raise SIGINT)
