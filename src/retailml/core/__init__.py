"""Layer 1: settings, workspace paths, errors, the platform database, I/O helpers."""
