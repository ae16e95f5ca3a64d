"""The network's stream as ONNX Runtime graphs: one call per codemap column, state as explicit arrays.

A live column through TorchScript is some 300 small ops at a few microseconds each; the same
arithmetic as three ONNX Runtime calls costs half or less (each layer's past frames an explicit
input, every convolution a plain 2-D one that ONNX Runtime runs in its blocked layout). Built from a model file's
weights in milliseconds (nothing compiled, nothing cached); needs ``onnxruntime`` alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ParameterError
from .neural_prior import DRAW_BLOCK, DRAW_TOLERANCE
from .vqvae import CausalConv2d, Decoder, Encoder, ResBlock, UpBlock

OPSET = 20
"""ONNX opset of the graphs (20 has ``Gelu``)."""

def runtime_available() -> bool:
    """Whether ONNX Runtime imports here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# ONNX element types (onnx.proto's TensorProto.DataType) of the numpy dtypes the graphs use
_ELEMENT_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int64): 7, np.dtype(np.bool_): 9, np.dtype(np.float64): 11}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, ten bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, value: Any) -> bytes:
    """One protobuf field: an int (varint), a float (32-bit), bytes or str (length-delimited)."""
    if isinstance(value, float):
        return _varint(number << 3 | 5) + np.float32(value).tobytes()
    if isinstance(value, (int, np.integer)):
        return _varint(number << 3) + _varint(int(value))
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _attribute(name: str, value: Any) -> bytes:
    """An ``AttributeProto``: float (type 1), int (2), string (3) or list of ints (7)."""
    if isinstance(value, float):
        body, kind = _field(2, value), 1
    elif isinstance(value, (int, np.integer)):
        body, kind = _field(3, int(value)), 2
    elif isinstance(value, str):
        body, kind = _field(4, value), 3
    else:
        body, kind = b"".join(_field(8, int(v)) for v in value), 7
    return _field(1, name) + body + _field(20, kind)


def _value_info(name: str, dtype: Any, shape: list | None) -> bytes:
    """A ``ValueInfoProto`` of a tensor: element type and, when given, dims (ints, or names)."""
    tensor = _field(1, _ELEMENT_TYPES[np.dtype(dtype)])
    if shape is not None:
        dims = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in shape)
        tensor += _field(2, dims)
    return _field(1, name) + _field(2, _field(1, tensor))


class _Graph:
    """A small ONNX graph under construction (named values, constants, nodes), serialised as the
    ``ModelProto`` that ONNX Runtime loads; written here, so that nothing imports the ``onnx``
    package (0.8 s at every start)."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.inputs: list[bytes] = []
        self.outputs: list[bytes] = []
        self.count = 0

    def _fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def input(self, name: str, shape: list, dtype=np.float32) -> str:
        self.inputs.append(_value_info(name, dtype, shape))
        return name

    def output(self, value: str, name: str, dtype=np.float32) -> None:
        self._node("Identity", [value], name, {})
        self.outputs.append(_value_info(name, dtype, None))

    def const(self, array: Any, stem: str = "c") -> str:
        name = self._fresh(stem)
        array = np.ascontiguousarray(array)
        tensor = b"".join(_field(1, d) for d in array.shape) + _field(2, _ELEMENT_TYPES[array.dtype])
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()  # raw_data is little-endian
        self.initializers.append(tensor + _field(8, name) + _field(9, data))
        return name

    def ints(self, values: list) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "shape")

    def _node(self, op_type: str, inputs: list, output: str, attrs: dict) -> None:
        body = b"".join(_field(1, i) for i in inputs) + _field(2, output) + _field(3, output) + _field(4, op_type)
        self.nodes.append(body + b"".join(_field(5, _attribute(k, v)) for k, v in attrs.items()))

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self._fresh(op_type.lower())
        self._node(op_type, list(inputs), out, attrs)
        return out

    def model_bytes(self) -> bytes:
        graph = (b"".join(_field(1, n) for n in self.nodes) + _field(2, self.name)
                 + b"".join(_field(5, t) for t in self.initializers)
                 + b"".join(_field(11, v) for v in self.inputs) + b"".join(_field(12, v) for v in self.outputs))
        opset = _field(1, "") + _field(2, OPSET)
        return _field(1, 9) + _field(2, "spectro-fx") + _field(7, graph) + _field(8, opset)  # IR version 9


def _weights(conv: CausalConv2d) -> tuple[np.ndarray, np.ndarray]:
    weight = conv.conv.weight.detach().float().numpy()  # [c_out, c_in, kf, kt]
    bias = conv.conv.bias
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias.detach().float().numpy()
    return weight, bias


class _Builder:
    """Layers of the stream in the layout ``[streams, channels, frames, bins]`` (time before
    frequency, as the model's convolutions read them)."""

    def __init__(self, graph: _Graph, bins: int):
        self.g = graph
        self.bins = bins  # of the value the next layer reads
        # (input, output, (channels, frames, bins), layer) of each layer that keeps past frames
        self.caches: list[tuple[str, str, tuple[int, int, int], CausalConv2d]] = []

    def conv(self, x: str, layer: CausalConv2d, frames: int) -> tuple[str, int]:
        """``x`` [S, c_in, frames, F] -> ``[S, c_out, frames // st, F']`` and its frame count;
        a layer with time context reads its last input frames from a cache input. A plain 2-D
        convolution: ONNX Runtime runs it in its blocked-channel layout (NCHWc), about 1.3x faster
        here than the same arithmetic as a 1-D convolution with the frames folded into channels."""
        g = self.g
        weight, bias = _weights(layer)
        c_out, c_in, kf, kt = weight.shape
        st, sf, pad_t = layer.st, layer.sf, layer.pad_t
        bins = self.bins
        self.bins = (bins + layer.pad_f[0] + layer.pad_f[1] - kf) // sf + 1
        window, width = x, frames
        if pad_t > 0:
            name = f"cache{len(self.caches)}"
            cache = g.input(name, ["S", c_in, pad_t, bins])
            window = g.op("Concat", cache, x, axis=2)
            width = frames + pad_t
            new = g.op("Slice", window, g.ints([frames]), g.ints([width]), g.ints([2]))
            self.caches.append((name, name + "_out", (c_in, pad_t, bins), layer))
            g.output(new, name + "_out")
        y = g.op("Conv", window, g.const(weight.transpose(0, 1, 3, 2).copy(), "w"), g.const(bias, "b"),
                 pads=[0, layer.pad_f[0], 0, layer.pad_f[1]], strides=[st, sf])
        return y, (width - kt) // st + 1

    def gelu(self, x: str) -> str:
        return self.g.op("Gelu", x)

    def res_block(self, x: str, block: ResBlock, frames: int) -> str:
        h, _ = self.conv(self.gelu(x), block.conv1, frames)
        h, _ = self.conv(self.gelu(h), block.conv2, frames)
        return self.g.op("Add", x, h)

    def up_block(self, x: str, block: UpBlock, frames: int) -> tuple[str, int]:
        """Sub-pixel upsampling: channel ``c * sf * st + i * st + j`` goes to bin ``f * sf + i``, frame ``t * st + j``."""
        g = self.g
        y, _ = self.conv(x, block.conv, frames)
        sf, st, c = block.sf, block.st, block.c_out
        y = g.op("Reshape", y, g.ints([0, c, sf, st, frames, -1]))
        y = g.op("Transpose", y, perm=[0, 1, 4, 3, 5, 2])
        self.bins *= sf
        return g.op("Reshape", y, g.ints([0, c, frames * st, -1])), frames * st


class ColumnNetwork:
    """A model's encoder, code search and decoder streaming one codemap column per call in ONNX
    Runtime, for ``streams`` streams; the state (each layer's last frames) is kept here as arrays.

    Exactly the TorchScript stream's arithmetic (``ExportedVQVAE.stream_encode`` and
    ``stream_decode_latent``) up to float32 rounding (relative 1e-6; a near-tie in the code search
    may round to the other code).

    Parameters
    ----------
    module : ExportedVQVAE
        The network (unscripted: ``rebuild_module`` of a model file), float32.
    streams : int > 0
    """

    def __init__(self, module: Any, *, streams: int):
        import onnxruntime as ort

        if streams < 1:
            raise ParameterError(f"streams={streams} must be a positive integer")
        self.streams = streams
        self.time_stride = int(module.time_stride)
        self.freq_stride = int(module.freq_stride)
        self.n_rows = int(module.n_rows)
        self.n_bins = int(module.n_bins)
        self.padded_bins = int(module.padded_bins)
        self.codebook_size = int(module.codebook_size)
        decoder: Decoder = module.decoder
        self.row_reach = int(decoder.row_reach)
        self.tail_frames = int(decoder.tail_frames)
        self.context_columns = int(decoder.context_columns)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(graph: _Graph):
            return ort.InferenceSession(graph.model_bytes(), options, providers=["CPUExecutionProvider"])

        paths = {layer: path for path, layer in module.named_modules()}
        encoder, self._encoder_caches = self._encoder_graph(module)
        self._cache_paths = [paths[layer] for *_, layer in self._encoder_caches]
        self._encoder = session(encoder)
        trunk, self._trunk_caches = self._trunk_graph(decoder)
        self._trunk = session(trunk)
        self._cache_paths += [paths[layer] for *_, layer in self._trunk_caches]
        self._head = session(self._head_graph(decoder, module, with_tail=True))
        self._maps = session(self._head_graph(decoder, module, with_tail=False))
        self.reset()

    # graphs ---------------------------------------------------------------------------------

    def _encoder_graph(self, module: Any) -> tuple[_Graph, list]:
        """``magnitude`` [S, n_bins, time_stride] (the encoder's input) + caches -> ``distance``
        [S * n_rows, K] of every row to every code (up to each row's own norm) + caches."""
        g = _Graph("encoder")
        b = _Builder(g, self.padded_bins)
        norm = module.normalizer
        x = g.input("magnitude", ["S", self.n_bins, self.time_stride])
        z = g.op("Log", g.op("Add", g.op("Relu", x), g.const(np.float32(norm.floor))))
        z = g.op("Div", g.op("Sub", z, g.const(np.float32(norm.offset))), g.const(np.float32(norm.scale)))
        z = g.op("Transpose", z, perm=[0, 2, 1])
        extra = self.padded_bins - self.n_bins
        if extra > 0:  # the top bin repeated, as the model's features
            z = g.op("Pad", z, g.ints([0, 0, 0, 0, 0, extra]), mode="edge")
        x = g.op("Unsqueeze", z, g.ints([1]))
        frames = self.time_stride
        encoder: Encoder = module.encoder
        for layer in encoder.net:
            if isinstance(layer, CausalConv2d):
                x, frames = b.conv(x, layer, frames)
            elif isinstance(layer, ResBlock):
                x = b.res_block(x, layer, frames)
            else:
                x = b.gelu(x)
        # [S, D, 1, rows] -> [S * rows, D]; distance |e|^2 - 2 z.e (its first minimum is found in
        # numpy: ONNX Runtime's ArgMin takes 36 us on these 33 x 1024, numpy's 5)
        d = int(module.code_dim)
        z = g.op("Reshape", g.op("Transpose", x, perm=[0, 2, 3, 1]), g.ints([-1, d]))
        codebook = module.codebook.detach().float()
        distance = g.op("Gemm", z, g.const(codebook.numpy(), "codebook"), g.const(codebook.pow(2).sum(1).numpy(), "norms"),
                        alpha=-2.0, beta=1.0, transB=1)
        g.output(distance, "distance")
        return g, b.caches

    def _trunk_graph(self, decoder: Decoder) -> tuple[_Graph, list]:
        """``latent`` [S, D, n_rows] + caches -> ``trunk`` [S, C, 1, n_rows] + caches."""
        g = _Graph("trunk")
        b = _Builder(g, self.n_rows)
        d = decoder.trunk[0].conv.in_channels
        x = g.op("Unsqueeze", g.input("latent", ["S", d, self.n_rows]), g.ints([2]))
        for layer in decoder.trunk:
            x = b.res_block(x, layer, 1) if isinstance(layer, ResBlock) else b.conv(x, layer, 1)[0]
        g.output(x, "trunk")
        return g, b.caches

    def _head_graph(self, decoder: Decoder, module: Any, *, with_tail: bool) -> _Graph:
        """``trunk`` rows [S, C, 1, r] -> the tail's tap maps ``[S, kf * kt, frames, bins]``, or with
        the tail (its ``context`` maps [S, taps, tail_frames, bins] in): ``magnitude`` [S, frames, bins]
        linear, and the maps' last ``tail_frames`` frames as the next ``context``."""
        g = _Graph("head" if with_tail else "maps")
        b = _Builder(g, 0)  # any rows: nothing here keeps past frames
        channels = decoder.trunk[0].conv.out_channels  # the trunk keeps its first layer's channels
        x = g.input("trunk", ["S", channels, 1, "rows"])
        frames = 1
        layers = list(decoder.head)
        for layer in layers[: decoder.n_local - 1]:
            if isinstance(layer, UpBlock):
                x, frames = b.up_block(x, layer, frames)
            else:
                x = b.gelu(x)
        # the last upsampling, its GELU and the tail's projection onto its taps per subpixel
        up: UpBlock = layers[decoder.n_local - 1]
        u, _ = b.conv(x, up.conv, frames)
        c, sf, st = up.c_out, up.sf, up.st
        u = g.op("Gelu", g.op("Reshape", u, g.ints([0, c, sf * st, frames, -1])))
        tail: CausalConv2d = layers[-1]
        weight, bias = _weights(tail)  # [1, c, kf, kt]
        kf, kt = weight.shape[2], weight.shape[3]
        taps = weight[0].transpose(1, 2, 0).reshape(kf * kt, c)  # tap i * kt + j
        maps = g.op("MatMul", g.op("Transpose", u, perm=[0, 2, 3, 4, 1]), g.const(taps.T.copy(), "taps"))
        maps = g.op("Reshape", maps, g.ints([0, sf, st, frames, -1, kf * kt]))  # [S, i, j, t, f, tap]
        maps = g.op("Transpose", maps, perm=[0, 5, 3, 2, 4, 1])
        maps = g.op("Reshape", maps, g.ints([0, kf * kt, frames * st, -1]))
        if not with_tail:
            g.output(maps, "maps")
            return g
        context = g.input("context", ["S", kf * kt, self.tail_frames, "bins"])
        canvas = g.op("Concat", context, maps, axis=2)
        width = self.tail_frames + frames * st
        g.output(g.op("Slice", canvas, g.ints([width - self.tail_frames]), g.ints([width]), g.ints([2])), "context_out")
        canvas = g.op("Pad", canvas, g.ints([0, 0, 0, tail.pad_f[0], 0, 0, 0, tail.pad_f[1]]))
        # tap (i, j) of map i * kt + j read at bin offset i and frame offset j: a one-hot convolution
        select = np.zeros((1, kf * kt, kt, kf), np.float32)
        for i in range(kf):
            for j in range(kt):
                select[0, i * kt + j, j, i] = 1.0
        y = g.op("Conv", canvas, g.const(select, "select"), g.const(bias, "b"))
        norm = module.normalizer
        y = g.op("Add", g.op("Mul", g.op("Squeeze", y, g.ints([1])), g.const(np.float32(norm.scale))), g.const(np.float32(norm.offset)))
        g.output(g.op("Relu", g.op("Sub", g.op("Exp", y), g.const(np.float32(norm.floor)))), "magnitude")
        return g

    # stream ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """The start of a stream: every layer's past frames are zeros."""
        s = self.streams
        self._encoder_in = np.zeros((s, self.n_bins, self.time_stride), np.float32)
        self._distance = np.zeros((s * self.n_rows, self.codebook_size), np.float32)
        self._encoder_run = _Alternating(self._encoder, {"magnitude": self._encoder_in}, {"distance": self._distance},
                                         self._encoder_caches, s)
        d = self._trunk.get_inputs()[0].shape[1]
        self._latent_in = np.zeros((s, d, self.n_rows), np.float32)
        channels = self._head.get_inputs()[0].shape[1]
        self._trunk_out = [np.zeros((s, channels, 1, self.n_rows), np.float32) for _ in range(2)]
        self._trunk_run = _Alternating(self._trunk, {"latent": self._latent_in}, {"trunk": self._trunk_out},
                                       self._trunk_caches, s)
        self._trunk_history: list[np.ndarray] = []  # [S, C, 1, n_rows] of the last context_columns columns
        self._context: np.ndarray | None = None  # the tail's maps of the last frames, for rows _context_rows
        self._context_rows = (0, 0)

    def _cache_states(self) -> list[np.ndarray]:
        """The current state arrays ``[S, c_in, frames, bins]`` of every layer that keeps past
        frames, in the order of ``_cache_paths`` (the arrays the next call reads)."""
        runs = ((self._encoder_run, self._encoder_caches), (self._trunk_run, self._trunk_caches))
        return [run.states[run.turn][name] for run, caches in runs for name, *_ in caches]

    def store_state(self, module: Any) -> None:
        """This stream's state into ``module`` (the model's TorchScript stream, scripted or not:
        its layers' caches and the decoder's context), so that its stream methods go on from here."""
        for path, state in zip(self._cache_paths, self._cache_states()):
            _submodule(module, path).cache = torch.from_numpy(state.transpose(0, 1, 3, 2).copy())
        decoder = module.decoder
        if not self._trunk_history:
            decoder.trunk_cache = torch.zeros(0)
        else:
            columns = np.concatenate(self._trunk_history, axis=2)  # [S, C, columns, n_rows]
            decoder.trunk_cache = torch.from_numpy(columns.transpose(0, 1, 3, 2).copy())
        if self._context is None:
            decoder.tail_cache, decoder.tail_rows = torch.zeros(0), [0, 0]
        else:
            decoder.tail_cache = torch.from_numpy(self._context.transpose(0, 1, 3, 2).copy())
            decoder.tail_rows = list(self._context_rows)

    def load_state(self, module: Any) -> None:
        """The stream state of ``module`` (as :meth:`store_state` writes it) into this stream."""
        self.reset()
        for path, state in zip(self._cache_paths, self._cache_states()):
            cache = _submodule(module, path).cache
            if cache.dim() == 4:  # empty: the stream's start, zeros
                state[...] = cache.permute(0, 1, 3, 2).numpy()
        decoder = module.decoder
        trunk = decoder.trunk_cache
        if trunk.dim() == 4:
            self._trunk_history = [np.ascontiguousarray(trunk[:, :, :, c : c + 1].permute(0, 1, 3, 2).numpy())
                                   for c in range(trunk.shape[3])]
        rows = list(decoder.tail_rows)
        if rows[1] > rows[0] and decoder.tail_cache.dim() == 4:
            self._context = np.ascontiguousarray(decoder.tail_cache.permute(0, 1, 3, 2).numpy())
            self._context_rows = (int(rows[0]), int(rows[1]))

    def encode(self, magnitude: np.ndarray) -> np.ndarray:
        """The next column's encoder input ``[streams, n_bins, time_stride]`` (any layout, float32
        or float64: copied into the float32 input buffer) -> its codes ``[streams, n_rows]`` int64."""
        np.copyto(self._encoder_in, magnitude)
        self._encoder_run()
        return np.argmin(self._distance, axis=1).reshape(self.streams, self.n_rows)  # the first of equal minima

    def decode(self, latent: np.ndarray, low_row: int, high_row: int) -> np.ndarray | None:
        """The next column's latent ``[streams, D, n_rows]`` float32 (any layout) -> linear magnitude
        ``[streams, n_bins, time_stride]`` of rows ``low_row <= row < high_row`` (0 elsewhere), or
        None when no row is asked for (the trunk still advances)."""
        np.copyto(self._latent_in, latent)
        before = list(self._trunk_history)
        trunk = self._trunk_out[self._trunk_run.turn]
        self._trunk_run()
        if self.context_columns > 1:  # the two output buffers alternate: keep older columns apart
            trunk = trunk.copy()
        self._trunk_history = (before + [trunk])[-self.context_columns :]
        if low_row >= high_row:
            self._context = None
            return None
        r0, r1 = max(low_row - self.row_reach, 0), min(high_row + self.row_reach, self.n_rows)
        fs, ts = self.freq_stride, self.time_stride
        if self._context is not None and self._context_rows == (r0, r1):
            context = self._context
        else:  # the tail's context from the earlier columns' trunk outputs (zeros before the stream's start)
            taps = self._head.get_inputs()[1].shape[1]
            context = np.zeros((self.streams, taps, self.tail_frames, (r1 - r0) * fs), np.float32)
            if before:
                # the head is local to a column: the earlier columns run as a batch
                stacked = np.concatenate([column[:, :, :, r0:r1] for column in before], axis=0)
                maps = self._maps.run(["maps"], {"trunk": stacked})[0]
                maps = maps.reshape(len(before), self.streams, *maps.shape[1:]).transpose(1, 2, 0, 3, 4)
                maps = maps.reshape(self.streams, taps, -1, maps.shape[-1])
                n = min(maps.shape[2], self.tail_frames)
                context[:, :, self.tail_frames - n :] = maps[:, :, maps.shape[2] - n :]
        magnitude, self._context = self._head.run(
            ["magnitude", "context_out"], {"trunk": np.ascontiguousarray(trunk[:, :, :, r0:r1]), "context": context}
        )
        self._context_rows = (r0, r1)
        out = np.zeros((self.streams, self.n_bins, ts), np.float32)
        top = min(high_row * fs, self.n_bins)
        skip = (low_row - r0) * fs
        out[:, low_row * fs : top, :] = magnitude[:, :, skip : skip + top - low_row * fs].transpose(0, 2, 1)
        return out


class PriorNetwork:
    """A model's neural prior (:class:`~spectro_fx.models.neural_prior.NeuralPrior`) in ONNX
    Runtime: its features and the head on the asked cells, ``logits(context, column, known,
    cells)`` = ``cell_logits`` of ``features`` at ``cells``, up to float32 rounding.

    Parameters
    ----------
    prior : NeuralPrior
        Unscripted, float32.
    """

    def __init__(self, prior: Any):
        import onnxruntime as ort

        g = _Graph("prior")
        k, c = int(prior.codebook_size), int(prior.context_columns)
        context = g.input("context", ["B", "R", c], np.int64)
        column = g.input("column", ["B", "R"], np.int64)
        known = g.input("known", ["B", "R"], np.bool_)
        cells = g.input("cells", ["N", 2], np.int64)
        # one embedding lookup for the context and the column; unknown (< 0, or not known) is K
        own = g.op("Where", known, column, g.const(np.int64(-1)))
        codes = g.op("Concat", context, g.op("Unsqueeze", own, g.ints([2])), axis=2)
        codes = g.op("Where", g.op("Less", codes, g.const(np.int64(0))), g.const(np.int64(k)), codes)
        embed = prior.embed.weight.detach().float().numpy()
        x = g.op("Reshape", g.op("Gather", g.const(embed, "embed"), codes), g.ints([0, 0, -1]))
        x = g.op("Concat", x, g.op("Unsqueeze", g.op("Cast", known, to=1), g.ints([2])), axis=2)
        if bool(prior.level_input):  # NeuralPrior.band_level: the unknown rows' mean code level, on those rows
            table = prior.code_level.detach().float().numpy().reshape(-1)
            offsets = np.arange(prior.n_rows, dtype=np.int64) * k
            level = g.op("Gather", g.const(table, "code_level"),
                         g.op("Add", g.op("Max", column, g.const(np.int64(0))), g.const(offsets, "row_offsets")))
            unknown = g.op("Cast", g.op("Not", known), to=1)
            band = g.op("Div", g.op("ReduceSum", g.op("Mul", level, unknown), g.ints([1]), keepdims=1),
                        g.op("Max", g.op("ReduceSum", unknown, g.ints([1]), keepdims=1), g.const(np.float32(1.0))))
            x = g.op("Concat", x, g.op("Unsqueeze", g.op("Mul", band, unknown), g.ints([2])), axis=2)

        def weights(layer: Any) -> tuple[np.ndarray, np.ndarray]:
            return layer.weight.detach().float().numpy(), layer.bias.detach().float().numpy()

        w, b = weights(prior.row_in)
        bias = prior.row_bias.detach().float().numpy() + b  # [R, hidden]: the row's and the layer's
        h = g.op("Add", g.op("MatMul", x, g.const(w.T.copy(), "w")), g.const(bias, "b"))
        # the blocks as dilated convolutions over the rows (channels first): a block's linear map
        # of the rows at -d, 0, +d is a kernel of three taps
        h = g.op("Unsqueeze", g.op("Transpose", h, perm=[0, 2, 1]), g.ints([3]))
        for block, d in zip(prior.blocks, prior.dilations):
            w, b = weights(block)
            kernel = w.reshape(w.shape[0], 3, -1).transpose(0, 2, 1)[..., None].copy()  # [out, in, tap, 1]
            conv = g.op("Conv", g.op("Relu", h), g.const(kernel, "w"), g.const(b, "b"), dilations=[d, 1], pads=[d, 0, d, 0])
            h = g.op("Add", h, conv)
        h = g.op("GatherND", g.op("Transpose", g.op("Squeeze", g.op("Relu", h), g.ints([3])), perm=[0, 2, 1]), cells)  # [N, hidden]
        earlier = g.op("GatherND", g.op("Slice", codes, g.ints([0]), g.ints([c]), g.ints([2])), cells)  # [N, C]
        w, b = weights(prior.head)  # one more logit (K), always 0: where unknown earlier codes land
        head = np.concatenate([w.T, np.zeros((w.shape[1], 1), np.float32)], axis=1)
        logits = g.op("Gemm", h, g.const(head, "w"), g.const(np.append(b, np.float32(0)), "b"))
        w, b = weights(prior.copy)  # each earlier code's copy weight on its own logit
        copies = g.op("Gemm", h, g.const(w.T.copy(), "w"), g.const(b, "b"))
        logits = g.op("ScatterElements", logits, earlier, copies, axis=1, reduction="add")
        g.output(logits, "logits")
        self._draw_graph(g, g.op("Slice", logits, g.ints([0]), g.ints([k]), g.ints([1])), k)
        self.codebook_size = k
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(g.model_bytes(), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _draw_graph(g: _Graph, logits: str, k: int) -> None:
        """The draw of one code per row of ``logits`` [N, K] in float32 (inputs ``draws`` and
        ``temperature``, [N, 1] float32): ``sample_finite``'s inverse CDF of ``softmax(logits /
        temperature)``, its cumulative weights summed a block of codes at a time and then within
        the block where the draw falls. Outputs: ``codes`` [N, 1] int64; ``unsure`` [N, 1] bool
        where float32 does not decide: a draw within :data:`DRAW_TOLERANCE` of the total weight
        from an end of its code's interval (float32's rounding moves the ends by less: elsewhere
        the code is the one float64 picks), and every row at temperature 0 (the first maximum is
        taken from the logits, outside); ``unsure_logits`` [M, K], those rows' logits. (About 40
        nodes: each costs ONNX Runtime about a microsecond, so the graph is kept short.)"""
        block = DRAW_BLOCK if k % DRAW_BLOCK == 0 else k
        blocks = k // block
        draws, temperature = g.input("draws", ["N", 1]), g.input("temperature", ["N", 1])

        def count_below(cumulative: str) -> str:  # how many of the cumulative weights are <= target
            return g.op("ReduceSum", g.op("Cast", g.op("LessOrEqual", cumulative, target), to=7), g.ints([1]), keepdims=1)

        x = g.op("Div", g.op("Sub", logits, g.op("ReduceMax", logits, g.ints([1]), keepdims=1)),
                 g.op("Max", temperature, g.const(np.float32(1e-30))))
        weights = g.op("Reshape", g.op("Exp", x), g.ints([0, blocks, block]))
        ends = g.op("CumSum", g.op("ReduceSum", weights, g.ints([2]), keepdims=0), g.const(np.int64(1)))  # [N, blocks]
        total = g.op("Slice", ends, g.ints([blocks - 1]), g.ints([blocks]), g.ints([1]))
        target = g.op("Mul", draws, total)
        at = g.op("Min", count_below(ends), g.const(np.int64(blocks - 1)))  # the block the draw falls in
        before = g.op("GatherElements", g.op("Pad", ends, g.ints([0, 1, 0, 0])), at, axis=1)  # the weight before it
        inner = g.op("Concat", before, g.op("Add", before, g.op("CumSum", g.op("GatherND", weights, at, batch_dims=1),
                                                                  g.const(np.int64(1)))), axis=1)  # [N, block + 1]
        # count_below(inner) - 1 codes of the block lie below the draw; past its end: the last code
        sampled = g.op("Add", g.op("Mul", at, g.const(np.int64(block))), count_below(inner))
        g.output(g.op("Min", g.op("Sub", sampled, g.const(np.int64(1))), g.const(np.int64(k - 1))), "codes", np.int64)
        # the nearest end of an interval: the cumulative weights are ordered, so the two around the draw
        margin = g.op("ReduceMin", g.op("Abs", g.op("Sub", inner, target)), g.ints([1]), keepdims=1)
        sure = g.op("And", g.op("Greater", margin, g.op("Mul", total, g.const(np.float32(DRAW_TOLERANCE)))),
                    g.op("Greater", temperature, g.const(np.float32(0.0))))
        unsure = g.op("Not", sure)
        g.output(unsure, "unsure", np.bool_)
        g.output(g.op("Compress", logits, g.op("Squeeze", unsure, g.ints([1])), axis=0), "unsure_logits")

    def logits(self, context: np.ndarray, column: np.ndarray, known: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Logits ``[N, K]`` of ``cells`` [N, 2] (batch row, row); the other arguments as ``NeuralPrior.forward``'s."""
        no_draws = np.zeros((cells.shape[0], 1), np.float32)
        feed = {"context": context, "column": column, "known": known, "cells": cells, "draws": no_draws, "temperature": no_draws}
        return self._session.run(["logits"], feed)[0][:, : self.codebook_size]

    def draw(self, context: np.ndarray, column: np.ndarray, known: np.ndarray, cells: np.ndarray, draws: np.ndarray,
             temperature: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One code for each of ``cells`` [N, 2] drawn in float32 with the uniforms ``draws`` [N] at
        ``temperature`` [N]: ``(codes [N] int64, unsure [N] bool, logits [M, K])``, the logits of
        the ``M`` draws float32 cannot decide (and of those at temperature 0), which the caller
        draws in float64."""
        feed = {"context": context, "column": column, "known": known, "cells": cells,
                "draws": draws.astype(np.float32).reshape(-1, 1), "temperature": temperature.astype(np.float32).reshape(-1, 1)}
        codes, unsure, logits = self._session.run(["codes", "unsure", "unsure_logits"], feed)
        return codes.reshape(-1), unsure.reshape(-1), logits


def _submodule(module: Any, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name) if hasattr(module, name) else module._modules[name]
    return module


class _Alternating:
    """Runs of a session with fixed buffers (no allocation per call): its inputs and outputs
    bound once, the state caches in two sets that swap roles every call (the outputs of one
    call are the inputs of the next). ``outputs`` values may be a pair of buffers, which
    alternate as well (``turn`` is the one the next call writes)."""

    def __init__(self, session, inputs: dict, outputs: dict, caches: list, streams: int):
        self.session = session
        self.turn = 0
        states = [{name: np.zeros((streams, *shape), np.float32) for name, _, shape, _ in caches} for _ in range(2)]
        self.bindings = []
        for turn in range(2):
            binding = session.io_binding()
            for name, array in inputs.items():
                _bind(binding.bind_input, name, array)
            for name, array in outputs.items():
                _bind(binding.bind_output, name, array[turn] if isinstance(array, list) else array)
            for name, out, _, _ in caches:
                _bind(binding.bind_input, name, states[turn][name])
                _bind(binding.bind_output, out, states[1 - turn][name])
            self.bindings.append(binding)
        self.states = states  # kept alive: the bindings point into them

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.bindings[self.turn])
        self.turn = 1 - self.turn


def _bind(bind, name: str, array: np.ndarray) -> None:
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
