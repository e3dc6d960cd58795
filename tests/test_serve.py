"""A real Triton Inference Server (nvidia-pytriton's tritonserver, python backend) serving the
repository `edgernn export --triton DIR --triton-backend python` writes: outputs equal local
streaming, states freed at END and after the idle timeout, clients independent of each other.

The server runs from its own environment (numpy < 2; edgernn.serve.server.ensure_env), made once
and cached; these tests skip, with the reason, only where that environment cannot be installed.
One server serves the whole module."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, export_tiny, run_cli

pytest.importorskip("onnx", reason="the Triton repository is written with the onnx package")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="the client needs tritonclient and grpcio: "
                                 "pip install -e '.[dev]'")

from edgernn.runtime import Runtime  # noqa: E402
from edgernn.serve import server as server_mod  # noqa: E402
from edgernn.serve import triton  # noqa: E402
from edgernn.serve.client import Remote, RemoteError  # noqa: E402

IDLE_S = 1.0  # the "short" model's idle timeout
KWS = ROOT / "models" / "kws.onnx"


@pytest.fixture(scope="module")
def env():
    try:
        return server_mod.ensure_env()
    except server_mod.ServeError as e:
        pytest.skip(f"the Triton serving environment cannot be installed here: {e}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    _, _, lstm = export_tiny(d, "lstm2", 0, cell="lstm", layers=2)
    _, _, gru = export_tiny(d, "short", 1, cell="gru")
    triton.write_repository(lstm, d / "repo", backend="python")
    triton.write_repository(gru, d / "repo", backend="python", idle_timeout_s=IDLE_S)
    triton.write_repository(KWS, d / "repo", backend="python")  # a classifier with a log-mel front end
    return d, {"lstm2": Runtime(lstm), "short": Runtime(gru)}


@pytest.fixture(scope="module")
def srv(env, models):
    d, _ = models
    s = server_mod.Server(d / "repo", grpc_port=0, http_port=0, metrics_port=0, log_file=d / "triton.log", env=env)
    s.start(timeout=120)
    yield s
    pgid = s.proc.pid if s.proc else None
    s.stop()
    if pgid is not None:  # the server and its python-backend stubs are all gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def _remote(srv, name):
    return Remote(srv.grpc_url, name, timeout=30)


def _metric(srv, name: str, model: str, event: str | None = None) -> float:
    labels = f'event="{event}",model="{model}"' if event else f'model="{model}"'
    m = re.search(rf"^{name}{{{re.escape(labels)}}} (\S+)$", srv.metrics(), re.M)
    return float(m.group(1)) if m else float("nan")


def _frames(seed, n, t, f=3):
    return np.random.default_rng(seed).standard_normal((n, t, f)).astype(np.float32)


def _local(rt, x):
    return np.stack([rt.stream().feed(xi) for xi in x])


def _run(remote, x, *, end=True):
    """All sequences of x (N, T, F) stepped together, step by step; returns (N, T, outputs)."""
    ids = [remote.new_id() for _ in range(len(x))]
    out = np.zeros(x.shape[:2] + (2,), np.float32)
    for t in range(x.shape[1]):
        got = remote.step({ids[i]: x[i, t] for i in range(len(x))}, end=set(ids) if end and t == x.shape[1] - 1 else ())
        for i, sid in enumerate(ids):
            assert not isinstance(got[sid], Exception), got[sid]
            out[i, t] = got[sid]
    return out, ids


def test_32_sequences_x_200_steps_equal_local_streams_in_batched_calls(srv, models):
    _, rts = models
    x = _frames(0, 32, 200)
    with _remote(srv, "lstm2") as r:
        stats0 = r.client.get_inference_statistics("lstm2").model_stats[0]
        got, _ = _run(r, x)
        stats = r.client.get_inference_statistics("lstm2").model_stats[0]
    np.testing.assert_allclose(got, _local(rts["lstm2"], x), atol=1e-5, rtol=0)
    inferences = stats.inference_count - stats0.inference_count
    calls = stats.execution_count - stats0.execution_count
    assert inferences == 32 * 200 and calls < inferences / 4  # the sequences shared model calls
    assert _metric(srv, "edgernn_live_sequences", "lstm2") == 0  # every one ended: no state left


def test_stream_cli_over_grpc_prints_the_lines_of_local_streaming(srv, models, tmp_path):
    d, _ = models
    frames = tmp_path / "frames.csv"
    np.savetxt(frames, _frames(1, 1, 30)[0], delimiter=",")
    local = run_cli("stream", "--model", d / "lstm2.onnx", "--input", frames, torch_free=True)
    remote = run_cli("stream", "--model", f"grpc://{srv.grpc_url}/lstm2", "--input", frames, torch_free=True)
    assert local.returncode == remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and len(remote.stdout.splitlines()) == 30
    chunked = run_cli("stream", "--model", f"grpc://{srv.grpc_url}/lstm2", "--input", frames, "--chunk", "7",
                      torch_free=True)
    assert chunked.stdout == local.stdout
    bad = run_cli("stream", "--model", f"grpc://{srv.grpc_url}/nosuch", "--input", frames, torch_free=True)
    assert bad.returncode == 2 and "no such model" in bad.stderr and "lstm2" in bad.stderr


def test_stream_cli_over_grpc_a_wav_file_through_the_models_front_end(srv):
    wav = ROOT / "models" / "samples" / "yes.wav"
    local = run_cli("stream", "--model", KWS, "--input", wav, torch_free=True)
    remote = run_cli("stream", "--model", f"grpc://{srv.grpc_url}/kws", "--input", wav, torch_free=True)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and '"label": "yes"' in remote.stdout.splitlines()[-1]
    refused = run_cli("stream", "--model", f"grpc://{srv.grpc_url}/kws", "--input", wav, "--events", torch_free=True)
    assert refused.returncode == 2 and "--events needs the model file" in refused.stderr


def test_plain_tritonclient_example_prints_the_lines_of_local_streaming(srv, models, tmp_path):
    d, _ = models
    x = _frames(7, 1, 9)[0]
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "triton_client.py"), f"grpc://{srv.grpc_url}/lstm2",
                        str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["y"] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, models[1]["lstm2"].stream().feed(x), atol=1e-6)


def test_restart_of_a_sequence_starts_it_from_zero(srv, models):
    _, rts = models
    x = _frames(2, 1, 12)[0]
    with _remote(srv, "lstm2") as r:
        sid = r.new_id()
        for t in range(5):
            r.step({sid: x[t]})
        r._started.discard(sid)  # the client starts the same sequence id again
        got = np.stack([r.step({sid: x[5 + t]}, end={sid} if t == 6 else ())[sid] for t in range(7)])
    np.testing.assert_allclose(got, rts["lstm2"].stream().feed(x[5:]), atol=1e-5)


def test_idle_sequences_leave_no_state_behind(srv, models):
    d, _ = models
    before = _metric(srv, "edgernn_sequences_total", "short", "evicted")
    with _remote(srv, "short") as r:
        _, ids = _run(r, _frames(3, 5, 3), end=False)
        assert _metric(srv, "edgernn_live_sequences", "short") == 5
        time.sleep(IDLE_S + 1.0)  # past the idle timeout and the model's next sweep
        late = r.step({ids[0]: np.zeros(3, np.float32)})[ids[0]]  # idled out: it must start again
        assert isinstance(late, RemoteError) and "START" in str(late).upper()
        fresh = r.new_id()  # the metrics are reported with the model's next call
        assert not isinstance(r.step({fresh: np.zeros(3, np.float32)}, end={fresh})[fresh], Exception)
        assert _metric(srv, "edgernn_live_sequences", "short") == 0
        assert _metric(srv, "edgernn_sequences_total", "short", "evicted") == before + 5
    assert "dropped 5 idle sequence state(s)" in (d / "triton.log").read_text()


_KILLED_CLIENT = """
import sys, numpy as np
from edgernn.serve.client import Remote
r = Remote(sys.argv[1], "short")
ids = [r.new_id() for _ in range(4)]
for t in range(10 ** 6):
    r.step({i: np.full(3, 0.1, np.float32) for i in ids})
    if t == 3:
        print("streaming", flush=True)
"""


def test_a_client_killed_mid_sequence_does_not_disturb_the_others(srv, models):
    _, rts = models
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    victim = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, srv.grpc_url], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert victim.stdout.readline().strip() == "streaming"
        x = _frames(4, 8, 60)
        with _remote(srv, "short") as r:
            ids = [r.new_id() for _ in range(8)]
            got = np.zeros((8, 60, 2), np.float32)
            for t in range(60):
                if t == 20:
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(timeout=10)
                out = r.step({ids[i]: x[i, t] for i in range(8)}, end=set(ids) if t == 59 else ())
                got[:, t] = [out[i] for i in ids]
        np.testing.assert_allclose(got, _local(rts["short"], x), atol=1e-5)
        time.sleep(IDLE_S + 1.0)  # the killed client's 4 states idle out
        with _remote(srv, "short") as r:
            fresh = r.new_id()
            r.step({fresh: np.zeros(3, np.float32)}, end={fresh})
        assert _metric(srv, "edgernn_live_sequences", "short") == 0
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=10)


def test_a_bad_frame_gets_an_error_for_its_sequence_alone(srv, models):
    _, rts = models
    x = _frames(5, 4, 6)
    with _remote(srv, "lstm2") as r:
        ids = [r.new_id() for _ in range(4)]
        got = {i: [] for i in ids}
        for t in range(6):
            frames = {ids[i]: x[i, t] for i in range(4)}
            if t == 2:
                frames[ids[1]] = np.array([np.nan, 0, 0], np.float32)
            out = r.step(frames, end=set(ids) if t == 5 else ())
            for sid in ids:
                if t == 2 and sid == ids[1]:
                    assert isinstance(out[sid], RemoteError)
                    assert f"sequence {sid}" in str(out[sid]) and "NaN" in str(out[sid])
                else:
                    got[sid].append(out[sid])
        wrong = r.step({ids[0]: np.zeros(5, np.float32)})[ids[0]]  # Triton itself checks the shape
        assert isinstance(wrong, RemoteError) and "shape" in str(wrong)
    for i, sid in enumerate(ids):
        frames = np.delete(x[i], 2, axis=0) if i == 1 else x[i]  # the refused frame did not advance it
        np.testing.assert_allclose(np.stack(got[sid]), rts["lstm2"].stream().feed(frames), atol=1e-5)


def test_onnxruntime_variant_fails_only_for_the_missing_backend(env, models, tmp_path):
    """This Triton has no onnxruntime backend: the config must still parse, the error be the backend."""
    d, _ = models
    triton.write_repository(d / "lstm2.onnx", tmp_path / "repo", name="ort")
    broken = triton.write_repository(d / "lstm2.onnx", tmp_path / "repo", name="broken")
    (broken / "config.pbtxt").write_text((broken / "config.pbtxt").read_text().replace("max_batch_size", "max_batch"))
    s = server_mod.Server(tmp_path / "repo", grpc_port=0, http_port=0, metrics_port=0, env=env,
                          log_file=tmp_path / "triton.log")
    try:
        s.start(timeout=60, wait="live")
        states = {m["name"]: m for m in s.models()}
    finally:
        s.stop()
    assert states["ort"]["state"] == "UNAVAILABLE"
    assert states["ort"]["reason"] == ("Invalid argument: unable to find backend library for backend 'onnxruntime', "
                                       "try specifying runtime on the model configuration.")
    log = (tmp_path / "triton.log").read_text()  # a config Triton cannot parse fails before any backend is sought
    assert "state" not in states["broken"] and "failed to read text proto from" in log and "ort/config.pbtxt" not in log


def test_serve_command_stops_on_sigterm_and_leaves_no_process(env, models, tmp_path):
    d, _ = models
    cmd = [sys.executable, "-c", "from edgernn.cli import main; main()", "serve", str(d / "repo"), "--grpc-port", "0",
           "--http-port", "0", "--metrics-port", "0", "--log", str(tmp_path / "serve.log"), "--env", str(env.root)]
    p = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        url = re.search(r"grpc://(\S+)", line).group(1)
        with Remote(url, "lstm2") as r:
            got, _ = _run(r, _frames(6, 2, 3))
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        assert "stopped (tritonserver exit status 0)" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    np.testing.assert_allclose(got, _local(models[1]["lstm2"], _frames(6, 2, 3)), atol=1e-5)
    assert "127.0.0.1" in line and "Started GRPCInferenceService at 127.0.0.1" in (tmp_path / "serve.log").read_text()
    assert not _server_processes(tmp_path / "serve.log")


def _server_processes(log) -> list:
    """tritonserver processes still running on this log file (none once the command has stopped)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "tritonserver" in ln and str(log) in ln]


def test_server_restart_loses_every_state(srv, models):
    """State is per process (docs/serving.md): after a restart a sequence must start again."""
    with _remote(srv, "lstm2") as r:
        sid = r.new_id()
        r.step({sid: np.zeros(3, np.float32)})
    srv.stop()
    srv.start(timeout=120)
    with _remote(srv, "lstm2") as r:
        r._started.add(sid)  # carry on the old sequence without START
        out = r.step({sid: np.zeros(3, np.float32)})[sid]
        assert isinstance(out, RemoteError) and "START" in str(out).upper()
        assert _metric(srv, "edgernn_live_sequences", "lstm2") == 0
