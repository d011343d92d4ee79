"""The import report: what an import read, kept, cleaned and skipped, with a note on the first skip of each kind.

Nothing an importer drops is silent: every kind of skip an importer can make is listed (zeros
included), counted, and described by where it first occurred. The ``*_SKIPS`` tuples name the
kinds the shared machinery (builder, assembly, image decoding, features) counts; an importer adds
its own source-specific kinds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CLEANED_FIELDS = ("title", "category")  # text fields cleaned by the builder, counted per field
RELATION_SKIPS = (
    "relations_self", "relations_duplicate", "relations_unknown_item", "relations_dropped_item",
)
PERSONAL_SKIPS = (
    "personal_pairs_self", "personal_pairs_duplicate", "personal_pairs_unknown_item", "personal_pairs_dropped_item",
    "users_without_pairs",
)
ITEM_SKIPS = ("items_duplicate", "items_without_category")
IMAGE_SKIPS = ("images_missing", "images_corrupt", "items_dropped_no_image")
FEATURE_SKIPS = ("items_without_features",)


@dataclass
class ImportReport:
    """Counts of what an import read, kept and skipped, with where each kind of skip first occurred.

    ``skipped`` lists every kind an importer can skip, zeros included, so a reader sees
    what was checked; ``notes`` says where the first occurrence of each kind was.
    """

    source: str
    inputs: dict[str, str]
    skip_kinds: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    cleaned: dict[str, int] = field(default_factory=lambda: {f: 0 for f in CLEANED_FIELDS})

    def __post_init__(self) -> None:
        for k in self.skip_kinds:
            self.skipped.setdefault(k, 0)

    def skip(self, kind: str, n: int = 1, note: str | None = None) -> None:
        """Count ``n`` skipped inputs of ``kind``; ``note`` describes the first one."""
        if n <= 0:
            return
        self.skipped[kind] = self.skipped.get(kind, 0) + n
        if note is not None and kind not in self.notes:
            self.notes[kind] = note

    def count(self, what: str, n: int = 1) -> None:
        self.read[what] = self.read.get(what, 0) + n

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "inputs": dict(self.inputs),
            **self.result,
            "read": dict(self.read),
            "skipped": dict(self.skipped),
            "skipped_total": int(sum(self.skipped.values())),
            "cleaned": dict(self.cleaned),
            "notes": dict(self.notes),
            "policies": dict(self.policies),
            **self.extra,
        }
