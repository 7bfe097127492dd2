"""The arguments every Serve application of the product is built from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.config import Settings, load_settings


class AppArgs(BaseModel):
    """Arguments of an application (the ``args:`` block of a Serve config): each replica reads
    its :class:`~app.config.Settings` from them."""

    config_file: str | None = Field(default=None, description="YAML settings file read by each replica")
    settings: dict[str, Any] = Field(default_factory=dict, description="settings overrides (highest priority)")

    def load(self) -> Settings:
        """The replica's settings: the file, the environment, then the overrides."""
        return load_settings(self.config_file, **self.settings)
