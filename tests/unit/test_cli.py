"""The command line's own lists: choices come from the code they select from."""

from __future__ import annotations

import argparse

from fleetpulse.agent import PROFILES
from fleetpulse.cli import build_parser


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = commands.choices[name]
    return chosen


def test_simulate_profiles_are_the_simulators_profiles() -> None:
    profile = next(a for a in subcommand("simulate")._actions if a.dest == "profile")
    assert profile.choices is PROFILES
    for name in PROFILES:
        assert build_parser().parse_args(["simulate", "--profile", name]).profile == name
