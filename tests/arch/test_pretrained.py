"""``arch.convert.load_pretrained`` on the files transformers' ``save_pretrained`` writes
(and a BlinkDL-style ``.pth``): logits equal transformers' in the parallel and the
recurrent form, and each kind of bad file is refused with one line."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from arch import protocol
from arch.convert import load_pretrained
from arch.convert.common import CheckpointFormatError
from tests.hf_models import KINDS, VOCAB, to_blinkdl, torch_logits

TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 13))


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_transformers(hf_checkpoints, kind):
    directory, torch_model = hf_checkpoints[kind]
    ref = torch_logits(torch_model, TOKENS)
    model, params, tokenizer_file = load_pretrained(directory)
    assert tokenizer_file is None
    np.testing.assert_allclose(model.apply(params, jnp.asarray(TOKENS)), ref, atol=1e-4, rtol=1e-4)
    # Prefill 5 tokens, then step: the form generation and state reuse use.
    rec, _ = protocol.prefill_then_step(model, params, jnp.asarray(TOKENS), 5)
    np.testing.assert_allclose(rec, ref, atol=1e-4, rtol=1e-4)


def test_gpt_neox_options(hf_checkpoints):
    model, _, _ = load_pretrained(hf_checkpoints["gpt_neox"][0])
    block = model.backbone
    assert block.parallel_residual and not model.tie_embeddings
    model, _, _ = load_pretrained(hf_checkpoints["gpt_neox_sequential"][0])
    assert not model.backbone.parallel_residual


def test_blinkdl_pth_equals_transformers(hf_checkpoints, tmp_path):
    import torch

    _, torch_model = hf_checkpoints["rwkv"]
    blink = to_blinkdl(torch_model.state_dict())
    path = tmp_path / "RWKV-4-tiny.pth"
    torch.save(blink, path)
    model, params, _ = load_pretrained(str(path))
    ref = torch_logits(torch_model, TOKENS)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(TOKENS)), ref, atol=1e-4, rtol=1e-4)


def test_state_spaces_original_directory(hf_checkpoints, tmp_path):
    """state-spaces/mamba-* as released: mamba_ssm's config.json (d_model, n_layer,
    ssm_cfg) and pytorch_model.bin with ``backbone.embedding.`` (singular)."""
    import torch

    _, torch_model = hf_checkpoints["mamba"]
    directory = tmp_path / "mamba-tiny"
    directory.mkdir()
    state = {
        k.replace("backbone.embeddings.", "backbone.embedding."): v
        for k, v in torch_model.state_dict().items()
    }
    torch.save(state, directory / "pytorch_model.bin")
    config = {"d_model": 32, "n_layer": 2, "vocab_size": VOCAB, "rms_norm": True,
              "ssm_cfg": {"d_state": 8}, "tie_embeddings": True}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    model, params, _ = load_pretrained(str(directory))
    ref = torch_logits(torch_model, TOKENS)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(TOKENS)), ref, atol=1e-4, rtol=1e-4)
    (directory / "config.json").write_text(json.dumps({**config, "d_intermediate": 64}))
    with pytest.raises(CheckpointFormatError, match="hybrid mamba_ssm model"):
        load_pretrained(str(directory))


def test_bfloat16_safetensors_are_read(tmp_path):
    """Released checkpoints are often bfloat16, which numpy cannot hold: read via torch."""
    import torch
    from safetensors.torch import save_file

    from arch.convert.common import load_state_dict

    weight = torch.randn(3, 4).to(torch.bfloat16)
    save_file({"w": weight}, str(tmp_path / "model.safetensors"))
    read = load_state_dict(str(tmp_path / "model.safetensors"))["w"]
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, weight.float().numpy())


def test_tokenizer_json_is_returned(hf_checkpoints, tmp_path):
    directory = tmp_path / "with_tok"
    shutil.copytree(hf_checkpoints["mamba"][0], directory)
    (directory / "tokenizer.json").write_text("{}")
    assert load_pretrained(str(directory)).tokenizer_file == str(directory / "tokenizer.json")


def _copy_with_config(hf_checkpoints, tmp_path, kind, **changes):
    directory = tmp_path / "_".join([kind, *changes])
    shutil.copytree(hf_checkpoints[kind][0], directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def test_bad_files(hf_checkpoints, tmp_path):
    with pytest.raises(CheckpointFormatError, match="no such file"):
        load_pretrained(str(tmp_path / "missing"))
    with pytest.raises(CheckpointFormatError, match="no config.json"):
        load_pretrained(str(tmp_path))
    bad = _copy_with_config(hf_checkpoints, tmp_path, "mamba", model_type="llama")
    with pytest.raises(CheckpointFormatError, match="model_type 'llama' is not supported"):
        load_pretrained(bad)
    more = _copy_with_config(hf_checkpoints, tmp_path, "gpt_neox", num_hidden_layers=3)
    with pytest.raises(CheckpointFormatError, match="gpt_neox.layers.2.* missing"):
        load_pretrained(more)
    fewer = _copy_with_config(hf_checkpoints, tmp_path, "rwkv", num_hidden_layers=1)
    with pytest.raises(CheckpointFormatError, match="more than n_layers=1"):
        load_pretrained(fewer)
    wide = _copy_with_config(hf_checkpoints, tmp_path, "mamba", state_size=4)
    with pytest.raises(CheckpointFormatError, match="A_log has shape .*expects"):
        load_pretrained(wide)
    truncated = tmp_path / "truncated"
    shutil.copytree(hf_checkpoints["mamba"][0], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])
    with pytest.raises(CheckpointFormatError, match="corrupt"):
        load_pretrained(str(truncated))
    not_rwkv = tmp_path / "other.pth"
    import torch

    torch.save({"foo.weight": torch.zeros(2)}, not_rwkv)
    with pytest.raises(CheckpointFormatError, match="not a BlinkDL RWKV-4"):
        load_pretrained(str(not_rwkv))
