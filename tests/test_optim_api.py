"""All four optimizers: bit-identical resume, bad input, param_groups, state bytes on a tiny Llama."""

import io

import pytest
import torch
from optim_helpers import tiny_llama
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import leantrain.optim as lo

OPTIMIZERS = {
    "galore": (lo.GaLoreAdamW, {}),
    "fira": (lo.FiraAdamW, {}),
    "frugal-svd": (lo.FrugalAdamW, {}),
    "frugal-random": (lo.FrugalAdamW, {"subspace": "random"}),
    "frugal-randperm": (lo.FrugalAdamW, {"subspace": "randperm"}),
    "frugal-blocks": (lo.FrugalAdamW, {"subspace": "blocks", "density": 0.3}),
    "dct": (lo.DCTAdamW, {}),
}


def train(model, optimizer, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 64, (2, 12), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resumed_run_continues_bit_identically(name):
    cls, options = OPTIMIZERS[name]
    make = lambda model: cls(  # noqa: E731
        lo.param_groups(model, rank=4, update_proj_gap=3), lr=1e-2, weight_decay=0.01, **options
    )
    model = tiny_llama()
    optimizer = make(model)
    train(model, optimizer, steps=4, seed=1)  # crosses a refresh (steps 0 and 3)
    checkpoint = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
    train(model, optimizer, steps=4, seed=2)  # crosses the refresh at step 6

    checkpoint.seek(0)
    saved = torch.load(checkpoint, weights_only=True)
    resumed = tiny_llama(seed=123)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = make(resumed)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    train(resumed, resumed_optimizer, steps=4, seed=2)
    for (key, want), got in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(want, got), key
    assert lo.optimizer_state_bytes(optimizer) == lo.optimizer_state_bytes(resumed_optimizer)
    for state, resumed_state in zip(optimizer.state.values(), resumed_optimizer.state.values(), strict=True):
        for key, value in state.items():  # e.g. DCT's int32 indices stay integers (torch would cast them)
            assert getattr(value, "dtype", None) == getattr(resumed_state[key], "dtype", None), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_low_rank_optimizers_reduce_the_loss(name):
    cls, options = OPTIMIZERS[name]
    model = tiny_llama()
    optimizer = cls(lo.param_groups(model, rank=4, update_proj_gap=5), lr=1e-2, **options)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_state_is_smaller_than_adamw():
    model = tiny_llama()
    groups = lo.param_groups(model, rank=4)
    adamw = torch.optim.AdamW(model.parameters())
    galore = lo.GaLoreAdamW(groups)
    train(model, adamw, 1, 0)
    train(model, galore, 1, 0)
    low_rank_numel = sum(p.numel() for p in groups[1]["params"])
    assert lo.optimizer_state_bytes(adamw) - lo.optimizer_state_bytes(galore) > 0.5 * 2 * 4 * low_rank_numel


@pytest.mark.parametrize("cls", [lo.GaLoreAdamW, lo.FiraAdamW, lo.FrugalAdamW, lo.DCTAdamW])
@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"rank": 0}, "rank=0 must be a positive integer"),
        ({"rank": -3}, "rank=-3 must be a positive integer"),
        ({"rank": 2.5}, "rank=2.5 must be a positive integer"),
        ({"rank": 7}, r"rank=7 is larger than the side of a \(6, 10\) weight .* use rank <= 6"),
        ({"rank": 2, "update_proj_gap": 0}, "update_proj_gap=0 must be a positive integer"),
        ({"rank": 2, "update_proj_gap": -1}, "update_proj_gap=-1 must be a positive integer"),
        ({"rank": 2, "scale": 0}, "scale=0 must be a positive number"),
        ({"rank": 2, "proj_type": "full"}, "proj_type='full' is not one of"),
    ],
)
def test_bad_low_rank_groups_raise(cls, group, message):
    with pytest.raises(ValueError, match=message):
        cls([{"params": [nn.Parameter(torch.zeros(6, 10))], **group}])


@pytest.mark.parametrize("cls", [lo.GaLoreAdamW, lo.FiraAdamW, lo.FrugalAdamW, lo.DCTAdamW])
@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_non_2d_parameter_in_a_low_rank_group_raises(cls, shape):
    with pytest.raises(ValueError, match=rf"got a {len(shape)}-D parameter of shape .*only 2-D weights"):
        cls([{"params": [nn.Parameter(torch.zeros(*shape))], "rank": 1}])


def test_bad_optimizer_options_raise():
    weight = nn.Parameter(torch.zeros(6, 10))
    with pytest.raises(ValueError, match="lr=-1"):
        lo.GaLoreAdamW([weight], lr=-1)
    with pytest.raises(ValueError, match=r"betas=\(0.9, 1.0\)"):
        lo.GaLoreAdamW([weight], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"limiter=0\.5 must be a number >= 1"):
        lo.FiraAdamW([{"params": [weight], "rank": 2}], limiter=0.5)
    with pytest.raises(ValueError, match="residual='both' is not one of"):
        lo.FiraAdamW([{"params": [weight], "rank": 2}], residual="both")
    with pytest.raises(ValueError, match="subspace='qr' is not one of"):
        lo.FrugalAdamW([{"params": [weight], "rank": 2, "subspace": "qr"}])
    with pytest.raises(ValueError, match=r"density=1\.5 must be a fraction"):
        lo.FrugalAdamW([{"params": [weight], "rank": 2, "subspace": "blocks", "density": 1.5}])
    lo.FrugalAdamW([{"params": [weight], "rank": 99, "subspace": "blocks"}])  # rank is unused by blocks


def test_param_groups_split_a_llama():
    model = tiny_llama()
    plain, low_rank = lo.param_groups(model, rank=8, scale=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    low_rank_names = sorted(names[id(p)] for p in low_rank["params"])
    assert low_rank["rank"] == 8 and low_rank["scale"] == 0.5
    assert len(low_rank_names) == 2 * 7 and all(n.endswith("proj.weight") for n in low_rank_names)
    plain_names = {names[id(p)] for p in plain["params"]}
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= plain_names
    assert len(plain_names) + len(low_rank_names) == len(list(model.parameters()))


def test_param_groups_on_gpt2_conv1d_with_a_tied_head_and_patterns():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16))
    _, low_rank = lo.param_groups(model, rank=4)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in low_rank["params"]) == sorted(
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    _, attention = lo.param_groups(model, rank=4, targets=["c_attn", r"transformer\.h\.1\.mlp\.c_fc"])
    assert sorted(names[id(p)] for p in attention["params"]) == [
        "transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank=0 must be a positive integer"),
        ({"rank": 4, "targets": "everything"}, "targets='everything' is not a preset"),
        ({"rank": 4, "targets": ["nope"]}, r"targets=\['nope'\] matched no linear layer"),
        ({"rank": 4, "targets": ["("]}, "not a valid regular expression"),
    ],
)
def test_param_groups_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lo.param_groups(tiny_llama(), **kwargs)
    with pytest.raises(ValueError, match=r"must be a torch\.nn\.Module"):
        lo.param_groups("model", rank=4)


def test_state_bytes_count_shared_storage_once():
    weight = nn.Parameter(torch.zeros(4, 4))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    buffer = torch.zeros(16)
    optimizer.state[weight] = {"a": buffer, "b": buffer[:8], "step": 3, "nested": [buffer.view(4, 4)]}
    assert lo.optimizer_state_bytes(optimizer) == 16 * 4


def test_all_linear_keeps_a_classification_head_in_the_plain_group():
    from transformers import BertConfig, BertForSequenceClassification

    from leantrain.optim import param_groups

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=3))
    plain, low_rank = param_groups(model, rank=4)
    assert any(p is model.classifier.weight for p in plain["params"])
    assert not any(p is model.classifier.weight for p in low_rank["params"])


def test_build_optimizer_leaves_unset_low_rank_options_to_each_optimizer():
    model = tiny_llama()
    gaps = {name: {g["update_proj_gap"] for g in lo.build_optimizer(name, model, lr=1e-3, rank=4).param_groups}
            for name in ("dct", "galore")}
    assert gaps == {"dct": {1}, "galore": {200}}  # the classes' own defaults, not one factory default
    dct = lo.build_optimizer("dct", model, lr=1e-3, rank=4, update_proj_gap=7, scale=0.5)
    assert {(g["update_proj_gap"], g["scale"]) for g in dct.param_groups if "rank" in g} == {(7, 0.5)}


def test_build_optimizer_refuses_options_the_optimizer_does_not_take():
    with pytest.raises(ValueError, match="optimizer='adamw' takes no low-rank option, got update_proj_gap"):
        lo.build_optimizer("adamw", tiny_llama(), lr=1e-3, update_proj_gap=5)
    with pytest.raises(ValueError, match="optimizer='galore' does not take limiter; it takes update_proj_gap"):
        lo.build_optimizer("galore", tiny_llama(), lr=1e-3, rank=4, limiter=1.1)
