"""What every measurement does with processes: pin them, read their first line, stop them."""
import os
import selectors
import signal
import subprocess
import time

SERVER_CPU = 0
CLIENT_CPU = 1


class MeasurementError(RuntimeError):
    pass


def pin(pid, cpu):
    if os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(pid, {cpu})


def pinned_to(cpu):
    """A preexec_fn that pins the child before it execs (taskset -c CPU, without taskset)."""
    return lambda: pin(0, cpu)


def read_line(pipe, timeout):
    """One line from a subprocess pipe, or None at EOF or after `timeout` seconds."""
    chunks = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(pipe, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            byte = os.read(pipe.fileno(), 1)  # one byte at a time: never read past the line
            if not byte:
                return None
            if byte == b"\n":
                return b"".join(chunks).decode(errors="replace")
            chunks.append(byte)


class Child:
    """What a measured process (`proc`, stderr in the file `errlog`) shares:
    is it alive, its last words, and a stop that is polite first."""

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, lines=3):
        self.errlog.seek(0)
        text = self.errlog.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def terminate(self):
        """SIGTERM, then SIGKILL after 5 s; its stdout pipe closed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self
