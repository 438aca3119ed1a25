"""seccomp: load a compiled BPF program with seccomp(2). (Being written.)"""


def load_filter(bpf: bytes) -> None:
    raise NotImplementedError
