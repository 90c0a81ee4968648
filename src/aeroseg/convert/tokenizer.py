"""CLIP tokenizer built offline from the BPE vocabulary shipped in ``assets/clip_bpe/``.

The vocabulary is laid out as in OpenAI CLIP (``clip/simple_tokenizer.py``): the 256 byte symbols, the same
symbols with the end-of-word suffix ``</w>``, one token per merge rule (48,894 rules), then
``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens in all.

:func:`clean_text` is the text cleaning OpenAI's and open_clip's tokenizers apply before BPE, which the
``transformers`` tokenizer does not (it only lower-cases and splits).
"""

import gzip
import html
import re
from functools import lru_cache
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

BPE_PATH = Path(__file__).resolve().parent.parent / "assets" / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2


@lru_cache(maxsize=1)
def _byte_symbols() -> tuple[str, ...]:
    """The printable character that byte-level BPE uses for each byte, in CLIP's vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    # printable bytes stand for themselves; the others are shifted to 256, 257, ... in byte order
    return tuple(chr(c) for c in printable + list(range(256, 256 + len(others))))


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.decompress(BPE_PATH.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    symbols = list(_byte_symbols())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer() -> CLIPTokenizer:
    """The OpenAI CLIP tokenizer: 49,408 tokens, ``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407.

    Built from the shipped vocabulary, offline. ``model_max_length`` is 77, CLIP's context length.
    """
    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def clean_text(text: str) -> str:
    """OpenAI / open_clip ``basic_clean`` + ``whitespace_clean``: fix mojibake and typography with ftfy
    (``children’s`` → ``children's``), unescape HTML twice (``&amp;amp;`` → ``&``), collapse whitespace."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text.strip()).strip()
