"""An extractive summary: the sentences made of the words the text uses most, kept in the text's order.

Each content word (stop words left out) weighs its frequency in the whole text divided by the frequency of the
most frequent word; a sentence scores the mean weight of its content words, so it wins by being about what the
text keeps talking about, not by being long. Ties go to the earlier sentence. Quoting sentences rather than
writing new ones means the summary can never say something the page does not.
"""

from __future__ import annotations

from collections import Counter

from imago_api.ai.words import content_words, split_sentences, words

# Headings, captions and menu leftovers are short or lack a full stop; they are chosen only when nothing else is.
MIN_WORDS = 4
_TERMINAL = tuple(".!?…\"'”’»)")


def score_sentences(text: str) -> list[tuple[str, float]]:
    """Every distinct sentence of `text` with its score, in the text's order."""
    sentences = list(dict.fromkeys(split_sentences(text)))
    frequencies = Counter(content_words(text))
    top = max(frequencies.values(), default=1)
    scored = []
    for sentence in sentences:
        found = content_words(sentence)
        scored.append((sentence, sum(frequencies[w] / top for w in found) / len(found) if found else 0.0))
    return scored


def extractive_summary(text: str, max_sentences: int) -> list[str]:
    scored = score_sentences(text)
    candidates = [i for i, (sentence, _) in enumerate(scored)
                  if len(words(sentence)) >= MIN_WORDS and sentence.endswith(_TERMINAL)]
    if len(candidates) < max_sentences:
        candidates = list(range(len(scored)))
    best = sorted(candidates, key=lambda i: (-scored[i][1], i))[:max_sentences]
    return [scored[i][0] for i in sorted(best)]
