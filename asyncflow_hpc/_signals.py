"""Ctrl-C, SIGTERM and SIGHUP while an engine runs: stop the work, then pass the signal on."""

from __future__ import annotations

import logging
import signal

__all__ = ["SignalHandling"]

log = logging.getLogger("asyncflow_hpc")


class SignalHandling:
    """The engine's signal handlers (a part of :class:`~asyncflow_hpc.engine.WorkflowEngine`)."""

    def _install_signal_handlers(self) -> None:
        loop = self._loop
        assert loop is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            self._signal_handlers[sig] = previous

    def _restore_signal_handlers(self) -> None:
        loop = self._loop
        for sig, previous in self._signal_handlers.items():
            try:
                if loop is not None and not loop.is_closed():
                    loop.remove_signal_handler(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, RuntimeError, TypeError):
                pass
        self._signal_handlers.clear()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        log.warning("asyncflow-hpc: received %s, cancelling %d unfinished task(s) and shutting down",
                    name, len(self._active))
        assert self._loop is not None
        self._loop.create_task(self._shutdown_after_signal(sig))

    async def _shutdown_after_signal(self, sig: int) -> None:
        """Stop the work first, then hand the signal to whoever handled it before us.

        Backends are stopped before any future is cancelled, so no user code can run (and
        end the program) while processes are still being killed.
        """
        if self._closed:
            return
        previous = self._signal_handlers.get(sig)
        self._closing = True  # refuse new submissions from here on
        await self._stop_backends()
        self._restore_signal_handlers()
        if previous in (signal.SIG_DFL, None):
            # the default action ends the process: save what must survive first
            await self._close_attachments()
            signal.raise_signal(sig)
            return
        # e.g. asyncio.run's SIGINT handler: cancels the main task -> KeyboardInterrupt
        signal.raise_signal(sig)
        self._closing = False
        await self.shutdown(skip_execution_backend=True)
