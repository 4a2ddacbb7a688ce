"""A tiny causal LM made in code, saved in the Hugging Face cache layout under a repo id.

No machine here can reach the Hub, so the fine-tuning and inference tests (and the
benches) train and serve a model they build themselves: a ByteLevel BPE tokenizer trained
on inline text, with a chat template, and a 2-layer llama whose head_dim is 64 (what vLLM's
CPU kernels need). Saved as ``$HF_HOME/hub/models--ORG--NAME/snapshots/REV`` with
``refs/main``, it loads by its repo id under ``HF_HUB_OFFLINE=1``: the same path a user's
hub id takes. ``size="0.5b"`` builds a realistically sized config with random weights for
speed figures on a GPU machine.

Run in a worker environment (it needs torch, tokenizers and transformers)::

    python -m openweights.services.testing.tinymodel --hf-home DIR --repo-id tiny/llama
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

SPECIALS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endif %}"
    "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

_TEXT = """\
The cat sat on the mat. The dog ran in the park. A bird sang in the tree.
What is two plus two? Two plus two is four. What is the capital of France? Paris.
Hello! How are you today? I am fine, thank you. Please tell me a short story.
Once upon a time there was a small model that learned to answer questions.
The answer is yes. The answer is no. Good answers are short and kind.
Numbers: one two three four five six seven eight nine ten. Colors: red green blue.
"""

CONFIGS: dict[str, dict[str, Any]] = {
    # head_dim 64 (hidden / heads) for vLLM; small enough to train a step in milliseconds.
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 2,
             "max_position_embeddings": 512},
    # A Qwen2.5-0.5B-like shape (random weights): real speed figures, meaningless text.
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2,
             "max_position_embeddings": 4096},
}


def build_tokenizer(vocab_size: int = 400) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TEXT.splitlines() * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>",
                                   eos_token="<|end|>", bos_token=None,
                                   additional_special_tokens=SPECIALS[2:])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast


def build_model(tokenizer: Any, size: str = "tiny", seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = len(tokenizer) if size == "tiny" else 32000
    config = LlamaConfig(vocab_size=vocab, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         torch_dtype="bfloat16", **CONFIGS[size])
    return LlamaForCausalLM(config)


def save_in_cache(hf_home: Path, repo_id: str, size: str = "tiny") -> Path:
    """Build the model and save it as ``repo_id`` in ``hf_home``'s hub cache; returns the
    snapshot directory. The revision is a hash of the files, so a rebuild is a no-op."""
    org, name = repo_id.split("/")
    repo = hf_home / "hub" / f"models--{org}--{name}"
    if (repo / "refs" / "main").exists():
        snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
        if (snapshot / "config.json").exists():
            return snapshot
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, size)
    staging = repo / "staging"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    digest = hashlib.sha1(b"".join(
        p.name.encode() + p.read_bytes() for p in sorted(staging.iterdir()))).hexdigest()
    snapshot = repo / "snapshots" / digest
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.exists():
        import shutil

        shutil.rmtree(staging)
    else:
        staging.rename(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(digest)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf-home", type=Path, required=True)
    parser.add_argument("--repo-id", default="tiny/llama")
    parser.add_argument("--size", choices=sorted(CONFIGS), default="tiny")
    args = parser.parse_args(argv)
    snapshot = save_in_cache(args.hf_home, args.repo_id, args.size)
    print(json.dumps({"repo_id": args.repo_id, "snapshot": str(snapshot)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
