"""Datagrams per second and server CPU per datagram: a UDP echo on one gaio
watcher (a standing read, a quiet write of each view back to its sender)
against a closed-loop client keeping WINDOW datagrams in flight. For the
batching of issue 19 (recvmmsg, sendmmsg): compare two builds of gaio by
running this alternately with each on PYTHONPATH (A/B/A/B), since the
machine's other load moves absolute figures.

    python benchmarks/datagram_micro.py [--engine epoll] [--seconds 3]
        [--size 64] [--window 256] [--cpu-server 0 --cpu-client 1]

Prints one JSON line: datagrams/s, server CPU µs per datagram, and the
server's stats (datagrams per recv and per send system call).
"""
import argparse
import json
import multiprocessing
import os
import resource
import socket
import time


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def server(engine, ready, stop, out, cpu):
    import gaio
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind(("127.0.0.1", 0))
    ready.send(sock.getsockname())
    w = gaio.Watcher(engine=engine)
    w.read(sock, repeat=True)
    n = 0
    write = w.write
    while not stop.poll():
        for res in w.wait_io(timeout=0.05):
            write(sock, res.buffer, address=res.address, quiet=True)
            n += 1
        if n and not out.get("t0"):
            out["t0"], out["cpu0"], out["n0"] = time.monotonic(), cpu_seconds(), n
    out.update(t1=time.monotonic(), cpu1=cpu_seconds(), n1=n, stats=w.stats(), engine=w.engine)
    ready.send(out)
    w.close()


def client(addr, seconds, size, window, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.connect(addr)
    sock.settimeout(0.2)
    payload = b"x" * size
    buf = bytearray(65536)
    for _ in range(window):
        sock.send(payload)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.recv_into(buf)
        except socket.timeout:
            for _ in range(window):  # lost ones (a full buffer): refill the window
                sock.send(payload)
            continue
        sock.send(payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="epoll")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--cpu-server", type=int)
    ap.add_argument("--cpu-client", type=int)
    a = ap.parse_args()
    ctx = multiprocessing.get_context("fork")
    ready_parent, ready_child = ctx.Pipe()
    stop_parent, stop_child = ctx.Pipe()
    srv = ctx.Process(target=server, args=(a.engine, ready_child, stop_child, {}, a.cpu_server))
    srv.start()
    addr = ready_parent.recv()
    client(addr, a.seconds, a.size, a.window, a.cpu_client)
    stop_parent.send(1)
    out = ready_parent.recv()
    srv.join()
    n = out["n1"] - out["n0"]
    secs = out["t1"] - out["t0"]
    st = out["stats"]
    print(json.dumps({
        "engine": out["engine"], "size": a.size, "window": a.window,
        "datagrams_per_s": round(n / secs), "server_cpu_us_per_datagram": round(
            (out["cpu1"] - out["cpu0"]) / n * 1e6, 3),
        "per_recv_call": round(st["datagrams_read"] / max(st.get("datagram_recv_calls", 0), 1), 1),
        "per_send_call": round(st["datagrams_written"] / max(st.get("datagram_send_calls", 0), 1), 1),
        "gaio": os.path.dirname(__import__("gaio").__file__)}))


if __name__ == "__main__":
    main()
