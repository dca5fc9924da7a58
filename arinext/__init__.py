"""The top of the layering: the ``arinext`` command line.

``model`` (network, front-end, artifact format) is the bottom; ``training`` and ``service`` build
on it; this package gathers their sub-commands, so nothing below it imports upwards.
"""
