"""A leantrain schedule drives the HF Trainer's learning rate when passed as optimizers=(opt, sched)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import leantrain as lt


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids}


def test_trainer_follows_the_wsd_schedule(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = lt.schedules.WSD(optimizer, warmup_steps=2, total_steps=8, decay_steps=4, decay="linear")
    expected = lt.schedules.lr_curve("wsd", 8, 1e-3, warmup_steps=2, decay_steps=4, decay="linear")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4, logging_steps=1,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(), optimizers=(optimizer, schedule))
    trainer.train()
    logged = [record["learning_rate"] for record in trainer.state.log_history if "learning_rate" in record]
    assert len(logged) == 8
    assert torch.allclose(torch.tensor(logged), torch.tensor(expected[:8]), rtol=1e-6)
