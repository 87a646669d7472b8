"""Client of options_server.py: for each round R (0, 1, 2) waits for the file DIR/go-R,
sends `check`, prints the server's answer line."""
import os
import socket
import sys
import time

host, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = socket.create_connection((host, port))
f = c.makefile("rb")
for r in range(3):
    while not os.path.exists(os.path.join(d, f"go-{r}")):
        time.sleep(0.01)
    c.sendall(b"check\n")
    print(f.readline().decode().strip(), flush=True)
c.close()
