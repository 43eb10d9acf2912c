"""Property test: random valid graphs built from the supported ops always prune into models that pass
the checker, run in ONNX Runtime, and meet the masking oracle."""

from __future__ import annotations

import os

import numpy as np
import onnx
from helpers import assert_matches_masked, make_model, run, weight
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import onnxprune

SIZE = 8
ACTIVATIONS = ("none", "Relu", "SiLU", "Clip", "LeakyRelu", "HardSwish")
BLOCKS = ("conv", "bn", "depthwise", "residual", "concat", "split", "se", "pool_resize", "add_const", "prelu", "tokens", "attention",
          "input_concat", "pick_one")


class GraphBuilder:
    """Appends blocks to a chain of NCHW activations, tracking the current tensor and channel count."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.x, self.channels = "x", 3

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1) -> str:
        y, w = self.name("conv"), self.name("w")
        self.inits.append(weight(w, (c_out, c_in // group, k, k), self.count))
        inputs = [x, w]
        if self.draw(st.booleans()):
            b = self.name("b")
            self.inits.append(weight(b, (c_out,), self.count + 500))
            inputs.append(b)
        self.nodes.append(helper.make_node("Conv", inputs, [y], name=y, group=group, pads=[k // 2] * 4))
        return y

    def activation(self, x: str) -> str:
        kind = self.draw(st.sampled_from(ACTIVATIONS))
        if kind == "none":
            return x
        y = self.name("act")
        if kind == "SiLU":
            s = self.name("sig")
            self.nodes += [helper.make_node("Sigmoid", [x], [s]), helper.make_node("Mul", [x, s], [y])]
        elif kind == "Clip":
            lo, hi = self.name("lo"), self.name("hi")
            self.inits += [numpy_helper.from_array(np.array(0.0, np.float32), lo), numpy_helper.from_array(np.array(6.0, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        else:
            self.nodes.append(helper.make_node(kind, [x], [y]))
        return y

    def width(self) -> int:
        return self.draw(st.integers(2, 12))

    def block(self, kind: str) -> None:
        x, c = self.x, self.channels
        if kind == "conv":
            self.channels = self.width()
            self.x = self.activation(self.conv(x, c, self.channels, k=self.draw(st.sampled_from([1, 3]))))
        elif kind == "bn":
            names = [self.name(p) for p in ("s", "bb", "mean", "var")]
            self.inits += [weight(n, (c,), self.count + i) for i, n in enumerate(names[:3])]
            self.inits.append(numpy_helper.from_array(np.linspace(0.5, 2.0, c, dtype=np.float32), names[3]))
            self.x = self.name("bn")
            self.nodes.append(helper.make_node("BatchNormalization", [x, *names], [self.x]))
        elif kind == "depthwise":
            self.x = self.activation(self.conv(x, c, c, group=c))
        elif kind == "residual":
            inner = self.activation(self.conv(x, c, self.width()))
            branch = self.conv(inner, self._last_out(), c)
            self.x = self.name("res")
            self.nodes.append(helper.make_node("Add", [x, branch], [self.x]))
        elif kind == "concat":
            extra = self.width()
            branch = self.activation(self.conv(x, c, extra))
            self.x, self.channels = self.name("cat"), c + extra
            self.nodes.append(helper.make_node("Concat", [x, branch], [self.x], axis=1))
        elif kind == "split" and c >= 2:
            first = self.draw(st.integers(1, c - 1))
            a, b = self.name("sa"), self.name("sb")
            sizes = self.name("sizes")
            self.inits.append(numpy_helper.from_array(np.array([first, c - first], np.int64), sizes))
            self.nodes.append(helper.make_node("Split", [x, sizes], [a, b], axis=1))
            out = self.width()
            branch = self.activation(self.conv(b, c - first, out))
            self.x, self.channels = self.name("cat"), first + out
            self.nodes.append(helper.make_node("Concat", [a, branch], [self.x], axis=1))
        elif kind == "se":
            pooled = self.name("gap")
            self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
            squeezed = self.activation(self.conv(pooled, c, self.width(), k=1))
            gate = self._damped(self.conv(squeezed, self._last_out(), c, k=1))
            sig, self.x = self.name("gate"), self.name("se")
            self.nodes += [helper.make_node("Sigmoid", [gate], [sig]), helper.make_node("Mul", [x, sig], [self.x])]
        elif kind == "pool_resize":
            pooled, scales, self.x = self.name("pool"), self.name("scales"), self.name("up")
            self.inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales))
            self.nodes += [helper.make_node("MaxPool", [x], [pooled], kernel_shape=[2, 2], strides=[2, 2]),
                           helper.make_node("Resize", [pooled, "", scales], [self.x], mode="nearest")]
        elif kind == "add_const":
            const, self.x = self.name("const"), self.name("addc")
            self.inits.append(weight(const, (c, 1, 1), self.count))
            self.nodes.append(helper.make_node("Add", [x, const], [self.x]))
        elif kind == "tokens":
            # TorchScript's x.flatten(2).transpose(1, 2) -> MLP -> back to a map, both reshape targets
            # computed at run time from Shape(x), as with a symbolic batch.
            hidden, out = self.width(), self.width()
            shape, w1, w2 = self.name("shape"), self.name("mlp_w"), self.name("mlp_w")
            self.inits += [weight(w1, (c, hidden), self.count), weight(w2, (hidden, out), self.count + 1)]
            bounds = {name: self.name(name) for name in ("zero", "one", "two", "four", "minus_one", "width")}
            for name, value in zip(bounds.values(), (0, 1, 2, 4, -1, out)):
                self.inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
            lead, batch, sizes = self.name("lead"), self.name("batch"), self.name("sizes")
            flat_target, map_target = self.name("flat_target"), self.name("map_target")
            flat, tokens, mixed, mapped = self.name("flat"), self.name("tokens"), self.name("mixed"), self.name("mapped")
            self.nodes += [
                helper.make_node("Shape", [x], [shape]),
                helper.make_node("Slice", [shape, bounds["zero"], bounds["two"]], [lead]),
                helper.make_node("Concat", [lead, bounds["minus_one"]], [flat_target], axis=0),
                helper.make_node("Reshape", [x, flat_target], [flat]),
                helper.make_node("Transpose", [flat], [tokens], perm=[0, 2, 1]),
                helper.make_node("MatMul", [tokens, w1], [self.name("h")])]
            hidden_out = self.activation(self.nodes[-1].output[0])
            self.nodes += [
                helper.make_node("MatMul", [hidden_out, w2], [mixed]),
                helper.make_node("Transpose", [mixed], [mapped], perm=[0, 2, 1]),
                helper.make_node("Slice", [shape, bounds["zero"], bounds["one"]], [batch]),
                helper.make_node("Slice", [shape, bounds["two"], bounds["four"]], [sizes]),
                helper.make_node("Concat", [batch, bounds["width"], sizes], [map_target], axis=0),
                helper.make_node("Reshape", [mapped, map_target], [self.name("map")])]
            self.x, self.channels = self.nodes[-1].output[0], out
        elif kind == "attention":
            self.attention(x, c)
        elif kind == "input_concat":
            # The model input joined to the features (its channels stay, the features' can go).
            self.x, self.channels = self.name("incat"), c + 3
            self.nodes.append(helper.make_node("Concat", [x, "x"], [self.x], axis=1))
        elif kind == "pick_one":
            # x[:, i:i+1] taken by a Gather of one index, joined back: that channel stays.
            index, axes, picked, lifted = self.name("index"), self.name("axes"), self.name("pick"), self.name("lift")
            self.inits += [numpy_helper.from_array(np.array(self.draw(st.integers(0, c - 1)), np.int64), index),
                           numpy_helper.from_array(np.array([1], np.int64), axes)]
            self.x, self.channels = self.name("pickcat"), c + 1
            self.nodes += [helper.make_node("Gather", [x, index], [picked], axis=1),
                           helper.make_node("Unsqueeze", [picked, axes], [lifted]),
                           helper.make_node("Concat", [x, lifted], [self.x], axis=1)]
        elif kind == "prelu":
            slope, self.x = self.name("slope"), self.name("prelu")
            self.inits.append(numpy_helper.from_array(np.linspace(0.05, 0.5, c, dtype=np.float32).reshape(c, 1, 1), slope))
            self.nodes.append(helper.make_node("PRelu", [x, slope], [self.x]))

    def attention(self, x: str, c: int) -> None:
        """Self-attention over the map's positions as tokens: q, k, v projections (one fused MatMul split
        after the head reshape, as TorchScript exports timm's, or three), heads, softmax, output projection."""
        heads, size = self.draw(st.integers(1, 4)), self.draw(st.integers(1, 4))
        width, style = heads * size, self.draw(st.sampled_from(["fused", "separate", "multihead", "merged"]))
        fused = style == "fused"
        const = {}
        for name, value in (("tokens_shape", [0, c, -1]), ("split_heads", [0, 0, 3, heads, size] if fused else
                            [0, 0, heads, size]), ("merge_heads", [0, 0, width]), ("map_shape", [0, c, SIZE, SIZE])):
            if style == "merged" and name in ("split_heads", "merge_heads"):
                continue  # that style splits and merges its heads itself
            const[name] = self.name(name)
            self.inits.append(numpy_helper.from_array(np.array(value, np.int64), const[name]))
        flat, tokens = self.name("flat"), self.name("tokens")
        self.nodes += [helper.make_node("Reshape", [x, const["tokens_shape"]], [flat]),
                       helper.make_node("Transpose", [flat], [tokens], perm=[0, 2, 1])]
        out_w, out, mapped = self.name("out_w"), self.name("out"), self.name("mapped")
        if style == "merged":
            self.inits.append(weight(out_w, (width, c), self.count + 7))
            self.nodes += [helper.make_node("MatMul", [self._merged_attention(tokens, c, heads, size), out_w], [out]),
                           helper.make_node("Transpose", [out], [mapped], perm=[0, 2, 1])]
            self.x = self.name("attended")
            self.nodes.append(helper.make_node("Reshape", [mapped, const["map_shape"]], [self.x]))
            return
        if fused:
            w, qkv, split, moved = self.name("qkv_w"), self.name("qkv"), self.name("qkv_split"), self.name("qkv_moved")
            self.inits.append(weight(w, (c, 3 * width), self.count))
            parts = [self.name(p) for p in ("q5", "k5", "v5")]
            heads_of = [self.name(p) for p in ("q", "k", "v")]
            axes, thirds = self.name("axes"), self.name("thirds")
            self.inits += [numpy_helper.from_array(np.array([0], np.int64), axes),
                           numpy_helper.from_array(np.array([1, 1, 1], np.int64), thirds)]
            self.nodes += [helper.make_node("MatMul", [tokens, w], [qkv]),
                           helper.make_node("Reshape", [qkv, const["split_heads"]], [split]),
                           helper.make_node("Transpose", [split], [moved], perm=[2, 0, 3, 1, 4]),
                           helper.make_node("Split", [moved, thirds], parts, axis=0)]
            self.nodes += [helper.make_node("Squeeze", [part, axes], [head]) for part, head in zip(parts, heads_of)]
            q, k, v = heads_of
        elif style == "multihead":
            q, k, v = self._multihead_parts(tokens, c, heads, size)
        else:
            q, k, v = (self._heads(tokens, c, width, const["split_heads"]) for _ in range(3))
        keys, scores, probs, mixed = self.name("keys"), self.name("scores"), self.name("probs"), self.name("mixed")
        back, merged = self.name("back"), self.name("merged")
        self.inits.append(weight(out_w, (width, c), self.count + 7))
        if self.draw(st.booleans()):
            self.nodes.append(helper.make_node("Transpose", [k], [keys], perm=[0, 1, 3, 2]))
        else:
            self._key_round_trip(k, keys)
        self.nodes.append(helper.make_node("MatMul", [q, keys], [scores]))
        self.nodes += [helper.make_node("Softmax", [self._damped(scores)], [probs], axis=-1),
                       helper.make_node("MatMul", [probs, v], [mixed]),
                       helper.make_node("Transpose", [mixed], [back], perm=[0, 2, 1, 3]),
                       helper.make_node("Reshape", [back, const["merge_heads"]], [merged]),
                       helper.make_node("MatMul", [merged, out_w], [out]),
                       helper.make_node("Transpose", [out], [mapped], perm=[0, 2, 1])]
        self.x = self.name("attended")
        self.nodes.append(helper.make_node("Reshape", [mapped, const["map_shape"]], [self.x]))

    def _merged_attention(self, tokens: str, c: int, heads: int, size: int) -> str:
        """Attention of ``tokens`` [N, positions, c] computed on [N x heads, positions, head size], as
        nn.MultiheadAttention exports it with need_weights=True; returns the heads merged back, [N, positions,
        heads x head size]."""
        width, positions = heads * size, SIZE * SIZE
        first, scores, probs, mixed = self.name("seq_first"), self.name("scores"), self.name("probs"), self.name("mixed")
        back, rows, merged = self.name("back"), self.name("rows"), self.name("merged")
        names = {key: self.name(key) for key in ("merged_shape", "rows_shape")}
        for key, value in (("merged_shape", [positions, -1, size]), ("rows_shape", [positions, -1, width])):
            self.inits.append(numpy_helper.from_array(np.array(value, np.int64), names[key]))
        self.nodes.append(helper.make_node("Transpose", [tokens], [first], perm=[1, 0, 2]))
        parts = []
        for index, perm in enumerate(([1, 0, 2], [1, 2, 0], [1, 0, 2])):  # q, k (transposed for q k^T), v
            w, projected, split, part = self.name("proj_w"), self.name("projected"), self.name("split"), self.name("part")
            self.inits.append(weight(w, (c, width), self.count + index))
            self.nodes += [helper.make_node("MatMul", [first, w], [projected]),
                           helper.make_node("Reshape", [projected, names["merged_shape"]], [split]),
                           helper.make_node("Transpose", [split], [part], perm=perm)]
            parts.append(part)
        self.nodes.append(helper.make_node("MatMul", parts[:2], [scores]))
        self.nodes += [helper.make_node("Softmax", [self._damped(scores)], [probs], axis=-1),
                       helper.make_node("MatMul", [probs, parts[2]], [mixed]),
                       helper.make_node("Transpose", [mixed], [back], perm=[1, 0, 2]),
                       helper.make_node("Reshape", [back, names["rows_shape"]], [rows]),
                       helper.make_node("Transpose", [rows], [merged], perm=[1, 0, 2])]
        return merged

    def _multihead_parts(self, tokens: str, c: int, heads: int, size: int) -> list[str]:
        """q, k, v [N, heads, positions, head size] as nn.MultiheadAttention exports them: sequence first, one
        packed projection whose parts are picked by Reshape [.., 3, E], moves and Gather, each part then
        reshaped to [positions, N x heads, head size], transposed, and reshaped to [N, heads, positions, size]."""
        width, positions = heads * size, SIZE * SIZE
        w, first, packed = self.name("packed_w"), self.name("seq_first"), self.name("packed")
        names = {key: self.name(key) for key in ("parts_shape", "zero", "three", "merged", "split", "split_axis")}
        for key, value in (("parts_shape", [0, 0, 3, width]), ("zero", [0]), ("three", [3]),
                           ("merged", [positions, -1, size]), ("split", [-1, heads, positions, size])):
            self.inits.append(numpy_helper.from_array(np.array(value, np.int64), names[key]))
        self.inits.append(weight(w, (c, 3 * width), self.count))
        parts, lifted, moved, stacked = self.name("parts"), self.name("lifted"), self.name("moved"), self.name("stacked")
        self.nodes += [helper.make_node("Transpose", [tokens], [first], perm=[1, 0, 2]),
                       helper.make_node("MatMul", [first, w], [packed]),
                       helper.make_node("Reshape", [packed, names["parts_shape"]], [parts]),
                       helper.make_node("Unsqueeze", [parts, names["zero"]], [lifted]),
                       helper.make_node("Transpose", [lifted], [moved], perm=[3, 1, 2, 0, 4]),
                       helper.make_node("Squeeze", [moved, names["three"]], [stacked])]
        result = []
        for index in range(3):
            which, part, merged, swapped, split = (self.name(n) for n in ("which", "part", "merged_heads", "swapped", "heads"))
            self.inits.append(numpy_helper.from_array(np.array(index, np.int64), which))
            self.nodes += [helper.make_node("Gather", [stacked, which], [part], axis=0),
                           helper.make_node("Reshape", [part, names["merged"]], [merged]),
                           helper.make_node("Transpose", [merged], [swapped], perm=[1, 0, 2]),
                           helper.make_node("Reshape", [swapped, names["split"]], [split])]
            result.append(split)
        return result

    def _key_round_trip(self, k: str, keys: str) -> None:
        """keys = k with its last two axes swapped, as the dynamo exporter writes it for
        scaled_dot_product_attention: [N, H, T, D] -> [-1, T, D] -> (0, 2, 1) -> [N, H, D, T], sizes read
        from Shape(k) at run time."""
        bounds = {name: self.name(name) for name in ("minus_one", "minus_two", "zero", "end")}
        for name, value in zip(bounds.values(), (-1, -2, 0, 2**62)):
            self.inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
        shape, d, t, nh = self.name("k_shape"), self.name("k_d"), self.name("k_t"), self.name("k_nh")
        merged, swapped = self.name("k3"), self.name("k3t")
        merged_shape, restored_shape = self.name("merged_shape"), self.name("restored_shape")
        self.nodes += [helper.make_node("Shape", [k], [shape]),
                       helper.make_node("Slice", [shape, bounds["minus_one"], bounds["end"]], [d]),
                       helper.make_node("Slice", [shape, bounds["minus_two"], bounds["minus_one"]], [t]),
                       helper.make_node("Slice", [shape, bounds["zero"], bounds["minus_two"]], [nh]),
                       helper.make_node("Concat", [bounds["minus_one"], t, d], [merged_shape], axis=0),
                       helper.make_node("Reshape", [k, merged_shape], [merged]),
                       helper.make_node("Transpose", [merged], [swapped], perm=[0, 2, 1]),
                       helper.make_node("Concat", [nh, d, t], [restored_shape], axis=0),
                       helper.make_node("Reshape", [swapped, restored_shape], [keys])]

    def _heads(self, tokens: str, c: int, width: int, split_heads: str) -> str:
        """One projection of ``tokens`` to [N, heads, positions, head size]."""
        w, projected, split, heads = self.name("proj_w"), self.name("projected"), self.name("split"), self.name("heads")
        self.inits.append(weight(w, (c, width), self.count))
        self.nodes += [helper.make_node("MatMul", [tokens, w], [projected]),
                       helper.make_node("Reshape", [projected, split_heads], [split]),
                       helper.make_node("Transpose", [split], [heads], perm=[0, 2, 1, 3])]
        return heads

    def _damped(self, x: str) -> str:
        """``x`` times 0.05, as a trained model keeps its gates and attention logits in a few units. The random
        weights here put them near 15, where ONNX Runtime's Sigmoid and Softmax approximations differ by
        more than the oracle's 1e-4 between a tensor of 3 channels and one of 1 (their vector and scalar
        paths: sigmoid(-12.2) came out 1.1% apart)."""
        factor, y = self.name("damp"), self.name("damped")
        self.inits.append(numpy_helper.from_array(np.array(0.05, np.float32), factor))
        self.nodes.append(helper.make_node("Mul", [x, factor], [y]))
        return y

    def _last_out(self) -> int:
        """Output channels of the most recently added conv weight."""
        return next(int(i.dims[0]) for i in reversed(self.inits) if i.name.startswith("w"))

    def head(self) -> None:
        kind = self.draw(st.sampled_from(["conv", "gap_gemm", "flatten_gemm"]))
        if kind == "conv":
            self.conv(self.x, self.channels, 3)
            self.nodes[-1].output[0] = "y"
            return
        features = self.channels * (1 if kind == "gap_gemm" else SIZE * SIZE)
        x = self.x
        if kind == "gap_gemm":
            x = self.name("gap")
            self.nodes.append(helper.make_node("GlobalAveragePool", [self.x], [x]))
        flat = self.name("flat")
        self.inits += [weight("fc.w", (5, features), 1), weight("fc.b", (5,), 2)]
        self.nodes += [helper.make_node("Flatten", [x], [flat]), helper.make_node("Gemm", [flat, "fc.w", "fc.b"], ["y"], transB=1)]


@st.composite
def random_models(draw) -> onnx.ModelProto:
    builder = GraphBuilder(draw)
    builder.block("conv")
    for kind in draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6)):
        builder.block(kind)
    builder.head()
    return make_model(builder.nodes, {"x": ["N", 3, SIZE, SIZE]}, ["y"], builder.inits)


@settings(max_examples=int(os.environ.get("PROP_N", 60)), deadline=None, derandomize=os.environ.get("PROP_SEED") is None, suppress_health_check=list(HealthCheck))
@given(model=random_models(), ratio=st.sampled_from([0.2, 0.5, 0.8]), round_to=st.sampled_from([1, 2]),
       importance=st.sampled_from(["l1", "l2"]))
def test_random_graphs_prune_into_valid_equivalent_models(model, ratio, round_to, importance):
    result = onnxprune.prune(model, ratio=ratio, round_to=round_to, importance=importance)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.pruned.params <= result.original.params
    for group in result.report["groups"]:
        assert 1 <= group["kept"] <= group["channels"]
    assert_matches_masked(model, result.model, result.report)


@settings(max_examples=int(os.environ.get("PROP_N2", 25)), deadline=None, derandomize=os.environ.get("PROP_SEED") is None, suppress_health_check=list(HealthCheck))
@given(model=random_models(), ratio=st.sampled_from([0.2, 0.5]),
       importance=st.sampled_from(["activation", "apoz", "fluctuation", "wanda", "redundancy"]))
def test_random_graphs_prune_with_calibration_and_compensation(model, ratio, importance):
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(8, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(5)]
    options = {"ratio": ratio, "round_to": 1, "importance": importance, "calib": batches, "held_out": 0.25}
    result = onnxprune.prune(model, **options)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.pruned.params <= result.original.params
    feeds = {"x": rng.normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)}
    assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape
    plain = onnxprune.prune(model, compensate=False, **options)
    assert result.plan == plain.plan  # compensation changes weights, never the choice of channels

    def error(r):
        return max(o.relative_l2 for o in r.evaluation.outputs)

    assert error(result) <= error(plain) + 1e-9  # on the held-out samples, never less faithful
