"""One RL training step of SmolLM2-135M-Instruct at the RL benchmark's batch: stock (full fine-tuning) vs
LoRA vs WTA-CRS@0.3 + lean (full and + LoRA) vs layer checkpointing with 8-bit states and the step in
backward (full and + LoRA), measured side by side; and the generation speed of the rollout engine
(``generate_rollouts``: each prompt prefilled once, ended rows dropped) vs ``model.generate`` on the same rows.

The batch is built once and every configuration trains on the same tensors: ``--prompts`` chain_sum
prompts of the built-in "arithmetic" problems (drawn in equal shares from its two strata) through the
chat template, ``--rollouts`` completions each of up to ``--new-tokens`` tokens sampled at T = 1 from the
stock model (seeded), advantages from seeded N(0, 1) rewards (every group has a learning signal; the
values do not change the step's memory or time), ``rollout_batch``, saved to a temp file.

One step: forward + backward of the recipe's loss ``RLLoss(LossSettings())`` (DAPO token mean, token
log-probs through the chunked head that never holds the B×L×V logits) over the whole batch, or in
micro-batches of at most ``--micro-tokens`` tokens weighted by their share of the rows, as the engine splits and
accumulates them (``data.micro_batches.local_micro_batches``), then
the configuration's optimizer section (AdamW, lr 1e-6; 8-bit moments; stepping inside backward) over the
trainable parameters and ``zero_grad``. The model is fp32 with
eager attention (``leantrain.recipes.causal_lm.load_causal_lm``'s loading). LoRA: rank 16, alpha 16, no
dropout, on every linear layer but the (tied) LM head, as the recipes' LoRA (``MemoryOptions(lora=16)``).

Memory: each configuration's first step in a fresh subprocess (``leantrain.memory.peak``): the peak RSS
of the step above the RSS just before it (gradients, AdamW states and activations, which the first
step allocates), and the total, that plus the weights (as benchmarks/hyperfit.py reports it). Time:
median of ``--repeats`` steps after one warm-up step, each configuration in a fresh subprocess of its
own, one after another (all four in one process outgrow a 24 GiB machine at this batch). Generation:
the generators' calls interleaved after a warm-up call each (benchmarks/timing.py), the same seed on
every call; ``--generation-batch`` rows at once; SDPA attention (transformers' default) unless a generator
says eager; each generator's memory is the peak RSS of one call above its loaded model, in a fresh
subprocess. The bf16 generators run only where bf16 products are native.

Run:  .venv/bin/python benchmarks/rl_step.py [--prompts 8 --rollouts 8 --new-tokens 32 --repeats 3]
      [--micro-tokens 1024] [--chunk-rows 128] [--only memory time generation] [--generation-batch 64]
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing
import queue
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from timing import interleaved_medians
from torch import Tensor, nn

from leantrain.config import MemoryOptions, OptimConfig
from leantrain.data.micro_batches import local_micro_batches
from leantrain.data.problems import load_problems
from leantrain.fp32_matmuls import bf16_matmul_is_native
from leantrain.lean.token_logprobs import LOGITS_BYTES
from leantrain.memory.allocator import fix_mmap_threshold, trim_heap
from leantrain.memory.peak import cpu_peak_in_subprocess, proc_status_kib
from leantrain.optim.in_backward import StepInBackward
from leantrain.plan.planner import states_after_a_step
from leantrain.recipes.causal_lm import model_folder
from leantrain.rl.advantages import group_advantages
from leantrain.rl.rollouts import Rollouts, encode_prompts, generate_rollouts
from leantrain.rl.training_loss import LossSettings, RLLoss, rollout_batch
from leantrain.sampling import SamplingConfig

MIB = 2**20
LR = 1e-6
SAMPLING = SamplingConfig.from_spec("wtacrs@0.3")
ADAMW = OptimConfig(lr=LR)
LEANEST = OptimConfig(lr=LR, state_bits=8, step_in_backward=True)
# Each configuration's memory and optimizer sections, as the recipes apply them (LoRA on every linear layer
# but the head, no dropout; then sampling; then checkpointing; then lean).
CONFIGS: dict[str, tuple[MemoryOptions, OptimConfig]] = {
    "stock (full fine-tuning)": (MemoryOptions(), ADAMW),
    "LoRA r16": (MemoryOptions(lora=16), ADAMW),
    "WTA-CRS@0.3 + lean": (MemoryOptions(sampling=SAMPLING, lean=True), ADAMW),
    "WTA-CRS@0.3 + lean + LoRA r16": (MemoryOptions(lora=16, sampling=SAMPLING, lean=True), ADAMW),
    "checkpointing + 8-bit states": (MemoryOptions(checkpointing="layers"), OptimConfig(lr=LR, state_bits=8)),
    "checkpointing + 8-bit + step in backward": (MemoryOptions(checkpointing="layers"), LEANEST),
    "checkpointing + 8-bit + step in backward + LoRA r16": (MemoryOptions(lora=16, checkpointing="layers"), LEANEST),
}
# name -> (engine, dtype, attention) of generate_rollouts; the baseline, model.generate on the fp32 weights, first.
# SDPA is transformers' default; model.generate in bf16 also with eager attention, where this CPU ran it faster.
GENERATORS = {"model.generate, fp32": ("hf", "fp32", "sdpa"), "model.generate, bf16": ("hf", "bf16", "sdpa"),
              "model.generate, bf16, eager attention": ("hf", "bf16", "eager"),
              "rollout engine, fp32": ("leantrain", "fp32", "sdpa"),
              "rollout engine, bf16": ("leantrain", "bf16", "sdpa")}


def load_policy(folder: str | Path) -> nn.Module:
    """The causal LM of an HF folder in fp32 with eager attention, as the recipes load it, its weights
    copied into the process's own memory: ``from_pretrained`` leaves them mapped from the safetensors
    file, paged in (and counted in the RSS) only when first read, which would be inside the measured step."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():  # tied weights are one parameter: they stay tied
            parameter.data = parameter.data.clone()
    return model


def benchmark_prompts(tokenizer, count: int, seed: int) -> list[list[int]]:
    """Token ids of ``count`` arithmetic (chain_sum) prompts through the chat template, in equal shares
    from the problems' two strata."""
    problems = load_problems("arithmetic", size=max(count, 64), seed=seed)
    _, chosen = problems.split(count, seed)
    return encode_prompts(tokenizer, chosen.prompts)


def seeded_rollouts(model: nn.Module, prompt_ids: list[list[int]], rollouts_per_prompt: int, new_tokens: int,
                    seed: int) -> Rollouts:
    """``rollouts_per_prompt`` completions of each prompt sampled at T = 1, all rows in one chunk."""
    torch.manual_seed(seed)
    return generate_rollouts(model, prompt_ids, [rollouts_per_prompt] * len(prompt_ids), max_new_tokens=new_tokens,
                             temperature=1.0, batch_size=rollouts_per_prompt * len(prompt_ids))


def generator_model(model: nn.Module, name: str) -> nn.Module:
    """What generator ``name`` is handed: ``model`` (fp32, eager) with its attention; a 16-bit eager generator gets
    its bf16 model here, since ``generation_model`` would give its 16-bit copy SDPA."""
    _, dtype, attention = GENERATORS[name]
    model = copy.deepcopy(model)
    model.set_attn_implementation(attention)
    return model.to(torch.bfloat16) if attention == "eager" and dtype == "bf16" else model


def generate_with(model: nn.Module, name: str, prompt_ids: list[list[int]], rollouts_per_prompt: int,
                  new_tokens: int, seed: int, batch_size: int) -> Rollouts:
    """Generator ``name``'s rollouts on ``model`` (``generator_model``'s): T = 1, the RNG seeded with ``seed``."""
    engine, dtype, _ = GENERATORS[name]
    torch.manual_seed(seed)
    return generate_rollouts(model, prompt_ids, [rollouts_per_prompt] * len(prompt_ids), max_new_tokens=new_tokens,
                             temperature=1.0, batch_size=batch_size, engine=engine, dtype=dtype)


def generation_speed(model: nn.Module, prompt_ids: list[list[int]], rollouts_per_prompt: int, new_tokens: int,
                     repeats: int, seed: int, batch_size: int) -> tuple[dict[str, float], dict[str, int]]:
    """Generated tokens per second (EOS included, padding not) of each generator of ``GENERATORS`` on the same
    rows (``generate_rollouts`` with that engine and dtype, ``batch_size`` rows at once), sampling at T = 1 with
    the same seed on every call: (median tokens/s, tokens per call)."""
    tokens: dict[str, int] = {}
    models = {name: generator_model(model, name) for name in generators()}

    def run(name: str) -> float:
        start = time.perf_counter()
        rollouts = generate_with(models[name], name, prompt_ids, rollouts_per_prompt, new_tokens, seed, batch_size)
        seconds = time.perf_counter() - start
        tokens[name] = int(rollouts.completion_lengths.sum())
        return tokens[name] / seconds

    speeds = interleaved_medians(run, list(models), repeats)  # medians of tokens/s, not of seconds
    return speeds, tokens


def _generation_peak(folder: str, name: str, prompt_ids: list[list[int]], rollouts_per_prompt: int,
                     new_tokens: int, seed: int, batch_size: int, results) -> None:
    try:
        fix_mmap_threshold()  # RSS follows the live bytes, as in the training steps' peak subprocess
        model = generator_model(load_policy(folder), name)
        gc.collect()
        trim_heap()
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts here
        before = proc_status_kib("VmRSS")
        generate_with(model, name, prompt_ids, rollouts_per_prompt, new_tokens, seed, batch_size)
        results.put((proc_status_kib("VmHWM") - before) * 1024)
    except BaseException as error:  # report any failure to the parent instead of dying silently
        results.put(f"{type(error).__name__}: {error}")


def generation_peaks(folder: str, prompt_ids: list[list[int]], rollouts_per_prompt: int, new_tokens: int,
                     seed: int, batch_size: int) -> dict[str, int]:
    """Per generator: the peak RSS of one call above the RSS with its model loaded (the KV cache, the logits,
    a 16-bit copy), each in a fresh subprocess."""
    return {name: in_subprocess(_generation_peak, folder, name, prompt_ids, rollouts_per_prompt, new_tokens, seed,
                                batch_size) for name in generators()}


def generators() -> dict[str, tuple[str, str, str]]:
    """The generators measured: both engines in fp32, and in bf16 where bf16 products are native here (on a
    CPU without bf16 units a bf16 product runs in fp32 copies, fp32_matmuls.py: slower, not faster)."""
    return {name: spec for name, spec in GENERATORS.items() if spec[1] == "fp32" or bf16_matmul_is_native("cpu")}


def rl_batch(rollouts: Rollouts, seed: int) -> dict[str, Tensor]:
    """The engine's batch of one update of ``rollouts``, with advantages of seeded N(0, 1) rewards."""
    rewards = torch.randn(len(rollouts), generator=torch.Generator().manual_seed(seed))
    advantages = group_advantages(rewards, rollouts.group).values
    return rollout_batch(rollouts.training_inputs(), advantages)


class RLStep(nn.Module):
    """The RL recipe's loss as a module, so that leantrain's memory tools run it as a training step:
    ``forward(**batch)`` is ``RLLoss(LossSettings(chunk_rows=...))`` of ``policy`` (None: the settings'
    default) over the batch, or over the engine's micro-batches of at most ``micro_tokens`` tokens, each weighted
    by its share of the rows. Backward of every micro-batch but the last runs inside ``forward``; the last one's
    weighted loss is returned for the caller's ``backward``, and ``total`` is the whole batch's loss."""

    def __init__(self, policy: nn.Module, micro_tokens: int | None = None, chunk_rows: int | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.micro_tokens = micro_tokens
        self.loss = RLLoss(LossSettings(chunk_rows=chunk_rows))
        self.total = float("nan")

    def forward(self, **batch: Tensor) -> Tensor:
        micros = local_micro_batches(batch, 0, 1, 1, self.micro_tokens)
        total = 0.0
        for index, (micro, weight) in enumerate(micros):
            loss = self.loss(self.policy, micro) * weight
            total += float(loss.detach())
            if index < len(micros) - 1:
                loss.backward()
        self.total = total
        return loss


@dataclass(frozen=True)
class RLStepSpec:
    """Picklable builder of one configuration's ``(RLStep, batch, optimizer)``: the policy from ``folder``
    converted by ``parts``' memory section, in training mode, its optimizer section built over it (its hooks
    registered when it steps in backward), and the batch saved at ``batch_path``."""

    folder: str
    batch_path: str
    parts: tuple[MemoryOptions, OptimConfig] = (MemoryOptions(), ADAMW)
    micro_tokens: int | None = None
    chunk_rows: int | None = None

    def __call__(self) -> tuple[RLStep, dict[str, Tensor], torch.optim.Optimizer]:
        memory, optim = self.parts
        policy = load_policy(self.folder)
        memory.apply(policy)
        policy.train()
        step = RLStep(policy, self.micro_tokens, self.chunk_rows)
        optimizer = optim.build(policy)
        if optim.step_in_backward:
            StepInBackward(policy, optimizer)  # each parameter updated in backward; step() then finds no gradient
        return step, torch.load(self.batch_path), optimizer


def rl_training_step(step: RLStep, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> float:
    """Forward + backward of the batch's RL loss, the AdamW step and ``zero_grad``; returns the loss."""
    with torch.enable_grad():
        step(**batch).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step.total


def timed_rl_step(step: RLStep, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    rl_training_step(step, batch, optimizer)
    return time.perf_counter() - start


def memory_rows(specs: dict[str, RLStepSpec]) -> dict[str, dict[str, float]]:
    """Per configuration: the measured peak of its first step above the pre-step RSS, the weights, the
    accounted weights + gradients (one parameter's under the step in backward) + optimizer states, and
    trainable parameters."""
    rows = {}
    for name, spec in specs.items():
        step, _, _ = spec()
        trainable = [p for p in step.policy.parameters() if p.requires_grad]
        weights = sum(p.numel() * p.element_size() for p in step.policy.parameters())
        sizes = [p.numel() * p.element_size() for p in trainable]
        gradients = max(sizes) if spec.parts[1].step_in_backward else sum(sizes)
        state = weights + gradients + states_after_a_step(step.policy, spec.parts[1])
        del step
        peak = cpu_peak_in_subprocess(spec)
        rows[name] = {"step": peak.step_bytes, "weights": weights, "trainable": sum(p.numel() for p in trainable),
                      "state": state, "total": peak.step_bytes + weights}
        print(f"  {name}: step peak {peak.step_bytes / MIB:.0f} MiB", file=sys.stderr, flush=True)
    return rows


def memory_table(rows: dict[str, dict[str, float]]) -> str:
    base = next(iter(rows.values()))
    lines = ["| configuration | trainable params | weights + grads + optimizer states (accounted) | step peak above "
             "pre-step | vs stock | total: weights + step peak | vs stock |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['trainable'] / 1e6:.2f} M | {row['state'] / MIB:,.0f} MiB | "
                     f"{row['step'] / MIB:,.0f} MiB | {base['step'] / row['step']:.2f}x less | "
                     f"{row['total'] / MIB:,.0f} MiB | {base['total'] / row['total']:.2f}x less |")
    return "\n".join(lines)


def _time_steps(spec: RLStepSpec, repeats: int, results) -> None:
    try:
        # glibc's fixed mmap threshold, as in the peak subprocess: freed activations go back to the OS instead
        # of piling up in a fragmented heap (the stock step's RSS grew past 12 GiB on its second step without)
        if not fix_mmap_threshold():
            raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed")
        step = spec()
        timed_rl_step(*step)  # warm-up
        results.put([timed_rl_step(*step) for _ in range(repeats)])
    except BaseException as error:  # report any failure to the parent instead of dying silently
        results.put(f"{type(error).__name__}: {error}")


def in_subprocess(target, *args):
    """What ``target(*args, results)`` puts on ``results``, run in a fresh (spawned) process: one configuration in
    memory at a time (all four training steps at this batch outgrow a 24 GiB machine). A string is its error."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    while True:
        try:
            result = results.get(timeout=5)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"{target.__name__} subprocess died (exit code {process.exitcode})") from None
    process.join()
    if isinstance(result, str):
        raise RuntimeError(f"{target.__name__} subprocess failed: {result}")
    return result


def time_table(specs: dict[str, RLStepSpec], repeats: int) -> str:
    medians = {}
    for name, spec in specs.items():
        times = in_subprocess(_time_steps, spec, repeats)  # seconds of steps after a warm-up
        medians[name] = statistics.median(times)
        print(f"  {name}: steps of {', '.join(f'{t:.1f}' for t in times)} s", file=sys.stderr, flush=True)
    base = next(iter(medians.values()))
    lines = [f"| configuration | step time (median of {repeats} after a warm-up) | vs stock |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.1f} s | {seconds / base:.2f}x |" for name, seconds in medians.items()]
    return "\n".join(lines)


def generation_table(speeds: dict[str, float], tokens: dict[str, int], peaks: dict[str, int], rows: int,
                     new_tokens: int, repeats: int) -> str:
    base = speeds["model.generate, fp32"]
    best_bf16 = max((speed for name, speed in speeds.items() if name.startswith("model.generate, bf16")), default=None)
    lines = [f"| generator ({rows} rows, max {new_tokens} new tokens, T = 1) | generated tokens per call | "
             f"tokens/s (median of {repeats}) | vs model.generate fp32 | vs the faster model.generate bf16 | "
             "peak above the loaded model |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {tokens[name]} | {speeds[name]:.1f} | {speeds[name] / base:.2f}x | "
              f"{f'{speeds[name] / best_bf16:.2f}x' if best_bf16 else '-'} | {peaks[name] / MIB:,.0f} MiB |"
              for name in speeds]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help='"smollm2" or an HF model folder')
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=8, help="completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-tokens", type=int, default=None,
                        help="tokens per micro-batch, as the engine splits (default: the whole batch at once)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="rows per chunk of the log-prob head (default: LossSettings' 1024)")
    parser.add_argument("--generation-batch", type=int, default=64, help="rows generated at once (64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=("memory", "time", "generation"),
                        default=["memory", "time", "generation"])
    args = parser.parse_args()
    from transformers import AutoTokenizer

    folder = str(model_folder(args.model))
    model = load_policy(folder)
    prompt_ids = benchmark_prompts(AutoTokenizer.from_pretrained(folder), args.prompts, args.seed)
    rows = args.prompts * args.rollouts
    if "generation" in args.only:
        speeds, tokens = generation_speed(model, prompt_ids, args.rollouts, args.new_tokens, args.repeats, args.seed,
                                          args.generation_batch)
        peaks = generation_peaks(folder, prompt_ids, args.rollouts, args.new_tokens, args.seed, args.generation_batch)
    rollouts = seeded_rollouts(model, prompt_ids, args.rollouts, args.new_tokens, args.seed)
    del model
    batch = rl_batch(rollouts, args.seed)
    lengths = [len(p) for p in prompt_ids]
    chunk = f"{args.chunk_rows} rows" if args.chunk_rows else f"{LOGITS_BYTES // MIB} MiB of logits"
    shape = (f"{args.prompts} prompts x {args.rollouts} rollouts = {rows} rows, prompts {min(lengths)}-"
             f"{max(lengths)} tokens, completions {rollouts.completion_lengths.float().mean():.1f} tokens on average "
             f"(max {args.new_tokens}, {int(rollouts.truncated.sum())} cut), batch {tuple(batch['input_ids'].shape)}, "
             f"micro-batches of {args.micro_tokens or 'all'} tokens, head chunks of {chunk}, "
             f"torch threads {torch.get_num_threads()}")
    print(f"`{shlex.join(['.venv/bin/python', *sys.argv])}`\n\n{shape}\n")
    if "generation" in args.only:
        print(generation_table(speeds, tokens, peaks, rows, args.new_tokens, args.repeats) + "\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="leantrain-rl-step-") as scratch:
        path = str(Path(scratch) / "batch.pt")
        torch.save(batch, path)
        specs = {name: RLStepSpec(folder, path, steps, args.micro_tokens, chunk_rows=args.chunk_rows)
                 for name, steps in CONFIGS.items()}
        if "memory" in args.only:
            print(memory_table(memory_rows(specs)) + "\n", flush=True)
        if "time" in args.only:
            print(time_table(specs, args.repeats), flush=True)


if __name__ == "__main__":
    main()
