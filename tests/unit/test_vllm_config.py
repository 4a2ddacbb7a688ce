"""The vLLM jobs' params (REFERENCE 1.12, 1.13): the original's defaults, refusals that
name the problem before anything is stored, VRAM guesses, input rows checked by line,
prompts with prefills, output rows in input order, and the API server's command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from openweights import OpenWeights
from openweights.errors import InvalidRequest
from openweights.jobs.vllm.config import ApiConfig, InferenceConfig, api_vram_gb, inference_vram_gb
from openweights.jobs.vllm.rows import output_rows, parse_rows, prompts_of
from openweights.jobs.vllm.serve import endpoint, server_command

CONV = "conversations:file-0123456789ab"


def test_inference_defaults_are_the_originals() -> None:
    c = InferenceConfig(model="unsloth/Qwen3-4B", input_file_id=CONV)
    assert (c.max_tokens, c.temperature, c.top_p, c.stop, c.prefill) == (600, 1.0, 1.0, [], "")
    assert (c.min_tokens, c.max_model_len, c.logprobs, c.n_completions_per_prompt) == \
        (1, 8196, None, 1)
    assert (c.chat_template, c.quantization, c.load_format) == ("default", None, None)
    q = InferenceConfig(model="unsloth/llama-3-8b-bnb-4bit", input_file_id=CONV)
    assert (q.quantization, q.load_format) == ("bitsandbytes", "bitsandbytes")


def test_vram_guesses_follow_the_models_name() -> None:
    assert inference_vram_gb(InferenceConfig(model="org/Qwen3-4B", input_file_id=CONV)) == 23
    assert inference_vram_gb(InferenceConfig(model="org/x-70B-4bit", input_file_id=CONV)) == 50
    assert inference_vram_gb(InferenceConfig(model="org/unknown", input_file_id=CONV)) == 79
    assert api_vram_gb(ApiConfig(model="org/Qwen3-8B")) == 22
    assert api_vram_gb(ApiConfig(model="org/Qwen3-8B", lora_adapters=["a/b", "a/c"])) == 24


def test_api_defaults_and_a_minted_key_per_deployment() -> None:
    a, b = ApiConfig(model="org/m"), ApiConfig(model="org/m")
    assert (a.max_model_len, a.max_num_seqs, a.max_lora_rank, a.max_loras) == (2048, 16, 16, 0)
    assert a.api_key != b.api_key and len(a.api_key) > 30
    assert ApiConfig(model="org/m", lora_adapters=["o/a"]).max_loras == 1


@pytest.mark.parametrize(("params", "says"), [
    ({"maxtokens": 5}, "maxtokens"),
    ({"input_file_id": "result:file-0123456789ab"}, "purpose 'conversations'"),
    ({"model": "nomodel"}, "org/name"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 0, "n_completions_per_prompt": 2}, "greedy"),
])
def test_bad_inference_params_are_refused_before_anything_is_stored(
        params: dict[str, object], says: str) -> None:
    # Nothing listens at this address: a refusal must come before any connection.
    ow = OpenWeights(api_key="ow_" + "x" * 20, nats_url="nats://127.0.0.1:9", retry_for_s=0.1)
    try:
        with pytest.raises(InvalidRequest, match=says):
            ow.inference.create(**{"model": "tiny/llama", "input_file_id": CONV, **params})
        with pytest.raises(InvalidRequest, match="max_num_seq"):
            ow.api.deploy("tiny/llama", max_num_seq=3)
    finally:
        ow.close()


def test_config_refuses_extra_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ApiConfig(model="o/m", lora_adapter=["x"])


def test_a_bad_row_is_named_by_its_line() -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ValueError, match="f line 3 is not JSON"):
        parse_rows(f"{good}\n\n{{oops\n".encode(), "f")
    with pytest.raises(ValueError, match="f line 2 has no \"messages\""):
        parse_rows(f"{good}\n{{\"prompt\": 1}}\n".encode(), "f")
    with pytest.raises(ValueError, match="line 1: message 0 needs a role"):
        parse_rows(b'{"messages": [{"content": "x"}]}', "f")
    with pytest.raises(ValueError, match="no conversations"):
        parse_rows(b"\n", "f")


class _Tok:
    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool,
                            add_generation_prompt: bool) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_prompts_continue_an_assistant_prefill_or_the_global_one() -> None:
    rows = [{"messages": [{"role": "user", "content": "a"}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "b"}]},
                          {"role": "assistant", "content": "Sure,"}]}]
    p = prompts_of(rows, _Tok(), prefill="P:")
    assert [(x.text, x.prefix) for x in p] == [("<user>a<assistant>P:", "P:"),
                                               ("<user>b<assistant>Sure,", "Sure,")]


def _out(*texts: str) -> SimpleNamespace:
    return SimpleNamespace(outputs=[SimpleNamespace(text=t, logprobs=None, finish_reason="stop")
                                    for t in texts])


def test_output_rows_keep_input_fields_and_order_n_per_input() -> None:
    rows = [{"messages": [], "id": 1}, {"messages": [], "id": 2}]
    out = output_rows(rows, [_out("a", "b"), _out("c", "d")], 2)
    assert [(r["id"], r["completion"], r["completion_index"]) for r in out] == \
        [(1, "a", 0), (1, "b", 1), (2, "c", 0), (2, "d", 1)]
    assert output_rows(rows, [_out("a"), _out("c")], 1)[1] == \
        {"messages": [], "id": 2, "completion": "c", "logprobs": None, "finish_reason": "stop"}


def test_the_endpoint_comes_from_the_machine() -> None:
    assert endpoint({"RUNPOD_POD_ID": "abc"}) == \
        ("0.0.0.0", 8000, "https://abc-8000.proxy.runpod.net/v1")
    host, port, url = endpoint({})
    assert host == "127.0.0.1" and url == f"http://127.0.0.1:{port}/v1"


def test_the_server_command_serves_the_adapters_with_the_key() -> None:
    cfg = ApiConfig(model="o/base", lora_adapters=["o/ad"], max_lora_rank=12)
    cmd = server_command(cfg, Path("/m/base"), {"o/ad": Path("/m/ad")}, "127.0.0.1", 5000)
    joined = " ".join(cmd)
    assert "-m vllm.entrypoints.openai.api_server --model /m/base" in joined
    assert f"--api-key {cfg.api_key}" in joined and "--served-model-name o/base" in joined
    assert "--enable-lora --max-lora-rank 16 --max-loras 1 --lora-modules o/ad=/m/ad" in joined


def test_max_model_len_fits_the_models_positions(tmp_path: Path) -> None:
    from openweights.jobs.vllm.engine import fit_max_len

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert fit_max_len(256, tmp_path) == (256, None)
    assert fit_max_len(8196, tmp_path) == (512, "max_model_len 8196 exceeds the model's 512 "
                                                "positions: serving 512")
    assert fit_max_len(2048, tmp_path / "nothing") == (2048, None)


def test_vllm_caches_survive_runs_in_a_directory_of_this_uid_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from openweights.jobs.vllm.engine import cache_root, cpu_defaults

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # restored after the test
    cpu_defaults()
    root = tmp_path / f"openweights-vllm-cache-{os.getuid()}"
    assert os.environ["VLLM_CACHE_ROOT"] == str(root) and root.stat().st_mode & 0o777 == 0o700
    root.chmod(0o777)  # open to others: not trusted
    assert cache_root() is None
