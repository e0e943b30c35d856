from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.pipeline import settings_env
from drops.settings import Settings


def test_child_env_round_trips_every_setting_including_secrets() -> None:
    s = Settings(resy_api_key="real-key", sim_scripted=True, state_path=Path("/tmp/x"), days=3)
    env = settings_env(s)
    assert env["DROPS_PROVIDERS__RESY__API_KEY"] == "real-key"
    assert env["DROPS_SIMULATOR__SCRIPTED"] == "true"
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("DROPS_")]:
            mp.delenv(k)
        for k, v in env.items():
            if k.startswith("DROPS_"):
                mp.setenv(k, v)
        back = Settings()
    assert back.model_dump() == s.model_dump()
    assert back.providers.resy.api_key.get_secret_value() == "real-key"


def test_an_extra_under_an_old_name_reaches_the_child_under_its_new_one() -> None:
    env = settings_env(Settings(api_port=8000), DROPS_API_PORT="8123", DROPS_TEST_X="1")
    assert env["DROPS_API__PORT"] == "8123" and "DROPS_API_PORT" not in env
    assert env["DROPS_TEST_X"] == "1"
