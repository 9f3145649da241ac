"""TriVault client package."""
