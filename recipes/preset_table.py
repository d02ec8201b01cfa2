"""Paints every style preset's examples as the studio does (its model choice, template and settings) and
prints how much the pictures look like the preset's domain (``painter.evaluation.domain_measures``).

    python recipes/preset_table.py [--seeds 4] [--prompt 电商=手提包 ...]

Each row: the preset, the model that painted it, the mean of each measure over its prompts and seeds, and how
many prompts pass the preset's domain check (``painter.evaluation.DOMAIN_CHECKS``: at least half their seeds'
pictures pass), with the prompts that do not.

    python recipes/preset_table.py --prompt 电商=红色连衣裙 --prompt 风景=日落时的大海 --prompt 国画=竹子
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from painter.evaluation import DOMAIN_CHECKS, domain_measures
from painter.ui.app import AUTO, Studio
from painter.ui.models import ModelManager
from painter.ui.styles import load_styles

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--prompt", action="append", default=[], metavar="PRESET=PROMPT",
                        help="another prompt for a preset (by its Chinese or id name); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    studio = Studio(ModelManager(), load_styles(ROOT / "styles"))
    extra: dict[str, list[str]] = {}
    for item in args.prompt:
        preset, _, prompt = item.partition("=")
        extra.setdefault(preset, []).append(prompt)
    print("| preset | model | prompts | white border | fills frame | ink tones | subject in colour | in domain |")
    print("|---|---|---|---|---|---|---|---|")
    for style in studio.styles.values():
        plan = studio.plan(style.id, AUTO)
        prompts = list(plan.examples) + extra.get(style.id, []) + extra.get(style.name_zh, [])
        rows, failed = [], []
        check = DOMAIN_CHECKS.get(style.id)
        for prompt in prompts:
            *_, (paths, _, _, _) = studio.paint(prompt, style.id, AUTO, None, None, None, None, 0, args.seeds, 0)
            measures = [domain_measures(Image.open(p)) for p in paths]
            rows += measures
            if check and sum(map(check, measures)) * 2 < len(measures):
                failed.append(prompt)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        passing = f"{len(prompts) - len(failed)} of {len(prompts)}" + (f" (not: {'、'.join(failed)})" if failed else "")
        print(f"| {style.name_zh} {style.name_en} | {plan.model} | {len(prompts)} × {args.seeds} seeds | "
              f"{mean['white_border']:.2f} | {mean['fills_frame']:.2f} | {mean['ink_tones']:.2f} | "
              f"{mean['colour']:.2f} | {passing if check else ''} |")


if __name__ == "__main__":
    main()
