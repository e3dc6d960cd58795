"""Start and stop a real Triton Inference Server on a model repository. Torch-free, stdlib only.

    with Server("repo", grpc_port=8001).start() as srv:     # blocks until the models are ready
        ...                                                  # grpc://127.0.0.1:8001/NAME
    # leaving the block stops it (SIGINT, then SIGKILL), the python-backend stubs with it

The `tritonserver` comes from nvidia-pytriton, which bundles Triton with the python backend only.
Its python-backend stub runs the first `python3` on PATH, and that Python must have numpy < 2
(with numpy 2 every output comes back empty) and onnxruntime; most edgernn environments have
numpy 2, so the server runs from a separate environment made once with `ensure_env`:

    ~/.cache/edgernn/triton-env   (or $EDGERNN_TRITON_ENV, or env=PATH)
      nvidia-pytriton, numpy<2, onnxruntime; edgernn itself is put on the stub's PYTHONPATH

State lives in the server process: a restarted server starts every sequence from nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgernn.core.errors import EdgeRNNError, InputError

REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy<2", "onnxruntime>=1.24,<1.33")


class ServeError(EdgeRNNError):
    """The server could not be prepared, started, or did not become ready."""


def default_env_dir() -> Path:
    return Path(os.environ.get("EDGERNN_TRITON_ENV") or Path.home() / ".cache" / "edgernn" / "triton-env")


@dataclass(frozen=True)
class Env:
    """A Python environment holding nvidia-pytriton: where its tritonserver and libraries are."""
    root: Path      # the virtual environment
    python: Path
    pytriton: Path  # .../site-packages/pytriton

    @property
    def tritonserver(self) -> Path:
        return self.pytriton / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.pytriton / "tritonserver" / "backends"

    @property
    def libs(self) -> Path:
        return self.pytriton.parent / "nvidia_pytriton.libs"


def _python_of(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_env(root=None) -> Env | None:
    """The environment at `root` (default: default_env_dir()) if it holds a usable tritonserver."""
    root = Path(root) if root is not None else default_env_dir()
    sites = sorted((root / "lib").glob("python3*/site-packages/pytriton"))
    if not sites or not _python_of(root).exists():
        return None
    env = Env(root, _python_of(root), sites[-1])
    return env if env.tritonserver.is_file() else None


def ensure_env(root=None, *, create: bool = True, log=None) -> Env:
    """The serving environment, made once (python -m venv + pip install REQUIREMENTS) when missing."""
    root = Path(root) if root is not None else default_env_dir()
    env = find_env(root)
    if env is None:
        if not create:
            raise ServeError(f"no Triton environment at {root}; expected one made by `edgernn serve` "
                             f"(or: python3 -m venv {root} && {root}/bin/pip install {' '.join(REQUIREMENTS)!s})")
        env = _create(root, log)
    _install_stub(env)
    return env


def _create(root: Path, log) -> Env:
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(tmp)], log)
        _run([str(_python_of(tmp)), "-m", "pip", "install", "-q", *REQUIREMENTS], log)
        if root.exists():
            shutil.rmtree(root)
        os.rename(tmp, root)  # a half-made environment is never found: it appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    env = find_env(root)
    if env is None:
        raise ServeError(f"{root}: nvidia-pytriton installed but no tritonserver in it; expected "
                         "pytriton/tritonserver/bin/tritonserver (Linux x86_64 or aarch64 wheels only)")
    return env


def _run(cmd: list, log) -> None:
    if log is not None:
        log(" ".join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise ServeError(f"{' '.join(cmd[:4])} … failed ({r.returncode}): {r.stdout.strip()[-800:]}")


def _install_stub(env: Env) -> None:
    """The python-backend stub built for the environment's Python, where the backend looks for it."""
    dest = env.backends / "python" / "triton_python_backend_stub"
    if dest.exists():
        return
    version = subprocess.run([str(env.python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    src = env.pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not src.is_file():
        raise ServeError(f"nvidia-pytriton has no python-backend stub for Python {version}; expected 3.8-3.13")
    shutil.copy2(src, dest)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM (Triton's clean stop) when the process that started it dies,
    so that a killed `edgernn serve` or test run leaves no server behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One tritonserver process on `repo`, bound to `address` (127.0.0.1 unless told otherwise)."""

    def __init__(self, repo, *, grpc_port: int = 8001, http_port: int = 8000, metrics_port: int = 8002,
                 address: str = "127.0.0.1", log_file=None, env: Env | None = None, log_verbose: int = 0,
                 exit_on_error: bool = False, exit_timeout_s: int = 5, extra_args=()):
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise InputError(f"{self.repo}: no such folder; expected a model repository written by "
                             "`edgernn export --triton DIR`")
        self.grpc_port, self.http_port, self.metrics_port = (p or free_port() for p in (grpc_port, http_port,
                                                                                        metrics_port))
        self.address, self.env = address, env
        self.log_file = Path(log_file) if log_file else self.repo.parent / "tritonserver.log"
        self.log_verbose, self.exit_on_error, self.extra_args = int(log_verbose), exit_on_error, list(extra_args)
        self.exit_timeout_s = int(exit_timeout_s)  # how long a stop waits for live sequences to end
        self.proc: subprocess.Popen | None = None
        self._shim: str | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def command(self) -> list:
        env = self.env or ensure_env()
        return [str(env.tritonserver), f"--model-repository={self.repo.resolve()}",
                f"--backend-directory={env.backends}",
                f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
                f"--http-address={self.address}", f"--http-port={self.http_port}",
                f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", f"--exit-on-error={'true' if self.exit_on_error else 'false'}",
                f"--exit-timeout-secs={self.exit_timeout_s}",
                "--log-info=true", f"--log-verbose={self.log_verbose}",
                *self.extra_args]

    def environment(self) -> dict:
        """The server's environment: the serving Python first on PATH (the stub runs it), its
        libraries on LD_LIBRARY_PATH, and this edgernn (alone, not its environment) on PYTHONPATH."""
        env = self.env or ensure_env()
        out = dict(os.environ)
        out["PATH"] = f"{env.root / 'bin'}{os.pathsep}{out.get('PATH', '')}"
        out["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (out.get("LD_LIBRARY_PATH"), str(env.libs)) if p)
        if self._shim is None:
            self._shim = tempfile.mkdtemp(prefix="edgernn-serve-")
            os.symlink(Path(__file__).resolve().parents[1], Path(self._shim) / "edgernn")
        out["PYTHONPATH"] = out["EDGERNN_SERVE_PATH"] = self._shim  # model.py reads the second
        out.pop("PYTHONHOME", None)
        out.pop("VIRTUAL_ENV", None)
        return out

    def start(self, *, timeout: float = 120, wait: str = "ready") -> "Server":
        """Start the server and wait until every model in the repository is ready (wait="live":
        until the server answers, whether or not its models loaded; see models())."""
        self.env = self.env or ensure_env()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:  # Triton logs to stderr: its crash messages land there too
            self.proc = subprocess.Popen(self.command(), env=self.environment(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.log_file.parent,  # not the caller's folder: nothing found by accident
                                         preexec_fn=_die_with_parent)
        try:
            self._wait_ready(timeout, f"/v2/health/{wait}")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float, path: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeError(f"tritonserver exited ({self.proc.returncode}) while starting; its log "
                                 f"{self.log_file} ends:\n{self.log_tail()}")
            if self._get(path) == 200:
                return
            if path.endswith("/ready") and self._get("/v2/health/live") == 200:
                self._raise_failed()  # live but not ready: the models are loaded or failed by now
            time.sleep(0.1)
        raise ServeError(f"tritonserver not ready after {timeout:g} s; its log {self.log_file} ends:\n"
                         f"{self.log_tail()}")

    def _raise_failed(self) -> None:
        try:
            failed = [m for m in self.models() if m.get("state") != "READY" and (m.get("reason") or "state" not in m)]
        except (urllib.error.URLError, OSError, ValueError):
            return
        if failed:
            why = "; ".join(f"{m['name']}: {m.get('reason') or 'not loaded (see the log)'}" for m in failed)
            raise ServeError(f"the server started but {len(failed)} model(s) failed to load: {why} "
                             f"(log: {self.log_file})")

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return None

    def model_ready(self, name: str) -> bool:
        return self._get(f"/v2/models/{name}/ready") == 200

    def models(self) -> list:
        """The repository index: [{"name", "version", "state", "reason"}, ...] (reason: why it failed)."""
        req = urllib.request.Request(self.http_url + "/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, timeout: float | None = None) -> int | None:
        """SIGINT (Triton unloads its models and exits), then SIGKILL to the whole process group
        (the python-backend stubs included) if it has not gone after `timeout` seconds."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            code = self._signal_and_wait(proc, self.exit_timeout_s + 10 if timeout is None else timeout)
        if self._shim is not None:
            shutil.rmtree(self._shim, ignore_errors=True)
            self._shim = None
        return code

    @staticmethod
    def _signal_and_wait(proc, timeout: float):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the server alone: it unloads the models, which ends the stubs
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        try:  # the stubs are children of the server; whatever is left of the group goes
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if code is None:
            code = proc.wait(timeout=5)
        return code

    def __enter__(self):
        return self if self.running else self.start()

    def __exit__(self, *exc):
        self.stop()
