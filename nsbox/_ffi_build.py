"""Declarations for nsbox's libc binding (cffi, out-of-line ABI mode: no compiler).

`python -m nsbox._ffi_build` regenerates nsbox/_libc.py, which imports without
parsing C at run time (cffi's cdef parser costs ~30 ms per start).
"""

import os

import cffi

CDEF = """
int unshare(int flags);
int setns(int fd, int nstype);
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int sethostname(const char *name, size_t len);
int prctl(int option, unsigned long arg2, unsigned long arg3,
          unsigned long arg4, unsigned long arg5);
int ioctl(int fd, unsigned long request, ...);
long syscall(long number, ...);

/* sys/uio.h: the denial supervisor reads a blocked call's path argument */
struct iovec {
    void *iov_base;
    size_t iov_len;
};
ssize_t process_vm_readv(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                         const struct iovec *remote_iov, unsigned long riovcnt,
                         unsigned long flags);

/* linux/mount.h */
struct mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

/* linux/openat2.h */
struct open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

/* linux/landlock.h */
struct landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
struct landlock_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

/* linux/filter.h */
struct sock_filter {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};
struct sock_fprog {
    unsigned short len;
    struct sock_filter *filter;
};

/* sys/resource.h */
struct rlimit {
    unsigned long rlim_cur;
    unsigned long rlim_max;
};
int getrlimit(int resource, struct rlimit *rlim);
int setrlimit(int resource, const struct rlimit *rlim);

/* linux/capability.h */
struct cap_header {
    uint32_t version;
    int pid;
};
struct cap_data {
    uint32_t effective;
    uint32_t permitted;
    uint32_t inheritable;
};

/* net/if.h: struct ifreq, only the flags member of the union */
struct ifreq_flags {
    char ifr_name[16];
    short ifr_flags;
    char pad[22];
};
"""

# struct landlock_path_beneath_attr is __attribute__((packed)) in the uapi header.
PACKED_CDEF = """
struct landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
};
"""


def build_ffi() -> cffi.FFI:
    ffibuilder = cffi.FFI()
    ffibuilder.set_source("nsbox._libc", None)
    ffibuilder.cdef(CDEF)
    ffibuilder.cdef(PACKED_CDEF, packed=True)
    return ffibuilder


def generated_source() -> str:
    """The text of nsbox/_libc.py as cffi emits it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "_libc.py")
        build_ffi().emit_python_code(path)
        with open(path) as f:
            return f.read()


if __name__ == "__main__":
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_libc.py")
    with open(target, "w") as f:
        f.write(generated_source())
    print(f"wrote {target}")
