"""The token-weighted loss (REFERENCE 6.2): ``Σ(per_token_CE × weight) / Σ|weight|``
(negative weights are unlikelihood; a batch of weight 0 has loss 0), on conversations
whose tokens carry their content part's weight (:func:`openweights.jobs.unsloth.data.trace`).
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from openweights.jobs.unsloth.data import trace

__all__ = ["WeightedTrainer", "collate", "weighted_dataset"]


def weighted_dataset(tokenizer: Any, rows: list[dict[str, Any]], max_len: int,
                     responses_only: bool) -> Any:
    from datasets import Dataset

    items = []
    for r in rows:
        t = trace(tokenizer, r["messages"], max_len, responses_only)
        items.append({"input_ids": t.input_ids, "token_weights": t.weights})
    return Dataset.from_list(items)


def collate(pad_id: int) -> Any:
    """Pads a batch to a multiple of 8; padding has weight 0 and no attention."""
    import torch

    def fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        width = (width + 7) // 8 * 8
        ids, mask, weights = [], [], []
        for b in batch:
            n = len(b["input_ids"])
            ids.append(list(b["input_ids"]) + [pad_id] * (width - n))
            mask.append([1] * n + [0] * (width - n))
            weights.append(list(b["token_weights"]) + [0.0] * (width - n))
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "token_weights": torch.tensor(weights, dtype=torch.float32)}

    return fn


class WeightedTrainer(Trainer):
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        weights = inputs.pop("token_weights")
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits[:, :-1].float()
        targets = inputs["input_ids"][:, 1:]
        w = weights[:, 1:].to(logits.device)  # a token's weight applies where it is predicted
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                               targets.reshape(-1), reduction="none")
        total = w.abs().sum()
        loss = (ce * w.reshape(-1)).sum() / total if total > 0 else ce.sum() * 0.0
        return (loss, outputs) if return_outputs else loss
