"""modgs-ns: MoDGS as a nerfstudio plugin.

Importing the package registers nothing by itself and changes no global state: nerfstudio finds the
method and dataparser through the entry points in pyproject.toml.
"""
