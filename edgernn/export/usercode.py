"""The user's own module for `edgernn export/verify --module FILE.py:NAME`: code, then weights.

    model = usercode.build("models.py:CRNN", kwargs='{"hidden": 32}')   # runs the user's code
    usercode.load_weights(model, "crnn.pt")                            # weights only, never code

`build` imports FILE.py (its folder first on sys.path, so its own imports work) and calls NAME,
a class or a factory, with the keyword arguments. This runs the user's code, as `python FILE.py`
would: only for code you trust. The weights come from a state_dict, an edgernn checkpoint or a
checkpoint dict that holds one (`state_dict`, `model_state_dict`, `model`), read with
weights_only=True unless the caller asked for `unsafe`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch import nn

from edgernn.core.errors import InputError, ModelFileError
from edgernn.train import checkpoint

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def build(spec: str, *, kwargs=None) -> nn.Module:
    """FILE.py:NAME called with `kwargs` (a dict or JSON text): the user's module, untrained."""
    file, sep, name = str(spec).rpartition(":")
    if not sep or not file or not name:
        raise InputError(f"--module {spec!r}; expected FILE.py:NAME (a class or a function that returns an nn.Module)")
    path = Path(file)
    if not path.is_file():
        raise InputError(f"--module {spec!r}: {file}: no such file; expected the Python file that defines {name}")
    args = _kwargs(kwargs)
    code = _import(path)
    target = getattr(code, name, None)
    if not callable(target):
        found = sorted(k for k, v in vars(code).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == code.__name__)
        raise InputError(f"--module {spec!r}: {path.name} defines no {name!r}; its nn.Module classes are {found}")
    try:
        model = target(**args)
    except TypeError as e:
        raise InputError(f"--module {spec!r}: {name}(**{args}) failed ({e}); expected --kwargs to match its "
                         "arguments") from e
    if not isinstance(model, nn.Module):
        raise InputError(f"--module {spec!r}: {name}(...) returned a {type(model).__name__}; expected an nn.Module")
    return model


def _kwargs(kwargs) -> dict:
    if kwargs is None or kwargs == "":
        return {}
    if isinstance(kwargs, dict):
        return dict(kwargs)
    try:
        value = json.loads(kwargs)
    except ValueError as e:
        raise InputError(f"--kwargs {kwargs!r} is not JSON ({e}); expected an object like '{{\"hidden\": 64}}'") from e
    if not isinstance(value, dict):
        raise InputError(f"--kwargs {kwargs!r} is a JSON {type(value).__name__}; expected an object of keyword arguments")
    return value


def _import(path: Path):
    name = f"edgernn_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code failed to import: say where
        sys.modules.pop(name, None)
        raise InputError(f"{path}: importing it failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                         "expected a Python file that defines the model") from e
    finally:
        sys.path.remove(folder)
    return module


def state_dict_of(obj, source) -> dict:
    """The weights in what torch.load returned: a state_dict, or a checkpoint dict holding one."""
    def is_sd(d):
        return isinstance(d, dict) and d and all(isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())

    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if is_sd(obj):
        return obj
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if is_sd(obj.get(key)):
                return obj[key]
    raise ModelFileError(f"{source}: holds a {type(obj).__name__} without weights edgernn can find; expected "
                         f"torch.save(model.state_dict(), path) or a dict with one under {list(WRAPPER_KEYS)}")


def load_weights(model: nn.Module, pt, *, unsafe: bool = False) -> nn.Module:
    """Load the weights of `pt` into `model` (strict: every key must match)."""
    sd = state_dict_of(checkpoint.read(pt, unsafe=unsafe, unsafe_hint=True), pt)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise ModelFileError(f"{pt}: its weights do not fit {type(model).__name__} "
                             f"({str(e).splitlines()[-1].strip()[:200]}); expected the --kwargs it was trained with") from e
    if missing or unexpected:
        raise ModelFileError(f"{pt}: its weights do not fit {type(model).__name__}: missing {missing[:4]}, unexpected "
                             f"{unexpected[:4]}; expected a state_dict of this class (check --module and --kwargs)")
    return model


def user_model(model_file, *, module: str | None = None, kwargs=None, unsafe: bool = False) -> nn.Module | None:
    """The module to export for the CLI: --module code + weights, a .pt2 program, a pickled module
    (unsafe), or None when the file is an edgernn checkpoint or state_dict for the weight path."""
    return read_user(model_file, module=module, kwargs=kwargs, unsafe=unsafe)[0]


def read_user(model_file, *, module: str | None = None, kwargs=None, unsafe: bool = False) -> tuple:
    """(user_model's answer, what torch.load returned when the file was read as a .pt, else None):
    the caller goes on with the object rather than unpickling the file twice."""
    if module:
        return load_weights(build(module, kwargs=kwargs), model_file, unsafe=unsafe), None
    if kwargs:
        raise InputError("--kwargs without --module; expected --module FILE.py:NAME to call with them")
    if str(model_file).endswith(".pt2"):
        from edgernn.export import pt2

        return pt2.load(model_file), None
    obj = checkpoint.read(model_file, unsafe=unsafe, unsafe_hint=True)
    return (obj if isinstance(obj, nn.Module) else None), obj
