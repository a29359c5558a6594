"""The foundation: errors, hashing, geometry, YAML positions, registries. Imports nothing of the project."""
