"""Logged values stay on the device until something reads them: no host-device wait per iteration.

mmengine records every loss term of every iteration as a Python float (RuntimeInfoHook hands the
model's outputs to MessageHub.update_scalar, which calls `.item()`), and OptimWrapper records the
gradient norm with `float()`: the host waits for the GPU at the end of every iteration before it can
queue the next one. `install(hub)` makes a runner's message hub a DeferredMessageHub: a tensor given
to update_scalar is kept (detached, where it is) and queued, and the queue is read back in one
transfer per device and dtype when something reads the hub (the logger every LOG_INTERVAL, a
checkpoint's state_dict, get_scalar of a queued key), or when MAX_PENDING values wait. The values
then enter mmengine's HistoryBuffers in the order they were given, so the logs, TensorBoard,
scalars.json and summary.json show the same numbers, smoothed over the same windows.

`watch(tensor, callback)` queues a value for code that must learn it eventually but not at once
(the loss guard of common/resilience.py: was this iteration's loss finite?).
"""
from mmengine.logging import MessageHub

MAX_PENDING = 10_000             # queued values before a read anyway (memory stays bounded)


def read(tensors):
    """The host values of tensors, in order, with one transfer per (device, dtype): a 0-dim tensor
    as `.item()` gives it (float32 -> the same Python float; ints stay ints), others as `.tolist()`."""
    import torch
    groups = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    values = [None] * len(tensors)
    for indices in groups.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices]).tolist()
        start = 0
        for i in indices:
            size = tensors[i].numel()
            values[i] = flat[start] if tensors[i].dim() == 0 else flat[start:start + size]
            start += size
    return values


class DeferredMessageHub(MessageHub):
    """A MessageHub whose tensor scalars wait on their device until read (see the module docstring)."""

    def update_scalar(self, key, value, count=1, resumed=True):
        if hasattr(value, 'detach') and value.numel() == 1 and isinstance(count, int):
            self._pending.append((key, value.detach().reshape(()), count, resumed))
            self._pending_keys.add(key)
            if len(self._pending) + len(self._watched) >= MAX_PENDING:
                self.flush()
            return
        if key in self._pending_keys:
            self.flush()  # a host value after queued ones of the same key: keep their order
        super().update_scalar(key, value, count, resumed)

    def watch(self, tensor, callback):
        """Call `callback(host value of tensor)` at the next flush."""
        self._watched.append((tensor.detach(), callback))
        if len(self._pending) + len(self._watched) >= MAX_PENDING:
            self.flush()

    def flush(self):
        """Read every queued value back (the one host-device wait) and hand each where it belongs."""
        pending, watched = self._pending, self._watched
        if not pending and not watched:
            return
        self._pending, self._watched, self._pending_keys = [], [], set()
        values = read([t for _, t, _, _ in pending] + [t for t, _ in watched])
        for (key, _, count, resumed), value in zip(pending, values):
            super().update_scalar(key, value, count, resumed)
        for (_, callback), value in zip(watched, values[len(pending):]):
            callback(value)

    @property
    def log_scalars(self):
        self.flush()
        return MessageHub.log_scalars.fget(self)

    def get_scalar(self, key):
        """MessageHub.get_scalar, reading the queue only for a queued key (mmengine's goes through
        log_scalars, which would read it all: the timer's keys are asked for every iteration)."""
        if key in self._pending_keys:
            self.flush()
        if key not in self._log_scalars:
            return super().get_scalar(key)  # its KeyError
        return self._log_scalars[key]

    def state_dict(self):
        self.flush()
        return super().state_dict()


def install(hub):
    """Make `hub` (the runner's MessageHub) defer its tensor scalars; returns it."""
    if not isinstance(hub, DeferredMessageHub):
        hub.__class__ = DeferredMessageHub
        hub._pending, hub._watched, hub._pending_keys = [], [], set()
    return hub


def uninstall(hub):
    """Read what is queued and make `hub` a plain MessageHub again."""
    if isinstance(hub, DeferredMessageHub):
        hub.flush()
        hub.__class__ = MessageHub


def flush(hub):
    """Read what `hub` holds queued (nothing to do for a plain hub)."""
    if isinstance(hub, DeferredMessageHub):
        hub.flush()


def watch(hub, tensor, callback):
    """hub.watch where the hub defers; else the value now (a plain hub: one read)."""
    if isinstance(hub, DeferredMessageHub):
        hub.watch(tensor, callback)
    else:
        callback(read([tensor.detach()])[0])
