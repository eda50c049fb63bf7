"""The leftover-process clean-up finds RP's processes only: never the campaign itself, its
ancestors, or a process that merely names the work dir on its command line."""

import subprocess
import sys

from asyncflow_hpc.backends.radical import leftover_processes


def test_naming_the_work_dir_is_not_being_an_rp_process(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(work)])
    member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "rp.session.test-leftovers.0000"])
    try:
        found = {p.pid for p in leftover_processes("rp.session.test-leftovers.0000", work)}
        assert member.pid in found
        assert bystander.pid not in found
        import os

        import psutil
        assert os.getpid() not in found
        assert not found & {p.pid for p in psutil.Process().parents()}
    finally:
        for proc in (bystander, member):
            proc.kill()
            proc.wait()
