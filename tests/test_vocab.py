"""The vocabulary's bytes depend on the text and settings only, not on the machine."""

from conftest import toy_pairs

from nmt.vocab import Vocabulary, train_sentencepiece, without_thread_count


def test_the_thread_count_does_not_change_the_model_bytes():
    text = [side for pair in toy_pairs() for side in pair]
    one = train_sentencepiece(text, vocab_size=300, num_threads=1)
    three = train_sentencepiece(text, vocab_size=300, num_threads=3)
    assert one.model_bytes == three.model_bytes
    assert one.encode("A man sits in the park .") == three.encode("A man sits in the park .")


def test_stripping_is_idempotent_and_keeps_a_loadable_model(tiny_vocab):
    stripped = without_thread_count(tiny_vocab.model_bytes)
    assert without_thread_count(stripped) == stripped
    again = Vocabulary(stripped)
    assert len(again) == len(tiny_vocab)
    assert again.encode("Ein Hund spielt .") == tiny_vocab.encode("Ein Hund spielt .")
