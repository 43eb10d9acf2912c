"""Loading, normalising and saving models, and a thin view of a graph for the rules."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx import helper
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from onnxprune.contrib import (
    CONTRIB_DOMAIN,
    CONTRIB_UNARY_OPS,
    has_fused_contrib_ops,
    has_packed_attention,
    present_input,
    unfuse_contrib_ops,
    write_attention_heads_apart,
)
from onnxprune.errors import InputError
from onnxprune.qoperator import has_operator_format, write_as_qdq
from onnxprune.shape_targets import (
    FRESH_SIZE,
    batch_head_round_trips,
    computed_sizes,
    consecutive_reshapes,
    constant_pads,
    constant_reshape_targets,
    constant_slice_bounds,
    decided_ifs,
    flattened_linears,
    merged_head_attentions,
    packed_projection_selects,
    refines_shape,
    reshape_round_trips,
    slice_assignments,
    sliced_sizes,
    strided_identity_views,
    unshared_scatter_bases,
)

G_LOGGER.severity = G_LOGGER.ERROR

ModelSource = str | os.PathLike | onnx.ModelProto
Dim = int | str | None

MIN_OPSET = 11
# Tensors of at least this many bytes go to the external data file when a model is saved with one.
EXTERNAL_MIN_BYTES = 1024
# Constants up to this size stay in the shape-inference skeleton (shape tensors need their values).
SKELETON_MAX_ELEMENTS = 1024
# Constant folding only evaluates small results (shape arithmetic), never whole weights.
FOLD_MAX_BYTES = 1 << 16
# Weights that are only rearranged (sliced, concatenated, transposed) are folded up to this size each.
REARRANGED_MAX_BYTES = 1 << 28
# Reshape targets computed at run time are made constant in at most this many passes (see shape_targets.py):
# a transformer takes one per reshape that follows another (a 12-block ViT: 26 passes, 1.5 s in all).
MAX_RESHAPE_PASSES = 256
# Protobuf cannot serialize 2 GiB; models with more weight data than this are kept in external data.
PROTOBUF_SAFE_BYTES = 1_800_000_000


@dataclass(frozen=True)
class LoadedModel:
    """A model and how it was stored: ``external_data`` when its weights lived in side files; ``unfused``
    names the ONNX Runtime fusions that loading split into standard ops (see ``contrib.py``), and
    ``written_as_qdq`` the integer ops it wrote in the QDQ format (see ``qoperator.py``)."""

    model: onnx.ModelProto
    external_data: bool
    size_bytes: int | None
    unfused: tuple[str, ...] = ()
    written_as_qdq: tuple[str, ...] = ()  # integer ops of the operator format (see ``qoperator.py``)


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load a model from a path, or check a ``ModelProto``. onnxprune never modifies the model it loads.

    Raises:
        InputError: the path is missing, not a file, not a readable ONNX model, or its external data
            lies outside its folder.
    """
    return read_model(source).model


def read_model(source: ModelSource) -> LoadedModel:
    """Like :func:`load_model`, also telling whether the weights came from external data files."""
    if isinstance(source, onnx.ModelProto):
        loaded = LoadedModel(source, external_data_bytes(source) > PROTOBUF_SAFE_BYTES, None)
    else:
        loaded = _read_model_file(Path(source))
    _check_loadable(loaded.model)
    if (not has_fused_contrib_ops(loaded.model) and not has_operator_format(loaded.model)
            and not has_packed_attention(loaded.model)):
        return loaded
    # A split op's output gets a shape, which may give the rank that a fused op after it waited for
    # (attention's FusedMatMul of a Softmax of another FusedMatMul): split again while that helps.
    folded = False
    for _ in range(MAX_RESHAPE_PASSES):
        graph = gs.import_onnx(_with_inferred_ranks(loaded.model))
        unfused = unfuse_contrib_ops(graph) + write_attention_heads_apart(graph)
        written = write_as_qdq(graph)
        if not unfused and not written:
            # Shape computations of constants alone can hide a rank from inference until they are folded:
            # TorchScript writes DINOv3's rotary table with Ifs on its static sizes. Folded once; where
            # nothing folds, the model is not copied again.
            if folded:
                break
            folded, count = True, len(graph.nodes)
            _fold_shape_arithmetic(graph)
            graph.cleanup(remove_unused_graph_inputs=False)
            if len(graph.nodes) == count:
                break
            loaded = replace(loaded, model=export_graph(graph, loaded.model))
            continue
        loaded = replace(loaded, model=export_graph(graph, loaded.model), unfused=loaded.unfused + unfused,
                         written_as_qdq=loaded.written_as_qdq + written)
        if not has_fused_contrib_ops(loaded.model):
            break
    return loaded


def _with_inferred_ranks(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ONNX's shape inference run on what it can size (a FusedMatMul that transposes an
    activation is split only where its rank is known; ONNX Runtime saves no shapes of activations), or
    ``model`` itself where its weights are too big to copy through protobuf."""
    if external_data_bytes(model) > PROTOBUF_SAFE_BYTES:
        return model
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    # Inference runs on a copy without the large weights (typed inputs stand in), since it may run again
    # and again: once more for each op it has no schema of that keeps its input's shape (ONNX Runtime's
    # SkipLayerNormalization, one or two a layer), which passes that shape on; ORT saves their outputs'
    # types without shapes.
    small = [t for t in graph.initializer if int(np.prod(t.dims)) <= SKELETON_MAX_ELEMENTS]
    stand_ins = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in graph.initializer if int(np.prod(t.dims)) > SKELETON_MAX_ELEMENTS]
    inferred = helper.make_model(helper.make_graph(graph.node, graph.name, [*graph.input, *stand_ins], graph.output,
                                                   small, value_info=graph.value_info),
                                 opset_imports=model.opset_import, ir_version=model.ir_version)
    inferred.functions.extend(model.functions)
    for _ in range(MAX_RESHAPE_PASSES):
        try:
            inferred = onnx.shape_inference.infer_shapes(inferred, strict_mode=False, data_prop=True)
        except onnx.shape_inference.InferenceError:
            break
        known = {v.name: v for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
                 if v.type.tensor_type.HasField("shape")}
        passed = [onnx.ValueInfoProto(name=node.output[0], type=known[node.input[0]].type)
                  for node in inferred.graph.node
                  if node.input and node.output and node.input[0] in known and node.output[0] not in known
                  and _keeps_uninferred_shape(node.op_type, node.domain)]
        if not passed:
            break
        names = {v.name for v in passed}
        kept = [v for v in inferred.graph.value_info if v.name not in names]
        del inferred.graph.value_info[:]
        inferred.graph.value_info.extend(kept + passed)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.value_info[:]
    result.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in weights)
    return result


def check_model_file(path: str | os.PathLike) -> None:
    """Parse a model file without its external data: raises InputError for anything :func:`read_model` would.

    Run before anything else reads the file (ONNX Runtime included), so no data file outside the
    model's folder is ever opened.
    """
    _check_loadable(_read_model_file(Path(path), load_data=False).model)


def _read_model_file(path: Path, load_data: bool = True) -> LoadedModel:
    if not path.exists():
        raise InputError(f"model file '{path}' does not exist; check the path")
    if not path.is_file():
        raise InputError(f"'{path}' is not a file; pass the path of an .onnx model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, IndexError, TypeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"'{path}' is not a readable ONNX model ({first_line}); re-export it or check the file is complete"
        ) from None
    locations = _external_locations(model)
    size = path.stat().st_size
    for location in sorted(locations):
        data_path = _safe_data_path(path, location)
        size += data_path.stat().st_size
    if locations and load_data:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    return LoadedModel(model, bool(locations), size)


def _all_tensors(graph: onnx.GraphProto, attributes: bool = True):
    """The initializers of ``graph`` and its subgraphs, and (``attributes``) the tensors of node attributes."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            kind = attribute.type or _attribute_type(attribute)  # an int compare: most attributes hold ints
            if kind in _TENSOR_ATTRIBUTES and attributes:
                yield from [attribute.t] if kind == onnx.AttributeProto.TENSOR else attribute.tensors
            elif kind == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attribute.g, attributes)
            elif kind == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _all_tensors(sub, attributes)


_TENSOR_ATTRIBUTES = (onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS)


def _attribute_type(attribute: onnx.AttributeProto) -> int:
    """The type of an attribute whose ``type`` field was left unset (some old exporters), from what it holds."""
    for field, kind in (("t", onnx.AttributeProto.TENSOR), ("g", onnx.AttributeProto.GRAPH)):
        if attribute.HasField(field):
            return kind
    return (onnx.AttributeProto.TENSORS if len(attribute.tensors) else
            onnx.AttributeProto.GRAPHS if len(attribute.graphs) else onnx.AttributeProto.UNDEFINED)


def _external_locations(model: onnx.ModelProto) -> set[str]:
    locations = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            locations.add(entries.get("location", ""))
    return locations


def _safe_data_path(model_path: Path, location: str) -> Path:
    """The external data file, refused unless it lies inside the model's own folder."""
    folder = model_path.parent.resolve()
    candidate = (folder / location).resolve()
    if not location or Path(location).is_absolute() or ".." in Path(location).parts or folder not in candidate.parents:
        raise InputError(
            f"the model's external data location '{location}' points outside its folder; onnxprune only reads "
            "data files beside the model (move the data file there and fix the location)"
        )
    if not candidate.is_file():
        raise InputError(f"the model's external data file '{location}' is missing beside '{model_path}'")
    return candidate


def external_data_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held in the proto, counted without serializing it."""
    return sum(_raw_bytes(t) + 4 * len(t.float_data) for t in _all_tensors(model.graph))


_UNSIZED_TYPES = {getattr(onnx.TensorProto, name) for name in ("UNDEFINED", "STRING", "INT4", "UINT4", "FLOAT4E2M1")
                  if hasattr(onnx.TensorProto, name)}


def _raw_bytes(tensor: onnx.TensorProto) -> int:
    # Reading raw_data copies it (upb hands out a new bytes object): its size comes from the dims.
    if not tensor.HasField("raw_data"):
        return 0
    if tensor.data_type in _UNSIZED_TYPES:  # strings, and 4-bit types packed two to a byte
        return len(tensor.raw_data)
    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return math.prod(tensor.dims) * itemsize


def _check_loadable(model: onnx.ModelProto) -> None:
    if not model.graph.node:
        raise InputError("the model's graph has no nodes; there is nothing to prune")
    opset = default_opset(model)
    if opset is not None and opset < MIN_OPSET:
        raise InputError(
            f"the model uses opset {opset}; onnxprune needs opset {MIN_OPSET} or newer "
            "(convert it with onnx.version_converter.convert_version)"
        )


def default_opset(model: onnx.ModelProto) -> int | None:
    """The version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def infer_shapes(model: onnx.ModelProto, keep: Iterable[str] = ()) -> onnx.ModelProto:
    """ONNX shape inference with data propagation, dropping stale annotations first (all but those of
    the tensors ``keep``, which inference starts from)."""
    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    keep = set(keep)
    kept = [v for v in fresh.graph.value_info if v.name in keep]
    del fresh.graph.value_info[:]
    fresh.graph.value_info.extend(kept)
    try:
        return onnx.shape_inference.infer_shapes(fresh, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise InputError(f"ONNX shape inference failed on the model: {str(exc).splitlines()[0]}") from None


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """A graphsurgeon graph of the model with shapes inferred and weights as plain constants.

    Weights stay lazily loaded from ``model``. Shape computations that only depend on static
    dimensions (TorchScript exports ``chunk`` as Shape -> Gather -> Div -> Slice) are folded into
    constants, then shapes are inferred again; so are reshape targets that copy symbolic sizes (see
    ``shape_targets.py``).
    """
    try:
        graph = gs.import_onnx(model)
        _detach_subgraph_constants(graph)
        # The outputs have the types the model declares: a value info may contradict them (onnxconverter-
        # common's float16 conversion with keep_io_types leaves one of float16 on a float32 output).
        declared = {o.name: o.type.tensor_type.elem_type for o in model.graph.output if o.type.tensor_type.elem_type}
        for tensor in graph.outputs:
            if tensor.name in declared:
                tensor.dtype = helper.tensor_dtype_to_np_dtype(declared[tensor.name])
        # graphsurgeon keeps the model's opset_import container, which pins the whole proto in memory.
        graph.import_domains = [helper.make_opsetid(d.domain, d.version) for d in graph.import_domains]
        _name_nodes(graph)
        _inline_constant_nodes(graph)
        graph.cleanup(remove_unused_graph_inputs=False)
        infer_graph_shapes(graph, model)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        # Malformed protos (bad strings, dangling references) surface as assorted errors here.
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"the model's graph is malformed ({detail}); re-export it or check it with onnx.checker") from None
    node_count = len(graph.nodes)
    _fold_shape_arithmetic(graph)
    if any(_rearranges_a_weight(node) for node in graph.nodes):
        graph.fold_constants(error_ok=True, size_threshold=REARRANGED_MAX_BYTES,
                             should_exclude_node=lambda node: node.op not in _REARRANGING_OPS)
    graph.cleanup(remove_unused_graph_inputs=False)
    if len(graph.nodes) != node_count:
        infer_graph_shapes(graph, model)
    # Each pass makes the reshapes constant whose inputs' shapes are known; inference then reaches the next.
    for _ in range(MAX_RESHAPE_PASSES):
        rewritten = (flattened_linears(graph) + strided_identity_views(graph) + reshape_round_trips(graph)
                     + consecutive_reshapes(graph) + slice_assignments(graph) + unshared_scatter_bases(graph)
                     + batch_head_round_trips(graph) + packed_projection_selects(graph) + merged_head_attentions(graph)
                     + constant_reshape_targets(graph) + constant_slice_bounds(graph) + constant_pads(graph))
        decided = decided_ifs(graph)
        if not rewritten + decided:
            break
        if decided:
            _fold_shape_arithmetic(graph)  # which keeps the branches the Ifs take
        graph.cleanup(remove_unused_graph_inputs=False)
        infer_graph_shapes(graph, model)
    return graph.toposort()


def _fold_shape_arithmetic(graph: gs.Graph) -> None:
    """Fold what constants alone compute, up to FOLD_MAX_BYTES a result (shape arithmetic, never whole weights),
    weights keeping their storage type; an If on a constant condition becomes the branch it takes."""
    graph.fold_constants(error_ok=True, size_threshold=FOLD_MAX_BYTES, should_exclude_node=_keeps_storage_type)


def _detach_subgraph_constants(graph: gs.Graph) -> None:
    """Give the constants that If branches read copies of their own. Constant folding inlines the branch a
    decided If takes and renames its tensors, and graphsurgeon's exporter writes a lazily loaded constant's
    name into the TensorProto it was read from: the caller's model would be renamed. (Loop and Scan bodies
    are never inlined.)"""
    for node in graph.nodes:
        for body in (v for v in node.attrs.values() if isinstance(v, gs.Graph)):
            if node.op == "If":
                for tensor in body.tensors().values():
                    lazy = getattr(tensor, "_values", None)
                    if isinstance(lazy, LazyValues):
                        copy = onnx.TensorProto()
                        copy.CopyFrom(lazy.tensor)
                        tensor._values = LazyValues(copy)
            _detach_subgraph_constants(body)


# Ops that only move a weight's values around. The dynamo exporter leaves the gate reordering of a large
# LSTM or GRU weight (PyTorch's gate order is not ONNX's) as Slices and Concats of the parameter.
_REARRANGING_OPS = ("Slice", "Concat", "Split", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Gather", "Identity")


def _rearranges_a_weight(node: gs.Node) -> bool:
    """A rearranging op of constants only, one of them larger than constant folding evaluates."""
    return (node.op in _REARRANGING_OPS and bool(node.inputs) and all(isinstance(t, gs.Constant) for t in node.inputs)
            and any(t.values.nbytes > FOLD_MAX_BYTES for t in node.inputs if not t.is_empty()))


def _keeps_storage_type(node: gs.Node) -> bool:
    """Casts and dequantisation of weights are not folded: the model keeps its weights' storage type (a Cast
    to the type it has is folded). A Cast of 32- or 64-bit integers is a shape computation (the TorchScript
    exporter casts the pads Hugging Face's MobileNetV2 computes for its TensorFlow-style padding), and is
    folded; so is a Cast to the index types (TorchScript's windowed attention casts constant coordinates to
    index its relative position tables)."""
    if node.op == "Cast" and node.attrs.get("to") in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return False
    if node.op == "Cast" and node.inputs and node.inputs[0].dtype is not None and node.inputs[0].dtype == node.outputs[0].dtype:
        return False  # a Cast to the type it has (TorchScript's rotary table, cast to q's float32) changes nothing
    if node.op == "Cast" and node.inputs and node.inputs[0].dtype is not None:
        return node.inputs[0].dtype not in (np.int64, np.int32, np.bool_)  # (bfloat16 is ONNX's type number)
    return node.op in ("Cast", "CastLike", "DequantizeLinear")


def infer_graph_shapes(graph: gs.Graph, template: onnx.ModelProto) -> None:
    """Set every activation's shape and dtype from ONNX shape inference, in place (and again from the
    sizes of sliced position tables that a valid run proves, where inference lost them: ``sliced_sizes``,
    from shapes computed at run time for an Expand or a Resize: ``computed_sizes``,
    and from the input of an op that keeps its shape but that inference does not reach)."""
    _set_inferred(graph, _inferred_types(graph, template))
    fixed: dict[str, list] = {}
    found = sliced_sizes(graph) | computed_sizes(graph)
    for _ in range(MAX_RESHAPE_PASSES):
        # Shapes passed through ops inference does not reach, or recomputed (a size found reaches the next
        # op that inference cannot follow, a Reshape's -1, and may refine a shape computed before it was
        # known, a mask expanded to a batch size found since), each only where it tells something new.
        found |= _kept_shapes(graph, fixed | found)
        if not found:
            break
        fixed |= found
        _set_inferred(graph, _inferred_types(graph, template, fixed=fixed))
        found = {name: shape for name, shape in computed_sizes(graph).items() if refines_shape(shape, fixed.get(name))}


# Ops whose output has their input's shape and dtype, where ONNX shape inference gives none
# (GroupNormalization is a context-dependent function without an inference function; the output of
# MeanVarianceNormalization, a function, gets a type without a shape; ONNX has no schemas of ONNX
# Runtime's contrib activations, and ONNX Runtime's optimizer fuses LayerNormalization into models of
# opsets before 17, which ONNX's inference then does not know, and RMS norms into its
# SimplifiedLayerNormalization, which it registers in ONNX's own domain).
_UNINFERRED_SHAPE_KEEPING_OPS = ("GroupNormalization", "MeanVarianceNormalization", "LayerNormalization",
                                 "SimplifiedLayerNormalization")
_CONTRIB_SHAPE_KEEPING_OPS = (*CONTRIB_UNARY_OPS, "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
                              "RotaryEmbedding")


def _keeps_uninferred_shape(op: str, domain: str | None) -> bool:
    if domain == CONTRIB_DOMAIN:
        return op in _CONTRIB_SHAPE_KEEPING_OPS
    return op in _UNINFERRED_SHAPE_KEEPING_OPS


def _uninferred_output(node: gs.Node) -> tuple[list, object] | None:
    """The shape and dtype of the first output of an op that ONNX shape inference does not reach, where its
    inputs' tell them: an op that keeps its input's shape, and the contrib Attention and MultiHeadAttention
    ([batch, tokens, value width]) and EmbedLayerNormalization ([batch, tokens, hidden], from its word
    table) that stay fused."""
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return None
    if _keeps_uninferred_shape(node.op, node.domain):
        return list(x.shape), x.dtype
    if node.domain != CONTRIB_DOMAIN:
        return None
    second, third = present_input(node, 1), present_input(node, 2)
    if node.op == "Attention" and len(x.shape) == 3 and second is not None and len(second.shape or []) == 2:
        sizes = list(node.attrs.get("qkv_hidden_sizes", []))
        width = sizes[2] if sizes else second.shape[1] // 3 if isinstance(second.shape[1], int) else None
        return ([*x.shape[:2], width], x.dtype) if width else None
    if node.op == "EmbedLayerNormalization" and len(x.shape) == 2 and third is not None and len(third.shape or []) == 2:
        return [*x.shape, third.shape[1]], third.dtype  # its word table: [vocabulary, hidden]
    if node.op == "MultiHeadAttention":  # query [batch, tokens, width] and value [batch, keys, value width],
        if len(x.shape) == 3 and third is not None and len(third.shape or []) == 3:
            return [*x.shape[:2], third.shape[2]], x.dtype
        if len(x.shape) == 5 and third is None and all(isinstance(d, int) for d in x.shape[2:]):
            return [*x.shape[:2], x.shape[2] * x.shape[4]], x.dtype  # or q, k and v packed [.., heads, 3, size]
    return None


def _kept_shapes(graph: gs.Graph, fixed: dict[str, list]) -> dict[str, list]:
    """Shapes of the outputs that inference left unknown and ``_uninferred_output`` knows (dtypes set), and
    of those given so before (in ``fixed``) whose input's shape has changed since."""
    kept = {}
    for node in graph.nodes:
        if not node.outputs or node.outputs[0].shape is not None and node.outputs[0].name not in fixed:
            continue
        known = _uninferred_output(node)
        if known is not None and refines_shape(known[0], fixed.get(node.outputs[0].name)):
            node.outputs[0].dtype = known[1]
            kept[node.outputs[0].name] = known[0]
    return kept


def _set_inferred(graph: gs.Graph, known: dict[str, onnx.ValueInfoProto]) -> None:
    outputs = {t.name for t in graph.outputs}
    for name, tensor in graph.tensors().items():
        if not isinstance(tensor, gs.Variable) or tensor in graph.inputs:
            continue
        info = known.get(name)
        if info is not None and info.type.HasField("tensor_type"):
            tensor.dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
            tensor.shape = _dims(info.type.tensor_type) if info.type.tensor_type.HasField("shape") else None
        elif name not in outputs:
            tensor.shape = None


def shapes_at(graph: gs.Graph, template: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> dict[str, list]:
    """Every activation's shape (by name) were the graph's inputs of ``input_shapes``; ``graph`` is unchanged."""
    shapes = {name: _dims(info.type.tensor_type) for name, info in _inferred_types(graph, template, input_shapes).items()
              if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")}
    return shapes | {name: list(shape) for name, shape in input_shapes.items()}


def _inferred_types(graph: gs.Graph, template: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
                    fixed: dict[str, list] | None = None) -> dict[str, onnx.ValueInfoProto]:
    """ONNX shape inference of ``graph`` (its inputs given ``input_shapes`` where named; the activations
    ``fixed`` given those shapes, which inference then starts from), by tensor name.

    Inference runs on a copy of the graph whose large weights are replaced by typed inputs, so no
    weight data is copied however big the model is.
    """
    skeleton = graph.copy()
    for tensor in skeleton.inputs:
        if input_shapes and tensor.name in input_shapes:
            tensor.shape = list(input_shapes[tensor.name])
    for tensor in list(skeleton.tensors().values()):
        if isinstance(tensor, gs.Constant) and int(np.prod(tensor.shape)) > SKELETON_MAX_ELEMENTS:
            stand_in = gs.Variable(tensor.name, dtype=tensor.dtype, shape=list(tensor.shape))
            for node in list(tensor.outputs):
                for index, used in enumerate(node.inputs):
                    if used is tensor:
                        node.inputs[index] = stand_in
            skeleton.inputs.append(stand_in)
    for tensor in skeleton.tensors().values():
        # The outputs keep their declared shapes, unless other input shapes make those stale.
        if isinstance(tensor, gs.Variable) and tensor not in skeleton.inputs and (input_shapes or tensor not in skeleton.outputs):
            tensor.shape = (fixed or {}).get(tensor.name)
    inferred = infer_shapes(export_graph(skeleton, template), keep=fixed or ())
    return {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}


def _dims(tensor_type: onnx.TypeProto.Tensor) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]


def read_values(tensor: gs.Constant) -> np.ndarray:
    """A constant's values as a private array, loaded without caching them on the graph."""
    clone = tensor.copy()  # shares the lazy values; loading caches on the clone only
    values = np.asarray(clone.values)
    # gs tensors sit in reference cycles that only the cyclic GC frees: drop the cache now.
    clone.values = _EMPTY
    return values.copy()  # constants that were never lazy share their array with the graph


_EMPTY = np.zeros(0, dtype=np.float32)


def param_values(node: gs.Node, index: int) -> np.ndarray:
    """The values of constant input ``index`` of ``node`` as the model computes with them: an integer weight
    that ``node``, a DequantizeLinear, holds comes dequantized (float64)."""
    values = read_values(node.inputs[index])
    if node.op != "DequantizeLinear" or index != 0:
        return values
    scale, zero = _quantization(node, values.ndim)
    return (values.astype(np.float64) - zero) * scale


def store_param(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give ``node`` new values for constant input ``index`` (see ``param_values``), stored as the old ones
    were: quantized again on their scales, and clipped to their integer type, where ``node`` dequantizes them."""
    stored = node.inputs[index].values.dtype
    if node.op == "DequantizeLinear" and index == 0:
        scale, zero = _quantization(node, values.ndim)
        limits = np.iinfo(stored)
        values = np.clip(np.round(values / scale) + zero, limits.min, limits.max)
    replace_constant(node, index, np.asarray(values).astype(stored))


def _quantization(node: gs.Node, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A DequantizeLinear's scale and zero point (float64), shaped to broadcast over an input of ``rank``."""
    scale = np.asarray(node.inputs[1].values, dtype=np.float64)
    has_zero = len(node.inputs) > 2 and not node.inputs[2].is_empty()
    zero = np.asarray(node.inputs[2].values, dtype=np.float64) if has_zero else np.zeros_like(scale)
    if scale.size > 1:
        shape = [1] * rank
        shape[int(node.attrs.get("axis", 1)) % rank] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale.reshape(-1)[0] if scale.size == 1 else scale, zero.reshape(-1)[0] if zero.size == 1 else zero


def replace_constant(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give ``node`` a fresh constant as input ``index``, in the stored dtype of the old one.

    A constant shared by several nodes is copied, so changing one user's copy never changes another's.
    """
    old = node.inputs[index]
    name = old.name if len(old.outputs) == 1 else f"{old.name}__{node.name}"
    # Not np.ascontiguousarray, which makes a 0-D value (a Gather's single index) 1-D.
    node.inputs[index] = gs.Constant(name, np.array(values, order="C"), export_dtype=old.export_dtype)


def _name_nodes(graph: gs.Graph) -> None:
    """Give unnamed or duplicate-named nodes unique names: reports and --exclude refer to nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op}_{index}"
        seen.add(node.name)


# Marks the name of a copy of a dequantized constant that several nodes read (see _own_dequantized_constants).
SHARED_COPY = "__shared_copy_"


def _inline_constant_nodes(graph: gs.Graph) -> None:
    """Turn ``Constant`` nodes (Paddle, tf2onnx), ``Identity`` of constants (PyTorch) and ``QuantizeLinear`` of
    constants (QDQ models) into constants, until none is left (a QuantizeLinear may come before the Identity
    it reads)."""
    outputs = {t.name for t in graph.outputs}
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            out = node.outputs[0] if len(node.outputs) == 1 else None
            if out is None or out.name in outputs:
                continue
            if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
                values = node.attrs["value"].values
            elif node.op == "Identity" and isinstance(node.inputs[0], gs.Constant):
                values = node.inputs[0].values
            elif node.op == "QuantizeLinear" and (values := _quantized_constant(node)) is not None:
                pass
            elif node.op == "Identity" and _dequantizes_constants(node.inputs[0]):
                # PyTorch shares equal parameters through an Identity; quantized, the Identity reads the
                # first one's DequantizeLinear. It becomes a DequantizeLinear of its own copy, as each has.
                dequantize = node.inputs[0].inputs[0]
                stored = dequantize.inputs[0]
                node.op, node.attrs = "DequantizeLinear", dict(dequantize.attrs)
                node.inputs = [_shared_copy(stored, out.name), *dequantize.inputs[1:]]
                changed = True
                continue
            else:
                continue
            node.outputs.clear()
            out.to_constant(np.asarray(values))
            changed = True
    _own_dequantized_constants(graph)


def _own_dequantized_constants(graph: gs.Graph) -> None:
    """Give each reader of a dequantized constant (a BatchNorm's scale shared by PyTorch between equal
    parameters, a detector's head shared by its pyramid levels) a DequantizeLinear of its own copy, so that
    each can be sliced with its channels, as a shared float constant is copied when sliced. Copies still
    equal to the first when the graph is written are shared again (see ``_share_unchanged_copies``)."""
    copies = []
    for node in graph.nodes:
        out = node.outputs[0] if node.op == "DequantizeLinear" and node.outputs else None
        if out is None or len(out.outputs) < 2 or out in graph.outputs or not _dequantizes_constants(out):
            continue
        readers = list({id(reader): reader for reader in out.outputs}.values())  # a node may read it twice
        uses = [(reader, position) for reader in readers for position, t in enumerate(reader.inputs) if t is out]
        for index, (reader, position) in enumerate(uses[1:], start=1):
            stored = node.inputs[0]
            own = gs.Variable(f"{out.name}__{index}", dtype=out.dtype, shape=out.shape)
            copies.append(gs.Node("DequantizeLinear", f"{node.name}__{index}", dict(node.attrs),
                                  [_shared_copy(stored, index), *node.inputs[1:]], [own]))
            reader.inputs[position] = own
    graph.nodes[:0] = copies  # constants only: ahead of everything


def _shared_copy(stored: gs.Constant, suffix: object) -> gs.Constant:
    """A copy of a stored (integer) constant for one more reader, named so ``_share_unchanged_copies`` finds it."""
    return gs.Constant(f"{stored.name}{SHARED_COPY}{suffix}", stored.values, export_dtype=stored.export_dtype)


def _share_unchanged_copies(graph: gs.Graph) -> None:
    """Point every DequantizeLinear of a copy made by ``_own_dequantized_constants`` that still equals its
    original (both unpruned, or pruned alike) back at the original, so that the file holds it once."""
    tensors = graph.tensors()
    for node in graph.nodes:
        copy = node.inputs[0] if node.op == "DequantizeLinear" and node.inputs else None
        if not isinstance(copy, gs.Constant) or SHARED_COPY not in copy.name:
            continue
        original = tensors.get(copy.name.rsplit(SHARED_COPY, 1)[0])
        if (isinstance(original, gs.Constant) and original.export_dtype == copy.export_dtype
                and original.shape == copy.shape and np.array_equal(original.values, copy.values)):
            node.inputs[0] = original


def _float32_quantization(node: gs.Node, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``_quantization`` in float32, as ONNX Runtime computes with it (both are exact in float32)."""
    scale, zero = _quantization(node, rank)
    return np.asarray(scale, dtype=np.float32), np.asarray(zero, dtype=np.float32)


def _dequantizes_constants(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is the output of a DequantizeLinear whose inputs are all constants."""
    return (len(tensor.inputs) == 1 and tensor.inputs[0].op == "DequantizeLinear"
            and all(isinstance(t, gs.Constant) for t in tensor.inputs[0].inputs if not t.is_empty()))


def _quantized_constant(node: gs.Node) -> np.ndarray | None:
    """The integers a QuantizeLinear of a float constant gives (a QDQ model quantizes a constant operand, an
    Add's identity matrix, say, at run time; or a constant it dequantized already), as ONNX Runtime computes
    them: round(x / scale) + zero point in float32, halves to even, saturated; None for other forms
    (block-wise, float8, a computed input)."""
    inputs = [t for t in node.inputs if not t.is_empty()]
    x = _float_constant(inputs[0]) if inputs else None
    if (x is None or len(inputs) < 2 or not all(isinstance(t, gs.Constant) for t in inputs[1:])
            or node.attrs.get("block_size", 0) or np.asarray(inputs[1].values).ndim > 1):
        return None
    if len(inputs) > 2:
        dtype = np.asarray(inputs[2].values).dtype
    elif "output_dtype" in node.attrs:
        return None
    else:
        dtype = np.dtype(np.uint8)
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return None
    scale, zero = _float32_quantization(node, x.ndim)
    limits = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero, limits.min, limits.max).astype(dtype)


def _float_constant(tensor: gs.Tensor) -> np.ndarray | None:
    """The float32 values of a constant, or of a DequantizeLinear of constants as ONNX Runtime computes them,
    (x - zero point) * scale in float32; None otherwise."""
    if isinstance(tensor, gs.Constant):
        values = np.asarray(tensor.values)
        return values if values.dtype == np.float32 else None
    if not _dequantizes_constants(tensor):
        return None
    node = tensor.inputs[0]
    inputs = [t for t in node.inputs if not t.is_empty()]
    stored = np.asarray(inputs[0].values)
    if (stored.dtype.kind not in "iu" or np.asarray(inputs[1].values).dtype != np.float32
            or np.asarray(inputs[1].values).ndim > 1 or node.attrs.get("block_size", 0)):
        return None
    scale, zero = _float32_quantization(node, stored.ndim)
    return ((stored.astype(np.float32) - zero) * scale).astype(np.float32)


def export_graph(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    """Export a graph keeping the template's opsets, IR version and metadata."""
    _share_unchanged_copies(graph)
    model = gs.export_onnx(graph)
    model.ir_version = template.ir_version
    # graphsurgeon adds the domains its nodes use (ONNX Runtime's transformer optimizer writes contrib ops
    # without importing com.microsoft, which ONNX's shape inference then refuses).
    imported = {entry.domain for entry in template.opset_import}
    added = [entry for entry in model.opset_import if entry.domain not in imported]
    del model.opset_import[:]
    model.opset_import.extend([*template.opset_import, *added])
    model.producer_name = template.producer_name
    model.producer_version = template.producer_version
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    return model


def size_names(model: onnx.ModelProto) -> set[str]:
    """The symbolic sizes (dim_params) that ``model`` declares on its inputs, outputs and value infos."""
    graph = model.graph
    return {d.dim_param for v in (*graph.input, *graph.output, *graph.value_info)
            for d in v.type.tensor_type.shape.dim if d.dim_param}


def forget_made_up_sizes(model: onnx.ModelProto, declared: set[str]) -> None:
    """Write the sizes that ONNX shape inference made up (unk__N) as unknown in ``model``'s value infos and
    outputs, except those in ``declared`` (the original's own). Inference names them afresh on every run, so
    names from different runs can meet in one graph, and ONNX Runtime takes sizes of one name as equal.
    Unknown sizes are always valid; ONNX Runtime infers its own."""
    for value in (*model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param.startswith(FRESH_SIZE) and dim.dim_param not in declared:
                dim.ClearField("dim_param")


def save_model_atomic(model: onnx.ModelProto, path: Path, external_data: bool = False) -> None:
    """Write the model to a temporary file beside ``path`` and rename it into place.

    With ``external_data`` the weights go to ``<name>.data`` beside it (needed past 2 GB); the data file
    is renamed into place first, then the model.
    """
    path = Path(path)
    if external_data:
        _save_with_external_data(model, path)
        return
    fd, tmp_name = _temporary_beside(path)
    os.close(fd)
    try:
        onnx.save(model, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file renamed into place."""
    fd, tmp_name = _temporary_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s folder, with the permissions a file written there plainly would get:
    mkstemp makes it private (0600), which would leave a pruned model unreadable to other users."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(name, _plain_permissions())
    return fd, name


def _plain_permissions() -> int:
    """The mode a file written plainly gets: 0666 less the umask (which can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_external(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    """Save ``model`` as ``folder/name`` with its weights in ``folder/name.data``; ``model`` is left unchanged."""
    target = Path(folder) / name
    # onnx's own conversion refuses a location that exists relative to the *working* directory (a
    # previous output beside the user's shell), so the tensors are marked here (as it marks them).
    for tensor in _all_tensors(model.graph, attributes=False):
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
            onnx.external_data_helper.set_external_data(tensor, f"{name}.data")
    onnx.save_model(model, str(target))
    # Saving moved the weights out of the proto: bring them back so the caller's model is whole again.
    onnx.external_data_helper.load_external_data_for_model(model, str(folder))
    return target


def _save_with_external_data(model: onnx.ModelProto, path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        written, data = write_external(model, Path(tmp), path.name), Path(tmp) / f"{path.name}.data"
        os.chmod(written, _plain_permissions())
        if data.exists():  # not where pruning left every tensor too small to go out
            os.chmod(data, _plain_permissions())
            os.replace(data, path.parent / data.name)
        os.replace(written, path)


def static_shape(tensor: gs.Tensor) -> tuple[Dim, ...] | None:
    """The tensor's shape as inferred (dims may be symbolic strings or None), or None if unknown."""
    if isinstance(tensor, gs.Constant):
        return tuple(int(d) for d in tensor.shape)
    if tensor.shape is None:
        return None
    return tuple(d if isinstance(d, (int, np.integer)) and d >= 0 else (d or None) for d in tensor.shape)


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor, or None for activations and empty optional inputs."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    return None
