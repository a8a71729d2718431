"""Batches of encoded lines under the token budget."""



from nmt import translate


def test_batches_respect_the_token_budget_counting_beams():
    lines = [translate.Line(number=i, ids=[5] * n) for i, n in
             enumerate([3, 9, 1, 4, 0, 7, 2, 30], 1)]
    lines[4].ids = []  # an empty line needs no batch
    for copies in (1, 4):
        batches = translate.make_batches(lines, 24, copies)
        flat = [line for batch in batches for line in batch]
        assert sorted(line.number for line in flat) == [1, 2, 3, 4, 6, 7, 8]
        assert [len(line.ids) for line in flat] == sorted((len(x.ids) for x in flat),
                                                          reverse=True)
        for batch in batches:
            assert len(batch) == 1 or len(batch[0].ids) * len(batch) * copies <= 24
    assert max(len(b) for b in translate.make_batches(lines, 24, 4)) < max(
        len(b) for b in translate.make_batches(lines, 24, 1))
