"""8-bit optimizer states: torchao's quantization bit for bit, its error bound, the fp32 trajectory within the
bound that error implies, training next to torchao's and bitsandbytes' AdamW8bit, bytes, resume, bad input."""

import pytest
import torch
from torch import nn

import leantrain.optim as lo
from leantrain.io import load_checkpoint, save_checkpoint
from leantrain.optim.quantized_state import BLOCK_SIZE, QuantizedState, dynamic_map, nearest_codes

EPS32 = torch.finfo(torch.float32).eps  # 2 ulp of 1 in fp32's rounding


def moment_like(shape, signed, seed=0):
    """Random values, blocks of scales e^0…e^4, with outliers: one huge value, a block 1e-6 smaller, a block of 0."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randn(shape, generator=generator).view(-1, BLOCK_SIZE)
    values = (blocks * torch.rand(len(blocks), 1, generator=generator).mul(4).exp()).view(shape)
    values = values if signed else values.square()
    values.view(-1)[7] = 1e4 if signed else 1e8
    values.view(-1, BLOCK_SIZE)[3] *= 1e-6
    values.view(-1, BLOCK_SIZE)[5] = 0.0
    return values


def half_spacing(signed):
    """Per code c: the farthest a value x/s in [-1 (signed) or 0, 1] that rounds to c can lie from map[c]:
    half the gap to either neighbour; below the lowest code (signed: down to -1), the whole distance."""
    code_map = dynamic_map(signed).double()
    gaps = code_map.diff() / 2
    left = torch.cat([code_map[:1] - (-1.0 if signed else 0.0), gaps])
    right = torch.cat([gaps, torch.zeros(1, dtype=torch.float64)])
    return torch.maximum(left, right)


def error_bound(state):
    """|x − dequantized x| ≤ (half spacing of x's code + 2 ulp(1)) · block scale, for every x quantized into
    ``state``; the 2 ulp(1) cover fp32's rounding of x/s, of the tie test and of map[c]·s."""
    scales = state.scales.double().repeat_interleave(BLOCK_SIZE).view(state.codes.shape)
    return (half_spacing(state.signed)[state.codes.long()] + 2 * EPS32) * scales


@pytest.mark.parametrize("signed", [True, False])
def test_quantization_equals_torchao_bit_for_bit(signed):
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    from torchao.optim.subclass_8bit import OptimState8bit

    assert torch.equal(dynamic_map(signed), torch.tensor(quant_utils.create_dynamic_map(signed)))
    for seed, shape in enumerate([(64, 512), (3, 4096), (4096,)]):
        values = moment_like(shape, signed, seed)
        reference = OptimState8bit.zeros(shape, signed, BLOCK_SIZE)
        reference.copy_(values)
        ours = QuantizedState.zeros(shape, signed).copy_(values)
        assert torch.equal(ours.codes, reference.codes) and torch.equal(ours.scales, reference.scale)
        assert torch.equal(ours.dequantize(), reference.dequantize())


def blocks_of(values, signed):
    """``values`` (in [−1, 1]) in 255-value rows after a leading 1.0, so each 256-value block has scale 1 and
    x/s = x exactly; padded with zeros to whole blocks."""
    rows = torch.zeros(-(-len(values) // 255) * 255).index_copy_(0, torch.arange(len(values)), values).view(-1, 255)
    return torch.cat([torch.ones(len(rows), 1), rows], 1)


@pytest.mark.parametrize("signed", [True, False])
def test_table_rounding_equals_the_binary_search_at_every_step_of_the_code(signed):
    """``copy_`` finds codes by one look-up on the value's top 16 bits; :func:`nearest_codes` (torchao's rule)
    by binary search. They must agree on every fp32 value where a code changes (within 3 ulp of each of the
    255 points where the map rounds up, found by bisection on nearest_codes here), at every bucket's end, at
    ±1, ±0, and on random values."""
    low = -1.0 if signed else 0.0

    def value_at(key):  # fp32 values in increasing order: key ≥ 0 is a non-negative value's bits, −key a negative's
        return torch.where(key >= 0, key, (-key) | 0x80000000).to(torch.int32).view(torch.float32)

    first, last = torch.full((255,), -0x3F800000 if signed else 0), torch.full((255,), 0x3F800000)  # keys of low, 1
    wanted = torch.arange(1, 256)  # bisect for the first value of each code above the lowest
    while (first < last).any():
        middle = torch.div(first + last, 2, rounding_mode="floor")
        up = nearest_codes(value_at(middle), signed) >= wanted
        first, last = torch.where(up, first, middle + 1), torch.where(up, middle, last)
    above = value_at(first)
    assert torch.equal(nearest_codes(above, signed), wanted)  # 255 steps, each one value past the last lower code
    assert (nearest_codes(value_at(first - 1), signed) == wanted - 1).all()
    bits = above.view(torch.int32)
    near_steps = torch.cat([(bits + offset).view(torch.float32) for offset in range(-3, 4)])
    bucket_ends = torch.cat([torch.arange(2**16, dtype=torch.int64) << 16, (torch.arange(2**16) << 16) | 0xFFFF])
    bucket_ends = bucket_ends.to(torch.int32).view(torch.float32)
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([near_steps, bucket_ends, torch.tensor([1.0, 0.0, -0.0, -1.0]),
                        torch.rand(2**16, generator=generator) * (1 - low) + low])
    values = values[(values >= low) & (values <= 1.0)]
    packed = blocks_of(values, signed)
    state = QuantizedState.zeros(packed.shape, signed).copy_(packed)
    assert torch.equal(state.scales, torch.ones(len(packed)))
    assert torch.equal(state.codes.long(), nearest_codes(packed, signed))


@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_looks_up_every_pair_of_codes(signed):
    """Two codes are dequantized by one look-up of the pair: every pair (c0, c1) gives map[c0]·s, map[c1]·s."""
    pairs = torch.cartesian_prod(torch.arange(256), torch.arange(256)).to(torch.uint8).view(-1, BLOCK_SIZE)
    scales = torch.linspace(0.5, 3.0, len(pairs))
    dequantized = QuantizedState(pairs.clone(), scales, signed).dequantize()
    assert torch.equal(dequantized, dynamic_map(signed)[pairs.long()] * scales.view(-1, 1))


@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_is_at_most_half_the_code_spacing_times_the_block_scale(signed):
    values = moment_like((64, 512), signed)
    state = QuantizedState.zeros(values.shape, signed).copy_(values)
    error = (state.dequantize().double() - values.double()).abs()
    bound = error_bound(state)
    assert (error <= bound).all()
    assert (error / bound).max() > 0.9  # the bound is tight: some value lies almost midway between two codes
    assert torch.equal(state.scales, values.view(-1, BLOCK_SIZE).abs().amax(-1).clip(1e-12))
    assert (state.dequantize().view(-1, BLOCK_SIZE)[5] == 0).all()  # a block of zeros stays zeros


def direction_error_bound(state32, moment_errors, betas, eps):
    """Bound on |ψ8 − ψ| for ψ = m/(√v+ε), given |m8 − m| ≤ Em and |v8 − v| ≤ Ev (m, v: the fp32 run's moments):
    |Δψ| ≤ Em/a8 + |m|·|√v8 − √v|/(a·a8) with a = √v+ε, a8 ≥ √(v−Ev)+ε, |√v8 − √v| ≤ Ev/(√(v−Ev)+√v); plus
    both runs' fp32 rounding of ψ (2 ulp(1) relative)."""
    m, v = state32["exp_avg"].double(), state32["exp_avg_sq"].double()
    em, ev = moment_errors
    root_low = (v - ev).clamp(min=0).sqrt()
    a, a8 = v.sqrt() + eps, root_low + eps
    return em / a8 + m.abs() * (ev / (root_low + v.sqrt())) / (a * a8) + 2 * EPS32 * m.abs() / a


@pytest.mark.parametrize("low_rank", [False, True], ids=["adamw", "galore-std-svd"])
def test_8bit_follows_the_fp32_trajectory_within_the_quantization_bound(low_rank):
    """Fixed gradients (not a function of W), so the two runs differ by the moments' quantization alone.
    Moment errors: E_t = β·(E_{t−1} + q_{t−1}) + rounding, q = :func:`error_bound` of the stored state; then
    |W8 − W| ≤ Σ_t η·c_t·|P_t|·bound|Δψ_t| + rounding, P_t the back-projection (α·B for GaLore)."""
    steps, lr, betas, eps, alpha = 20, 1e-2, (0.9, 0.999), 1e-8, 0.25
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(64, 256, generator=generator)
    grads = [torch.randn(64, 256, generator=generator) * torch.rand(64, 1, generator=generator).mul(3).exp()
             for _ in range(steps)]
    bias_start = torch.randn(256, generator=generator)

    def make(bits):
        weight, bias = nn.Parameter(start.clone()), nn.Parameter(bias_start.clone())
        if low_rank:  # 64×256, "std": B is 64×16, the moments 16×256 = 4096 values
            groups = [{"params": [bias], "state_bits": bits},
                      {"params": [weight], "rank": 16, "update_proj_gap": 10, "scale": alpha, "state_bits": bits}]
            return weight, bias, lo.GaLoreAdamW(groups, lr=lr, betas=betas, eps=eps)
        if bits == 8:
            return weight, bias, lo.AdamW8bit([weight, bias], lr=lr, betas=betas, eps=eps)
        return weight, bias, lo.GaLoreAdamW([weight, bias], lr=lr, betas=betas, eps=eps)  # only plain groups

    (w32, b32, fp32), (w8, b8, eight) = make(32), make(8)
    zero = torch.zeros((16, 256) if low_rank else (64, 256), dtype=torch.float64)
    em, ev, qm, qv, m_prev, v_prev = (zero,) * 6
    bound = torch.zeros(64, 256, dtype=torch.float64)
    for t, grad in enumerate(grads, start=1):
        for weight, bias, optimizer in ((w32, b32, fp32), (w8, b8, eight)):
            weight.grad, bias.grad = grad.clone(), grad[0].clone()
            optimizer.step()
        state32, state8 = fp32.state[w32], eight.state[w8]
        inner = (state32["projector"].T @ grad if low_rank else grad).double()
        em = betas[0] * (em + qm) + 2 * EPS32 * (betas[0] * m_prev.abs() + (1 - betas[0]) * inner.abs())
        ev = betas[1] * (ev + qv) + 2 * EPS32 * (betas[1] * v_prev + (1 - betas[1]) * inner.square())
        psi_error = direction_error_bound(state32, (em, ev), betas, eps)
        psi = state32["exp_avg"].double() / (state32["exp_avg_sq"].double().sqrt() + eps)
        correction = (1 - betas[1] ** t) ** 0.5 / (1 - betas[0] ** t)
        if low_rank:
            basis = state32["projector"].double().abs()
            back = alpha * basis @ psi_error + 16 * EPS32 * alpha * basis @ psi.abs()  # + both runs' matmul rounding
        else:
            back = psi_error
        bound += lr * correction * back + EPS32 * w32.detach().double().abs()  # + both runs' rounding of W
        assert ((w8 - w32).double().abs() <= bound).all(), f"step {t}"
        qm = error_bound(QuantizedState(state8["exp_avg_codes"], state8["exp_avg_scales"], signed=True))
        qv = error_bound(QuantizedState(state8["exp_avg_sq_codes"], state8["exp_avg_sq_scales"], signed=False))
        m_prev, v_prev = state32["exp_avg"].double(), state32["exp_avg_sq"].double()
    difference, moved = (w8 - w32).abs().max(), (w32 - start).abs().max()
    assert 0 < difference <= bound.max() < 0.25 * moved  # quantization shows; the bound is a fraction of the path
    assert torch.equal(b8, b32) and "exp_avg" in eight.state[b8]  # 256 values: fp32 moments, the same run


def regression(seed=0):
    torch.manual_seed(seed)
    inputs = torch.randn(256, 32)
    targets = torch.tanh(inputs @ torch.randn(32, 64) / 4) @ torch.randn(64, 32)
    return nn.Sequential(nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 32)), inputs, targets


def snapshot(state):
    """Copies of a state's tensors, torchao's OptimState8bit as <key>_codes and <key>_scales (leantrain's names)."""
    copies = {}
    for key, value in state.items():
        if hasattr(value, "codes"):
            copies[f"{key}_codes"], copies[f"{key}_scales"] = value.codes.clone(), value.scale.clone()
        elif isinstance(value, torch.Tensor):
            copies[key] = value.clone()
    return copies


def test_8bit_adamw_trains_like_torchao_and_bitsandbytes_adamw8bit(monkeypatch):
    """All three keep torchao's / bitsandbytes' block-wise 8-bit moments (256-value blocks, ≥ 4096 values),
    but the Adam forms differ: leantrain divides by √V+ε and folds √(1−β₂ᵗ) into the step size, torchao and
    bitsandbytes divide by √V/√(1−β₂ᵗ)+ε. So what is equal is the state quantization (torchao's codes and
    scales after the first step, where the two runs still see the same gradient), and the training
    losses are compared within a tolerance."""
    torchao_optim = pytest.importorskip("torchao.optim")
    bnb = pytest.importorskip("bitsandbytes")
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)  # torchao's step, eager: inductor takes ~1 min on CPU
    runs = {
        "fp32": lambda params: lo.GaLoreAdamW(params, lr=3e-3),
        "leantrain": lambda params: lo.AdamW8bit(params, lr=3e-3),
        "torchao": lambda params: torchao_optim.AdamW8bit(params, lr=3e-3, weight_decay=0.0),
        "bitsandbytes": lambda params: bnb.optim.AdamW8bit(params, lr=3e-3, weight_decay=0.0),
    }
    losses, first_states = {}, {}
    for name, make in runs.items():
        model, inputs, targets = regression()
        optimizer = make(model.parameters())
        for step in range(60):
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
            optimizer.zero_grad()
            if step == 0:
                first_states[name] = snapshot(optimizer.state[model[0].weight])
        losses[name] = nn.functional.mse_loss(model(inputs), targets).item()
    ours, reference = first_states["leantrain"], first_states["torchao"]
    for key in ("exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes"):
        assert torch.equal(ours[key], reference[key]), key
    # V: leantrain's (1−β₂)·g·g (addcmul) and torchao's (1−β₂)·g² (lerp) may round 1 ulp apart
    torch.testing.assert_close(ours["exp_avg_sq_scales"], reference["exp_avg_sq_scales"], rtol=EPS32, atol=0)
    for reference in ("torchao", "bitsandbytes"):  # measured: within 2e-4 of each other, from 35.2 at the start
        assert losses["leantrain"] == pytest.approx(losses[reference], rel=1e-3), reference
    assert abs(losses["leantrain"] - losses["fp32"]) > 10 * abs(losses["leantrain"] - losses["torchao"])  # 8-bit shows


def test_8bit_state_of_a_512x512_weight_is_a_quarter_of_fp32():
    bytes_of = {}
    for bits in (32, 8):
        weight = nn.Parameter(torch.randn(512, 512))
        optimizer = lo.GaLoreAdamW([{"params": [weight], "state_bits": bits}])
        weight.grad = torch.randn(512, 512)
        optimizer.step()
        bytes_of[bits] = lo.optimizer_state_bytes(optimizer)
    assert bytes_of[32] == 2 * 512 * 512 * 4
    assert bytes_of[8] == 2 * (512 * 512 + 512 * 512 // BLOCK_SIZE * 4)  # uint8 codes + one fp32 scale per block
    assert bytes_of[8] / bytes_of[32] == pytest.approx(0.25 * (1 + 4 / BLOCK_SIZE), rel=1e-12)


def test_state_bytes_count_torchaos_8bit_state_tensors(monkeypatch):
    """torchao keeps each moment as a tensor subclass over its codes, scales and its own copy of the 256-value
    map: counted through those."""
    torchao_optim = pytest.importorskip("torchao.optim")
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)  # torchao's step, eager: inductor is slow on CPU
    weight = nn.Parameter(torch.randn(512, 512))
    optimizer = torchao_optim.AdamW8bit([weight])
    weight.grad = torch.randn(512, 512)
    optimizer.step()
    step_bytes = optimizer.state[weight]["step"].untyped_storage().nbytes()
    moment_bytes = 512 * 512 + 512 * 512 // BLOCK_SIZE * 4 + 256 * 4
    assert lo.optimizer_state_bytes(optimizer) == 2 * moment_bytes + step_bytes


def train(model, optimizer, inputs, targets, steps):
    for _ in range(steps):
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("name", ["adamw", "galore", "fira", "frugal", "dct"])
def test_8bit_state_resumes_bit_identically_from_a_checkpoint(name, tmp_path):
    make = lambda model: lo.build_optimizer(  # noqa: E731
        name, model, lr=1e-2, weight_decay=0.01, state_bits=8, **({} if name == "adamw" else
                                                                   {"rank": 16, "update_proj_gap": 3}))
    model, inputs, targets = regression()
    optimizer = make(model)
    train(model, optimizer, inputs, targets, steps=4)  # crosses a refresh (steps 0 and 3)
    save_checkpoint(tmp_path / "checkpoint.safetensors", {"model": model.state_dict(),
                                                          "optimizer": optimizer.state_dict()})
    train(model, optimizer, inputs, targets, steps=4)
    saved = load_checkpoint(tmp_path / "checkpoint.safetensors")
    resumed, _, _ = regression(seed=1)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = make(resumed)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    train(resumed, resumed_optimizer, inputs, targets, steps=4)
    for (key, want), got in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(want, got), key
    states = list(optimizer.state.values())
    assert any("exp_avg_codes" in state for state in states)  # something was 8-bit
    for state, resumed_state in zip(states, resumed_optimizer.state.values(), strict=True):
        assert state.keys() == resumed_state.keys()
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == resumed_state[key].dtype and torch.equal(value, resumed_state[key]), key


def test_build_optimizer_state_bits():
    model, _, _ = regression()
    assert type(lo.build_optimizer("adamw", model, lr=1e-3)) is torch.optim.AdamW  # 32: as before
    assert type(lo.build_optimizer("adamw", model, lr=1e-3, state_bits=8)) is lo.AdamW8bit
    galore = lo.build_optimizer("galore", model, lr=1e-3, rank=4, state_bits=8)
    assert {group["state_bits"] for group in galore.param_groups} == {8}


def test_reset_inner_state_forgets_8bit_moments():
    weight = nn.Parameter(torch.randn(64, 64))
    optimizer = lo.AdamW8bit([weight])
    weight.grad = torch.randn(64, 64)
    optimizer.step()
    state = optimizer.state[weight]
    assert {"exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes", "exp_avg_sq_scales"} <= state.keys()
    lo.LowRankOptimizer.reset_inner_state(state)
    assert set(state) == {"step"}


def test_bad_8bit_input_raises():
    weight = nn.Parameter(torch.zeros(64, 64))
    model, _, _ = regression()
    with pytest.raises(ValueError, match=r"state_bits=16 is not one of \(32, 8\)"):
        lo.GaLoreAdamW([{"params": [weight], "state_bits": 16}])
    with pytest.raises(ValueError, match=r"state_bits=True is not one of"):
        lo.FiraAdamW([{"params": [weight], "rank": 2, "state_bits": True}])
    with pytest.raises(ValueError, match=r"state_bits=4 is not one of"):
        lo.build_optimizer("adamw", model, lr=1e-3, state_bits=4)
    with pytest.raises(ValueError, match=r"optimizer='sgd' keeps no Adam moments to quantize, got state_bits=8"):
        lo.build_optimizer("sgd", model, lr=1e-3, state_bits=8)
    with pytest.raises(ValueError, match=r"AdamW8bit got a group with rank=4; it takes plain groups only"):
        lo.AdamW8bit([{"params": [weight], "rank": 4}])
    with pytest.raises(ValueError, match=r"shape=\(10, 10\) has 100 values, not a multiple of the block size 256"):
        QuantizedState.zeros((10, 10), signed=True)
    with pytest.raises(ValueError, match=r"512 codes need 2 scales \(one per 256 values\), got 3"):
        QuantizedState(torch.zeros(512, dtype=torch.uint8), torch.zeros(3), signed=True)
    with pytest.raises(ValueError, match=r"codes must be uint8 and scales a 1-D float32 tensor, got torch.float32"):
        QuantizedState(torch.zeros(512), torch.zeros(2), signed=True)
    with pytest.raises(ValueError, match=r"values of shape \(256,\) cannot go into a state of shape \(2, 256\)"):
        QuantizedState.zeros((2, 256), signed=False).copy_(torch.zeros(256))


def test_chunked_updates_equal_one_pass(monkeypatch):
    """8-bit moments are updated a chunk of blocks at a time (bounded temporaries): the same bits as one pass."""
    import leantrain.optim.base as base

    results = []
    for chunk in (3, 10**9):  # 3 blocks a chunk (with a partial last chunk), and the whole tensor at once
        monkeypatch.setattr(base, "CHUNK_BLOCKS", chunk)
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(40, 256))
        optimizer = lo.AdamW8bit([weight], lr=1e-2)
        for _ in range(3):
            weight.grad = torch.randn_like(weight)
            optimizer.step()
        results.append((weight.detach().clone(), {k: v.clone() for k, v in optimizer.state[weight].items()
                                                  if isinstance(v, torch.Tensor)}))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in results[0][1])
