"""Reshape targets computed at run time from sizes the graph already has, made constant; and reshape
patterns of attention exports rewritten as the simpler ops they amount to (``reshape_round_trips``,
``batch_head_round_trips``, ``packed_projection_selects``, ``flattened_linears``), so that the channel rules
see the heads; and the dynamo exporter's identity ``as_strided`` of a channels-last tensor made the Reshape
it is (``strided_identity_views``).

The TorchScript exporter writes ``x.flatten(2)`` or ``x.reshape(b, n, 3, heads, d)`` with a symbolic batch
as a target built at run time: Shape -> Slice / Gather -> Unsqueeze -> Concat with constants. ONNX shape
inference cannot follow that (it does not propagate through Slice of a shape), so every tensor after it has
no shape and no channel can be traced. Where each computed size is either a constant or the same symbolic
size that the reshaped tensor has on the same axis, the target becomes a constant with 0 there ("copy this
size from the input"), which is the same reshape for every input size; one size that is neither (a
product, ``x.view(b * n, c)``) becomes -1. The dynamo exporter computes such
sizes from the model's inputs (``input_ids.shape``) rather than from the tensor reshaped; their symbolic
sizes are the same names.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class Product:
    """A product of symbolic sizes and a constant: tf2onnx's einsum merges the batch with the heads so
    (ReduceProd of two sizes of a Shape)."""

    symbols: tuple[str, ...]  # sorted, with repeats
    factor: int


Dim = int | str | Product | None  # a size: known, symbolic (ONNX dim_param), a product of them, or unknown
# Shape computations are short; longer chains or larger constants are not followed.
MAX_DEPTH = 24
MAX_ELEMENTS = 16
# ONNX shape inference names a size it makes up unk__0, unk__1, ... afresh on every run: a Reshape's -1 is
# only given a size of the model's own (the next run may give such a name to another size).
FRESH_SIZE = "unk__"


def constant_reshape_targets(graph: gs.Graph) -> int:
    """Replace the computed targets of Reshape nodes with constants where that is exact (see the module
    docstring); returns how many were replaced. Shapes must be inferred; call again after re-inferring,
    as each replacement lets inference reach further."""
    replaced = 0
    taken = _names(graph)
    sizes = _MadeUpSizes(graph)
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2 or isinstance(node.inputs[1], gs.Constant):
            continue
        target = _values(node.inputs[1], 0, sizes)
        data_shape = node.inputs[0].shape
        if target is None or data_shape is None:
            continue
        constant: list[int | None] = []
        for axis, size in enumerate(target):
            if isinstance(size, int):
                constant.append(size)
            elif size is not None and axis < len(data_shape) and data_shape[axis] == size:
                constant.append(0)
            else:
                constant.append(None)
        if constant.count(None) == 1 and -1 not in constant:
            # One size left unknown (a product such as batch x length): every valid run gives it the
            # element count over the others, which is what -1 infers.
            constant[constant.index(None)] = -1
        elif constant.count(None) == 1 and constant.count(-1) == 1:
            _solve_product(constant, target, node.inputs[0], sizes)
        if None not in constant:
            if node.attrs.get("allowzero", 0):
                # The dynamo exporter sets allowzero, where 0 means a size of zero, not "copy". Copying
                # gives the same sizes (the computed ones are the input's own), unless a constant is 0.
                if 0 in target:
                    continue
                node.attrs["allowzero"] = 0
            node.inputs[1] = gs.Constant(_unique(taken, f"{node.name}_target"), np.array(constant, dtype=np.int64))
            replaced += 1
        else:
            replaced += _known_parts_constant(node.inputs[1], taken)
    return replaced


def _known_parts_constant(target: gs.Tensor, taken: set[str]) -> int:
    """Make the parts of a computed target (the inputs of the Concat that builds it) whose sizes are all known
    constants; returns how many. ONNX Runtime's optimizer rewrites the Shape of a transposed tensor as a
    Gather of the Shape, and graphsurgeon does not fold a size picked from that Gather: DPT's reshape of
    its readout tokens back to a map then read the channel count off another tensor, which tied the two."""
    concat = target.inputs[0] if len(target.inputs) == 1 else None
    if concat is None or concat.op != "Concat":
        return 0
    made = 0
    for index, part in enumerate(concat.inputs):
        values = None if isinstance(part, gs.Constant) else _values(part, 0)
        if values is not None and all(isinstance(v, int) for v in values) and part.shape == [len(values)]:
            concat.inputs[index] = gs.Constant(_unique(taken, f"{concat.name}_part{index}"),
                                               np.array(values, dtype=np.int64))
            made += 1
    return made


def _solve_product(constant: list[int | None], target: list[Dim], data: gs.Tensor, sizes: _MadeUpSizes) -> None:
    """Where a target has both -1 and one symbolic product ([B x H, -1, T] of a [B, H, D, T] tensor), the
    size -1 stands for is the element count over the others when that is a plain number: it becomes that
    number and the product -1 instead ([-1, D, T]), in place. Sizes that inference made up are first
    written as products of the model's own (see ``_MadeUpSizes``): TorchScript's windowed attention (SAM,
    ViTDet) reshapes [windows x heads, T, D] to [windows, heads, h, w, -1], the windows read off another
    tensor, both sizes made up."""
    unknown, inferred = constant.index(None), constant.index(-1)
    others = [target[unknown]] + [data.shape[a] if c == 0 else c for a, c in enumerate(constant) if a not in (unknown, inferred)]
    total, rest = _product(list(data.shape)), _product(others)
    size = _quotient(total, rest) if total is not None and rest is not None else None
    if size is None:
        size = _quotient(sizes.elements(data), sizes.resolved(rest))
    if size is not None and not size.symbols and size.factor > 0:  # (else the size -1 stands for is symbolic)
        constant[inferred], constant[unknown] = size.factor, -1


def _quotient(total: Product | None, part: Product | None) -> Product | None:
    """``total`` over ``part`` where that is a product of whole sizes (None otherwise, or without both)."""
    if total is None or part is None or part.factor == 0 or total.factor % part.factor:
        return None
    left = Counter(total.symbols)
    left.subtract(part.symbols)
    if any(count < 0 for count in left.values()):
        return None
    return Product(tuple(sorted(left.elements())), total.factor // part.factor)


class _MadeUpSizes:
    """Sizes that ONNX shape inference made up, as products of the model's own sizes where element counts
    prove them: a tensor holds as many elements as the one it was reshaped, transposed or squeezed from,
    a Split's part or a MatMul's product a known share of its input's, and a broadcasting op's output the
    product of the sizes its inputs agree on, axis by axis. Names are only compared within one inference
    run (the graph as it is now)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self._holders: dict[str, list[tuple[gs.Tensor, int]]] | None = None
        self._counts: dict[str, Product | None] = {}
        self._sizes: dict[str, Product | None] = {}

    def elements(self, tensor: gs.Tensor, depth: int = 0) -> Product | None:
        """The element count of ``tensor`` in the model's own sizes, or None."""
        if tensor.name in self._counts:
            return self._counts[tensor.name]
        count = _product(list(tensor.shape)) if tensor.shape is not None else None
        if count is not None and any(_made_up(s) for s in count.symbols):
            self._counts[tensor.name] = None  # while it is traced: a count that needs itself is not known
            count = self._traced(tensor, depth) if depth <= MAX_DEPTH else None
        self._counts[tensor.name] = count
        return count

    def _traced(self, tensor: gs.Tensor, depth: int) -> Product | None:
        node = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        shape = list(tensor.shape)
        if node is None or not node.inputs:
            return None
        source = node.inputs[0]
        if node.op in _COUNT_KEEPING_OPS:
            return self.elements(source, depth + 1)
        if node.op in _BROADCASTING_OPS:
            same = [t for t in node.inputs if t.shape is not None and list(t.shape) == shape]
            return self.elements(same[0], depth + 1) if same else self._broadcast([t.shape for t in node.inputs], len(shape))
        if node.op == "Split" and source.shape is not None:
            axis = node.attrs.get("axis", 0) % len(shape)
            return self._scaled(source, depth, shape[axis], source.shape[axis])
        if node.op == "MatMul" and source.shape is not None and list(source.shape[:-1]) == shape[:-1]:
            return self._scaled(source, depth, shape[-1], source.shape[-1])  # [.., M, K] x [K, N] -> [.., M, N]
        if node.op == "MatMul" and len(shape) >= 2 and all(t.shape is not None and len(t.shape) >= 2 for t in node.inputs):
            a, b = (list(t.shape) for t in node.inputs)  # [.., M, K] x [.., K, N]: the batches broadcast
            batch = self._broadcast([a[:-2], b[:-2]], len(shape) - 2)
            return _product([batch, self._dim(a[-2]), self._dim(b[-1])])
        return None

    def _broadcast(self, shapes: list[list[Dim] | None], rank: int) -> Product | None:
        """The element count of ``shapes`` broadcast to ``rank`` axes: on each axis the one size that their
        sizes other than 1 are (TorchScript's SAM adds the image batch N to windows merged back into images,
        a size made up that proves to be N), or None where they are not one."""
        symbols: list[str] = []
        factor = 1
        for offset in range(1, rank + 1):  # axes counted from the end, as broadcasting aligns them
            sizes = set()
            for shape in shapes:
                if shape is None:
                    return None
                if len(shape) >= offset:
                    size = self._dim(shape[-offset])
                    if size is None:
                        return None
                    sizes.discard(Product((), 1))
                    if size != Product((), 1) or not sizes:
                        sizes.add(size)
            if len(sizes) != 1:
                return None
            size = sizes.pop()
            symbols += size.symbols
            factor *= size.factor
        return Product(tuple(sorted(symbols)), factor)

    def _dim(self, size: Dim) -> Product | None:
        """One size as a product of the model's own sizes, or None."""
        if isinstance(size, int) and size >= 0:
            return Product((), size)
        if isinstance(size, str):
            return self._size(size) if _made_up(size) else Product((size,), 1)
        return None

    def _scaled(self, source: gs.Tensor, depth: int, times: Dim, over: Dim) -> Product | None:
        """The element count of ``source`` times ``times`` over ``over`` (both known sizes)."""
        count = self.elements(source, depth + 1)
        if count is None or not isinstance(times, int) or not isinstance(over, int) or over <= 0:
            return None
        return _quotient(Product(count.symbols, count.factor * times), Product((), over))

    def resolved(self, product: Product | None) -> Product | None:
        """``product`` with its made-up sizes written as products of the model's own, or None."""
        if product is None:
            return None
        symbols, factor = [], product.factor
        for symbol in product.symbols:
            size = self._size(symbol) if _made_up(symbol) else Product((symbol,), 1)
            if size is None:
                return None
            symbols += size.symbols
            factor *= size.factor
        return Product(tuple(sorted(symbols)), factor)

    def _size(self, symbol: str) -> Product | None:
        """A made-up size from a tensor that holds it as its only made-up size."""
        if symbol not in self._sizes:
            self._sizes[symbol] = None  # while it is looked for: a size that needs itself is not known
            self._sizes[symbol] = self._held_size(symbol)
        return self._sizes[symbol]

    def _held_size(self, symbol: str) -> Product | None:
        if self._holders is None:
            self._holders = {}
            for tensor in self.graph.tensors().values():
                for axis, size in enumerate(tensor.shape or []):
                    if isinstance(size, str) and _made_up(size):
                        self._holders.setdefault(size, []).append((tensor, axis))
        for tensor, axis in self._holders.get(symbol, []):
            others = _product([d for a, d in enumerate(tensor.shape) if a != axis])
            if others is not None and not any(_made_up(s) for s in others.symbols):
                size = _quotient(self.elements(tensor), others)
                if size is not None:
                    return size
        return None


# Ops whose output holds as many elements as their first input.
_COUNT_KEEPING_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Softmax",
                      "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "Neg", "LayerNormalization")


def _product(sizes: list[Dim]) -> Product | None:
    """The product of sizes that are known, symbolic or products themselves (None where one is unknown)."""
    symbols: list[str] = []
    factor = 1
    for size in sizes:
        if isinstance(size, (int, np.integer)) and size >= 0:
            factor *= int(size)
        elif isinstance(size, str):
            symbols.append(size)
        elif isinstance(size, Product):
            symbols += size.symbols
            factor *= size.factor
        else:
            return None
    return Product(tuple(sorted(symbols)), factor)


def _simplest(product: Product) -> Dim:
    """A product as a plain number or symbolic size where it is one."""
    if not product.symbols:
        return product.factor
    return product.symbols[0] if len(product.symbols) == 1 and product.factor == 1 else product


def constant_slice_bounds(graph: gs.Graph) -> int:
    """Replace the computed starts, ends, axes and steps of Slice nodes with constants where every element
    is a known size; returns how many Slices changed. TorchScript writes ``x.chunk(2, 1)`` as Slices
    whose bounds come from Shape(x): folded once at import, but a chunk of a tensor whose channel count
    only a reshape rewrite made known (after a channel shuffle) is met here."""
    return _constant_inputs(graph, "Slice", (1, 2, 3, 4), "bound", lambda values: np.array(values, dtype=np.int64))


def constant_pads(graph: gs.Graph) -> int:
    """Replace the computed pads of Pad nodes with a constant where every element is known; returns how
    many changed. TorchScript writes ``F.pad`` to a computed length so (LongT5 pads its sequence to whole
    blocks), and shape inference then sizes the padded tensor."""
    return _constant_inputs(graph, "Pad", (1,), "pads", lambda values: np.array(values, dtype=np.int64) if values else None)


def decided_ifs(graph: gs.Graph) -> int:
    """Replace the computed condition of If nodes with a constant where the sizes it compares are known;
    returns how many changed (constant folding then keeps the branch taken). TorchScript writes
    ``x.squeeze(2) if x.shape[2] == 1 else x`` so, on a size known only once the pads before it are."""
    return _constant_inputs(graph, "If", (0,), "condition",
                            lambda values: np.array(bool(values[0])) if len(values) == 1 else None)


def _constant_inputs(graph: gs.Graph, op: str, indices: tuple[int, ...], suffix: str, array) -> int:
    """Replace the computed inputs ``indices`` of ``op`` nodes with constants where every element of each is a
    known integer (all of a node's, or none), ``array(values)`` giving the constant (None leaves the node
    alone); returns how many nodes changed. A constant is named after its node, ``suffix`` and, where the
    node has several such inputs, the input's index."""
    replaced = 0
    taken = _names(graph)
    for node in graph.nodes:
        if node.op != op:
            continue
        computed = {i: _values(node.inputs[i], 0) for i in indices if i < len(node.inputs) and node.inputs[i].name
                    and not isinstance(node.inputs[i], gs.Constant)}
        if not computed or any(v is None or not all(isinstance(x, int) for x in v) for v in computed.values()):
            continue
        constants = {i: array(values) for i, values in computed.items()}
        if any(c is None for c in constants.values()):
            continue
        for index, values in constants.items():
            name = f"{node.name}_{suffix}{index if len(indices) > 1 else ''}"
            node.inputs[index] = gs.Constant(_unique(taken, name), values)
        replaced += 1
    return replaced


def reshape_round_trips(graph: gs.Graph) -> int:
    """Replace Reshape [.., T, D] -> [-1, T, D], Transpose (0, 2, 1), Reshape back to [.., D, T] with one
    Transpose of the last two axes, which is the same; returns how many were replaced.

    The dynamo exporter writes the key transpose of ``scaled_dot_product_attention`` so, merging the
    batch with the heads for a moment; the heads then stay visible to the channel rules.
    """
    replaced = 0
    taken = _names(graph)
    for first in list(graph.nodes):
        swap = _swap_after_reshape(first, [0, 2, 1])
        if swap is None:
            continue
        source, shape = first.inputs[0], first.inputs[0].shape
        if shape is None or len(shape) < 3:
            continue
        if len(swap.outputs[0].outputs) != 1 or swap.outputs[0].outputs[0].op != "Reshape":
            continue
        back = swap.outputs[0].outputs[0]
        known = [d if isinstance(d, (int, str)) and (not isinstance(d, int) or d >= 0) else None for d in shape]
        if None in known or _values(first.inputs[1], 0) != [-1, *known[-2:]] or len(back.inputs) < 2:
            continue
        restored = _values(back.inputs[1], 0)  # [.., D, T], or with -1 for one leading size (see above)
        if restored is None or len(restored) != len(known) or restored[-2:] != [known[-1], known[-2]]:
            continue
        if restored[:-2].count(-1) > 1 or any(r not in (k, -1) for r, k in zip(restored[:-2], known[:-2])):
            continue
        perm = [*range(len(shape) - 2), len(shape) - 1, len(shape) - 2]
        result = back.outputs[0]
        back.outputs.clear()
        graph.nodes.append(gs.Node("Transpose", name=_unique(taken, f"{first.name}_transpose"), attrs={"perm": perm},
                                   inputs=[source], outputs=[result]))
        replaced += 1
    if replaced:
        graph.toposort()  # the new nodes were appended after their consumers
    return replaced


def consecutive_reshapes(graph: gs.Graph) -> int:
    """Let a Reshape whose input is another Reshape's output (with a size that shape inference made up)
    read that Reshape's input instead, which is the same; returns how many were so joined.

    ``x.view(-1, h, w).view(-1, c, h * w)`` of a map [N, C, H, W] merges the channels into the batch for a
    moment, which pins them, and ONNX shape inference cannot tell N x C / C, so the batch size is lost for
    the rest of the model. Joined, the channels stay apart and the -1 is N (``computed_sizes``).
    """
    joined = 0
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) != 2 or len(node.inputs[0].inputs) != 1:
            continue
        first = node.inputs[0].inputs[0]
        target = _values(node.inputs[1], 0)
        if first.op != "Reshape" or target is None or (0 in target and not node.attrs.get("allowzero", 0)):
            continue  # a 0 copies a size of the first Reshape's output
        source, middle = first.inputs[0].shape, node.inputs[0].shape
        if source is None or middle is None or not any(_made_up(d) for d in middle) or any(_made_up(d) for d in source):
            continue
        node.inputs[0] = first.inputs[0]
        joined += 1
    return joined


def unshared_scatter_bases(graph: gs.Graph) -> int:
    """Give every ScatterND that writes into a ConstantOfShape (through Transposes) shared with others a copy
    of its own; returns how many copies were made. The dynamo exporter builds multi-head latent attention's
    key from one such zero tensor in every layer; shared, it would tie the heads of all layers together."""
    copies = 0
    for node in list(graph.nodes):
        if node.op != "ScatterND" or not _fill_chain(node.inputs[0]):
            continue
        readers = [reader for reader in node.inputs[0].outputs if reader is not node]
        if readers:
            copies += 1
            node.inputs[0] = _copied_chain(graph, node.inputs[0], f"{node.name}_base")
    if copies:
        graph.toposort()  # shape inference reads the nodes in order
    return copies


def slice_assignments(graph: gs.Graph) -> int:
    """Replace each ScatterND that writes its updates over a block of its data, whole on every axis but one,
    with a Concat of the data's parts around the block and the updates; returns how many were replaced.

    TorchScript writes ``x[..., a:b] = u`` (MiniCPM3's and DeepSeek-V3's key, built in zeros) as an index
    grid: for each axis a Range over it (over a:b for the one), reshaped onto that axis and expanded to the
    block, all concatenated into [..block, rank] indices, and ``u`` expanded and reshaped to the block.
    Each Range is checked for batches of 1, 2 and 3: built from sizes, a step-one run there is one for every
    batch. The identity Expand and Reshape of ``u`` are left out."""
    replaced, taken = 0, None
    for node in list(graph.nodes):
        if node.op != "ScatterND" or node.attrs.get("reduction", "none") != "none":
            continue
        data, indices, updates = node.inputs[:3]
        block = _assigned_block(data, indices)
        if block is None or updates.shape is None or list(updates.shape) != list(indices.shape[:-1]):
            continue
        axis, start, stop = block
        taken = _names(graph) if taken is None else taken
        parts = [_axis_slice(graph, data, axis, 0, start, taken)] if start > 0 else []
        parts.append(_unbroadcast(updates))
        if stop < data.shape[axis]:
            parts.append(_axis_slice(graph, data, axis, stop, data.shape[axis], taken))
        graph.nodes.append(gs.Node("Concat", _unique(taken, f"{node.name}_parts"), {"axis": axis}, parts,
                                   list(node.outputs)))
        node.outputs.clear()
        replaced += 1
    if replaced:
        graph.toposort()
    return replaced


def _assigned_block(data: gs.Tensor, indices: gs.Tensor) -> tuple[int, int, int] | None:
    """(axis, start, stop) of the block a ScatterND's index grid (see ``slice_assignments``) covers, where it
    is whole on every other axis of ``data``; None where the indices are not such a grid."""
    shape, block = data.shape, indices.shape
    if shape is None or block is None or len(block) != len(shape) + 1 or block[-1] != len(shape):
        return None
    rank = len(shape)
    symbols = {size for size in shape if not isinstance(size, int)}
    if len(symbols) > 1 or any(_made_up(size) for size in symbols):
        return None
    symbol = symbols.pop() if symbols else None
    grid = indices.inputs[0] if len(indices.inputs) == 1 else None
    if grid is None or grid.op != "Concat" or int(grid.attrs.get("axis", 0)) % (rank + 1) != rank or len(grid.inputs) != rank:
        return None
    partial = []
    for axis, part in enumerate(grid.inputs):
        run = _index_run(part, axis, list(block[:-1]), symbol)
        if run is None:
            return None
        start, length = run
        if start == 0 and length == shape[axis]:
            continue
        if not isinstance(length, int) or not isinstance(shape[axis], int) or start < 0 or start + length > shape[axis]:
            return None
        partial.append((axis, start, start + length))
    return partial[0] if len(partial) == 1 else None


def _index_run(part: gs.Tensor, axis: int, block: list[Dim], symbol: str | None) -> tuple[int, Dim] | None:
    """(start, length) of the step-one run that ``part`` of an index grid holds along ``axis`` of the
    ``block`` (Unsqueeze(Expand(run placed on the axis), -1)); the length is ``symbol`` where the run is the
    batch's. None where ``part`` is not such a run."""
    rank = len(block)
    unsqueeze = part.inputs[0] if len(part.inputs) == 1 else None
    if unsqueeze is None or unsqueeze.op != "Unsqueeze":
        return None
    axes = unsqueeze.inputs[1] if len(unsqueeze.inputs) > 1 else None
    axes = np.asarray(axes.values).reshape(-1).tolist() if isinstance(axes, gs.Constant) else unsqueeze.attrs.get("axes")
    spread = unsqueeze.inputs[0]
    expand = spread.inputs[0] if len(spread.inputs) == 1 else None
    if list(axes or []) not in ([-1], [rank]) or expand is None or expand.op != "Expand" or list(spread.shape or []) != block:
        return None
    run = expand.inputs[0]
    position = axis - (rank - len(run.shape)) if run.shape is not None else -1
    if position < 0:
        return None
    found = None
    for batch in (1, 2, 3) if symbol else (1,):
        value = _evaluated(run, symbol or "", batch, 0)  # "" matches no size
        if value is None or value.ndim != len(run.shape) or any(n != 1 for i, n in enumerate(value.shape) if i != position):
            return None
        flat = value.reshape(-1)
        if flat.size == 0 or not np.array_equal(flat, flat[0] + np.arange(flat.size)):
            return None
        length = symbol if block[axis] == symbol and flat.size == batch else flat.size
        if length != block[axis] or found not in (None, (int(flat[0]), length)):
            return None
        found = (int(flat[0]), length)
    return found


def _unbroadcast(tensor: gs.Tensor) -> gs.Tensor:
    """``tensor``, or what it is an Expand or Reshape of (and so on) where that keeps its shape."""
    for _ in range(MAX_DEPTH):
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        if producer is None or producer.op not in ("Expand", "Reshape"):
            break
        source = producer.inputs[0]
        if source.shape is None or tensor.shape is None or list(source.shape) != list(tensor.shape) \
                or any(_made_up(size) for size in source.shape):
            break
        tensor = source
    return tensor


def _axis_slice(graph: gs.Graph, data: gs.Tensor, axis: int, start: int, stop: int, taken: set[str]) -> gs.Tensor:
    """``data[start:stop]`` along ``axis``: the input of a Concat along it that is exactly that, or a Slice."""
    producer = data.inputs[0] if len(data.inputs) == 1 else None
    if producer is not None and producer.op == "Concat" and int(producer.attrs["axis"]) % len(data.shape) == axis:
        offset = 0
        for part in producer.inputs:
            size = part.shape[axis] if part.shape is not None else None
            if not isinstance(size, int):
                break
            if (offset, offset + size) == (start, stop):
                return part
            offset += size
    shape = list(data.shape)
    shape[axis] = stop - start
    piece = gs.Variable(_unique(taken, f"{data.name}_{start}_{stop}"), dtype=data.dtype, shape=shape)
    bounds = [gs.Constant(_unique(taken, f"{piece.name}_{what}"), np.array([value], np.int64))
              for what, value in (("start", start), ("stop", stop), ("axis", axis))]
    graph.nodes.append(gs.Node("Slice", _unique(taken, f"{piece.name}_slice"), inputs=[data, *bounds], outputs=[piece]))
    return piece


def _fill_chain(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is a ConstantOfShape's output, or a Transpose's of one (and so on)."""
    for _ in range(MAX_DEPTH):
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        if producer is None or producer.op not in ("ConstantOfShape", "Transpose"):
            return False
        if producer.op == "ConstantOfShape":
            return True
        tensor = producer.inputs[0]
    return False


def _copied_chain(graph: gs.Graph, tensor: gs.Tensor, name: str) -> gs.Variable:
    """A copy of ``tensor``'s ``_fill_chain`` (the shape it is filled to stays shared)."""
    producer = tensor.inputs[0]
    inputs = list(producer.inputs)
    if producer.op == "Transpose":
        inputs[0] = _copied_chain(graph, inputs[0], name)
    copy = gs.Variable(f"{name}_{tensor.name}", dtype=tensor.dtype, shape=tensor.shape)
    graph.nodes.append(gs.Node(producer.op, f"{name}_{producer.name}", dict(producer.attrs), inputs, [copy]))
    return copy


def _made_up(size: Dim) -> bool:
    """Whether a size is unknown, or one that ONNX shape inference made up."""
    return size is None or isinstance(size, str) and size.startswith(FRESH_SIZE)


def refines_shape(new: list[Dim], old: list[Dim] | None) -> bool:
    """Whether shape ``new`` tells a size that ``old`` does not (sizes made up afresh on every inference run
    tell nothing, so two runs that only renamed them agree)."""
    if old is None or len(new) != len(old):
        return True
    return any(not _made_up(n) and n != o for n, o in zip(new, old))


def _swap_after_reshape(node: gs.Node, perm: list[int]) -> gs.Node | None:
    """The Transpose with ``perm`` that is the only consumer of ``node``, a Reshape (or None), past quantization
    pairs (see ``_quantization_pairs``)."""
    if node.op != "Reshape" or len(node.inputs) < 2 or not node.outputs:
        return None
    tensor = _quantization_pairs(node.outputs[0])[1]
    if len(tensor.outputs) != 1:
        return None
    swap = tensor.outputs[0]
    return swap if swap.op == "Transpose" and list(swap.attrs.get("perm", [])) == perm else None


def _quantization_pairs(tensor: gs.Tensor) -> tuple[list[tuple[gs.Node, gs.Node]], gs.Tensor]:
    """The QuantizeLinear -> DequantizeLinear pairs with one scale for the whole tensor that ``tensor`` alone
    passes through (a QDQ model quantizes every Reshape's and Transpose's output), and the tensor after them.
    Such a pair rounds each element alike, so it commutes with moving the elements."""
    pairs = []
    while len(tensor.outputs) == 1 and tensor.outputs[0].op == "QuantizeLinear":
        quantize = tensor.outputs[0]
        readers = quantize.outputs[0].outputs
        if len(readers) != 1 or readers[0].op != "DequantizeLinear" or not all(
                _scalar_input(n, i) for n in (quantize, readers[0]) for i in (1, 2)):
            break
        pairs.append((quantize, readers[0]))
        tensor = readers[0].outputs[0]
    return pairs, tensor


def _scalar_input(node: gs.Node, index: int) -> bool:
    """Whether input ``index`` of ``node`` is absent or a constant with one value."""
    if len(node.inputs) <= index or node.inputs[index].is_empty():
        return True
    values = _values(node.inputs[index], 0)
    return values is not None and len(values) == 1


def batch_head_round_trips(graph: gs.Graph) -> int:
    """Replace Reshape [A, B, E] -> [A, B x H, D], Transpose (1, 0, 2), Reshape to [B, H, A, D] with Reshape
    to [A, B, H, D] and Transpose (1, 2, 0, 3), which is the same; returns how many were replaced.

    ``nn.MultiheadAttention`` exports its query, key and value so (sequence first, the batch merged with
    the heads for a moment); with the heads an axis of their own, the channel rules see them.
    """
    replaced = 0
    taken = _names(graph)
    for first in list(graph.nodes):
        swap = _swap_after_reshape(first, [1, 0, 2])
        if swap is None:
            continue
        source, shape = first.inputs[0], first.inputs[0].shape
        if shape is None or len(shape) != 3:
            continue
        pairs, swapped = _quantization_pairs(first.outputs[0])[0], swap.outputs[0]
        if len(swapped.outputs) == 1:  # (a quantization pair after the Transpose, if any, moves too)
            after, swapped = _quantization_pairs(swapped)
            pairs += after
        backs = [n for n in swapped.outputs if n.op == "Reshape" and len(n.inputs) > 1]
        merged, split = _values(first.inputs[1], 0), _values(backs[0].inputs[1], 0) if len(backs) == 1 else None
        if merged is None or split is None or len(merged) != 3 or len(split) != 4:
            continue
        batch, heads, length, size = split
        if first.attrs.get("allowzero", 0) and 0 in merged:  # 0 would be a size of zero, not "copy"
            continue
        if (merged[0] not in (shape[0], 0) or merged[2] != size or length != shape[0] or batch not in (shape[1], -1)
                or not isinstance(heads, int) or not isinstance(size, int) or heads * size != shape[2]):
            continue
        result = backs[0].outputs[0]
        backs[0].outputs.clear()
        target = gs.Constant(_unique(taken, f"{first.name}_heads"), np.array([0, 0, heads, size], dtype=np.int64))
        split_heads = gs.Variable(_unique(taken, f"{first.name}_split_heads"), dtype=source.dtype)
        moved = gs.Variable(_unique(taken, f"{first.name}_heads_first"), dtype=source.dtype) if pairs else result
        graph.nodes += [gs.Node("Reshape", name=_unique(taken, f"{first.name}_heads"), inputs=[source, target],
                                outputs=[split_heads]),
                        gs.Node("Transpose", name=_unique(taken, f"{first.name}_heads_first"), attrs={"perm": [1, 2, 0, 3]},
                                inputs=[split_heads], outputs=[moved])]
        for index, (quantize, dequantize) in enumerate(pairs):  # the same rounding, after the elements moved
            rounded = gs.Variable(_unique(taken, f"{quantize.name}_moved"), dtype=quantize.outputs[0].dtype)
            last = index == len(pairs) - 1
            back = result if last else gs.Variable(_unique(taken, f"{dequantize.name}_moved"), dtype=source.dtype)
            graph.nodes += [gs.Node("QuantizeLinear", _unique(taken, f"{quantize.name}_moved"), dict(quantize.attrs),
                                    [moved, *quantize.inputs[1:]], [rounded]),
                            gs.Node("DequantizeLinear", _unique(taken, f"{dequantize.name}_moved"),
                                    dict(dequantize.attrs), [rounded, *dequantize.inputs[1:]], [back])]
            moved = back
        replaced += 1
    if replaced:
        graph.toposort()
    return replaced


def flattened_linears(graph: gs.Graph) -> int:
    """Replace Reshape [.., C] -> [-1, C], then a Gemm, with a MatMul (and an Add of the bias) of the
    unflattened tensor, Reshaped to [-1, N] only for readers other than Reshapes; returns how many were
    replaced.

    onnxsim (and tf2onnx for a Dense layer on a sequence) writes a linear layer of [T, N, C] so, and
    reshapes its output back with a target of its own: [T, N x heads, D] for attention heads, which the
    other patterns here only meet on the unflattened tensor. A Reshape of the output reads the same
    elements in the same order from [T, N, N'] as from [T x N, N'].
    """
    replaced = 0
    taken = _names(graph)
    for flatten in list(graph.nodes):
        if flatten.op != "Reshape" or len(flatten.inputs) < 2 or not flatten.outputs or len(flatten.outputs[0].outputs) != 1:
            continue
        source, shape, gemm = flatten.inputs[0], flatten.inputs[0].shape, flatten.outputs[0].outputs[0]
        if shape is None or len(shape) < 3 or not isinstance(shape[-1], int) or _values(flatten.inputs[1], 0) != [-1, shape[-1]]:
            continue
        if gemm.op != "Gemm" or gemm.inputs[0] is not flatten.outputs[0] or gemm.attrs.get("transA", 0):
            continue
        weight = _linear_weight(gemm, taken)
        bias = _linear_bias(gemm, taken, weight.shape[1] if weight is not None and weight.shape else None)
        if weight is None or bias is None:
            continue
        flat = gemm.outputs[0]
        gemm.outputs.clear()
        product = gs.Variable(_unique(taken, f"{gemm.name}_unflattened"), dtype=flat.dtype)
        graph.nodes.append(gs.Node("MatMul", name=_unique(taken, f"{gemm.name}_matmul"), inputs=[source, weight], outputs=[product]))
        if not bias.is_empty():
            summed = gs.Variable(_unique(taken, f"{gemm.name}_unflattened_bias"), dtype=flat.dtype)
            graph.nodes.append(gs.Node("Add", name=_unique(taken, f"{gemm.name}_bias"), inputs=[product, bias], outputs=[summed]))
            product = summed
        target = gs.Constant(_unique(taken, f"{gemm.name}_flat_shape"), np.array([-1, weight.shape[1]], dtype=np.int64))
        graph.nodes.append(gs.Node("Reshape", name=_unique(taken, f"{gemm.name}_flatten"), inputs=[product, target], outputs=[flat]))
        for reader in list(flat.outputs):
            target = _values(reader.inputs[1], 0) if reader.op == "Reshape" and len(reader.inputs) > 1 else None
            if reader.inputs[0] is flat and target is not None and (0 not in target or reader.attrs.get("allowzero", 0)):
                reader.inputs[0] = product  # 0 would copy a size of the other input
        replaced += 1
    if replaced:
        graph.toposort()
    return replaced


def strided_identity_views(graph: gs.Graph) -> int:
    """Replace Gather(Reshape(x, [-1]), indices) whose indices, computed at run time from x's batch size,
    read every element of x in order (an identity ``as_strided``) with a Reshape of x to the indices'
    shape; returns how many were replaced.

    The dynamo exporter writes a view of a tensor in PyTorch's channels-last memory format so (a flatten
    after global pooling, in a model moved to ``torch.channels_last``): Range(0, N) times a stride, plus
    constant offsets per axis. The indices are checked for batches of 1, 2 and 3: affine in the batch index
    as they are built, they are then the identity for every batch.
    """
    replaced = 0
    taken = _names(graph)
    for node in list(graph.nodes):
        if node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0 or len(node.inputs) != 2:
            continue
        flat, indices = node.inputs
        if len(flat.inputs) != 1 or flat.inputs[0].op != "Reshape" or _values(flat.inputs[0].inputs[1], 0) != [-1]:
            continue
        source = flat.inputs[0].inputs[0]
        shape = source.shape
        if not shape or not isinstance(shape[0], str) or not all(isinstance(d, int) for d in shape[1:]):
            continue
        per_sample = int(np.prod(shape[1:]))
        layout = None
        for batch in (1, 2, 3):
            value = _evaluated(indices, shape[0], batch, 0)
            if value is None or value.size != batch * per_sample or not np.array_equal(value.reshape(-1), np.arange(value.size)):
                break
            if value.shape[0] != batch:
                break
            layout = list(value.shape[1:])
        else:
            target = gs.Constant(_unique(taken, f"{node.name}_shape"), np.array([-1, *layout], np.int64))
            graph.nodes.append(gs.Node("Reshape", name=_unique(taken, f"{node.name}_view"), inputs=[source, target],
                                       outputs=[node.outputs[0]]))
            node.outputs.clear()
            replaced += 1
    if replaced:
        graph.toposort()
    return replaced


def _evaluated(tensor: gs.Tensor, batch_symbol: str, batch: int, depth: int) -> np.ndarray | None:
    """The value of a small index computation from constants and tensor sizes, with the symbolic size
    ``batch_symbol`` set to ``batch``; None where it uses anything else (another symbolic size, an op not
    listed here)."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values) if tensor.values.size <= 4096 else None
    if depth > MAX_DEPTH or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Shape":
        dims = node.inputs[0].shape
        if dims is None:
            return None
        sizes = [batch if d == batch_symbol else d for d in dims][slice(node.attrs.get("start", 0), node.attrs.get("end"))]
        return np.array(sizes, np.int64) if all(isinstance(d, int) for d in sizes) else None
    inputs = [_evaluated(t, batch_symbol, batch, depth + 1) if t.name else None for t in node.inputs]
    if any(value is None for value in inputs):
        return None
    if node.op == "Range" and all(v.size == 1 for v in inputs):
        return np.arange(*(v.reshape(()) for v in inputs))
    if node.op in ("Add", "Mul", "Sub") and len(inputs) == 2:
        return {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract}[node.op](*inputs)
    if node.op in ("Unsqueeze", "Squeeze"):
        axes = inputs[1] if len(inputs) > 1 else node.attrs.get("axes")
        if axes is None:
            return np.squeeze(inputs[0]) if node.op == "Squeeze" else None
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
        if node.op == "Squeeze":
            return np.squeeze(inputs[0], axis=tuple(axes))
        return np.expand_dims(inputs[0], [a % (inputs[0].ndim + len(axes)) for a in axes])
    if node.op == "Gather" and len(inputs) == 2:
        return np.take(inputs[0], inputs[1], axis=int(node.attrs.get("axis", 0)))
    if node.op in ("Cast", "Identity"):
        return inputs[0]
    if node.op == "Slice" and len(inputs) >= 3:
        starts, ends = inputs[1].reshape(-1), inputs[2].reshape(-1)
        axes = inputs[3].reshape(-1) if len(inputs) > 3 else range(len(starts))
        steps = inputs[4].reshape(-1) if len(inputs) > 4 else [1] * len(starts)
        index = [slice(None)] * inputs[0].ndim
        for axis, start, end, step in zip(axes, starts, ends, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return inputs[0][tuple(index)]
    if node.op == "Reshape" and len(inputs) == 2 and inputs[1].size:
        target = [d if d else inputs[0].shape[i] for i, d in enumerate(inputs[1].tolist())]
        return inputs[0].reshape(target)
    return None


def _linear_weight(gemm: gs.Node, taken: set[str]) -> gs.Tensor | None:
    """The [C, N] weight a MatMul needs for ``gemm`` (its own where it is not transposed or scaled)."""
    weight, alpha = gemm.inputs[1], float(gemm.attrs.get("alpha", 1.0))
    if weight.shape is None or len(weight.shape) != 2 or not all(isinstance(d, int) for d in weight.shape):
        return None
    if not gemm.attrs.get("transB", 0) and alpha == 1.0:
        return weight
    if not isinstance(weight, gs.Constant):
        return None
    values = np.asarray(weight.values)
    values = (values.T if gemm.attrs.get("transB", 0) else values) * np.asarray(alpha, dtype=values.dtype)
    return gs.Constant(_unique(taken, f"{weight.name}_matmul"), np.ascontiguousarray(values))


def _linear_bias(gemm: gs.Node, taken: set[str], outputs: int | None) -> gs.Tensor | None:
    """``gemm``'s bias as an Add broadcasts it to any leading axes (an empty tensor without one), or None
    where it is not a vector of ``outputs``."""
    if len(gemm.inputs) < 3 or gemm.inputs[2].is_empty():
        return gs.Variable.empty()
    bias, beta = gemm.inputs[2], float(gemm.attrs.get("beta", 1.0))
    if outputs is None or bias.shape is None or [d for d in bias.shape if d != 1] != [outputs] or bias.shape[-1] != outputs:
        return None
    if beta == 1.0:
        return bias
    if not isinstance(bias, gs.Constant):
        return None
    values = np.asarray(bias.values)
    return gs.Constant(_unique(taken, f"{bias.name}_scaled"), values * np.asarray(beta, dtype=values.dtype))


_SCALAR_OPS = ("Mul", "Div", "Add", "Sub")


def merged_head_attentions(graph: gs.Graph) -> int:
    """Lift attention computed on [.., N x heads, ..] to [.., N, heads, ..]; returns how many Reshapes
    starting such a computation were lifted.

    ``nn.MultiheadAttention`` with ``need_weights=True`` (its default) exports its attention so: each of
    q, k, v reshaped [T, N, E] -> [T, N x heads, D], then Transposes, scalings, MatMuls and a Softmax, and a
    Reshape to constant sizes at the end. Split into two axes, the merged one becomes [N, heads]: the
    Reshapes at the start get [0, 0, heads, D], the Transposes and the Softmax axis move with it, and the
    rest is unchanged (MatMul broadcasts the extra axis; the end Reshape reads the same elements in the
    same order). Only regions whose every tensor flows into one of those ops are lifted.
    """
    starts: dict[int, tuple[gs.Node, list[int], int]] = {}  # Reshape -> its lifted target, the merged axis
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2 or not node.outputs:
            continue
        target = _values(node.inputs[1], 0)
        lifted = _lifted_target(node.inputs[0].shape, target)
        if lifted is not None and not (node.attrs.get("allowzero", 0) and 0 in target):  # 0: a size of zero
            starts[id(node)] = (node, *lifted)
    while starts:
        region = _merged_region(graph, starts)
        if isinstance(region, set):  # the starts these reach a node that would see the new axis
            starts = {key: value for key, value in starts.items() if key not in region}
            continue
        taken = _names(graph)
        for node, target, _ in starts.values():
            node.inputs[1] = gs.Constant(_unique(taken, f"{node.name}_heads"), np.array(target, dtype=np.int64))
            node.attrs.pop("allowzero", None)  # the default, 0 (before opset 14 there is no such attribute)
        for node, position in region:
            if node.op == "Transpose":
                expand = {a: [a] if a < position else [a, a + 1] if a == position else [a + 1] for a in range(3)}
                node.attrs["perm"] = [axis for old in node.attrs["perm"] for axis in expand[old]]
            elif node.op == "Softmax":
                axis = int(node.attrs.get("axis", -1)) % 3
                node.attrs["axis"] = axis + (axis > position)
        return len(starts) if region else 0
    return 0


def _lifted_target(shape: list | None, target: list[Dim] | None) -> tuple[list[int], int] | None:
    """The target that keeps the heads an axis of their own, and the merged axis, of a Reshape from
    ``shape`` to ``target`` that starts an attention computed with the heads merged into another axis."""
    if shape is None or target is None or len(target) != 3:
        return None
    if len(shape) == 3 and isinstance(shape[2], int):  # [T, N, E] -> [T, N x heads, D]
        size = target[2]
        if isinstance(size, int) and 0 < size < shape[2] and shape[2] % size == 0 and target[0] in (shape[0], 0):
            return [0, 0, shape[2] // size, size], 1
        return None
    # tf2onnx's einsum: [N, heads, 1, D, T] or [N, heads, T, 1, D] -> [-1, .., ..] (1s where it unsqueezed)
    sizes = [d for d in shape if d != 1]
    if (len(shape) >= 4 and shape[0] != 1 and len(sizes) == 4 and target[0] == -1 and list(target[1:]) == sizes[2:]
            and all(isinstance(d, int) and d > 1 for d in [sizes[1], *target[1:]])):
        return [0, sizes[1], *target[1:]], 0
    return None


def _merged_region(graph: gs.Graph, starts: dict[int, tuple[gs.Node, list[int], int]]) -> list[tuple[gs.Node, int]] | set[int]:
    """The nodes fed from ``starts`` (see ``merged_head_attentions``) with the merged axis of their input,
    or the keys of the starts that reach a node that cannot take the lifted axis."""
    positions: dict[str, int] = {}  # the merged axis of each tensor reached
    origins: dict[str, set[int]] = {}  # the starts each tensor comes from
    for key, (node, _, position) in starts.items():
        positions[node.outputs[0].name], origins[node.outputs[0].name] = position, {key}
    region: list[tuple[gs.Node, int]] = []
    done: set[int] = set()
    pending = [node.outputs[0] for node, _, _ in starts.values()]
    while pending:
        tensor = pending.pop()
        position, origin = positions[tensor.name], origins[tensor.name]
        if tensor in graph.outputs:
            return origin
        for node in tensor.outputs:
            if id(node) in done:
                continue
            if node.op == "Transpose" and node.inputs[0] is tensor and len(node.attrs.get("perm", [])) == 3:
                after = list(node.attrs["perm"]).index(position)
            elif node.op in _SCALAR_OPS and len(node.inputs) == 2 and _scalar(node.inputs[1 if node.inputs[0] is tensor else 0]):
                after = position
            elif node.op == "Softmax" and int(node.attrs.get("axis", -1)) % 3 != position:
                after = position
            elif node.op == "MatMul" and position == 0:
                other = node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]
                if other.name not in positions:
                    continue  # met again from the other side, or a failure below
                if positions[other.name] != 0:
                    return origin | origins[other.name]
                after, origin = 0, origin | origins[other.name]
            elif (node.op == "Reshape" and node.inputs[0] is tensor and isinstance(node.inputs[1], gs.Constant)
                  and 0 not in np.asarray(node.inputs[1].values)):
                done.add(id(node))  # an end: the same elements in the same order
                continue
            else:
                return origin  # anything else would see the new axis
            done.add(id(node))
            region.append((node, position))
            positions[node.outputs[0].name], origins[node.outputs[0].name] = after, origin
            pending.append(node.outputs[0])
    # A MatMul met from one side only reads another input that the lift would leave as it is.
    tensors = graph.tensors()
    for name, origin in origins.items():
        if any(id(node) not in done for node in tensors[name].outputs):
            return origin
    return region


def _scalar(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and int(np.prod(tensor.shape)) == 1 and len(tensor.shape) <= 1


def packed_projection_selects(graph: gs.Graph) -> int:
    """Replace Reshape [.., K x E] -> [.., K, E], then Unsqueeze / Transpose / Squeeze bringing the K axis
    first, then Gather of part i along it, with part i of a Split of the last axis, which is the same;
    returns how many packed projections were replaced.

    ``nn.MultiheadAttention`` exports its packed query-key-value projection so; Split is a channel op.
    """
    replaced = 0
    taken = _names(graph)
    for reshape in list(graph.nodes):
        if reshape.op != "Reshape" or len(reshape.inputs) < 2 or not reshape.outputs:
            continue
        source, shape, target = reshape.inputs[0], reshape.inputs[0].shape, _values(reshape.inputs[1], 0)
        if not shape or target is None or len(target) < 3 or not isinstance(shape[-1], int):
            continue  # (a scalar reshaped to [1], as the dynamo exporter does with sizes read at run time)
        parts, size, leading = target[-2], target[-1], target[:-2]
        if not isinstance(parts, int) or not isinstance(size, int) or parts < 2 or parts * size != shape[-1]:
            continue
        if leading.count(-1) > 1 or reshape.attrs.get("allowzero", 0) and 0 in target:  # 0: a size of zero, not "copy"
            continue
        # Leading axes of size 1 may be squeezed on the way to the selections (onnxsim folds the Unsqueeze
        # that follows the Reshape into it: [T, N, 3E] -> [1, T, N, 3, E], moved and squeezed).
        names = ["1" if t == 1 else f"d{i}" for i, t in enumerate(leading)]
        labels, tensor = names + ["part", "size"], reshape.outputs[0]
        while (labels is not None and len(tensor.outputs) == 1 and tensor.outputs[0].op in ("Unsqueeze", "Transpose", "Squeeze")
               and tensor.outputs[0].inputs[0] is tensor):
            labels, tensor = _moved_labels(tensor.outputs[0], labels), tensor.outputs[0].outputs[0]
        selections = _part_selections(tensor, labels, parts) if labels is not None else None
        layout = [label for label in labels if label != "part"] if selections else None
        if layout is None or [n for n in layout if n != "1"] != [n for n in names if n != "1"] + ["size"]:
            continue
        # The selections' shape: the leading sizes with 1s squeezed out or put in, the packed axis last.
        selected = [1 if n == "1" else leading[int(n[1:])] for n in layout[:-1]]
        if not (len(selected) == len(shape) - 1 and all(t in (d, 0, -1) for t, d in zip(selected, shape[:-1]))):
            # The leading axes are reshaped too (or onnxsim flattened them for a Gemm): that comes first.
            if not all(isinstance(t, int) and t != 0 for t in selected):
                continue
            lead = gs.Variable(_unique(taken, f"{reshape.name}_leading"), dtype=source.dtype)
            sizes = gs.Constant(_unique(taken, f"{reshape.name}_leading_shape"), np.array([*selected, shape[-1]], np.int64))
            graph.nodes.append(gs.Node("Reshape", name=_unique(taken, f"{reshape.name}_leading"), inputs=[source, sizes],
                                       outputs=[lead]))
            source = lead
        outputs = [gs.Variable(_unique(taken, f"{reshape.name}_part{i}"), dtype=source.dtype) for i in range(parts)]
        for part, select, result in selections:
            select.outputs.clear()
            graph.nodes.append(gs.Node("Identity", name=_unique(taken, f"{select.name}_part"), inputs=[outputs[part]],
                                       outputs=[result]))
        split = gs.Constant(_unique(taken, f"{reshape.name}_sizes"), np.full(parts, size, dtype=np.int64))
        graph.nodes.append(gs.Node("Split", name=_unique(taken, f"{reshape.name}_split"), attrs={"axis": len(selected)},
                                   inputs=[source, split], outputs=outputs))
        replaced += 1
    if replaced:
        graph.toposort()
    return replaced


def _moved_labels(node: gs.Node, labels: list[str]) -> list[str] | None:
    """``labels`` of a tensor's axes after the Unsqueeze, Transpose or Squeeze ``node`` ("1" for inserted
    axes); None where the axes are computed or a squeezed axis is not an inserted one."""
    if node.op == "Transpose":
        perm = node.attrs.get("perm")
        return [labels[p] for p in perm] if perm is not None and sorted(perm) == list(range(len(labels))) else None
    axes = node.inputs[1] if len(node.inputs) > 1 else None
    axes = np.asarray(axes.values).reshape(-1) if isinstance(axes, gs.Constant) else node.attrs.get("axes")
    if axes is None:
        return None
    if node.op == "Unsqueeze":
        rank, moved = len(labels) + len(axes), list(labels)
        for axis in sorted(int(a) % rank for a in axes):
            moved.insert(axis, "1")
        return moved
    dropped = {int(a) % len(labels) for a in axes}
    if any(labels[axis] != "1" for axis in dropped):
        return None
    return [label for axis, label in enumerate(labels) if axis not in dropped]


def _part_selections(tensor: gs.Tensor, labels: list[str], parts: int) -> list[tuple[int, gs.Node, gs.Tensor]] | None:
    """How each reader of ``tensor`` selects one part along its axis labelled "part": (part, the node whose
    output is that part, the output), or None where one reads it otherwise. Either Gathers of one index
    each, or a Split into parts of one, each Squeezed (ONNX Runtime's optimizer fuses the Gathers so)."""
    readers = tensor.outputs
    if readers and all(_selects_part(n, labels) and n.inputs[0] is tensor for n in readers):
        return [(int(np.asarray(n.inputs[1].values)) % parts, n, n.outputs[0]) for n in readers]
    if len(readers) != 1 or readers[0].op != "Split" or len(readers[0].outputs) != parts:
        return None
    split, axis = readers[0], labels.index("part")
    if int(split.attrs.get("axis", 0)) % len(labels) != axis:
        return None
    if len(split.inputs) > 1 and not split.inputs[1].is_empty() and _values(split.inputs[1], 0) != [1] * parts:
        return None
    selections = []
    for part, piece in enumerate(split.outputs):
        squeeze = piece.outputs[0] if len(piece.outputs) == 1 else None
        if squeeze is None or squeeze.op != "Squeeze" or squeeze.inputs[0] is not piece:
            return None
        axes = _values(squeeze.inputs[1], 0) if len(squeeze.inputs) > 1 else squeeze.attrs.get("axes")
        if axes is None or [int(a) % len(labels) for a in axes] != [axis]:
            return None
        selections.append((part, squeeze, squeeze.outputs[0]))
    return selections


def _selects_part(node: gs.Node, labels: list[str]) -> bool:
    """Whether ``node`` is a Gather of one constant index along the axis labelled "part"."""
    if node.op != "Gather" or len(node.inputs) != 2 or not isinstance(node.inputs[1], gs.Constant):
        return False
    return np.asarray(node.inputs[1].values).ndim == 0 and labels[int(node.attrs.get("axis", 0)) % len(labels)] == "part"


def _names(graph: gs.Graph) -> set[str]:
    """The names of the graph's tensors and nodes."""
    return set(graph.tensors()) | {node.name for node in graph.nodes}


def _unique(taken: set[str], name: str) -> str:
    """``name``, or it with underscores appended, not in ``taken``; it joins ``taken``."""
    while name in taken:
        name += "_"
    taken.add(name)
    return name


# Ops through which a sliced size reaches a broadcasting op unchanged on the same axis.
_SIZE_KEEPING_OPS = ("Cast", "Identity", "Relu", "Neg", "Sigmoid", "Tanh")
_BROADCASTING_OPS = ("Add", "Sub", "Mul", "Div")


def sliced_sizes(graph: gs.Graph) -> dict[str, list[Dim]]:
    """Shapes of Slice outputs that a valid run proves to be a symbolic size, by tensor name.

    ``table[:, :n]`` with n the symbolic size S of another tensor (the dynamo exporter slices position
    tables so) has min(S, D) on that axis, for the table's static size D, and ONNX shape inference keeps it
    unknown, losing S for everything after it. Where that slice (or an embedding lookup of it) is added
    to (or multiplied with) a tensor with S on the same axis, the run is valid only when min(S, D) equals
    S or one of them is 1, which (D > 1) makes it S whenever the model runs.
    """
    fixed: dict[str, list[Dim]] = {}
    for node in graph.nodes:
        if node.op != "Slice" or len(node.inputs) < 3 or node.outputs[0].shape is None:
            continue
        data_shape = node.inputs[0].shape
        inputs = [_values(t, 0) if t.name else None for t in node.inputs[1:]]
        starts, ends = inputs[0], inputs[1]
        axes = inputs[2] if len(inputs) > 2 else [0]
        steps = inputs[3] if len(inputs) > 3 else [1]
        if data_shape is None or starts != [0] or steps != [1] or axes is None or len(axes) != 1 or ends is None:
            continue
        axis, size = axes[0] % len(data_shape), ends[0]
        if (not isinstance(size, str) or not isinstance(data_shape[axis], int) or data_shape[axis] <= 1
                or len(node.outputs[0].shape) != len(data_shape) or node.outputs[0].shape[axis] == size):
            continue
        shape = list(data_shape)  # the other axes are the table's
        if _broadcast_with(node.outputs[0], axis, size, 0):
            shape[axis] = size
            fixed[node.outputs[0].name] = shape
    return fixed


def computed_sizes(graph: gs.Graph) -> dict[str, list[Dim]]:
    """Shapes of Expand, Tile, Resize, MaxUnpool and Range outputs that a shape computed at run time gives but
    ONNX shape inference does not follow, by tensor name: TorchScript's ``coords.expand(b, 1, h, w)`` (the input's shape
    broadcast with the computed one), a constant tiled to the batch (DeBERTa's relative position keys),
    ``arange(n)`` and, before opset 13 or so, TorchScript's ``F.interpolate(x, size=y.shape[-2:])`` (the
    computed sizes), where every size is known or symbolic (an Expand's or a Tile's other sizes may be
    those inference made up, see ``_with_made_up``)."""
    fixed: dict[str, list[Dim]] = {}
    for node in graph.nodes:
        if node.op == "Expand" and len(node.inputs) == 2 and node.inputs[0].shape is not None:
            target, shape = _values(node.inputs[1], 0), list(node.inputs[0].shape)
            if target is None or not all(isinstance(t, (int, str)) for t in target):
                continue
            shape = [1] * (len(target) - len(shape)) + shape
            target = [1] * (len(shape) - len(target)) + target
            result = _with_made_up([_expanded(d, t) for d, t in zip(shape, target)], node.outputs[0].shape)
        elif node.op == "Tile" and len(node.inputs) == 2 and node.inputs[0].shape is not None:
            repeats, shape = _values(node.inputs[1], 0), list(node.inputs[0].shape)
            if repeats is None or len(repeats) != len(shape):
                continue
            result = _with_made_up([_tiled(d, r) for d, r in zip(shape, repeats)], node.outputs[0].shape)
        elif node.op == "Resize" and len(node.inputs) == 4 and not isinstance(node.inputs[3], gs.Constant):
            result = _values(node.inputs[3], 0)
        elif node.op == "MaxUnpool" and len(node.inputs) == 3 and not node.inputs[2].is_empty():
            result = _values(node.inputs[2], 0)  # ONNX's inference gives none, even for a constant output shape
        elif node.op == "SequenceAt" and (squeezed := _squeezed_split(node.inputs[0])) is not None:
            split, axis = squeezed
            shape = split.inputs[0].shape
            if shape is None or not -len(shape) <= axis < len(shape):
                continue
            result = [d for i, d in enumerate(shape) if i != axis % len(shape)]
        elif node.op == "Range" and len(node.inputs) == 3:
            start, limit, delta = (_values(t, 0) for t in node.inputs)
            if start != [0] or delta != [1] or limit is None or len(limit) != 1:
                continue
            result = limit  # arange(n): TorchScript indexes a mask by arange(batch)
        elif node.op == "Reshape" and len(node.inputs) == 2 and node.inputs[0].shape is not None:
            result = _wildcard_as_symbol(node)
        else:
            continue
        current = node.outputs[0].shape
        if result and all(isinstance(d, (int, str)) for d in result) and list(current or []) != result:
            fixed[node.outputs[0].name] = result
    return fixed


def _with_made_up(result: list[Dim | None], current: list[Dim] | None) -> list[Dim | None]:
    """``result``, its unknown sizes (None) taken from ``current`` where that has them (made up by inference), if
    it knows a size that is not made up: TorchScript computes DeBERTa's repeats from a batch x heads size
    divided by the heads, and expands RoFormer's mask to [N, 1, T, T] from one whose batch inference
    made up; the other sizes are still worth knowing."""
    if current is None or len(current) != len(result) or all(_made_up(size) for size in result):
        return result
    return [size if size is not None else old for size, old in zip(result, current)]


def _expanded(size: Dim, target: Dim) -> Dim:
    """An Expand's output size from its input's ``size`` and the target's: whichever is not 1 (a run where
    both are other than 1 and differ fails), or None where that is not known."""
    if size == 1 or isinstance(target, int) and target > 1:
        return target
    if target == 1 or target == size or isinstance(size, int) and size > 1:
        return size
    return None


def _squeezed_split(sequence: gs.Tensor) -> tuple[gs.Node, int] | None:
    """(the SplitToSequence, its axis) where ``sequence`` holds its pieces of size 1 without the axis, as
    ONNX Runtime runs it: ``keepdims=0`` with no split, or with a split of 1 (TorchScript's ``unbind``, which
    Longformer applies to the indices of its global tokens), where ONNX's inference keeps the axis; else None."""
    node = sequence.inputs[0] if len(sequence.inputs) == 1 else None
    if node is None or node.op != "SplitToSequence" or node.attrs.get("keepdims", 1) != 0:
        return None
    split = node.inputs[1] if len(node.inputs) > 1 and not node.inputs[1].is_empty() else None
    if split is not None and (_values(split, 0) != [1] or split.shape not in ([], ())):
        return None
    return node, int(node.attrs.get("axis", 0))


def _tiled(size: Dim, repeats: Dim) -> Dim:
    """A Tile's output size from its input's ``size`` and ``repeats``; a product with a symbolic size is a
    symbol of its own, named as ONNX shape inference names products ("4*N"), or None where unknown."""
    if repeats == 1 or size == 1:
        return repeats if size == 1 else size
    if isinstance(size, int) and isinstance(repeats, int):
        return size * repeats
    return f"{size}*{repeats}" if isinstance(size, (int, str)) and isinstance(repeats, (int, str)) else None


def _wildcard_as_symbol(node: gs.Node) -> list[Dim] | None:
    """A Reshape's output shape where its -1 stands for a symbolic size S of the model: its input holds S
    times constants (followed back through a flattening to rows, see ``_rows``) whose product the target's
    other entries match; None otherwise. ``view(-1, c, h, w)`` of a transformer's [N, h x w, c] tokens, or
    the dynamo exporter's [T, -1, E] after nn.MultiheadAttention's output projection of [T x N, E] rows:
    ONNX shape inference gives each a size of its own, and the batch size is lost for the rest of the model."""
    target = _values(node.inputs[1], 0)
    if target is None or target.count(-1) != 1 or not all(isinstance(t, int) for t in target):
        return None
    shape = list(node.inputs[0].shape)
    if 0 in target and node.attrs.get("allowzero", 0):  # dynamo sets allowzero; a 0 then means an empty tensor
        return None
    target = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(target)]
    elements = _elements(node.inputs[0], 0)
    if elements is None or not all(isinstance(t, int) for t in target) or elements[1] != -int(np.prod(target)):
        return None
    return [elements[0] if t == -1 else t for t in target]


def _elements(tensor: gs.Tensor, depth: int) -> tuple[str, int] | None:
    """A tensor's element count as (S, k) for S x k, S a symbolic size of the model, where it is so."""
    shape = tensor.shape
    if shape is None or depth > MAX_DEPTH:
        return None
    known = int(np.prod([d for d in shape if isinstance(d, int)]))
    unknown = [(axis, d) for axis, d in enumerate(shape) if not isinstance(d, int)]
    if len(unknown) != 1 or not isinstance(unknown[0][1], str):
        return None
    axis, size = unknown[0]
    if not _made_up(size):
        return size, known
    rows = _rows(tensor, depth) if axis == 0 else None
    return (rows[0], rows[1] * known) if rows is not None else None


# Ops whose output has their first input's rows (its first axis): linear layers and elementwise ops.
_ROW_KEEPING_OPS = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Gelu", "Erf",
                    "Identity", "Cast", "Softmax", "LayerNormalization")


def _rows(tensor: gs.Tensor, depth: int) -> tuple[str, int] | None:
    """The size of the first axis of a 2-D or wider tensor of rows, as (S, k), followed back through ops
    that keep the rows to the Reshape that flattened them (target [-1, ...])."""
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Reshape" and len(node.inputs) == 2:
        target = _values(node.inputs[1], 0)
        if target is None or not target or target[0] != -1 or not all(isinstance(t, int) and t > 0 for t in target[1:]):
            return None
        elements = _elements(node.inputs[0], depth + 1)
        inner = int(np.prod(target[1:]))
        return (elements[0], elements[1] // inner) if elements is not None and elements[1] % inner == 0 else None
    if node.op not in _ROW_KEEPING_OPS or node.op == "Gemm" and node.attrs.get("transA", 0):
        return None
    rank = len(tensor.shape)
    for source in node.inputs[:2]:
        if source.shape is not None and len(source.shape) == rank and source.shape[0] == tensor.shape[0]:
            return _rows(source, depth + 1)
    return None


def _broadcast_with(tensor: gs.Tensor, axis: int, size: str, depth: int) -> bool:
    """Whether ``tensor`` (or a size-keeping op or embedding lookup of it) meets, in a broadcasting op, a
    tensor whose size is ``size`` on the same axis (counted from the end)."""
    rank = len(tensor.shape) if tensor.shape is not None else None
    if rank is None or depth > MAX_DEPTH:
        return False
    for node in tensor.outputs:
        if node.op in _BROADCASTING_OPS and len(node.inputs) == 2:
            other = node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]
            offset = rank - axis  # the axis counted from the end, as broadcasting aligns shapes
            if other.shape is not None and len(other.shape) >= offset and other.shape[-offset] == size:
                return True
        elif node.op in _SIZE_KEEPING_OPS and _broadcast_with(node.outputs[0], axis, size, depth + 1):
            return True
        elif (node.op == "Gather" and len(node.inputs) == 2 and node.inputs[1] is tensor
              and node.attrs.get("axis", 0) == 0 and _broadcast_with(node.outputs[0], axis, size, depth + 1)):
            return True  # an embedding lookup: the indices' axes come first in its output
    return False


def shape_values(tensor: gs.Tensor) -> list[Dim] | None:
    """The elements of a small integer shape computation: ints, symbolic sizes, or None where unknown; None
    where it cannot be followed at all."""
    return _values(tensor, 0)


def _values(tensor: gs.Tensor, depth: int, sizes: _MadeUpSizes | None = None) -> list[Dim] | None:
    """The elements of a small integer shape computation (a scalar as one element), or None where it
    cannot be followed (``sizes``: made-up sizes divided by a number are resolved first)."""
    if isinstance(tensor, gs.Constant):
        values = np.asarray(tensor.values)
        if values.dtype.kind not in "iubf" or values.size > MAX_ELEMENTS:  # booleans: a folded Equal (onnxslim)
            return None
        # Floats: TorchScript computes sizes such as int(ceil(h / p) * p) in floating point.
        return [float(v) if values.dtype.kind == "f" else int(v) for v in values.reshape(-1)]
    if depth > MAX_DEPTH or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Shape":
        shape = node.inputs[0].shape
        if shape is None:
            return None
        dims: list[Dim] = [d if isinstance(d, (int, np.integer)) and d >= 0 else (d if isinstance(d, str) else None)
                           for d in shape]
        return dims[slice(node.attrs.get("start", 0), node.attrs.get("end"))]
    if node.op == "Cast":
        values = _values(node.inputs[0], depth + 1, sizes)
        if values is None:
            return None
        to_float = node.attrs.get("to") in _FLOAT_TYPES
        return [_cast(v, to_float) for v in values]
    if node.op in ("Ceil", "Floor"):
        values = _values(node.inputs[0], depth + 1, sizes)
        rounding = math.ceil if node.op == "Ceil" else math.floor
        return None if values is None else [float(rounding(v)) if isinstance(v, float) and math.isfinite(v)
                                            else v if isinstance(v, int) else None for v in values]
    if node.op in ("Identity", "Unsqueeze", "Squeeze", "Reshape"):
        return _values(node.inputs[0], depth + 1, sizes)  # on 0-D and 1-D shape tensors these keep the elements
    if node.op == "Neg":  # TorchScript's x[..., -n:] with n a size starts the Slice at Neg(n)
        values = _values(node.inputs[0], depth + 1, sizes)
        return None if values is None else [-v if isinstance(v, (int, float)) else None for v in values]
    inputs = [_values(t, depth + 1, sizes) if t.name else None for t in node.inputs]
    if node.op in ("Transpose", "Gather", "Slice") or node.op == "Concat" and any(
            t.shape is not None and len(t.shape) > 1 for t in node.inputs):
        return _laid_out(node, inputs)
    if node.op == "Concat":
        # A part that cannot be followed but whose length is known leaves its elements unknown, not the rest:
        # F.pad's pads to a computed length keep the other axes' known zeros.
        parts = [v if v is not None else [None] * t.shape[0] if t.shape is not None and len(t.shape) == 1
                 and isinstance(t.shape[0], int) else None for v, t in zip(inputs, node.inputs)]
        return None if any(v is None for v in parts) else [d for values in parts for d in values]
    if node.op == "Split" and inputs and inputs[0] is not None:
        # ONNX Runtime fuses Gathers of one Shape into a Split (GatherSliceToSplitFusion).
        return _split_piece(node, tensor, inputs[0])
    if node.op in ("Add", "Sub", "Mul", "Div") and len(inputs) == 2 and None not in inputs:
        return _arithmetic(node.op, inputs[0], inputs[1], sizes)
    if node.op == "Mod" and not node.attrs.get("fmod", 0) and len(inputs) == 2 and None not in inputs:
        # Integer Mod takes the divisor's sign, as Python's %: LongT5 pads its sequence to whole blocks.
        return _broadcast(lambda x, y: x % y if isinstance(x, int) and isinstance(y, int) and y else None, *inputs)
    if node.op == "ReduceProd" and len(inputs) == 1 and inputs[0] is not None and node.attrs.get("axes", [0]) in ([0], [-1]):
        product = _product(inputs[0])  # of a 1-D shape tensor: one element whatever keepdims says
        return [None if product is None else _simplest(product)]
    if node.op in ("Max", "Min") and inputs and None not in inputs:
        return _broadcast(lambda *sizes: _extreme(node.op, sizes), *inputs)
    if node.op == "ConstantOfShape" and inputs and inputs[0] is not None and len(inputs[0]) == 1:
        value = node.attrs.get("value")  # a one-element tensor; float 0 without it
        values = np.asarray(value.values if value is not None else [0.0]).reshape(-1)
        count = inputs[0][0]
        if values.dtype.kind in "iu" and isinstance(count, int) and 0 <= count <= MAX_ELEMENTS:
            return [int(values[0])] * count
    if node.op == "Equal" and len(inputs) == 2 and None not in inputs:
        return _broadcast(_equal, *inputs)
    if node.op == "Where" and len(inputs) == 3 and None not in inputs:
        # TorchScript's expand(b, 1, h, w) replaces -1 sizes so: Where(Equal(s, -1), 1, s).
        return _broadcast(lambda c, x, y: x if c == 1 else y if c == 0 else None, *inputs)
    return None


def split_sizes(node: gs.Node, length: Dim) -> list[int] | None:
    """The sizes of the outputs of a Split of a 1-D tensor of ``length`` elements along its only axis (from
    its sizes input, where shape computations tell it, its attribute, or equal parts); None where unknown."""
    data = node.inputs[0]
    if node.attrs.get("axis", 0) not in (0, -1) or data.shape is not None and len(data.shape) != 1:
        return None
    given = len(node.inputs) > 1 and bool(node.inputs[1].name)
    sizes = _values(node.inputs[1], 0) if given else node.attrs.get("split")
    if sizes is None and not given and isinstance(length, int) and length % len(node.outputs) == 0:
        sizes = [length // len(node.outputs)] * len(node.outputs)
    if sizes is None or len(sizes) != len(node.outputs) or not all(isinstance(n, int) and n >= 0 for n in sizes):
        return None
    return [int(n) for n in sizes]


def _split_piece(node: gs.Node, piece: gs.Tensor, values: list[Dim]) -> list[Dim] | None:
    """The elements of one output of a Split of a 1-D shape computation."""
    sizes = split_sizes(node, len(values))
    if sizes is None or sum(sizes) > len(values):
        return None
    index = node.outputs.index(piece)
    start = sum(sizes[:index])
    return values[start:start + sizes[index]]


_FLOAT_TYPES = (1, 10, 11, 16)  # ONNX's FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _cast(value: Dim | float, to_float: bool) -> Dim | float:
    """A size cast to a float type or to an integer type (truncated, as ONNX's Cast does); a symbolic size
    keeps its name either way."""
    if isinstance(value, float):
        return value if to_float else int(value) if math.isfinite(value) and abs(value) < 2**52 else None
    if isinstance(value, int) and to_float:
        return float(value)
    return value


def _extreme(op: str, sizes: tuple[Dim, ...]) -> Dim:
    """The largest (Max) or smallest (Min) of sizes that are all known, or all the same size."""
    if all(isinstance(d, int) for d in sizes):
        return max(sizes) if op == "Max" else min(sizes)
    return sizes[0] if sizes[0] is not None and all(d == sizes[0] for d in sizes) else None


def _equal(a: Dim, b: Dim) -> int | None:
    """1 or 0 where two sizes are known to be equal or not (a size is never negative), else None."""
    if isinstance(a, int) and isinstance(b, int):
        return int(a == b)
    if isinstance(a, str) and a == b:
        return 1
    if isinstance(a, int) and a < 0 or isinstance(b, int) and b < 0:
        return 0
    return None


def _broadcast(op, *lists: list) -> list | None:
    """``op`` of element lists, element by element, a one-element list broadcast; None where lengths differ."""
    length = max(len(values) for values in lists)
    if any(len(values) not in (1, length) for values in lists):
        return [] if length == 1 else None  # an empty list with one-element ones: nothing to compute
    return [op(*elements) for elements in zip(*(values * length if len(values) == 1 else values for values in lists))]


def _laid_out(node: gs.Node, inputs: list[list[Dim] | None]) -> list[Dim] | None:
    """A Transpose, Gather or Slice, or a Concat wider than 1-D, of shape computations, on their values laid out
    in their shapes (row-major, as ``_values`` gives them; 1-D where a shape is unknown): TorchScript's
    ``F.pad`` writes its pads as [axes, 2] rows, reversed and transposed."""
    arrays = []
    for tensor, values in zip(node.inputs, inputs):
        shape = tensor.shape
        if values is not None and (shape is None or not all(isinstance(d, int) for d in shape)):
            shape = [len(values)]
        if values is None or math.prod(shape) != len(values):
            arrays.append(None)
            continue
        array = np.empty(len(values), dtype=object)  # keeps symbolic sizes and products as they are
        array[:] = values
        arrays.append(array.reshape(tuple(shape)))
    data = arrays[0] if arrays else None
    if data is None or data.ndim == 0:
        return None
    if node.op == "Transpose":
        result = data.transpose(node.attrs.get("perm", list(range(data.ndim))[::-1]))
    elif node.op == "Concat":
        if any(a is None or a.ndim != data.ndim for a in arrays):
            return None
        result = np.concatenate(arrays, axis=node.attrs.get("axis", 0))
    elif node.op == "Gather":
        indices, axis = arrays[1] if len(arrays) > 1 else None, node.attrs.get("axis", 0)
        if (indices is None or not -data.ndim <= axis < data.ndim
                or not all(isinstance(i, int) and -data.shape[axis] <= i < data.shape[axis] for i in indices.ravel())):
            return None
        result = np.take(data, indices.astype(np.int64), axis=axis)
    else:
        bounds = inputs[1:5] if len(node.inputs) >= 3 else [node.attrs.get("starts"), node.attrs.get("ends"),
                                                               node.attrs.get("axes")]
        starts, ends, axes, steps = (list(bounds) + [None, None])[:4]
        axes = axes if axes is not None else list(range(len(starts or [])))
        steps = steps if steps is not None else [1] * len(axes)
        if starts is None or ends is None or not all(isinstance(v, int) for v in [*starts, *ends, *axes, *steps]):
            return None
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step == 0 or not -data.ndim <= axis < data.ndim:
                return None
            index[axis] = slice(start, end, step)  # Python slicing clamps as ONNX does
        result = data[tuple(index)]
    return list(np.asarray(result, dtype=object).ravel())  # (np.take of one index gives the element itself)


def _arithmetic(op: str, a: list[Dim], b: list[Dim], sizes: _MadeUpSizes | None = None) -> list[Dim] | None:
    """Element-wise ``op`` of two shape computations (broadcast from one element); unknown where a size is not an
    int, but for products, and a size divided by a number that divides it (made-up sizes resolved by ``sizes``:
    TorchScript's ViTDet divides its window count by the windows per image)."""
    def element(x: Dim, y: Dim) -> Dim:
        if op == "Div" and isinstance(x, (str, Product)) and isinstance(y, int) and y > 0:
            product = _product([x])
            product = sizes.resolved(product) if sizes is not None else product
            return None if product is None or product.factor % y else _simplest(Product(product.symbols, product.factor // y))
        if isinstance(x, (str, Product)) or isinstance(y, (str, Product)):
            product = _product([x, y]) if op == "Mul" else None
            return None if product is None else _simplest(product)
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or op == "Div" and y == 0:
            return None
        if isinstance(x, float) or isinstance(y, float):
            return float({"Add": x + y, "Sub": x - y, "Mul": x * y, "Div": x / y if y else 0.0}[op])
        if op == "Div":
            return int(np.trunc(x / y)) if abs(x) < 2**52 else None  # integer Div truncates
        return {"Add": x + y, "Sub": x - y, "Mul": x * y}[op]

    return _broadcast(element, a, b)
