"""`nmt translate --precision int8`: dynamically quantized Linear layers on CPU."""

import io

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import translate
from nmt.checkpoint import save_checkpoint
from nmt.cli import app
from nmt.errors import ConfigError
from nmt.model import Transformer
from nmt.search import SearchConfig
from nmt.translate import TranslateConfig

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()




@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vocab):
    """The conftest-sized toy model (d 32, 2+2 layers) trained briefly on the toy pairs, so that
    its translations are confident enough for a comparison to mean something."""
    from nmt.config import preset

    config = preset("tiny", vocab_size=len(tiny_vocab), d_model=32, d_ff=64, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(config)
    pairs = toy_pairs()
    eos, bos, pad = tiny_vocab.eos_id, config.bos_id, config.pad_id

    def pad_to(rows):
        width = max(map(len, rows))
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])

    src = pad_to([tiny_vocab.encode(en) + [eos] for en, _ in pairs])
    tgt = [tiny_vocab.encode(de) + [eos] for _, de in pairs]
    tgt_in, tgt_out = pad_to([[bos] + t[:-1] for t in tgt]), pad_to(tgt)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        rows = torch.randperm(len(pairs))[:64]
        logits = model(src[rows], tgt_in[rows])
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out[rows].flatten(), ignore_index=pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return save_checkpoint(tmp_path_factory.mktemp("int8") / "ck", model, tiny_vocab,
                           {"step": 120}), pairs


def _translate(ckpt, lines, precision, beam):
    out = io.StringIO()
    config = TranslateConfig(checkpoints=(ckpt,), precision=precision, threads=1, device="cpu",
                             search=SearchConfig(beam=beam))
    stats = translate.run(config, stdin=io.BytesIO(("\n".join(lines) + "\n").encode()),
                          stdout=out)
    return out.getvalue().splitlines(), stats


@pytest.mark.parametrize("beam", [1, 4])
def test_int8_translations_stay_close_to_fp32(trained, beam):
    ckpt, pairs = trained
    lines, refs = [en for en, _ in pairs[::3]], [de for _, de in pairs[::3]]
    fp32, stats32 = _translate(ckpt, lines, "fp32", beam)
    int8, stats8 = _translate(ckpt, lines, "int8", beam)
    assert stats8.device == "cpu int8" and stats32.device == "cpu float32"
    assert len(int8) == len(fp32) == len(lines)
    same = sum(a == b for a, b in zip(fp32, int8, strict=True))
    assert same >= 0.8 * len(lines), (same, len(lines))
    bleu32 = sacrebleu.corpus_bleu(fp32, [refs]).score
    bleu8 = sacrebleu.corpus_bleu(int8, [refs]).score
    assert bleu32 > 20  # the model learnt something, else the comparison proves nothing
    assert abs(bleu8 - bleu32) < 3.0, (bleu32, bleu8)


def test_int8_replaces_every_linear_and_keeps_embeddings(trained):
    ckpt, _ = trained
    ensemble, _ = translate.load_models((ckpt,), torch.device("cpu"), torch.float32, int8=True)
    model = ensemble.models[0]
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert any(isinstance(m, torch.nn.Embedding) for m in model.modules())
    # decoding keeps the quantized q/k/v projections (no stacked fp32 copy of them)
    assert all(layer.self_attn.stacked_qkv() is None for layer in model.decoder.layers)


def test_int8_is_refused_on_cuda():
    with pytest.raises(ConfigError, match="CPU only"):
        translate.resolve_dtype("int8", torch.device("cuda"))
    assert translate.resolve_dtype("int8", torch.device("cpu")) == torch.float32


def test_cli_int8(tmp_path, trained):
    ckpt, pairs = trained
    src = tmp_path / "in.en"
    src.write_text("\n".join(en for en, _ in pairs[:5]) + "\n")
    out = tmp_path / "out.de"
    result = runner.invoke(app, ["translate", "-c", str(ckpt), "-i", str(src), "-o", str(out),
                                 "--precision", "int8", "--threads", "1", "--beam", "2"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5
    assert "int8" in result.output  # the closing summary names the precision
