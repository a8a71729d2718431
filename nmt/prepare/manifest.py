"""`manifest.json`: what `nmt prepare` made and how (the format: `nmt.data`), written last."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nmt import __version__, corpora
from nmt.data import MANIFEST_FORMAT, token_dtype
from nmt.prepare.staging import digest
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, SPM_FILE, UNK_ID

if TYPE_CHECKING:
    from nmt.prepare.config import PrepareConfig


def build_manifest(source: corpora.Source, c: PrepareConfig, clean: dict[str, Any],
                   spm: dict[str, Any], encoded: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a finished run, from the three stages' results."""
    splits: dict[str, Any] = {}
    for split in source.splits:
        entry = {"pairs": encoded[split]["pairs"], "lines": clean[split]["lines"],
                 "src_tokens": encoded[split]["src_tokens"],
                 "tgt_tokens": encoded[split]["tgt_tokens"]}
        if split == "train":
            entry["filtered"] = {**clean[split]["filtered"], **encoded[split]["filtered"]}
        splits[split] = entry
    # the content: every token and raw-text file, the SentencePiece model and the languages
    content = {"src_lang": source.src, "tgt_lang": source.tgt, "spm": spm["sha256"],
               "files": encoded["file_sha256"]}
    style = c.text_style
    if not style.plain:  # the raw eval text is the same either way: say how it is read
        content["text"] = style.to_dict()
    return {
        "format": MANIFEST_FORMAT,
        "corpus": source.name,
        "src_lang": source.src,
        "tgt_lang": source.tgt,
        "dtype": token_dtype(spm["vocab_size"]).name,
        "spm": {"file": SPM_FILE, "sha256": spm["sha256"], "vocab_size": spm["vocab_size"],
                "model_type": "bpe", "byte_fallback": True,
                "requested_vocab_size": spm["requested_vocab_size"],
                "sample_sentences": spm["sample_sentences"],
                "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}},
        "splits": splits,
        "text": style.to_dict(),
        "settings": {"max_len": c.max_len, "max_ratio": c.max_ratio, "dedup": c.dedup,
                     "on_bad_utf8": c.on_bad_utf8, "vocab_size": spm["requested_vocab_size"],
                     "spm_sample": c.spm_sample, "seed": c.seed, "source": source.identity},
        "content_hash": digest(content),
        "nmt_version": __version__,
    }
