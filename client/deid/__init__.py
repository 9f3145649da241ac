"""TriVault client/deid package."""
