import torch

from nmt.search import greedy, output_limit


def _full_greedy(model, src_row, max_len):
    """Reference: greedy decoding by full recomputation of the decoder at every step."""
    cfg = model.config
    tgt = [cfg.bos_id]
    with torch.no_grad():
        for _ in range(max_len):
            logits = model(src_row[None], torch.tensor([tgt]))[0, -1]
            logits[cfg.pad_id] = logits[cfg.bos_id] = float("-inf")
            tok = int(logits.argmax())
            if tok == cfg.eos_id:
                break
            tgt.append(tok)
    return tgt[1:]


def test_output_limit_is_input_plus_50():
    src = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
    assert output_limit(src, pad_id=0).tolist() == [53, 51]


def test_greedy_equals_full_recomputation_and_respects_limits(tiny_model, tiny_config):
    g = torch.Generator().manual_seed(5)
    src = torch.randint(4, tiny_config.vocab_size, (4, 6), generator=g)
    src[2, 3:] = tiny_config.pad_id
    limits = torch.tensor([7, 3, 5, 1])
    got = greedy(tiny_model, src, limits)
    for row in range(4):
        n = int((src[row] != 0).sum())
        assert got[row] == _full_greedy(tiny_model, src[row, :n], int(limits[row]))
        assert len(got[row]) <= limits[row]
