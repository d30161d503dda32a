"""Words and sentences for the offline text heuristics, in English and French.

Hand-made lists rather than a language model: the offline provider must run anywhere, instantly, and give the
same answer twice.
"""

from __future__ import annotations

import re
from collections import Counter

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can cannot could couldn did didn do does doesn doing don down during each either else even
ever every few for from further get gets got had hadn has hasn have haven having he her here hers herself him
himself his how however i if in into is isn it its itself just least less let like made make many may me might
more most much must mustn my myself need needs neither no nor not now of off often on once one only or other
our ours ourselves out over own per please quite rather really same say says said shall shan she should shouldn
since so some such than that the their theirs them themselves then there these they this those though through
thus to too under until up upon us very via was wasn we well were weren what when where whether which while who
whom whose why will with within without won would wouldn yet you your yours yourself yourselves ll re ve
alors au aucun aussi autre aux avec avoir bon car ce ceci cela celle celles celui ces cet cette ceux chaque ci
comme comment d dans de des doit donc dos du elle elles en encore est et étaient était étant été être eu eux
fait faire fois font hors ici il ils j je juste l la là le les leur leurs lui m ma mais me même mes moi moins mon
n ne ni nos notre nous on ont ou où par parce pas peu peut plus pour pourquoi qu quand que quel quelle quelles
quels qui s sa sans se ses seulement si sien son sont sous soit sur t ta tandis te tel tellement tes toi ton
tous tout toute toutes très tu un une vers voici voilà vont vos votre vous y à ça
""".split())

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# A sentence ends at . ! ? or … (with any closing quotes or brackets) followed by white space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+")
_ABBREVIATIONS = frozenset("e.g i.e etc vs mr mrs ms dr prof st no fig approx cf mme mlle env".split())


def words(text: str) -> list[str]:
    """Lowercase words, split at apostrophes so that l'économie and don't give their meaningful part."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if len(w) > 1 and w not in STOP_WORDS]


def frequent_words(text: str, top: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """The `top` most frequent content words of three letters or more; ties go to the first seen."""
    counts = Counter(w for w in content_words(text) if len(w) > 2 and w not in exclude)
    return [w for w, _ in counts.most_common(top)]  # a stable sort: equal counts keep their first-seen order


def split_sentences(text: str) -> list[str]:
    """Sentences in order; a line break always ends one (headings, list items, paragraphs).

    A full stop ends a sentence only before a capital, a digit or an opening quote, and not after a known
    abbreviation or a single initial, so "e.g. this" and "J. Smith" stay whole.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        start = 0
        for end in _SENTENCE_END.finditer(line):
            following = line[end.end():end.end() + 1]
            if not (following.isupper() or following.isdigit() or following in "\"'“«([¿¡"):
                continue
            before = line[start:end.start()].rsplit(" ", 1)[-1].lower()
            if end.group().startswith(".") and (before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha())):
                continue
            sentences.append(line[start:end.end()].strip())
            start = end.end()
        if line[start:].strip():
            sentences.append(line[start:].strip())
    return sentences
