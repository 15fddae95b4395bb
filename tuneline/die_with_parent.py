"""``python -m tuneline.die_with_parent PARENT_PID MODULE [ARGS ...]``: runs ``python -m MODULE
ARGS`` in this process, which the kernel kills (SIGKILL) when its parent dies, however it dies.

Linux's ``PR_SET_PDEATHSIG``, set before the module starts. It fires when the parent *thread*
that started this process ends, so start it from a thread that lives as long as the parent (the
main thread). If the parent died before the call, this exits at once (its pid is no longer our
parent's). Elsewhere there is no such call: the module then runs unguarded, and the parent's
clean-up (and ``tuneline.scratch.sweep`` for the temporary Prefect API) must stop it.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Asks for SIGKILL when the parent dies; False where the system cannot."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (AttributeError, OSError):  # not Linux
        return False


def main() -> None:
    parent, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    die_with_parent()
    if os.getppid() != parent:  # it died before we asked: nobody would stop us
        os._exit(1)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
