"""Run datadiet commands as a real multi-process torch.distributed job (gloo on the CPU) from a test.

`run_ranks([[cmd1 args], [cmd2 args]], world=2)` starts `world` processes with the environment
torchrun gives its workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Each runs
the commands in order through the CLI, inside one process group it starts once, so a test
pays torch's import once per rank for several commands. `torchrun=True` launches through the
real `torchrun` instead (slower: its agent imports torch too), to test that path itself.

Test modules `share(name, prepare)` their commands at import; conftest's `shared_ranks` fixture
runs every module's commands in one job (torch's import is most of a small job's time) and
gives each module its commands' exit codes and output. A command is an argument list, or
{"args": [...], "expect": CODE, "interrupt_epoch": N} (rank_driver.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# A job that has not finished by then is stuck (e.g. a rank waiting for a peer that is gone).
TIMEOUT_S = 120


# Lines the driver writes around each command: "<MARK> <index> start" (stdout and stderr), "<MARK> <index> exit <code>".
MARK = "@@datadiet-test-command@@"


@dataclass(frozen=True)
class RankResult:
    returncode: int
    stdout: str
    stderr: str


Prepare = Callable[[Path], list[Any]]  # a module's inputs written into a folder -> its commands
SHARED: dict[str, Prepare] = {}


def share(name: str, prepare: Prepare) -> None:
    """Run `prepare(folder)`'s commands in the session's shared 2-rank job (conftest: shared_ranks)."""
    SHARED[name] = prepare


@dataclass(frozen=True)
class SharedJob:
    folder: Path  # module NAME's inputs and outputs are under folder / NAME
    parts: dict[str, list[RankResult]]  # per module: rank 0's and rank 1's results of its commands


class PendingShared:
    """The shared job, started: `wait()` gives its SharedJob (conftest starts it as collection ends,
    so it runs beside the in-process tests that come before the first test that needs it)."""

    def __init__(self, folder: Path) -> None:
        commands: list[Any] = []
        self.folder, self.owners = folder, []
        for name, prepare in SHARED.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            part = prepare(folder / name)
            commands += part
            self.owners += [name] * len(part)
        self.job = start_ranks(commands, world=2, env={"DATADIET_CACHE": str(folder / "cache")})
        self.result: SharedJob | None = None

    def wait(self) -> SharedJob:
        if self.result is None:
            ranks = self.job.wait()
            parts = {name: [part_of(rank, self.owners, name) for rank in ranks] for name in SHARED}
            self.result = SharedJob(self.folder, parts)
        return self.result


def part_of(result: RankResult, owners: list[str], name: str) -> RankResult:
    """The output and last exit code of `name`'s commands in one rank's output of a shared job."""
    codes: dict[int, int] = {}
    texts: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for stream in texts:
        index = -1
        for line in getattr(result, stream).splitlines(keepends=True):
            if line.startswith(MARK):
                words = line.split()
                index = int(words[1])
                if words[2] == "exit":
                    codes[index] = int(words[3])
                continue
            if 0 <= index < len(owners) and owners[index] == name:
                texts[stream].append(line)
    mine = [index for index, owner in enumerate(owners) if owner == name]
    return RankResult(codes.get(mine[-1], -1), "".join(texts["stdout"]), "".join(texts["stderr"]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def job_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), NO_COLOR="1", COLUMNS="200")
    environment.pop("FORCE_COLOR", None)
    return environment | (extra or {})


def run_ranks(
    commands: list[Any], world: int = 2, *, torchrun: bool = False, env: dict[str, str] | None = None
) -> list[RankResult]:
    """Every rank's exit code and output after running `commands` (each a datadiet argument list)."""
    if torchrun:
        assert len(commands) == 1, "torchrun runs one command line"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                   "--tee=3", "-m", "datadiet_cli", *commands[0]]  # fmt: skip
        done = subprocess.run(command, env=job_environment(env), capture_output=True, text=True, timeout=TIMEOUT_S)
        return [RankResult(done.returncode, done.stdout, done.stderr)]
    return start_ranks(commands, world, env=env).wait()


class RunningJob:
    """`world` rank processes running tests/rank_driver.py, their output going to files (not pipes:
    a rank writing more than a pipe holds must not block the job)."""

    def __init__(self, commands: list[Any], world: int, env: dict[str, str]) -> None:
        script = [sys.executable, "-m", "tests.rank_driver", json.dumps(commands)]
        # Open while the ranks run; wait() closes them.
        self.outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(world)]  # noqa: SIM115
        self.processes = [
            subprocess.Popen(
                script,
                env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
                cwd=REPO_ROOT,
                stdout=self.outputs[rank][0],
                stderr=self.outputs[rank][1],
                text=True,
            )
            for rank in range(world)
        ]

    def wait(self) -> list[RankResult]:
        try:
            codes = [process.wait(timeout=TIMEOUT_S) for process in self.processes]
        finally:
            self.stop()
        results = []
        for code, (stdout, stderr) in zip(codes, self.outputs, strict=True):
            stdout.seek(0)
            stderr.seek(0)
            results.append(RankResult(code, stdout.read(), stderr.read()))
            stdout.close()
            stderr.close()
        return results

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def start_ranks(commands: list[Any], world: int = 2, *, env: dict[str, str] | None = None) -> RunningJob:
    environment = job_environment(env)
    environment |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    return RunningJob(commands, world, environment)
