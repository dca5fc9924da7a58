"""AudioRepInceptionNeXt: network, re-parameterisation, log-mel front-end and artifact format.

Only the torch-free parts (``audio_config``, ``frontend``, ``manifest``, ``labels``) may be
imported by the service.
"""
