"""The next job's shell, spawned before its job exists (see :class:`WarmShell`)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from openweights.isolation import JobUser
from openweights.services.agent.process_group import kill_group
from openweights.services.agent.spawn import SpawnedChild, posix_spawn_shell

__all__ = ["WarmShell"]

# The warm shell learns from the first line how the job's script comes: a short one
# line by line through ``read`` (builtin, nothing spawned, but a syscall per byte), a
# long one through ``cat`` (a process, but large reads). It then gives the job /dev/null
# as stdin and evaluates the script, its own variables unset first.
_WARM = (
    'cd -- "$__ow_dir" || exit 126; unset __ow_dir OLDPWD; '
    'IFS= read -r __ow_how; if [ "$__ow_how" = lines ]; then '
    'while IFS= read -r __ow_line || [ -n "$__ow_line" ]; do '
    '__ow_script="$__ow_script$__ow_line\n"; done; else __ow_script=$(cat); fi; '
    'exec </dev/null; eval "unset __ow_how __ow_script __ow_line\n$__ow_script"'
)
_READ_MAX = 512  # bytes: past this, reading byte by byte costs more than spawning cat
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class WarmShell:
    """A job's shell spawned before its job exists, waiting for the script on stdin.

    Spawning a process is the slowest step between an assignment arriving and the job
    running (about a millisecond, more while the box is busy); the agent spawns the next
    job's shell, in the next job's directory, while it waits for work. The job then
    starts as soon as its script is written. ``sh -c`` and the warm shell differ only
    in that the shell stays the parent of the last command instead of exec'ing it.
    """

    def __init__(self, child: SpawnedChild, cwd: Path, env: Mapping[str, str],
                 user: JobUser | None = None) -> None:
        self._child, self.cwd, self.env, self.user = child, cwd, dict(env), user

    @property
    def pid(self) -> int:
        return self._child.pid

    @classmethod
    def start(cls, cwd: Path, env: Mapping[str, str], user: JobUser | None = None,
              prefix: Sequence[str] = ()) -> WarmShell:
        """The shell, as ``user`` (started under ``prefix``, which makes it that user).
        Raises OSError where the kernel has no pidfds (Linux < 5.3)."""
        child = posix_spawn_shell(_WARM, {**env, "__ow_dir": str(cwd)}, prefix)
        return cls(child, cwd, env, user)

    def fits(self, cwd: Path, env: Mapping[str, str], user: JobUser | None = None) -> bool:
        """Whether the job can run here: same directory and user, every variable it
        needs (or must not see) nameable in the shell, and the shell still waiting."""
        return (self.cwd == cwd and self.user == user and self._child.returncode is None
                and all(_NAME.match(k) for k in (env.keys() ^ self.env.keys()) | {
                    k for k, v in env.items() if self.env.get(k) != v}))

    def run(self, command: str, env: Mapping[str, str]) -> SpawnedChild:
        """Hand the shell ``command`` with ``env``: unsets and exports, then the script."""
        exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items()
                   if self.env.get(k) != v]
        unsets = [f"unset {k}" for k in self.env.keys() - env.keys()]
        script = ("\n".join([*unsets, *exports, command]) + "\n").encode()
        self._child.write_stdin((b"lines\n" if len(script) <= _READ_MAX else b"cat\n")
                                + script)
        return self._child

    async def discard(self) -> None:
        """Stop a shell no job will use (the agent stops, or the next job cannot)."""
        with anyio.CancelScope(shield=True):
            await kill_group(self._child)
            self._child.close()
