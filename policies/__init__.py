"""Documents shipped with govstream (data only).

example.yaml: the example policy; slo.yaml: the default SLO targets.
"""
