"""One process talking to itself over loopback, for tests/tests/loopback.rs.

Usage: loopback_app.py [OTHER_PORT [OWN_ADDR]]
- TCP over 127.0.0.1 through a wildcard listener: 8 MB one way, sha256 back;
- TCP to a listener bound to 127.0.0.2, 1 MB echoed back;
- UDP between two sockets: 100 datagrams of varied size, each checked;
- OTHER_PORT: a port another (plain) process listens on at 127.0.0.1: its greeting
  is read (the connection must go to the kernel, since no socket of ours has it);
- OWN_ADDR: the fast-path interface's address: a connection to it stays in-process.
Prints "ok <step>" per step; any failure raises.
"""
import hashlib
import os
import socket
import sys
import threading


def serve_sha(listener, n):
    c, _ = listener.accept()
    h, got = hashlib.sha256(), 0
    while got < n:
        b = c.recv(1 << 16)
        assert b, "eof before all data"
        h.update(b)
        got += len(b)
    c.sendall(h.digest())
    c.close()


def tcp_sha(dst, listen_on, n):
    l = socket.socket()
    l.bind((listen_on, 0))
    l.listen(8)
    port = l.getsockname()[1]
    data = os.urandom(n)
    t = threading.Thread(target=serve_sha, args=(l, n))
    t.start()
    c = socket.create_connection((dst, port))
    c.sendall(data)
    assert c.recv(64) == hashlib.sha256(data).digest(), "digest differs"
    t.join()
    c.close()
    l.close()


def echo(listener):
    c, _ = listener.accept()
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        c.sendall(b)
    c.close()


def tcp_echo(dst, n):
    l = socket.socket()
    l.bind((dst, 0))
    l.listen(1)
    t = threading.Thread(target=echo, args=(l,))
    t.start()
    c = socket.create_connection(l.getsockname())
    data = os.urandom(n)
    back = bytearray()
    sender = threading.Thread(target=c.sendall, args=(data,))
    sender.start()
    while len(back) < n:
        b = c.recv(1 << 16)
        assert b, "eof early"
        back += b
    sender.join()
    assert bytes(back) == data
    c.close()
    t.join()
    l.close()


def udp():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(100):
        msg = bytes([i]) * (1 + i * 601)
        b.sendto(msg, a.getsockname())
        got, frm = a.recvfrom(65536)
        assert got == msg, f"datagram {i}"
        a.sendto(got[:10], frm)
        assert b.recv(100) == msg[:10]


def other_process(port):
    c = socket.create_connection(("127.0.0.1", port))
    got = b""
    while not got.endswith(b"\n"):
        b = c.recv(100)
        assert b, "no greeting"
        got += b
    assert got == b"hello from the kernel side\n", got
    c.close()


tcp_sha("127.0.0.1", "0.0.0.0", 8 << 20)
print("ok tcp 127.0.0.1 via wildcard listener", flush=True)
tcp_echo("127.0.0.2", 1 << 20)
print("ok tcp 127.0.0.2 echo", flush=True)
udp()
print("ok udp", flush=True)
if len(sys.argv) > 1:
    other_process(int(sys.argv[1]))
    print("ok other process's listener via the kernel", flush=True)
if len(sys.argv) > 2:
    tcp_sha(sys.argv[2], "0.0.0.0", 1 << 20)
    print("ok tcp to own address", flush=True)
