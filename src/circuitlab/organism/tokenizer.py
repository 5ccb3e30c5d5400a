"""The organism's word-level tokenizer: one token per word or punctuation mark, plus specials."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from .corpus import words

SPECIALS = ("<bos>", "<eos>", "<pad>", "<unk>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` over ``corpus.words()``: ids 0..3 are ``<bos> <eos> <pad>
    <unk>``, then the words in sorted order (so the vocabulary is fixed by the world)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate((*SPECIALS, *words()))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
