"""Chooses a bundled model's recommended sampling settings: paints training captions, held-out (subject, style)
pairs and paraphrased prompts with 4 seeds under each candidate top-k / top-p / temperature / guidance scale
(the bundled GPTs learnt with caption dropout; guidance pulls a picture away from the plain white that every
caption's first cells share; top-p keeps few codes where the model is sure and more where it is not), and
keeps the setting with the best mean R@1 among those that give different pictures for different seeds while
staying on the prompt (issue 12: over 4 seeds the share of correct pictures within 0.1 of seed 0's, and for
>= 60% of prompts two correct pictures more than 8 grey levels RMS apart). Prints "TOP_K TOP_P TEMPERATURE
GUIDANCE" on stdout and writes every setting's numbers to --output.

    python recipes/sampling_sweep.py --model runs/bundled-base-read --data data/bundled --output sweep.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from painter import Painter
from painter.evaluation import retrieval

# (top_k, top_p, temperature, guidance_scale). Of the guided settings only top-k 10, 0.7 at 1.5 was ever chosen
# (two of bundled-base's stages), so it alone stays. Top-k 5 at 0.5 is where bundled-base was right most often
# while its pictures still varied (R@1 0.52 on 100 training captions, variety 81%); top-p 0.98-0.99 at
# temperature 1 is where bundled-large was (0.79 and 0.75, variety 57% and 69%, against 0.75 and 58% at top-k
# 20, 0.8; at top-p 0.95 0.85 but 35%).
SETTINGS = [(5, 1.0, 0.5, 1.0), (10, 1.0, 0.7, 1.0), (20, 1.0, 0.8, 1.0), (50, 1.0, 1.0, 1.0),
            (100, 0.98, 1.0, 1.0), (100, 0.99, 1.0, 1.0), (10, 1.0, 0.7, 1.5)]
VARIETY, STABILITY = 0.6, 0.1


def measure(painter: Painter, data: Path, top_k: int, top_p: float, temperature: float, guidance: float,
            captions: int, seeds: int) -> dict:
    sets = {"train": (data / "train.tsv", None, False), "heldout": (data / "heldout.tsv", data / "train.tsv", True),
            "paraphrase": (data / "paraphrase.tsv", data / "train.tsv", False)}
    out: dict = {"top_k": top_k, "top_p": top_p, "temperature": temperature, "guidance_scale": guidance}
    for name, (source, pool, same_style) in sets.items():
        found = retrieval(painter, source, captions, seeds=seeds, top_k=top_k, top_p=top_p, temperature=temperature,
                          pool=pool, same_style=same_style, guidance_scale=guidance)
        per_seed = found.per_seed()
        out[name] = {"r_at_1": found.r_at_1, "per_seed": per_seed, "variety": found.variety(),
                     "stable": max(abs(s - per_seed[0]) for s in per_seed) <= STABILITY}
    return out


def acceptable(result: dict) -> bool:
    train = result["train"]
    return train["stable"] and (train["variety"] or 0.0) >= VARIETY


def score(result: dict) -> float:
    return sum(result[name]["r_at_1"] for name in ("train", "heldout", "paraphrase")) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--captions", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--settings", nargs="+", metavar="TOP_K:TOP_P:TEMPERATURE:GUIDANCE", help="instead of SETTINGS")
    args = parser.parse_args()
    settings = ([(int(k), float(p), float(t), float(g)) for k, p, t, g in (s.split(":") for s in args.settings)]
                if args.settings else SETTINGS)
    logging.basicConfig(level=logging.WARNING)
    painter = Painter.from_pretrained(args.model, device="cpu")
    results = [measure(painter, args.data, k, p, t, g, args.captions, args.seeds) for k, p, t, g in settings]
    good = [r for r in results if acceptable(r)] or results  # none varied enough: the best R@1 anyway
    best = max(good, key=score)
    args.output.write_text(json.dumps({"chosen": best, "settings": results}, indent=1, ensure_ascii=False))
    print(best["top_k"], best["top_p"], best["temperature"], best["guidance_scale"])


if __name__ == "__main__":
    main()
