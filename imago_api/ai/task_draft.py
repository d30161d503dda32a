"""A task drafted from a request in plain words, by rules: no model, and the same answer every time.

The rules read English and French: urgency words set the priority, the first date expression in the text sets
the due date, bullet or numbered lines become the checklist, and the most frequent words become the tags.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from imago_api.ai.models import TaskDraft
from imago_api.ai.words import frequent_words, split_sentences, words

TITLE_CHARS = 80
MAX_TAGS = 5

# "not urgent" must read as low, so the low phrases are looked for first.
_LOW = re.compile(r"\b(when you can|when you have time|someday|some day|low priority|no rush|not urgent|whenever|"
                  r"eventually|quand tu peux|quand vous pouvez|pas urgent|pas pressé)\b", re.IGNORECASE)
_HIGH = re.compile(r"\b(urgent|urgently|asap|as soon as possible|immediately|right away|critical|high priority|"
                   r"top priority|emergency|urgence|immédiatement|tout de suite|critique|prioritaire)\b",
                   re.IGNORECASE)

_WEEKDAYS = {name: i for names in (
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")) for i, name in enumerate(names)}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5,
            "sept": 7, "huit": 8, "neuf": 9, "dix": 10}
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_RELATIVE_DAYS = {
    re.compile(r"\b(today|tonight|this evening|aujourd'hui|ce soir)\b", re.IGNORECASE): 0,
    re.compile(r"\b(tomorrow|demain)\b", re.IGNORECASE): 1,
    re.compile(r"\b(the day after tomorrow|après-demain)\b", re.IGNORECASE): 2,
}
_IN_N = re.compile(r"\b(?:in|within|dans|d'ici) (\d+|" + "|".join(_NUMBERS) + r") (days?|weeks?|jours?|semaines?)\b",
                   re.IGNORECASE)
_WEEKDAY = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b", re.IGNORECASE)

_BULLET = re.compile(r"^\s*(?:[-*•+–]|\d{1,3}[.)]|\[[ xX]?\])\s+(.*\S)")
# What a title can do without: "URGENT:", "[todo]", "please", "merci de".
_PREAMBLE = re.compile(r"^(?:\[?(?:urgent|asap|important|todo|to do|fyi)\]?\s*[:!\-–]+\s*)*"
                       r"(?:please|pls|could you|can you|would you|merci de|peux-tu|pouvez-vous)?\s*",
                       re.IGNORECASE)

# Words that say when or how urgent, not what the task is about.
_NOT_TAGS = frozenset(words(" ".join([
    *_WEEKDAYS, *_NUMBERS, _LOW.pattern, _HIGH.pattern,
    "today tonight tomorrow evening day days week weeks next end aujourd hui soir demain jour jours semaine "
    "semaines prochain prochaine priority asap urgent important todo fyi thanks thank merci"])))


def due_date(text: str, today: date) -> date | None:
    """The date meant by the first date expression in `text`; a weekday means the next one after today.
    An expression that lands past year 9999 ("in 99999999999 days") names no date."""
    found: list[tuple[int, date | None]] = []
    for match in _ISO_DATE.finditer(text):
        try:
            found.append((match.start(), date(*(int(g) for g in match.groups()))))
        except ValueError:
            continue
    for pattern, days in _RELATIVE_DAYS.items():
        found += [(m.start(), _days_after(today, days)) for m in pattern.finditer(text)]
    for match in _IN_N.finditer(text):
        count = match.group(1).lower()
        n = int(count) if count.isdigit() else _NUMBERS[count]
        weeks = match.group(2).lower().startswith(("week", "semaine"))
        found.append((match.start(), _days_after(today, n * 7 if weeks else n)))
    for match in _WEEKDAY.finditer(text):
        ahead = (_WEEKDAYS[match.group(1).lower()] - today.weekday()) % 7 or 7
        found.append((match.start(), _days_after(today, ahead)))
    return min(found, key=lambda hit: hit[0])[1] if found else None


def _days_after(today: date, days: int) -> date | None:
    try:
        return today + timedelta(days=days)
    except OverflowError:  # past date.max, or more days than timedelta holds
        return None


def priority(text: str) -> str:
    if _LOW.search(text):
        return "low"
    return "high" if _HIGH.search(text) else "medium"


def title(sentence: str) -> str:
    """The first sentence without its preamble; past 80 characters its first clause, else cut on a word."""
    text = _PREAMBLE.sub("", sentence.strip(), count=1).rstrip(".!?…").strip() or sentence.strip()
    if len(text) > TITLE_CHARS:
        clause = re.split(r"[,;:—–(]| - ", text, maxsplit=1)[0].strip()
        if len(clause.split()) >= 3:
            text = clause
    if len(text) > TITLE_CHARS:
        text = text[:TITLE_CHARS + 1].rsplit(" ", 1)[0].rstrip(",;:-–— ") + "…"
    return text[:1].upper() + text[1:]


def draft_task(description: str, today: date) -> TaskDraft:
    lines = [" ".join(line.split()) for line in description.splitlines() if line.strip()]
    bullets = [m.group(1) for line in lines if (m := _BULLET.match(line))]
    prose = "\n".join(line for line in lines if not _BULLET.match(line))
    sentences = split_sentences(prose)
    checklist = bullets or (sentences if len(sentences) > 1 else [])
    first = (sentences or bullets or [description])[0]
    text = "\n".join(lines)
    return TaskDraft(title=title(first), description=text[:5000], priority=priority(text),
                     due_date=due_date(text, today), tags=frequent_words(text, MAX_TAGS, exclude=_NOT_TAGS),
                     checklist=checklist[:20])
