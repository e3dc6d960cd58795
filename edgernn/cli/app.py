"""The `edgernn` command line. One function per subcommand; heavy imports inside the command.

Exit status: 0 success; 1 verification or parity failure; 2 bad usage or bad input.
"""

from __future__ import annotations

import json
import sys
import warnings

import click

from edgernn.core.errors import EdgeRNNError, ParityError


# packages the commands import only when they need them, and the extra that brings each
EXTRAS = {"torch": "train", "onnx": "train", "matplotlib": "train", "sounddevice": "audio", "tritonclient": "serve",
          "grpc": "serve"}


def missing_extra(command: str | None, module: str) -> str:
    """The one line for a command run where its extra is not installed (an edge install has only
    onnxruntime, numpy and click)."""
    package = module.split(".")[0]
    extra = EXTRAS[package]
    what = f"`edgernn {command}`" if command else "this command"
    members = ", ".join(k for k, v in EXTRAS.items() if v == extra)
    return (f"{what} needs {package}, which is not installed (the edge install runs models only; the {extra} "
            f"extra brings {members}); expected `pip install 'edgernn[{extra}]'`")


class BadInput(click.ClickException):
    exit_code = 2


class ParityFailed(click.ClickException):
    exit_code = 1


class Group(click.Group):
    """Turns library errors into one line on stderr and the contract's exit status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ParityError as e:
            raise ParityFailed(str(e)) from None
        except EdgeRNNError as e:
            raise BadInput(str(e)) from None
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in EXTRAS:
                raise BadInput(missing_extra(ctx.invoked_subcommand, e.name)) from None
            raise
        except BrokenPipeError:  # `edgernn stream … | head` closed the pipe: not an error
            sys.stderr.close()
            sys.exit(0)


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.group(cls=Group)
@click.version_option(package_name="edgernn")
def main():
    """Recurrent networks from training to the edge: train, export one stateful ONNX file, stream it."""
    warnings.showwarning = _warn_to_stderr


@main.command()
@click.argument("model_pt", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="ONNX file to write (default: beside MODEL_PT).")
@click.option("--opset", type=click.IntRange(14, 21), default=17, show_default=True, help="ONNX opset.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="Weights: fp16 storage (any cell) or int8 dynamic quantization (LSTM; others fall back to fp16).")
@click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch (not recommended).")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), help="For a plain RNN state_dict: its activation.")
@click.option("--unsafe-load", is_flag=True, help="Unpickle arbitrary objects in MODEL_PT. Only for files you trust.")
@click.option("--triton", "triton_dir", type=click.Path(file_okay=False),
              help="Also write a Triton Inference Server model repository here: DIR/NAME/config.pbtxt + DIR/NAME/1/model.onnx.")
@click.option("--triton-max-batch", type=click.IntRange(min=1),
              help="Triton: most streams batched into one model call [default: 64; 16 with --triton-backend python].")
@click.option("--triton-idle-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Triton: seconds a silent stream keeps its state before it is dropped.")
@click.option("--triton-instances", type=click.IntRange(min=1), default=1, show_default=True, help="Triton: model instances.")
@click.option("--triton-gpu", is_flag=True, help="Triton: run the instances on a GPU (default: CPU).")
@click.option("--module", "module_spec", metavar="FILE.py:NAME",
              help="Your own model: NAME (a class or a factory) in FILE.py, built with --kwargs; MODEL_PT holds its "
                   "weights (a state_dict or checkpoint). This imports FILE.py and runs its code: only code you trust.")
@click.option("--kwargs", "module_kwargs", metavar="JSON", help="--module: keyword arguments for NAME, a JSON object.")
@click.option("--offline", is_flag=True,
              help="Write a model that cannot stream (a layer reads the future) for whole-sequence use; the reasons go into its metadata.")
@click.option("--features", type=click.IntRange(min=1), help="--module/.pt2: values per frame, when the first layer does not tell.")
@click.option("--vocab", type=click.IntRange(min=1), help="--module/.pt2: token ids below N (x is int64 [batch, time]).")
@click.option("--triton-backend", type=click.Choice(["onnxruntime", "python"]), default="onnxruntime", show_default=True,
              help="Triton: onnxruntime (the graph wrapped for implicit state; NGC images, GPU) or python (edgernn's streams; the CPU tritonserver of `edgernn serve`).")
def export(model_pt, output, opset, precision, no_verify, nonlinearity, unsafe_load, module_spec, module_kwargs, offline,
           features, vocab, triton_dir, triton_max_batch, triton_idle_timeout, triton_instances, triton_gpu,
           triton_backend):
    """Write ONE stateful ONNX file (x, h0[, c0] -> y, hn[, cn]) and verify it against PyTorch.

    MODEL_PT: an edgernn checkpoint, a state_dict of one RNN/LSTM/GRU (+ Linear), the weights of
    your own model with --module FILE.py:NAME (any layers; every recurrent layer and causal Conv1d
    gets its state as an input/output pair named after its path), or a .pt2 from
    torch.export.save (no code runs). Each file is checked against PyTorch at lengths 1, 7, 300 x
    batches 1, 3 and over 500 single steps with every state carried (exit 1 when off).
    """
    from edgernn.export.pipeline import export_checkpoint

    if unsafe_load:
        click.echo("warning: --unsafe-load unpickles arbitrary objects: a malicious file can run code", err=True)
    triton_options = dict(max_batch_size=triton_max_batch, idle_timeout_s=triton_idle_timeout,
                          instances=triton_instances, kind="gpu" if triton_gpu else "cpu", backend=triton_backend)
    r = export_checkpoint(model_pt, output, opset=opset, precision=precision, verify=not no_verify,
                          nonlinearity=nonlinearity, unsafe_load=unsafe_load, triton=triton_dir,
                          triton_options=triton_options, progress=_progress(), module=module_spec,
                          module_kwargs=module_kwargs, offline=offline, features=features, vocab=vocab)
    note = f"parity max error {r.max_error:.2e}" if r.max_error is not None else "not verified"
    if r.meta is None:  # an encoder-decoder pair
        click.echo(f"wrote {r.files[0]} and {r.files[1]} ({note})")
        return
    if r.precision:
        note += f"; {r.precision['weights']} weights, {r.precision['max_err_vs_fp32']:.2e} from fp32"
    if r.companion:
        note += f"; lookahead companion {r.companion}"
    click.echo(f"wrote {r.path} ({r.path.stat().st_size / 1024:.1f} KiB, {note})")
    if (r.meta.get("model") or {}).get("source") == "module":
        click.echo("states: " + (", ".join(f"{s['input']} -> {s['output']}" for s in r.meta["states"]) or "none"))
    if r.offline:
        click.echo("offline only (it cannot stream): " + "; ".join(f"{o['path'] or '<model>'}: {o['reason']}"
                                                                   for o in r.offline))
    if r.triton:
        files = "config.pbtxt, 1/model.py, 1/model.onnx" if triton_backend == "python" else "config.pbtxt, 1/model.onnx"
        click.echo(f"wrote {r.triton}/ (Triton model repository: {files})")


def _progress():
    """The verification progress line on a terminal; None (no line) otherwise."""
    def show(done, total):
        click.echo(f"\rverifying parity {done}/{total}", err=True, nl=done == total)

    return show if sys.stderr.isatty() else None


def _verify(model, onnx_model) -> dict:
    """Run parity with a progress line; raise ParityError with the report when it fails."""
    from edgernn.export import parity

    return parity.check(model, onnx_model, progress=_progress())


@main.command()
@click.argument("model_pt", type=click.Path(dir_okay=False))
@click.argument("model_onnx", type=click.Path(dir_okay=False))
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), help="For a plain RNN state_dict: its activation.")
@click.option("--module", "module_spec", metavar="FILE.py:NAME",
              help="Your own model: NAME in FILE.py, built with --kwargs, MODEL_PT its weights; checks any ONNX file "
                   "against it. This imports FILE.py and runs its code: only code you trust.")
@click.option("--kwargs", "module_kwargs", metavar="JSON", help="--module: keyword arguments for NAME, a JSON object.")
@click.option("--features", type=click.IntRange(min=1), help="--module/.pt2: values per frame, when the first layer does not tell.")
@click.option("--vocab", type=click.IntRange(min=1), help="--module/.pt2: token ids below N.")
def verify(model_pt, model_onnx, nonlinearity, module_spec, module_kwargs, features, vocab):
    """Re-run the parity check between a checkpoint and its ONNX file (exit 1 on mismatch).

    With --module FILE.py:NAME (or a .pt2 MODEL_PT), any ONNX file with edgernn's state pairs is
    checked against your own module: lengths 1, 7, 300 x batches 1, 3, and 500 carried steps.
    """
    if module_spec or str(model_pt).endswith(".pt2"):
        return _verify_module(model_pt, model_onnx, module_spec, module_kwargs, features, vocab)
    from pathlib import Path

    from edgernn.train import checkpoint
    from edgernn.core.errors import InputError

    from edgernn.export import matching
    from edgernn.train import seq2seq_io

    obj = checkpoint.read(model_pt)
    if not Path(model_onnx).is_file():
        raise InputError(f"{model_onnx}: no such file; expected the .onnx exported from {model_pt}")
    from edgernn.runtime.engine import Runtime

    rt = Runtime(model_onnx)  # an unreadable file is bad input (exit 2), not a parity failure
    if seq2seq_io.is_seq2seq_checkpoint(obj):  # one half of an encoder-decoder pair
        role = matching.seq2seq_role(rt.meta, model_onnx)
        half = getattr(seq2seq_io.load(model_pt), role)
        matching.check_same_model(half.spec.to_dict(), rt.meta, pt=model_pt, onnx_path=model_onnx)
        report = _verify(half, str(model_onnx))
        click.echo(f"{role} parity ok: max error {report['max_abs_err']:.2e} over lengths {report['lengths']} x "
                   f"batches {report['batches']}")
        return
    if nonlinearity is None:  # a plain RNN's state_dict cannot say; the file exported from it can
        cell = ((rt.meta or {}).get("model") or {}).get("cell")
        nonlinearity = {"rnn_tanh": "tanh", "rnn_relu": "relu"}.get(cell)
    loaded = checkpoint.load(model_pt, nonlinearity=nonlinearity, obj=obj)
    if loaded.kind == "state_dict" and loaded.model.spec.cell == "rnn_tanh" and nonlinearity is None:
        warnings.warn(f"{model_pt}: a plain RNN's state_dict does not say tanh or relu, nor does {model_onnx}; "
                      "assumed tanh: pass --nonlinearity relu if it is")
    matching.check_same_model(loaded.model.spec.to_dict(), rt.meta, pt=model_pt, onnx_path=model_onnx)
    report = _verify(loaded.model, str(model_onnx))
    from edgernn.runtime import lookahead

    companion = lookahead.companion_path(model_onnx)
    if loaded.model.spec.bidirectional and companion is not None and Path(companion).is_file():
        from edgernn.export.companion import verify_companion

        r = verify_companion(loaded.model, str(companion))
        if not r["ok"]:
            raise ParityError(f"lookahead companion {companion}: max error {r['max_abs_err']:.3g} over tolerance")
        click.echo(f"lookahead companion ok: max error {r['max_abs_err']:.2e}")
    click.echo(f"parity ok: max error {report['max_abs_err']:.2e} over lengths {report['lengths']} x batches "
               f"{report['batches']}" + (f", {report['steps']} carried steps" if "steps" in report else ""))


def _verify_module(model_pt, model_onnx, module_spec, module_kwargs, features, vocab):
    """`verify --module`: the user's module (or a .pt2) against any ONNX file."""
    from pathlib import Path

    from edgernn.core.errors import InputError
    from edgernn.export import usercode
    from edgernn.export.module import verify_file
    from edgernn.runtime import lookahead
    from edgernn.runtime.engine import Runtime

    model = usercode.user_model(model_pt, module=module_spec, kwargs=module_kwargs)
    if not Path(model_onnx).is_file():
        raise InputError(f"{model_onnx}: no such file; expected the .onnx exported from {model_pt}")
    rt = Runtime(model_onnx)  # an unreadable file is bad input (exit 2), not a parity failure
    report, rnn_model = verify_file(model, str(model_onnx), offline=bool((rt.meta or {}).get("offline")),
                                    features=features, vocab=vocab, progress=_progress())
    companion = lookahead.companion_path(model_onnx)
    if rnn_model is not None and Path(companion).is_file():
        from edgernn.export.companion import verify_companion

        r = verify_companion(rnn_model, str(companion))
        if not r["ok"]:
            raise ParityError(f"lookahead companion {companion}: max error {r['max_abs_err']:.3g} over tolerance")
        click.echo(f"lookahead companion ok: max error {r['max_abs_err']:.2e}")
    click.echo(f"parity ok: max error {report['max_abs_err']:.2e} over lengths {report['lengths']} x batches "
               f"{report['batches']}" + (f", {report['steps']} carried steps" if "steps" in report else ""))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--state", "states", multiple=True, help="Third-party model: a state pair IN=OUT to check (repeatable), as `stream` takes it.")
@click.option("--const", "consts", multiple=True, help="Third-party model: a constant input NAME=VALUE (repeatable), as `stream` takes it.")
@click.option("--layout", type=click.Choice(["btf", "tbf", "bf", "tf", "bt", "tb"]), help="Third-party model: the frame input's axes, as `stream` takes it.")
@click.option("--frame", "frame_size", type=click.IntRange(min=1), help="Third-party model with a symbolic frame size: values per frame.")
def info(path, as_json, states, consts, layout, frame_size):
    """Show a model's metadata, inputs, outputs and state pairs (.onnx), or a checkpoint's spec (.pt)."""
    from edgernn.cli import info as inspect_mod
    from edgernn.cli.stream import _constants, _pairs

    d = inspect_mod.describe(path, states=_pairs(states, "--state"), constants=_constants(consts), layout=layout,
                             frame=frame_size)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
    else:
        click.echo(inspect_mod.render(d))


@main.command()
@click.argument("model_onnx", type=click.Path(dir_okay=False))
@click.option("--prompt", required=True, help="Text that primes the model (charlm) or the source to transduce (seq2seq).")
@click.option("--length", type=int, default=200, show_default=True, help="charlm: characters to sample; seq2seq: max output length.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="charlm: sampling temperature (0: argmax).")
@click.option("--seed", type=int, help="charlm: the same seed gives the same text.")
def generate(model_onnx, prompt, length, temperature, seed):
    """Generate text through the torch-free runtime: sample a char model, or decode a seq2seq pair."""
    from edgernn.runtime import generate as gen

    from edgernn.core.errors import InputError
    from pathlib import Path

    if not Path(model_onnx).is_file():
        raise InputError(f"{model_onnx}: no such file; expected a charlm .onnx or a NAME.decoder.onnx")
    if gen.is_decoder(model_onnx):
        click.echo(gen.greedy_decode(model_onnx, prompt, max_length=length))
    else:
        click.echo(prompt + gen.sample_text(model_onnx, prompt, length, temperature=temperature, seed=seed))


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="The .onnx model.")
@click.option("--streams", type=int, default=256, show_default=True, help="Largest number of streams to batch (also 1 and 16).")
@click.option("--chunk", type=int, default=100, show_default=True, help="Chunk size for the feed() comparison.")
@click.option("--steps", type=int, default=1000, show_default=True, help="Steps per round.")
@click.option("--rounds", type=int, default=7, show_default=True, help="Interleaved rounds; medians are reported.")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--lookahead", "lookaheads", multiple=True, help="Bidirectional: measure streaming at these lookaheads R (repeatable; inf allowed); --chunk is C (default 1 here).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--state", "states", multiple=True, help="Third-party model: a state pair IN=OUT (repeatable), as `stream` takes it.")
@click.option("--const", "consts", multiple=True, help="Third-party model: a constant input NAME=VALUE (repeatable).")
@click.option("--layout", type=click.Choice(["btf", "tbf", "bf", "tf", "bt", "tb"]), help="Third-party model: the frame input's axes.")
@click.option("--frame", "frame_size", type=click.IntRange(min=1), help="Third-party model with a symbolic frame size: values per frame.")
@click.pass_context
def bench(ctx, model_path, streams, chunk, steps, rounds, threads, lookaheads, as_json, states, consts, layout,
          frame_size):
    """Per-step latency against a hand-written onnxruntime loop and the call floor, and batched streams."""
    from edgernn.runtime import bench as bench_mod
    from edgernn.core.errors import InputError

    if lookaheads:
        return _bench_lookahead(ctx, model_path, lookaheads, chunk, steps, rounds, threads, as_json)

    for name, v in (("streams", streams), ("chunk", chunk), ("steps", steps), ("rounds", rounds)):
        if v < 1:
            raise InputError(f"--{name} {v}; expected a positive integer")
    sizes = sorted({1, min(16, streams), streams})
    try:
        from edgernn.cli.stream import _constants, _pairs

        model = dict(states=_pairs(states, "--state") or None, constants=_constants(consts) or None, layout=layout,
                     frame=frame_size)
        r = bench_mod.runtime_suite(model_path, steps=steps, streams=sizes, chunk=chunk, rounds=rounds, threads=threads,
                                    model=model,
                                    progress=(lambda i, n: click.echo(f"\rround {i}/{n}", err=True, nl=i == n)) if sys.stderr.isatty() else None)
    except ValueError as e:
        raise InputError(str(e)) from None
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    res = r["results"]
    click.echo(f"{'contender':28s} {'µs/stream-step':>15s} {'vs raw loop':>12s}")
    for k, v in res.items():
        click.echo(f"{k:28s} {v['us']:15.2f} {bench_mod.ratio(res, k, 'onnxruntime loop'):12.2f}")
    click.echo("(medians over interleaved rounds; ratios are medians of the per-round ratios)")


def _bench_lookahead(ctx, model_path, lookaheads, chunk, steps, rounds, threads, as_json):
    """Cost and latency of latency-controlled streaming against R."""
    from edgernn.runtime import lookahead_bench
    from edgernn.runtime.lookahead import parse_lookahead
    from edgernn.runtime.engine import Runtime

    rs = [parse_lookahead(r) for r in lookaheads]
    c = chunk if ctx.get_parameter_source("chunk") == click.core.ParameterSource.COMMANDLINE else 1
    rows = lookahead_bench.sweep(Runtime(model_path, threads=threads), [None if r == float("inf") else r for r in rs],
                                 chunk=c, steps=steps, rounds=rounds)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(f"{'R':>5} {'latency frames':>15} {'latency ms':>11} {'window frames/frame':>20} {'µs/frame':>9}")
    for r in rows:
        inf = r["lookahead"] is None
        click.echo(f"{'inf' if inf else r['lookahead']:>5} {'all' if inf else r['latency_frames']:>15} "
                   f"{'all' if inf else r['latency_ms']:>11} "
                   f"{r['window_frames_per_frame']:20.2f} {r['us_per_frame']:9.1f}")


from edgernn.cli.mic import devices  # noqa: E402  (the torch-free audio and streaming commands)
from edgernn.cli.stream import stream  # noqa: E402
from edgernn.cli.train import ensemble, train  # noqa: E402

main.add_command(train)
main.add_command(ensemble)
main.add_command(stream)
main.add_command(devices)
from edgernn.cli.serve import serve  # noqa: E402
main.add_command(serve)
