"""Int4Linear, Int3Linear, NF4Linear and VQLinear: from_linear + forward against the oracles on every CPU
path, dequantize, repr, the state-dict contract of qkernels.nn (round trip and the checks on load),
from_linear's errors, torch.compile and opcheck of the ops behind them."""

from __future__ import annotations

import functools
import io
import itertools
import json

import pytest
import qkernels as qk
import torch
import torch._dynamo.testing
from qkernels.formats import int3, int4, nf4, vq
from qkernels.nn import Int3Linear, Int4Linear, NF4Linear, VQLinear
from qkernels.reference import grouped as oracle
from tolerance import assert_close_to_oracle
from torch import nn

ops = torch.ops.qkernels
FORMATS = {Int4Linear: int4, Int3Linear: int3}


def _case(cls, k, n, **config):
    return cls, k, n, config


# id -> (class, in_features, out_features, config). K = 200 leaves a partial last group for every group
# size and a partial last 32-code chunk for int3; K = 75 is odd, which int3 (no nibble pairs) accepts.
# VQ layers stay small: its quantizer takes seconds per layer.
CASES = {
    # Every (symmetry, group size) pair once, each method three times.
    "int4-sym-g32-rtn": _case(Int4Linear, 200, 37, group_size=32),
    "int4-sym-g128-mse": _case(Int4Linear, 200, 37, group_size=128, method="mse"),
    "int4-sym-row-rtn": _case(Int4Linear, 200, 37, group_size=-1),
    "int4-asym-g32-mse": _case(Int4Linear, 200, 37, group_size=32, symmetric=False, method="mse"),
    "int4-asym-g128-rtn": _case(Int4Linear, 200, 37, group_size=128, symmetric=False),
    "int4-asym-row-mse": _case(Int4Linear, 200, 37, group_size=-1, symmetric=False, method="mse"),
    "int3-sym-g128-rtn": _case(Int3Linear, 200, 37, group_size=128),
    "int3-asym-g32-mse-oddk": _case(Int3Linear, 75, 21, group_size=32, symmetric=False, method="mse"),
    "int3-sym-row-mse": _case(Int3Linear, 200, 37, group_size=-1, method="mse"),
    "nf4-b64": _case(NF4Linear, 200, 37, block_size=64),
    # 37 rows x 7 blocks = 259 absmax values: one full and one partial double-quantization block.
    "nf4-b32-dq": _case(NF4Linear, 200, 37, block_size=32, double_quant=True),
    "nf4-b256-dq": _case(NF4Linear, 200, 37, block_size=256, double_quant=True),
    "vq-2x8": _case(VQLinear, 128, 64, codebooks=2, codebook_bits=8),
    "vq-1x16": _case(VQLinear, 128, 64, codebooks=1, codebook_bits=16),
}
# One case per module and kind of buffer set, for the slower tests (compile, load errors).
REPRESENTATIVE = ["int4-asym-g32-mse", "int3-sym-g128-rtn", "nf4-b64", "nf4-b32-dq", "vq-2x8", "vq-1x16"]
COMPILED = [case for case in REPRESENTATIVE if case != "nf4-b64"]


@functools.cache
def _source(case: str, bias: bool) -> nn.Linear:
    _, k, n, _ = CASES[case]
    with torch.random.fork_rng():
        torch.manual_seed(sorted(CASES).index(case))
        return nn.Linear(k, n, bias=bias)


@functools.cache
def _quantized(case: str, bias: bool) -> nn.Module:
    """Quantized once per session (VQ's quantizer is slow); tests must not modify the result."""
    cls, _, _, config = CASES[case]
    if cls is not VQLinear:
        return cls.from_linear(_source(case, bias), **config)
    if not bias:
        # The quantizer does not look at the bias: reuse the biased layer's codes (quantizing VQ costs
        # seconds), through the state dict that the round-trip test checks separately.
        src = _quantized(case, True)
        mod = VQLinear(src.in_features, src.out_features, bias=False, **src.config_fields())
        mod.load_state_dict({k: v for k, v in src.state_dict().items() if k != "bias"})
        return mod
    # The VQ quantizer runs thousands of small ops. On a machine shared with other jobs a multi-threaded
    # op can wait a whole scheduler slice for a descheduled worker: 1x16 at 64x128 took 84 s with two
    # threads and 5 s with one on the 2-core test machine under load. The kernels under test still run
    # with torch's thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cls.from_linear(_source(case, bias), **config)
    finally:
        torch.set_num_threads(threads)


def _groupwise_weight(mod) -> torch.Tensor:
    """The fp64 weight that the kernel multiplies by, from the format modules (not the module's own
    dequantize): int4/int3 ``scale * (code - zero)``, nf4 the int8 table times ``absmax / 127``."""
    k = mod.in_features
    if isinstance(mod, NF4Linear):
        codes = nf4.unpack(mod.packed, k).long()
        absmax = mod.absmax.double().repeat_interleave(mod.block_size, dim=1)[:, :k]
        return nf4.TABLE_INT8.double()[codes] * (absmax / 127)
    fmt = FORMATS[type(mod)]
    return fmt.dequantize(fmt.unpack(mod.packed, k), mod.scales, mod.zeros, mod.group_size).double()


def _oracles(mod, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``(low, high, factors)``: the oracle in the kernel's precision, the exact (fp64) result on
    the same inputs, and the two matrices multiplied. int4/int3/nf4 quantize activations to int8
    per group, as their kernels do; vq does not."""
    k, n = mod.in_features, mod.out_features
    bias64 = 0 if mod.bias is None else mod.bias.double()
    if isinstance(mod, VQLinear):
        w = mod.dequantize()
        low = x.float() @ w.T + (0 if mod.bias is None else mod.bias)
        high = x.double() @ w.double().T + bias64
        return low.to(x.dtype), high, (x.reshape(-1, k), w)
    if isinstance(mod, NF4Linear):
        low = oracle.linear_nf4(x, mod.packed, mod.absmax, mod.block_size, mod.bias)
        group = mod.block_size
    else:
        ref = oracle.linear_int4 if isinstance(mod, Int4Linear) else oracle.linear_int3
        low = ref(x, mod.packed, mod.scales, mod.zeros, mod.group_size, mod.bias)
        group = k if mod.group_size == -1 else mod.group_size
    xq, w = oracle.quantize_activations(x.reshape(-1, k), group), _groupwise_weight(mod)
    high = xq.double() @ w.T + bias64
    return low, high.reshape(*x.shape[:-1], n), (xq, w)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_forward_matches_oracle(isa, case, bias):
    mod = _quantized(case, bias)
    k, n = mod.in_features, mod.out_features
    # A few rows and more than 16 (where ops may switch to a batched path); test_vq_kernels.py and
    # test_grouped_kernels.py cover every dtype at each batch size.
    for shape, dtype in itertools.product([(3, k), (2, 9, k)], [torch.float32, torch.bfloat16]):
        x = torch.randn(shape).to(dtype)
        out = mod(x)
        assert out.dtype == dtype and out.shape == (*shape[:-1], n)
        low, high, factors = _oracles(mod, x)
        assert_close_to_oracle(out, low, high, factors)


@pytest.mark.parametrize("case", list(CASES))
def test_dequantize(case):
    mod = _quantized(case, True)
    w = mod.dequantize()
    assert w.dtype == torch.float32 and w.shape == (mod.out_features, mod.in_features)
    k = mod.in_features
    if isinstance(mod, VQLinear):
        assert torch.equal(w, vq.dequantize(mod.codes, mod.codebooks, mod.scales))
    elif isinstance(mod, NF4Linear):
        torch.testing.assert_close(w.double(), _groupwise_weight(mod), rtol=2**-22, atol=0)
        # The kernel's table is the NF4 table rounded to int8 steps: within half a step of NF4 values.
        codes = nf4.unpack(mod.packed, k)
        exact = nf4.dequantize(codes, mod.absmax, mod.block_size)
        absmax = mod.absmax.repeat_interleave(mod.block_size, dim=1)[:, :k]
        assert bool(((w - exact).abs() <= absmax * (0.5 / 127) * (1 + 1e-6)).all())
        assert not torch.equal(w, exact)
    else:
        fmt = FORMATS[type(mod)]
        assert torch.equal(
            w, fmt.dequantize(fmt.unpack(mod.packed, k), mod.scales, mod.zeros, mod.group_size)
        )


@pytest.mark.parametrize("case", list(CASES))
def test_repr_names_the_format(case):
    mod = _quantized(case, False)
    r = repr(mod)
    assert r.startswith(type(mod).__name__) and f"format={mod.format_name}," in r
    assert f"in_features={mod.in_features}, out_features={mod.out_features}, bias=False" in r
    for key, value in mod.config_fields().items():
        assert f"{key}={value}" in r


def _reload(mod, sd):
    fresh = type(mod)(mod.in_features, mod.out_features, bias=mod.bias is not None, **mod.config_fields())
    fresh.load_state_dict(sd, strict=True)
    return fresh


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_state_dict_round_trip(case, bias):
    mod = _quantized(case, bias)
    assert json.loads(json.dumps(mod.config_fields())) == mod.config_fields()
    buf = io.BytesIO()
    torch.save(mod.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    # Every buffer is saved except those rebuilt at load time.
    rebuilt = {"codebooks_f32"} if isinstance(mod, VQLinear) else set()
    if getattr(mod, "double_quant", False):
        rebuilt.add("absmax")
    assert set(sd) == {name for name, _ in mod.named_buffers()} - rebuilt | {"_extra_state"}
    fresh = _reload(mod, sd)
    for name, t in mod.named_buffers():  # the rebuilt ones (nf4 absmax, vq codebooks_f32) included
        assert torch.equal(getattr(fresh, name), t), name
    for shape in [(3, mod.in_features), (2, 9, mod.in_features)]:
        x = torch.randn(shape)
        assert torch.equal(fresh(x), mod(x))


def _state(case: str, **changes):
    """The state dict of the case's module (with bias), with entries replaced (None deletes one)."""
    sd = dict(_quantized(case, True).state_dict())
    for key, value in changes.items():
        if value is None:
            del sd[key]
        else:
            sd[key] = value(sd[key]) if callable(value) else value
    return sd


def _set(index, value):
    def change(t):
        t = t.clone()
        t[index] = value
        return t

    return change


NAN = float("nan")
# (case, changes, message): each is loaded inside nn.Sequential, so the key carries the prefix "0.". A
# missing format tag may be reported by the module or as torch's missing key: either names the key.
BAD_STATES = [
    (
        "int4-asym-g32-mse",
        {"packed": torch.zeros(37, 101, dtype=torch.uint8)},
        r"0\.packed: expected torch\.uint8 of shape \(37, 100\), got torch\.uint8 of shape \(37, 101\)",
    ),
    (
        "int4-asym-g32-mse",
        {"scales": lambda t: t.half()},
        r"0\.scales: expected torch\.float32 of shape \(37, 7\), got torch\.float16 of shape \(37, 7\)",
    ),
    ("int4-asym-g32-mse", {"zeros": lambda t: t.to(torch.int8)}, r"0\.zeros: expected torch\.uint8"),
    (
        "int4-asym-g32-mse",
        {"zeros": _set((3, 1), 16)},
        r"0\.zeros: expected values <= 15, got 16 \(corrupted\?\)",
    ),
    (
        "int4-asym-g32-mse",
        {"scales": _set((2, 5), NAN)},
        r"0\.scales: expected finite values, got nan at \[2, 5\]",
    ),
    ("int4-asym-g32-mse", {"bias": torch.zeros(36)}, r"0\.bias: expected torch\.float32 of shape \(37,\)"),
    (
        "int3-sym-g128-rtn",
        {"packed": torch.zeros(37, 85, dtype=torch.uint8)},
        r"0\.packed: expected torch\.uint8 of shape \(37, 84\), got torch\.uint8 of shape \(37, 85\)",
    ),
    ("int3-asym-g32-mse-oddk", {"zeros": _set((0, 0), 8)}, r"0\.zeros: expected values <= 7, got 8"),
    (
        "int3-sym-g128-rtn",
        {"scales": _set((1, 1), float("inf"))},
        r"0\.scales: expected finite values, got inf",
    ),
    (
        "nf4-b64",
        {"absmax": _set((4, 0), -1.0)},
        r"0\.absmax: expected values >= 0, got -1\.0 \(corrupted\?\)",
    ),
    ("nf4-b64", {"absmax": _set((4, 3), NAN)}, r"0\.absmax: expected finite values, got nan at \[4, 3\]"),
    ("nf4-b64", {"packed": lambda t: t[:, :-1]}, r"0\.packed: expected torch\.uint8 of shape \(37, 100\)"),
    ("nf4-b32-dq", {"qabsmax": lambda t: t.to(torch.int8)}, r"0\.qabsmax: expected torch\.uint8"),
    ("nf4-b32-dq", {"absmax2": lambda t: t[:1]}, r"0\.absmax2: expected torch\.float32 of shape \(2,\)"),
    ("nf4-b32-dq", {"absmax2": _set(1, NAN)}, r"0\.absmax2: expected finite values, got nan at \[1\]"),
    ("nf4-b32-dq", {"offset": torch.tensor(NAN)}, r"0\.offset: expected finite values, got nan"),
    (
        "vq-2x8",
        {"codes": lambda t: t.to(torch.int16)},
        r"0\.codes: expected torch\.uint8 of shape \(64, 16, 2\), got torch\.int16 of shape \(64, 16, 2\)",
    ),
    (
        "vq-2x8",
        {"codebooks": lambda t: t.float()},
        r"0\.codebooks: expected torch\.float16 of shape \(2, 256, 8\)",
    ),
    (
        "vq-2x8",
        {"codebooks": _set((1, 7, 2), NAN)},
        r"0\.codebooks: expected finite values, got nan at \[1, 7, 2\]",
    ),
    ("vq-1x16", {"scales": _set(9, NAN)}, r"0\.scales: expected finite values, got nan at \[9\]"),
    ("vq-1x16", {"codes": lambda t: t[:, :, :1].to(torch.uint8)}, r"0\.codes: expected torch\.int16"),
    *[
        (
            case,
            {"_extra_state": None},
            r"0\._extra_state",
        )
        for case in REPRESENTATIVE
    ],
]


@pytest.mark.parametrize(
    ("case", "changes", "message"),
    BAD_STATES,
    ids=[f"{c}-{'-'.join(ch)}-{i}" for i, (c, ch, _) in enumerate(BAD_STATES)],
)
def test_bad_state_dict_rejected(case, changes, message):
    src = _quantized(case, True)
    fresh = nn.Sequential(type(src)(src.in_features, src.out_features, bias=True, **src.config_fields()))
    sd = {f"0.{key}": value for key, value in _state(case, **changes).items()}
    with pytest.raises(RuntimeError, match=message):
        fresh.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("case", REPRESENTATIVE)
def test_missing_format_tag_accepted_when_not_strict(case):
    """strict=False tolerates missing keys, the format tag included. nn.Module.load_state_dict passes
    strict=True to every module's _load_from_state_dict whatever the caller asked, so the module cannot
    learn strictness from that argument."""
    mod = _quantized(case, True)
    fresh = type(mod)(mod.in_features, mod.out_features, bias=True, **mod.config_fields())
    fresh.load_state_dict(_state(case, _extra_state=None), strict=False)
    x = torch.randn(3, mod.in_features)
    assert torch.equal(fresh(x), mod(x))


def _extra(case: str, **changes):
    """The case's extra state with entries replaced, built when the test runs (not at collection)."""
    return lambda: {**_quantized(case, True).get_extra_state(), **changes}


# The format tag is checked in set_extra_state, which raises ValueError itself (as Int8Linear does).
BAD_EXTRA = [
    ("int4-asym-g32-mse", _extra("int4-asym-g32-mse", format="int3"), r"format: expected 'int4', got 'int3'"),
    ("int3-sym-g128-rtn", _extra("int3-sym-g128-rtn", format="int4"), r"format: expected 'int3', got 'int4'"),
    ("nf4-b64", _extra("vq-2x8"), r"format: expected 'nf4', got 'vq'"),
    ("vq-2x8", lambda: "vq", r"format: expected 'vq', got 'str'"),
    (
        "int4-asym-g32-mse",
        _extra("int4-asym-g32-mse", version=2),
        r"version: expected 1\.\.1 \(this qkernels\), got 2",
    ),
    (
        "nf4-b32-dq",
        _extra("nf4-b32-dq", version=None),
        r"version: expected 1\.\.1 \(this qkernels\), got None",
    ),
    ("vq-1x16", _extra("vq-1x16", version=2), r"version: expected 1\.\.1 \(this qkernels\), got 2"),
    (
        "int4-asym-g32-mse",
        _extra("int4-asym-g32-mse", group_size=64),
        r"group_size: expected 32 \(this module's config\), got 64",
    ),
    (
        "int3-sym-g128-rtn",
        _extra("int3-sym-g128-rtn", symmetric=False),
        r"symmetric: expected True \(this module's config\), got False",
    ),
    (
        "nf4-b32-dq",
        _extra("nf4-b32-dq", double_quant=False),
        r"double_quant: expected True \(this module's config\), got False",
    ),
    (
        "nf4-b64",
        _extra("nf4-b64", block_size=128),
        r"block_size: expected 64 \(this module's config\), got 128",
    ),
    (
        "vq-2x8",
        _extra("vq-2x8", codebook_bits=16),
        r"codebook_bits: expected 8 \(this module's config\), got 16",
    ),
]


@pytest.mark.parametrize(
    ("case", "extra", "message"), BAD_EXTRA, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD_EXTRA)]
)
def test_bad_extra_state_rejected(case, extra, message):
    src = _quantized(case, True)
    fresh = type(src)(src.in_features, src.out_features, bias=True, **src.config_fields())
    with pytest.raises(ValueError, match=rf"^{type(src).__name__} state_dict: {message}"):
        fresh.load_state_dict(_state(case, _extra_state=extra()))


def _linear_with_nan(k=64, n=12):
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight[3, 7] = NAN
    return lin


@pytest.mark.parametrize(
    ("cls", "linear", "config", "exc", "message"),
    [
        (
            Int4Linear,
            nn.Linear(63, 8),
            {},
            ValueError,
            r"in_features \(K\): expected an even number \(nibble packing\), got 63",
        ),
        (
            NF4Linear,
            nn.Linear(63, 8),
            {},
            ValueError,
            r"in_features \(K\): expected an even number \(nibble packing\), got 63",
        ),
        (
            Int4Linear,
            nn.Linear(64, 8),
            {"group_size": 48},
            ValueError,
            r"group_size: expected a positive multiple of 32 or -1, got 48",
        ),
        (
            Int3Linear,
            nn.Linear(64, 8),
            {"group_size": 0},
            ValueError,
            r"group_size: expected a positive multiple of 32 or -1, got 0",
        ),
        (
            Int3Linear,
            nn.Linear(64, 8),
            {"group_size": 32.0},
            TypeError,
            r"group_size: expected an int, got float",
        ),
        (
            Int4Linear,
            nn.Linear(64, 8),
            {"method": "awq"},
            ValueError,
            r"method: expected one of \('rtn', 'mse', 'gptq'\), got 'awq'",
        ),
        (
            Int3Linear,
            nn.Linear(64, 8),
            {"method": "gptq"},
            ValueError,
            r"hessian: expected the layer's input second moment \[K, K\] exactly when method is 'gptq'",
        ),
        (
            Int4Linear,
            nn.Linear(64, 8),
            {"method": "gptq", "hessian": torch.eye(32)},
            ValueError,
            r"hessian: expected shape \(64, 64\) \(in_features squared\), got \(32, 32\)",
        ),
        (
            NF4Linear,
            nn.Linear(64, 8),
            {"block_size": 48},
            ValueError,
            r"block_size: expected one of \(32, 64, 128, 256\), got 48",
        ),
        (VQLinear, nn.Linear(60, 8), {}, ValueError, r"in_features: expected a multiple of 8, got 60"),
        (VQLinear, nn.Linear(64, 8), {"codebooks": 3}, ValueError, r"codebooks: expected 1 or 2, got 3"),
        (
            VQLinear,
            nn.Linear(64, 8),
            {"codebook_bits": 4},
            ValueError,
            r"codebook_bits: expected 8 or 16, got 4",
        ),
        *[
            (cls, _linear_with_nan(), {}, ValueError, r"weight: expected finite values, got nan at \[3, 7\]")
            for cls in (Int4Linear, Int3Linear, NF4Linear, VQLinear)
        ],
        (Int4Linear, nn.Conv1d(4, 4, 1), {}, TypeError, r"linear: expected torch\.nn\.Linear, got Conv1d"),
    ],
)
def test_from_linear_errors_name_the_layer(cls, linear, config, exc, message):
    with pytest.raises(exc, match=rf"^{cls.__name__}\.from_linear\('enc\.fc'\): .*{message}"):
        cls.from_linear(linear, name="enc.fc", **config)


def _model():
    # "2.1" has an odd in_features that is not a multiple of 8: wrong for int4, nf4 and vq.
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 31), nn.Linear(31, 8)))


@pytest.mark.parametrize(
    ("config", "nan", "message"),
    [
        (qk.Int4Config(), False, r"Int4Linear\.from_linear\('2\.1'\): .*expected an even number"),
        (qk.Int3Config(group_size=48), False, r"Int3Linear\.from_linear\('2\.1'\): .*group_size: .*got 48"),
        (qk.NF4Config(block_size=64), False, r"NF4Linear\.from_linear\('2\.1'\): .*expected an even number"),
        (qk.NF4Config(block_size=48), False, r"NF4Linear\.from_linear\('2\.1'\): .*block_size: .*got 48"),
        (
            qk.VQConfig(),
            False,
            r"VQLinear\.from_linear\('2\.1'\): .*in_features: expected a multiple of 8, got 31",
        ),
        (
            qk.Int3Config(),
            True,
            r"Int3Linear\.from_linear\('2\.1'\): weight: expected finite values, got nan",
        ),
    ],
)
def test_quantize_mapping_errors_name_the_layer(config, nan, message):
    model = _model()
    if nan:
        with torch.no_grad():
            model[2][1].weight[0, 4] = NAN
    with pytest.raises((ValueError, TypeError), match=message):
        qk.quantize_(model, {"0": qk.Int4Config(group_size=32), "2.1": config}, progress=False)
    assert all(type(m) in (nn.Sequential, nn.Linear, nn.ReLU) for m in model.modules())


@pytest.mark.parametrize("cls", [Int4Linear, Int3Linear, NF4Linear])
def test_from_bf16_linear_equals_from_its_float_copy(cls):
    lin16 = nn.Linear(96, 24).to(torch.bfloat16)
    lin32 = nn.Linear(96, 24)
    lin32.load_state_dict({k: v.float() for k, v in lin16.state_dict().items()})
    a, b = cls.from_linear(lin16), cls.from_linear(lin32)
    assert a.bias.dtype == torch.float32
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k != "_extra_state")


def _graph_calls(graphs, op) -> bool:
    return all(any(node.target in (op, op.default) for node in gm.graph.nodes) for gm in graphs)


@pytest.mark.parametrize("case", COMPILED)
def test_torch_compile_fullgraph_same_results(case):
    mod = _quantized(case, True)
    model = nn.Sequential(mod, nn.GELU(), nn.Linear(mod.out_features, 8))
    # aot_eager traces through the ops' fake implementations, which is what is under test here.
    # Inductor would only add code generation for the float layers around the opaque custom op, at
    # about 50 s per model on this machine, and its fused GELU is not bit-identical to eager's.
    backend = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    # 6 and 18 rows: a small and a large batch, and a recompilation with a dynamic number of rows.
    for m in (6, 18):
        x = torch.randn(m, mod.in_features)
        assert torch.equal(compiled(x), model(x))
    assert backend.frame_count == 2 and _graph_calls(
        backend.graphs, getattr(ops, f"linear_{mod.format_name}")
    )


@pytest.mark.parametrize("case", COMPILED)
def test_torch_compile_dynamic_shapes(case):
    """dynamic=True makes every dimension of the input symbolic, in_features included (as does
    automatic dynamic shapes after a call with another rank): the fake implementations must check
    shapes without asking for concrete ints."""
    mod = _quantized(case, True)
    backend = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(mod, fullgraph=True, backend=backend, dynamic=True)
    for shape in [(5, mod.in_features), (20, mod.in_features), (2, 9, mod.in_features)]:
        x = torch.randn(shape)
        assert torch.equal(compiled(x), mod(x))
    assert backend.frame_count == 2 and _graph_calls(
        backend.graphs, getattr(ops, f"linear_{mod.format_name}")
    )


def _op_args(case: str, x_shape: tuple[int, ...], dtype: torch.dtype, bias: bool):
    mod = _quantized(case, True)
    x = torch.randn(*x_shape, mod.in_features).to(dtype)
    b = mod.bias if bias else None
    if isinstance(mod, VQLinear):
        return ops.linear_vq, (x, mod.codes, mod.codebooks_f32, mod.scales, b)
    if isinstance(mod, NF4Linear):
        return ops.linear_nf4, (x, mod.packed, mod.absmax, mod.block_size, b)
    return getattr(ops, f"linear_{mod.format_name}"), (
        x,
        mod.packed,
        mod.scales,
        mod.zeros,
        mod.group_size,
        b,
    )


# All of opcheck's utils, as tests/test_int8_linear.py runs them: the ops have no autograd formula, and
# test_autograd_registration passes for inputs that do not require grad.
@pytest.mark.parametrize(
    "case", ["int4-asym-g32-mse", "int4-sym-row-rtn", "int3-asym-g32-mse-oddk", "nf4-b32-dq"]
)
def test_opcheck_grouped(case):
    torch.library.opcheck(*_op_args(case, (2, 9), torch.bfloat16, True))


@pytest.mark.parametrize("case", ["vq-2x8", "vq-1x16"])
def test_opcheck_vq(case):
    # 3 rows and 2 x 9 rows: a small and a large batch.
    torch.library.opcheck(*_op_args(case, (3,), torch.float32, True))
    torch.library.opcheck(*_op_args(case, (2, 9), torch.bfloat16, False))
