"""The Triton model repository: config parsed with Triton's own schema, served graph numerically
equal to the exported one, state pairs named right (two-state LSTM), atomic layout."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

onnx = pytest.importorskip("onnx", reason="the Triton repository is written with the onnx package")
ort = pytest.importorskip("onnxruntime")

from edgernn.core import meta as meta_mod# noqa: E402
from edgernn.serve import triton# noqa: E402
from edgernn.core.errors import InputError, ModelFileError  # noqa: E402


def _schema():
    """Triton's ModelConfig schema: model_config_pb2 as shipped in the tritonclient wheel.

    Loaded from its file so that plain `pip install tritonclient` suffices: importing it through
    `tritonclient.grpc` would also need grpcio (the [grpc] extra, which pins protobuf < 7)."""
    pytest.importorskip("google.protobuf", reason="protobuf parses Triton's config text")
    from google.protobuf import text_format

    try:
        import tritonclient
    except ImportError:
        pytest.skip("Triton's config schema ships with tritonclient: pip install tritonclient")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    if "triton_model_config_pb2" not in sys.modules:
        spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["triton_model_config_pb2"] = module
    return sys.modules["triton_model_config_pb2"], text_format


def _parse(text: str):
    mc, text_format = _schema()
    return text_format.Parse(text, mc.ModelConfig())  # raises on any field Triton does not know


def _name(msg, field: str) -> str:
    """The name of an enum field's value (TYPE_FP32, KIND_CPU, CONTROL_SEQUENCE_START, ...)."""
    return msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[getattr(msg, field)].name


def _meta(path) -> dict:
    sess = ort.InferenceSession(str(path))
    return meta_mod.parse(sess.get_modelmeta().custom_metadata_map[meta_mod.KEY])


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("lstm", 2), ("gru", 1), ("rnn_tanh", 2)])
def test_config_parses_with_tritons_schema_and_names_every_state_pair(tiny_export, tmp_path, cell, layers):
    _, _, path = tiny_export(cell=cell, layers=layers)
    repo = triton.write_repository(path, tmp_path / "repo", name="tiny")
    cfg = _parse((repo / "config.pbtxt").read_text())
    meta = _meta(path)
    assert cfg.name == "tiny" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 64
    assert [(i.name, _name(i, "data_type"), list(i.dims)) for i in cfg.input] == [("x", "TYPE_FP32", [-1, 3])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("y", [-1, 2])]
    sb = cfg.sequence_batching
    pairs = [(s.input_name, s.output_name) for s in sb.state]
    assert pairs == [(s["input"], s["output"]) for s in meta["states"]]
    assert len(pairs) == (2 if cell == "lstm" else 1)
    for s in sb.state:
        assert list(s.dims) == [layers, 8] and s.initial_state[0].zero_data and list(s.initial_state[0].dims) == [layers, 8]
    kinds = {c.name: _name(c.control[0], "kind") for c in sb.control_input}
    assert kinds == {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
                     "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    assert _name(sb.control_input[3].control[0], "data_type") == "TYPE_UINT64"
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences >= 64
    assert list(sb.oldest.preferred_batch_size) == [64]
    assert sb.max_sequence_idle_microseconds == 60_000_000  # Triton's default of 1 s drops a paused stream
    assert not cfg.HasField("dynamic_batching")  # Triton refuses it beside sequence_batching
    assert [(g.count, _name(g, "kind")) for g in cfg.instance_group] == [(1, "KIND_CPU")]


def test_state_names_sort_alike_and_match_the_served_graph(tiny_export, tmp_path):
    """Triton pairs several implicit states by sorted name (server #8586): check it as Triton would."""
    _, _, path = tiny_export(cell="lstm", layers=2)
    repo = triton.write_repository(path, tmp_path / "repo")
    cfg = _parse((repo / "config.pbtxt").read_text())
    pairs = {s.input_name: s.output_name for s in cfg.sequence_batching.state}
    assert pairs == {"h0": "hn", "c0": "cn"}
    ins, outs = sorted(pairs), sorted(pairs.values())
    assert [pairs[i] for i in ins] == outs
    sess = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    got_in = {i.name: i for i in sess.get_inputs()}
    got_out = {o.name: o for o in sess.get_outputs()}
    for s in cfg.sequence_batching.state:  # state tensors are batch-first: [batch] + config dims
        assert got_in[s.input_name].shape == ["batch", *s.dims] == got_out[s.output_name].shape
    for c in cfg.sequence_batching.control_input:
        assert got_in[c.name].shape == ["batch", 1]
    assert got_in["CORRID"].type == "tensor(uint64)" and got_in["START"].type == "tensor(float)"
    served = meta_mod.parse(sess.get_modelmeta().custom_metadata_map[meta_mod.KEY])
    assert all(s["batch_axis"] == 0 and s["shape"] == ["batch", 2, 8] for s in served["states"])


_ONNX_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP16": "tensor(float16)", "TYPE_INT64": "tensor(int64)",
               "TYPE_UINT64": "tensor(uint64)"}


def _debatched(shape) -> list:
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


@pytest.mark.parametrize("cell,vocab", [("lstm", 0), ("gru", 11)])
def test_served_graph_passes_the_onnxruntime_backends_load_checks(tiny_export, tmp_path, cell, vocab):
    """The checks triton-inference-server/onnxruntime_backend makes when it loads a model (no Triton
    here): the model takes exactly the config's inputs, control inputs and state inputs; each control
    is [batch, 1] of the configured type; inputs, outputs and states match the configured dims."""
    kw = {"vocab": vocab, "embed": 4, "outputs": vocab, "task": "lm"} if vocab else {}
    _, _, path = tiny_export(cell=cell, layers=2, **kw)
    repo = triton.write_repository(path, tmp_path / "repo")
    cfg = _parse((repo / "config.pbtxt").read_text())
    sb = cfg.sequence_batching
    sess = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    assert set(ins) == ({i.name for i in cfg.input} | {c.name for c in sb.control_input}
                        | {s.input_name for s in sb.state})
    for c in sb.control_input:
        ctl = c.control[0]
        dtype = "TYPE_FP32" if len(ctl.fp32_false_true) else _name(ctl, "data_type")
        assert ins[c.name].shape[0] == "batch" and _debatched(ins[c.name].shape) == [1]
        assert ins[c.name].type == _ONNX_TYPES[dtype], c.name
    for io, got in [(io, ins[io.name]) for io in cfg.input] + [(io, outs[io.name]) for io in cfg.output]:
        assert got.shape[0] == "batch" and _debatched(got.shape) == list(io.dims), io.name
        assert got.type == _ONNX_TYPES[_name(io, "data_type")], io.name
    for st in sb.state:
        for got in (ins[st.input_name], outs[st.output_name]):
            assert got.shape[0] == "batch" and _debatched(got.shape) == list(st.dims)
            assert got.type == _ONNX_TYPES[_name(st, "data_type")]


def _served_step(sess, x, state, start, ready):
    n = x.shape[0]
    feed = {"x": x, "START": np.asarray(start, np.float32).reshape(n, 1),
            "READY": np.asarray(ready, np.float32).reshape(n, 1), "END": np.zeros((n, 1), np.float32),
            "CORRID": np.arange(1, n + 1, dtype=np.uint64).reshape(n, 1), **state}
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(names, feed)))
    return out["y"], {"h0": out["hn"], "c0": out["cn"]} if "cn" in out else {"h0": out["hn"]}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_served_graph_equals_the_exported_one_carrying_state_for_two_sequences(tiny_export, tmp_path, cell):
    """Two sequences in one batch as Triton runs them: B starts two steps after A, chunks of
    T = 1 and T = 3, garbage in a starting slot's state ignored, READY = 0 keeping a state."""
    _, _, path = tiny_export(cell=cell, layers=2)
    repo = triton.write_repository(path, tmp_path / "repo")
    ref = ort.InferenceSession(str(path))
    srv = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((2, 12, 3)).astype(np.float32)

    def alone(seq):  # the exported model, one sequence at a time from zeros
        feed = {"x": frames[seq:seq + 1], "h0": np.zeros((2, 1, 8), np.float32)}
        if cell == "lstm":
            feed["c0"] = np.zeros((2, 1, 8), np.float32)
        return ref.run(["y"], feed)[0][0]

    want = [alone(0), alone(1)]
    names = ["h0", "c0"] if cell == "lstm" else ["h0"]
    state = {k: rng.standard_normal((2, 2, 8)).astype(np.float32) * 50 for k in names}  # stale garbage
    got = [[], []]
    t = [0, 0]
    schedule = [((1, 0), (1, 0), 1), ((0, 0), (1, 0), 1), ((0, 1), (1, 1), 1), ((0, 0), (1, 1), 3),
                ((0, 0), (0, 1), 1), ((0, 0), (1, 1), 3)]
    for start, ready, T in schedule:
        x = np.zeros((2, T, 3), np.float32)
        for s in (0, 1):
            if ready[s]:
                x[s] = frames[s, t[s]:t[s] + T]
        y, new = _served_step(srv, x, state, start, ready)
        for s in (0, 1):
            if ready[s]:
                got[s].append(y[s])
                t[s] += T
            else:
                for k in names:  # a slot that was not ready keeps its state exactly
                    assert np.array_equal(new[k][s], state[k][s])
        state = new
    for s in (0, 1):
        g = np.concatenate(got[s])
        np.testing.assert_allclose(g, want[s][:len(g)], atol=1e-5, rtol=0)
    assert [len(np.concatenate(got[s])) for s in (0, 1)] == [9, 8]


def test_options_reach_the_config(tiny_export, tmp_path):
    _, _, path = tiny_export()
    text = triton.config_text(path, name="kws", max_batch_size=8, idle_timeout_s=5, instances=3, kind="gpu",
                              max_sequences=100, queue_delay_us=2000)
    cfg = _parse(text)
    sb = cfg.sequence_batching
    assert (cfg.name, cfg.max_batch_size, sb.max_sequence_idle_microseconds) == ("kws", 8, 5_000_000)
    assert (sb.oldest.max_candidate_sequences, sb.oldest.max_queue_delay_microseconds) == (100, 2000)
    assert [(g.count, _name(g, "kind")) for g in cfg.instance_group] == [(3, "KIND_GPU")]


def test_token_model_takes_int64_ids(tiny_export, tmp_path):
    _, _, path = tiny_export(cell="gru", vocab=11, embed=4, outputs=11, task="lm")
    cfg = _parse(triton.config_text(path))
    assert [(i.name, _name(i, "data_type"), list(i.dims)) for i in cfg.input] == [("x", "TYPE_INT64", [-1])]
    assert cfg.name == "m"


def test_repository_keeps_other_versions_and_leaves_no_temporaries(tiny_export, tmp_path):
    _, _, path = tiny_export()
    repo = tmp_path / "repo"
    triton.write_repository(path, repo, version=1)
    triton.write_repository(path, repo, version=2, max_batch_size=4)
    triton.write_repository(path, repo, version=2, max_batch_size=4)  # replacing a version is fine
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "m", "m/1", "m/1/model.onnx", "m/2", "m/2/model.onnx", "m/config.pbtxt"]
    assert "max_batch_size: 4" in (repo / "m" / "config.pbtxt").read_text()
    assert (repo / "m").stat().st_mode & stat.S_IROTH  # a server running as another user can read it


def test_refusals_say_what_was_expected(tiny_export, tmp_path, monkeypatch):
    _, _, path = tiny_export(bidirectional=True, name="bi")
    with pytest.raises(InputError, match="bidirectional"):
        triton.write_repository(path, tmp_path / "r")
    _, _, path = tiny_export()
    with pytest.raises(InputError, match="model name"):
        triton.config_text(path, name="a/b")
    with pytest.raises(InputError, match="max_batch_size"):
        triton.config_text(path, max_batch_size=0)
    with pytest.raises(InputError, match="kind"):
        triton.config_text(path, kind="tpu")
    with pytest.raises(InputError, match="no such model file"):
        triton.config_text(tmp_path / "missing.onnx")
    plain = onnx.load(str(path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ModelFileError, match="metadata"):
        triton.config_text(tmp_path / "plain.onnx")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(InputError, match="pip install onnx"):
        triton.config_text(path)


def test_cli_export_writes_the_repository(tiny_export, tmp_path):
    _, pt, _ = tiny_export(layers=2)
    from edgernn.cli.app import main

    assert "--triton" in {o for p in main.commands["export"].params for o in p.opts}
    r = run_cli("export", pt, "-o", tmp_path / "cli.onnx", "--triton", tmp_path / "repo", "--no-verify")
    assert "No such option" not in r.stderr, "`edgernn export --triton` is gone: " + r.stderr
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'repo' / 'cli'}/ (Triton model repository" in r.stdout, r.stdout
    cfg = _parse((tmp_path / "repo" / "cli" / "config.pbtxt").read_text())
    assert {s.input_name: s.output_name for s in cfg.sequence_batching.state} == {"h0": "hn", "c0": "cn"}
    assert (tmp_path / "repo" / "cli" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("cell,vocab", [("lstm", 0), ("gru", 11)])
def test_python_backend_repository_parses_with_tritons_schema(tiny_export, tmp_path, cell, vocab):
    """--triton-backend python: the exported file as is, model.py importing edgernn's model, the
    sequence batcher with its controls and no implicit state, the metadata for clients."""
    kw = {"vocab": vocab, "embed": 4, "outputs": vocab, "task": "lm"} if vocab else {}
    _, _, path = tiny_export(cell=cell, layers=2, **kw)
    repo = triton.write_repository(path, tmp_path / "repo", name="py", backend="python", idle_timeout_s=5,
                                   max_batch_size=16)
    cfg = _parse((repo / "config.pbtxt").read_text())
    assert cfg.name == "py" and cfg.backend == "python" and cfg.max_batch_size == 16
    x = cfg.input[0]
    assert (x.name, _name(x, "data_type"), list(x.dims)) == (("x", "TYPE_INT64", [-1]) if vocab else
                                                             ("x", "TYPE_FP32", [-1, 3]))
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("y", [-1, vocab or 2])]
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest" and list(sb.oldest.preferred_batch_size) == [16]
    assert sb.max_sequence_idle_microseconds == 5_000_000 and len(sb.state) == 0
    assert {c.name for c in sb.control_input} == {"START", "END", "READY", "CORRID"}
    assert [_name(g, "kind") for g in cfg.instance_group] == ["KIND_CPU"]
    assert json.loads(cfg.parameters["edgernn"].string_value) == _meta(path)
    assert (repo / "1" / "model.onnx").read_bytes() == path.read_bytes()
    assert "from edgernn.serve.python_model import TritonPythonModel" in (repo / "1" / "model.py").read_text()


def test_python_backend_refuses_a_gpu_and_an_unknown_backend(tiny_export, tmp_path):
    _, _, path = tiny_export()
    with pytest.raises(InputError, match="--triton-backend onnxruntime"):
        triton.write_repository(path, tmp_path / "repo", backend="python", kind="gpu")
    with pytest.raises(InputError, match="onnxruntime, python"):
        triton.write_repository(path, tmp_path / "repo", backend="tensorflow")
    assert not (tmp_path / "repo" / path.stem).exists()


def test_cli_export_writes_the_python_backend_repository(tiny_export, tmp_path):
    _, pt, _ = tiny_export()
    r = run_cli("export", pt, "-o", tmp_path / "cli.onnx", "--triton", tmp_path / "repo", "--triton-backend",
                "python", "--no-verify")
    assert r.returncode == 0, r.stderr
    assert "(Triton model repository: config.pbtxt, 1/model.py, 1/model.onnx)" in r.stdout
    cfg = _parse((tmp_path / "repo" / "cli" / "config.pbtxt").read_text())
    assert cfg.backend == "python" and cfg.max_batch_size == triton.MAX_BATCH["python"] == 16
    assert cfg.sequence_batching.oldest.max_candidate_sequences == 1024
