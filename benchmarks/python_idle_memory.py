"""Where an idle connection's bytes go on engine="python" (issue 16).

    python benchmarks/python_idle_memory.py [-n 4000] [--top 25] [--rss]

Runs the gaio echo server's loop (benchmarks/servers/gaio_server.py: a
standing accept, a standing read per connection, quiet echoes) in this
process, while a child process opens N connections, makes one 64-byte echo
on each and holds them. Then it prints the tracemalloc difference per
connection, grouped by the line that allocated, before and after the N
connections (the caller's socket objects included, as the benchmark counts
them). With --rss it measures VmRSS growth per connection instead (no
tracemalloc, whose own bookkeeping would be counted).
"""
import argparse
import gc
import os
import select
import socket
import subprocess
import sys
import textwrap
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import gaio  # noqa: E402

_CLIENT = textwrap.dedent("""
    import socket, sys
    port, n = int(sys.argv[1]), int(sys.argv[2])
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(s.recv(64 - got))
        held.append(s)
    print("READY", flush=True)
    sys.stdin.read()
""")


def _rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _serve_until_ready(watcher, client):
    """Serve until `client` says every connection is held."""
    ACCEPT = gaio.Op.ACCEPT
    while not select.select([client.stdout], [], [], 0)[0]:
        for res in watcher.wait_io(0.05):
            if res.op == ACCEPT:
                if res.accepted is not None:
                    res.accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    watcher.read(res.accepted, repeat=True)
            elif res.error is not None:
                watcher.free(res.conn)
            else:
                watcher.write(res.conn, res.buffer, quiet=True)
    client.stdout.readline()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rss", action="store_true", help="VmRSS growth instead")
    opts = parser.parse_args()
    n = opts.n
    watcher = gaio.Watcher(65536, engine="python")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    watcher.accept(listener, repeat=True)
    # warm up: one connection through every path, so the first-use
    # allocations (the internal buffer, code caches) are not counted
    warm = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _serve_until_ready(watcher, warm)
    gc.collect()
    if opts.rss:
        before = _rss()
    else:
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _serve_until_ready(watcher, client)
    watcher.wait_io(0.05)  # one more pass: nothing lingering in the batch
    gc.collect()
    if opts.rss:
        print("n=%d VmRSS growth per connection: %.0f B" % (n, (_rss() - before) / n))
    else:
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before, "lineno")
        total = sum(stat.size_diff for stat in stats)
        print("n=%d traced growth per connection: %.1f B" % (n, total / n))
        for stat in stats[:opts.top]:
            if abs(stat.size_diff) < n:  # under a byte per connection
                continue
            frame = stat.traceback[0]
            print("%8.1f B %7.2f blocks  %s:%d" % (
                stat.size_diff / n, stat.count_diff / n,
                os.path.relpath(frame.filename), frame.lineno))
    for proc in (client, warm):
        proc.stdin.close()
        proc.wait()
    watcher.close()


if __name__ == "__main__":
    main()
