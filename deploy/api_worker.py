"""The app of one API worker process when `rtrec serve` runs several (uvicorn imports it by name in each worker).

`rtrec serve` passes the settings file in ``RTREC_CONFIG``; everything else reaches the workers as the usual
``RTREC_...`` variables, inherited from the parent.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from deploy.settings import load_settings
from manager.app import create_app

CONFIG_VARIABLE = "RTREC_CONFIG"


def app() -> FastAPI:
    return create_app(load_settings(os.environ.get(CONFIG_VARIABLE)))
