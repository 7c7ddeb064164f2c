"""fine package."""
