"""The README's studio screenshot, as a new user meets the studio offline: `python app.py` on the bundled
models, a domain preset, one of its fallback's examples, in headless Chromium (Debian's chromium and
chromium-driver, and a CJK font).

    python recipes/studio_screenshot.py --style 电商 --prompt 连衣裙 --seed 1 --output docs/studio.png

With ``--url`` it photographs a studio that is already running instead, for example one started by the
README's command in a fresh virtual environment (which need not have selenium).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1500", "--lang=zh-CN")


def studio(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit(f"the studio did not start on port {port}")


def main(argv: list[str] | None = None) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--style", default="电商")
    p.add_argument("--prompt", default="连衣裙")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--output", default=str(ROOT / "docs" / "studio.png"))
    p.add_argument("--url", help="a running studio (default: start `python app.py` from this checkout)")
    args = p.parse_args(argv)
    server, url = None, args.url
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server, url = studio(port), f"http://127.0.0.1:{port}/"
    profile = tempfile.mkdtemp(prefix="painter-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        wait = WebDriverWait(driver, 300)
        driver.get(url)
        wait.until(lambda d: not d.find_element(By.CSS_SELECTOR, "#preparing").text.strip())  # models ready

        def choose(elem_id: str, text: str) -> None:
            driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
            wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"#{elem_id} li[data-testid='dropdown-option']"
                                                   f"[aria-label*='{text}']"))).click()

        choose("style", args.style)
        for elem_id, value in (("seed", args.seed), ("images", args.images)):
            box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
            box.clear()
            box.send_keys(str(value))
        driver.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys(args.prompt)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda d: "256 / 256 tokens" in d.find_element(By.CSS_SELECTOR, "#status").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= args.images)
        time.sleep(1)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.output)
        print(args.output, driver.find_element(By.CSS_SELECTOR, "#note").text.replace("\n", " "))
    finally:
        driver.quit()
        if server:
            server.terminate()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
