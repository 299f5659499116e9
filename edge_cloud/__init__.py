"""Edge Cloud Platform core: the code every daemon shares.

Configuration, logging, errors, the daemon runner, the door to generated protobuf code,
and (in their own modules) the store, notify, platform and secrets layers. Nothing here
imports `services` or `platforms`; importing this package is cheap and has no side effects.
"""
