"""Under fastnet (started as root): starts the fast path, then gives up CAP_NET_ADMIN
(capset: TCP repair is refused from then on, the fast path goes on), connects to
HOST:PORT, writes FILE, closes and exits."""
import ctypes
import socket
import sys

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
# The fast path starts (with every capability) at the first Internet socket.
c = socket.socket()

CAP_NET_ADMIN = 12


class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


libc = ctypes.CDLL(None, use_errno=True)
hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
caps = (Data * 2)()
if libc.capget(ctypes.byref(hdr), caps) != 0:
    sys.exit("capget: errno %d" % ctypes.get_errno())
for d in caps[:1]:
    d.effective &= ~(1 << CAP_NET_ADMIN)
    d.permitted &= ~(1 << CAP_NET_ADMIN)
if libc.capset(ctypes.byref(hdr), caps) != 0:
    sys.exit("capset: errno %d" % ctypes.get_errno())
c.connect((host, port))
c.sendall(data)
c.close()
