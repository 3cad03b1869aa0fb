"""``adaptive-tts sample`` on your own model, reward and prompts: tiny diffusers pipelines built
offline and saved to temporary directories (``sd:DIR``, ``sd3:DIR``, ``edm:DIR``), rewards from
a ``module:callable`` and from an installed plug-in's entry point, prompts from ``--prompt``
and ``--prompts FILE``; the JSON line carries the prompt texts and the compute ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments.cli import main
from tests.fixtures import reward_plugin

PROMPTS = ["a photo of a cat", "a red car"]
REDNESS = "tests.fixtures.reward_plugin:redness"
SMALL = ["--method", "eps-greedy", "--n", "2", "--k", "1", "--steps", "2", "--batch", "2"]


def run_json(capsys, argv: list[str]) -> dict[str, Any]:
    code = main(["sample", *argv, "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""  # --quiet --json: nothing but the JSON line
    return json.loads(out.strip().splitlines()[-1])


def check_ledger(row: dict[str, Any], nfe_per_row: int) -> None:
    """The per-step ledger adds up to the per-sample totals; rows x NFEs per row = NFEs."""
    c = row["compute"]
    assert c["nfe_per_row"] == nfe_per_row and len(c["steps"]) == row["steps"]
    for purpose, total in c["per_sample"].items():
        if purpose in ("total", "reward_calls"):
            continue
        spent = [
            sum(s["nfe"].get(purpose, [0] * row["batch"])[b] for s in c["steps"]) for b in (0, 1)
        ]
        assert [a + o for a, o in zip(spent, c["outside_steps"][purpose])] == total
    for s in c["steps"]:
        for purpose, nfe in s["nfe"].items():
            assert nfe == [nfe_per_row * r for r in s["rows"][purpose]]
    calls = [sum(s["reward_calls"][b] for s in c["steps"]) for b in (0, 1)]
    outside = c["outside_steps"]["reward_calls"]
    assert [a + o for a, o in zip(calls, outside)] == c["per_sample"]["reward_calls"]
    assert sum(c["per_sample"]["total"]) / row["batch"] == row["nfe"]


def test_sd_dir_with_prompts_and_a_module_callable_composite(sd_dir: Path, capsys) -> None:
    prompts = [a for p in PROMPTS for a in ("--prompt", p)]
    rewards = ["--reward", f"{REDNESS}=1", "--reward", "brightness=0.5"]
    row = run_json(
        capsys,
        ["--model", f"sd:{sd_dir}", *prompts, *rewards, "--eval-reward", "compress", *SMALL],
    )
    assert row["model"] == f"sd:{sd_dir}" and row["sampler"] == "ddim" and row["steps"] == 2
    assert row["prompts"] == [0, 1] and row["prompt_texts"] == PROMPTS
    assert "eval_reward" in row and all(torch.isfinite(torch.tensor(row["rewards"])))
    check_ledger(row, nfe_per_row=2)  # the default guidance 7.5: CFG, 2 NFEs per row
    c = row["compute"]
    assert c["vae_decodes"] > 0 and sum(s.get("vae_decodes", 0) for s in c["steps"]) > 0
    plain = run_json(
        capsys,
        ["--model", f"sd:{sd_dir}", *prompts, "--reward", REDNESS, "--guidance", "1", *SMALL],
    )
    check_ledger(plain, nfe_per_row=1)  # guidance 1: no CFG rows


def test_sd3_dir_with_a_prompts_file_and_an_entry_point(
    sd3_dir: Path, tmp_path, capsys, contrast_plugin
) -> None:
    table = tmp_path / "prompts.csv"
    table.write_text("id,caption\n1,a photo of a cat\n2,a red car\n")
    reward_plugin.SEEN_PROMPTS.clear()
    row = run_json(
        capsys,
        ["--model", f"sd3:{sd3_dir}", "--prompts", str(table), "--reward", "contrast:2", *SMALL],
    )
    assert reward_plugin.SEEN_PROMPTS == [PROMPTS]  # set_prompts got the file's prompts
    assert row["sampler"] == "ancestral" and row["prompt_texts"] == PROMPTS
    check_ledger(row, nfe_per_row=2)  # SD3's default guidance 7.0


def test_edm_dir_with_an_entry_point_argument_and_a_grid(
    edm_dir: Path, tmp_path, capsys, contrast_plugin
) -> None:
    base = ["--model", f"edm:{edm_dir}", "--method", "naive", "--steps", "2", "--batch", "2"]
    one = run_json(capsys, [*base, "--reward", "contrast"])
    grid = tmp_path / "grid.png"
    two = run_json(capsys, [*base, "--reward", "contrast:2", "--out", str(grid)])
    assert grid.is_file() and two["grid"] == str(grid)
    assert one["prompts"] is None and one["prompt_texts"] is None  # unconditional
    assert two["rewards"] == pytest.approx([2 * r for r in one["rewards"]], rel=1e-5)
    assert one["sampler"] == "edm-heun" and one["nfe"] == 2 * 2 - 1
    check_ledger(one, nfe_per_row=1)


@pytest.mark.parametrize(
    "method",
    [
        ["--method", "mcts", "--n", "2", "--sims", "1"],  # rollouts nested in a step
        [
            "--method",
            "evosearch",
            "--elites",
            "1",
            "--evo-schedule",
            "0",
            "2",
            "--population",
            "4",
            "2",
        ],  # the loop runs once per generation
    ],  # fmt: skip
    ids=["mcts", "evosearch"],
)
def test_the_step_ledger_adds_up(capsys, method: list[str]) -> None:
    row = run_json(capsys, ["--model", "gmm", *method, "--steps", "4", "--batch", "2"])
    check_ledger(row, nfe_per_row=1)
    assert sum(sum(sum(v) for v in s["nfe"].values()) for s in row["compute"]["steps"]) > 0


def test_task_alone_takes_its_model(capsys) -> None:
    """``sample --task mnist-target`` needs no ``--model mnist`` (it was refused as gmm)."""
    row = run_json(capsys, ["--task", "mnist-target", "--steps", "2", "--batch", "2"])
    assert row["task"] == "mnist-target" and row["model"] == "mnist"
    same = run_json(capsys, ["--model", "mnist", "--task", "mnist-target", "--steps", "2",
                             "--batch", "2"])  # fmt: skip
    assert same["reward"] == row["reward"]


BAD = [
    (["--model", "edm", "--reward", "brightness"], "model 'edm' needs a directory"),
    (["--model", "edm:{tmp}/none", "--reward", "brightness"], "directory not found"),
    (["--model", "dalle:/x"], "--model"),
    (["--model", "gmm", "--sampler", "ddim"], "--sampler"),
    (["--model", "gmm", "--task", "gmm-target", "--reward", "brightness"], "--reward"),
    (["--model", "gmm", "--task", "mnist-target"], "does not run on --model gmm"),
    (["--reward", "tests.fixtures.reward_plugin:bad_shape"], "shape (2,)"),
    (["--reward", "tests.fixtures.reward_plugin:missing"], "no attribute 'missing'"),
    (["--reward", "no_such_plugin"], "installed plug-ins"),
    (["--model", "mnist", "--prompt", "a cat"], "not text prompts"),
    (["--model", "gmm", "--height", "12"], "--height"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_model_or_reward_is_one_line(tmp_path, capsys, argv, message) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["sample", *argv, "--steps", "2", "--batch", "2", "--method", "naive"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-tts: error:"), err
    assert message in err[0]
    assert list(tmp_path.iterdir()) == []


def build_flux(root: Path) -> Path:
    """Tiny FLUX-dev-style pipeline (guidance embedding): a CLIP encoder and a T5 encoder whose
    fast tokenizer is built with ``tokenizers`` (no sentencepiece model needed)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    from tests.models.test_latent_t2i import tiny_vae, write_clip_tokenizer

    torch.manual_seed(0)
    write_clip_tokenizer(root / "_tok")
    clip_tok = CLIPTokenizer.from_pretrained(root / "_tok", local_files_only=True)
    tcfg = CLIPTextConfig(
        vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=8,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    words = "a photo of cat red car".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in words]
    t5_tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    t5_tok.pre_tokenizer = pre_tokenizers.Metaspace()
    t5_cfg = T5Config(vocab_size=len(vocab), d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=8, pooled_projection_dim=8,
        guidance_embeds=True, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(latent_channels=4),
        text_encoder=CLIPTextModel(tcfg),
        tokenizer=clip_tok,
        text_encoder_2=T5EncoderModel(t5_cfg),
        tokenizer_2=T5TokenizerFast(
            tokenizer_object=t5_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
        ),
        transformer=transformer,
    ).save_pretrained(root)
    return root


def test_flux_dir_with_embedded_guidance(tmp_path, capsys) -> None:
    root = build_flux(tmp_path / "flux")
    capsys.readouterr()  # the build's own "Writing model shards" bars
    prompts = [a for p in PROMPTS for a in ("--prompt", p)]
    size = ["--height", "16", "--width", "16"]
    row = run_json(
        capsys, ["--model", f"flux:{root}", *prompts, "--reward", REDNESS, *size, *SMALL]
    )
    assert row["sampler"] == "ancestral" and row["prompt_texts"] == PROMPTS
    check_ledger(row, nfe_per_row=1)  # FLUX-dev: guidance embedded, 1 NFE per row
    assert row["compute"]["vae_decodes"] > 0
