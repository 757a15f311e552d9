"""The sandbox runtime: what runs inside a jail, on its interpreter, with no Django.

Jails put this directory itself on sys.path (boot.py), so nothing imports this
package there; it is a package on the host so that import-linter sees its imports.
"""
