"""Security hygiene: private work directory, no shell unless asked."""

from __future__ import annotations

import stat

from conftest import run

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine


def test_work_dir_is_created_owner_only(tmp_path):
    work = tmp_path / "deep" / "work"

    async def main():
        async with WorkflowEngine.create(LocalExecutionBackend(), work_dir=work):
            pass

    run(main())
    assert stat.S_IMODE(work.stat().st_mode) == 0o700


def test_existing_work_dir_is_left_as_the_user_made_it(tmp_path):
    tmp_path.chmod(0o755)

    async def main():
        async with WorkflowEngine.create(LocalExecutionBackend(), work_dir=tmp_path):
            pass

    run(main())
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_executable_without_shell_does_not_expand(tmp_path):
    async def main():
        async with WorkflowEngine.create(LocalExecutionBackend()) as flow:
            @flow.executable_task
            async def echo():
                return "echo $HOME;touch " + str(tmp_path / "pwned")

            return await echo()

    out = run(main())
    assert "$HOME;touch" in out
    assert not (tmp_path / "pwned").exists()
