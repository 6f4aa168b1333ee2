"""The option table holds every surface to it: each option a surface is in is exposed there under the same
name with the same default and choices, and a value other than the default given there reaches the run."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from conftest import deterministic_generator

from wav2lip.cli import build_parser
from wav2lip.cli.infer import _models, _options
from wav2lip.errors import Wav2LipError
from wav2lip.lipsync.options import (MODEL_TABLE, STREAM_TABLE, SURFACES, SYNC_TABLE, TABLE, ModelOptions, Option,
                                     StreamOptions, SyncOptions, fill_markdown, from_namespace, options_for)

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "wav2lip" / "serve" / "static"


def other_value(opt: Option):
    """A valid value that is not the default, as Python and as the text a form or a flag takes."""
    if opt.choices:
        value = next(c for c in opt.choices if c != opt.default)
    elif opt.kind is bool:
        value = not opt.default
    elif opt.kind is tuple:
        value = {"box": (10, 90, 20, 80), "pads": (1, 2, 3, 4), "crop": (0, 200, 0, 300),
                 "calibration": (0.1, -0.1, 1.1, 0.9), "face_at": (12.5, 40.0)}[opt.name]
    elif opt.kind is int:
        value = (opt.default if opt.default is not None else opt.minimum or 0) + 1
        if opt.maximum is not None:
            value = min(value, int(opt.maximum) - 1)
    elif opt.kind is float:
        value = {"fps": 30.0, "mask_top": 0.5, "mask_softness": 0.5, "enhance_strength": 0.5, "chunk": 0.04,
                 "stall": 0.3, "max_delay": 0.5}[opt.name]
    else:
        value = f"{opt.name}.pth"
    text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) \
        else str(value)
    return value, text


def cli_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    actions: dict[str, argparse.Action] = {}
    for action in sub._actions:
        if action.help != argparse.SUPPRESS:  # the authors' hidden spellings (--nosmooth, ...) aside
            actions.setdefault(action.dest, action)
    return actions, sub


def test_every_option_is_declared_once_with_a_surface_and_a_group() -> None:
    assert len(TABLE) == len(SYNC_TABLE) + len(MODEL_TABLE) + len(STREAM_TABLE)
    for opt in TABLE.values():
        assert opt.surfaces and opt.surfaces <= set(SURFACES), opt.name
        assert opt.help and opt.label, opt.name
        if opt.default is not None and not opt.choices:
            opt.check(opt.default)
    assert {o.name for o in options_for("live")} >= {o.name for o in options_for("live_socket")}


@pytest.mark.parametrize("command", ["infer", "live", "serve"])
def test_cli_flags_follow_the_table(command) -> None:
    actions, parser = cli_actions(command)
    for opt in options_for(command):
        action = actions[opt.name]
        assert opt.cli_flag in action.option_strings, opt.name
        if opt.kind is bool:
            assert action.default is opt.default, opt.name
        else:
            assert action.default == opt.default, opt.name
            if opt.or_file:  # a file's path too: the table checks it, the help lists the names
                assert action.choices is None and all(c in action.metavar for c in opt.choices), opt.name
            else:
                assert tuple(action.choices or ()) == tuple(opt.choices or ()), opt.name
    names = {o.name for o in options_for(command)}
    # No flag of the table's options outside it (a copy that could drift).
    for dest, action in actions.items():
        if dest in TABLE:
            assert dest in names, f"{command} has --{dest} but the table does not put it there"


@pytest.mark.parametrize("command", ["infer", "live", "serve"])
def test_a_non_default_flag_reaches_the_run(command) -> None:
    required = {"infer": [], "live": ["--face", "a.png", "--audio", "-", "-o", "x.mp4"], "serve": []}[command]
    for opt in options_for(command):
        value, text = other_value(opt)
        flag = [opt.cli_flag] if opt.kind is bool else [opt.cli_flag, *text.split()]
        args = build_parser().parse_args([command, *required, *flag])
        if command == "infer":
            given = {**_options(args), **_models(args)}
        else:
            given = {**from_namespace(args, SyncOptions), **from_namespace(args, ModelOptions),
                     **from_namespace(args, StreamOptions)}
        assert given[opt.name] == value, opt.name
        if opt.name in SYNC_TABLE:
            assert getattr(SyncOptions.from_kwargs({opt.name: value}), opt.name) == value


@pytest.mark.parametrize("surface", ["jobs", "live_socket"])
def test_http_and_socket_fields_follow_the_table(surface) -> None:
    from wav2lip.serve.form import parse_options

    names = {o.name for o in options_for(surface)}
    for opt in options_for(surface):
        value, text = other_value(opt)
        run, detector, precision = parse_options({opt.name: text}, surface)
        got = {**run, "detector": detector, "precision": precision}[opt.name]
        assert got == value, opt.name
    for name in set(TABLE) - names:
        value, text = other_value(TABLE[name])
        with pytest.raises(Wav2LipError, match="unknown option"):
            parse_options({name: text}, surface)


def test_openapi_schema_and_options_endpoint_follow_the_table(tmp_path, models_dir) -> None:
    from fastapi.testclient import TestClient

    from wav2lip.serve import JobQueue, Models, create_app

    checkpoint = deterministic_generator(tmp_path / "small.pth", width=0.125)
    models = Models(checkpoint, detector_weights=models_dir / "retinaface_mobilenet0.25.pth")
    app = create_app(JobQueue(tmp_path, models))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a name the server answers to
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        table = client.get("/api/options").json()
    properties = body["properties"]
    assert set(properties) - {"face", "audio"} == {o.name for o in options_for("jobs")}
    for opt in options_for("jobs"):
        prop = properties[opt.name]
        assert prop.get("enum") == (list(opt.choices) if opt.choices else None), opt.name
        if opt.kind is not tuple and opt.default is not None:
            assert prop["default"] == opt.default, opt.name
    for key, surface in (("jobs", "jobs"), ("live", "live_socket")):
        listed = {o["name"]: o for o in table[key]}
        assert list(listed) == [o.name for o in options_for(surface)]
        for opt in options_for(surface):
            default = list(opt.default) if isinstance(opt.default, tuple) else opt.default
            assert listed[opt.name]["default"] == default and listed[opt.name]["choices"] == (
                list(opt.choices) if opt.choices else None), opt.name


def test_pages_spell_no_option_and_build_their_controls_from_the_table() -> None:
    for page in ("index.html", "live.html"):
        html = (STATIC / page).read_text()
        named = set(re.findall(r'name="(\w+)"', html)) - {"face", "audio", "viewport"}
        assert not named, f"{page} spells options by hand: {named}"
        assert "/static/options.js" in html
    for script in ("app.js", "live.js"):
        code = (STATIC / script).read_text()
        assert "/api/options" in code and "OptionControls" in code
        for opt in options_for("jobs"):  # no literal default or option name in the scripts
            assert f'"{opt.name}"' not in code and f"'{opt.name}'" not in code, (script, opt.name)


def test_readme_option_tables_are_the_tables_generated_from_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "<!-- options: infer -->" in readme and "<!-- options: live -->" in readme
    assert fill_markdown(readme) == readme, "run: python -m wav2lip.lipsync.options README.md"
