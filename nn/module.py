"""The ``Module`` base class (parameters, gradients, state dicts, train/eval) and ``Sequential``.

A module keeps its own parameters in ``params`` and their gradients, with the same keys and
shapes, in ``grads``. Containers expose their sub-modules through ``children()``; every
name-based operation (``named_parameters``, ``state_dict``, ``load_state_dict``) walks that
tree and joins names with dots, like PyTorch (``"conv1.weight"``).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np


class IncompatibleKeys(NamedTuple):
    """What a non-strict ``load_state_dict`` skipped.

    Attributes
    ----------
    missing_keys : list of str
        Model keys absent from the state.
    unexpected_keys : list of str
        State keys the model does not have.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and container.

    Attributes
    ----------
    training : bool
        ``True`` after ``train()`` (the default), ``False`` after ``eval()``. Only layers whose
        behaviour differs (Dropout) look at it.
    params : dict[str, np.ndarray]
        This module's own parameters (not its children's), e.g. ``{"weight": W, "bias": b}``.
        Optimizers update these arrays in place, so layers always read them from here.
    grads : dict[str, np.ndarray]
        Gradients of the loss with respect to ``params``, same keys and shapes. ``backward``
        replaces them with fresh arrays (never accumulates); they start as zeros.
    input_grad : bool
        ``True`` (default): ``backward`` returns the gradient with respect to the input.
        Set it to ``False`` on a layer whose input is data (the first layer): layers with
        parameters then only fill ``grads`` and return ``None``, skipping work (for LeNet-5's
        conv1, its whole input gradient: ~10% of a training step). Like an input tensor with
        ``requires_grad=False`` in PyTorch. On a ``Sequential`` it sets its first layer's flag.
    """

    input_grad = True

    def __init__(self) -> None:
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layer's output for ``x``, caching what ``backward`` needs."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Fill ``grads`` from ``dout`` (d loss / d output) and return d loss / d input.

        Returns ``None`` instead when ``input_grad`` is ``False``. ``dout`` is never
        modified in place.
        """
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward_backward(self, x: np.ndarray, labels: np.ndarray, loss_fn, *, augment=None,
                         rng: np.random.Generator | None = None) -> tuple[float, np.ndarray]:
        """One training batch: ``augment``, ``forward``, the loss, and ``backward``.

        ``DataParallel`` overrides it to do all four in one exchange with its workers, each
        augmenting its own shard.

        Parameters
        ----------
        x : np.ndarray
            Input of the batch.
        labels : np.ndarray
            Its labels.
        loss_fn : callable
            ``loss_fn(logits, labels) -> (loss, dlogits)``.
        augment : callable, optional
            ``augment(x, rng) -> x``: a random transform of the training images, applied
            to ``x`` first.
        rng : numpy.random.Generator, optional
            What ``augment`` draws from (needed with it).

        Returns
        -------
        loss : float
        logits : np.ndarray
            What ``forward`` returned for the (augmented) batch. The gradients are left in
            ``grads``.
        """
        if augment is not None:
            if rng is None:
                raise ValueError("forward_backward: augment needs rng")
            x = augment(x, rng)
        logits = self.forward(x)
        loss, dlogits = loss_fn(logits, labels)
        self.backward(dlogits)
        return loss, logits

    # -- tree --------------------------------------------------------------------------
    def children(self) -> dict[str, "Module"]:
        """Direct sub-modules by name (empty for leaf layers)."""
        return {}

    def _add_param(self, name: str, value: np.ndarray) -> None:
        """Register a parameter and a zero gradient of the same shape and dtype."""
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(dotted_name, array)`` for this module's parameters, then its children's."""
        for name, value in self.params.items():
            yield prefix + name, value
        for child_name, child in self.children().items():
            yield from child.named_parameters(prefix + child_name + ".")

    def named_gradients(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(dotted_name, gradient)`` with the same names and order as ``named_parameters``."""
        for name in self.params:
            yield prefix + name, self.grads[name]
        for child_name, child in self.children().items():
            yield from child.named_gradients(prefix + child_name + ".")

    def parameters(self) -> list[np.ndarray]:
        return [value for _, value in self.named_parameters()]

    def zero_grad(self) -> None:
        for name, value in self.params.items():
            self.grads[name] = np.zeros_like(value)
        for child in self.children().values():
            child.zero_grad()

    def num_parameters(self) -> int:
        return sum(value.size for value in self.parameters())

    # -- modes -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        self.training = bool(mode)
        for child in self.children().values():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state -------------------------------------------------------------------------
    def close(self) -> None:
        """Release what the module holds outside this process (a ``DataParallel``'s workers); here nothing."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters by dotted name (later training does not change them)."""
        return {name: value.copy() for name, value in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` into the parameters in place (optimizers holding them stay valid).

        Everything is checked before anything is written, so a failed load leaves the model
        unchanged. Values are cast to each parameter's dtype.

        Parameters
        ----------
        state : dict[str, np.ndarray]
            Arrays by dotted name, as ``state_dict`` returns them.
        strict : bool, default True
            Whether missing and unexpected keys are errors.

        Returns
        -------
        IncompatibleKeys
            The missing and unexpected keys (empty lists after a strict load).

        Raises
        ------
        ValueError
            Naming every misshaped or non-numeric tensor and, when ``strict``, every missing
            and every unexpected key.
        """
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        for name, param in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != param.shape:
                problems.append(f"{name}: shape {value.shape} in state, model expects {param.shape}")
            elif not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                problems.append(f"{name}: dtype {value.dtype} is not numeric")
        if problems:
            raise ValueError(f"cannot load state into {type(self).__name__}: " + "; ".join(problems))
        for name, param in own.items():
            if name in state:
                np.copyto(param, np.asarray(state[name]), casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # -- printing ----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = self.children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Run layers in order; ``backward`` runs them in reverse.

    ``Sequential(conv1=Conv2d(...), act1=ReLU())`` names the layers; ``Sequential(a, b)`` names
    them ``"0"``, ``"1"``, ... Layers are reachable as ``model.conv1``, ``model["conv1"]`` or
    ``model[0]``.

    Parameters
    ----------
    *layers : Module
        Layers named ``"0"``, ``"1"``, ... in order.
    **named_layers : Module
        Layers by name (non-empty, no dot), in order; either these or ``layers``, not both.

    Raises
    ------
    TypeError
        If a layer is not an ``nn.Module``.
    ValueError
        If both positional and named layers are given, or a name is empty or has a dot.

    Shape
    -----
    Whatever the first layer takes to whatever the last layer returns.
    """

    def __init__(self, *layers: Module, **named_layers: Module) -> None:
        super().__init__()
        if layers and named_layers:
            raise ValueError("Sequential takes either positional or named layers, not both")
        items = named_layers.items() if named_layers else ((str(i), m) for i, m in enumerate(layers))
        self._layers: dict[str, Module] = {}
        for name, layer in items:
            if not isinstance(layer, Module):
                raise TypeError(f"layer {name!r} is a {type(layer).__name__}, not an nn.Module")
            if "." in name or not name:
                raise ValueError(f"layer name {name!r} must be non-empty and contain no dot")
            self._layers[name] = layer

    def children(self) -> dict[str, Module]:
        return dict(self._layers)

    @property
    def input_grad(self) -> bool:
        layers = self.__dict__.get("_layers")
        return next(iter(layers.values())).input_grad if layers else True

    @input_grad.setter
    def input_grad(self, value: bool) -> None:
        next(iter(self._layers.values())).input_grad = bool(value)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._layers.values():
            x = layer.forward(x)
        return x

    def forward_collect(self, x: np.ndarray, names) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``forward``, also returning the outputs of the layers named in ``names``.

        For looking inside a trained network (feature maps); the same computation as
        ``forward``, so call ``eval()`` first for inference.

        Parameters
        ----------
        x : np.ndarray
            Input of the first layer.
        names : iterable of str
            Names of direct layers (keys of ``children()``), e.g. ``("conv1", "conv2")``.

        Returns
        -------
        output : np.ndarray
            What ``forward(x)`` returns.
        outputs : dict[str, np.ndarray]
            ``{name: output of that layer}``, in the order of ``names``.

        Shape
        -----
        For LeNet-5 (``nn.lenet5``) with ``x : (N, 1, 28, 28)``: ``conv1 : (N, c1, 28, 28)``,
        ``conv2 : (N, c2, 10, 10)`` (before activation and pooling).
        """
        names = list(names)
        unknown = [name for name in names if name not in self._layers]
        if unknown:
            raise ValueError(f"no layer named {', '.join(map(repr, unknown))} (layers: {', '.join(self._layers)})")
        kept: dict[str, np.ndarray] = {}
        for name, layer in self._layers.items():
            x = layer.forward(x)
            if name in names:
                kept[name] = x
        return x, {name: kept[name] for name in names}

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self._layers.values()):
            dout = layer.backward(dout)
            if dout is None:  # a layer with input_grad=False: nothing flows further back
                return None
        return dout

    def __getattr__(self, name: str) -> Module:
        # Only called when normal lookup fails: expose layers as attributes (model.conv1).
        layers = self.__dict__.get("_layers", {})
        if name in layers:
            return layers[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or layer {name!r}")

    def __getitem__(self, key: int | str) -> Module:
        if isinstance(key, str):
            return self._layers[key]
        return list(self._layers.values())[key]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers.values())
