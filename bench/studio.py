"""Studio benchmark: what the studio adds to the engine's time, and how concurrent clients are served.

    python -m bench.studio                      # the bundled demo-large, 1, 4 and 8 clients
    python -m bench.studio --model bundled-base --clients 1 8 --rounds 2 --images 1 2

Two studios are served on free ports, each in its own process (``app.py``), painting with the same model: one with ``--workers 1``
(one job at a time, how the studio served before its batching engine) and one with the default workers, whose
jobs share the model's batching engine. Through ``gradio_client`` (the API a browser's requests take):

* overhead: time to the final image of a streamed job (previews every 8 tokens) through the studio, against
  ``Painter.stream`` alone with the same prompt, seed and previews, the two alternating so that a machine
  whose speed drifts slows both alike; the median of ``--repeats`` pairs' differences, split into the
  plumbing (the call's time less the stream's own clock inside the studio, which its status reports) and
  the painting's slowdown inside the studio's process (that clock less the stream alone);
* concurrency: N clients each ask ``--rounds`` times, one after the other, for ``--images`` pictures a request
  (distinct seeds; previews every ``--preview-every`` tokens, 8 as in the studio), for each studio: images
  per minute, median and 95th-percentile time to a request's final images. Each case runs ``--trials``
  times on the two studios in turn (a case of 2 rounds of 8 clients is 16 pictures, and one such run of the
  one-at-a-time studio read 81 to 143 images a minute on unchanged code): medians over the trials, and the
  median and range of the trials' ratios.

Ratios are within one run, so they hold on a machine that is not quiet; absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "红苹果"
PREPARED = ("bundled-base", "bundled-large")  # what `python app.py` prepares in the background on the bundled models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: str, workers: int) -> tuple[subprocess.Popen, str]:
    """A studio in its own process, as users run it (a client in the same process would share its GIL)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port),
                               "--workers", str(workers), "--queue-size", "64"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return server, url
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError(f"the studio did not start on port {port}")


def settle(server: subprocess.Popen, idle: float = 0.3, window: float = 3.0, limit: float = 600) -> None:
    """Wait until the studio's process is idle (an idle studio uses ~10% of a core): it warms its models up in
    the background after it starts (traces, preview maps), and two studios warming up beside the measured one
    would share its cores."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    deadline = time.time() + limit
    while time.time() < deadline:
        before = cpu_seconds()
        time.sleep(window)
        if cpu_seconds() - before < idle * window:
            return


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def job(api, model: str, seed: int, preview_every: int, images: int = 1) -> float:
    """Seconds from the request to the final images, through the API (a connected client)."""
    return timed_job(api, model, seed, preview_every, images)[0]


def timed_job(api, model: str, seed: int, preview_every: int, images: int = 1) -> tuple[float, float]:
    """(seconds to the final images through the API, seconds the stream took by its own clock in the studio)."""
    started = time.perf_counter()
    result = api.predict(PROMPT, "plain", model, seed=seed, num_images=images, preview_every=preview_every,
                         api_name="/generate")
    took = time.perf_counter() - started
    return took, float(re.search(r"· ([\d.]+) s ·", result[1]).group(1))


def overhead(url: str, model: str, choice: str, repeats: int) -> dict:
    from painter.serving.pipeline import Painter

    painter = Painter.from_pretrained(model)
    api = client(url)
    rows = []
    for i in range(repeats + 1):  # the first pair warms up
        started = time.perf_counter()
        for _ in painter.stream(PROMPT, seed=i, preview_every=8):
            pass
        alone = time.perf_counter() - started
        rows.append((alone, *timed_job(api, choice, seed=i, preview_every=8)))
    rows = rows[1:]
    return {"engine_s": statistics.median(r[0] for r in rows), "studio_s": statistics.median(r[1] for r in rows),
            "added_s": statistics.median(r[1] - r[0] for r in rows),
            "plumbing_s": statistics.median(r[1] - r[2] for r in rows),
            "slower_painting_s": statistics.median(r[2] - r[0] for r in rows), "pairs": rows}


def concurrency(url: str, model: str, clients: int, rounds: int, images: int = 1, preview_every: int = 8) -> dict:
    apis = [client(url) for _ in range(clients)]

    def rounds_of(i: int) -> list[float]:
        return [job(apis[i], model, 100 + (i * rounds + r) * images, preview_every, images) for r in range(rounds)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(rounds_of, range(clients)) for t in times]
    wall = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "images": images, "images_per_min": 60 * len(latencies) * images / wall,
            "median_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}


def compare(one_url: str, batched_url: str, model: str, clients: int, images: int, args: argparse.Namespace) -> dict:
    """One case on both studios, ``--trials`` times, alternating, so that a machine whose speed drifts between
    trials moves both alike: each studio's medians over the trials, and the ratio of each trial's pair."""
    pairs = [(concurrency(one_url, model, clients, args.rounds, images, args.preview_every),
              concurrency(batched_url, model, clients, args.rounds, images, args.preview_every))
             for _ in range(args.trials)]
    ratios = [b["images_per_min"] / a["images_per_min"] for a, b in pairs]
    side = {name: {key: statistics.median(pair[i][key] for pair in pairs) for key in ("images_per_min", "median_s",
                                                                                        "p95_s")}
            for i, name in enumerate(("one_at_a_time", "batched"))}
    return {"clients": clients, "images": images, **side, "ratio": statistics.median(ratios), "ratios": ratios,
            "trials": pairs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo-large")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--rounds", type=int, default=3, help="requests each client makes, one after the other")
    p.add_argument("--images", type=int, nargs="+", default=[1], help="pictures a request asks for")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trials", type=int, default=3, help="concurrency: alternating trials of each case on each studio")
    p.add_argument("--preview-every", type=int, default=8,
                   help="concurrency: a preview every N tokens, as the studio's default (0: none, what previews cost)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "studio.json"))
    args = p.parse_args(argv)
    results = {"model": args.model}
    choice = Path(args.model).name if Path(args.model).is_dir() else args.model  # how the studio lists it
    one, one_url = serve(args.model, workers=1)
    batched, batched_url = serve(args.model, workers=8)
    try:
        for url in (one_url, batched_url):  # each studio loads and prepares its models once: wait for all
            for model in dict.fromkeys([choice, *PREPARED]):  # of them, or their checks share the cores
                job(client(url), model, 0, 8)
        for server in (one, batched):
            settle(server)
        results["overhead"] = overhead(batched_url, args.model, choice, args.repeats)
        results["cases"] = [compare(one_url, batched_url, choice, n, k, args) for k in args.images
                            for n in args.clients]
    finally:
        one.terminate()
        batched.terminate()
    o = results["overhead"]
    print(f"{choice}: Painter.stream {o['engine_s']:.2f} s, through the studio {o['studio_s']:.2f} s "
          f"(adds {o['added_s']:.2f} s: plumbing {o['plumbing_s']:.2f} s, painting slower by "
          f"{o['slower_painting_s']:.2f} s; medians of {len(o['pairs'])} alternating pairs)")
    print("| clients × images a request | one at a time: images/min | median s | p95 s | batched: images/min | "
          "median s | p95 s | throughput ratio (range over trials) |")
    print("|---|---|---|---|---|---|---|---|")
    for case in results["cases"]:
        a, b = case["one_at_a_time"], case["batched"]
        print(f"| {case['clients']} × {case['images']} | {a['images_per_min']:.0f} | {a['median_s']:.2f} | "
              f"{a['p95_s']:.2f} | {b['images_per_min']:.0f} | {b['median_s']:.2f} | {b['p95_s']:.2f} | "
              f"{case['ratio']:.2f}x ({min(case['ratios']):.2f}-{max(case['ratios']):.2f}) |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
