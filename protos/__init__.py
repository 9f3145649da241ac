"""TriVault protos package."""
