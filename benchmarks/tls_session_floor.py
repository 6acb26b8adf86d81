"""What an idle TLS session costs by itself: the floor under every engine (R31).

    python -m benchmarks.tls_session_floor [N]

R31 makes the session Python's ssl.SSLObject over two ssl.MemoryBIOs. This
holds N of them, server side, each handshaken with a client (in a child
process, so the clients' memory is not counted nor left in this heap as
holes) and one request and answer exchanged, plus the socket it came over,
and prints this process's RSS growth per session. The idle TLS workloads'
bytes per connection (benchmarks/tls.py) cannot go below it.
"""
import gc
import os
import resource
import socket
import ssl
import sys
import time

from . import procstat, tls


def serve(sock, context):
    """One server-side session over `sock`: handshake, one request read, one answer sent."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = context.wrap_bio(incoming, outgoing, server_side=True)
    for step in (session.do_handshake, lambda: session.read(100)):
        while True:
            try:
                step()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
    if outgoing.pending:
        sock.sendall(outgoing.read())
    session.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    sock.sendall(outgoing.read())
    return session, incoming, outgoing, sock


def clients(ends, cafile):
    """The child: a blocking client per socket, in the same order the parent serves them."""
    context = ssl.create_default_context(cafile=cafile)
    held = []
    for sock in ends:
        conn = context.wrap_socket(sock, server_hostname="localhost")
        conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        conn.recv(100)
        held.append(conn)
    time.sleep(3600)  # until the parent kills it


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    tls.raise_fd_limit()
    # Both ends of every pair are open here until the fork.
    n = min(n, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2 - 20)
    pems = tls.pems()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pems["cert"], pems["key"])
    context.set_alpn_protocols(["http/1.1"])
    pairs = [socket.socketpair() for _ in range(n + 1)]
    child = os.fork()
    if child == 0:
        for ours, _ in pairs:
            ours.close()
        clients([theirs for _, theirs in pairs], pems["ca"])
        os._exit(0)
    try:
        for _, theirs in pairs:
            theirs.close()
        held = [serve(pairs[0][0], context)]  # the first pays one-time allocations
        gc.collect()
        before = procstat.rss_bytes(os.getpid())
        held += [serve(ours, context) for ours, _ in pairs[1:]]
        gc.collect()
        grown = procstat.rss_bytes(os.getpid()) - before
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    print("%d idle server-side SSLObjects (2 MemoryBIOs and a socket each, OpenSSL %s): "
          "%.0f bytes each" % (len(held) - 1, ssl.OPENSSL_VERSION.split()[1], grown / n))


if __name__ == "__main__":
    main()
