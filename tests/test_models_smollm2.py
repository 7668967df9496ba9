"""The offline SmolLM2-135M-Instruct: converted once from the GGUF into a plain HF folder that loads,
answers a question greedily, and is reused."""

import torch

from leantrain.models.smollm2 import smollm2_path
from leantrain.recipes.causal_lm import load_causal_lm


def test_smollm2_is_cached_as_a_plain_folder_that_answers():
    folder = smollm2_path()
    assert smollm2_path() == folder and (folder / "model.safetensors").is_file()
    model, tokenizer = load_causal_lm(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        answer = model.generate(**prompt, max_new_tokens=10, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    assert "Paris" in tokenizer.decode(answer, skip_special_tokens=True)
