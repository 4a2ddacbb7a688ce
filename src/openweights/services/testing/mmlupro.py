"""A small MMLU-Pro in the dataset's own format, placed in a local Hugging Face datasets
cache as a load of ``TIGER-Lab/MMLU-Pro`` leaves it, so ``load_dataset`` finds it by its
Hub id with ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` (no machine here reaches
the Hub): ``$HF_HOME/datasets/TIGER-Lab___mmlu-pro/default/0.0.0/<rev>/`` with the
builder's ``dataset_info.json`` and one arrow file per split.

Two subjects, a few questions each, validation (the few-shot examples, with their
chain of thought) and test splits. Run in a worker environment (it needs ``datasets``)::

    python -m openweights.services.testing.mmlupro --hf-home DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ID = "TIGER-Lab/MMLU-Pro"
REVISION = "0000000000000000000000000000000000000017"

_QUESTIONS = {
    "math": [("What is two plus two?", ["three", "four", "five", "six"], 1),
             ("What is three times three?", ["six", "nine", "twelve", "N/A"], 1),
             ("What is ten minus one?", ["nine", "eleven", "one", "ten"], 0),
             ("What is half of eight?", ["two", "three", "four", "six"], 2)],
    "biology": [("Which organ pumps blood?", ["lung", "heart", "liver", "skin"], 1),
                ("What do plants need for photosynthesis?", ["light", "sand", "salt",
                                                            "N/A"], 0),
                ("How many legs does a spider have?", ["six", "four", "eight", "ten"], 2)],
}


def rows(split: str) -> list[dict[str, Any]]:
    """The split's rows: validation has one example per subject (with its chain of
    thought), test the rest."""
    out: list[dict[str, Any]] = []
    qid = 0 if split == "validation" else 100
    for subject, questions in _QUESTIONS.items():
        chosen = questions[:1] if split == "validation" else questions[1:]
        for question, options, index in chosen:
            letter = "ABCDEFGHIJ"[index]
            cot = (f"A: Let's think step by step. {question} The option {letter} is "
                   f"{options[index]}. The answer is ({letter}).") if split == "validation" \
                else ""
            out.append({"question_id": qid, "question": question, "options": options,
                        "answer": letter, "answer_index": index, "cot_content": cot,
                        "category": subject, "src": f"ow-fixture-{subject}"})
            qid += 1
    return out


def write_cache(hf_home: Path, repo_id: str = REPO_ID) -> Path:
    """Write the fixture into ``hf_home``'s datasets cache; returns its directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.data_files import DataFilesDict
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    snake = camelcase_to_snakecase(name)  # the cache's name for it: "mmlu-pro"
    dest = hf_home / "datasets" / f"{namespace}___{snake}" / "default" / "0.0.0" / REVISION
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for split in ("test", "validation"):
            files[split] = [str(Path(tmp) / f"{split}.parquet")]
            pq.write_table(pa.Table.from_pylist(rows(split)), files[split][0])
        builder = Parquet(cache_dir=str(Path(tmp) / "build"), dataset_name=snake,
                          config_name="default", hash=REVISION,
                          data_files=DataFilesDict.from_local_or_remote(files))
        builder.download_and_prepare()
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(builder.cache_dir, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf-home", required=True, type=Path)
    parser.add_argument("--repo-id", default=REPO_ID)
    args = parser.parse_args(argv)
    dest = write_cache(args.hf_home, args.repo_id)
    print(json.dumps({"path": str(dest), "test": len(rows("test")),
                      "validation": len(rows("validation"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
