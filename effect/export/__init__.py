"""The whole effect as one streaming TorchScript module, and the `spectro-fx export` command that writes it.

The module runs in other hosts with `torch.jit.load` alone: nn~ in Max/Pd, Neutone FX (through neutone-sdk) in a DAW.
"""
