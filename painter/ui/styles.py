"""Style presets: one JSON file each in ``styles/``; users add a preset by dropping a file there.

A preset names itself in Chinese and English, says which model suits it, wraps the prompt in a template
("{prompt}" plus optional words before and after) and brings sampling defaults and example prompts. A file
with errors is skipped with a logged message; the studio still starts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from painter.errors import SamplingError
from painter.sampling import sampling_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StylePreset:
    id: str
    name_zh: str
    name_en: str
    description: str = ""
    model: str | None = None  # preferred model name
    template: str = "{prompt}"
    sampling: dict = field(default_factory=dict)
    examples: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name_zh} · {self.name_en}"

    def apply(self, prompt: str) -> str:
        return self.template.replace("{prompt}", prompt.strip())


def parse_preset(data: dict, source: str) -> StylePreset:
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    name = data.get("name")
    if not isinstance(name, dict) or not name.get("zh") or not name.get("en"):
        raise ValueError('needs "name": {"zh": ..., "en": ...}')
    template = data.get("template", "{prompt}")
    if not isinstance(template, str) or "{prompt}" not in template:
        raise ValueError('"template" must be a string containing {prompt}')
    sampling = sampling_settings(data.get("sampling", {}))
    examples = data.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        raise ValueError('"examples" must be a list of strings')
    return StylePreset(id=str(data.get("id") or Path(source).stem), name_zh=name["zh"], name_en=name["en"],
                       description=str(data.get("description", "")), model=data.get("model"), template=template,
                       sampling=sampling, examples=tuple(examples))


def load_styles(folder: str | Path) -> list[StylePreset]:
    """Every valid preset in ``folder`` (sorted by file name; 'plain' first)."""
    presets = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            presets.append(parse_preset(json.loads(path.read_text(encoding="utf-8")), path.name))
        except (ValueError, TypeError, UnicodeDecodeError, SamplingError) as exc:
            log.warning("style preset %s skipped: %s", path, exc)
    presets.sort(key=lambda p: (p.id != "plain", p.id))
    if not presets:
        presets.append(StylePreset(id="plain", name_zh="通用", name_en="Plain"))
    return presets
