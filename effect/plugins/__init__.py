"""The built-in effects (`none`, `noise`, `inpaint`, `dropout`, `cross`), written against the public effect API.

They register through the ``spectro_fx.effects`` entry-point group in pyproject.toml, as third-party plugins do.
"""
