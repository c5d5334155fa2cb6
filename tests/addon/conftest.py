"""Fixtures for the add-on's tests inside real Blender (the `bpy` module from PyPI).

bpy is imported lazily (only when a Blender test runs) and once per pytest process; the add-on
is enabled through addon_utils like Blender does, and disabled at the end so the process exits
cleanly."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
ADDON = "blender_addon"


@pytest.fixture(scope="session")
def bpy_addon():
    """(bpy, the add-on package), enabled once for the session."""
    bpy = pytest.importorskip("bpy")
    import addon_utils

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    mod = addon_utils.enable(ADDON, default_set=True, handle_error=None)
    assert mod is not None, "the add-on failed to enable"
    yield bpy, mod
    addon_utils.disable(ADDON, default_set=True, handle_error=None)


@pytest.fixture
def fresh(bpy_addon, tmp_path):
    """An empty, unsaved file with one scene whose sequencer is empty."""
    bpy, mod = bpy_addon
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.sequence_editor_create()
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 256, 256, 100
    return bpy, scene


@pytest.fixture
def fake_python(tmp_path_factory):
    """An 'interpreter' that runs the stand-in engine for `<python> -m wav2lip_core ARGS`."""
    d = tmp_path_factory.mktemp("fakepy")
    p = d / "python"
    p.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{FAKE_ENGINE}" "$@"\n')
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(p)


@pytest.fixture
def engine_log(tmp_path, monkeypatch):
    log = tmp_path / "engine_args.json"
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    return log


@pytest.fixture
def dummy_checkpoint(tmp_path):
    p = tmp_path / "w.pth"
    p.write_bytes(b"not used by the stand-in engine")
    return str(p)


def strips(scene):
    ed = scene.sequence_editor
    return list(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all)


def add_movie(scene, name, path, channel, frame_start):
    ed = scene.sequence_editor
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    return coll.new_movie(name=name, filepath=str(path), channel=channel, frame_start=frame_start)


def add_sound(scene, name, path, channel, frame_start):
    ed = scene.sequence_editor
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    return coll.new_sound(name=name, filepath=str(path), channel=channel, frame_start=frame_start)


def deselect_all(scene):
    for s in strips(scene):
        s.select = False
