"""A torch module whose stream state is cheap to set from Python."""

import torch
from torch import nn


class StreamState(nn.Module):
    """An ``nn.Module`` for stream state set several times per audio block from eager Python (the
    engine): assigning a name the module already holds, as a buffer or a plain attribute, skips
    ``nn.Module.__setattr__``'s registration checks (~25 us a call, a tenth of a live block's
    budget over a column). TorchScript does not use this method: scripted, nothing changes."""

    def __setattr__(self, name: str, value) -> None:
        if name in self.__dict__:
            object.__setattr__(self, name, value)
        elif "_buffers" in self.__dict__ and name in self._buffers and isinstance(value, torch.Tensor):
            self._buffers[name] = value
        else:
            super().__setattr__(name, value)
