"""Prompt files, versioned by hash.

Each prompt is a text file in this folder (or in a ``prompts_dir`` a backend is given, which
overrides files of the same name). Fields are ``$name`` (``string.Template``), so JSON braces in a
prompt need no escaping. The hash of the text goes into every record's provenance: change a prompt
and the records it made say so.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from groundcap.errors import ParamsError

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def render(self, **fields: object) -> str:
        try:
            return string.Template(self.text).substitute({k: str(v) for k, v in fields.items()})
        except KeyError as exc:
            raise ParamsError(f"prompt {self.name!r} needs field {exc.args[0]!r}") from None


def load(name: str, prompts_dir: str | Path | None = None) -> Prompt:
    """Prompt ``name`` (file ``<name>.txt``), from ``prompts_dir`` first, then the packaged ones."""
    folders = [Path(prompts_dir)] if prompts_dir else []
    for folder in (*folders, HERE):
        path = folder / f"{name}.txt"
        if path.is_file():
            return Prompt(name, path.read_text(encoding="utf-8"))
    raise ParamsError(f"no prompt {name}.txt in {', '.join(str(f) for f in (*folders, HERE))}")


def combined_hash(prompts: list[Prompt]) -> str:
    """One hash for a backend that uses several prompts."""
    return hashlib.sha256("\n".join(f"{p.name}:{p.hash}" for p in prompts).encode()).hexdigest()[:16]


def read_vocabulary(path: str) -> list[str]:
    """Labels, one a line (``""``: the packaged list); blank lines and ``#`` comments skipped, duplicates dropped."""
    text = Path(path or HERE / "vocabulary.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines()]
    labels = list(dict.fromkeys(label for label in labels if label and not label.startswith("#")))
    if not labels:
        raise ParamsError(f"vocabulary {path!r} has no labels")
    return labels
