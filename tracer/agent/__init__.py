"""pktfate agent: always on. The kernel counts every drop and every refusal this
host sends (counters.py), the agent serves them to Prometheus
(output/metrics.py), names what runs in each namespace (host/workloads.py), and
when a watched port starts failing, records a deep watch and its diagnosis by
itself (trigger.py, incidents.py, run.py)."""
