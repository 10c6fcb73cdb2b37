"""The ``zmicro`` command and the examples, as a user runs them: real processes, real TCP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmicro.cli._args import parse_call_args, parse_target

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.timeout(60)


def zmicro_cmd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmicro", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def hello_endpoint() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmicro", "run", "examples/hello.py:Greeter", "--bind", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving greeter" in line, line
    yield line.rsplit(" ", 1)[1].strip()
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(15) == 0
    proc.stdout.close()


def test_call_key_value(hello_endpoint: str) -> None:
    r = zmicro_cmd("call", hello_endpoint, "greeter.hello", "who=world", "times=2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "Hello, world! Hello, world!"


def test_call_json_object(hello_endpoint: str) -> None:
    r = zmicro_cmd("call", hello_endpoint, "greeter.crunch", '{"n": 4}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 14


def test_call_errors_exit_1_with_the_code(hello_endpoint: str) -> None:
    r = zmicro_cmd("call", hello_endpoint, "greeter.hello", "times=2")
    assert r.returncode == 1
    assert "invalid_argument" in r.stderr and "who" in r.stderr
    r = zmicro_cmd("call", hello_endpoint, "greeter.nope")
    assert r.returncode == 1 and "no_such_method" in r.stderr
    r = zmicro_cmd("call", hello_endpoint, "greeter.crunch", "n=30000000", "--timeout", "0.3")
    assert r.returncode == 1 and "deadline_exceeded" in r.stderr


def test_call_usage_errors_exit_2(hello_endpoint: str) -> None:
    r = zmicro_cmd("call", hello_endpoint, "nodot")
    assert r.returncode == 2 and "SERVICE.METHOD" in r.stderr
    r = zmicro_cmd("call", hello_endpoint, "greeter.hello", "{not json")
    assert r.returncode == 2


def test_info_prints_a_table(hello_endpoint: str) -> None:
    r = zmicro_cmd("info", hello_endpoint)
    assert r.returncode == 0, r.stderr
    assert "greeter" in r.stdout and "hello" in r.stdout and "(who: str, times: int = 1) -> str" in r.stdout
    assert "thread pool" in r.stdout
    r = zmicro_cmd("info", hello_endpoint, "--json")
    desc = json.loads(r.stdout)["describe"]
    assert desc["services"][0]["name"] == "greeter"


def test_run_rejects_bad_target() -> None:
    r = zmicro_cmd("run", "examples/hello.py:Nope")
    assert r.returncode == 2 and "Nope" in r.stderr
    r = zmicro_cmd("run", "no_such_file.py:X")
    assert r.returncode == 2 and "no such file" in r.stderr


@pytest.mark.parametrize("script", ["call_async.py", "call_blocking.py"])
def test_examples_run(hello_endpoint: str, script: str) -> None:
    r = subprocess.run(
        [sys.executable, f"examples/{script}", hello_endpoint],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "Hello" in r.stdout


def test_bench_lists_the_suite() -> None:
    r = zmicro_cmd("bench", "--list", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raw-drained" in r.stdout and "zmicro" in r.stdout


def test_version() -> None:
    r = zmicro_cmd("version")
    assert r.returncode == 0 and "libzmq 4." in r.stdout


def test_argument_parsing() -> None:
    assert parse_call_args(["who=world", "times=2", "flag=true", 's="2"']) == {
        "who": "world",
        "times": 2,
        "flag": True,
        "s": "2",
    }
    assert parse_call_args(['{"a": [1]}']) == {"a": [1]}
    assert parse_target("a.b.c") == ("a.b", "c")
    with pytest.raises(ValueError, match="key=value"):
        parse_call_args(["novalue"])
