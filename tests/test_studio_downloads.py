"""Models from the studio: the Models tab's downloads with progress, the owner's preloads and permission, all
against archives served from 127.0.0.1."""

import hashlib
import logging
import time

import gradio as gr
import pytest

from painter import hub
from painter.ui.app import AUTO, Studio, create_app, parse_args
from painter.ui.models import ModelManager
from painter.ui.styles import load_styles
from conftest import ARCHIVE_NAME as NAME, ARCHIVE_PATH, ROOT


@pytest.fixture
def mirrored(server, archive, online, monkeypatch):
    """The archive on the local server, with its true checksum in the registry, as a user would get it."""
    server.files[ARCHIVE_PATH] = archive
    monkeypatch.setenv("PAINTER_MIRROR", server.url)
    monkeypatch.setitem(hub.registry()[NAME], "sha256", hashlib.sha256(archive).hexdigest())
    return server


def studio(allow: bool = True) -> Studio:
    return Studio(ModelManager(device="cpu", precision="fp32"), load_styles(ROOT / "styles"), allow_downloads=allow)


def choices(update) -> list[str]:
    return [c[1] if isinstance(c, tuple) else c for c in update["choices"]]


def test_the_models_tab_downloads_with_progress_and_the_model_joins_every_list(mirrored, online):
    mirrored.mode = "slow"  # four pieces 0.3 s apart, so the progress is seen part way
    s = studio()
    assert NAME not in s.manager.names and NAME in choices(s.models_view()[2])
    label = dict((n, l) for l, n in s.models_view()[2]["choices"])[NAME]
    assert label == f"{NAME} · about 0.8 GB" and "about 0.8 GB" in s.download_commands(), "each shows its size"
    assert s.models_view()[-1]["visible"] is False, "the article's prompts are hidden without a pai-painter model"
    views = list(s.download(NAME))
    partial = [v[1] for v in views if "<progress" in v[1]]
    assert partial, "no progress was shown while downloading"
    assert any(f'max="{len(mirrored.files[ARCHIVE_PATH])}"' in html for html in partial)
    table, status, downloadable, button, create_list, compare_a, compare_b, commands, article = views[-1]
    assert article["visible"] is True, "and shown with one"
    assert "已安装" in status and "installed" in status and "<progress" not in status
    assert NAME in [row[0] for row in table]
    assert NAME in choices(create_list) and NAME in choices(compare_a) and NAME in choices(compare_b)
    assert NAME not in choices(downloadable) and f"painter download {NAME}" not in commands
    assert sorted(p.name for p in (online / NAME).iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert len(mirrored.requests) == 1
    *_, (paths, _, _, _) = s.paint("红苹果", "plain", NAME, None, None, None, None, 0, 1, 0)
    assert paths[0].stat().st_size > 0  # the new model paints at once, no restart


def test_two_visitors_downloading_one_model_share_one_download(mirrored, online):
    mirrored.mode = "slow"
    s = studio()
    first, second = s.download(NAME), s.download(NAME)
    next(first)
    next(second)
    list(first), list(second)
    assert [path for path, _ in mirrored.requests] == [ARCHIVE_PATH]
    assert s.manager.downloads[NAME].state == "installed"


@pytest.mark.parametrize("name", ["demo-large", "../../etc/passwd", "hf:someone/model", "no-such-model", "",
                                  None, "x" * 5000])
def test_only_known_models_not_installed_can_be_downloaded(mirrored, online, name):
    with pytest.raises(gr.Error, match="cannot be downloaded"):
        next(studio().download(name))
    assert mirrored.requests == [] and not online.exists()


def test_visitors_cannot_download_where_the_owner_has_not_allowed_it(mirrored, online):
    s = studio(allow=False)
    with pytest.raises(gr.Error, match="not allowed downloads"):
        next(s.download(NAME))
    assert mirrored.requests == [] and not online.exists()
    assert s.models_view()[3]["interactive"] is False  # the button is off too


def test_a_failed_download_says_why_and_installs_nothing(mirrored, online, monkeypatch):
    monkeypatch.setitem(hub.registry()[NAME], "sha256", "0" * 64)
    s = studio()
    *_, last = s.download(NAME)
    assert "下载失败" in last[1] and "checksum mismatch" in last[1]
    assert not (online / NAME).exists() and NAME not in s.manager.names
    assert NAME in choices(last[2])  # still offered, to try again
    monkeypatch.setitem(hub.registry()[NAME], "sha256", hashlib.sha256(mirrored.files[ARCHIVE_PATH]).hexdigest())
    *_, last = s.download(NAME)
    assert "installed" in last[1] and NAME in s.manager.names


def test_preloads_download_at_start_and_a_typo_does_not_stop_the_studio(mirrored, online, monkeypatch, caplog):
    monkeypatch.setenv("PAINTER_PRELOAD", f"{NAME}, no-such-model")
    with caplog.at_level(logging.WARNING, logger="painter.ui.models"):
        _, args = create_app(["--no-allow-downloads"])  # the owner's preloads run whatever visitors may do
    assert args.preload == [NAME, "no-such-model"] and args.allow_downloads is False
    assert "no-such-model" in caplog.text
    deadline = time.monotonic() + 30
    while not (online / NAME).is_dir():
        assert time.monotonic() < deadline, "the preload never arrived"
        time.sleep(0.05)
    manager = ModelManager(device="cpu")
    assert NAME in manager.names and manager.preload([NAME]) == []  # installed: not fetched again
    assert len(mirrored.requests) == 1


def test_downloads_are_allowed_locally_and_off_on_a_space_unless_the_owner_says(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert parse_args([]).allow_downloads is True
    assert parse_args(["--no-allow-downloads"]).allow_downloads is False
    monkeypatch.setenv("SPACE_ID", "someone/painter")
    assert parse_args([]).allow_downloads is False
    assert parse_args(["--allow-downloads"]).allow_downloads is True
    assert parse_args(["--preload", "a,b", "--preload", "c"]).preload == ["a", "b", "c"]


def test_a_page_opened_later_lists_the_downloaded_model(mirrored, online):
    s = studio()
    list(s.download(NAME))
    fresh = Studio(s.manager, load_styles(ROOT / "styles"), allow_downloads=True)
    view = fresh.models_view()
    assert NAME in choices(view[4]) and ("自动 Auto", AUTO) in view[4]["choices"]
    *_, timer = fresh.refresh_models()
    assert timer.active is False  # nothing left to follow
