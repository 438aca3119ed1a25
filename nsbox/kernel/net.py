"""Network: bring loopback up with one ioctl (no netlink library on this path)."""

import _socket  # not `socket`: that pulls enum and selectors into start-up

from nsbox import _ffi

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40


def loopback_up() -> None:
    req = _ffi.new("struct ifreq_flags *")
    req.ifr_name = b"lo"
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        _ffi.ioctl(sock.fileno(), SIOCGIFFLAGS, req, what="lo, SIOCGIFFLAGS")
        req.ifr_flags |= IFF_UP | IFF_RUNNING
        _ffi.ioctl(sock.fileno(), SIOCSIFFLAGS, req, what="lo, SIOCSIFFLAGS")
    finally:
        sock.close()
