"""The one interface every session call goes through, and its three implementations.

A Backend wraps one opened session: `run(outputs, feed)` is an ordinary call (numpy in, numpy
out) and `stepper(signature)` gives the object a stream or a batch steps through, call after call,
carrying the state. Which implementation a Runtime gets is decided once, when it opens the model:

- NativeBackend: a CPU session on onnxruntime's C API (edgernn.runtime.native). Once a call shape
  repeats, steps go through preallocated buffers (stateloop.StateLoop): one foreign call a step.
- BindingBackend: a CPU session on onnxruntime's Python binding (no C library in the wheel, an
  old build, or EDGERNN_NATIVE=0). Steps are ordinary calls.
- DeviceBackend: CUDA or TensorRT. The state stays in device memory between steps: two IO
  bindings, built once, take turns reading one set of device buffers and writing the other, so a
  step sends up only the frame and brings back only y.

Every stepper has the same contract: `run(x, state) -> (y, new_state)` never writes into `state`
(a refused or failed call leaves it as it was), `nonfinite(new)` says cheaply whether the call may
have produced NaN/Inf, and `host(state)` gives the state as numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from edgernn.core.errors import NativeError
from edgernn.runtime import native, stateloop
from edgernn.runtime.checks import SMALL, may_be_nonfinite

BIND_BYTES = 1 << 20  # a step's frame, output and state, at most, for preallocated buffers


class CallStepper:
    """Steps as ordinary session calls."""

    frame_inside = False  # the frame is checked before the call, not with the new state

    def __init__(self, run, sig):
        feed, x_name, outs = dict(sig.constants), sig.x, sig.outputs
        names = [p.input for p in sig.states]

        # every run here takes (outputs, feed, run_options); fast_run's binding call without its wrapper
        run = getattr(run, "raw", run)

        def call(x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:  # a closure: no attribute reads
            feed.update(state)
            feed[x_name] = x
            out = run(outs, feed, None)
            return out[0], dict(zip(names, out[1:]))
        self.run = call
        isfinite, vdot = math.isfinite, np.vdot

        def nonfinite(new: dict) -> bool:  # a closure too: no method lookups between the checks
            for v in new.values():
                if v.size <= SMALL:
                    if not isfinite(sum(v.ravel().tolist())):
                        return True
                elif not isfinite(vdot(v, v)):
                    return True
            return False
        self.nonfinite = nonfinite

    @staticmethod
    def host(state: dict) -> dict:
        return state


class NativeStepper:
    """Ordinary calls until a call shape repeats, then that shape through stateloop.StateLoop.

    A bound call the ordinary call would have run (a file that declares an output's example
    length, a value-dependent shape) is not an error: the ordinary call runs it and the shape is
    not bound again. A bound call the ordinary call refuses too (a bad input) keeps the binding."""

    def __init__(self, session, sig, unbindable: set | None = None):
        self._session, self._sig = session, sig
        self._call = CallStepper(session.run, sig)
        self._loop = None
        self._last = None  # the shape of the previous ordinary call
        self._unbindable = set() if unbindable is None else unbindable  # shared by a backend's steppers
        self._binding = False  # ordinary calls through the Python binding (see _to_binding)
        self._flat = None  # after a bound call: the buffer holding its new state (and frame)
        self.frame_inside = False

    @property
    def bound(self) -> bool:
        """Whether calls of the current shape go through preallocated buffers."""
        return self._loop is not None

    def run(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        loop = self._loop
        if loop is not None:
            if x.shape == loop.x_shape:
                try:
                    y, new, self._flat = loop.run(x, state)
                    return y, new
                except NativeError:
                    self._flat = None
                    y, new = self._call.run(x, state)  # refused here too: a bad input, the binding stays
                    self._unbindable.add(x.shape)
                    self._drop()
                    self._to_binding()
                    return y, new
            self._drop()
        self._flat = None
        if x.shape in self._unbindable:  # another stream of this model found it out
            self._to_binding()
            return self.run(x, state)
        y, new = self._call.run(x, state)
        if x.shape == self._last and x.shape not in self._unbindable:
            self._bind(x, y, new)
        self._last = x.shape
        return y, new

    def _bind(self, x, y, new) -> None:
        example = [y] + [new[p.input] for p in self._sig.states]
        if x.nbytes + sum(v.nbytes for v in example) > BIND_BYTES:
            self._unbindable.add(x.shape)
            return
        self._loop = stateloop.StateLoop.for_signature(self._session, self._sig, x, example)
        if self._loop is None:
            self._unbindable.add(x.shape)
            self._to_binding()
        self.frame_inside = bool(self._loop and self._loop.frame_inside)

    def _drop(self) -> None:
        self._loop, self.frame_inside = None, False

    def _to_binding(self) -> None:
        """A shape that cannot be bound steps through the Python binding's ordinary call: the
        C API's is several times slower (tools/third_party_corpus.py --bench, static_output)."""
        if not self._binding:
            self._call = CallStepper(native.fast_run(self._session.binding_session), self._sig)
            self._binding = True
            # from now on this stepper IS that call stepper: no wrapper between a step and its call
            self.run, self.nonfinite = self._call.run, self._call.nonfinite

    def nonfinite(self, new: dict) -> bool:
        flat = self._flat
        if flat is not None:
            return may_be_nonfinite(flat)
        return self._call.nonfinite(new)

    @staticmethod
    def host(state: dict) -> dict:
        return state


class DeviceStepper:
    """The state in device memory between steps, through two IO bindings built once.

    The first call of a shape runs the ordinary way and fixes the shapes; then two sets of device
    buffers are allocated and two bindings made: binding k reads set k and writes set 1-k, the frame
    from one host buffer and y into another. A step writes the frame, makes one call and flips k.
    A state that is not the current set (a restore, a reset) is copied into it first."""

    frame_inside = False

    def __init__(self, session, sig, *, device: str = "cuda", device_id: int = 0):
        self._session, self._sig = session, sig
        self._device = (device, int(device_id))
        self._call = CallStepper(session.run, sig)
        self._shape = None
        self._sets: list[dict] = []
        self._bindings: list = []
        self._y = None

    @property
    def bound(self) -> bool:
        return bool(self._bindings)

    def run(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        if x.shape != self._shape:
            y, new = self._call.run(x, self.host(state))
            self._build(x, y, new)
            self._y = y  # what nonfinite() looks at
            for name, v in new.items():
                self._sets[0][name].update_inplace(np.ascontiguousarray(v))
            return y, self._sets[0]
        k = 1 if state is self._sets[1] else 0
        if state is not self._sets[k]:
            for name, v in state.items():
                self._sets[0][name].update_inplace(np.ascontiguousarray(self._numpy(v)))
        self._xbuf[...] = x
        self._session.run_with_iobinding(self._bindings[k])
        self._y = self._ybuf
        return self._ybuf.copy(), self._sets[1 - k]

    def _build(self, x, y, new) -> None:
        import onnxruntime as ort  # a device session is on the Python binding already

        sig, (dev, i) = self._sig, self._device
        self._xbuf, self._ybuf = np.empty_like(x), np.empty_like(y)
        xv, yv = ort.OrtValue.ortvalue_from_numpy(self._xbuf), ort.OrtValue.ortvalue_from_numpy(self._ybuf)
        self._sets = [{p.input: ort.OrtValue.ortvalue_from_shape_and_type(new[p.input].shape, new[p.input].dtype, dev, i)
                       for p in sig.states} for _ in (0, 1)]
        self._bindings = []
        consts = {name: np.ascontiguousarray(value) for name, value in sig.constants.items()}
        for k in (0, 1):
            b = self._session.io_binding()
            b.bind_ortvalue_input(sig.x, xv)
            for name, value in consts.items():
                b.bind_cpu_input(name, value)
            for p in sig.states:
                b.bind_ortvalue_input(p.input, self._sets[k][p.input])
                b.bind_ortvalue_output(p.output, self._sets[1 - k][p.input])
            b.bind_ortvalue_output(sig.y, yv)
            self._bindings.append(b)
        self._values = (xv, yv, consts)  # the bindings refer to them
        self._shape = x.shape

    def nonfinite(self, new: dict) -> bool:
        """The device state is not read back each step; y, which it produced, is."""
        return self._y is not None and may_be_nonfinite(self._y)

    @staticmethod
    def _numpy(v):
        return v if isinstance(v, np.ndarray) else v.numpy()

    def host(self, state: dict) -> dict:
        return {k: self._numpy(v) for k, v in state.items()}


class BindingBackend:
    """A CPU session on onnxruntime's Python binding."""

    kind = "binding"

    def __init__(self, session):
        self.session = session
        self.run = native.fast_run(session)

    def stepper(self, sig, *, host_state: bool = False):
        return CallStepper(self.run, sig)


class NativeBackend:
    """A CPU session on onnxruntime's C API (native.NativeSession)."""

    kind = "native"

    def __init__(self, session):
        self.session = session
        self.run = session.run
        self._unbindable: set = set()  # call shapes a stepper found the bound call refuses

    def stepper(self, sig, *, host_state: bool = False):
        return NativeStepper(self.session, sig, self._unbindable)


class DeviceBackend:
    """A CUDA or TensorRT session: ordinary calls take host arrays; a stream's stepper keeps its
    state on the device (a batch, which indexes its stacked states, asks for host_state)."""

    kind = "device"

    def __init__(self, session, *, device: str = "cuda", device_id: int = 0):
        self.session = session
        self.run = native.fast_run(session)
        self.device, self.device_id = device, int(device_id)

    def stepper(self, sig, *, host_state: bool = False):
        if host_state:
            return CallStepper(self.run, sig)
        return DeviceStepper(self.session, sig, device=self.device, device_id=self.device_id)


DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def for_session(session, *, device_id: int = 0):
    """The backend for an opened session: native on the C API, device on an accelerator."""
    if isinstance(session, native.NativeSession):
        return NativeBackend(session)
    if session.get_providers()[0] in DEVICE_PROVIDERS:
        return DeviceBackend(session, device="cuda", device_id=device_id)
    return BindingBackend(session)
