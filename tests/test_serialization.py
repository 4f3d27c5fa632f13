"""qk.save / qk.load: round trips (bit-identical outputs), tied and shared tensors, the raw checkpoint,
the module registry contract, and every rejection (file, header, model), with the model unchanged."""

from __future__ import annotations

import json
import os
import struct

import pytest
import qkernels as qk
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F


def _mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 16))


class TinyLM(nn.Module):
    """Embedding tied to the output head, a module shared under two names, a LayerNorm, a buffer."""

    def __init__(self, tie: bool = True):
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.mix = nn.Linear(32, 32)
        self.mix_again = self.mix
        self.up = nn.Linear(32, 48)
        self.norm = nn.LayerNorm(48)
        self.down = nn.Linear(48, 32, bias=False)
        self.head = nn.Linear(32, 50, bias=False)
        if tie:
            self.head.weight = self.embed.weight
        self.register_buffer("gain", torch.rand(32) + 0.5)

    def forward(self, ids):
        h = self.mix_again(self.mix(self.embed(ids)))
        h = h + self.down(self.norm(F.gelu(self.up(h))))
        return self.head(h * self.gain)


def _quantized_mlp(weight_only):
    return qk.quantize_(_mlp(), qk.Int8Config(weight_only=weight_only))


def _saved(tmp_path, model, name="model.safetensors"):
    path = tmp_path / name
    qk.save(model, path)
    return path


def _snapshot(model):
    modules = [(name, type(m)) for name, m in model.named_modules(remove_duplicate=False)]
    return modules, {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}


def _assert_unchanged(model, snapshot):
    modules, state = _snapshot(model)
    assert modules == snapshot[0]
    assert state.keys() == snapshot[1].keys()
    for key, value in state.items():
        assert torch.equal(value, snapshot[1][key]) if torch.is_tensor(value) else value == snapshot[1][key]


def _rewrite(src, dst, header=None, tensors=None):
    """Writes ``src``'s contents to ``dst`` after ``header(h)`` / ``tensors(t)`` edit them in place."""
    ck = qk.load(src)
    h = json.loads(json.dumps(ck.header))
    t = dict(ck.tensors)
    if header is not None:
        header(h)
    if tensors is not None:
        tensors(t)
    save_file(t, dst, metadata={"format": "pt", "qkernels": json.dumps(h)})
    return dst


# ---- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_only", [False, True], ids=["W8A8", "W8A16"])
def test_mlp_round_trip_into_float_model_is_bit_identical(tmp_path, weight_only):
    src = _quantized_mlp(weight_only)
    path = _saved(tmp_path, src)
    dst = _mlp()  # another random init: every value must come from the file
    assert qk.load(path, dst) is dst
    assert [type(m) for m in dst] == [type(m) for m in src]
    assert dst[0].weight_only is weight_only and dst[3].weight_only is weight_only
    x = torch.randn(7, 32)
    assert torch.equal(dst(x), src(x))
    _assert_unchanged(dst, _snapshot(src))
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind


def test_load_into_quantized_model_keeps_matching_layers_and_replaces_others(tmp_path):
    src = _quantized_mlp(weight_only=False)
    path = _saved(tmp_path, src)
    dst = qk.quantize_(_mlp(), qk.Int8Config(weight_only=False), lambda m, name: name == "0")
    qk.quantize_(dst, qk.Int8Config(weight_only=True), lambda m, name: name == "3")
    same_config, other_config = dst[0], dst[3]
    qk.load(path, dst)
    assert dst[0] is same_config
    assert dst[3] is not other_config and dst[3].weight_only is False
    x = torch.randn(4, 32)
    assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("quantize_head", [False, True])
def test_tied_and_shared_tensors_round_trip(tmp_path, quantize_head):
    src = TinyLM()
    qk.quantize_(src, qk.Int8Config(), lambda m, name: quantize_head or name != "head")
    src.mix_again = src.mix  # one quantized module under two names
    path = _saved(tmp_path, src)

    ck = qk.load(path)
    live = src.state_dict(keep_vars=True)
    first = {}
    expected_aliases = {}
    for key, t in live.items():
        if torch.is_tensor(t):
            if id(t) in first:
                expected_aliases[key] = first[id(t)]
            first.setdefault(id(t), key)
    assert ck.header["aliases"] == expected_aliases
    assert ("head.weight" in expected_aliases) is not quantize_head
    assert not expected_aliases.keys() & ck.tensors.keys()
    assert {"mix", "mix_again"} <= ck.header["layers"].keys()

    dst = TinyLM()
    qk.load(path, dst)
    ids = torch.randint(0, 50, (3, 9))
    assert torch.equal(dst(ids), src(ids))
    assert dst.mix is dst.mix_again
    assert (dst.head.weight is dst.embed.weight) is not quantize_head


class _Views(nn.Module):
    """Buffers that overlap a parameter's storage without being the same view (safetensors refuses
    to write overlapping tensors)."""

    def __init__(self):
        super().__init__()
        self.full = nn.Parameter(torch.randn(4, 6))
        self.register_buffer("left", self.full.data[:, :4])
        self.register_buffer("row", self.full.data[1])


def test_overlapping_views_are_saved_as_copies(tmp_path):
    src = _Views()
    path = _saved(tmp_path, src)
    ck = qk.load(path)
    assert sorted(ck.tensors) == ["full", "left", "row"] and ck.header["aliases"] == {}
    dst = _Views()
    qk.load(path, dst)
    _assert_unchanged(dst, _snapshot(src))
    assert dst.left.data_ptr() == dst.full.data_ptr()  # the model keeps its own views


def test_raw_checkpoint_holds_the_header_and_the_state(tmp_path):
    src = qk.quantize_(_mlp(), qk.Int8Config(weight_only=True), lambda m, name: name == "3")
    ck = qk.load(_saved(tmp_path, src))
    layer = src[3]
    assert ck.header["qkernels_format_version"] == 1
    assert ck.header["qkernels_version"] == qk.__version__
    assert ck.header["layers"] == {
        "3": {
            "format": "int8",
            "class": "Int8Linear",
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "bias": True,
            "config": {"weight_only": True},
        }
    }
    assert ck.header["extra_state"] == {"3._extra_state": layer.get_extra_state()}
    assert ck.tensors["3.weight"].dtype == torch.int8
    sd = ck.state_dict()
    assert sd.keys() == src.state_dict().keys()
    for key, value in src.state_dict().items():
        assert torch.equal(sd[key], value) if torch.is_tensor(value) else sd[key] == value


def test_quantized_model_itself_round_trips(tmp_path):
    src = qk.nn.Int8Linear.from_linear(nn.Linear(24, 8), weight_only=True)
    path = _saved(tmp_path, src)
    dst = qk.nn.Int8Linear(24, 8, weight_only=True)
    qk.load(path, dst)
    x = torch.randn(2, 24)
    assert torch.equal(dst(x), src(x))
    with pytest.raises(
        ValueError, match=r"layer <root>: expected Int8Linear .*cannot be replaced.*got Linear"
    ):
        qk.load(path, nn.Linear(24, 8))


@pytest.mark.parametrize("fmt", sorted(qk.nn.MODULES))
@pytest.mark.parametrize("bias", [True, False])
def test_registered_modules_keep_the_contract(fmt, bias):
    cls = qk.nn.MODULES[fmt]
    assert cls.format_name == fmt
    mod = cls.from_linear(nn.Linear(40, 24, bias=bias))
    config = mod.config_fields()
    assert json.loads(json.dumps(config)) == config
    assert json.loads(json.dumps(mod.get_extra_state())) == mod.get_extra_state()
    empty = cls(40, 24, bias=bias, **config)
    assert (empty.in_features, empty.out_features, empty.bias is not None) == (40, 24, bias)
    for key, t in mod.state_dict().items():
        got = empty.state_dict()[key]
        if torch.is_tensor(t):
            assert (got.dtype, got.shape) == (t.dtype, t.shape), key
    empty.load_state_dict(mod.state_dict(), strict=True)
    assert empty.config_fields() == config


# ---- the file -----------------------------------------------------------------------------------------


def _random_bytes(n):
    return bytes(torch.randint(0, 256, (n,), dtype=torch.uint8).tolist())


@pytest.mark.parametrize(
    "content",
    [
        _random_bytes(4096),
        struct.pack("<Q", 16) + b"{not json at all",  # a plausible length, then garbage
        b"",
    ],
    ids=["random", "bad-json", "empty"],
)
def test_corrupted_file_rejected(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    model = _mlp()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"qk.load: {path}: expected a safetensors file, got unreadable"):
        qk.load(path, model)
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="expected a safetensors file"):
        qk.load(path)


def test_truncated_file_rejected(tmp_path):
    data = _saved(tmp_path, _quantized_mlp(False)).read_bytes()
    path = tmp_path / "cut.safetensors"
    for size in (len(data) - 1, len(data) // 2, 100, 8, 3):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"cut.safetensors: expected a safetensors file.*truncated"):
            qk.load(path, _mlp())


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.update(qkernels_format_version=99),
        # a newer layout may change everything else too: the version is read first
        lambda h: (h.clear(), h.update(qkernels_format_version=99, qkernels_version="9.0", tensors=[])),
    ],
    ids=["same-fields", "new-fields"],
)
def test_newer_format_version_asks_to_upgrade(tmp_path, edit):
    path = _rewrite(_saved(tmp_path, _quantized_mlp(False)), tmp_path / "new.safetensors", header=edit)
    with pytest.raises(
        ValueError, match=r"qkernels_format_version: expected at most 1 .* got 99 .*upgrade qkernels"
    ):
        qk.load(path, _mlp())
    with pytest.raises(ValueError, match="upgrade qkernels"):
        qk.load(path)


def test_missing_header_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file(_mlp().state_dict(), plain)
    with pytest.raises(ValueError, match=r"plain.safetensors: expected a qkernels header .*got none"):
        qk.load(plain, _mlp())
    save_file(_mlp().state_dict(), plain, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"got none \(metadata keys: \['format'\]\)"):
        qk.load(plain)


@pytest.mark.parametrize(
    ("metadata_text", "message"),
    [
        ("{oops", r"header: expected JSON, got '\{oops'"),
        ("[1, 2]", r"header: expected a JSON object, got list"),
        ('{"qkernels_format_version": "1"}', r"qkernels_format_version: expected an int in 1..1, got '1'"),
        ('{"qkernels_format_version": 0}', r"qkernels_format_version: expected an int in 1..1, got 0"),
        (
            '{"qkernels_format_version": 1}',
            r"header: expected the fields \['aliases', .*\], got \['qkernels_fo",
        ),
    ],
)
def test_malformed_header_rejected(tmp_path, metadata_text, message):
    path = tmp_path / "h.safetensors"
    save_file({"t": torch.zeros(2)}, path, metadata={"qkernels": metadata_text})
    with pytest.raises(ValueError, match=message):
        qk.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h["layers"]["0"].pop("bias"), r"layer '0': expected the fields \['bias', "),
        (
            lambda h: h["layers"]["0"].update(in_features=0),
            r"layer '0': in_features: expected a positive int",
        ),
        (
            lambda h: h["layers"]["0"].update(bias="yes"),
            r"layer '0': bias: expected true or false, got 'yes'",
        ),
        (
            lambda h: h.update(aliases={"x.weight": "nothing"}),
            r"aliases: x.weight: expected the key of a stored",
        ),
        (lambda h: h.update(layers=[]), r"layers: expected a JSON dict, got list"),
    ],
)
def test_inconsistent_header_rejected(tmp_path, edit, message):
    path = _rewrite(_saved(tmp_path, _quantized_mlp(False)), tmp_path / "h.safetensors", header=edit)
    with pytest.raises(ValueError, match=message):
        qk.load(path)


# ---- the model ----------------------------------------------------------------------------------------


def _check_rejected(path, model, message, error=ValueError):
    before = _snapshot(model)
    with pytest.raises(error, match=message):
        qk.load(path, model)
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            nn.Sequential(nn.Linear(31, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 16)),
            r"layer '0': in_features: expected 32 \(the checkpoint\), got 31 \(the model's Linear\)",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 15)),
            r"layer '3': out_features: expected 16 \(the checkpoint\), got 15",
        ),
        (
            nn.Sequential(nn.Linear(32, 64, bias=False), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 16)),
            r"layer '0': bias: expected True \(the checkpoint\), got False",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64)),
            r"layer '3': expected the model \(Sequential\) to have a module of that name, got none",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Conv1d(64, 16, 1)),
            r"layer '3': expected torch.nn.Linear or a qkernels quantized module there, got Conv1d",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(48), nn.Linear(64, 16)),
            r"2.weight: expected torch.float32 of shape \(48,\), got torch.float32 of shape \(64,\)",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64).double(), nn.Linear(64, 16)),
            r"2 entries do not fit the model:\n  2.weight: expected torch.float64 of shape \(64,\), "
            r"got torch.float32",
        ),
        (
            nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Identity(), nn.Linear(64, 16)),
            r"state dict: expected the keys of the model, got 0 missing \[\] and 2 unexpected "
            r"\['2.bias', '2.weight'\]",
        ),
    ],
    ids=["in_features", "out_features", "bias", "missing-layer", "not-linear", "shape", "dtype", "keys"],
)
def test_mismatched_model_rejected_and_unchanged(tmp_path, model, message):
    path = _saved(tmp_path, _quantized_mlp(False))
    _check_rejected(path, model, rf"qk.load: {path}: (.|\n)*{message}")


def test_missing_and_unexpected_tensors_rejected(tmp_path):
    def edit(t):
        del t["2.bias"]
        t["extra.weight"] = torch.zeros(3)

    path = _rewrite(_saved(tmp_path, _quantized_mlp(False)), tmp_path / "k.safetensors", tensors=edit)
    _check_rejected(path, _mlp(), r"got 1 missing \['2.bias'\] and 1 unexpected \['extra.weight'\]")


def test_unknown_format_rejected_but_inspectable(tmp_path):
    src = _saved(tmp_path, _quantized_mlp(False))
    path = _rewrite(src, tmp_path / "f.safetensors", header=lambda h: h["layers"]["3"].update(format="int5"))
    known = r"\['int3', 'int4', 'int8', 'nf4', 'vq'\]"
    _check_rejected(path, _mlp(), rf"layer '3': format: expected one of {known}, got 'int5'")
    assert qk.load(path).header["layers"]["3"]["format"] == "int5"


def test_class_not_matching_the_format_rejected(tmp_path):
    src = _saved(tmp_path, _quantized_mlp(False))
    path = _rewrite(
        src, tmp_path / "c.safetensors", header=lambda h: h["layers"]["0"].update({"class": "Int4Linear"})
    )
    _check_rejected(
        path, _mlp(), r"layer '0': class: expected 'Int8Linear' \(format 'int8'\), got 'Int4Linear'"
    )


def test_corrupted_quantized_values_rejected_before_any_change(tmp_path):
    def edit(t):
        t["3.weight"] = t["3.weight"].clone()
        t["3.weight"][2, 5] = -128

    path = _rewrite(_saved(tmp_path, _quantized_mlp(False)), tmp_path / "v.safetensors", tensors=edit)
    # layer '0' is valid and comes first: it must not have been swapped in either
    _check_rejected(path, _mlp(), r"layer '3': (.|\n)*weight: expected int8 codes in \[-127, 127\], got -128")


def test_config_disagreeing_with_extra_state_rejected(tmp_path):
    src = _saved(tmp_path, _quantized_mlp(False))
    path = _rewrite(
        src, tmp_path / "x.safetensors", header=lambda h: h["layers"]["0"]["config"].update(weight_only=True)
    )
    _check_rejected(
        path,
        _mlp(),
        r"layer '0': config: expected \{'weight_only': True\} \(the header\), got \{'weight_only': False\}",
    )


def test_quantized_layer_where_the_checkpoint_has_a_float_one_rejected(tmp_path):
    src = qk.quantize_(_mlp(), qk.Int8Config(), lambda m, name: name == "0")
    path = _saved(tmp_path, src)
    _check_rejected(path, _quantized_mlp(False), r"layer '3': expected a float layer, .* got Int8Linear")


def test_values_for_a_tied_tensor_must_agree(tmp_path):
    path = _saved(tmp_path, TinyLM(tie=False))
    _check_rejected(
        path, TinyLM(tie=True), r"head.weight: expected the values of embed.weight \(the model ties"
    )


class _Picky(nn.Module):
    """A third-party module whose own check runs only inside load_state_dict."""

    def __init__(self, tag):
        super().__init__()
        self.tag = tag
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def get_extra_state(self):
        return {"tag": self.tag}

    def set_extra_state(self, state):
        if state["tag"] != self.tag:
            raise ValueError(f"tag: expected {self.tag}, got {state['tag']}")


def test_rejection_inside_load_state_dict_puts_the_layers_back(tmp_path):
    src = qk.quantize_(_Picky("a"), qk.Int8Config())
    path = _saved(tmp_path, src)
    dst = _Picky("b")
    linear = dst.fc
    with pytest.raises(
        RuntimeError,
        match=r"loading failed after every check had passed \(tag: expected b, got a\); the layers were put",
    ):
        qk.load(path, dst)
    assert dst.fc is linear


# ---- arguments and paths ------------------------------------------------------------------------------


def test_path_errors(tmp_path):
    model = _quantized_mlp(False)
    with pytest.raises(FileNotFoundError, match=r"qk.load: path: expected an existing file, got '.*nope'"):
        qk.load(tmp_path / "nope", _mlp())
    with pytest.raises(IsADirectoryError, match=r"qk.load: path: expected a file, got the directory"):
        qk.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"qk.save: path: expected a file in an existing directory"):
        qk.save(model, tmp_path / "missing" / "m.safetensors")
    with pytest.raises(IsADirectoryError, match=r"qk.save: path: expected a file name, got the directory"):
        qk.save(model, tmp_path)
    for fn, call in (("save", lambda p: qk.save(model, p)), ("load", qk.load)):
        with pytest.raises(TypeError, match=rf"qk.{fn}: path: expected str or os.PathLike, got int"):
            call(3)
        with pytest.raises(ValueError, match=rf"qk.{fn}: path: expected a file name, got ''"):
            call("")
    assert os.listdir(tmp_path) == []


def test_model_argument_errors(tmp_path):
    with pytest.raises(TypeError, match=r"qk.save: model: expected torch.nn.Module, got dict"):
        qk.save({}, tmp_path / "m.safetensors")
    path = _saved(tmp_path, _mlp())
    with pytest.raises(TypeError, match=r"qk.load: model: expected torch.nn.Module or None, got dict"):
        qk.load(path, {})


class _Extra(nn.Module):
    def __init__(self, extra):
        super().__init__()
        self.extra = extra
        self.fc = nn.Linear(4, 4)

    def get_extra_state(self):
        return self.extra

    def set_extra_state(self, state):
        self.extra = state


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((1, 2), r"_extra_state: expected a value made of JSON types, got \(1, 2\), which JSON changes"),
        ({1: "a"}, r"_extra_state: expected a value made of JSON types, got \{1: 'a'\}, which JSON changes"),
        ({1, 2}, r"_extra_state: expected a value made of JSON types, got \{1, 2\} \(Object of type set"),
        (float("nan"), r"_extra_state: expected a value made of JSON types, got nan"),
    ],
)
def test_save_rejects_extra_state_that_json_cannot_hold(tmp_path, extra, message):
    with pytest.raises(TypeError, match=message):
        qk.save(_Extra(extra), tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra", [{"steps": [1, 2], "name": "x"}, torch.arange(3)], ids=["json", "tensor"])
def test_extra_state_of_any_module_round_trips(tmp_path, extra):
    path = _saved(tmp_path, _Extra(extra))
    dst = _Extra(extra * 0 if torch.is_tensor(extra) else None)
    qk.load(path, dst)
    assert torch.equal(dst.extra, extra) if torch.is_tensor(extra) else dst.extra == extra


def test_save_rejects_meta_tensors(tmp_path):
    with pytest.raises(ValueError, match=r"qk.save: weight: expected materialised values, got a meta tensor"):
        qk.save(nn.Linear(4, 4, device="meta"), tmp_path / "m.safetensors")
