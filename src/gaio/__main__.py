"""Command line: `python -m gaio demo [options]`."""
import argparse
import signal
import sys

from ._watcher import ENGINES


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %d" % value)
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0, got %s" % text)
    return value


def interrupt(signum, frame):
    raise KeyboardInterrupt


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gaio",
                                     description="gaio: proactor-style network I/O.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run an echo server on a Watcher against a client process",
        description="Run an echo server on a gaio Watcher in this process, load it from a "
                    "client process over 127.0.0.1, and print throughput, latency, memory "
                    "per idle connection and thread count.")
    demo.add_argument("--engine", default="auto", choices=("auto",) + ENGINES,
                      help="the server watcher's engine (default: auto)")
    demo.add_argument("--client-engine", default="same", choices=("same", "auto") + ENGINES,
                      help="the client watcher's engine (default: the server's)")
    demo.add_argument("--conns", type=positive_int, default=100,
                      help="connections (default: 100)")
    demo.add_argument("--size", type=positive_int, default=64,
                      help="message size in bytes (default: 64)")
    demo.add_argument("--duration", type=positive_float, default=8.0,
                      help="seconds of load (default: 8)")
    demo.add_argument("--depth", type=positive_int, default=4,
                      help="messages in flight per connection (default: 4)")
    demo.add_argument("--bufsize", type=positive_int, default=65536,
                      help="the server watcher's internal buffer size (default: 65536)")
    demo.add_argument("--traceback", action="store_true",
                      help="show the traceback of an unexpected error")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "demo":
        parser.print_help(sys.stderr)
        return 2
    from .demo import DemoError, run
    # A plain `kill` gets the same clean shutdown as Ctrl-C: the client process
    # is reaped and the server's threads joined.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args)
    except DemoError as exc:
        print("gaio demo: error: %s" % exc, file=sys.stderr)
        return 1
    except Exception as exc:
        if args.traceback:
            raise
        print("gaio demo: error: %r (run with --traceback for details)" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ngaio demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
