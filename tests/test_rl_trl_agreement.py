"""leantrain.rl.policy_loss gives TRL's GRPO loss, gradient and clip/KL metrics on one fixed batch.

The reference is ``GRPOTrainer._compute_loss`` of trl 1.16.0 (installed as a test reference, see the
Makefile), called directly on a hand-built batch for a tiny random Llama on CPU. TRL computes the
policy's token log-probs inside ``_compute_loss`` with its fused LM head. leantrain's side gets them
two ways:

- ``log_softmax`` of the same model's logits (temperature 1), independent of TRL. TRL's fused kernel
  accumulates its log-sum-exp in float32 and returns float32 log-probs whatever the model's dtype, so
  the two differ by ~1e-7 relative (measured <= 2e-7 on this batch, in float32 and float64): rtol 1e-5.
- TRL's own log-probs (``_get_per_token_logps_and_entropies``), fed to both sides as one leaf tensor, so
  the loss maths alone is compared, with its gradient with respect to the log-probs (TRL's kernel also
  casts the incoming gradient to float32, which would blur a parameter-gradient comparison to ~1e-7):
  rtol 1e-12 in float64 (op-order rounding only), 1e-6 in float32.
"""

from __future__ import annotations

import pytest
import torch
import trl  # a test reference: imported at the top so a missing trl fails loudly, never skips
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from leantrain.rl import PolicyLoss, policy_loss

VOCAB, PAD, EOS = 32, 1, 2
PROMPT = torch.tensor([[5, 6, 7], [PAD, 8, 9], [10, 11, 12], [PAD, PAD, 13]])
PROMPT_MASK = (PROMPT != PAD).long()
COMPLETION_LENGTHS = [6, 4, 2, 5]  # ragged: each row is right-padded to the longest
MAX_COMPLETION_LENGTH = 8  # larger than the longest completion, so dr_grpo's constant normaliser shows
ADVANTAGES = [1.2, -0.7, 0.4, -1.1]
OTHER_MICRO_BATCH_TOKENS = 13  # "dapo" with accumulation: tokens of the window's other micro-batch

CASES = {  # name: GRPOConfig settings (plus leantrain's gradient_accumulation_steps as "accumulation")
    "grpo": {"loss_type": "grpo"},
    "bnpo": {"loss_type": "bnpo"},
    "dr_grpo": {"loss_type": "dr_grpo"},
    "dapo": {"loss_type": "dapo"},
    "dapo-kl-reference": {"loss_type": "dapo", "beta": 0.04},  # TRL's default: the KL term times the ratio
    "grpo-kl-reference-plain-k3": {"loss_type": "grpo", "beta": 0.1, "use_bias_correction_kl": False},
    "bnpo-clip-higher": {"loss_type": "bnpo", "epsilon": 0.1, "epsilon_high": 0.28},
    "dr_grpo-accumulation": {"loss_type": "dr_grpo", "accumulation": 2},
    "dapo-accumulation-clip-higher": {"loss_type": "dapo", "accumulation": 2, "epsilon_high": 0.3},
}


def tokenizer() -> PreTrainedTokenizerFast:
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", pad_token=f"t{PAD}",
                                   eos_token=f"t{EOS}", padding_side="left")


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama saved to disk: TRL builds its reference model (beta > 0) from the policy's path."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         pad_token_id=PAD, eos_token_id=EOS, bos_token_id=3)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def trl_trainer(path: str, out: str, dtype: torch.dtype, settings: dict) -> trl.GRPOTrainer:
    settings = dict(settings)
    accumulation = settings.pop("accumulation", 1)
    model = LlamaForCausalLM.from_pretrained(path).to(dtype)
    args = trl.GRPOConfig(output_dir=out, use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=4,
                          num_generations=2, max_completion_length=MAX_COMPLETION_LENGTH,
                          gradient_accumulation_steps=accumulation, activation_checkpointing=False, **settings)
    dataset = Dataset.from_dict({"prompt": ["t5 t6 t7", "t8 t9"]})
    trainer = trl.GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=args, train_dataset=dataset, processing_class=tokenizer())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = accumulation  # set by Trainer's loop, which we do not run
    return trainer


def leantrain_logprobs(model: torch.nn.Module, prompt: torch.Tensor, prompt_mask: torch.Tensor,
                       completion: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Token log-probs of the completion: log_softmax of the logits one position earlier."""
    ids = torch.cat([prompt, completion], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, completion_mask], dim=1)).logits
    logits = logits[:, prompt.size(1) - 1:-1]
    return torch.log_softmax(logits, dim=-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)


def fixed_batch(model: torch.nn.Module, dtype: torch.dtype, with_reference: bool) -> dict[str, torch.Tensor]:
    """Completions, advantages, and old / reference log-probs a little away from the policy's, so that
    ratios fall on both sides of the clip range."""
    generator = torch.Generator().manual_seed(1)
    length = max(COMPLETION_LENGTHS)
    completion = torch.randint(3, VOCAB, (len(COMPLETION_LENGTHS), length), generator=generator)
    completion_mask = (torch.arange(length) < torch.tensor(COMPLETION_LENGTHS).unsqueeze(1)).long()
    completion = completion.masked_fill(completion_mask == 0, PAD)
    with torch.no_grad():
        current = leantrain_logprobs(model, PROMPT, PROMPT_MASK, completion, completion_mask)
    noise = torch.randn(2, *current.shape, generator=generator, dtype=torch.float64).to(dtype)
    batch = {"prompt_ids": PROMPT, "prompt_mask": PROMPT_MASK, "completion_ids": completion,
             "completion_mask": completion_mask, "advantages": torch.tensor(ADVANTAGES, dtype=dtype),
             "old_per_token_logps": current + 0.3 * noise[0]}
    if with_reference:
        batch["ref_per_token_logps"] = current + 0.5 * noise[1]
    return batch


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def prepared(path: str, out: str, name: str, dtype: torch.dtype) -> tuple[trl.GRPOTrainer, dict]:
    """TRL's trainer for case ``name`` and the fixed batch, with TRL's ``num_items_in_batch``."""
    settings = CASES[name]
    trainer = trl_trainer(path, out, dtype, settings)
    batch = fixed_batch(trainer.model, dtype, with_reference=settings.get("beta", 0.0) > 0)
    batch["num_items_in_batch"] = batch["completion_mask"].sum() + (
        OTHER_MICRO_BATCH_TOKENS if settings.get("accumulation", 1) > 1 else 0)
    return trainer, batch


def leantrain_loss(name: str, logprobs: torch.Tensor, batch: dict) -> PolicyLoss:
    """leantrain's loss for case ``name``, its settings spelled in leantrain's names."""
    settings = CASES[name]
    loss_type = settings["loss_type"]
    return policy_loss(logprobs, batch["old_per_token_logps"], batch["advantages"], batch["completion_mask"],
                       epsilon_low=settings.get("epsilon", 0.2), epsilon_high=settings.get("epsilon_high"),
                       beta=settings.get("beta", 0.0), ref_logprobs=batch.get("ref_per_token_logps"),
                       kl_bias_correction=settings.get("use_bias_correction_kl"), loss_type=loss_type,
                       max_completion_length=MAX_COMPLETION_LENGTH if loss_type == "dr_grpo" else None,
                       num_items_in_batch=batch["num_items_in_batch"] if loss_type == "dapo" else None,
                       gradient_accumulation_steps=settings.get("accumulation", 1))


def assert_same_metrics(ours: PolicyLoss, trainer: trl.GRPOTrainer, rtol: float) -> None:
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    # clip fractions are counts over the same 17 active tokens; TRL logs them as Python floats
    assert ours.clip_low.item() == pytest.approx(metrics["clip_ratio/low_mean"], rel=1e-6)
    assert ours.clip_high.item() == pytest.approx(metrics["clip_ratio/high_mean"], rel=1e-6)
    assert ours.clip_region.item() == pytest.approx(metrics["clip_ratio/region_mean"], rel=1e-6)
    if trainer.beta > 0:
        assert ours.kl.item() == pytest.approx(metrics["kl"], rel=rtol)
    else:
        assert ours.kl is None and "kl" not in metrics
    # the batch exercises both clip branches (otherwise the agreement would say little)
    assert ours.clip_low.item() > 0 and ours.clip_high.item() > 0


def assert_close_gradients(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], rtol: float) -> None:
    assert ours.keys() == theirs.keys() and len(ours) > 0
    largest = max(g.abs().max().item() for g in theirs.values())
    for key, grad in theirs.items():  # atol relative to the largest entry: some entries are ~0
        torch.testing.assert_close(ours[key], grad, rtol=rtol, atol=rtol * largest,
                                   msg=lambda message, key=key: f"{key}: {message}")


def test_trl_version() -> None:
    assert trl.__version__ == "1.16.0", "these semantics were read from trl 1.16.0; re-read its _compute_loss"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_policy_loss_matches_trl_independent_logprobs(policy_path: str, tmp_path, name: str,
                                                      dtype: torch.dtype) -> None:
    """Loss, parameter gradients and metrics, leantrain's log-probs from log_softmax of the logits."""
    trainer, batch = prepared(policy_path, str(tmp_path), name, dtype)
    model = trainer.model
    trl_loss = trainer._compute_loss(model, batch)
    trl_grads = gradients(model, trl_loss)

    logprobs = leantrain_logprobs(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                  batch["completion_mask"])
    ours = leantrain_loss(name, logprobs, batch)
    our_grads = gradients(model, ours.loss)

    torch.testing.assert_close(ours.loss.detach(), trl_loss.detach(), rtol=1e-5, atol=0.0)
    assert_close_gradients(our_grads, trl_grads, rtol=1e-5)
    assert_same_metrics(ours, trainer, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_policy_loss_matches_trl_same_logprobs(policy_path: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                               name: str, dtype: torch.dtype) -> None:
    """Loss, its gradient with respect to the token log-probs, and metrics, both sides fed TRL's own
    log-probs as a leaf tensor: the loss maths alone, free of TRL's float32 kernel."""
    trainer, batch = prepared(policy_path, str(tmp_path), name, dtype)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    length = batch["completion_ids"].size(1)
    with torch.no_grad():
        logprobs = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, length)[0]
    logprobs = logprobs.to(dtype)  # TRL's kernel returns float32 even for a float64 model
    theirs, mine = logprobs.clone().requires_grad_(), logprobs.clone().requires_grad_()
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies",
                        lambda *args, **kwargs: (theirs, torch.zeros_like(theirs), None))
    trl_loss = trainer._compute_loss(trainer.model, batch)
    (trl_grad,) = torch.autograd.grad(trl_loss, theirs)
    ours = leantrain_loss(name, mine, batch)
    (our_grad,) = torch.autograd.grad(ours.loss, mine)

    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours.loss.detach(), trl_loss.detach(), rtol=rtol, atol=0.0)
    torch.testing.assert_close(our_grad, trl_grad, rtol=rtol, atol=rtol * trl_grad.abs().max().item())
    assert_same_metrics(ours, trainer, rtol=rtol)
