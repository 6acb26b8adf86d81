"""The setup printed beside the numbers: machine, kernel, interpreter, library versions."""
import os
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("gaio", "uvloop", "httptools", "trio", "gevent", "matplotlib")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compiler_version():
    try:
        out = subprocess.run([os.environ.get("CC", "cc"), "--version"],
                             capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average():
    """The 1-minute load average: above ~0.5 before a run, something else is busy."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def versions():
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe():
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": platform.system(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cc": compiler_version(),
        "packages": versions(),
        "load_average_at_start": load_average(),
    }
