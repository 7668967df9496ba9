"""apply_lora: in-place PEFT adapters on every linear layer but the output ones (the one default), the task head
trainable."""

import pytest
from transformers import BertConfig, BertForSequenceClassification

import leantrain as lt
from leantrain import apply_lora


def tiny_bert():
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64))


def test_only_adapters_and_head_train_and_sampling_finds_lora_a():
    model = tiny_bert()
    adapted = apply_lora(model, rank=4)
    blocks = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense")
    assert list(adapted) == [f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in blocks] + ["bert.pooler.dense"]
    assert set(adapted.values()) == {"LoRA rank 4 (alpha 4, dropout 0.0)"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert all("lora_" in n or n.startswith("classifier.") for n in trainable)
    names = lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3))
    assert list(names) == [f"{a}.lora_A.default" for a in adapted]


def test_bad_rank_and_unknown_model_type():
    with pytest.raises(ValueError, match="rank=0 must be"):
        apply_lora(tiny_bert(), rank=0)
    with pytest.raises(ValueError, match=r"targets=\['query'\] with filter_fn matched no linear layer"):
        apply_lora(tiny_bert(), targets=["query"], filter_fn=lambda module, name: False)
