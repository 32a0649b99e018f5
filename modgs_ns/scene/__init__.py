"""The scene contract at the bottom of modgs_ns: the on-disk format's reader and writer, the caches'
typed loaders and validity key, camera geometry and the project's error types. Imports nothing above."""
