from __future__ import annotations

from pathlib import Path

from bench.pipeline import settings_env
from drops.settings import Settings


def test_child_env_round_trips_every_setting_including_secrets() -> None:
    s = Settings(resy_api_key="real-key", sim_scripted=True, state_path=Path("/tmp/x"), days=3)
    env = settings_env(s)
    assert env["DROPS_RESY_API_KEY"] == "real-key"
    assert env["DROPS_SIM_SCRIPTED"] == "true"
    back = Settings(**{k[6:].lower(): v for k, v in env.items() if k.startswith("DROPS_")})
    assert back.model_dump() == s.model_dump()
    assert back.resy_api_key.get_secret_value() == "real-key"
