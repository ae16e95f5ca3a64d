"""The browser UI of the live effect: a local page that shows and moves the region.

``spectro-fx ... --ui [HOST:]PORT`` starts :class:`UIServer` beside the audio; see ``server.py``.
"""

from .control import ControlSurface
from .server import UIServer, parse_ui_address
from .view import SpectrogramView, ViewTap

__all__ = ["ControlSurface", "UIServer", "parse_ui_address", "SpectrogramView", "ViewTap"]
