"""Indirect object identification prompts (Wang et al. 2022) for any tokenizer.

"When Mary and John went to the store, John gave a drink to" → " Mary": the answer is the name that
appears once (the indirect object, IO); the subject S appears twice. ABBA puts IO first, BABA puts S
first. The corrupted "ABC" prompt keeps the template, place and object but names three different
people, none of them the clean prompt's IO or S, so it carries no information about the answer.

Names, places and objects are kept only where they are one token *in context*: each prompt is
encoded whole and compared with its pieces encoded one by one, so a tokenizer that merges a name
with its neighbours (or splits it) is caught rather than assumed away. Prompts of one template then
share a length, and each template is one batch that needs no padding.
"""

from __future__ import annotations

import random
import string
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rama.errors import InputError

ORDERS = ("ABBA", "BABA")
FIELDS = ("A", "B", "S", "P", "O")  # the two names in order, the repeated subject, a place, an object
# Built-in templates for real models: {A} and {B} name the pair, {S} repeats the subject, and the
# prompt ends where the indirect object goes.
REAL_TEMPLATES = (
    "When {A} and {B} went to the {P}, {S} gave a {O} to",
    "After {A} and {B} arrived at the {P}, {S} handed a {O} to",
    "While {A} and {B} were sitting in the {P}, {S} passed a {O} to",
    "Yesterday {A} and {B} walked to the {P}. {S} offered a {O} to",
    "At the {P}, {A} and {B} found a {O}. {S} gave it to",
    "Once {A} and {B} got to the {P}, {S} threw a {O} to",
    "Later that day {A} and {B} met at the {P}, where {S} sent a {O} to",
    "On Sunday {A} and {B} cleaned the {P}, and then {S} lent a {O} to",
    "Then {A} and {B} had lunch at the {P}, and {S} showed a {O} to",
    "Since {A} and {B} were both at the {P}, {S} mailed a {O} to",
)
# fmt: off
NAMES = (
    "Mary", "John", "Alice", "Bob", "Sarah", "Tom", "Emma", "James", "Anna", "David", "Lucy", "Mark", "Kate",
    "Paul", "Jane", "Peter", "Rose", "Sam", "Clara", "Jack", "Michael", "Robert", "William", "Richard",
    "Thomas", "Daniel", "Andrew", "Joseph", "Linda", "Susan", "Karen", "Lisa", "Laura", "Amy", "Helen", "Ryan",
    "Kevin", "George", "Edward", "Henry", "Frank", "Grace", "Eric", "Adam", "Martin", "Simon", "Rachel",
    "Julia", "Emily", "Hannah",
)
PLACES = (
    "store", "park", "school", "office", "market", "station", "library", "beach", "garden", "restaurant",
    "hospital", "museum",
)
OBJECTS = (
    "book", "drink", "ball", "key", "letter", "gift", "bag", "ring", "pen", "cake", "phone", "card", "hat",
    "box", "bottle", "basket",
)
# fmt: on
MIN_NAMES = 5  # two for the clean prompt, three others for its ABC corruption


@dataclass(frozen=True)
class IOIPrompts:
    """One template's prompts: equal lengths, so one batch without padding."""

    clean: torch.Tensor  # [n, pos] token ids (BOS first when the tokenizer adds one)
    corrupted: torch.Tensor  # [n, pos] ABC prompts, same lengths
    io: torch.Tensor  # [n] token id of the indirect object (the answer, as the next token)
    s: torch.Tensor  # [n] token id of the subject (as the next token)
    end: torch.Tensor  # [n] position whose next-token prediction is the answer
    positions: dict[str, torch.Tensor]  # "IO", "S1", "S2", "S1+1", "END" -> [n]
    templates: torch.Tensor  # [n] template index
    texts: list[str]
    corrupted_texts: list[str]
    orders: list[str]  # "ABBA" or "BABA" per prompt

    def __len__(self) -> int:
        return int(self.clean.shape[0])


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    positions: dict[str, int]  # field -> token position (first occurrence), before any BOS


class _Encoder:
    """Encodes filled templates piece by piece and checks the pieces against the whole."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.unk = getattr(tokenizer, "unk_token_id", None)
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        self.prefix: list[int] = with_special[: len(with_special) - len(plain)] if plain else []
        self.cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.cache[text]

    def single(self, text: str) -> int | None:
        """The token id of `text` if it is exactly one known token, else None."""
        ids = self.ids(text)
        return ids[0] if len(ids) == 1 and ids[0] != self.unk else None

    def encode(self, template: str, values: dict[str, str]) -> _Encoded | None:
        """Token ids of the filled template, or None when the whole differs from its pieces."""
        ids: list[int] = []
        positions: dict[str, int] = {}
        for literal, field, value in pieces(template, values):
            if literal:
                ids += self.ids(literal)
            if field is not None:
                token = self.single(value)
                if token is None:
                    return None
                positions.setdefault(field, len(ids))
                ids.append(token)
        whole = self.ids(template.format(**values))
        return _Encoded(ids, positions) if whole == ids else None


def pieces(template: str, values: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """(literal, field, value) triples; a space before a field moves into the value (" Mary"), as BPE
    tokenizers attach it to the word that follows."""
    out: list[tuple[str, str | None, str]] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if field is None:
            out.append((literal, None, ""))
            continue
        space = literal.endswith(" ")
        out.append((literal[:-1] if space else literal, field, (" " if space else "") + values[field]))
    return out


def check_templates(templates: Sequence[str]) -> list[str]:
    """Each template names {A}, {B} and {S} once each (S after both) and uses no other field than P, O."""
    if not templates:
        raise InputError(
            "give at least one IOI template, e.g. 'When {A} and {B} went to the {P}, {S} gave a {O} to'"
        )
    for template in templates:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown or any(fields.count(f) != 1 for f in "ABS"):
            raise InputError(
                f"IOI template {template!r} must hold {{A}}, {{B}} and {{S}} once each and no fields but "
                f"{{P}} (place) and {{O}} (object); found {fields}"
            )
        if fields.index("S") < max(fields.index("A"), fields.index("B")):
            raise InputError(
                f"IOI template {template!r}: {{S}} (the repeated subject) must come after {{A}} and {{B}}"
            )
    return list(templates)


def single_token_words(
    encoder: _Encoder, words: Sequence[str], forms: set[str], kind: str, minimum: int
) -> list[str]:
    """The words that are one token in every form the templates use them in (" Mary", and "Mary"
    where a template starts with the field); warns about the others, refuses too few."""
    kept = [w for w in words if all(encoder.single(form.format(w)) is not None for form in forms)]
    dropped = [w for w in words if w not in kept]
    if len(kept) < minimum:
        example = dropped[0] if dropped else ""
        pieces_ = [encoder.tokenizer.decode([i]) for i in encoder.ids(" " + example)] if example else []
        raise InputError(
            f"IOI needs at least {minimum} {kind} that are single tokens for this tokenizer; only "
            f"{len(kept)} of {len(words)} are ({kept}). Not single tokens: {dropped}"
            + (f" (e.g. {' ' + example!r} → {pieces_})" if pieces_ else "")
            + f". Pass {kind} the tokenizer keeps whole, with the leading space a mid-sentence word has."
        )
    if dropped:
        warnings.warn(
            f"IOI prompts: dropped {len(dropped)} {kind} that are not single tokens for this tokenizer: "
            f"{dropped}",
            stacklevel=3,
        )
    return kept


def field_forms(templates: Sequence[str], fields: str) -> set[str]:
    """The forms a word takes in the templates' fields: " {}" after a space, "{}" at the start of a
    prompt or after punctuation; names also as " {}", the answer's form as the next token."""
    forms = {" {}"} if "A" in fields else set()
    for template in templates:
        forms |= {
            value
            for _, field, value in pieces(template, dict.fromkeys(FIELDS, "{}"))
            if field is not None and field in fields
        }
    return forms


@dataclass(frozen=True)
class _Words:
    names: list[str]
    places: list[str]
    objects: list[str]


def _draw(rng: random.Random, words: _Words, order: str) -> tuple[dict[str, str], dict[str, str], str, str]:
    """(clean values, ABC values, io, s) for one prompt."""
    io, s, *others = rng.sample(words.names, MIN_NAMES)
    place = rng.choice(words.places) if words.places else ""
    thing = rng.choice(words.objects) if words.objects else ""
    first, second = (io, s) if order == "ABBA" else (s, io)
    clean = {"A": first, "B": second, "S": s, "P": place, "O": thing}
    corrupted = {"A": others[0], "B": others[1], "S": others[2], "P": place, "O": thing}
    return clean, corrupted, io, s


def _group(
    encoder: _Encoder,
    template: str,
    index: int,
    count: int,
    words: _Words,
    orders: Sequence[str],
    rng: random.Random,
) -> IOIPrompts:
    """`count` prompts of one template, orders alternating; draws that do not tokenize piece by piece
    (or whose ABC version differs in length) are redrawn."""
    rows: list[tuple[_Encoded, _Encoded, str, str, str, str, str]] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 20 * count + 50:
            raise template_error(encoder, template, words)
        order = orders[len(rows) % len(orders)]
        values, abc, io, s = _draw(rng, words, order)
        clean, corrupted = encoder.encode(template, values), encoder.encode(template, abc)
        if clean is None or corrupted is None or len(clean.ids) != len(corrupted.ids):
            continue
        rows.append((clean, corrupted, template.format(**values), template.format(**abc), order, io, s))
    bos = len(encoder.prefix)
    first = {"ABBA": "A", "BABA": "B"}
    io_field = [first[r[4]] for r in rows]
    s1_field = ["B" if f == "A" else "A" for f in io_field]
    positions = {
        "IO": torch.tensor([r[0].positions[f] + bos for r, f in zip(rows, io_field, strict=True)]),
        "S1": torch.tensor([r[0].positions[f] + bos for r, f in zip(rows, s1_field, strict=True)]),
        "S2": torch.tensor([r[0].positions["S"] + bos for r in rows]),
    }
    positions["S1+1"] = positions["S1"] + 1
    length = bos + len(rows[0][0].ids)
    positions["END"] = torch.full((count,), length - 1)
    answer = [encoder.single(" " + r[5]) for r in rows]
    subject = [encoder.single(" " + r[6]) for r in rows]
    return IOIPrompts(
        clean=torch.tensor([encoder.prefix + r[0].ids for r in rows]),
        corrupted=torch.tensor([encoder.prefix + r[1].ids for r in rows]),
        io=torch.tensor(answer),
        s=torch.tensor(subject),
        end=positions["END"].clone(),
        positions=positions,
        templates=torch.full((count,), index),
        texts=[r[2] for r in rows],
        corrupted_texts=[r[3] for r in rows],
        orders=[r[4] for r in rows],
    )


def template_error(encoder: _Encoder, template: str, words: _Words) -> InputError:
    """Why no draw of a template tokenized piece by piece: unknown words, or merges across a field."""
    values = {"A": words.names[0], "B": words.names[1], "S": words.names[1]}
    text = template.format(P=(words.places or [""])[0], O=(words.objects or [""])[0], **values)
    unknown = [w for w in text.split() if encoder.unk is not None and encoder.unk in encoder.ids(" " + w)]
    if unknown:
        return InputError(
            f"IOI template {template!r}: this tokenizer does not know {unknown} (it reads them as its unknown "
            "token); use templates written in its vocabulary"
        )
    return InputError(
        f"IOI template {template!r} does not tokenize word by word with this tokenizer (a name, place or "
        "object merges with its neighbours); rephrase it or leave it out"
    )


def ioi_prompts(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    orders: Sequence[str] = ORDERS,
    template_set: str | Sequence[str] = "real",
    *,
    n_templates: int | None = None,
    names: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> list[IOIPrompts]:
    """`n` IOI prompts with their ABC corruptions, as one group of equal length per template (the
    prompts dealt round-robin over the templates, ABBA and BABA alternating within each).

    `template_set` is "real" (the built-in templates) or a sequence of templates with fields {A}, {B},
    {S} and optionally {P}, {O}; `n_templates` keeps the first few. Names (and places, objects) that
    are not single tokens are dropped with a warning; fewer than enough raises `InputError`."""
    if n < 1:
        raise InputError(f"ask for at least one IOI prompt; got n={n}")
    bad = [o for o in orders if o not in ORDERS]
    if bad or not orders:
        raise InputError(f"IOI orders are 'ABBA' and 'BABA'; got {list(orders)}")
    if isinstance(template_set, str):
        if template_set != "real":
            raise InputError(f"template_set is 'real' or a list of templates; got {template_set!r}")
        template_set = REAL_TEMPLATES
    templates = check_templates(template_set)[: n_templates or None]
    encoder = _Encoder(tokenizer)
    words = _Words(
        single_token_words(encoder, names or NAMES, field_forms(templates, "ABS"), "names", MIN_NAMES),
        single_token_words(encoder, places or PLACES, field_forms(templates, "P"), "places", 1)
        if field_forms(templates, "P") else [],
        single_token_words(encoder, objects or OBJECTS, field_forms(templates, "O"), "objects", 1)
        if field_forms(templates, "O") else [],
    )  # fmt: skip
    rng = random.Random(seed)
    counts = [len(range(t, n, len(templates))) for t in range(len(templates))]
    return [
        _group(encoder, template, index, count, words, orders, rng)
        for index, (template, count) in enumerate(zip(templates, counts, strict=True))
        if count
    ]


def ioi_logit_difference(logits: torch.Tensor, prompts: IOIPrompts) -> torch.Tensor:
    """`[n]`: logit(IO) − logit(S) at END, from `logits [n, pos, vocab]`."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at_end = logits[rows, prompts.end.to(logits.device)]  # [n, vocab]
    return at_end[rows, prompts.io.to(logits.device)] - at_end[rows, prompts.s.to(logits.device)]


def ioi_accuracy(logits: torch.Tensor, prompts: IOIPrompts) -> tuple[float, float]:
    """(share of prompts whose IO logit beats S's, share whose top prediction at END is IO)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at_end = logits[rows, prompts.end.to(logits.device)]
    top = at_end.argmax(-1).cpu() == prompts.io
    return float((ioi_logit_difference(logits, prompts) > 0).float().mean()), float(top.float().mean())
