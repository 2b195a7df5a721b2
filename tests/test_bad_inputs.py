"""Bad input, as a new user would give it: each case is exit 2 (or EdgeFpnError / FrameError from
the API), one line, no traceback, no output left behind, and the inputs byte-identical after it.

Each case names the defect it guards against (issue 12 of the tracker, from a run of 205 inputs).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from edge_fpn.cli import main


def _checksums(*roots):
    """sha256 of every file under the given files or folders: the inputs must not change."""
    sums = {}
    for root in roots:
        root = str(root)
        paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            with open(path, "rb") as f:
                sums[path] = hashlib.sha256(f.read()).hexdigest()
    return sums


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edge-fpn {command}: error: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def photos(tmp_path):
    import cv2
    from conftest import textured_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.jpg"), textured_image(i, 120, 160))
    return folder


@pytest.fixture
def clip(tmp_path):
    import cv2
    from conftest import textured_image

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(3):
        writer.write(textured_image(i, 120, 160))
    writer.release()
    return path


# ------------------------------------------------------- 1. an output that is an input is refused

def _cases(photos, clip, tmp_path):
    link = tmp_path / "link_to_clip.avi"
    link.symlink_to(clip)
    return {
        "the source's own folder as the image sink": ([str(photos), str(photos)], "folder of the source image"),
        "the same folder with a trailing slash": ([str(photos), str(photos) + "/"], "folder of the source image"),
        "a video written over itself": ([str(clip), str(clip)], "source file"),
        "one image into its own folder": ([str(photos / "p0.jpg"), str(photos)], "folder of the source image"),
        "the folder reached through ..": ([str(photos), str(photos / ".." / "photos")], "folder of the source image"),
        "a video over itself through a symlink": ([str(clip), str(link)], "source file"),
    }


@pytest.mark.parametrize("case", ["the source's own folder as the image sink", "the same folder with a trailing slash",
                                  "a video written over itself", "one image into its own folder",
                                  "the folder reached through ..", "a video over itself through a symlink"])
def test_an_output_that_is_an_input_is_refused_and_nothing_is_touched(tiny_bundle, photos, clip, tmp_path, capsys,
                                                                      case):
    args, words = _cases(photos, clip, tmp_path)[case]
    before = _checksums(photos, clip)
    listing = sorted(os.listdir(tmp_path))
    assert main(["detect", tiny_bundle, *args, "--quiet", "--force"]) == 2  # --force does not allow it either
    assert words in _one_line_error(capsys, "detect")
    assert _checksums(photos, clip) == before and sorted(os.listdir(tmp_path)) == listing


def test_an_existing_output_file_needs_force(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert main(["detect", tiny_bundle, str(photos), str(out), "--quiet"]) == 2
    assert "exists; pass --force" in _one_line_error(capsys, "detect")
    assert out.read_text() == "keep me\n"
    assert main(["detect", tiny_bundle, str(photos), str(out), "--quiet", "--force"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_two_sinks_on_one_path_are_refused(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["detect", tiny_bundle, str(photos), str(out), str(tmp_path / "." / "out.jsonl"), "--quiet"]) == 2
    assert "are the same path" in _one_line_error(capsys, "detect") and not out.exists()


def test_a_later_sink_that_cannot_be_written_leaves_none_of_the_outputs(tiny_bundle, photos, tmp_path, capsys):
    # /proc accepts os.access(W_OK) from root, but no file can be created there
    out, video = tmp_path / "a.jsonl", tmp_path / "a.avi"
    assert main(["detect", tiny_bundle, str(photos), str(out), str(video), "/proc/x.jsonl", "--quiet"]) == 2
    assert "cannot write '/proc/x.jsonl'" in _one_line_error(capsys, "detect")
    assert not out.exists() and not video.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not an image", "truncated"])
def test_a_single_unreadable_image_is_exit_2_with_no_output(tiny_bundle, tmp_path, capsys, content):
    import cv2
    from conftest import textured_image

    image = tmp_path / "bad.jpg"
    if content == "truncated":
        ok, data = cv2.imencode(".jpg", textured_image(0, 120, 160))
        content = data.tobytes()[: len(data) // 3]
    image.write_bytes(content)
    out = tmp_path / "out.jsonl"
    assert main(["detect", tiny_bundle, str(image), str(out), "--quiet"]) == 2
    assert "cannot read the image" in _one_line_error(capsys, "detect") and not out.exists()
