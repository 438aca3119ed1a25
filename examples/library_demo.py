"""nsbox from Python: one-off commands, a warm session, threads and asyncio.

Run from a directory that may serve as the writable workspace:
    python examples/library_demo.py
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import nsbox

# One command in a fresh sandbox: read-only host, writable workspace (the current
# directory), private /tmp, no network. Shaped like subprocess.run.
r = nsbox.run(["sh", "-c", "echo hello from $(hostname); id -u"], timeout=30)
print(r.returncode, r.stdout.decode(), end="")

# A timeout kills the whole sandbox, background processes included.
r = nsbox.run(["sh", "-c", "echo working; sleep 60 & sleep 60"], timeout=1)
print("timed out:", r.timed_out, "output so far:", r.stdout)

# Not found / not executable are exit codes, as in a shell; a bad policy raises.
print("missing command ->", nsbox.run(["no-such-tool"]).returncode)
try:
    nsbox.run(["true"], policy=nsbox.Policy(workspace="/no/such/dir"))
except nsbox.PolicyError as err:
    print("policy error:", err)

# A warm session: the sandbox is built once, each command costs a fork + exec.
# Commands share /tmp and the workspace view, like one shell session.
with nsbox.Session(nsbox.Policy(network="none")) as s:
    s.run(["sh", "-c", "echo remembered > /tmp/note"])
    print("session:", s.run(["cat", "/tmp/note"]).stdout.decode(), end="")
    with ThreadPoolExecutor(8) as pool:  # thread-safe
        outs = list(pool.map(lambda i: s.run(["echo", str(i)]).stdout, range(8)))
    print("threads:", b"".join(outs).split())

# Streaming, like subprocess.Popen.
with nsbox.Popen(["sh", "-c", "for i in 1 2 3; do echo line $i; done"],
                 stdout=nsbox.PIPE) as p:
    for line in p.stdout:
        print("streamed:", line.decode(), end="")


# asyncio: no thread per command.
async def main():
    results = await asyncio.gather(*(nsbox.run_async(["echo", str(i)]) for i in range(10)))
    print("async:", [r.stdout.strip().decode() for r in results])

asyncio.run(main())
