"""The ten families of the micro domain: their inputs, true answers and answer forms.

Each family is a tiny task with one checkable answer per input: an instruction (and two
paraphrases), worked examples never in its pool, a deterministic pool of inputs drawn
from a seed, the truth computed from the input alone, the canonical key two answers are
compared by, plausible wrong answers (for the simulated sampler) and a check of the
answer's form (for the strict parser). Everything here reads model text with string
methods and anchored patterns without nested repetition: linear time on any text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from nanobot_tui.engine.voting.domains.wordcase import EXAMPLES as WORD_EXAMPLES
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY


@dataclass(frozen=True)
class Family:
    """One family: `pool(seed)` its inputs, `truth(item)` each one's answer."""

    name: str
    instructions: tuple[str, str, str]  # the instruction and two paraphrases
    examples: tuple[tuple[str, str], ...]  # (input, answer), never in the pool
    make_pool: Callable[[random.Random], list[str]]
    truth_of: Callable[[str], str]  # ValueError for an input it cannot answer
    valid: Callable[[str], bool]  # the answer form the strict parser accepts
    wrong_of: Callable[[str, str], list[str]]  # (item, truth) -> candidates, best first
    case_matters: bool = False

    def pool(self, seed: int = 0) -> tuple[str, ...]:
        """The family's inputs (40-80, distinct), in an order fixed by `seed`."""
        items = self.make_pool(random.Random(seed))
        random.Random(seed).shuffle(items)
        return tuple(items)

    def truth(self, item: str) -> str:
        return self.truth_of(item)

    def key(self, answer: str) -> str:
        """Whitespace runs count as one space; case only where it is the task."""
        text = " ".join(answer.split())
        return text if self.case_matters else text.casefold()

    def wrong_answers(self, item: str, count: int) -> list[str]:
        """Up to `count` distinct wrong answers (distinct keys, none the truth's key)."""
        truth = self.truth(item)
        seen = {self.key(truth)}
        out: list[str] = []
        for answer in self.wrong_of(item, truth):
            k = self.key(answer)
            if len(out) >= count:
                break
            if answer.strip() and k not in seen:
                seen.add(k)
                out.append(answer)
        return out


def _distinct_sample(rng: random.Random, make: Callable[[], str], size: int) -> list[str]:
    """`size` distinct items from `make()`, in the order first drawn."""
    out: dict[str, None] = {}
    for _ in range(size * 50):
        out[make()] = None
        if len(out) == size:
            break
    return list(out)


# --- 1 wordcase ------------------------------------------------------------------------


def _wordcase_wrong(item: str, truth: str) -> list[str]:
    from nanobot_tui.engine.voting.domains import Step
    from nanobot_tui.engine.voting.domains.wordcase import WordCase

    return WordCase([item]).wrong_answers(Step(0, item), 12)


WORDCASE = Family(
    "wordcase",
    (
        "Rewrite the word in upper case (capital letters). Reply with one line only: answer = WORD",
        "Turn the given word into capital letters. Answer with exactly one line in the form "
        "answer = WORD",
        "Write the word using only capital letters, nothing else. The reply is a single line: "
        "answer = WORD",
    ),
    tuple((w, w.upper()) for w in WORD_EXAMPLES),
    lambda rng: rng.sample(list(VOCABULARY), 60),
    lambda item: _checked(item.upper(), item.isalpha() and item.isascii(), item, "a word"),
    lambda a: a.isascii() and a.isalpha() and a.isupper(),
    _wordcase_wrong,
    case_matters=True,
)


def _checked(answer: str, ok: bool, item: str, what: str) -> str:
    if not ok:
        raise ValueError(f"not {what}: {item!r}")
    return answer


# --- 2 city ----------------------------------------------------------------------------

_PEOPLE = (
    "Anna Ben Clara David Emma Felix Grace Hugo Ines Jonas Karen Leo Maria Nina Omar Paul "
    "Rosa Sam Tara Victor"
).split()
_CITIES = (
    "Lyon Madrid Oslo Berlin Dublin Prague Vienna Lisbon Munich Porto Turin Zurich Geneva "
    "Krakow Seville Bristol Leeds Milan Hamburg Bordeaux"
).split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_CITY_TEMPLATES = (
    "{p}'s parcel leaves {c} on {d}.",
    "{p} flies to {c} on {d}.",
    "On {d}, {p} meets a client in {c}.",
    "{p} will give a talk in {c} next {d}.",
    "The train with {p} on board reaches {c} on {d}.",
)
_CITY_EXAMPLES = (
    ("Mark's parcel leaves Rome on Tuesday.", "Rome"),
    ("Julia flies to Paris on Friday.", "Paris"),
    ("On Monday, Chris meets a client in Athens.", "Athens"),
    ("Laura will give a talk in Boston next Sunday.", "Boston"),
    ("The train with Peter on board reaches Bern on Wednesday.", "Bern"),
)
_KNOWN_CITIES = frozenset(_CITIES) | {c for _, c in _CITY_EXAMPLES}


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?'\"").removesuffix("'s") for w in text.split()]


def _city_truth(item: str) -> str:
    found = [w for w in _words(item) if w in _KNOWN_CITIES]
    if len(found) != 1:
        raise ValueError(f"not a sentence naming one known city: {item!r}")
    return found[0]


def _city_wrong(item: str, truth: str) -> list[str]:
    words = _words(item)
    person = next((w for w in words if w in _PEOPLE), "")
    day = next((w for w in words if w in _DAYS), "")
    others = [c for c in _CITIES if c != truth]
    start = sum(map(ord, item)) % len(others)
    return [person, day, *others[start:], *others[:start]]


CITY = Family(
    "city",
    (
        "Which city does the sentence name? Reply with one line only: answer = CITY",
        "Find the city mentioned in the sentence. Answer with exactly one line in the form "
        "answer = CITY",
        "Name the city in the sentence, nothing else. The reply is a single line: answer = CITY",
    ),
    _CITY_EXAMPLES,
    lambda rng: _distinct_sample(
        rng,
        lambda: rng.choice(_CITY_TEMPLATES).format(
            p=rng.choice(_PEOPLE), c=rng.choice(_CITIES), d=rng.choice(_DAYS)
        ),
        60,
    ),
    _city_truth,
    lambda a: a.isascii() and a.isalpha() and a[:1].isupper(),
    _city_wrong,
)


# --- 3 email ---------------------------------------------------------------------------

_FIRST = "tom anna li sara mark eva john nora raj lena".split()
_LAST = "baker smith chen novak reed silva meyer king lopez shaw".split()
_ORGS = (
    "northwind.com acme.org bluefin.io greenleaf.net starcorp.com riverbank.org "
    "quickmail.net sunpeak.io oakridge.com mapleworks.org"
).split()
_EMAIL_TEMPLATES = (
    "Write to {a} by noon.",
    "Send the invoice to {a} before Friday.",
    "For questions, contact {a}.",
    "The report came from {a} this morning.",
    "Please copy {a} on the reply.",
)
_EMAIL_EXAMPLES = (
    ("Write to jo.park@lumen.com by noon.", "lumen.com"),
    ("Send the invoice to billing@harbor.org before Friday.", "harbor.org"),
    ("For questions, contact max.ortiz@copperline.net.", "copperline.net"),
    ("The report came from kim@veltra.io this morning.", "veltra.io"),
    ("Please copy d.hale@brightpath.com on the reply.", "brightpath.com"),
)
_DOMAIN_FORM = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+", re.IGNORECASE)


def _address(item: str) -> str:
    found = [w.rstrip(".,;:!?)") for w in item.split() if "@" in w]
    if len(found) != 1 or found[0].count("@") != 1:
        raise ValueError(f"not a sentence with one email address: {item!r}")
    return found[0]


def _email_truth(item: str) -> str:
    domain = _address(item).partition("@")[2]
    if not _DOMAIN_FORM.fullmatch(domain):
        raise ValueError(f"not a sentence with one email address: {item!r}")
    return domain


def _email_wrong(item: str, truth: str) -> list[str]:
    address = _address(item)
    local = address.partition("@")[0]
    head, _, tld = truth.rpartition(".")
    others = [o for o in _ORGS if o != truth]
    start = sum(map(ord, item)) % len(others)
    return [address, head, f"www.{truth}", local, tld, *others[start:], *others[:start]]


EMAIL = Family(
    "email",
    (
        "Give the domain of the email address in the sentence (the part after @). Reply "
        "with one line only: answer = DOMAIN",
        "What is the domain of the email address in the sentence? Answer with exactly one "
        "line in the form answer = DOMAIN",
        "Write only the part of the email address after the @ sign. The reply is a single "
        "line: answer = DOMAIN",
    ),
    _EMAIL_EXAMPLES,
    lambda rng: _distinct_sample(
        rng,
        lambda: rng.choice(_EMAIL_TEMPLATES).format(
            a=f"{rng.choice(_FIRST)}{rng.choice(('.', '', '_'))}{rng.choice(_LAST)}"
            f"@{rng.choice(_ORGS)}"
        ),
        60,
    ),
    _email_truth,
    lambda a: _DOMAIN_FORM.fullmatch(a) is not None,
    _email_wrong,
)


# --- 4 dates ---------------------------------------------------------------------------

_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # any year: no Feb 29 asked
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_parts(item: str) -> tuple[int, int, int]:
    """(year, month, day) of "March 5, 2024" or "5 March 2024"."""
    words = item.replace(",", " ").split()
    if len(words) == 3:
        if words[0] in _MONTHS:
            month, day, year = words
        else:
            day, month, year = words
        if month in _MONTHS and day.isdigit() and year.isdigit() and len(year) == 4:
            m = _MONTHS.index(month) + 1
            if 1 <= int(day) <= _MONTH_DAYS[m - 1] and not (m == 2 and int(day) == 29):
                return int(year), m, int(day)
    raise ValueError(f"not a date like 'March 5, 2024' or '5 March 2024': {item!r}")


def _dates_truth(item: str) -> str:
    y, m, d = _date_parts(item)
    return f"{y:04d}-{m:02d}-{d:02d}"


def _dates_wrong(item: str, truth: str) -> list[str]:
    y, m, d = _date_parts(item)
    return [
        f"{y:04d}-{d:02d}-{m:02d}",  # day and month swapped
        f"{y}-{m}-{d}",  # not zero-padded
        f"{y:04d}-{m:02d}-{d + 1:02d}" if d < 28 else f"{y:04d}-{m:02d}-{d - 1:02d}",
        f"{y:04d}-{m % 12 + 1:02d}-{d:02d}",  # the next month
        f"{y + 1:04d}-{m:02d}-{d:02d}",
        f"{d:02d}-{m:02d}-{y:04d}",
        f"{y - 1:04d}-{m:02d}-{d:02d}",
    ]


def _make_date(rng: random.Random) -> str:
    m = rng.randrange(1, 13)
    d = rng.randrange(1, 29)
    y = rng.randrange(1990, 2031)
    if rng.random() < 0.5:
        return f"{_MONTHS[m - 1]} {d}, {y}"
    return f"{d} {_MONTHS[m - 1]} {y}"


_DATE_EXAMPLES = tuple(
    (item, _dates_truth(item))
    for item in (
        "March 5, 2024",
        "17 June 2019",
        "November 30, 2002",
        "1 August 2015",
        "February 14, 1998",
        "9 December 2027",
    )
)
DATES = Family(
    "dates",
    (
        "Write the date in ISO format, year-month-day with two-digit month and day. Reply "
        "with one line only: answer = YYYY-MM-DD",
        "Convert the date to the form YYYY-MM-DD. Answer with exactly one line in the form "
        "answer = YYYY-MM-DD",
        "Give the date as year-month-day (for example 2024-03-05), nothing else. The reply "
        "is a single line: answer = YYYY-MM-DD",
    ),
    _DATE_EXAMPLES,
    lambda rng: [
        x
        for x in _distinct_sample(rng, lambda: _make_date(rng), 70)
        if x not in dict(_DATE_EXAMPLES)
    ][:60],
    _dates_truth,
    lambda a: _ISO.fullmatch(a) is not None,
    _dates_wrong,
)


# --- 5 units ---------------------------------------------------------------------------

# unit -> (the unit it is converted to, factor); integers only.
_CONVERSIONS = {"km": ("m", 1000), "h": ("min", 60), "kg": ("g", 1000)}
_UNITS_EXAMPLES = (
    ("2 km", "2000 m"),
    ("3 h", "180 min"),
    ("7 kg", "7000 g"),
    ("5 h", "300 min"),
    ("12 km", "12000 m"),
)
_UNIT_ANSWER = re.compile(r"\d+ (m|min|g)")


def _unit_parts(item: str) -> tuple[int, str]:
    words = item.split()
    if len(words) == 2 and words[0].isdigit() and words[1] in _CONVERSIONS:
        return int(words[0]), words[1]
    raise ValueError(f"not an amount like '3 km', '2 h' or '4 kg': {item!r}")


def _units_truth(item: str) -> str:
    value, unit = _unit_parts(item)
    target, factor = _CONVERSIONS[unit]
    return f"{value * factor} {target}"


def _units_wrong(item: str, truth: str) -> list[str]:
    value, unit = _unit_parts(item)
    target, factor = _CONVERSIONS[unit]
    return [
        f"{value * factor // 10} {target}",
        f"{value * factor * 10} {target}",
        f"{value} {target}",
        f"{value * 100} {target}",
        f"{value * factor + factor} {target}",
        f"{value * factor} {unit}",
        f"{(value + 1) * factor} {target}",
    ]


def _units_pool(rng: random.Random) -> list[str]:
    examples = {i for i, _ in _UNITS_EXAMPLES}
    every = [f"{v} {u}" for u in _CONVERSIONS for v in range(1, 31)]
    return rng.sample([x for x in every if x not in examples], 60)


UNITS = Family(
    "units",
    (
        "Convert the amount: km to m, h to min, kg to g. Reply with one line only: "
        "answer = NUMBER UNIT",
        "Change kilometres to metres, hours to minutes and kilograms to grams. Answer with "
        "exactly one line in the form answer = NUMBER UNIT",
        "Give the amount in the smaller unit (m, min or g), nothing else. The reply is a "
        "single line: answer = NUMBER UNIT",
    ),
    _UNITS_EXAMPLES,
    _units_pool,
    _units_truth,
    lambda a: _UNIT_ANSWER.fullmatch(a) is not None,
    _units_wrong,
)


# --- 6 code ----------------------------------------------------------------------------

_CODE_NAMES = "x y data items seen cache result value config row".split()
_CODE_ARGS = "name user count city title".split()
_CODE_TEXTS = ("abc", "ok", "hello", "none", "done")
_CODE_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"{r.choice(_CODE_NAMES)} = dict()",
    lambda r: f"{r.choice(_CODE_NAMES)} = list()",
    lambda r: f"{r.choice(_CODE_NAMES)} = tuple()",
    lambda r: f"if {r.choice(_CODE_NAMES)} == None:",
    lambda r: f"if {r.choice(_CODE_NAMES)} != None:",
    lambda r: (
        f'{r.choice(_CODE_NAMES)} = "{r.choice(("", "Hi ", "id: "))}{{}}".format('
        f"{r.choice(_CODE_ARGS)})"
    ),
    lambda r: f'{r.choice(_CODE_NAMES)} = str("{r.choice(_CODE_TEXTS)}")',
)
_CODE_EXAMPLES = (
    ("d = dict()", "d = {}"),
    ("names = list()", "names = []"),
    ("if user == None:", "if user is None:"),
    ('label = "{}".format(word)', 'label = f"{word}"'),
    ('s = str("xyz")', 's = "xyz"'),
    ("if key != None:", "if key is not None:"),
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _code_truth(item: str) -> str:
    """The modern form, by the five rules (ruff's C408, E711, UP032 and UP018 agree)."""
    name, eq, rest = item.partition(" = ")
    if item.startswith("if ") and item.endswith(":"):
        left, _, right = item[3:-1].partition(" ")
        if _IDENT.fullmatch(left) and right in ("== None", "!= None"):
            return f"if {left} {'is' if right[0] == '=' else 'is not'} None:"
    elif eq and _IDENT.fullmatch(name):
        empty = {"dict()": "{}", "list()": "[]", "tuple()": "()"}
        if rest in empty:
            return f"{name} = {empty[rest]}"
        if rest.startswith('str("') and rest.endswith('")') and '"' not in rest[5:-2]:
            return f"{name} = {rest[4:-1]}"
        template, dot, arg = rest.partition('".format(')
        if (
            dot
            and template.startswith('"')
            and template.count("{}") == 1
            and '"' not in template[1:]
            and arg.endswith(")")
            and _IDENT.fullmatch(arg[:-1])
        ):
            return f'{name} = f{template.replace("{}", "{" + arg[:-1] + "}")}"'
    raise ValueError(f"not one of the five modernisable lines: {item!r}")


def _code_wrong(item: str, truth: str) -> list[str]:
    """Each a different program (never a mere respelling such as other quotes)."""
    name, eq, value = truth.partition(" = ")
    out = [
        item,  # left as it was
        truth.replace(" is not None", " not None").replace(" is None", " = None"),
        truth.replace('f"', '"'),
        truth.rstrip(":"),
        f"return {truth}",
        item.replace("(", "[", 1),
    ]
    if eq:
        out += [f"{name} == {value}", f"{name}_ = {value}", f"{name} = None"]
    return out


CODE = Family(
    "code",
    (
        "Modernise the Python line: {} for dict(), [] for list(), () for tuple(), 'is None' "
        "for '== None', an f-string for .format, a plain literal for str(\"...\"). Reply with "
        "one line only: answer = LINE",
        "Rewrite the line of Python in modern style (literals, 'is None', f-strings). Answer "
        "with exactly one line in the form answer = LINE",
        "Give the same Python line written the modern way, nothing else. The reply is a "
        "single line: answer = LINE",
    ),
    _CODE_EXAMPLES,
    lambda rng: [
        x
        for x in _distinct_sample(rng, lambda: rng.choice(_CODE_TEMPLATES)(rng), 70)
        if x not in dict(_CODE_EXAMPLES)
    ][:60],
    _code_truth,
    lambda a: bool(a.strip()) and "\n" not in a and "`" not in a,
    _code_wrong,
    case_matters=True,
)


# --- 7 sentiment -----------------------------------------------------------------------

_POSITIVE = "delicious friendly wonderful clean quick cheerful lovely excellent cosy".split()
_NEGATIVE = "awful rude terrible dirty slow noisy cold bland broken".split()
_THINGS = "food staff room service music coffee view bed".split()
_REVIEW_EXAMPLES = (
    ("The soup was tasty and the waiter was kind.", "positive"),
    ("The hall was dark and the seats were hard.", "negative"),
    ("The shop was bright and the prices were fair.", "positive"),
    ("The bus was late and the driver was grumpy.", "negative"),
    ("The garden was pretty and the tea was fresh.", "positive"),
)


# The examples' adjectives: known to the truth, never in the pool.
_KNOWN_POSITIVE = frozenset(_POSITIVE) | {"tasty", "kind", "bright", "fair", "pretty", "fresh"}
_KNOWN_NEGATIVE = frozenset(_NEGATIVE) | {"dark", "hard", "late", "grumpy"}


def _review(rng: random.Random) -> str:
    words = _POSITIVE if rng.random() < 0.5 else _NEGATIVE
    a, b = rng.sample(_THINGS, 2)
    x, y = rng.sample(words, 2)
    return f"The {a} was {x} and the {b} was {y}."


def _sentiment_truth(item: str) -> str:
    words = set(_words(item))
    good, bad = len(words & _KNOWN_POSITIVE), len(words & _KNOWN_NEGATIVE)
    if good and not bad:
        return "positive"
    if bad and not good:
        return "negative"
    raise ValueError(f"not a review with known adjectives of one kind: {item!r}")


SENTIMENT = Family(
    "sentiment",
    (
        "Is the review positive or negative? Reply with one line only: answer = positive "
        "or answer = negative",
        "Decide whether the review is positive or negative. Answer with exactly one line "
        "in the form answer = positive or answer = negative",
        "Say if the review is good (positive) or bad (negative), nothing else. The reply "
        "is a single line: answer = positive or answer = negative",
    ),
    _REVIEW_EXAMPLES,
    lambda rng: _distinct_sample(rng, lambda: _review(rng), 60),
    _sentiment_truth,
    lambda a: a.casefold() in ("positive", "negative"),
    lambda item, truth: [
        "negative" if truth == "positive" else "positive",
        "neutral",
        "mixed",
    ],
)


# --- 8 numbers -------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """1..999 in English words: 42 -> "forty-two", 305 -> "three hundred five"."""
    if not 1 <= n <= 999:
        raise ValueError(f"only 1..999, not {n}")
    parts = []
    if n >= 100:
        parts.append(f"{_ONES[n // 100]} hundred")
        n %= 100
    if n >= 20:
        parts.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n:
        parts.append(_ONES[n])
    return " ".join(parts)


def _numbers_truth(item: str) -> str:
    total, current = 0, 0
    words = item.casefold().replace("-", " ").split()
    for w in words:
        if w in _ONES[1:]:
            current += _ONES.index(w)
        elif w in _TENS[2:]:
            current += 10 * _TENS.index(w)
        elif w == "hundred" and 1 <= current <= 9 and total == 0:
            total, current = current * 100, 0
        elif w != "and":
            raise ValueError(f"not a number in words from 1 to 999: {item!r}")
    if (
        not words
        or not 1 <= total + current <= 999
        or number_words(total + current)
        != (" ".join(w for w in item.casefold().split() if w != "and"))
    ):
        raise ValueError(f"not a number in words from 1 to 999: {item!r}")
    return str(total + current)


def _numbers_wrong(item: str, truth: str) -> list[str]:
    n = int(truth)
    swapped = truth[::-1].lstrip("0") or "0"
    return [str(n + 1), str(n - 1), swapped, str(n + 10), str(n - 10), str(n % 100),
            str(n * 10), str(n + 100)]  # fmt: skip


_NUMBER_EXAMPLES = tuple((number_words(n), str(n)) for n in (42, 7, 305, 18, 990, 61))
NUMBERS = Family(
    "numbers",
    (
        "Write the number in digits. Reply with one line only: answer = NUMBER",
        "Turn the number written in words into digits. Answer with exactly one line in the "
        "form answer = NUMBER",
        "Give the number as digits (for example 42), nothing else. The reply is a single "
        "line: answer = NUMBER",
    ),
    _NUMBER_EXAMPLES,
    lambda rng: [
        number_words(n)
        for n in rng.sample(range(1, 1000), 70)
        if number_words(n) not in dict(_NUMBER_EXAMPLES)
    ][:60],
    _numbers_truth,
    lambda a: a.isascii() and a.isdigit() and not a.startswith("0"),
    _numbers_wrong,
)


# --- 9 sums ----------------------------------------------------------------------------

_SUM_EXAMPLES = (("3 + 4", "7"), ("12 + 9", "21"), ("5 + 15", "20"), ("8 + 8", "16"),
                 ("19 + 2", "21"), ("1 + 6", "7"))  # fmt: skip


def _sum_parts(item: str) -> tuple[int, int]:
    a, plus, b = item.partition(" + ")
    if plus and a.isdigit() and b.isdigit() and 1 <= int(a) <= 20 and 1 <= int(b) <= 20:
        return int(a), int(b)
    raise ValueError(f"not a sum like '7 + 5' of numbers from 1 to 20: {item!r}")


def _sums_wrong(item: str, truth: str) -> list[str]:
    a, b = _sum_parts(item)
    s = a + b
    return [str(s + 1), str(s - 1), str(s + 10), str(s - 10), str(a * b), str(abs(a - b)),
            f"{a}{b}", str(s + 2), str(s - 2)]  # fmt: skip


SUMS = Family(
    "sums",
    (
        "Add the two numbers. Reply with one line only: answer = NUMBER",
        "What is the sum? Answer with exactly one line in the form answer = NUMBER",
        "Give the result of the addition in digits, nothing else. The reply is a single "
        "line: answer = NUMBER",
    ),
    _SUM_EXAMPLES,
    lambda rng: [
        x
        for x in _distinct_sample(
            rng, lambda: f"{rng.randrange(1, 21)} + {rng.randrange(1, 21)}", 70
        )
        if x not in dict(_SUM_EXAMPLES)
    ][:60],
    lambda item: str(sum(_sum_parts(item))),
    lambda a: a.isascii() and a.isdigit() and not a.startswith("0"),
    _sums_wrong,
)


# --- 10 capitals -----------------------------------------------------------------------

_CAPITAL_LINES = """
France: Paris; Spain: Madrid; Italy: Rome; Germany: Berlin; Portugal: Lisbon
Austria: Vienna; Greece: Athens; Poland: Warsaw; Ireland: Dublin; Norway: Oslo
Sweden: Stockholm; Finland: Helsinki; Denmark: Copenhagen; Hungary: Budapest
Belgium: Brussels; Netherlands: Amsterdam; Switzerland: Bern; Czechia: Prague
Russia: Moscow; Turkey: Ankara; Egypt: Cairo; Kenya: Nairobi; Nigeria: Abuja
Morocco: Rabat; Japan: Tokyo; China: Beijing; India: New Delhi; Thailand: Bangkok
Vietnam: Hanoi; Indonesia: Jakarta; Iran: Tehran; Australia: Canberra; Canada: Ottawa
Mexico: Mexico City; Brazil: Brasilia; Argentina: Buenos Aires; Peru: Lima
Chile: Santiago; Colombia: Bogota; Cuba: Havana; Iceland: Reykjavik
Romania: Bucharest; Ukraine: Kyiv; Pakistan: Islamabad; South Korea: Seoul
New Zealand: Wellington
"""
CAPITALS: dict[str, str] = dict(
    pair.strip().split(": ") for pair in _CAPITAL_LINES.replace("\n", ";").split(";") if pair
)
# Big cities that are not the capital: the likeliest wrong answers.
_NOT_CAPITALS = {
    "Australia": "Sydney", "Canada": "Toronto", "Turkey": "Istanbul", "Brazil": "Rio de Janeiro",
    "Switzerland": "Zurich", "Nigeria": "Lagos", "Morocco": "Casablanca", "India": "Mumbai",
    "Pakistan": "Karachi", "Vietnam": "Ho Chi Minh City", "China": "Shanghai",
    "New Zealand": "Auckland", "Germany": "Munich", "Italy": "Milan", "Spain": "Barcelona",
}  # fmt: skip
_CAPITAL_EXAMPLE_COUNTRIES = ("France", "Japan", "Egypt", "Canada", "Peru", "Norway")
_CAPITAL_EXAMPLES = tuple((c, CAPITALS[c]) for c in _CAPITAL_EXAMPLE_COUNTRIES)


def _capital_truth(item: str) -> str:
    for country, capital in CAPITALS.items():
        if country.casefold() == item.strip().casefold():
            return capital
    raise ValueError(f"not a country in the capitals table: {item!r}")


def _capitals_wrong(item: str, truth: str) -> list[str]:
    country = item.strip()
    others = [c for c in CAPITALS.values() if c != truth]
    start = sum(map(ord, country)) % len(others)
    near = [_NOT_CAPITALS[country]] if country in _NOT_CAPITALS else []
    return [*near, country, *others[start:], *others[:start]]


CAPITALS_FAMILY = Family(
    "capitals",
    (
        "Name the capital city of the country. Reply with one line only: answer = CITY",
        "What is the capital of the given country? Answer with exactly one line in the "
        "form answer = CITY",
        "Give the country's capital, nothing else. The reply is a single line: answer = CITY",
    ),
    _CAPITAL_EXAMPLES,
    lambda rng: [c for c in CAPITALS if c not in _CAPITAL_EXAMPLE_COUNTRIES],
    _capital_truth,
    lambda a: bool(a) and all(w.isascii() and w.isalpha() and w[0].isupper() for w in a.split(" ")),
    _capitals_wrong,
)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (WORDCASE, CITY, EMAIL, DATES, UNITS, CODE, SENTIMENT, NUMBERS, SUMS, CAPITALS_FAMILY)
}
