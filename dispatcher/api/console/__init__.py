"""The browser console (/console) and the portal an app embeds for its own customers (/portal/{token}).

Server-rendered HTML (templates/, autoescaped) with one small script (static/console.js). Each view is
one module in this package registering its pages on `pages.PAGES`; `setup` imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from aiohttp import web

from dispatcher.api.console import signin
from dispatcher.api.console.pages import PAGES, mount


def setup(app: web.Application) -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")  # each view registers its pages
    signin.setup(app)
    importlib.import_module(f"{__name__}.live").setup(app)  # the live streams' listener, closed at shutdown
    mount(app, PAGES)
