"""The whole effect as one streaming TorchScript module, and the `spectro-fx export` command that writes it.

The module runs in other hosts (nn~ in Max/Pd) with `torch.jit.load` alone.
"""
