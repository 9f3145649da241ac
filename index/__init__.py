"""TriVault index package."""
