"""R13 for io_uring: refused → EngineUnavailableError with the reason; auto
falls back to epoll. GAIO_URING_DISABLE=1 stands in for a kernel or seccomp
filter that refuses io_uring. Each check runs in a fresh interpreter so no
probe result can be cached between them."""
import os
import subprocess
import sys

import pytest

import gaio

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="io_uring is Linux only")

PROBE = """
import gaio
try:
    w = gaio.Watcher(engine="uring")
except gaio.EngineUnavailableError as exc:
    print("uring: refused:", exc)
else:
    print("uring: ok")
    w.close()
with gaio.Watcher() as w:
    print("auto:", w.engine)
"""


def run_probe(**env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("GAIO_ENGINE", "GAIO_URING_DISABLE")}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, env=full_env)
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def uring_reason():
    return gaio.available_engines()["uring"]


def test_disabled_by_environment_variable_names_the_reason_and_auto_picks_epoll():
    if gaio.available_engines()["epoll"] is not None:
        pytest.skip("epoll unavailable: %s" % gaio.available_engines()["epoll"])
    out = run_probe(GAIO_URING_DISABLE="1")
    assert out["uring"].startswith("refused:")
    assert "GAIO_URING_DISABLE=1" in out["uring"]
    assert out["auto"] == "epoll"


def test_auto_picks_uring_when_the_kernel_allows_it():
    reason = uring_reason()
    if reason is not None:
        pytest.skip("io_uring unavailable here: %s" % reason)
    out = run_probe()
    assert out == {"uring": "ok", "auto": "uring"}


def test_zero_means_not_disabled():
    reason = uring_reason()
    if reason is not None:
        pytest.skip("io_uring unavailable here: %s" % reason)
    assert run_probe(GAIO_URING_DISABLE="0")["uring"] == "ok"


def test_named_engine_refusal_is_never_a_silent_fallback(monkeypatch):
    monkeypatch.setenv("GAIO_URING_DISABLE", "1")
    with pytest.raises(gaio.EngineUnavailableError, match="GAIO_URING_DISABLE"):
        gaio.Watcher(engine="uring")
