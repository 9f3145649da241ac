"""TriVault servers package."""
