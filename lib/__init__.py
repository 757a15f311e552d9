"""Helpers every app may use: they import Django and the standard library, never an app.

Like healthchecks' hc/lib: the project package (console) imports the apps, so what the
apps share cannot live there without an import circle.
"""
