"""TriVault protocols package."""
