"""qkernels.eval.layerwise: per-layer comparison, sensitivity ranking and bit allocation."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import qkernels as qk
import torch
import torch.nn.functional as F
from qkernels.eval.layerwise import LayerSensitivity, Sensitivity, allocate, layerwise, sensitivity
from torch import nn

W8A8 = qk.Int8Config()
W8A16 = qk.Int8Config(weight_only=True)


def _mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for i, (k, n) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(k, n)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def _quantized(model: nn.Module, config) -> nn.Module:
    return qk.quantize_(copy.deepcopy(model), config)


def _apply(model: nn.Module, mapping: dict) -> nn.Module:
    out = copy.deepcopy(model)
    for name, cfg in mapping.items():
        if cfg is not None:
            qk.quantize_(out, cfg, filter_fn=lambda _m, n, target=name: n == target)
    return out


def _cosine_metric(reference: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        ref = reference(x)

    def metric(model: nn.Module) -> float:
        with torch.no_grad():
            return F.cosine_similarity(model(x).float(), ref.float(), dim=-1).mean().item()

    return metric


def _outlier_model() -> nn.Sequential:
    """Layer "2" has a 1000 in every row of input column 0, a column that only ever meets zeros
    (layer 0's output 0 is ReLU(0)): harmless in float, but its per-row int8 scale (1000/127)
    rounds every other weight of the layer (|w| < 0.18) to 0."""
    model = _mlp(16, 32, 32, 8)
    with torch.no_grad():
        model[0].weight[0].zero_()
        model[0].bias[0] = 0.0
        model[2].weight[:, 0] = 1000.0
    return model


def _sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return 10 * math.log10((ref**2).sum().item() / ((out - ref) ** 2).sum().item())


def _no_hooks(*models: nn.Module) -> bool:
    return all(not m._forward_hooks for model in models for m in model.modules())


# ---- layerwise ----------------------------------------------------------------------------------


def test_isolated_reports_match_direct_computation():
    model = _mlp(24, 40, 40, 12)
    quant = _quantized(model, W8A8)
    batches = [torch.randn(5, 24), torch.randn(3, 24)]
    reports = layerwise(model, quant, batches)
    assert [r.name for r in reports] == ["0", "2", "4"]
    assert all(r.format == "Int8Linear (int8 W8A8 dynamic)" and r.calls == 2 for r in reports)
    # The float input of each layer, straight from the Sequential.
    inputs = {"0": [], "2": [], "4": []}
    for x in batches:
        h = x
        for name, mod in model.named_children():
            if name in inputs:
                inputs[name].append(h)
            h = mod(h)
    with torch.no_grad():
        for r in reports:
            # Batch by batch, as layerwise runs them (a GEMM's rounding depends on its shape).
            xs = inputs[r.name]
            ref = torch.cat([model.get_submodule(r.name)(xb) for xb in xs])
            out = torch.cat([quant.get_submodule(r.name)(xb) for xb in xs])
            x = torch.cat(xs)
            assert r.sqnr_db == pytest.approx(_sqnr(ref, out), rel=1e-9)
            cos = F.cosine_similarity(ref.flatten().double(), out.flatten().double(), dim=0).item()
            assert r.cosine == pytest.approx(cos, rel=1e-12)
            assert r.mse == pytest.approx(((out.double() - ref.double()) ** 2).mean().item(), rel=1e-9)
            w = model.get_submodule(r.name).weight
            assert r.weight_sqnr_db == pytest.approx(
                _sqnr(w, quant.get_submodule(r.name).dequantize()), rel=1e-9
            )
            for stats, values in ((r.weight_stats, w.flatten()), (r.input_stats, x.flatten())):
                v = values.double()
                assert stats.numel == stats.sampled == v.numel()
                assert (stats.min, stats.max) == (v.min().item(), v.max().item())
                assert stats.mean == pytest.approx(v.mean().item(), abs=1e-12)
                assert stats.std == pytest.approx(v.std(correction=0).item(), rel=1e-9)
                expect = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99, 0.999], dtype=torch.float64))
                got = torch.tensor([stats.p1, stats.p50, stats.p99, stats.p99_9], dtype=torch.float64)
                torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
                assert stats.outliers == int(((v - v.mean()).abs() > 6 * v.std(correction=0)).sum())


def test_outlier_count_sees_a_planted_outlier():
    model = _mlp(64, 16)
    with torch.no_grad():
        model[0].weight[3, 7] = 50.0
    (r,) = layerwise(model, _quantized(model, W8A16), torch.randn(4, 64))
    assert r.weight_stats.outliers == 1 and r.weight_stats.max == 50.0


def test_propagated_accumulates_error_and_first_layer_matches_isolated():
    # A deep chain of layers that pass their input on at full scale, so every layer's error
    # reaches the next one: the propagated error can only grow along it.
    torch.manual_seed(1)
    model = nn.Sequential(*[nn.Linear(48, 48) for _ in range(5)])
    with torch.no_grad():
        for lin in model:
            nn.init.orthogonal_(lin.weight)
    quant = _quantized(model, W8A8)
    x = [torch.randn(16, 48), torch.randn(7, 48)]
    iso = layerwise(model, quant, x, mode="isolated")
    prop = layerwise(model, quant, x, mode="propagated")
    first_iso, first_prop = iso[0], prop[0]
    assert (first_iso.sqnr_db, first_iso.cosine, first_iso.mse) == (
        first_prop.sqnr_db,
        first_prop.cosine,
        first_prop.mse,
    )
    assert first_iso.input_stats == first_prop.input_stats
    for a, b in zip(iso[1:], prop[1:], strict=True):
        assert b.mse > a.mse and b.sqnr_db < a.sqnr_db, (a.name, a.mse, b.mse)
    # Propagated, the last layer's output is the model's output.
    with torch.no_grad():
        ref, out = torch.cat([model(b) for b in x]), torch.cat([quant(b) for b in x])
    assert prop[-1].sqnr_db == pytest.approx(_sqnr(ref, out), rel=1e-9)


def test_grid_use_of_int8_from_first_principles():
    model = _mlp(255, 2)
    with torch.no_grad():
        w = model[0].weight
        w[0] = torch.arange(-127, 128) / 127  # every code -127..127 once
        w[1] = 1e-3 * torch.randn(255)
        w[1, 0] = 1000.0  # scale 1000/127: every other weight rounds to 0
    (r,) = layerwise(model, _quantized(model, W8A16), torch.randn(2, 255))
    g = r.grid
    assert (g.group_size, g.bits) == (255, 8)
    # Row 0 uses all 255 levels of 255 weights and spans 254 of 255 steps; row 1 uses {0, 127 s}.
    assert g.level_use == pytest.approx((255 / 255 + 2 / 255) / 2, rel=1e-12)
    assert g.range_use == pytest.approx((254 / 255 + 1 / 255) / 2, rel=1e-12)
    assert g.underflowed == 254 / (2 * 255)
    assert g.clipped == 0.0


class _ClipGrid(nn.Module):
    """A made-up format: w clipped to ±c, rounded to 15 levels (step c/7) per group of 64."""

    bits = 4
    group_size = 64

    def __init__(self, linear: nn.Linear, c: float) -> None:
        super().__init__()
        self.c, self.step = c, c / 7
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("w", linear.weight.detach().clone())
        self.register_buffer("bias", linear.bias.detach().clone())

    def dequantize(self) -> torch.Tensor:
        return torch.round(self.w.clamp(-self.c, self.c) / self.step) * self.step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(), self.bias)


def test_grid_use_of_any_module_with_dequantize():
    model = _mlp(160, 6)  # groups of 64, 64 and a partial 32
    with torch.no_grad():
        model[0].weight.normal_()
    quant = copy.deepcopy(model)
    c = 1.5
    quant[0] = _ClipGrid(model[0], c)
    (r,) = layerwise(model, quant, torch.randn(3, 160))
    assert r.format == "_ClipGrid" and r.grid.group_size == 64 and r.grid.bits == 4
    w, w_hat, step = model[0].weight.detach(), quant[0].dequantize(), c / 7
    groups = [(w[i, j : j + 64], w_hat[i, j : j + 64]) for i in range(6) for j in (0, 64, 128)]
    level_use = [g_hat.unique().numel() / min(16, g.numel()) for g, g_hat in groups]
    range_use = [min(1.0, (g_hat.max() - g_hat.min()).item() / step / 15) for _, g_hat in groups]
    assert r.grid.level_use == pytest.approx(sum(level_use) / len(groups), rel=1e-12)
    assert r.grid.range_use == pytest.approx(sum(range_use) / len(groups), rel=1e-6)
    clipped = (w.abs() > c + step / 2).sum().item() / w.numel()
    assert clipped > 0 and r.grid.clipped == pytest.approx(clipped, rel=1e-12)
    assert r.grid.underflowed == ((w != 0) & (w_hat == 0)).sum().item() / w.numel()
    assert r.weight_sqnr_db == pytest.approx(_sqnr(w, w_hat), rel=1e-9)


def test_grid_use_without_code_bits():
    class NoBits(_ClipGrid):
        bits = None

    model = _mlp(64, 4)
    quant = copy.deepcopy(model)
    quant[0] = NoBits(model[0], 0.1)
    (r,) = layerwise(model, quant, torch.randn(2, 64))
    assert r.grid.bits is None and r.grid.level_use is None and r.grid.range_use is None


def test_inputs_forms_agree():
    model = _mlp(8, 8, 4)
    quant = _quantized(model, W8A8)
    x = torch.randn(6, 8)
    as_tensor, as_tuple, as_list, as_kwargs = (
        layerwise(model, quant, inp) for inp in (x, (x,), [x], [{"input": x}])
    )
    assert as_tensor == as_tuple == as_list == as_kwargs


class _SkipsHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_layer_the_inputs_never_reach_is_reported_as_such():
    model = _SkipsHead()
    body, head = layerwise(model, _quantized(model, W8A16), torch.randn(3, 8))
    assert body.calls == 1 and math.isfinite(body.sqnr_db) and body.input_stats is not None
    assert head.calls == 0 and math.isnan(head.sqnr_db) and math.isnan(head.mse) and head.input_stats is None
    assert math.isfinite(head.weight_sqnr_db)


@pytest.mark.parametrize("mode", ["isolated", "propagated"])
def test_hooks_removed_after_success_and_error(mode):
    model = _mlp(8, 16, 4)
    quant = _quantized(model, W8A8)
    layerwise(model, quant, torch.randn(2, 8), mode=mode)
    assert _no_hooks(model, quant)
    with pytest.raises(RuntimeError):
        layerwise(model, quant, [torch.randn(2, 8), torch.randn(2, 5)], mode=mode)
    assert _no_hooks(model, quant)
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected finite values, got nan"):
        layerwise(model, quant, [torch.randn(2, 8), torch.full((2, 8), math.nan)], mode=mode)
    assert _no_hooks(model, quant)


def test_layerwise_rejects_bad_arguments():
    model = _mlp(8, 16, 4)
    quant = _quantized(model, W8A8)
    x = torch.randn(2, 8)
    with pytest.raises(
        ValueError, match=r"quant_model: expected the module names of float_model, got \['1', '2'\] only"
    ):
        layerwise(model, _quantized(_mlp(8, 16), W8A8), x)
    with pytest.raises(ValueError, match="quant_model: expected a separate quantized copy"):
        layerwise(quant, quant, x)
    with pytest.raises(
        ValueError, match=r"quant_model: expected at least one quantized layer \(a module with"
    ):
        layerwise(model, copy.deepcopy(model), x)
    with pytest.raises(
        ValueError, match="float_model: expected a float layer with a 2-D weight at '0', got Int8Linear"
    ):
        layerwise(quant, copy.deepcopy(quant), x)
    with pytest.raises(ValueError, match=r"mode: expected one of \('isolated', 'propagated'\), got 'both'"):
        layerwise(model, quant, x, mode="both")
    with pytest.raises(ValueError, match=r"inputs: expected finite values, got inf in argument 0"):
        layerwise(model, quant, x.clone().fill_(math.inf))
    with pytest.raises(ValueError, match="inputs: expected at least one batch, got an empty list"):
        layerwise(model, quant, [])
    with pytest.raises(
        TypeError, match="inputs: expected a Tensor, a tuple of arguments or a list of batches, got str"
    ):
        layerwise(model, quant, "x")
    with pytest.raises(TypeError, match=r"inputs\[0\]: expected a Tensor, a tuple of arguments or a dict"):
        layerwise(model, quant, [[x]])
    with pytest.raises(TypeError, match=r"float_model: expected torch\.nn\.Module, got int"):
        layerwise(3, quant, x)
    assert _no_hooks(model, quant)


# ---- sensitivity --------------------------------------------------------------------------------


def test_sensitivity_ranks_the_outlier_layer_first(capsys):
    model = _outlier_model()
    x = torch.randn(64, 16)
    metric = _cosine_metric(model, x)
    before = copy.deepcopy(model.state_dict())
    sens = sensitivity(model, [W8A8, W8A16], metric=metric)
    assert "sensitivity: layers" in capsys.readouterr().err  # the tqdm bar
    assert sens.float_metric == pytest.approx(1.0, abs=1e-6)
    assert len(sens.ranking) == 6 and {e.name for e in sens.ranking[:2]} == {"2"}
    costs = [e.cost for e in sens.ranking]
    assert costs == sorted(costs, reverse=True)
    # Every entry is the metric of the model with that layer alone quantized.
    for e in sens.ranking:
        assert e.metric == pytest.approx(metric(_apply(model, {e.name: e.config})), abs=1e-12)
        assert e.cost == pytest.approx(sens.float_metric - e.metric, abs=1e-12)
        assert sens.cost(e.name, e.config) == e.cost
    # The float model is untouched.
    assert all(type(m) is not qk.nn.Int8Linear for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The default metric (output cosine on inputs) and a subset of layers agree on the ranking.
    sub = sensitivity(model, W8A16, layers=["4", "2"], inputs=x, progress=False)
    assert [e.name for e in sub.ranking] == ["2", "4"]
    assert sub.ranking[0].cost == pytest.approx(sens.cost("2", W8A16), rel=1e-6)


def test_sensitivity_rejects_bad_arguments():
    model = _mlp(8, 8, 4)
    x = torch.randn(4, 8)
    metric = _cosine_metric(model, x)
    with pytest.raises(ValueError, match=r"float_model: expected at least one nn\.Linear layer, got none"):
        sensitivity(nn.Sequential(nn.ReLU()), W8A8, metric=metric)
    with pytest.raises(
        TypeError, match=r"config\[1\]: expected a qkernels config such as Int8Config, got 'int4'"
    ):
        sensitivity(model, [W8A8, "int4"], metric=metric)
    with pytest.raises(TypeError, match="config: expected a qkernels config such as Int8Config, got None"):
        sensitivity(model, None, metric=metric)
    with pytest.raises(ValueError, match=r"layers: expected names of nn.Linear layers .* got \['1'\]"):
        sensitivity(model, W8A8, metric=metric, layers=["0", "1"])
    with pytest.raises(ValueError, match="metric: expected a finite value, got nan"):
        sensitivity(model, W8A8, metric=lambda m: math.nan)
    with pytest.raises(TypeError, match="metric: expected a function returning a float, got 'good'"):
        sensitivity(model, W8A8, metric=lambda m: "good")
    with pytest.raises(
        ValueError, match="inputs: expected a Tensor, a tuple of arguments or a list of batches, got None"
    ):
        sensitivity(model, W8A8)
    with pytest.raises(ValueError, match="inputs: expected at least one batch, got an empty list"):
        sensitivity(model, W8A8, inputs=[])
    with pytest.raises(ValueError, match=r"inputs: expected finite values, got nan"):
        sensitivity(model, W8A8, inputs=torch.full((2, 8), math.nan))


# ---- allocate -----------------------------------------------------------------------------------


def _bits_per_weight(model: nn.Module) -> float:
    """Stored bits per weight over every Linear weight, from the swapped model's tensors."""
    bits = weights = 0
    for m in model.modules():
        if isinstance(m, qk.nn.Int8Linear):
            bits += m.weight.numel() * 8 + m.weight_scale.numel() * 32
            weights += m.weight.numel()
        elif isinstance(m, nn.Linear):
            bits += m.weight.numel() * torch.finfo(m.weight.dtype).bits
            weights += m.weight.numel()
    return bits / weights


def test_allocate_keeps_the_sensitive_layer_float_and_beats_uniform():
    model = _outlier_model()
    x = torch.randn(64, 16)
    metric = _cosine_metric(model, x)
    names = ["0", "2", "4"]
    int8_bpw = _bits_per_weight(_quantized(model, W8A8))
    # Enough for one of the three layers in float: layer "2" (the largest) in float needs this much.
    budget = _bits_per_weight(_apply(model, {"0": W8A8, "4": W8A8}))
    assert budget < 32
    results = {
        "proxy": allocate(model, [W8A8, W8A16, None], budget, inputs=x),
        "metric": allocate(model, [W8A8, W8A16, None], budget, metric=metric, progress=False),
    }
    sens = sensitivity(model, [W8A8, W8A16], metric=metric, progress=False)
    results["sensitivity"] = allocate(model, [W8A8, W8A16, None], budget, sensitivity=sens)
    assert _no_hooks(model) and all(type(m) is not qk.nn.Int8Linear for m in model.modules())
    uniform = max(metric(_quantized(model, cfg)) for cfg in (W8A8, W8A16))
    for how, alloc in results.items():
        assert list(alloc.mapping) == names, how
        assert alloc.mapping["2"] is None, (how, alloc.mapping)
        assert alloc.bits_per_weight <= budget
        applied = _apply(model, alloc.mapping)
        assert alloc.bits_per_weight == pytest.approx(_bits_per_weight(applied), rel=1e-12)
        # Measured: uniform int8 loses ~0.08 of cosine, the allocation ~4e-6.
        assert 1 - metric(applied) < 0.01 * (1 - uniform), how
        assert [r.name for r in alloc.table] == names
        assert [r.choice for r in alloc.table] == [
            "float" if c is None else repr(c) for c in alloc.mapping.values()
        ]
        assert "achieved" in str(alloc)
    # At the smallest feasible budget every layer is int8; below it there is no solution.
    tight = allocate(model, [W8A8, W8A16, None], int8_bpw, inputs=x)
    assert None not in tight.mapping.values() and tight.bits_per_weight == pytest.approx(int8_bpw, rel=1e-12)
    with pytest.raises(
        ValueError, match=rf"budget_bits_per_weight: expected >= {int8_bpw:.4f} \(every layer in its"
    ):
        allocate(model, [W8A8, W8A16, None], int8_bpw - 0.01, inputs=x)
    # Without a float candidate, a generous budget still gets int8 everywhere.
    assert None not in allocate(model, [W8A16], 32, inputs=x).mapping.values()


def test_allocate_solves_a_hand_made_instance_like_brute_force():
    # Costs set by hand through a Sensitivity: brute force over all 3^4 choices gives the optimum.
    model = _mlp(32, 64, 64, 32, 16)
    names = ["0", "2", "4", "6"]
    cost = {
        ("0", W8A8): 5.0, ("0", W8A16): 4.0,
        ("2", W8A8): 0.5, ("2", W8A16): 0.2,
        ("4", W8A8): 3.0, ("4", W8A16): 2.9,
        ("6", W8A8): 9.0, ("6", W8A16): 1.0,
    }  # fmt: skip
    sens = Sensitivity(0.0, [LayerSensitivity(n, c, -v, v) for (n, c), v in cost.items()])
    cands = [W8A8, W8A16, None]

    def bits(mapping):
        return _bits_per_weight(_apply(model, mapping))

    for budget in (9.5, 12.0, 14.0, 17.0, 20.0, 26.0, 32.0):
        best = min(
            (sum(cost.get((n, c), 0.0) for n, c in zip(names, combo, strict=True)), combo)
            for combo in itertools.product(cands, repeat=4)
            if bits(dict(zip(names, combo, strict=True))) <= budget
        )
        alloc = allocate(model, cands, budget, sensitivity=sens)
        assert alloc.cost == pytest.approx(best[0]), (budget, alloc.mapping, best)
        assert alloc.bits_per_weight <= budget


def test_allocate_counts_bf16_float_as_16_bits():
    model = _mlp(32, 32, 8).to(torch.bfloat16)
    x = torch.randn(8, 32, dtype=torch.bfloat16)
    alloc = allocate(model, [W8A16, None], 16, inputs=x)
    assert set(alloc.mapping.values()) == {None} and alloc.bits_per_weight == 16.0 and alloc.cost == 0.0
    mixed = allocate(model, [W8A16, None], 12, inputs=x)
    assert list(mixed.mapping.values()).count(None) == 1 and mixed.bits_per_weight <= 12


def test_allocate_rejects_bad_arguments():
    model = _mlp(8, 8, 4)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"model: expected at least one nn\.Linear layer, got none"):
        allocate(nn.Sequential(nn.ReLU()), [W8A8], 8, inputs=x)
    with pytest.raises(
        ValueError, match=r"model: expected a container of nn\.Linear layers, got an nn\.Linear"
    ):
        allocate(nn.Linear(4, 4), [W8A8], 16, inputs=x)
    with pytest.raises(
        TypeError, match=r"candidates\[1\]: expected a qkernels config such as Int8Config or None, got 'nf4'"
    ):
        allocate(model, [W8A8, "nf4"], 8, inputs=x)
    with pytest.raises(ValueError, match="candidates: expected at least one config, got none"):
        allocate(model, [], 8, inputs=x)
    with pytest.raises(ValueError, match="candidates: expected distinct entries, got None twice"):
        allocate(model, [None, W8A8, None], 8, inputs=x)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="budget_bits_per_weight: expected a positive finite number"):
            allocate(model, [W8A8], bad, inputs=x)
    for bad in ("8", True, None):
        with pytest.raises(TypeError, match="budget_bits_per_weight: expected a number, got"):
            allocate(model, [W8A8], bad, inputs=x)
    with pytest.raises(
        ValueError, match="inputs: expected calibration inputs when neither metric nor sensitivity"
    ):
        allocate(model, [W8A8, None], 16)
    with pytest.raises(ValueError, match=r"inputs\[0\]: expected finite values, got nan"):
        allocate(model, [W8A8, None], 16, inputs=[torch.full((2, 8), math.nan)])
    with pytest.raises(ValueError, match="inputs: expected at least one batch, got an empty list"):
        allocate(model, [W8A8, None], 16, inputs=[])
    partial = Sensitivity(1.0, [LayerSensitivity("0", W8A8, 0.9, 0.1)])
    with pytest.raises(
        ValueError, match=r"sensitivity: expected a cost for every layer and candidate, got none for \[\('2'"
    ):
        allocate(model, [W8A8, None], 16, sensitivity=partial)
    with pytest.raises(TypeError, match="sensitivity: expected the result of"):
        allocate(model, [W8A8, None], 16, sensitivity={"0": 1.0})
    assert _no_hooks(model)
