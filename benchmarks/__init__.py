"""gaio's benchmark harness: `python -m benchmarks` from the repository root.

See benchmarks/README.md. The harness measures every gaio engine that runs
here against the servers a Python developer would use instead (asyncio,
uvloop, trio, gevent, threads, selectors) and a C epoll server as the
ceiling, in one run, with a native load generator (loadgen.c).
"""
