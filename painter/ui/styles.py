"""Style presets: one JSON file each in ``styles/``; users add a preset by dropping a file there.

A preset names itself in Chinese and English, says which model suits it, wraps the prompt in a template
("{prompt}" plus optional words before and after) and brings sampling defaults and example prompts. A file
with errors is skipped with a logged message; the studio still starts.

A preset whose model may be missing (the pai-painter domain models, which an offline machine or a Space
without downloads lacks) says how to paint its domain with a bundled model instead: its ``fallback`` names
that model, a template with the words that model knows for the domain (白底商品图, 风景, 水墨画) and example
prompts it paints. The fallback paints with that model's own recommended sampling, not with the settings
tuned for the missing model. A template (a preset's or a fallback's) applies to a bundled or custom model only
when its config lists the template's word ("domain_words"): any other such model gets the prompt as typed.

"model" (a preset's or a fallback's) is a name or a list of names in order of preference: the bundled 128 px
pair (large, then base), else the 64 px demo-large.
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
class Fallback:
    models: tuple[str, ...]  # in order of preference
    template: str = "{prompt}"
    examples: tuple[str, ...] = ()



@dataclass(frozen=True)
class StylePreset:
    id: str
    name_zh: str
    name_en: str
    description: str = ""
    models: tuple[str, ...] = ()  # the models that suit it, in order of preference
    template: str = "{prompt}"
    sampling: dict = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    fallback: Fallback | None = None

    @property
    def label(self) -> str:
        return f"{self.name_zh} · {self.name_en}"

    def apply(self, prompt: str) -> str:
        return apply_template(self.template, prompt)


def apply_template(template: str, prompt: str) -> str:
    return template.replace("{prompt}", prompt.strip())


def template_known(template: str, words) -> bool:
    """Whether a model that learnt these words (its config's ``domain_words``) paints this template: it adds
    nothing to the prompt, or one of the words it adds is one the model learnt."""
    return template == "{prompt}" or any(word in template for word in words)


def _template(data: dict, where: str) -> str:
    template = data.get("template", "{prompt}")
    if not isinstance(template, str) or "{prompt}" not in template:
        raise ValueError(f'{where}"template" must be a string containing {{prompt}}')
    return template


def _examples(data: dict, where: str) -> tuple[str, ...]:
    examples = data.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(e, str) and e.strip() for e in examples):
        raise ValueError(f'{where}"examples" must be a list of prompts')
    return tuple(examples)


def _models(data: dict, where: str) -> tuple[str, ...]:
    models = data.get("model")
    if models is None:
        return ()
    models = [models] if isinstance(models, str) else models
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise ValueError(f'{where}"model" must be a model name or a list of names in order of preference')
    return tuple(models)


def _fallback(data) -> Fallback | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not data.get("model"):
        raise ValueError('"fallback" must be an object naming a "model"')
    unknown = set(data) - {"model", "template", "examples"}
    if unknown:
        raise ValueError(f'"fallback" has unknown keys {sorted(unknown)} (model, template, examples)')
    return Fallback(_models(data, "fallback "), _template(data, "fallback "), _examples(data, "fallback "))


def parse_preset(data: dict, source: str) -> StylePreset:
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    name = data.get("name")
    if not isinstance(name, dict) or not name.get("zh") or not name.get("en"):
        raise ValueError('needs "name": {"zh": ..., "en": ...}')
    sampling = sampling_settings(data.get("sampling", {}))
    return StylePreset(id=str(data.get("id") or Path(source).stem), name_zh=name["zh"], name_en=name["en"],
                       description=str(data.get("description", "")), models=_models(data, ""),
                       template=_template(data, ""), sampling=sampling, examples=_examples(data, ""),
                       fallback=_fallback(data.get("fallback")))


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
