"""Configuration: read once from the environment and `.env`, then handed down."""

from app.config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
