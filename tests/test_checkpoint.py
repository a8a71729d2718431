import json
import os
import subprocess
import sys

import pytest
import torch

from nmt.checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
)
from nmt.errors import CheckpointError

META = {"step": 42, "epoch": 3, "data": {"name": "toy", "src_lang": "en", "tgt_lang": "de",
                                         "content_hash": "abc123"}}


def test_round_trip_is_bit_exact(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    ckpt = load_checkpoint(path)
    assert ckpt.config == tiny_model.config and ckpt.step == 42
    assert ckpt.vocab.sha256 == tiny_vocab.sha256
    assert ckpt.meta["data"]["content_hash"] == "abc123"
    loaded = ckpt.build_model()
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    # tied weights stay tied after loading
    assert loaded.output.weight is loaded.decoder.embed.tokens.weight
    src = torch.randint(4, 100, (2, 5))
    tgt = torch.randint(4, 100, (2, 4))
    with torch.no_grad():
        assert torch.equal(tiny_model(src, tgt), loaded(src, tgt))


def test_tied_matrix_is_stored_once(tmp_path, tiny_model, tiny_vocab):
    from safetensors import safe_open
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "encoder.embed.tokens.weight" in keys
    assert "output.weight" not in keys and "decoder.embed.tokens.weight" not in keys


def test_train_state_loads_with_weights_only(tmp_path, tiny_model, tiny_vocab):
    state = {"step": 7, "rng": torch.get_rng_state(), "opt": {"lr": 0.1, "m": torch.ones(3)}}
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META, train_state=state)
    back = load_train_state(path)
    assert back["step"] == 7 and torch.equal(back["rng"], state["rng"])


def test_train_state_refuses_pickled_objects(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    torch.save({"evil": object()}, path / "train_state.pt")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_train_state(path)


def test_overwrite_replaces_only_when_complete(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    save_checkpoint(path, tiny_model, tiny_vocab, {**META, "step": 43})
    assert load_checkpoint(path).step == 43
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_interrupted_write_leaves_no_checkpoint(tmp_path, tiny_vocab):
    """Kill a writer in the middle of the weights file: the final name never appears."""
    script = f"""
import os, signal, torch, safetensors.torch as st
from nmt.checkpoint import save_checkpoint
from nmt.config import preset
from nmt.model import Transformer
from nmt.vocab import Vocabulary
real = st.save_file
def dying(tensors, filename, metadata=None):
    real(tensors, filename, metadata)
    with open(filename, "r+b") as f:
        f.truncate(100)
    os.kill(os.getpid(), signal.SIGKILL)
st.save_file = dying
vocab = Vocabulary(open({str(tmp_path / 'spm.model')!r}, 'rb').read())
model = Transformer(preset("tiny", vocab_size=len(vocab)))
save_checkpoint({str(tmp_path / 'run' / 'ck')!r}, model, vocab, {{"step": 1}})
"""
    tiny_vocab.save(tmp_path / "spm.model")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not (tmp_path / "run" / "ck").exists()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "run" / "ck")


def _corrupt(path, kind):
    if kind == "truncated":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "missing":
        os.remove(path / "model.safetensors")
    elif kind == "foreign":
        (path / "meta.json").write_text(json.dumps({"format": "fairseq"}))
    elif kind == "bad-config":
        (path / "config.json").write_text("{not json")
    elif kind == "bad-vocab":
        (path / "spm.model").write_bytes(b"garbage")


@pytest.mark.parametrize("kind, message", [
    ("truncated", "model.safetensors: truncated or corrupt weights"),
    ("missing", "missing model.safetensors"),
    ("foreign", "meta.json: foreign checkpoint format 'fairseq'"),
    ("bad-config", "config.json: unreadable JSON"),
    ("bad-vocab", "spm.model: not a SentencePiece model"),
])
def test_corrupt_checkpoints_give_one_line_errors(tmp_path, tiny_model, tiny_vocab, kind,
                                                  message):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    _corrupt(path, kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_list_checkpoints_in_step_order(tmp_path, tiny_model, tiny_vocab):
    for step in (300, 20, 1000):
        save_checkpoint(tmp_path / "checkpoints" / checkpoint_name(step), tiny_model, tiny_vocab,
                        {"step": step})
    (tmp_path / "checkpoints" / "step-00000005").mkdir()  # incomplete: no meta.json
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 300, 1000]
    with pytest.raises(CheckpointError, match="is a run directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("field,value,message", [
    ("n_heads", 0, "n_heads = 0 is outside"),
    ("n_heads", -4, "n_heads = -4 is outside"),
    ("max_positions", 0, "max_positions = 0 is outside"),
    ("max_positions", 10**12, "max_positions = 1000000000000 is outside"),
    ("eos_id", 10**5, "eos_id 100000 is outside the vocabulary"),
    ("d_model", "512", "d_model must be int"),
    ("dropout", True, "dropout must be float"),
])
def test_a_damaged_config_is_refused_by_name(tmp_path, tiny_model, tiny_vocab, field, value,
                                             message):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "config.json" in str(info.value)


@pytest.mark.parametrize("step", ["12", 1.5, -1, True, None, 10**30])
def test_a_step_that_is_not_a_count_is_refused(tmp_path, tiny_model, tiny_vocab, step):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    meta = json.loads((path / "meta.json").read_text())
    meta["step"] = step
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"step must be an integer in \[0, 2\^62\)"):
        load_checkpoint(path)


def test_a_step_directory_holds_its_own_step(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / checkpoint_name(42), tiny_model, tiny_vocab, META)
    assert load_checkpoint(path).step == 42
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "step": 99999}))
    with pytest.raises(CheckpointError, match="step 99999 in a directory named for step 42"):
        load_checkpoint(path)


@pytest.mark.parametrize("change,message", [
    ({"averaged_from": 5}, "averaged_from must be a list of checkpoint names"),
    ({"averaged_from": ["step-1", None]}, "averaged_from must be a list"),
    ({"data": {"name": 5}}, "data.name must be a string"),
    ({"data": {"content_hash": [1]}}, "data.content_hash must be a string"),
    ({"data": {"text": 5}}, "data.text must be an object"),
    ({"valid": {"bleu": "high"}}, "valid.bleu must be a number"),
    ({"nmt_version": [1]}, "nmt_version must be a string"),
])
def test_descriptive_meta_fields_are_checked(tmp_path, tiny_model, tiny_vocab, change, message):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "meta.json" in str(info.value)


@pytest.mark.parametrize("damage,message", [
    (lambda t: t * float("nan"), "holds NaN or infinite values"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), "holds NaN or infinite"),
    (lambda t: t.to(torch.int64), "is int64, not floating point"),
])
def test_weights_must_be_finite_floats(tmp_path, tiny_model, tiny_vocab, damage, message):
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    tensors = load_file(str(path / "model.safetensors"))
    name = sorted(tensors)[0]
    save_file({**tensors, name: damage(tensors[name])}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert name in str(info.value) and "model.safetensors" in str(info.value)


def test_special_ids_must_be_the_vocabularys(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    config = json.loads((path / "config.json").read_text())
    bos, eos = config["bos_id"], config["eos_id"]
    (path / "config.json").write_text(json.dumps({**config, "bos_id": eos, "eos_id": bos}))
    with pytest.raises(CheckpointError, match="special ids differ from the vocabulary's: "
                                              f"bos_id {eos} \\(spm.model: {bos}\\)"):
        load_checkpoint(path)


def test_weights_that_cannot_be_opened_say_why(tmp_path, tiny_model, tiny_vocab, monkeypatch):
    import builtins
    import errno

    from nmt import files

    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)

    def refuse(file, *args, **kwargs):  # what chmod 000 does to a user other than root
        if str(file).endswith("model.safetensors"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(files, "open", refuse, raising=False)
    with pytest.raises(files.FileSystemError) as info:
        load_checkpoint(path)
    assert "permission denied" in str(info.value) and "model.safetensors" in str(info.value)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_an_epoch_end_flag_that_is_not_a_boolean_is_refused(tmp_path, tiny_model, tiny_vocab,
                                                             flag):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {**META, "epoch_end": True})
    assert load_checkpoint(path).meta["epoch_end"] is True
    meta = json.loads((path / "meta.json").read_text())
    meta["epoch_end"] = flag
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="epoch_end must be true or false"):
        load_checkpoint(path)


def test_another_vocabulary_of_the_same_size_is_refused(tmp_path, tiny_model, tiny_vocab):
    from conftest import toy_pairs

    from nmt.vocab import train_sentencepiece

    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META)
    assert json.loads((path / "meta.json").read_text())["vocab_sha256"] == tiny_vocab.sha256
    other = train_sentencepiece([t.upper() for pair in toy_pairs() for t in pair],
                                vocab_size=len(tiny_vocab))
    assert len(other) == len(tiny_vocab) and other.sha256 != tiny_vocab.sha256
    other.save(path / "spm.model")
    with pytest.raises(CheckpointError, match="not the vocabulary these weights were trained"):
        load_checkpoint(path)


def test_a_pickle_in_train_state_is_one_line_without_torch_warnings(tmp_path, tiny_model,
                                                                    tiny_vocab):
    import pickle

    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, META, train_state={"x": 1})
    (path / "train_state.pt").write_bytes(pickle.dumps({"x": object()}, protocol=4))
    code = ("import sys; from nmt.checkpoint import load_train_state\n"
            "try:\n    load_train_state(sys.argv[1])\nexcept Exception as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True)
    assert proc.stderr == "", proc.stderr
    assert "unreadable training state" in proc.stdout
