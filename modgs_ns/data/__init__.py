"""Caches to nerfstudio batches. Kept light: no datamanager imports here (plugin discovery runs
while nerfstudio's dataparser registry is being imported)."""
