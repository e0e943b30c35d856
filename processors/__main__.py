"""``python -m processors``: run the processor with the settings from ``DROPS_*``."""

from __future__ import annotations

from drops.log import configure
from drops.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    configure(settings.log.level, settings.log.format)
    from processors.app import run  # after configure: warnings raised on import are JSON too

    run(settings)
